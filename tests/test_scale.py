"""Scale: chunk-wise lazy fill, streaming fits, compute section, clusters, resumable writes."""

from __future__ import annotations

import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path

import dask
import numpy as np
import pytest
import xarray as xr
import yaml
from dask.callbacks import Callback
from test_accessor import CountingScheduler

import gapfill
from gapfill import cli, io, methods, pipeline, streaming, zarr_regions
from gapfill import recipe as rc
from gapfill.diagnostics import holdout_mask
from gapfill.fitted import Holdout
from gapfill.testing import synthetic_sst

ROOT = Path(__file__).resolve().parents[1]
CLASSICAL = ["linear", "eof", "climatology"]
CHUNKS = {"time": {"time": 5}, "space": {"lat": 5, "lon": 7}, "both": {"time": 3, "lat": 6}}


def gappy_cube(t: int = 36) -> xr.DataArray:
    """The synthetic cube with long gaps: pixels unseen for most of the series, at either end."""
    da = synthetic_sst(t=t, h=12, w=20, missing=0.5)
    v = da.values
    v[2:-2, 5, 5] = np.nan  # one observation at each end
    v[: t - 3, 6, 6] = np.nan  # seen only at the end
    v[4:, 7, 7] = np.nan  # seen only at the start
    v[10:14] = np.where(np.arange(20) < 10, np.nan, v[10:14])  # half frames missing
    return da.copy(data=v)


class MaxTaskBytes(Callback):
    """Records the largest numpy result of any task of a computation (but the final
    assembly of the computed chunks into the caller's result)."""

    def __init__(self) -> None:
        super().__init__()
        self.max = 0

    def _posttask(self, key, result, dsk, state, id):  # noqa: A002 - dask's signature
        name = key[0] if isinstance(key, tuple) else key
        if str(name).startswith("finalize"):
            return
        for r in result if isinstance(result, tuple) else (result,):
            if isinstance(r, np.ndarray):
                self.max = max(self.max, r.nbytes)


def assert_same_product(a: xr.Dataset, b: xr.Dataset) -> None:
    assert set(a.data_vars) == set(b.data_vars)
    for name in a.data_vars:
        x, y = a[name].values, b[name].values
        if x.dtype.kind == "f":
            np.testing.assert_array_equal(np.isnan(x), np.isnan(y), err_msg=name)
            np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-6, err_msg=name)
        else:
            np.testing.assert_array_equal(x, y, err_msg=name)


# -- chunk-wise fill ---------------------------------------------------------------------------
@pytest.mark.parametrize("chunks", list(CHUNKS))
@pytest.mark.parametrize("method", CLASSICAL)
def test_chunked_fill_equals_in_memory(method, chunks):
    da = gappy_cube()
    model = da.gapfill.fit(method, holdout=0.1, **({"max_modes": 5} if method == "eof" else {}))
    eager = da.gapfill.fill(model, diagnostics=False)
    chunked = da.chunk(CHUNKS[chunks])
    with dask.config.set(scheduler=CountingScheduler(0)):  # building the graph computes nothing
        lazy = chunked.gapfill.fill(model)
    for name in lazy.data_vars:
        assert lazy[name].chunks == chunked.chunks, name  # the input's chunks are kept
    with dask.config.set(scheduler="threads"):
        assert_same_product(lazy.compute(), eager)


def test_linear_time_chunks_are_exact_across_long_gaps():
    """Time edges carry each pixel's nearest observations across chunks: bit for bit."""
    da = gappy_cube(t=40)
    model = da.gapfill.fit("linear", holdout=0)
    eager = da.gapfill.fill(model)["sst"].values
    for size in (1, 4, 7):
        lazy = da.chunk({"time": size}).gapfill.fill(model)["sst"].values
        np.testing.assert_array_equal(lazy, eager)


