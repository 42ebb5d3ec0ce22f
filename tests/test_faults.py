"""Faults a batch run meets: kills, full disks, changed inputs, concurrent runs, bad recipes.

Every case runs the real command (a subprocess, killed with SIGKILL where it says so) on a
tiny NetCDF cube with the coordinates real products carry (2-D ``nav_lat``/``nav_lon``, a
scalar ``forecast_reference_time``, ``time_bnds``), and checks that the final path holds
either nothing or a complete product identical to an uninterrupted run's, and that no
temporary file survives the next successful run.
"""

from __future__ import annotations

import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import yaml

import gapfill
from gapfill import cli, pipeline, zarr_regions
from gapfill import recipe as rc
from gapfill.testing import synthetic_sst

#: Global attributes that differ between two runs of one recipe (when and how each ran).
RUN_ATTRS = {"history", "date_created"}
#: Names of what a run leaves while it works, and must not leave after it succeeded.
LEFTOVERS = ("*.tmp-*", ".*.tmp-*", "*.partial*", "*.lock", "*.old-*")
#: A subprocess run of the command with a hook: ``pause()`` creates the marker file given
#: as first argument and sleeps (for the kill); the rest of ``sys.argv`` is the command.
HOOKED = """
import os, sys, time
from gapfill import cli, io, pipeline, zarr_regions
MARK, NAP = sys.argv[1], float(sys.argv[2])
def pause(*args, **kwargs):
    open(MARK, "w").close()
    time.sleep(NAP)
{patch}
sys.exit(cli.main(sys.argv[3:]))
"""
PATCHES = {
    "fit": "real_fit = pipeline._fit\npipeline._fit = lambda *a: pause() or real_fit(*a)",
    "regions": ("calls = []\n"
                "def after(name):\n"
                "    calls.append(name)\n"
                "    if len(calls) > 1: pause()\n"
                "zarr_regions._after_region = after"),
    "conversion": ("real_move = io.move_into_place\n"
                   "def move(tmp, path):\n"
                   "    if str(path).endswith('.nc'): pause()\n"
                   "    real_move(tmp, path)\n"
                   "io.move_into_place = zarr_regions.move_into_place = move"),
}


def make_cube(path: Path, offset: float = 0.0) -> None:
    """A 12 x 8 x 10 cube on a curvilinear grid, with the coordinates real products carry."""
    da = synthetic_sst(t=12, h=8, w=10) + np.float32(offset)
    lon, lat = np.meshgrid(da.lon.values, da.lat.values)
    ds = da.rename({"lat": "y", "lon": "x"}).drop_vars(["y", "x"]).to_dataset(name="sst")
    ds["sst"].attrs = {"units": "K", "standard_name": "sea_surface_temperature"}
    ds = ds.assign_coords(
        nav_lat=(("y", "x"), lat.astype("f4"),
                 {"standard_name": "latitude", "units": "degrees_north"}),
        nav_lon=(("y", "x"), lon.astype("f4"),
                 {"standard_name": "longitude", "units": "degrees_east"}),
        forecast_reference_time=np.datetime64("2019-12-01T00:00", "ns"),
    )
    t = ds.time.values
    ds["time_bnds"] = (("time", "bnds"), np.stack([t, t + np.timedelta64(1, "D")], axis=1))
    ds.to_netcdf(path.with_suffix(".tmp"))  # then renamed: as re-processing tools do
    os.replace(path.with_suffix(".tmp"), path)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """``in.nc`` and ``recipe.yaml``: linear fill, 3 regions of 4 time steps, NetCDF out."""
    make_cube(tmp_path / "in.nc")
    recipe = {
        "input": {"path": "in.nc", "variable": "sst", "chunks": {"time": 4}},
        "method": {"name": "linear"},
        "output": {"path": "out/p.nc", "figures": False},
        "compute": {"kind": "threads"},
    }
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    return tmp_path


def set_recipe(project: Path, **changes: object) -> None:
    data = yaml.safe_load((project / "recipe.yaml").read_text())
    for key, value in changes.items():
        section, name = key.split("__")
        data.setdefault(section, {})[name] = value
    (project / "recipe.yaml").write_text(yaml.safe_dump(data))


