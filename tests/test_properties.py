"""Properties every registered method must keep, over random shapes and gap patterns.

- observed values are unchanged, bit for bit;
- never-observed pixels (land) stay NaN;
- no NaN is left in the filled pixels;
- the input is not modified.
"""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import gapfill

#: Options that keep each method fast enough for property tests on CPU.
FAST_OPTIONS: dict[str, dict] = {
    "eof": {"max_modes": 4},
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
    values[0, -1, -1] = 1.0 if np.isnan(values[0, -1, -1]) else values[0, -1, -1]  # at least one obs
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
    model = da.gapfill.fit(method, holdout=holdout, seed=seed, **FAST_OPTIONS.get(method, {}))
    out = da.gapfill.fill(model)
    filled = out["v"].values
    observed = np.isfinite(da.values)
    never = ~observed.any(0)
    assert filled.dtype == da.dtype
    # bit-for-bit: compare the raw bytes of observed values
    assert filled[observed].tobytes() == da.values[observed].tobytes()
    assert np.isnan(filled[:, never]).all()
    gaps = ~observed & ~never[None]
    assert np.isfinite(filled[gaps]).all(), f"{method} left NaN in {np.isnan(filled[gaps]).sum()} gaps"
    flag = out["v_flag"].values
    assert (flag[observed] == 0).all() and (flag[gaps] == 1).all() and (flag[:, never] == 2).all()
    xr.testing.assert_identical(da, before)


@pytest.mark.parametrize("method", ["linear", "combcn"])
def test_deterministic_methods_write_no_error_for_samples(sst, method):
    """``samples > 1`` gives no (all-NaN) error variable for a deterministic method."""
    model = sst.gapfill.fit(method, holdout=0.0, **FAST_OPTIONS.get(method, {}))
    out = sst.gapfill.fill(model, samples=3)
    assert f"{sst.name}_error" not in out