@pytest.mark.parametrize("method", ["linear", "eof"])
def test_big_blocks_are_filled_a_few_frames_at_a_time(monkeypatch, method):
    from gapfill import chunked, core

    monkeypatch.setattr(chunked, "FILL_BLOCK_BYTES", 12 * 20 * 8 * 2)  # two frames at a time
    sizes = []
    run = core.run_method

    def recording(model, raw, *args, **kwargs):
        sizes.append(raw.shape[1])
        return run(model, raw, *args, **kwargs)

    monkeypatch.setattr(core, "run_method", recording)
    da = gappy_cube()
    model = da.gapfill.fit(method, holdout=0, **({"max_modes": 3} if method == "eof" else {}))
    eager = da.gapfill.fill(model, diagnostics=False)
    lazy = da.chunk({"time": 7}).gapfill.fill(model)
    assert lazy["sst"].chunks == da.chunk({"time": 7}).chunks
    sizes.clear()
    with dask.config.set(scheduler="sync"):
        assert_same_product(lazy.compute(), eager)
    assert max(sizes) == 2 and sum(sizes) == 36


@dataclass
class BoxOptions(methods.Options):
    """No options."""


class BoxMean(methods.Method):
    """A toy method with a halo: gaps get the mean of the observed 3 × 3 × 3 neighbours."""

    name = "test_boxmean"
    Options = BoxOptions
    halo = 1

    def fit(self, cube, rng):
        """Nothing to learn."""

    def chunking(self):
        """Any chunks, with a one-pixel halo on every axis."""
        h = type(self).halo
        return methods.Chunking(whole=(), halo={"time": h, "y": h, "x": h})

    def fill(self, x, rng, samples=1, coords=None):
        """3 × 3 × 3 mean of the observations, clipped at the cube's edges."""
        from scipy.ndimage import uniform_filter

        obs = np.isfinite(x)
        size = (1, 3, 3, 3)
        num = uniform_filter(np.where(obs, x, 0).astype(np.float64), size, mode="constant")
        den = uniform_filter(obs.astype(np.float64), size, mode="constant")
        with np.errstate(invalid="ignore", divide="ignore"):
            out = np.where(den > 1e-9, num / den, 0.0)
        return methods.FillResult(out.astype(np.float32))


methods.register(BoxMean)


def test_halo_tiles_show_no_seams(monkeypatch):
    da = gappy_cube()
    model = da.gapfill.fit("test_boxmean", holdout=0)
    eager = da.gapfill.fill(model)["sst"].values
    chunked = da.chunk({"time": 5, "lat": 5, "lon": 7})
    lazy = chunked.gapfill.fill(model)["sst"]
    assert lazy.chunks == chunked.chunks
    np.testing.assert_allclose(lazy.values, eager, rtol=1e-6, atol=1e-6)
    # Without the halo the tiles disagree at their edges: the check above can see seams.
    monkeypatch.setattr(BoxMean, "halo", 0)
    seams = chunked.gapfill.fill(model)["sst"].values
    assert np.nanmax(np.abs(seams - eager)) > 1e-3


def test_tasks_hold_a_chunk_not_the_cube():
    """Memory is bounded by the chunk: no task of the fill makes an array near the cube's size."""
    da = gappy_cube(t=64)
    cube_bytes = da.size * 8
    for method, options in (("linear", {}), ("eof", {"max_modes": 3})):
        model = da.gapfill.fit(method, holdout=0, **options)
        lazy = da.chunk({"time": 4}).gapfill.fill(model)
        with MaxTaskBytes() as rec, dask.config.set(scheduler="sync"):
            lazy.compute()
        chunk_bytes = 4 * 12 * 20 * 8  # one float64 chunk
        assert rec.max <= 3 * chunk_bytes < cube_bytes / 3, (method, rec.max)


def test_whole_axis_rechunk_warns_when_blocks_blow_up():
    da = gappy_cube()
    model = da.gapfill.fit("eof", holdout=0, max_modes=2)
    with dask.config.set({"array.chunk-size": "1KiB"}):
        with pytest.warns(UserWarning, match=r"needs whole \['x', 'y'\] axes.*along \['time'\]"):
            da.chunk({"time": 36, "lat": 3, "lon": 5}).gapfill.fill(model)


