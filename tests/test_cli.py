"""The gapfill command: validate, run end to end on the real OSTIA cube, exit codes."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import yaml

import gapfill
from gapfill import cli, pipeline
from gapfill import recipe as rc

VAR = "surface_temperature"


def gapfill_command() -> list[str]:
    """The installed ``gapfill`` script, or ``python -m gapfill`` without one."""
    script = Path(sys.executable).with_name("gapfill")
    return [str(script)] if script.exists() else [sys.executable, "-m", "gapfill"]


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*gapfill_command(), *args], cwd=cwd, capture_output=True, text=True, timeout=120
    )


def digest(path: Path) -> tuple[str, int]:
    return hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns


@pytest.fixture
def project(tmp_path, ostia_path) -> Path:
    """A recipe next to a copy of the OSTIA file: 12 months, 40% cloud gaps punched, linear."""
    (tmp_path / "data").mkdir()
    shutil.copy(ostia_path, tmp_path / "data" / "ostia.nc")
    recipe = {
        "input": {"path": "data/ostia.nc", "variable": VAR,
                  "time_slice": {"start": "2006-04", "stop": "2007-03"}},
        "punch": {"process": "cloud", "coverage": 0.4, "seed": 1,
                  "options": {"periodic": [False, True]}},
        "method": {"name": "linear"},
        "holdout": {"fraction": 0.1, "seed": 0},
        "output": {"path": "outputs/filled.nc"},
    }
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))
    return tmp_path


def test_validate_exit_codes(project):
    ok = run_cli("validate", "recipe.yaml", cwd=project)
    assert ok.returncode == 0, ok.stderr
    assert "OK" in ok.stdout and VAR in ok.stdout

    bad = project / "bad.yaml"
    bad.write_text((project / "recipe.yaml").read_text().replace("name: linear", "name: kriging"))
    res = run_cli("validate", "bad.yaml", cwd=project)
    assert res.returncode == 2
    assert "Traceback" not in res.stderr
    lines = res.stderr.strip().splitlines()
    assert lines[-1].startswith("gapfill: error: ")
    assert "method.name: unknown method 'kriging'" in lines[-1]
    assert cli.main(["validate", str(project / "missing.yaml")]) == 2
    assert cli.main(["validate", str(project / "recipe.yaml"), "--output", "x.txt"]) == 2


def test_run_netcdf_end_to_end(project):
    src = project / "data" / "ostia.nc"
    before = digest(src)
    res = run_cli("run", "recipe.yaml", cwd=project)
    assert res.returncode == 0, res.stderr
    assert "fitting linear" in res.stderr and "writing" in res.stderr
    assert "step/s" not in res.stderr  # no progress bar outside a terminal
    out = project / "outputs" / "filled.nc"
    assert res.stdout.split() == [str(out), str(out.with_name("filled_diagnostics.csv")),
                                  str(out.with_name("filled_diagnostics.png"))]
    assert digest(src) == before  # the input is untouched

    ds = xr.open_dataset(out)
    flag = ds[f"{VAR}_flag"]
    assert flag.dtype == np.uint8 and flag.attrs["standard_name"] == "status_flag"
    assert set(np.unique(flag.values)) == {0, 1, 2}
    assert ds.sizes["time"] == 12
    with xr.open_dataset(src) as truth:
        t = truth[VAR].isel(time=slice(0, 12))
        observed = flag.values == 0
        np.testing.assert_array_equal(ds[VAR].values[observed], t.values[observed])
        assert np.isnan(ds[VAR].values[flag.values == 2]).all()
    a = ds.attrs
    assert a["Conventions"].startswith("CF-1.10") and a["gapfill_method"] == "linear"
    assert a["history"].splitlines()[0].endswith("gapfill run recipe.yaml")
    assert 0 < a["gapfill_punched_mae"] < 2 and a["gapfill_punched_n"] > 10_000
    assert 0 < a["gapfill_holdout_mae"] < 2
    resolved = yaml.safe_load(a["gapfill_recipe"])
    assert resolved["input"]["path"] == str(src) and resolved["method"]["name"] == "linear"
    assert "latitude_longitude" in ds and "time_bnds" in ds  # the input's other variables kept
    csv = (out.with_name("filled_diagnostics.csv")).read_text().splitlines()
    assert csv[0].startswith("time,holdout_n,holdout_mae") and "punched_mae" in csv[0]
    assert csv[-1].startswith("all,") and len(csv) == 14
    assert out.with_name("filled_diagnostics.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    again = run_cli("run", "recipe.yaml", cwd=project)
    assert again.returncode == 2
    assert "already exists" in again.stderr and "--overwrite" in again.stderr
    assert "Traceback" not in again.stderr


def test_run_zarr_with_overrides(project, monkeypatch):
    monkeypatch.chdir(project)
    args = ["run", "recipe.yaml", "--output", "outputs/filled.zarr", "-q"]
    assert cli.main(args) == 0
    store = project / "outputs" / "filled.zarr"
    ds = gapfill.open(store)
    assert ds[VAR].chunks is not None
    assert ds[f"{VAR}_flag"].dtype == np.uint8
    assert ds[f"{VAR}_flag"].attrs["flag_meanings"] == "observed filled never_observed"
    assert ds[VAR].attrs["ancillary_variables"].startswith(f"{VAR}_flag")
    assert yaml.safe_load(ds.attrs["gapfill_recipe"])["output"]["format"] == "zarr"
    assert cli.main(args) == 2
    assert cli.main([*args, "--overwrite"]) == 0
    assert sorted(p.name for p in store.parent.iterdir()) == [
        "filled.zarr", "filled_diagnostics.csv", "filled_diagnostics.png"
    ]


def test_run_without_recipe_uses_bundled_default(tmp_path, monkeypatch):
    seen = {}

    def fake_run(recipe, command=None):
        seen["recipe"], seen["command"] = recipe, command
        return pipeline.RunResult(output=Path(recipe.output.path))

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(pipeline, "run", fake_run)
    assert cli.main(["run", "-q"]) == 0
    assert seen["recipe"].output.path == str(tmp_path / "outputs" / "ostia_sst_eof.nc")
    assert seen["recipe"].input.path == rc.sample_path("ostia").as_posix()
    assert seen["command"] == "gapfill run -q"


def test_bad_input_is_exit_2(project, monkeypatch, capsys):
    monkeypatch.chdir(project)
    text = (project / "recipe.yaml").read_text().replace(f"variable: {VAR}", "variable: sst")
    (project / "r2.yaml").write_text(text)
    assert cli.main(["run", "r2.yaml"]) == 2
    err = capsys.readouterr().err
    assert "gapfill: error: input.variable: 'sst' is not in the input" in err
    assert not (project / "outputs").exists()


def test_example_and_version(capsys):
    assert cli.main(["example"]) == 0
    assert capsys.readouterr().out == rc.default_recipe_path().read_text()
    res = subprocess.run([sys.executable, "-m", "gapfill", "--version"], capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 0 and res.stdout.startswith("gapfill ")