def run(project: Path, *args: str) -> tuple[int, str]:
    """The command in this process (exit status, stderr)."""
    cwd = os.getcwd()
    os.chdir(project)
    try:
        from contextlib import redirect_stderr
        from io import StringIO

        err = StringIO()
        with redirect_stderr(err):
            code = cli.main(["run", "recipe.yaml", *args])
        return code, err.getvalue()
    finally:
        os.chdir(cwd)


def start(project: Path, patch: str, nap: float = 300.0, *args: str,
          **popen: object) -> tuple[subprocess.Popen, Path]:
    mark = project / "paused"
    mark.unlink(missing_ok=True)
    code = HOOKED.format(patch=PATCHES[patch])
    proc = subprocess.Popen([sys.executable, "-c", code, str(mark), str(nap), "run",
                             "recipe.yaml", *args], cwd=project, stderr=subprocess.PIPE,
                            text=True, **popen)
    return proc, mark


def wait_for(proc: subprocess.Popen, ready, timeout: float = 60.0) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, f"the run ended before its pause: {proc.stderr.read()}"
        assert time.monotonic() < deadline, "the run never reached its pause"
        time.sleep(0.02)


def kill_at(project: Path, patch: str, *args: str, then=lambda: True) -> None:  # noqa: ANN001
    """Run the command and SIGKILL it at ``patch``'s pause (once ``then()`` holds too)."""
    proc, mark = start(project, patch, 300.0, *args)
    wait_for(proc, lambda: mark.exists() and then())
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.stderr.close()


def reference(project: Path, *args: str) -> Path:
    """An uninterrupted run's product, moved to ``ref/``."""
    code, err = run(project, "-q", *args)
    assert code == 0, err
    ref = project / "ref" / "p.nc"
    ref.parent.mkdir(exist_ok=True)
    shutil.move(project / "out" / "p.nc", ref)
    for p in (project / "out").glob("p_*"):
        p.unlink()
    return ref


def assert_same_product(path: Path, ref: Path) -> None:
    """Equal in every variable, coordinate and attribute, but :data:`RUN_ATTRS`."""
    with gapfill.open(path) as a, gapfill.open(ref) as b:
        a, b = a.load(), b.load()
    xr.testing.assert_identical(a.drop_attrs(deep=False), b.drop_attrs(deep=False))
    drop = lambda attrs: {k: v for k, v in attrs.items() if k not in RUN_ATTRS}  # noqa: E731
    assert drop(a.attrs) == drop(b.attrs)


def leftovers(project: Path) -> list[str]:
    out = project / "out"
    return sorted(p.name for pat in LEFTOVERS for p in out.glob(pat)) if out.exists() else []


# -- 1. region writes carry every coordinate ---------------------------------------------------
@pytest.mark.parametrize("suffix", [".nc", ".zarr"])
def test_chunked_run_equals_in_memory_run(project, suffix):
    """Property: a region-by-region run writes what the in-memory run writes, coordinates
    and attributes included. Only ``history``/``date_created`` (when it ran) and the recipe
    attribute (whose ``input.chunks`` differs by construction) are left out; the held-out
    scores are float32 sums in another order, equal to 1e-5."""
    set_recipe(project, output__path=f"out/p{suffix}", holdout__fraction=0.2)
    assert run(project, "-q")[0] == 0
    set_recipe(project, input__chunks=None, output__path=f"out/m{suffix}")
    assert run(project, "-q")[0] == 0
    out = project / "out"
    with gapfill.open(out / f"p{suffix}") as a, gapfill.open(out / f"m{suffix}") as b:
        a, b = a.load(), b.load()
    assert a.forecast_reference_time.values == np.datetime64("2019-12-01", "ns")
    assert np.isfinite(a.nav_lat).all() and np.isfinite(a.nav_lon).all()
    xr.testing.assert_identical(a.drop_attrs(deep=False), b.drop_attrs(deep=False))
    skip = RUN_ATTRS | {"gapfill_recipe"}
    assert set(a.attrs) == set(b.attrs)
    for key in set(a.attrs) - skip:
        if key.startswith("gapfill_holdout_"):
            # (atol: a bias near 0 summed in float32 in another order)
            np.testing.assert_allclose(a.attrs[key], b.attrs[key], rtol=1e-5, atol=1e-5,
                                       err_msg=key)
        else:
            assert a.attrs[key] == b.attrs[key], key