# -- hold-out, fitting and scoring on dask input -------------------------------------------------
def test_lazy_holdout_equals_in_memory_per_time_block(monkeypatch):
    from gapfill import diagnostics

    monkeypatch.setattr(diagnostics, "BLOCK_PIXELS", 12 * 20 * 7)  # blocks of 7 frames
    da = gappy_cube()
    observed = np.isfinite(da.values)[None]
    for process in ("cloud", "empirical"):
        spec = Holdout(0.2, process, seed=4)
        eager = holdout_mask(observed, spec)
        lazy = holdout_mask(dask.array.from_array(observed, chunks=(1, 5, 6, 20)), spec)
        assert lazy.chunks == ((1,), (5,) * 7 + (1,), (6, 6), (20,))
        np.testing.assert_array_equal(lazy.compute(), eager)
        assert eager.any() and not (eager & ~observed).any()
    # One block for a small cube: the draw of the whole cube, as before.
    monkeypatch.setattr(diagnostics, "BLOCK_PIXELS", 2**24)
    assert len(diagnostics.time_blocks(36, 12, 20)) == 1


@pytest.mark.parametrize("method", ["climatology", "eof"])
def test_streaming_fit_never_loads_the_cube(method, monkeypatch):
    da = gappy_cube(t=64)
    chunked = da.chunk({"time": 4})
    options = {"max_modes": 3} if method == "eof" else {}
    with MaxTaskBytes() as rec, dask.config.set(scheduler=CountingScheduler(12)):
        model = chunked.gapfill.fit(method, streaming_fit=True, **options)
    # Tasks see a time chunk (or the eof subsample), never the cube.
    assert rec.max < da.size * 8 / 3
    assert model.method.fit_info["streaming"]
    # in memory, a cheap method is fitted again with its validation pixels; a streaming
    # fit is not: compare with the in-memory fit before that
    monkeypatch.setattr(type(model.method), "refit_with_validation", False)
    eager = da.gapfill.fit(method, **options)
    if method == "climatology":  # the same statistics, the same hold-out
        for key in ("mean", "std"):
            np.testing.assert_allclose(model.method.state_dict()[key],
                                       eager.method.state_dict()[key], rtol=1e-5, atol=1e-6)


def test_streaming_eof_agrees_with_in_memory_eof():
    truth = synthetic_sst(t=30, h=24, w=40, missing=0.0)
    da = synthetic_sst(t=30, h=24, w=40, missing=0.4)
    hidden = np.isfinite(truth.values) & np.isnan(da.values) & np.isfinite(da.values).any(0)
    eager = da.gapfill.fit("eof", max_modes=6)
    stream = da.chunk({"time": 7}).gapfill.fit("eof", streaming_fit=True, max_modes=6)
    assert stream.method.fit_info["streaming"]["stride"] == 1
    assert stream.method.fit_info["modes"] == eager.method.fit_info["modes"]
    a = da.gapfill.fill(eager, diagnostics=False)["sst"].values
    b = da.gapfill.fill(stream, diagnostics=False)["sst"].values
    mae_a = np.abs(a - truth.values)[hidden].mean()
    mae_b = np.abs(b - truth.values)[hidden].mean()
    assert abs(mae_b - mae_a) < 0.1 * mae_a  # as good as DINEOF itself
    # and nearly the same fill (the streaming fit sees 80% of the observations, without
    # the hold-out and the validation pixels; the in-memory eof is fitted again with the
    # validation pixels, 90%)
    assert np.abs(a - b)[hidden].mean() < 0.35 * mae_a


