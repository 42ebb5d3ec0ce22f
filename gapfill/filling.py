"""Apply a fitted model to a cube and build the CF product.

This is the one place where the guarantees every method shares are enforced:
observed values are copied through bit for bit, never-observed pixels (land)
stay NaN unless asked otherwise, and each pixel is flagged observed, filled or
never observed. Dask-backed input gives a dask-backed product.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import xarray as xr

from gapfill import errors, timeaxis
from gapfill.cf import API_HISTORY, cf_global_attrs
from gapfill.core import FILLED, NEVER_OBSERVED, OBSERVED, flags, run_method
from gapfill.cube import Cube
from gapfill.diagnostics import Diagnostics, score
from gapfill.methods.base import Coords
from gapfill.packing import packing_of

if TYPE_CHECKING:
    from gapfill.fitted import FittedModel

#: The time dim given to a single 2-D frame (methods with ``needs_time = False``).
ONE_FRAME = "frame"
FLAG_MEANINGS = "observed filled never_observed"


def validation_errors(
    model: FittedModel,
    raw: np.ndarray,
    validation: np.ndarray,
    coords: Coords | None = None,
    seed: int | Sequence[int] = 0,
    variability: np.ndarray | None = None,
    features: bool = True,
) -> tuple[np.ndarray, np.ndarray | None]:
    """The errors of a fitted method at its validation pixels, and what those pixels saw.

    ``raw`` (``(C, T, H, W)``, data units, NaN = missing) is filled once with the
    ``validation`` pixels hidden (they must have been hidden from the fit too).
    ``variability`` is the pixels' :func:`~gapfill.errors.time_variability`, for the
    features (``features=False``: the errors alone, features ``None``).

    Returns
    -------
    tuple
        The absolute errors (normalised units) at the validation pixels, against what
        was observed, and their :func:`~gapfill.errors.gap_features`, the inputs of
        :meth:`~gapfill.errors.ErrorModel.fit`.
    """
    z_true = model.normaliser.normalise(raw)
    z = np.where(validation, np.nan, z_true).astype(np.float32)
    result = model.method.fill(z, np.random.default_rng(seed), samples=1, coords=coords)
    abs_error = np.abs(result.values[validation].astype(np.float64) - z_true[validation])
    if not features:
        return abs_error, None
    native = result.error if model.method.provides_error else None
    filled = np.where(np.isfinite(z), z, result.values)
    seen = errors.gap_features(np.isfinite(z), native, variability=variability, filled=filled)
    return abs_error, seen[:, validation]


def _fill_block(
    block: np.ndarray,
    model: FittedModel,
    seed: int,
    coords: Coords | None,
    samples: int,
    fill_never_observed: bool,
) -> np.ndarray:
    """Fill one block laid out like the cube; returns ``(2, ...)`` stacked filled/error."""
    raw = block.astype(np.float64)
    raw4 = raw if raw.ndim == 4 else raw[None]
    filled, error = run_method(model, raw4, seed, coords, samples, fill_never_observed)
    if error is None:
        error = np.full_like(filled, np.nan)
    out = np.stack([filled, error])
    return out if raw.ndim == 4 else out[:, 0]


def _error_attrs(attrs: dict) -> dict:
    out = {
        "long_name": f"estimated one-sigma error of the filled {attrs.get('long_name', 'values')}"
    }
    if "standard_name" in attrs:
        out["standard_name"] = f"{attrs['standard_name']} standard_error"
    if "units" in attrs:
        out["units"] = attrs["units"]
    out["comment"] = "0 where observed; NaN where never observed."
    return out


def check_model(model: object) -> None:
    """Raise ``TypeError`` with the fix unless ``model`` is a fitted model."""
    from gapfill.fitted import FittedModel

    if isinstance(model, FittedModel):
        return
    if isinstance(model, str):
        raise TypeError(
            f"fill takes a fitted model, not the method name {model!r}: fit first, "
            f"model = da.gapfill.fit({model!r}), then da.gapfill.fill(model) (the model can "
            "also fill other cubes on the same grid, and be saved with model.save)."
        )
    raise TypeError(
        f"fill takes a fitted model (from da.gapfill.fit or gapfill.load), got "
        f"{type(model).__name__}"
    )


def fill_dataarray(
    da: xr.DataArray,
    model: FittedModel,
    *,
    samples: int = 1,
    diagnostics: Diagnostics | bool | None = None,
    fill_never_observed: bool = False,
    seed: int = 0,
    keep_packing: bool = False,
) -> xr.Dataset:
    """Fill ``da`` with ``model``; see :meth:`gapfill.accessor.GapfillAccessor.fill`."""
    check_model(model)
    if samples < 1:
        raise ValueError(f"samples must be >= 1, got {samples}")
    if model.dims.time == ONE_FRAME and ONE_FRAME not in da.dims:
        # One 2-D frame: no time tells land from gaps, so every missing pixel is filled
        # (and flagged filled); mask land afterwards if the frame has some.
        out = fill_dataarray(da.expand_dims(ONE_FRAME), model, samples=samples,
                             diagnostics=diagnostics, fill_never_observed=True,
                             seed=seed, keep_packing=keep_packing)
        out = out.isel({ONE_FRAME: 0}, drop=True)
        flag = out[f"{model.variable}_flag"] if f"{model.variable}_flag" in out else None
        if flag is not None:
            filled = (flag == NEVER_OBSERVED) & out[model.variable].notnull()
            out[flag.name] = flag.where(~filled, np.uint8(FILLED)).astype(np.uint8)
            out[flag.name].attrs = flag.attrs
        return out
    lazy = da.chunks is not None
    cube = Cube(da, model.dims, normaliser=model.normaliser, check_values=not lazy)
    name = cube.name
    with_error = model.gives_error(samples)
    coords = cube.coords()
    if diagnostics is None:
        diagnostics = not lazy and model.holdout.fraction > 0
    if diagnostics is True:
        diagnostics = score(da, model, seed=seed)

    data = cube.da.data
    time_axis = cube.da.dims.index(cube.dims.time)
    dtype = cube.da.dtype  # floating point, unpacked
    if lazy:
        from gapfill.chunked import fill_lazy

        filled, error, flag = fill_lazy(
            data, model, coords=coords, seed=seed, samples=samples,
            fill_never_observed=fill_never_observed, with_error=with_error, dtype=dtype,
        )
    else:
        stacked = _fill_block(
            np.asarray(data), model, seed, coords, samples, fill_never_observed
        )
        filled, error = stacked[0], stacked[1]
        flag = flags(np.asarray(data), time_axis)

    template = cube.da
    attrs = dict(cube.da.attrs)  # without packing attrs
    ancillary = [f"{name}_flag"] + ([f"{name}_error"] if with_error else [])
    attrs["ancillary_variables"] = " ".join(ancillary)
    variables = {
        name: xr.DataArray(
            filled.astype(dtype), dims=template.dims, coords=template.coords, attrs=attrs
        ),
        f"{name}_flag": xr.DataArray(
            flag,
            dims=template.dims,
            coords=template.coords,
            attrs={
                "long_name": f"status of each {name} value",
                "standard_name": "status_flag",
                "flag_values": np.array([OBSERVED, FILLED, NEVER_OBSERVED], dtype=np.uint8),
                "flag_meanings": FLAG_MEANINGS,
            },
        ),
    }
    if with_error:
        variables[f"{name}_error"] = xr.DataArray(
            error.astype(dtype), dims=template.dims, coords=template.coords,
            attrs=_error_attrs(cube.da.attrs),
        )
    if keep_packing:
        packed = packing_of(da)
        if packed is not None:
            variables[name].encoding = packed.encoding()
    for key in ("grid_mapping", "coordinates"):
        if key in da.attrs:
            for var in variables.values():
                var.attrs.setdefault(key, da.attrs[key])
    out = xr.Dataset({k: v.transpose(*da.dims) for k, v in variables.items()})
    out = timeaxis.restore_order(out, cube.dims.time, cube.time_order)  # the input's time order
    out.attrs.update(
        product_attrs(model, diagnostics if isinstance(diagnostics, Diagnostics) else None)
    )
    return cf_product(out, f"{model.name} fill of {name}")


def cf_product(ds: xr.Dataset, action: str) -> xr.Dataset:
    """``ds`` as a CF product: the global attrs ``gapfill run`` writes, clean references.

    References to variables ``ds`` does not hold (``grid_mapping``, ``bounds``
    of a DataArray whose dataset stayed behind) are dropped, attribute names
    CF does not allow (``"Model scenario"``) get underscores, coordinates and
    bounds are encoded without ``_FillValue``, and the global
    attrs are :func:`gapfill.cf.cf_global_attrs` with ``action`` in ``history``.
    """
    out = ds.copy(deep=False)
    bounds = {str(v.attrs.get("bounds")) for v in out.variables.values()}
    for key, var in out.variables.items():
        var.attrs = {_cf_name(k): v for k, v in var.attrs.items()
                     if not (k in _REFERENCES and str(v) not in out.variables)}
        if key in out.coords or key in bounds:  # CF: no fill value on coordinates and bounds
            var.encoding = {**var.encoding, "_FillValue": None}
    out.attrs = {_cf_name(k): v for k, v in out.attrs.items()}
    out.attrs = cf_global_attrs(out, history_command=f"{action} {API_HISTORY}")
    return out


#: Attributes naming one other variable of the dataset.
_REFERENCES = ("grid_mapping", "bounds", "climatology")


def _cf_name(name: str) -> str:
    """An attribute name CF accepts: letters, digits and underscores, starting with a letter."""
    import re

    clean = re.sub(r"[^A-Za-z0-9_]", "_", str(name))
    return clean if clean[:1].isalpha() or clean.startswith("_") else f"a_{clean}"


def product_attrs(model: FittedModel, diagnostics: Diagnostics | None) -> dict:
    """Global attributes describing the fill (method, options, hold-out scores)."""
    from gapfill.version import __version__

    attrs = {
        "gapfill_version": __version__,
        "gapfill_method": model.name,
        "gapfill_options": json.dumps(model.options_dict()),
        "gapfill_holdout": json.dumps(
            {
                "fraction": model.holdout.fraction,
                "process": model.holdout.process,
                "seed": model.holdout.seed,
            }
        ),
    }
    if diagnostics is not None:
        for key, value in diagnostics.summary.items():
            attrs[f"gapfill_holdout_{key}"] = value
    return attrs