def test_bundled_ostia_recipe_chunked_to_netcdf(tmp_path, monkeypatch):
    """The bundled recipe, dask-backed, NetCDF out: completes and leaves only its outputs."""
    monkeypatch.chdir(tmp_path)
    recipe = rc.load(rc.default_recipe_path(), overrides={
        "input.chunks": {"time": 12}, "output.figures": False, "compute": {"kind": "threads"},
        "method.name": "linear", "method.options": {}})
    pipeline.run(recipe, progress=False)
    assert sorted(p.name for p in (tmp_path / "outputs").iterdir()) == [
        "ostia_sst_eof.nc", "ostia_sst_eof_diagnostics.csv"]
    with xr.open_dataset(tmp_path / "outputs" / "ostia_sst_eof.nc") as out:
        assert not out.forecast_reference_time.isnull().any()
        assert not out.time_bnds.isnull().any()


# -- 5 and 2. kills, resumes, changed inputs ----------------------------------------------------
@pytest.mark.parametrize("moment", ["fit", "regions", "conversion"])
def test_kill_9_then_rerun_gives_the_uninterrupted_product(project, moment):
    """Killed while fitting, between regions, or converting the finished regions to NetCDF:
    the final path holds nothing; the next run keeps every written region and writes the
    product of an uninterrupted run. Between regions, the input is also re-processed
    (same shape, +5 K) before the rerun: refused, nothing lost, and resumed once the
    original file is back."""
    ref = reference(project)
    partial = zarr_regions.partial_path(project / "out" / "p.nc", "netcdf")
    kill_at(project, moment, "-q",
            then=lambda: moment != "regions" or zarr_regions.written_regions(partial))
    assert not (project / "out" / "p.nc").exists()  # nothing, never a part
    written = zarr_regions.written_regions(partial)
    if moment == "regions":
        shutil.copy2(project / "in.nc", project / "original.nc")  # keeps the mtime
        make_cube(project / "in.nc", offset=5.0)
        code, err = run(project, "-q")
        assert code == 2 and len(err.strip().splitlines()) == 1
        assert "in.nc changed" in err and "--overwrite" in err
        assert (
            zarr_regions.written_regions(partial) == written
            and not (project / "out" / "p.nc").exists()
        )
        os.replace(project / "original.nc", project / "in.nc")
    code, err = run(project)
    assert code == 0, err
    assert "belongs to another run" not in err and "starting over" not in err
    if written:  # every region written before the kill is kept
        assert f"{len(written)} of 3 regions already written" in err
    if moment == "conversion":
        assert len(written) == 3 and "reusing the linear fit" in err
    assert_same_product(project / "out" / "p.nc", ref)
    assert leftovers(project) == []


def test_kill_during_in_memory_write_leaves_no_temp_file(project):
    set_recipe(project, input__chunks=None)
    ref = reference(project)
    kill_at(project, "conversion", "-q")
    assert [p.name for p in (project / "out").glob("p.nc.tmp-*")]  # what a kill leaves ...
    assert not (project / "out" / "p.nc").exists()
    code, err = run(project)
    assert code == 0, err
    assert "leftover" in err
    assert_same_product(project / "out" / "p.nc", ref)
    assert leftovers(project) == []  # ... is gone after the next run


class Interrupt(Exception):
    """Stands for a kill (the killed cases above run the real command)."""


def test_changed_input_starts_over_with_overwrite(project, monkeypatch):
    partial = zarr_regions.partial_path(project / "out" / "p.nc", "netcdf")

    def stop(name):
        if zarr_regions.written_regions(partial):
            raise Interrupt

    with monkeypatch.context() as m:
        m.setattr(zarr_regions, "_after_region", stop)
        with pytest.raises(Interrupt):
            pipeline.run(rc.load(project / "recipe.yaml", output_dir=project),
                         progress=False)
    assert len(zarr_regions.written_regions(partial)) == 1
    time.sleep(0.01)
    make_cube(project / "in.nc", offset=5.0)
    code, err = run(project, "--overwrite")
    assert code == 0, err
    assert "in.nc changed" in err and "starting over" in err
    shutil.move(project / "out" / "p.nc", project / "new.nc")
    assert_same_product(project / "new.nc", reference(project, "--overwrite"))
    with xr.open_dataset(project / "new.nc") as out, xr.open_dataset(project / "in.nc") as new:
        seen = np.isfinite(new.sst.values)
        np.testing.assert_array_equal(out.sst.values[seen], new.sst.values[seen])