def test_streaming_eof_on_a_subsample(monkeypatch):
    monkeypatch.setattr(streaming, "SUBSAMPLE_ENTRIES", 30 * 6 * 10)
    truth = synthetic_sst(t=30, h=24, w=40, missing=0.0)
    da = synthetic_sst(t=30, h=24, w=40, missing=0.4)
    hidden = np.isfinite(truth.values) & np.isnan(da.values) & np.isfinite(da.values).any(0)
    model = da.chunk({"time": 7}).gapfill.fit("eof", streaming_fit=True, max_modes=6)
    assert model.method.fit_info["streaming"]["stride"] == 4
    filled = da.gapfill.fill(model, diagnostics=False)["sst"].values
    eager = da.gapfill.fill(da.gapfill.fit("eof", max_modes=6), diagnostics=False)["sst"].values
    mae = np.abs(filled - truth.values)[hidden].mean()
    assert mae < 1.3 * np.abs(eager - truth.values)[hidden].mean()


def test_streaming_fit_choice():
    da = gappy_cube()
    small = da.chunk({"time": 6}).gapfill.fit("eof", max_modes=2)
    assert not small.method.fit_info.get("streaming")
    with pytest.raises(ValueError, match="dask-backed"):
        da.gapfill.fit("eof", streaming_fit=True)
    with pytest.raises(ValueError, match="no streaming fit"):
        da.chunk({"time": 6}).gapfill.fit("test_boxmean", streaming_fit=True)


def test_lazy_score_equals_in_memory_score():
    da = gappy_cube()
    model = da.gapfill.fit("eof", max_modes=4)
    eager = da.gapfill.score(model)
    lazy = da.chunk({"time": 5}).gapfill.score(model)
    assert lazy.summary["n"] == eager.summary["n"] > 0
    scale = eager.summary["mae"]
    keys = ("mae", "mae_se", "rmse", "bias", "mean_predicted_error", "transfer")
    for key in keys:  # float32 vs float64
        assert lazy.summary[key] == pytest.approx(eager.summary[key], rel=1e-5, abs=1e-4 * scale)


def test_zarr_subset_with_several_holdout_blocks(tmp_path, monkeypatch):
    """A Zarr-backed, sliced cube: separate reads, several hold-out draws, lazy score."""
    from gapfill import diagnostics

    monkeypatch.setattr(diagnostics, "BLOCK_PIXELS", 12 * 20 * 6)
    gappy_cube(t=40).to_dataset().chunk({"time": 4}).to_zarr(tmp_path / "c.zarr")
    da = xr.open_zarr(tmp_path / "c.zarr")["sst"].isel(time=slice(3, 37))
    model = da.gapfill.fit("linear")
    eager = da.load().gapfill.score(model)
    lazy = da.gapfill.score(model)
    assert lazy.summary["n"] == eager.summary["n"] > 0
    assert lazy.summary["mae"] == pytest.approx(eager.summary["mae"], rel=1e-5)
    filled = da.gapfill.fill(model).compute()
    assert_same_product(filled, da.load().gapfill.fill(model, diagnostics=False))


# -- the compute section --------------------------------------------------------------------------
@pytest.fixture
def zarr_project(tmp_path, monkeypatch) -> Path:
    """A tiny Zarr input chunked by time and a recipe filling it (linear, no figure)."""
    monkeypatch.chdir(tmp_path)
    da = gappy_cube(t=24)
    da.to_dataset().chunk({"time": 4}).to_zarr(tmp_path / "in.zarr", consolidated=True)
    recipe = {
        "input": {"path": "in.zarr", "variable": "sst"},
        "method": {"name": "linear"},
        "holdout": {"fraction": 0.1},
        "output": {"path": "out/filled.zarr", "figures": False},
        "compute": {"kind": "threads"},
    }
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))
    return tmp_path


def load(project: Path, **compute) -> rc.Recipe:
    return rc.load(project / "recipe.yaml", overrides={"compute": compute} if compute else None)


