"""What a new user runs into: fill with a method name, what the fit learned, method and
option names, BLAS threads and progress, a 2-D field, the README's method table.

Real data: eofs' sst_ndjfm_anom.nc (50 NDJFM means, 18 x 30, land NaN).
"""

from __future__ import annotations

import dataclasses
import logging
import re
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

import gapfill
from gapfill import methods
from gapfill.methods.base import AUTO_THREADS_VALUES

SST = Path(__import__("eofs").__file__).parent / "examples" / "example_data" / "sst_ndjfm_anom.nc"
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def sst() -> xr.DataArray:
    with xr.open_dataset(SST) as ds:
        da = ds["sst"].load()
    return da.where(np.random.default_rng(0).random(da.shape) > 0.3)


def test_fill_with_a_method_name_says_to_fit_first(sst) -> None:
    with pytest.raises(TypeError, match=r"fill takes a fitted model.*da.gapfill.fit\('eof'\)"):
        sst.gapfill.fill("eof")
    with pytest.raises(TypeError, match="fill takes a fitted model"):
        sst.to_dataset().gapfill.fill("eof")


def test_model_info_holds_what_the_fit_learned(sst, tmp_path) -> None:
    model = sst.gapfill.fit("eof", max_modes=6)
    assert model.info["modes"] == model.method.fit_info["modes"] >= 1
    assert model.info["shape"] == [1, 50, 18, 30] and "fit_seconds" in model.info
    assert "fit: " in repr(model) and '"modes"' in repr(model)
    loaded = gapfill.load(model.save(tmp_path / "m.pt"))
    assert loaded.info == model.info


def test_method_names_any_case_and_option_typos_get_a_suggestion(sst) -> None:
    assert sst.gapfill.fit("EOF", max_modes=2).name == "eof"
    assert methods.get("Linear") is methods.get("linear")
    with pytest.raises(
        ValueError, match=r"\['max_mode'\] for method 'eof' \(did you mean 'max_modes'\?\)"
    ):
        sst.gapfill.fit("eof", max_mode=3)
    with pytest.raises(ValueError, match=r"did you mean 'climatology'"):
        sst.gapfill.fit("climatolgy")


def test_every_method_has_a_threads_option() -> None:
    for name in methods.available():
        fields = {f.name for f in dataclasses.fields(methods.get(name).Options)}
        assert "threads" in fields, name
    with pytest.raises(ValueError, match="'threads'"):
        methods.get("eof")(threads=-1)


def test_threads_limit_blas_around_fit_and_fill(sst, monkeypatch) -> None:
    from threadpoolctl import threadpool_info, threadpool_limits

    seen = []

    class Probe(methods.get("climatology")):
        name = "probe_threads"

        def fit(self, cube, rng):
            seen.append([i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"])
            super().fit(cube, rng)

        def fill(self, x, rng, samples=1, coords=None):
            seen.append([i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"])
            return super().fill(x, rng, samples, coords)

    monkeypatch.setitem(methods._REGISTRY, Probe.name, Probe)  # registered for this test only
    assert sst.size < AUTO_THREADS_VALUES
    with threadpool_limits(limits=2, user_api="blas"):  # whatever the environment says
        sst.gapfill.fill(sst.gapfill.fit("probe_threads", holdout=0))  # small cube: 1 thread
    # fit, the error model's validation fill, the refit and validation fill of every other
    # hold-out draw, the refit with the validation pixels, fill
    calls = 2 * Probe.holdout_draws + 1 + Probe.refit_with_validation
    assert len(seen) == calls and all(n and n == [1] * len(n) for n in seen)
    seen.clear()
    with threadpool_limits(limits=1, user_api="blas"):
        sst.gapfill.fill(sst.gapfill.fit("probe_threads", holdout=0, threads=2))
    assert len(seen) == calls and all(n and n == [2] * len(n) for n in seen)


def test_long_fits_report_progress(sst, caplog) -> None:
    with caplog.at_level(logging.INFO, logger="gapfill"):
        sst.gapfill.fit("eof", max_modes=3, holdout=0)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("eof:")]
    assert any(re.match(r"eof: 1 mode\(s\), cross-validation RMS", m) for m in lines)
    assert any("chosen" in m for m in lines)


def test_a_single_2d_frame(sst) -> None:
    frame = sst.isel(time=0)
    with pytest.raises(ValueError, match=r"no time axis.*eof: EOFs of many frames.*'linear'"):
        frame.gapfill.fit("eof")
    out = frame.gapfill.fill(frame.gapfill.fit("linear"))
    assert out["sst"].dims == frame.dims
    observed = frame.notnull()
    assert (out["sst"].where(observed) == frame.where(observed)).sum() == observed.sum()
    assert out["sst"].notnull().all()  # one frame cannot tell land from gaps: all filled
    assert set(np.unique(out["sst_flag"])) == {0, 1}


def test_readme_lists_every_method() -> None:
    readme = (ROOT / "README.md").read_text()
    listed = set(re.findall(r"^\| `(\w+)` \|", readme, flags=re.M))
    assert set(methods._BUILTIN) <= listed  # the shipped methods (tests register others)


def test_recipe_method_names_any_case_and_packing_key(tmp_path, monkeypatch) -> None:
    import yaml

    from gapfill import recipe as rc

    monkeypatch.chdir(tmp_path)
    data = {"input": {"path": "sample:ostia", "variable": "surface_temperature"},
            "method": {"name": "EOF", "options": {"max_modes": 3}},
            "output": {"path": "out.nc", "packing": "input"}}
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(data))
    r = rc.load(tmp_path / "r.yaml")
    assert r.method.name == "eof" and r.output.packing == "input"
