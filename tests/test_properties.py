"""Properties every registered method must keep, over random shapes and gap patterns.

- observed values are unchanged, bit for bit;
- never-observed pixels (land) stay NaN;
- no NaN is left in the filled pixels;
- every method writes a one-sigma error: positive and finite in the gaps, 0 where
  observed, NaN where never observed;
- the input is not modified.

The checks are :func:`gapfill.testing.check_fill` / :func:`~gapfill.testing.check_method`,
which anyone can run on a method of their own.
"""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import gapfill
from gapfill.methods import FillResult
from gapfill.testing import check_fill, check_method

#: Options that keep each method fast enough for property tests on CPU.
FAST_OPTIONS: dict[str, dict] = {
    "eof": {"max_modes": 4},
    "regem": {"max_iter": 3},
    "gan": {"steps": 2, "batch_size": 1, "window": (4, 8, 8), "width": 4},
    "combcn": {"steps": 2, "batch_size": 1, "window": (4, 8, 8), "width3d": 4, "width2d": 4,
               "progress": "off"},
    "tgfnet": {"steps": 2, "batch_size": 1, "window": (4, 8, 8), "width": 4, "align_width": 4,
               "progress": "off", "val_share": 0.0},
    "stgconvnet": {"steps": 2, "batch_size": 1, "window": (4, 8, 8), "widths": (4, 4),
                   "kernels": ((3, 3, 3), (3, 3, 3)), "strides": ((1, 2, 2), (1, 1, 1)),
                   "recover_steps": 2, "synth_steps": 2, "n_chains": 1, "fill_steps": 3,
                   "fill_average": 2, "time_budget": None, "progress": "off"},
    "flowfill": {"steps": 2, "batch_size": 1, "window": (4, 8, 8), "features": 4, "hidden": 4,
                 "iterations": 1, "time_budget": None, "progress": "off"},
}


def method_names() -> list[str]:
    return gapfill.methods.available()


def make_cube(seed: int, t: int, h: int, w: int, missing: float, dtype: str) -> xr.DataArray:
    rng = np.random.default_rng(seed)
    base = 15 + 3 * np.sin(np.arange(t)[:, None, None] / 3 + np.arange(w)[None, None, :] / 4)
    values = (base + rng.standard_normal((t, h, w))).astype(dtype)
    values[rng.random((t, h, w)) < missing] = np.nan
    values[:, 0, 0] = np.nan  # a never-observed (land) pixel
    # at least one obs
    values[0, -1, -1] = 1.0 if np.isnan(values[0, -1, -1]) else values[0, -1, -1]
    return xr.DataArray(values, dims=("time", "y", "x"), name="v")


@pytest.mark.parametrize("method", method_names())
@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 10_000),
    t=st.integers(2, 7),
    h=st.integers(2, 9),
    w=st.integers(2, 9),
    missing=st.floats(0.0, 0.85),
    dtype=st.sampled_from(["float32", "float64"]),
    holdout=st.sampled_from([0.0, 0.2]),
)
def test_fill_properties(method, seed, t, h, w, missing, dtype, holdout):
    da = make_cube(seed, t, h, w, missing, dtype)
    before = da.copy(deep=True)
    try:
        model = da.gapfill.fit(method, holdout=holdout, seed=seed, **FAST_OPTIONS.get(method, {}))
    except ValueError as err:  # a cube too small to hold anything out says so
        assert holdout > 0 and ("hold out" in str(err) or "hold-out" in str(err)), err
        assert np.isfinite(da.values).sum() < 20
        return
    out = da.gapfill.fill(model)
    check_fill(da, out, before)


@pytest.mark.parametrize("method", method_names())
def test_check_method_passes_every_registered_method(method):
    """gapfill.testing.check_method: in memory (float32, float64) and dask-backed."""
    check_method(method, **FAST_OPTIONS.get(method, {}))


class _LeavesHoles(gapfill.methods.Method):
    """Fills nothing: a method that breaks the no-NaN-left guarantee."""

    name = "leaves_holes"

    def fit(self, cube, rng):
        pass

    def fill(self, x, rng, samples=1, coords=None):
        return FillResult(x.copy())


def test_check_method_catches_a_broken_method():
    with pytest.raises(AssertionError, match="NaN left"):
        check_method(_LeavesHoles, dask=False)
    assert "leaves_holes" not in gapfill.methods.available()  # registered for the check only


@pytest.mark.parametrize("method", ["linear", "combcn"])
def test_deterministic_methods_error_ignores_samples(sst, method):
    """A deterministic method's calibrated error is the same for any ``samples``."""
    model = sst.gapfill.fit(method, holdout=0.0, **FAST_OPTIONS.get(method, {}))
    one = sst.gapfill.fill(model)[f"{sst.name}_error"]
    three = sst.gapfill.fill(model, samples=3)[f"{sst.name}_error"]
    xr.testing.assert_identical(one, three)