@pytest.mark.parametrize(
    "compute, pattern",
    [
        ({"kind": "kubernetes"}, r"compute.kind: Input should be 'local', 'slurm'"),
        ({"kind": "local", "queue": "big"}, r"compute.queue: not a key of compute kind 'local' "
                                            r"\(a key of kind pbs / slurm\)"),
        ({"kind": "slurm", "n_workers": 2},
         r"compute.n_workers: not a key of compute kind 'slurm'"),
        ({"kind": "pbs", "job_mem": "4GB"}, r"compute.job_mem: not a key of compute kind 'pbs'"),
        ({"kind": "slurm", "walltme": "1:00"}, r"recipe key 'compute.walltme' is not allowed "
                                               r"\(did you mean 'walltime'\?\)"),
        ({"kind": "threads", "address": "tcp://h:8786"}, r"compute.address: connects to an "),
        ({"kind": "address"}, r"compute.address: kind 'address' needs"),
        ({"kind": "slurm", "n_jobs": 0}, r"compute.n_jobs: Input should be greater than or equal"),
    ],
)
def test_compute_section_is_validated(zarr_project, compute, pattern):
    import re

    with pytest.raises(rc.RecipeError) as info:
        load(zarr_project, **compute)
    assert re.search(pattern, str(info.value)), str(info.value)


def test_compute_defaults_and_pass_through(zarr_project):
    assert load(zarr_project).compute.kind == "threads"
    assert load(zarr_project, address="tcp://h:8786").compute.kind == "address"
    r = load(zarr_project, kind="slurm", queue="q", cores=8, processes=2, n_jobs=3,
             job_extra_directives=["--qos=low"])
    assert r.compute.cluster_options() == {
        "cores": 8, "job_extra_directives": ["--qos=low"], "processes": 2, "queue": "q"
    }
    again = rc.from_dict(yaml.safe_load(r.to_yaml()))
    assert again.compute == r.compute


def test_local_cluster_run_equals_in_memory_run(zarr_project, capsys):
    from distributed import get_client

    recipe = load(zarr_project, kind="local", n_workers=1, threads_per_worker=2, processes=False)
    result = pipeline.run(recipe, progress=False)
    with pytest.raises(ValueError):
        get_client()  # the cluster was closed
    out = gapfill.open(result.output)
    assert out["sst"].chunks[0] == (4,) * 6  # the input's chunks
    # The same recipe on the cube in memory gives the same product and hold-out scores.
    da = xr.open_zarr(zarr_project / "in.zarr")["sst"].load()
    model = da.gapfill.fit("linear", holdout=0.1)
    eager = da.gapfill.fill(model)
    # (the error models differ: a dask-backed fit calibrates on its first time chunk)
    assert_same_product(out[["sst", "sst_flag"]].compute(), eager[["sst", "sst_flag"]])
    assert out.attrs["gapfill_holdout_mae"] == pytest.approx(
        eager.attrs["gapfill_holdout_mae"], rel=1e-5
    )
    assert result.holdout["n"] == eager.attrs["gapfill_holdout_n"]


@pytest.mark.parametrize("kind, lines", [
    ("slurm", ["#SBATCH -p compute", "#SBATCH -A oceans", "#SBATCH -t 02:00:00",
               "#SBATCH --qos=normal", "module load python/3.11", "--nworkers 4"]),
    ("pbs", ["#PBS -q compute", "#PBS -A oceans", "#PBS -l walltime=02:00:00",
             "module load python/3.11"]),
])
def test_dry_run_prints_the_job_script(tmp_path, monkeypatch, capsys, kind, lines):
    pytest.importorskip("dask_jobqueue")
    monkeypatch.chdir(tmp_path)
    text = (ROOT / "recipes" / "hpc_slurm.yaml").read_text()
    text = text.replace("/scratch/sst/", "out/").replace("  interface: ib0\n", "")
    if kind == "pbs":
        text = text.replace("kind: slurm", "kind: pbs").replace(
            'job_extra_directives: ["--qos=normal"]', "resource_spec: select=1:ncpus=16:mem=64GB"
        )
    (tmp_path / "hpc.yaml").write_text(text)
    cube = gappy_cube(t=16).rename("analysed_sst")
    cube.to_dataset().chunk({"time": 8}).to_zarr(tmp_path / "data" / "sst_daily_0.25deg_2020.zarr")
    assert cli.main(["run", "hpc.yaml", "--dry-run", "-q"]) == 0
    out = capsys.readouterr().out
    assert "OK (analysed_sst" in out and f"compute: {kind} dask cluster" in out
    for line in lines:
        assert line in out, line
    assert not (tmp_path / "out").exists()  # nothing ran