def test_two_concurrent_runs_on_one_output(project):
    ref = reference(project)
    partial = zarr_regions.partial_path(project / "out" / "p.nc", "netcdf")
    first, mark = start(project, "regions", 1.0, "-q")  # pauses 1 s in its regions
    wait_for(first, mark.exists)
    code, err = run(project, "-q")
    assert code == 2 and "being written by another gapfill run" in err
    assert first.wait(timeout=60) == 0, first.stderr.read()
    first.stderr.close()
    assert not partial.exists()
    assert_same_product(project / "out" / "p.nc", ref)
    assert leftovers(project) == []


# -- disk full -------------------------------------------------------------------------------
def _file_size_limit(limit: int):  # noqa: ANN202
    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def test_write_failure_at_conversion_keeps_regions_and_resumes(project):
    """A write that fails (a file-size limit: EFBIG, as a full disk fails with ENOSPC) when
    the NetCDF file is written: one line, exit 2, no product, every region kept."""
    ref = reference(project)
    proc = subprocess.run([sys.executable, "-m", "gapfill", "run", "recipe.yaml", "-q"],
                          cwd=project, capture_output=True, text=True, timeout=120,
                          preexec_fn=_file_size_limit(12_000))
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("gapfill: error: writing the output") and "p.nc" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not (project / "out" / "p.nc").exists()
    assert not list((project / "out").glob("p.nc.tmp-*"))
    partial = zarr_regions.partial_path(project / "out" / "p.nc", "netcdf")
    assert len(zarr_regions.written_regions(partial)) == 3
    code, err = run(project)
    assert code == 0 and "3 of 3 regions already written" in err
    assert_same_product(project / "out" / "p.nc", ref)
    assert leftovers(project) == []


def _can_mount_tmpfs() -> bool:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-m", "sh", "-c", "mount -t tmpfs -o size=64k t /mnt"],
                           capture_output=True)
    return probe.returncode == 0


@pytest.mark.skipif(not _can_mount_tmpfs(), reason="mounting a size-limited tmpfs needs root "
                    "and unshare; the file-size-limit case covers the same write failure")
@pytest.mark.parametrize(("suffix", "chunks"), [(".nc", {"time": 4}), (".zarr", None)])
def test_disk_full(project, suffix, chunks):
    """A real full disk (a 24 KiB tmpfs in a private mount namespace): one line naming the
    problem, exit 2, nothing at the final path and no temporary file left."""
    set_recipe(project, input__chunks=chunks)
    full = project / "full"
    full.mkdir()
    script = (f"mount -t tmpfs -o size=24k tmpfs {full} && "
              f"{sys.executable} -m gapfill run recipe.yaml -q -o {full}/p{suffix}; "
              f"echo rc=$?; ls -A {full}")
    proc = subprocess.run(["unshare", "-m", "sh", "-c", script], cwd=project,
                          capture_output=True, text=True, timeout=120)
    rc_line, *names = proc.stdout.split()
    assert rc_line == "rc=2", proc.stderr
    assert proc.stderr.startswith("gapfill: error: ") and "space left" in proc.stderr
    assert f"p{suffix}" in proc.stderr  # names the output
    assert len(proc.stderr.strip().splitlines()) == 1
    assert f"p{suffix}" not in names
    assert not [n for n in names if ".tmp-" in n], names


# -- 6. expected failures and checks before work ----------------------------------------------
def test_corrupt_chunk_and_unreadable_file_are_one_line_errors(project):
    with xr.open_dataset(project / "in.nc") as ds:
        ds.chunk({"time": 4}).to_zarr(project / "in.zarr")
    chunk = next(p for p in (project / "in.zarr" / "sst").rglob("*") if p.is_file()
                 and p.name != "zarr.json")
    chunk.write_bytes(b"garbage")
    set_recipe(project, input__path="in.zarr", input__chunks=None)
    code, err = run(project, "-q")
    assert code == 2 and "reading the input" in err and "in.zarr" in err, err
    assert len(err.strip().splitlines()) == 1

    (project / "bad.nc").write_bytes((project / "in.nc").read_bytes()[:3000])  # truncated
    set_recipe(project, input__path="bad.nc")
    code, err = run(project, "-q")
    assert code == 2 and "bad.nc" in err and len(err.strip().splitlines()) == 1


def forbidden(why: str):  # noqa: ANN201
    """A stand-in for a function that must not run: it fails the test with ``why``."""
    def never(*args, **kwargs):  # noqa: ANN002, ANN003
        raise AssertionError(why)
    return never


