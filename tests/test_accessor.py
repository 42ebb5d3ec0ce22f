"""The xarray accessors, the fit/fill pipeline, save/load and bad-input errors."""

from __future__ import annotations

import dask
import numpy as np
import pytest
import xarray as xr

import gapfill
from gapfill.dims import find_dims
from gapfill.testing import synthetic_sst


class CountingScheduler:
    """A dask scheduler that fails when more than ``max_computes`` computations run."""

    def __init__(self, max_computes: int = 0) -> None:
        self.max_computes = max_computes
        self.count = 0

    def __call__(self, dsk, keys, **kwargs):
        self.count += 1
        if self.count > self.max_computes:
            raise RuntimeError(f"too many computes: {self.count} > {self.max_computes}")
        return dask.get(dsk, keys, **kwargs)


# -- dims -------------------------------------------------------------------------------
def test_dims_from_names_and_cf_attrs():
    da = synthetic_sst()
    assert find_dims(da).core == ("time", "lat", "lon")
    renamed = da.rename(time="a", lat="b", lon="c")
    renamed["a"].attrs["axis"] = "T"
    renamed["b"].attrs["standard_name"] = "latitude"
    renamed["c"].attrs["units"] = "degrees_east"
    assert find_dims(renamed).core == ("a", "b", "c")
    assert find_dims(da.rename(lat="row", lon="col"), {"y": "row", "x": "col"}).core == (
        "time", "row", "col"
    )


def test_dims_order_is_preserved(sst):
    transposed = sst.transpose("lon", "time", "lat")
    model = transposed.gapfill.fit("climatology")
    out = transposed.gapfill.fill(model)
    assert out["sst"].dims == ("lon", "time", "lat")
    np.testing.assert_array_equal(
        out["sst"].transpose(*sst.dims).values, sst.gapfill.fill(model)["sst"].values
    )


# -- product -----------------------------------------------------------------------------
def test_fill_product_has_flags_error_attrs_and_coords(sst):
    model = sst.gapfill.fit("eof")
    out = sst.gapfill.fill(model)
    filled, flag = out["sst"], out["sst_flag"]
    assert filled.dims == sst.dims and filled.dtype == sst.dtype
    xr.testing.assert_identical(filled.coords.to_dataset(), sst.coords.to_dataset())
    assert filled.attrs["units"] == "K" and "sst_flag" in filled.attrs["ancillary_variables"]
    assert flag.attrs["flag_meanings"] == "observed filled never_observed"
    assert flag.attrs["standard_name"] == "status_flag"
    observed = np.isfinite(sst.values)
    never = ~observed.any(0)
    assert (flag.values[observed] == 0).all()
    assert (flag.values[:, never] == 2).all()
    assert ((flag.values == 1) == (~observed & ~never[None])).all()
    assert out["sst_error"].attrs["standard_name"] == "sea_surface_temperature standard_error"
    assert out.attrs["gapfill_method"] == "eof"
    assert out.attrs["gapfill_holdout_n"] > 0 and np.isfinite(out.attrs["gapfill_holdout_mae"])
    assert 0 < out.attrs["gapfill_holdout_mae_se"] < out.attrs["gapfill_holdout_mae"]


def test_fill_never_observed_on_request(sst):
    model = sst.gapfill.fit("climatology", holdout=0)
    never = ~np.isfinite(sst.values).any(0)
    assert np.isnan(sst.gapfill.fill(model)["sst"].values[:, never]).all()


def test_holdout_pixels_are_hidden_from_fit(sst):
    """The fitted climatology must not have seen held-out pixels; the score pools the
    method's repeated hold-out draws."""
    from gapfill.diagnostics import fit_masks, holdout_mask

    model = sst.gapfill.fit("climatology", holdout=0.3, seed=3)
    observed = np.isfinite(sst.values)[None]
    hide = holdout_mask(observed, model.holdout)
    assert hide.any() and not (hide & ~observed).any()
    draws = [hide] + [fit_masks(observed, model.holdout, draw=d)[0]
                      for d in range(1, model.method.holdout_draws)]
    assert len(draws) > 1 and not (draws[0] == draws[1]).all()
    diag = sst.gapfill.score(model)
    assert diag.summary["n"] == sum(d.sum() for d in draws) and diag.summary["unfilled"] == 0
    assert diag.summary["draws"] == len(draws)


def test_dataset_accessor_keeps_other_variables(sst):
    ds = sst.to_dataset()
    ds["mask"] = sst.isel(time=0).notnull()
    ds.attrs["title"] = "test"
    model = ds.gapfill.fit("linear")
    out = ds.gapfill.fill(model)
    assert {"sst", "sst_flag", "mask"} <= set(out.data_vars)
    assert out.attrs["title"] == "test" and out.attrs["gapfill_method"] == "linear"


def test_dataset_accessor_all_variables(sst):
    ds = xr.Dataset({"a": sst, "b": sst * 2})
    models = ds.gapfill.fit("climatology", holdout=0)
    assert set(models) == {"a", "b"}
    out = ds.gapfill.fill(models)
    assert {"a", "a_flag", "b", "b_flag"} <= set(out.data_vars)