# -- resumable output -----------------------------------------------------------------------------
class Interrupt(Exception):
    """Stands for a killed run."""


@pytest.mark.parametrize("fmt", ["zarr", "nc"])
def test_interrupted_run_resumes_only_missing_regions(zarr_project, monkeypatch, fmt):
    recipe = load(zarr_project)
    if fmt == "nc":
        recipe = rc.load(zarr_project / "recipe.yaml", overrides={"output.path": "out/f.nc"})
    regions: list[str] = []

    def fail_after_two(name):
        if len(regions) == 2:
            raise Interrupt
        regions.append(name)

    monkeypatch.setattr(zarr_regions, "_after_region", fail_after_two)
    with dask.config.set(scheduler="sync"), pytest.raises(Interrupt):
        pipeline.run(recipe, progress=False, start_cluster=False)  # one region at a time
    output = Path(recipe.output.path)
    partial = zarr_regions.partial_path(output, recipe.output.format)
    assert not output.exists() and partial.exists()
    first = sorted(zarr_regions.written_regions(partial))
    assert first == sorted(regions) and len(first) == 2

    fit_dir = partial.with_name(partial.name + ".fit")  # the fit and scores are kept
    assert {p.name for p in fit_dir.iterdir()} == {"key.txt", "model.pt", "diagnostics.npz"}

    regions.clear()
    monkeypatch.setattr(zarr_regions, "_after_region", regions.append)
    fits: list[str] = []
    real_fit = pipeline._fit
    monkeypatch.setattr(pipeline, "_fit", lambda *a: fits.append("fit") or real_fit(*a))
    pipeline.run(recipe, progress=False)  # the same recipe again
    assert len(regions) == 6 - 2 and not set(regions) & set(first)
    assert fits == []  # neither fitted nor scored again
    assert (
        output.exists()
        and not partial.exists()
        and not zarr_regions.progress_path(partial).exists()
    )
    assert not fit_dir.exists()
    resumed = gapfill.open(output).compute()

    shutil.move(output, output.with_name("resumed" + output.suffix))
    for p in output.parent.glob("filled_diagnostics*"):
        p.unlink()
    regions.clear()
    pipeline.run(recipe, progress=False)  # uninterrupted, for comparison
    assert len(regions) == 6
    whole = gapfill.open(output).compute()
    xr.testing.assert_identical(resumed.drop_attrs(), whole.drop_attrs())
    for key in ("gapfill_holdout_mae", "gapfill_recipe", "gapfill_method"):
        assert resumed.attrs[key] == whole.attrs[key]


