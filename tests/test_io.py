"""gapfill.io: opening NetCDF/Zarr inputs and writing CF products atomically."""

from __future__ import annotations

import os
import shutil

import netCDF4
import numpy as np
import pytest
import xarray as xr

import gapfill
from gapfill import io as gio
from gapfill.testing import synthetic_sst

VAR = "surface_temperature"


@pytest.fixture
def product() -> xr.Dataset:
    """A small filled product (value, flag, error, attrs) from the synthetic cube."""
    da = synthetic_sst(t=8, h=6, w=10)
    model = da.gapfill.fit("eof", holdout=0.1)
    out = da.gapfill.fill(model)
    out.attrs["history"] = "2001-02-03T04:05:06Z make_input.py"
    return out


def _files(directory) -> list[str]:
    return sorted(os.listdir(directory))


# -- open -------------------------------------------------------------------------------------
def test_open_single_netcdf(ostia_path):
    ds = gio.open(ostia_path, variable=VAR)
    assert ds[VAR].shape == (54, 18, 432)
    assert ds[VAR].chunks is None  # lazily loaded, no dask unless asked
    assert gio.open(ostia_path, chunks={})[VAR].chunks[0][:2] == (1, 1)  # the file's chunks


def test_open_many_netcdf_glob_and_list(ostia_path, tmp_path):
    with xr.open_dataset(ostia_path) as src:
        parts = [src.isel(time=slice(i, i + 4)) for i in (8, 0, 4)]  # written out of order
        for i, part in enumerate(parts):
            part.to_netcdf(tmp_path / f"part_{i}.nc")
        expected = src[VAR].isel(time=slice(0, 12)).load()
    for arg in (str(tmp_path / "part_*.nc"), [tmp_path / f"part_{i}.nc" for i in range(3)]):
        ds = gio.open(arg, variable=VAR)
        assert ds[VAR].chunks is not None
        np.testing.assert_array_equal(ds[VAR].values, expected.values)
        assert (ds.time.values == expected.time.values).all()
        assert ds["latitude_longitude"].ndim == 0  # non-concatenated vars stay as they are


def test_open_zarr_keeps_disk_chunks(ostia_path, tmp_path):
    store = tmp_path / "sst.zarr"
    with xr.open_dataset(ostia_path) as src:
        ds = src[[VAR]].isel(time=slice(0, 10)).load()
    ds[VAR].encoding = {}
    ds.to_zarr(store, encoding={VAR: {"chunks": (4, 9, 216)}}, consolidated=False)
    back = gio.open(store, variable=VAR)
    assert back[VAR].chunks == ((4, 4, 2), (9, 9), (216, 216))
    # a directory with Zarr metadata but no .zarr suffix is recognised too
    plain = tmp_path / "store"
    shutil.copytree(store, plain)
    assert gio.open(plain)[VAR].chunks == back[VAR].chunks


def test_open_errors(tmp_path, ostia_path):
    with pytest.raises(FileNotFoundError, match="file not found"):
        gio.open(tmp_path / "missing.nc")
    with pytest.raises(FileNotFoundError, match="no files match"):
        gio.open(str(tmp_path / "none_*.nc"))
    with pytest.raises(FileNotFoundError, match="empty"):
        gio.open([])
    text = tmp_path / "notes.nc"
    text.write_text("this is not netcdf\n")
    with pytest.raises(ValueError, match="cannot read .*notes.nc.* as NetCDF or Zarr"):
        gio.open(text)
    with pytest.raises(ValueError, match=r"variable 'sst' not found.*surface_temperature"):
        gio.open(ostia_path, variable="sst")


# -- write: encoding and attributes ------------------------------------------------------------
def test_write_netcdf_cf_encoding(product, tmp_path):
    path = gio.write(product, tmp_path / "out.nc", history_command="gapfill run r.yaml")
    with netCDF4.Dataset(path) as nc:
        for name in ("sst", "sst_error"):
            var = nc[name]
            assert var.filters()["zlib"] and var.filters()["complevel"] == 4
            assert var.filters()["shuffle"]
            assert np.isnan(var.getncattr("_FillValue"))
        flag = nc["sst_flag"]
        assert flag.dtype == np.uint8 and "_FillValue" not in flag.ncattrs()
        assert flag.filters()["zlib"]
        for coord in ("time", "lat", "lon"):
            assert "_FillValue" not in nc[coord].ncattrs()
        assert nc.getncattr("Conventions").startswith("CF-1.10")
        for key in ("title", "source", "history", "date_created"):
            assert nc.getncattr(key)
    back = xr.open_dataset(path)
    assert back["sst_flag"].dtype == np.uint8  # no fill value, so no float promotion
    assert back["sst_flag"].attrs["flag_meanings"] == "observed filled never_observed"
    assert back["sst"].attrs["ancillary_variables"].split() == ["sst_flag", "sst_error"]
    assert back.attrs["title"] == "Gap-filled SST (eof method)"
    assert "gapfill" in back.attrs["source"]
    np.testing.assert_array_equal(back["sst"].values, product["sst"].values)
    assert back.time.encoding["units"].startswith("days since")


