"""Test a gap-filling method: small synthetic cubes and the guarantees every method keeps.

Anyone who writes and :func:`~gapfill.methods.register`\\ s a method can check it
the way gapfill checks its own::

    from gapfill.testing import check_method

    def test_my_method():
        check_method(MyMethod, strength=2.0)   # fast options of the method

:func:`check_method` fits the method through the public accessor on a small
synthetic SST cube (:func:`synthetic_sst`: land, random gaps), in memory
(float32 and float64) and dask-backed, fills it, and asserts with
:func:`check_fill` that

- observed values come back unchanged, bit for bit;
- pixels never observed (land) stay NaN, and no NaN is left in a filled pixel;
- the flag variable says which is which;
- the error variable is positive and finite at every filled pixel, 0 where observed
  and NaN where never observed;
- the input is not modified;
- dask-backed input gives dask-backed output (nothing computed until asked).

The cube makers (:func:`synthetic_sst`, :func:`smooth_cube`,
:func:`travelling_wave`) and :func:`gap_mae` are what gapfill's own tests use.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from gapfill import methods
from gapfill.methods.base import Method

__all__ = [
    "check_fill", "check_method", "gap_mae", "smooth_cube", "synthetic_sst", "travelling_wave",
]


# -- cubes ---------------------------------------------------------------------------------
def synthetic_sst(
    t: int = 16, h: int = 12, w: int = 20, missing: float = 0.3, seed: int = 0, land: bool = True
) -> xr.DataArray:
    """A smooth SST-like field (a few travelling modes + noise) with random gaps and land.

    Monthly ``(time, lat, lon)`` float32 in kelvin, CF-attributed; ``missing`` of the
    pixels are NaN at random and, with ``land``, a corner is never observed.
    """
    rng = np.random.default_rng(seed)
    tt, yy, xx = np.meshgrid(
        np.arange(t), np.linspace(-1, 1, h), np.linspace(0, 2 * np.pi, w), indexing="ij"
    )
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


def smooth_cube(
    t: int = 12, h: int = 16, w: int = 20, missing: float = 0.3, seed: int = 0
) -> tuple[np.ndarray, xr.DataArray]:
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


def travelling_wave(
    t: int = 12, h: int = 16, w: int = 16, missing: float = 0.4, seed: int = 0
) -> tuple[np.ndarray, xr.DataArray]:
    """A smooth travelling wave with random gaps: ``(truth, gappy)``, dims ``(time, y, x)``."""
    rng = np.random.default_rng(seed)
    tt, yy, xx = np.meshgrid(np.arange(t), np.arange(h), np.arange(w), indexing="ij")
    truth = (np.sin(2 * np.pi * (xx - tt) / 8) * np.cos(2 * np.pi * yy / 16)
             + 0.5 * np.sin(2 * np.pi * (yy + 0.5 * tt) / 10)).astype(np.float32)
    gappy = np.where(rng.random(truth.shape) < missing, np.nan, truth)
    return truth, xr.DataArray(gappy, dims=("time", "y", "x"), name="v")


def gap_mae(method: Method, cube: Any, truth: np.ndarray) -> float:
    """MAE of a fitted method's fill of a :class:`~gapfill.cube.Cube` on its gaps where
    ``truth`` (the ``(T, H, W)`` field in data units) is known, in normalised units."""
    x = cube.values()
    target = cube.normaliser.normalise(truth[None])
    gaps = np.isfinite(target) & ~np.isfinite(x)
    fill = method.fill(x, np.random.default_rng(0), coords=cube.coords()).values
    return float(np.abs(fill[gaps] - target[gaps]).mean())


# -- the guarantees --------------------------------------------------------------------------
def check_fill(da: xr.DataArray, out: xr.Dataset, before: xr.DataArray | None = None) -> None:
    """Assert the guarantees of a fill ``out`` of ``da`` (``before``: a deep copy of ``da``
    taken before fitting, to check the input was not modified).

    Raises
    ------
    AssertionError
        Naming the guarantee that does not hold.
    """
    name = da.name
    filled = out[name].transpose(*da.dims).values
    values = da.values
    observed = np.isfinite(values)
    never = ~observed.any(0)
    assert filled.dtype == da.dtype, f"the fill is {filled.dtype}, the input {da.dtype}"
    # bit-for-bit: compare the raw bytes of observed values
    assert filled[observed].tobytes() == values[observed].tobytes(), "observed values changed"
    assert np.isnan(filled[:, never]).all(), "a never-observed pixel was filled"
    gaps = ~observed & ~never[None]
    assert np.isfinite(filled[gaps]).all(), f"NaN left in {np.isnan(filled[gaps]).sum()} gaps"
    flag = out[f"{name}_flag"].transpose(*da.dims).values
    assert (
        (flag[observed] == 0).all() and (flag[gaps] == 1).all() and (flag[:, never] == 2).all()
    ), "the flag does not say observed (0), filled (1) and never observed (2)"
    assert f"{name}_error" in out, "no error variable"
    error = out[f"{name}_error"].transpose(*da.dims).values
    assert (error[gaps] > 0).all() and np.isfinite(error[gaps]).all(), \
        "the error is not positive and finite at every filled pixel"
    assert (error[observed] == 0).all() and np.isnan(error[:, never]).all(), \
        "the error is not 0 where observed and NaN where never observed"
    if before is not None:
        xr.testing.assert_identical(da, before)


def check_method(
    method: type[Method] | str,
    *,
    da: xr.DataArray | None = None,
    holdout: float = 0.1,
    seed: int = 0,
    dask: bool = True,
    **options: Any,
) -> None:
    """Fit and fill with ``method`` and assert every guarantee (see the module docstring).

    Parameters
    ----------
    method
        A :class:`~gapfill.methods.base.Method` subclass (registered for the check
        if it is not) or a registered name.
    da
        The cube (default: :func:`synthetic_sst`); it is also checked as float64
        and, with ``dask``, chunked along time.
    holdout, seed
        The accessor's hold-out share and seed.
    **options
        Options of the method (small networks, few steps: keep it fast).

    Raises
    ------
    AssertionError
        Naming the guarantee that does not hold.
    """
    cls = methods.get(method) if isinstance(method, str) else method
    previous = methods._REGISTRY.get(cls.name)
    methods.register(cls)
    try:
        base = synthetic_sst() if da is None else da
        cubes = [base, base.astype(np.float64)]
        if dask:
            cubes.append(base.chunk({base.dims[0]: max(2, base.shape[0] // 2)}))
        for cube in cubes:
            before = cube.copy(deep=True)
            model = cube.gapfill.fit(cls.name, holdout=holdout, seed=seed, options=options)
            out = cube.gapfill.fill(model)
            if cube.chunks is not None:
                assert out[cube.name].chunks is not None, "dask in did not give dask out"
                out = out.compute()
                cube = cube.compute()
            check_fill(cube, out, before.compute())
    finally:
        if previous is None:
            methods._REGISTRY.pop(cls.name, None)
        else:
            methods._REGISTRY[cls.name] = previous