def test_region_writes_compute_each_chunk_once(tmp_path, monkeypatch):
    """All regions go to dask in one graph: shared work (time edges) is not redone per region."""
    from gapfill import chunked

    calls = {"fill": 0, "summary": 0}
    fill, summary = chunked._fill_block, chunked._summary

    def count_fill(*args, block_info=None, **kwargs):  # dask passes block_info by name
        calls["fill"] += 1
        return fill(*args, block_info=block_info, **kwargs)

    def count_summary(*args, **kwargs):
        calls["summary"] += 1
        return summary(*args, **kwargs)

    monkeypatch.setattr(chunked, "_fill_block", count_fill)
    monkeypatch.setattr(chunked, "_summary", count_summary)
    da = gappy_cube(t=40)
    model = da.gapfill.fit("linear", holdout=0)
    out = da.chunk({"time": 4}).gapfill.fill(model)
    with dask.config.set(scheduler="sync"):
        io.write(out, tmp_path / "o.zarr", region_dim="time")
    # Each chunk is filled once and summarised once per read of the time-edge scan (two reads:
    # group summaries, then the chunks' own edges), whatever the number of regions.
    assert calls == {"fill": 10, "summary": 20}
    written = xr.open_zarr(tmp_path / "o.zarr")
    assert written["sst"].encoding["chunks"] == (4, 12, 20)
    assert_same_product(written.compute()[["sst", "sst_flag", "sst_error"]], da.gapfill.fill(model))


def test_partial_store_of_another_recipe_is_refused_or_discarded(zarr_project, monkeypatch):
    recipe = load(zarr_project)
    regions: list[str] = []

    def fail_after_one(name):
        if regions:
            raise Interrupt
        regions.append(name)

    monkeypatch.setattr(zarr_regions, "_after_region", fail_after_one)
    with dask.config.set(scheduler="sync"), pytest.raises(Interrupt):
        pipeline.run(recipe, progress=False, start_cluster=False)
    regions.clear()
    monkeypatch.setattr(zarr_regions, "_after_region", regions.append)
    options = {"method.options": {"sigma": 2.0}}
    other = rc.load(zarr_project / "recipe.yaml", overrides=options)
    with pytest.raises(rc.RecipeError, match="1 region.*the recipe changed.*--overwrite"):
        pipeline.run(other, progress=False)
    assert regions == []  # refused before fitting
    other = rc.load(zarr_project / "recipe.yaml", overrides={**options, "output.overwrite": True})
    pipeline.run(other, progress=False)
    assert len(regions) == 6  # nothing reused from the other recipe's partial store