def validate(project: Path, *args: str) -> tuple[int, str]:
    from contextlib import redirect_stderr, redirect_stdout
    from io import StringIO

    cwd = os.getcwd()
    os.chdir(project)
    err = StringIO()
    try:
        with redirect_stderr(err), redirect_stdout(StringIO()):
            code = cli.main(["validate", "recipe.yaml", *args])
    finally:
        os.chdir(cwd)
    return code, err.getvalue()


def test_validate_refuses_unwritable_output(project):
    (project / "blocker").write_text("a file, not a directory")
    set_recipe(project, output__path="blocker/sub/p.nc")
    code, err = validate(project)
    assert code == 2 and "output.path" in err and "not a directory" in err


def test_validate_refuses_float16_for_netcdf(project):
    with xr.open_dataset(project / "in.nc") as ds:
        ds.assign(sst=ds.sst.astype("float16")).to_zarr(project / "f16.zarr")
    set_recipe(project, input__path="f16.zarr", input__chunks=None)
    code, err = validate(project)
    assert code == 2 and "NetCDF cannot store 'sst' (float16)" in err
    set_recipe(project, output__path="out/p.zarr")
    assert validate(project)[0] == 0


def test_validate_refuses_nan_coordinates(project):
    with xr.open_dataset(project / "in.nc") as ds:
        ds = ds.load()
    ds = ds.assign_coords(x=np.where(np.arange(10) == 3, np.nan, np.arange(10.0)))
    ds.to_netcdf(project / "nan.nc")
    set_recipe(project, input__path="nan.nc")
    code, err = validate(project)
    assert code == 2 and "coordinate 'x' holds NaN" in err


def test_time_order_checked_by_validate_and_run(project):
    with xr.open_dataset(project / "in.nc") as ds:
        ds = ds.load()
    ds.isel(time=np.r_[0:6, 5, 6:12]).to_netcdf(project / "dup.nc")
    ds.isel(time=np.r_[0:4, 8:12, 4:8]).to_netcdf(project / "unsorted.nc")
    set_recipe(project, input__path="dup.nc")
    code, err = validate(project)
    assert code == 2 and "1 duplicate time(s) (2020-06-01" in err
    set_recipe(project, input__path="in.nc")
    ref = reference(project)
    set_recipe(project, input__path="unsorted.nc")
    code, err = validate(project)
    assert code == 0 and "not in increasing order" in err
    code, err = run(project)  # region by region, out of order
    assert code == 0 and "not in increasing order" in err
    with gapfill.open(project / "out" / "p.nc") as out, gapfill.open(ref) as whole:
        np.testing.assert_array_equal(out.time, ds.time[np.r_[0:4, 8:12, 4:8]])
        xr.testing.assert_identical(out.sst.sortby("time").load(), whole.sst.load())


def test_validate_checks_the_saved_model(project):
    set_recipe(project, method__model="model.pt")
    (project / "model.pt").write_bytes(b"not a model")
    code, err = validate(project)
    assert code == 2 and "method.model" in err
    da = synthetic_sst(t=12, h=6, w=10)
    da.gapfill.fit("linear").save(project / "model.pt")  # another grid (and variable name)
    code, err = validate(project)
    assert code == 2 and "method.model" in err


@pytest.mark.parametrize("option", [{"width": 10**9}, {"batch_size": 10**9},
                                    {"guide_pool": 10**9}, {"window": [10**9] * 3}])
def test_validate_refuses_what_memory_cannot_hold(project, monkeypatch, option):
    monkeypatch.setattr("gapfill.preflight.machine_memory", lambda: 2 * 2**30)  # 2 GiB machine
    big = synthetic_sst(t=64, h=64, w=256)  # a 64 x 64 x 256 cube: windows are clipped to it
    big.to_dataset(name="sst").to_netcdf(project / "big.nc")
    set_recipe(project, input__path="big.nc", method__name="gan", method__options=option)
    # the estimate is arithmetic on the options: no training data, no network
    never = forbidden("validate set up training: the check must come before any work")
    monkeypatch.setattr("gapfill.methods.gan_data.TrainingData.build", never)
    monkeypatch.setattr("gapfill.methods.gan.GAN._build", never)
    code, err = validate(project)
    assert code == 2 and "method.options" in err and "GiB of memory" in err, err
    assert "this machine has 2 GiB" in err


