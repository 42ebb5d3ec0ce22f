"""The product of ``da.gapfill.fill`` is the CF product ``gapfill run`` writes, and passes the
CF checker (``cfchecker``, offline, with the local tables in ``tests/data/cf``).

Real data: the iris sample A1B_north_america.nc (air temperature, 360-day calendar, a
``latitude_longitude`` grid-mapping variable, ``Conventions = "CF-1.5"``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import xarray as xr

import gapfill  # noqa: F401
from gapfill import cf, io

A1B = Path(__import__("iris_sample_data").__file__).parent / "sample_data" / "A1B_north_america.nc"
TABLES = Path(__file__).parent / "data" / "cf"


def gappy_a1b() -> xr.Dataset:
    with xr.open_dataset(A1B) as ds:
        ds = ds.isel(time=slice(0, 24)).load()
    da = ds["air_temperature"]
    ds["air_temperature"] = da.where(np.random.default_rng(0).random(da.shape) > 0.3)
    return ds


def cf_errors(path: Path) -> list[str]:
    """ERROR and FATAL messages of the CF checker on ``path``, offline."""
    try:
        from cfchecker import cfchecks
    except (ImportError, OSError) as err:  # cfunits raises FileNotFoundError without UDUNITS-2
        pytest.skip(f"cfchecker unavailable ({err}); pip install cfchecker and UDUNITS-2")
    # cfchecker 4.1 knows CF up to 1.8; the product says CF-1.10 (1.9 and 1.10 only add
    # features the product does not use): check it against the 1.8 rules.
    if "CF-1.10" not in map(str, cfchecks.cfVersions):
        cfchecks.cfVersions.append(cfchecks.CFVersion((1, 10)))
    checker = cfchecks.CFChecker(
        cfStandardNamesXML=str(TABLES / "cf-standard-name-table.xml"),
        cfAreaTypesXML=str(TABLES / "area-type-table.xml"),
        cfRegionNamesXML=str(TABLES / "standardized-region-list.xml"),
        version=cfchecks.vn1_8, silent=True,
    )
    checker.checker(str(path))
    found = []
    for var in checker.all_results[str(path)].values():
        for cat in ("FATAL", "ERROR"):
            found += var.get(cat, [])
    return found


@pytest.mark.parametrize("method", ["linear", "eof"])
def test_dataarray_product_passes_the_cf_checker(tmp_path: Path, method: str) -> None:
    da = gappy_a1b()["air_temperature"]
    out = da.gapfill.fill(da.gapfill.fit(method, max_modes=4) if method == "eof"
                          else da.gapfill.fit(method))
    assert "grid_mapping" not in out["air_temperature"].attrs  # its variable stayed behind
    out.to_netcdf(tmp_path / "api.nc")
    assert cf_errors(tmp_path / "api.nc") == []


def test_dataset_product_replaces_conventions_and_passes(tmp_path: Path) -> None:
    ds = gappy_a1b()
    assert ds.attrs["Conventions"] == "CF-1.5"
    out = ds.gapfill.fill(ds.gapfill.fit("linear"))
    assert out.attrs["Conventions"] == cf.CONVENTIONS
    assert out["air_temperature"].attrs["grid_mapping"] == "latitude_longitude"
    out.to_netcdf(tmp_path / "ds.nc")
    assert cf_errors(tmp_path / "ds.nc") == []


def test_api_and_cli_products_have_the_same_global_attrs(tmp_path: Path) -> None:
    da = gappy_a1b()["air_temperature"]
    api = da.gapfill.fill(da.gapfill.fit("linear"))
    for key in ("Conventions", "title", "source", "history", "date_created"):
        assert key in api.attrs
    assert api.attrs["history"].endswith(cf.API_HISTORY)
    written = tmp_path / "cli.nc"
    io.write(api, written, history_command="gapfill run recipe.yaml")
    with xr.open_dataset(written) as back:
        assert list(back.attrs) == list(api.attrs)  # same attrs, same order
        assert back.attrs["history"].endswith("gapfill run recipe.yaml")  # one line, not two
    assert cf_errors(written) == []
