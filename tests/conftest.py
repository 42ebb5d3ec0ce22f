"""Shared fixtures: small synthetic SST-like cubes (gapfill.testing) and the real OSTIA cube."""

from __future__ import annotations

import os

import pytest
import xarray as xr

import gapfill  # noqa: F401  (registers the accessor)
from gapfill.testing import synthetic_sst

# The CI machine has 2 cores shared with other work: one torch thread per process is
# many times faster there than two competing ones (and the results do not depend on it).
try:
    import torch

    torch.set_num_threads(1)
except ImportError:  # pragma: no cover
    pass


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

    return os.path.join(
        os.path.dirname(iris_sample_data.__file__), "sample_data", "ostia_monthly.nc"
    )


@pytest.fixture
def ostia(ostia_path) -> xr.DataArray:
    """The real OSTIA cube (54 x 18 x 432, K, land NaN), loaded."""
    with xr.open_dataset(ostia_path) as ds:
        return ds["surface_temperature"].load()