def test_billion_laughs_recipe_is_refused_before_anything_is_built(project, monkeypatch):
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for prev, name in zip("abcdefgh", "bcdefghi"):
        lines.append(f"{name}: &{name} [{','.join([f'*{prev}'] * 9)}]")
    recipe = project / "recipe.yaml"
    recipe.write_text("\n".join(lines) + "\n" + recipe.read_text())
    # refused while the document is composed, before any value (and any expansion) exists
    monkeypatch.setattr(rc._RecipeLoader, "construct_document",
                        forbidden("the recipe's values were built: its aliases could expand"))
    code, err = validate(project)
    assert code == 2 and "aliases (*a) are not allowed" in err
    assert len(err) < 500


def test_overwrite_replaces_only_diagnostics_csv_gapfill_wrote(project):
    precious = project / "notes.csv"
    precious.write_text("name,value\nkeep,me\n")
    set_recipe(project, output__diagnostics_csv="notes.csv", output__overwrite=True)
    code, err = validate(project)
    assert code == 2 and "is not a diagnostics table gapfill wrote" in err
    assert precious.read_text() == "name,value\nkeep,me\n"
    set_recipe(project, output__diagnostics_csv="out/p_diagnostics.csv")
    assert run(project, "-q")[0] == 0  # a table gapfill wrote ...
    assert run(project, "-q")[0] == 0  # ... is replaced


# -- 5. replacing a Zarr product ---------------------------------------------------------------
SWAP = """
import os, sys
import numpy as np, xarray as xr
from gapfill import atomic, io
target = sys.argv[1]
if sys.argv[2] == "fallback":
    atomic.exchange = lambda a, b: False  # a system without renameat2
ds = xr.Dataset({"v": ("x", np.arange(3.0))})
io.write(ds, target)
moves = []
real = os.replace
def replace(a, b):
    if target in (os.fspath(a), os.fspath(b)):
        moves.append(b)
        if len(moves) == 2:
            os._exit(9)  # killed between renaming the old product away and the new one in
    real(a, b)
os.replace = replace
io.write(ds + 1, target, overwrite=True)
"""


@pytest.mark.parametrize("system", ["renameat2", "fallback"])
def test_killed_zarr_overwrite_never_loses_the_product(tmp_path, system):
    """Replacing a Zarr store: one atomic exchange where the system has it; elsewhere a kill
    between the fallback's two renames leaves the old store aside, and the next run puts it
    back before anything else."""
    from gapfill import guard
    from gapfill.atomic import exchange

    target = tmp_path / "p.zarr"
    if system == "renameat2":
        (tmp_path / "a").mkdir()
        (tmp_path / "b").mkdir()
        assert exchange(tmp_path / "a", tmp_path / "b"), "no renameat2 on this system"
    proc = subprocess.run([sys.executable, "-c", SWAP, str(target), system],
                          capture_output=True, text=True, timeout=60)
    if system == "renameat2":
        assert proc.returncode == 0, proc.stderr
        with xr.open_zarr(target) as out:
            np.testing.assert_array_equal(out.v.values, [1.0, 2.0, 3.0])  # the new product
    else:
        assert proc.returncode == 9 and not target.exists()
        guard.clean_leftovers([target])
        with xr.open_zarr(target) as out:
            np.testing.assert_array_equal(out.v.values, [0.0, 1.0, 2.0])  # the old one, back
    assert sorted(p.name for p in tmp_path.iterdir() if p.name not in "ab") == ["p.zarr"]


def test_removing_a_failed_store_outlasts_writes_still_under_way(tmp_path):
    """Chunk writes of a failed Zarr write that are still under way make the store's
    directories again after they are removed: ``remove`` returns only once the tree has
    stayed gone, so nothing is left when the writes end."""
    import threading

    from gapfill.atomic import remove

    store = tmp_path / "p.zarr.tmp-0"
    (store / "v" / "c").mkdir(parents=True)
    stop = time.monotonic() + 0.3

    def late_writes():
        i = 0
        while time.monotonic() < stop:
            (store / "v" / "c").mkdir(parents=True, exist_ok=True)
            (store / "v" / "c" / str(i)).write_bytes(b"chunk")
            i += 1
            time.sleep(0.02)

    writer = threading.Thread(target=late_writes)
    writer.start()
    remove(store)
    writer.join()
    assert not store.exists()
