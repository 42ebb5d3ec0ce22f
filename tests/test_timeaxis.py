"""The time coordinate: duplicates refused, out-of-order sorted, fills in time-coordinate units.

Real coordinates: the iris sample A1B_north_america.nc (240 yearly June steps of a
360-day calendar, 37 x 49, longitudes 225-315) and eofs' sst_ndjfm_anom.nc.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr

import gapfill  # noqa: F401
from gapfill import timeaxis
from gapfill.methods.eof import time_filter

A1B = Path(__import__("iris_sample_data").__file__).parent / "sample_data" / "A1B_north_america.nc"
SST = Path(__import__("eofs").__file__).parent / "examples" / "example_data" / "sst_ndjfm_anom.nc"


def a1b() -> xr.DataArray:
    with xr.open_dataset(A1B) as ds:
        return ds["air_temperature"].load()


def test_days_in_every_calendar() -> None:
    da = a1b()
    assert da["time"].dt.calendar == "360_day"
    days = timeaxis.days(da["time"].values)
    assert days[:3].tolist() == [0.0, 360.0, 720.0]  # one 360-day year per step
    with xr.open_dataset(A1B, decode_times=False) as raw:  # numbers in "hours since ..."
        np.testing.assert_allclose(timeaxis.days(raw["time"].values, raw["time"].attrs["units"]),
                                   days)
    with xr.open_dataset(SST) as ds:
        d = timeaxis.days(ds["time"].values)
    assert d[1] == 365.5 and not timeaxis.is_regular(d)  # mid-January, leap years
    toy = timeaxis.time_of_year(da["time"].values)
    np.testing.assert_allclose(toy, 150 / 360)  # 1 June in a 360-day year
    assert timeaxis.time_of_year(np.arange(3.0)) is None


def test_duplicate_times_are_refused_with_the_fix() -> None:
    da = a1b().isel(time=[0, 1, 1, 2])
    with pytest.raises(ValueError, match="duplicate time.*drop_duplicates"):
        da.gapfill.fit("linear", holdout=0)


def linear_in_time(da: xr.DataArray) -> xr.DataArray:
    """A field exactly linear in the time coordinate's days, on ``da``'s grid."""
    days = timeaxis.days(da["time"].values)
    base = da.isel(time=0).values.astype(np.float64)
    return da.copy(data=(base[None] + 0.01 * days[:, None, None]).astype(np.float32))


def test_linear_interpolates_in_the_time_coordinate() -> None:
    """Steps removed from the time axis: the fill follows the dates, not the positions."""
    full = linear_in_time(a1b().isel(time=slice(0, 12)))
    kept = full.isel(time=[0, 1, 2, 6, 7, 8, 9, 10, 11])  # three steps dropped from the axis
    gappy = kept.copy()
    gappy[3] = np.nan  # a frame 4 steps after its predecessor, 1 before its successor
    gappy[5, 10:20, 5:30] = np.nan
    out = gappy.gapfill.fill(gappy.gapfill.fit("linear", holdout=0))
    filled = out["air_temperature"].values
    np.testing.assert_allclose(filled, kept.values, rtol=0, atol=1e-3)


def test_linear_chunked_fill_uses_the_time_coordinate() -> None:
    full = linear_in_time(a1b().isel(time=slice(0, 16), latitude=slice(0, 12)))
    kept = full.isel(time=[0, 1, 2, 6, 7, 8, 9, 10, 13, 14, 15])
    gappy = kept.copy()
    gappy[2:5, 3:9, 4:20] = np.nan
    model = gappy.gapfill.fit("linear", holdout=0)
    lazy = gappy.chunk({"time": 3}).gapfill.fill(model)["air_temperature"].values
    np.testing.assert_allclose(lazy, kept.values, rtol=0, atol=1e-3)


def shuffled(da: xr.DataArray, seed: int = 1) -> xr.DataArray:
    return da.isel(time=np.random.default_rng(seed).permutation(da.sizes["time"]))


@pytest.mark.parametrize("method", ["linear", "eof", "climatology"])
def test_out_of_order_time_fills_like_the_sorted_cube(method: str) -> None:
    with xr.open_dataset(SST) as ds:
        sst = ds["sst"].load()
    rng = np.random.default_rng(0)
    gappy = sst.where(rng.random(sst.shape) > 0.3)
    mixed = shuffled(gappy)
    options = {"max_modes": 5} if method == "eof" else {}
    ref = gappy.gapfill.fill(gappy.gapfill.fit(method, holdout=0, **options))
    with pytest.warns(timeaxis.TimeOrderWarning, match="not in increasing order"):
        model = mixed.gapfill.fit(method, holdout=0, **options)
    with pytest.warns(timeaxis.TimeOrderWarning):
        out = mixed.gapfill.fill(model)
    assert (out["time"].values == mixed["time"].values).all()  # the input's order
    xr.testing.assert_allclose(out.sortby("time")["sst"], ref["sst"], atol=1e-5)
    assert (out["sst_flag"].sortby("time") == ref["sst_flag"]).all()


def test_eof_time_filter_weighs_irregular_steps() -> None:
    regular = time_filter(5, 0.1, 1)
    np.testing.assert_allclose(time_filter(5, 0.1, 1, np.arange(5.0) * 30), regular)
    gap = time_filter(5, 0.1, 1, np.array([0.0, 1.0, 2.0, 5.0, 6.0]))
    # across the wide step (2 -> 5) the neighbours are coupled less than across a unit step
    assert gap[2, 3] < regular[2, 3] and gap[3, 2] < regular[3, 2]
    np.testing.assert_allclose(gap.sum(1), 1.0)  # zero-flux: constants pass unchanged


def test_cube_time_positions_reach_methods() -> None:
    da = a1b().isel(time=[0, 1, 5, 6])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        coords = gapfill.cube.Cube(da).coords()
    assert coords.time.tolist() == [0.0, 360.0, 1800.0, 2160.0]
    assert coords.isel(slice(1, 3), slice(None), slice(None)).time.tolist() == [360.0, 1800.0]
    t = pd.date_range("2000-01-01", periods=3, freq="D")
    plain = xr.DataArray(np.ones((3, 2, 2)), dims=("time", "y", "x"), coords={"time": t})
    assert gapfill.cube.Cube(plain).coords().time.tolist() == [0.0, 1.0, 2.0]
