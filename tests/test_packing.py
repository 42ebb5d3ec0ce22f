"""Packed int16 input opened without decoding: fill values are missing data, never observations."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import xarray as xr

import gapfill  # noqa: F401
from gapfill import packing

SST = Path(__import__("eofs").__file__).parent / "examples" / "example_data" / "sst_ndjfm_anom.nc"
FILL = np.int16(-32768)


def packed_file(tmp_path: Path) -> Path:
    """eofs' NDJFM SST anomalies (land NaN) with gaps, stored as scaled int16."""
    with xr.open_dataset(SST) as ds:
        sst = ds["sst"].load()
    gappy = sst.where(np.random.default_rng(0).random(sst.shape) > 0.3)
    path = tmp_path / "packed.nc"
    encoding = {"dtype": "int16", "scale_factor": 0.001, "add_offset": 0.5, "_FillValue": FILL}
    gappy.to_dataset().to_netcdf(path, encoding={"sst": encoding})
    return path


@pytest.mark.parametrize("method", ["linear", "eof"])
def test_undecoded_int16_fills_like_the_decoded_file(tmp_path: Path, method: str) -> None:
    path = packed_file(tmp_path)
    with xr.open_dataset(path) as ds:
        decoded = ds["sst"].load()
    with xr.open_dataset(path, mask_and_scale=False) as ds:
        raw = ds["sst"].load()
    assert raw.dtype == np.int16 and (raw == FILL).any()
    options = {"max_modes": 4} if method == "eof" else {}
    ref = decoded.gapfill.fill(decoded.gapfill.fit(method, holdout=0, **options))
    out = raw.gapfill.fill(raw.gapfill.fit(method, holdout=0, **options))
    assert np.nanmin(out["sst"].values) > -10  # no -32768 (or -32.3) taken as an observation
    np.testing.assert_allclose(out["sst"].values, ref["sst"].values, atol=1e-4)
    assert (out["sst_flag"] == ref["sst_flag"]).all()
    assert not set(packing.PACKING_ATTRS) & set(out["sst"].attrs)


def test_product_written_back_in_the_input_packing(tmp_path: Path) -> None:
    path = packed_file(tmp_path)
    with xr.open_dataset(path, mask_and_scale=False) as ds:
        raw = ds["sst"].load()
    out = raw.gapfill.fill(raw.gapfill.fit("linear", holdout=0), keep_packing=True)
    out.to_netcdf(tmp_path / "out.nc")
    with xr.open_dataset(tmp_path / "out.nc", mask_and_scale=False) as back:
        stored = back["sst"]
        assert stored.dtype == np.int16
        assert stored.attrs["scale_factor"] == pytest.approx(0.001)
        assert stored.attrs["add_offset"] == pytest.approx(0.5)
        assert stored.attrs["_FillValue"] == FILL
    with xr.open_dataset(tmp_path / "out.nc") as back:
        np.testing.assert_allclose(back["sst"].values, out["sst"].values, atol=0.0006)
        assert np.isnan(back["sst"].values).sum() == np.isnan(out["sst"].values).sum()


def test_valid_range_and_missing_value_are_applied() -> None:
    raw = xr.DataArray(
        np.array([[[10, -1, 30], [999, 20, 5000]]] * 3, dtype=np.int16),
        dims=("time", "lat", "lon"),
        attrs={"missing_value": np.int16(999), "valid_range": np.array([0, 4000], "int16"),
               "scale_factor": np.float32(0.5)},
    )
    out = packing.unpack(raw)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out.values[0], [[5.0, np.nan, 15.0], [np.nan, 10.0, np.nan]])


def test_written_product_keeps_the_packing_it_was_asked_for(tmp_path: Path) -> None:
    """``gapfill.io.write`` (what ``gapfill run`` uses, ``output.packing: input``) keeps it."""
    from gapfill import io

    path = packed_file(tmp_path)
    with xr.open_dataset(path) as ds:  # decoded: the packing is in the encoding
        decoded = ds["sst"].load()
    model = decoded.gapfill.fit("linear", holdout=0)
    for keep, dtype in ((True, np.int16), (False, decoded.dtype)):
        out = io.write(decoded.gapfill.fill(model, keep_packing=keep), tmp_path / f"{keep}.nc")
        with xr.open_dataset(out, mask_and_scale=False) as back:
            assert back["sst"].dtype == dtype
            assert ("scale_factor" in back["sst"].attrs) == keep
