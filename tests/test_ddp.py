"""Data-parallel training (torch DDP over gloo) with 2 CPU processes.

The workers start as ``torchrun`` would start them: from environment variables.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
mp = pytest.importorskip("torch.multiprocessing")

if not torch.distributed.is_available():  # pragma: no cover
    pytest.skip("torch.distributed is not available", allow_module_level=True)

GAN_OPTIONS = dict(
    steps=3, window=(4, 8, 8), width=4, n_down=1, n_res_blocks=1, d_width=4, d_layers=1,
    batch_size=1, guide="none", val_share=0.0, time_budget=None, progress="off",
    checkpoint_every=2, seed=11, threads=1,
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def small_cube():
    from gapfill.testing import synthetic_sst

    return synthetic_sst(t=10, h=10, w=12, seed=4)


def train_worker(rank: int, world: int, port: int, out: str) -> None:
    """One process of a ``torchrun --nproc_per_node=world`` run (CPU, gloo)."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    import gapfill  # noqa: F401
    from gapfill import ddp

    ctx = ddp.init_from_env()
    try:
        opts = dict(GAN_OPTIONS, checkpoint_dir=str(Path(out) / "ckpt"))
        model = small_cube().gapfill.fit("gan", holdout=0.0, options=opts)
        weights = {k: v.numpy().tolist() for k, v in model.method.generator.state_dict().items()}
        result = {"rank": ctx.rank, "backend": ctx.backend, "weights": weights,
                  "info": model.method.fit_info}
        Path(out, f"rank{rank}.json").write_text(json.dumps(result))
    finally:
        ddp.shutdown()


def test_two_gloo_processes_keep_identical_weights(tmp_path):
    mp.spawn(train_worker, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (json.loads((tmp_path / f"rank{i}.json").read_text()) for i in (0, 1))
    assert r0["backend"] == r1["backend"] == "gloo"
    assert r0["info"]["steps"] == r1["info"]["steps"] == 3
    assert r0["info"]["distributed"]["world_size"] == 2
    assert r0["info"]["distributed"]["weights_in_sync"] is True
    # Compared here too, independently of the trainer's own check.
    assert r0["weights"].keys() == r1["weights"].keys()
    for k in r0["weights"]:
        assert np.array_equal(np.array(r0["weights"][k]), np.array(r1["weights"][k])), k

    # The same seed in one process gives other weights: the 2 ranks trained on
    # different windows and averaged their gradients.
    torch.set_num_threads(1)
    single = small_cube().gapfill.fit(
        "gan", holdout=0.0, options=dict(GAN_OPTIONS, checkpoint_dir=str(tmp_path / "one"))
    )
    one = single.method.generator.state_dict()
    assert any(not np.array_equal(one[k].numpy(), np.array(r0["weights"][k])) for k in one)

    # Only rank 0 wrote checkpoints and the log; they hold both ranks' sampling state.
    from gapfill.training import CheckpointManager

    ckpt = CheckpointManager(tmp_path / "ckpt").load_latest()
    assert ckpt["step"] == 3 and len(ckpt["rng_ranks"]) == 2
    assert ckpt["rng_ranks"][0] != ckpt["rng_ranks"][1]


# -- gapfill train, under torchrun and alone ------------------------------------------------
@pytest.fixture
def gan_project(tmp_path, ostia_path) -> Path:
    """A tiny gan recipe on 12 months of the real OSTIA cube, 40% clouds punched."""
    import shutil

    import yaml

    (tmp_path / "data").mkdir()
    shutil.copy(ostia_path, tmp_path / "data" / "ostia.nc")
    opts = dict(GAN_OPTIONS, window=[4, 16, 16], guide="eof", guide_pool=1, steps=2)
    recipe = {
        "input": {"path": "data/ostia.nc", "variable": "surface_temperature",
                  "time_slice": {"start": "2006-04", "stop": "2007-03"}},
        "punch": {"process": "cloud", "coverage": 0.4, "seed": 1},
        "method": {"name": "gan", "options": opts},
        "holdout": {"fraction": 0.1, "seed": 0},
        "output": {"path": "outputs/filled.nc", "figures": False},
    }
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))
    return tmp_path


def run(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess:
    full_env = dict(os.environ, OMP_NUM_THREADS="1", **env)
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=300,
                          env=full_env)


def test_gapfill_train_under_torchrun_then_run_fills_with_the_model(gan_project):
    import gapfill

    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                f"--master_port={free_port()}", "-m", "gapfill"]
    done = run([*torchrun, "train", "recipe.yaml"], cwd=gan_project)
    assert done.returncode == 0, done.stderr[-3000:]
    model_path = gan_project / "outputs" / "filled_model.pt"
    assert done.stdout.strip().splitlines()[-1] == str(model_path)
    model = gapfill.load(model_path)
    dist_info = model.method.fit_info["distributed"]
    assert dist_info == {"world_size": 2, "backend": "gloo", "windows_per_step": 2,
                         "weights_in_sync": True}

    # The same recipe pointing at the model fills without fitting again.
    recipe = (gan_project / "recipe.yaml").read_text()
    (gan_project / "fill.yaml").write_text(
        recipe.replace("  name: gan\n", "  name: gan\n  model: outputs/filled_model.pt\n")
    )
    filled = run([sys.executable, "-m", "gapfill", "run", "fill.yaml"], cwd=gan_project)
    assert filled.returncode == 0, filled.stderr[-3000:]
    assert "loading" in filled.stderr and "fitting" not in filled.stderr

    # Training again refuses to replace the model; --overwrite allows it.
    again = run([sys.executable, "-m", "gapfill", "train", "recipe.yaml"], cwd=gan_project)
    assert again.returncode == 2 and "already exists" in again.stderr


def test_train_errors(gan_project, monkeypatch, capsys):
    from gapfill import cli

    monkeypatch.chdir(gan_project)
    recipe = (gan_project / "recipe.yaml").read_text()
    # method.model that does not exist
    (gan_project / "fill.yaml").write_text(
        recipe.replace("  name: gan\n", "  name: gan\n  model: outputs/none.pt\n")
    )
    assert cli.main(["run", "fill.yaml"]) == 2
    assert "train it first" in capsys.readouterr().err
    # a method that cannot train data-parallel, under a 2-process environment
    (gan_project / "eof.yaml").write_text(
        recipe.replace("name: gan", "name: eof").split("  options:")[0]
        + "holdout: {fraction: 0.1}\noutput: {path: outputs/eof.nc}\n"
    )
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert cli.main(["train", "eof.yaml"]) == 2
    assert "torchrun" in capsys.readouterr().err
    # a gan under WORLD_SIZE=2 without the rest of torchrun's environment
    for key in ("RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(key, raising=False)
    assert cli.main(["train", "recipe.yaml"]) == 2
    assert "start distributed training with torchrun" in capsys.readouterr().err