def test_write_keeps_time_units_and_drops_input_encoding(ostia_path, tmp_path):
    ds = gio.open(ostia_path).isel(time=slice(0, 3))
    before = {k: dict(v.encoding) for k, v in ds.variables.items()}
    attrs_before = dict(ds.attrs)
    path = gio.write(ds, tmp_path / "copy.nc")
    with netCDF4.Dataset(path) as nc:
        assert nc["time"].units == "hours since 1970-01-01"  # CF time units kept
        assert np.isnan(nc[VAR].getncattr("_FillValue"))  # not the input's 1e20
        assert "_FillValue" not in nc["time_bnds"].ncattrs()  # bounds: no fill
    # the input dataset object is not modified
    assert {k: dict(v.encoding) for k, v in ds.variables.items()} == before
    assert ds.attrs == attrs_before


def test_history_appended_newest_first(product, tmp_path):
    first = gio.write(product, tmp_path / "a.nc", history_command="step two")
    second = gio.write(xr.open_dataset(first), tmp_path / "b.nc", history_command="step three")
    lines = xr.open_dataset(second).attrs["history"].splitlines()
    assert [line.split(" ", 1)[1] for line in lines] == [
        "step three", "step two", "make_input.py"
    ]
    assert lines[0][:2] == "20" and lines[0][19] == "Z"  # ISO timestamp first


def test_write_zarr_roundtrip(product, tmp_path):
    lazy = product.chunk({"time": 3})
    path = gio.write(lazy, tmp_path / "out.zarr", history_command="cmd")
    back = gio.open(path)
    assert back["sst"].chunks[0] == (3, 3, 2)
    assert back["sst_flag"].dtype == np.uint8
    assert back.attrs["Conventions"].startswith("CF-1.10")
    assert back.attrs["history"].splitlines()[0].endswith(" cmd")
    np.testing.assert_array_equal(back["sst"].values, product["sst"].values)
    assert _files(tmp_path) == ["out.zarr"]


def test_write_uneven_chunks_to_zarr(product, tmp_path):
    uneven = product.chunk({"time": (2, 3, 3)})
    gio.write(uneven, tmp_path / "u.zarr")
    back = gio.open(tmp_path / "u.zarr")
    np.testing.assert_array_equal(back["sst"].values, product["sst"].values)


def test_format_from_path():
    assert gio.format_from_path("a.nc") == "netcdf"
    assert gio.format_from_path("a.NC4") == "netcdf"
    assert gio.format_from_path("a.zarr/") == "zarr"
    assert gio.format_from_path("a.dat", "zarr") == "zarr"
    with pytest.raises(ValueError, match="extension"):
        gio.format_from_path("a.txt")
    with pytest.raises(ValueError, match="unknown output format"):
        gio.format_from_path("a.nc", "grib")


# -- write: safety -------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["out.nc", "out.zarr"])
def test_existing_output_refused_unless_overwrite(product, tmp_path, name):
    path = gio.write(product, tmp_path / name, history_command="one")
    with pytest.raises(FileExistsError, match="already exists; pass overwrite=True"):
        gio.write(product, path)
    gio.write(product, path, overwrite=True, history_command="two")
    back = xr.open_zarr(path) if name.endswith(".zarr") else xr.open_dataset(path)
    assert back.attrs["history"].splitlines()[0].endswith(" two")
    assert _files(tmp_path) == [name]  # no temporary or backup left


@pytest.mark.parametrize("name,method", [("out.nc", "to_netcdf"), ("out.zarr", "to_zarr")])
def test_failed_write_leaves_nothing(product, tmp_path, monkeypatch, name, method):
    original = getattr(xr.Dataset, method)

    def half_then_fail(self, target, *args, **kwargs):
        original(self.isel(time=slice(0, 2)), target, *args, **kwargs)  # a partial product
        raise RuntimeError("disk full")

    monkeypatch.setattr(xr.Dataset, method, half_then_fail)
    with pytest.raises(RuntimeError, match="disk full"):
        gio.write(product, tmp_path / name)
    assert _files(tmp_path) == []


def test_failed_overwrite_keeps_old_file(product, tmp_path, monkeypatch):
    path = gio.write(product, tmp_path / "out.nc")
    before = path.read_bytes()

    def fail(self, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(xr.Dataset, "to_netcdf", fail)
    with pytest.raises(KeyboardInterrupt):
        gio.write(product, path, overwrite=True)
    assert path.read_bytes() == before
    assert _files(tmp_path) == ["out.nc"]


def test_overwrite_never_deletes_a_plain_directory(product, tmp_path):
    keep = tmp_path / "results.zarr"
    keep.mkdir()
    (keep / "thesis.tex").write_text("precious")
    with pytest.raises(ValueError, match="not a Zarr store"):
        gio.write(product, keep, overwrite=True)
    assert (keep / "thesis.tex").read_text() == "precious"


def test_input_never_overwritten(ostia_path, tmp_path):
    src = tmp_path / "in.nc"
    shutil.copy(ostia_path, src)
    stat, data = src.stat(), src.read_bytes()
    ds = gapfill.open(src)
    with pytest.raises(ValueError, match="is the input file"):
        gio.write(ds, src, overwrite=True)
    gio.write(ds, tmp_path / "elsewhere.nc")
    ds.close()
    assert src.read_bytes() == data and src.stat().st_mtime_ns == stat.st_mtime_ns