# -- dask ----------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["eof", "linear", "climatology"])
def test_dask_fill_is_lazy_and_matches_numpy(sst, method):
    model = sst.gapfill.fit(method)
    eager = sst.gapfill.fill(model, diagnostics=False)
    chunked = sst.chunk({"time": 4, "lat": 6})
    with dask.config.set(scheduler=CountingScheduler(0)):
        lazy = chunked.gapfill.fill(model)
    for name in lazy.data_vars:
        assert lazy[name].chunks == chunked.chunks, name
    xr.testing.assert_allclose(lazy.compute(), eager, rtol=0, atol=1e-5)
    observed = np.isfinite(sst.values)
    np.testing.assert_array_equal(lazy["sst"].values[observed], sst.values[observed])


def test_fit_on_dask_input(sst):
    model = sst.chunk({"time": 4}).gapfill.fit("eof")
    np.testing.assert_allclose(model.normaliser.mean, sst.gapfill.fit("eof").normaliser.mean)


# -- save / load -------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["eof", "linear", "climatology"])
def test_save_load_gives_identical_fill(sst, tmp_path, method):
    model = sst.gapfill.fit(method)
    path = model.save(tmp_path / "model.pt")
    loaded = gapfill.load(path)
    assert loaded.name == method and loaded.options_dict() == model.options_dict()
    assert repr(loaded).startswith("<gapfill.FittedModel")
    a, b = sst.gapfill.fill(loaded), sst.gapfill.fill(model)
    for out in (a, b):  # stamped with the time of the fill
        del out.attrs["history"], out.attrs["date_created"]
    xr.testing.assert_identical(a, b)


def test_unreadable_model_file(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a model")
    with pytest.raises(ValueError, match="cannot read model file"):
        gapfill.load(bad)
    with pytest.raises(FileNotFoundError):
        gapfill.load(tmp_path / "missing.pt")


def test_model_file_of_another_kind(tmp_path):
    import torch

    path = tmp_path / "weights.pt"
    torch.save({"w": torch.zeros(2)}, path)
    with pytest.raises(ValueError, match="not a gapfill model"):
        gapfill.load(path)


# -- bad input ------------------------------------------------------------------------------
def test_no_time_dimension():
    da = xr.DataArray(np.zeros((3, 4, 5)), dims=("level", "lat", "lon"))
    with pytest.raises(ValueError, match="time axis"):
        da.gapfill.fit("linear")


def test_dimension_too_short(sst):
    with pytest.raises(ValueError, match="at least 2 frames"):
        sst.isel(time=slice(0, 1)).gapfill.fit("eof")
    with pytest.raises(ValueError, match="at least 2"):
        sst.isel(lat=slice(0, 1)).gapfill.fit("linear")


def test_all_nan(sst):
    with pytest.raises(ValueError, match="all NaN"):
        (sst * np.nan).gapfill.fit("linear")


def test_all_nan_dask_fails_before_fitting(sst):
    with pytest.raises(ValueError, match="all NaN"):
        (sst * np.nan).chunk({"time": 4}).gapfill.fit("eof")


def test_non_float_data(sst):
    ints = sst.fillna(0).astype("int32")
    with pytest.warns(UserWarning, match="converting to float64"):
        model = ints.gapfill.fit("climatology", holdout=0)
    assert ints.gapfill.fill(model)["sst"].dtype == np.float64
    with pytest.raises(ValueError, match="floating-point"):
        sst.notnull().gapfill.fit("linear")


def test_nan_in_coordinates(sst):
    lat = sst.lat.values.copy()
    lat[2] = np.nan
    with pytest.raises(ValueError, match="coordinate 'lat'"):
        sst.assign_coords(lat=lat).gapfill.fit("linear")


def test_inf_values(sst):
    bad = sst.copy()
    bad[0, 5, 5] = np.inf
    with pytest.raises(ValueError, match="infinite"):
        bad.gapfill.fit("linear")


def test_unknown_method_and_option(sst):
    with pytest.raises(ValueError, match="unknown method 'nope'"):
        sst.gapfill.fit("nope")
    with pytest.raises(ValueError, match="unknown option"):
        sst.gapfill.fit("eof", bogus=1)


def test_bad_holdout(sst):
    with pytest.raises(ValueError, match="holdout"):
        sst.gapfill.fit("linear", holdout=1.5)


def test_too_many_extra_dims():
    da = xr.DataArray(np.zeros((2, 3, 4, 5, 6)), dims=("time", "a", "b", "lat", "lon"))
    with pytest.raises(ValueError, match="more than one dim is left"):
        da.gapfill.fit("linear")


def test_input_is_not_modified(sst):
    before = sst.copy(deep=True)
    sst.gapfill.fill(sst.gapfill.fit("eof"))
    xr.testing.assert_identical(sst, before)


def test_method_option_named_like_an_accessor_argument(sst):
    """A method's own ``seed`` goes in ``options=``; the accessor's ``seed`` stays separate."""
    opts = {"seed": 7, "steps": 1, "width": 4, "n_down": 1, "n_res_blocks": 1,
            "d_width": 4, "d_layers": 1, "window": [4, 8, 8], "batch_size": 1,
            "guide": "none", "eval_every": 1, "progress": "off", "threads": 1}
    model = sst.gapfill.fit("gan", holdout=0.2, seed=3, options=opts)
    assert model.method.options.seed == 7
    assert model.holdout.seed == 3
    with pytest.raises(TypeError, match="given twice"):
        sst.gapfill.fit("gan", options={"steps": 1}, steps=2)