def test_killed_cli_run_resumes(zarr_project):
    """A real kill: the CLI process is killed after its first region, then run again."""
    import signal
    import subprocess
    import sys
    import time

    partial = zarr_project / "out" / "filled.zarr.partial"
    slow = (  # the CLI, with each region taking a while so that the kill lands midway
        "import sys, time; from gapfill import cli, zarr_regions; "
        "zarr_regions._after_region = lambda name: time.sleep(0.3); "
        "sys.exit(cli.main(['run', 'recipe.yaml', '-q']))"
    )
    proc = subprocess.Popen([sys.executable, "-c", slow], cwd=zarr_project)
    deadline = time.monotonic() + 60
    while not zarr_regions.written_regions(partial) and time.monotonic() < deadline:
        time.sleep(0.02)
        assert proc.poll() is None, "the run ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = zarr_regions.written_regions(partial)
    assert 1 <= len(done) < 6
    res = subprocess.run([sys.executable, "-m", "gapfill", "run", "recipe.yaml"],
                         cwd=zarr_project, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert f"{len(done)} of 6 regions already written" in res.stderr
    out = gapfill.open(zarr_project / "out" / "filled.zarr")
    assert int(out["sst"].isnull().sum()) == int((out["sst_flag"] == 2).sum())


def test_sample_windows_reads_tiles_not_the_cube(monkeypatch):
    """Training windows of a dask cube come from a few tile reads, and match the cube."""
    from gapfill.cube import Cube

    da = gappy_cube(t=40)
    cube = Cube(da.chunk({"time": 4}))
    reads: list[tuple] = []
    window = Cube.window

    def counting(self, t0, y0, x0, size):
        reads.append(size)
        return window(self, t0, y0, x0, size)

    monkeypatch.setattr(Cube, "window", counting)
    values, offsets = cube.sample_windows(16, (6, 8, 8), np.random.default_rng(0),
                                          per_read=4, read_tile=10)
    assert values.shape == (16, 1, 6, 8, 8) and offsets.shape == (16, 3)
    assert 4 <= len(reads) <= 8 and all(r == (6, 10, 10) for r in reads)
    whole = Cube(da).values()
    for v, (t0, y0, x0) in zip(values, offsets):
        np.testing.assert_array_equal(v, whole[:, t0 : t0 + 6, y0 : y0 + 8, x0 : x0 + 8])


def test_gan_streaming_fit_samples_blocks_never_the_cube(monkeypatch):
    """A dask-backed cube: the gan trains on sampled blocks; the cube is never loaded whole."""
    from gapfill.cube import Cube

    def no_whole_cube(self):
        raise AssertionError("the streaming fit loaded the whole cube")

    da = gappy_cube(t=40).chunk({"time": 8})
    opts = dict(steps=2, window=(4, 8, 8), width=4, n_down=1, n_res_blocks=1, d_width=4,
                d_layers=1, batch_size=2, guide="eof_interp", guide_pool=1, fit_blocks=3,
                eval_every=1, time_budget=None, progress="off", seed=0, threads=1)
    with monkeypatch.context() as m:
        m.setattr(Cube, "values", no_whole_cube)
        model = da.gapfill.fit("gan", holdout=0.1, streaming_fit=True, options=opts)
    info = model.method.fit_info
    assert info["steps"] == 2 and info["guide_val_mae"] is not None
    out = da.gapfill.fill(model)
    filled = out["sst"].compute()
    observed = np.isfinite(da.values)
    np.testing.assert_array_equal(filled.values[observed], da.values[observed])
    assert np.isfinite(filled.values[out["sst_flag"].values == 1]).all()
    with pytest.raises(ValueError, match="occlusion='cloud'"):
        da.gapfill.fit("gan", holdout=0.0, streaming_fit=True,
                       options=dict(opts, occlusion="empirical"))


def test_gan_time_halo_fills_time_chunks(monkeypatch):
    """With ``time_halo`` the gan fills a dask cube chunk by chunk (no block spans the cube)."""
    from gapfill import chunked

    da = gappy_cube(t=40)
    opts = dict(steps=1, window=(4, 8, 8), width=4, n_down=1, n_res_blocks=1, d_width=4,
                d_layers=1, batch_size=1, guide="eof_interp", guide_pool=1, eval_every=1,
                time_budget=None, progress="off", seed=0, threads=1)
    # A halo wider than the chunks (12 > 8): chunks are merged for the fill, and the
    # output keeps the input's chunks.
    model = da.gapfill.fit("gan", holdout=0.0, options=dict(opts, time_halo=12))
    sizes: list[int] = []
    fill = chunked._fill_block

    def spy(block, *args, **kwargs):
        sizes.append(block.shape[1])
        return fill(block, *args, **kwargs)

    monkeypatch.setattr(chunked, "_fill_block", spy)
    lazy = da.chunk({"time": 8}).gapfill.fill(model)
    assert lazy["sst"].chunks[0] == (8,) * 5
    filled = lazy["sst"].compute(scheduler="sync")
    assert sizes and max(sizes) < 40  # no block holds the whole time axis
    observed = np.isfinite(da.values)
    np.testing.assert_array_equal(filled.values[observed], da.values[observed])
    assert np.isfinite(filled.values[lazy["sst_flag"].values == 1]).all()
    # an error model that sees time needs each block's time edges, laid out as the
    # merged blocks are
    from gapfill.errors import TIME_FEATURES

    model.error_model.coef[1 + np.array(TIME_FEATURES)] = 0.1
    assert model.error_model.sees_time
    with warnings.catch_warnings():  # every time distance is a distance (none negative)
        warnings.filterwarnings("error", message=".*log1p", category=RuntimeWarning)
        again = da.chunk({"time": 8}).gapfill.fill(model).compute(scheduler="sync")
    np.testing.assert_array_equal(again["sst"].values, filled.values)
    assert np.isfinite(again["sst_error"].values[again["sst_flag"].values == 1]).all()
