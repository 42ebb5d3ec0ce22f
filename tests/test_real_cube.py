"""All the conventions of real files at once, on eofs' sst_ndjfm_anom.nc.

The cube has a missing time step, an out-of-order time axis, 0–360 longitudes
across the dateline (117.5–262.5), descending latitude and raw int16 packing
(opened with ``mask_and_scale=False``). Every classical method fits and fills it
as it fills the same data in the plain layout, and its figure shows the basin in
one piece.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

import gapfill  # noqa: F401
from gapfill import figures, timeaxis

SST = Path(__import__("eofs").__file__).parent / "examples" / "example_data" / "sst_ndjfm_anom.nc"
FILL = -32768


def cubes(tmp_path: Path) -> tuple[xr.DataArray, xr.DataArray, xr.DataArray]:
    """``(truth, plain, awkward)``: the plain gappy cube and the same values stored awkwardly."""
    with xr.open_dataset(SST) as ds:
        truth = ds["sst"].load()
    truth = truth.drop_isel(time=20)  # a missing step: 1982 to 1984
    gaps = np.random.default_rng(3).random(truth.shape) < 0.3
    plain = truth.where(~gaps)
    order = np.random.default_rng(4).permutation(truth.sizes["time"])
    awkward = plain.isel(time=order).isel(latitude=slice(None, None, -1))
    path = tmp_path / "awkward.nc"
    enc = {"dtype": "int16", "scale_factor": 0.0005, "add_offset": 0.0, "_FillValue": FILL}
    awkward.to_dataset().to_netcdf(path, encoding={"sst": enc})
    with xr.open_dataset(path, mask_and_scale=False) as ds:
        raw = ds["sst"].load()
    # what the plain layout holds after the same int16 rounding
    plain = (np.round(plain / 0.0005) * 0.0005).astype(np.float32)
    return truth, plain, raw


@pytest.mark.parametrize("method", ["linear", "climatology", "eof"])
def test_awkward_real_cube_fills_like_the_plain_one(tmp_path: Path, method: str) -> None:
    truth, plain, raw = cubes(tmp_path)
    assert raw.dtype == np.int16 and (raw == FILL).any()
    assert raw["latitude"][0] > raw["latitude"][-1]
    assert not (np.diff(raw["time"].values.astype("int64")) > 0).all()
    options = {"max_modes": 8} if method == "eof" else {}
    ref = plain.gapfill.fill(plain.gapfill.fit(method, holdout=0, **options))
    with pytest.warns(timeaxis.TimeOrderWarning):
        model = raw.gapfill.fit(method, holdout=0, **options)
    with pytest.warns(timeaxis.TimeOrderWarning):
        out = raw.gapfill.fill(model)
    assert (out["time"] == raw["time"]).all()  # the input's order and layout
    assert (out["latitude"] == raw["latitude"]).all()
    back = out.sortby("time").sortby("latitude")
    flag = back["sst_flag"]
    assert (flag == ref["sst_flag"]).all()
    assert back["sst"].where(flag != 2).notnull().sum() == (flag != 2).sum()  # every gap filled
    assert back["sst"].where(flag == 2).isnull().all()  # land stays NaN
    observed = flag == 0
    np.testing.assert_allclose(back["sst"].where(observed), ref["sst"].where(observed),
                               atol=1e-6)
    gaps = (flag == 1).values
    err_awkward = np.abs(back["sst"].values - truth.values)[gaps]
    err_plain = np.abs(ref["sst"].values - truth.values)[gaps]
    if method == "linear":
        np.testing.assert_allclose(back["sst"].values, ref["sst"].values, atol=1e-4)
    else:  # the validation pixels hidden from the fit (and eof's CV tiles) follow the layout
        assert abs(err_awkward.mean() - err_plain.mean()) < 0.05 * err_plain.mean()


def test_awkward_real_cube_figure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _, _, raw = cubes(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", timeaxis.TimeOrderWarning)
        model = raw.gapfill.fit("eof", max_modes=8)
        out = raw.gapfill.fill(model)
        errors = raw.gapfill.score(model).errors
    shown = {}
    save = figures._save

    def keep(fig, path, dpi):
        shown["fig"] = fig
        return save(fig, path, dpi)

    monkeypatch.setattr(figures, "_save", keep)
    path = figures.diagnostics_figure(out, "sst", errors, tmp_path / "awkward.png")
    assert path.stat().st_size > 20_000
    maps = [ax for ax in shown["fig"].axes if getattr(ax, "_gapfill_geo", False)]
    for ax in maps:
        lo, hi = ax.get_xlim()
        assert (lo, hi) == pytest.approx((-75.0, 75.0))  # 115–265°E in one piece, centred
        assert ax.get_ylim() == pytest.approx((-25.0, 65.0))
