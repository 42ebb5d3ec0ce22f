"""Shared fixtures: small synthetic SST-like cubes and the real OSTIA cube."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest
import xarray as xr

import gapfill  # noqa: F401  (registers the accessor)

# The CI machine has 2 cores shared with other work: one torch thread per process is
# many times faster there than two competing ones (and the results do not depend on it).
try:
    import torch

    torch.set_num_threads(1)
except ImportError:  # pragma: no cover
    pass


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


def smooth_cube(t: int = 12, h: int = 16, w: int = 20, missing: float = 0.3, seed: int = 0):
    """A smooth travelling-wave SST-like field with random gaps and a land corner.

    Returns ``(truth, gappy)``: the ``(T, H, W)`` field and a monthly
    ``(time, lat, lon)`` DataArray with gaps.
    """
    rng = np.random.default_rng(seed)
    tt, yy, xx = np.meshgrid(
        np.arange(t), np.linspace(-1, 1, h), np.linspace(0, 2 * np.pi, w), indexing="ij"
    )
    truth = (300 + 2 * np.cos(1.5 * yy) + np.sin(xx - 0.5 * tt) + 0.5 * np.cos(yy + 0.3 * tt))
    truth = truth.astype(np.float32)
    truth[:, :3, :4] = np.nan
    gappy = np.where(rng.random(truth.shape) < missing, np.nan, truth)
    coords = {
        "time": pd.date_range("2001-01-01", periods=t, freq="MS"),
        "lat": np.linspace(-5, 5, h),
        "lon": np.linspace(100, 120, w),
    }
    return truth, xr.DataArray(gappy, dims=("time", "lat", "lon"), coords=coords, name="sst")


def travelling_wave(t: int = 12, h: int = 16, w: int = 16, missing: float = 0.4, seed: int = 0):
    """A smooth travelling wave with random gaps: ``(truth, gappy)``, dims ``(time, y, x)``."""
    rng = np.random.default_rng(seed)
    tt, yy, xx = np.meshgrid(np.arange(t), np.arange(h), np.arange(w), indexing="ij")
    truth = (np.sin(2 * np.pi * (xx - tt) / 8) * np.cos(2 * np.pi * yy / 16)
             + 0.5 * np.sin(2 * np.pi * (yy + 0.5 * tt) / 10)).astype(np.float32)
    gappy = np.where(rng.random(truth.shape) < missing, np.nan, truth)
    return truth, xr.DataArray(gappy, dims=("time", "y", "x"), name="v")


def gap_mae(method, cube, truth: np.ndarray) -> float:
    """MAE of a fitted method's fill of ``cube`` on its gaps where ``truth`` is known.

    In normalised units (``truth`` is the ``(T, H, W)`` field in data units).
    """
    x = cube.values()
    target = cube.normaliser.normalise(truth[None])
    gaps = np.isfinite(target) & ~np.isfinite(x)
    fill = method.fill(x, np.random.default_rng(0), coords=cube.coords()).values
    return float(np.abs(fill[gaps] - target[gaps]).mean())


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
