"""Shared fixtures: small synthetic SST-like cubes and the real OSTIA cube."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest
import xarray as xr

import gapfill  # noqa: F401  (registers the accessor)


def synthetic_sst(
    t: int = 16, h: int = 12, w: int = 20, missing: float = 0.3, seed: int = 0, land: bool = True
) -> xr.DataArray:
    """A smooth SST-like field (a few travelling modes + noise) with random gaps and land."""
    rng = np.random.default_rng(seed)
    tt, yy, xx = np.meshgrid(np.arange(t), np.linspace(-1, 1, h), np.linspace(0, 2 * np.pi, w), indexing="ij")
    field = (
        300.0
        + 2.0 * np.cos(yy * 1.5)
        + 0.8 * np.sin(xx - 0.4 * tt)
        + 0.5 * np.cos(2 * np.pi * tt / 12) * np.cos(yy)
        + 0.05 * rng.standard_normal((t, h, w))
    ).astype(np.float32)
    gaps = rng.random((t, h, w)) < missing
    field[gaps] = np.nan
    if land:
        field[:, : max(1, h // 6), : max(1, w // 5)] = np.nan
    time = pd.date_range("2020-01-01", periods=t, freq="MS")
    return xr.DataArray(
        field,
        dims=("time", "lat", "lon"),
        coords={"time": time, "lat": np.linspace(-10, 10, h), "lon": np.linspace(100, 140, w)},
        name="sst",
        attrs={"units": "K", "standard_name": "sea_surface_temperature", "long_name": "SST"},
    )


@pytest.fixture
def sst() -> xr.DataArray:
    """Small in-memory synthetic SST cube."""
    return synthetic_sst()


@pytest.fixture(params=["numpy", "dask"])
def sst_any(request) -> xr.DataArray:
    """The synthetic cube in memory and dask-backed (chunked along time)."""
    da = synthetic_sst()
    return da if request.param == "numpy" else da.chunk({"time": 4})


@pytest.fixture(scope="session")
def ostia_path() -> str:
    """Path of the real OSTIA monthly SST file shipped by iris-sample-data."""
    import iris_sample_data

    return os.path.join(os.path.dirname(iris_sample_data.__file__), "sample_data", "ostia_monthly.nc")


@pytest.fixture
def ostia(ostia_path) -> xr.DataArray:
    """The real OSTIA cube (54 x 18 x 432, K, land NaN), loaded."""
    with xr.open_dataset(ostia_path) as ds:
        return ds["surface_temperature"].load()
