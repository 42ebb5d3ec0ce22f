"""The shared training run (gapfill.training): checkpoints carry the run's identity.

A checkpoint is resumed only by a run of the same method on the same data with the
same options (budgets, cadence and progress aside); ``resume=False`` starts over.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from gapfill.checkpoints import CheckpointManager, load_checkpoint  # noqa: E402
from gapfill.cube import Cube  # noqa: E402
from gapfill.methods import get  # noqa: E402
from gapfill.testing import travelling_wave  # noqa: E402
from gapfill.training import TrainingOptions  # noqa: E402

TINY = dict(
    widths=(4,), kernels=((3, 3, 3),), strides=((1, 1, 1),), window=(4, 8, 8), batch_size=1,
    n_chains=1, recover_steps=1, synth_steps=1, fill_steps=2, fill_average=1,
    time_budget=None, progress="off", seed=1, eval_every=2, checkpoint_every=2,
)


def _fit(ckpt_dir, da, **options):
    m = get("stgconvnet")(**{**TINY, "checkpoint_dir": str(ckpt_dir), **options})
    m.fit(Cube(da), np.random.default_rng(0))
    return m


@pytest.fixture(scope="module")
def waves():
    _, a = travelling_wave(t=8, h=10, w=10, seed=0)
    _, b = travelling_wave(t=8, h=10, w=10, seed=1)  # same shape, other gaps and values
    return a, b


def test_checkpoints_store_the_run_identity(tmp_path, waves):
    a, _ = waves
    _fit(tmp_path, a, steps=2)
    ckpt = load_checkpoint(CheckpointManager(tmp_path).latest())
    assert "identity" in ckpt
    resumed = _fit(tmp_path, a, steps=4, resume=True, progress="log", eval_every=1)
    assert resumed.fit_info["steps"] == 4  # budgets and cadence may change on resume


def test_resume_on_other_data_is_refused(tmp_path, waves):
    a, b = waves
    _fit(tmp_path, a, steps=2)
    with pytest.raises(ValueError, match="another training run.*other data.*resume=False"):
        _fit(tmp_path, b, steps=4, resume=True)
    shifted = a + 5.0  # the same pattern, other values: other statistics
    with pytest.raises(ValueError, match="other data"):
        _fit(tmp_path, shifted, steps=4, resume=True)


def test_resume_with_other_options_is_refused(tmp_path, waves):
    a, _ = waves
    _fit(tmp_path, a, steps=2)
    with pytest.raises(ValueError, match="options differ: sigma=0.1 there, 0.2 here"):
        _fit(tmp_path, a, steps=4, resume=True, sigma=0.2)
    with pytest.raises(ValueError, match="not written by flowfill"):
        get("flowfill")(checkpoint_dir=str(tmp_path), resume=True, steps=1,
                        progress="off").fit(Cube(a), np.random.default_rng(0))


def test_a_fresh_run_replaces_old_checkpoints(tmp_path, waves):
    a, b = waves
    _fit(tmp_path, a, steps=6)  # checkpoints at steps 4 and 6
    with pytest.warns(UserWarning, match="starting over"):
        fresh = _fit(tmp_path, b, steps=2)
    assert fresh.fit_info["steps"] == 2
    assert [s for s, _ in CheckpointManager(tmp_path).checkpoints()] == [2]
    resumed = _fit(tmp_path, b, steps=4, resume=True)  # continues the new run, not the old
    assert resumed.fit_info["steps"] == 4


def test_checkpoints_without_identity_are_not_resumed(tmp_path, waves):
    a, _ = waves
    _fit(tmp_path, a, steps=2)
    manager = CheckpointManager(tmp_path)
    ckpt = load_checkpoint(manager.latest())
    del ckpt["identity"]
    manager.save(2, ckpt)
    with pytest.raises(ValueError, match="does not say which data"):
        _fit(tmp_path, a, steps=4, resume=True)


def test_training_options_are_shared_and_checked():
    for name in ("combcn", "tgfnet", "flowfill", "stgconvnet"):
        assert issubclass(get(name).Options, TrainingOptions)
    with pytest.raises(ValueError, match="device"):
        get("stgconvnet")(device="cuda")
    with pytest.raises(ValueError, match="ema"):
        get("combcn")(ema=1.5)


def test_ema_is_shared_by_every_trained_method(tmp_path, waves):
    a, _ = waves
    m = _fit(tmp_path, a, steps=3, checkpoint_every=1, val_share=0.0, ema=0.5, lr=1e-2)
    (_, before), (_, last) = CheckpointManager(tmp_path).checkpoints()  # steps 2 and 3
    before, last = load_checkpoint(before), load_checkpoint(last)
    fitted = m.net.state_dict()
    for k, avg in last["averaged"].items():  # average = 0.5 * previous + 0.5 * new weights
        torch.testing.assert_close(avg, 0.5 * before["averaged"][k] + 0.5 * last["energy"][k])
        torch.testing.assert_close(fitted[k], avg)  # the fitted model is the average
