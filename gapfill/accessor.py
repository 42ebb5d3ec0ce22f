"""The ``.gapfill`` accessors on xarray DataArray and Dataset.

The accessors are thin: ``fit`` returns a :class:`~gapfill.fitted.FittedModel`
(state never lives on the accessor, which xarray recreates for every new
object) and ``fill`` takes it.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import xarray as xr

from gapfill import methods, streaming
from gapfill.cube import Cube
from gapfill.diagnostics import (
    MAX_VALIDATION_DRAWS,
    MIN_SE_BLOCKS,
    TIME_BLOCKS,
    Diagnostics,
    fit_masks,
    refit,
    resolve_process,
    score,
    time_block_draws,
    validation_draws,
)
from gapfill.dims import find_dims, is_single_frame
from gapfill.errors import ErrorModel, time_variability, window_frames
from gapfill.filling import ONE_FRAME, cf_product, check_model, fill_dataarray, validation_errors
from gapfill.fitted import FittedModel, Holdout
from gapfill.packing import is_undecoded


def fit_dataarray(
    da: xr.DataArray,
    method: str = "eof",
    *,
    dims: Mapping[str, str] | None = None,
    holdout: float = 0.1,
    holdout_process: str = "auto",
    seed: int = 0,
    streaming_fit: bool | None = None,
    options: Mapping[str, Any] | None = None,
    **more_options: Any,
) -> FittedModel:
    """Fit ``method`` to the gappy DataArray ``da``; see :meth:`GapfillAccessor.fit`."""
    from gapfill.version import __version__

    clash = sorted(set(options or {}) & set(more_options))
    if clash:
        raise TypeError(f"method option(s) {clash} given twice (in options= and as keywords)")
    # Keywords that name the accessor's own arguments (seed, dims, ...) cannot reach
    # the method; a method option of the same name goes in ``options=``.
    # Bad names and options fail here, before any work.
    method_obj = methods.get(method)(**{**(options or {}), **more_options})
    if is_single_frame(da, dims) and not method_obj.needs_time:
        da = da.expand_dims(ONE_FRAME)  # filled spatially, as a one-frame cube
    cube = Cube(da, dims)
    if cube.shape[1] < 2 and method_obj.needs_time:
        raise ValueError(
            f"dimension {cube.dims.time!r} (time) has length 1; the {method_obj.name} method "
            "learns along time and needs at least 2 frames. Fill a single frame spatially "
            "with method='linear'."
        )
    stream = streaming.use_streaming(method_obj, cube, streaming_fit)
    data = cube.da.data if cube.is_lazy else np.asarray(cube.da.values)
    observed = np.isfinite(data if data.ndim == 4 else data[None])
    spec = Holdout(holdout, resolve_process(holdout_process, observed), seed)
    # Observed pixels hidden from the fit: the hold-out (scored by ``score``) and the
    # validation pixels (they calibrate the error model), each from its own random stream.
    # A streaming fit reads the cube more than once: draw the masks once, in bits.
    missing = None if cube.is_lazy else cube.missing_pattern()
    hide, validation = fit_masks(observed, spec, missing, persist=stream)
    start = time.perf_counter()
    # A cheap method is fitted on every observation but the hold-out (the product), then
    # without the validation pixels too, making the product's choices (e.g. the number of
    # EOF modes), for the error model: it learns the error of a fit like the product's.
    # Any other method (and a streaming fit, which reads the cube from disk) is fitted
    # once, without the validation pixels.
    cheap = method_obj.refit_with_validation and not stream
    if cheap:
        _fit_method(method_obj, cube.with_hide(hide), seed, stream)
        calibrated = method_obj.calibration_copy()
    else:
        calibrated = method_obj
    _fit_method(calibrated, cube.with_hide(hide | validation), seed, stream)
    fit_seconds = time.perf_counter() - start
    start = time.perf_counter()
    fitted = FittedModel(calibrated, cube.normaliser, cube.dims, cube.name, spec)
    # The error model learns from the validation pixels; a method whose hold-out is drawn
    # more than once, or a cheap fit with few validation pixels, pools those of several
    # draws, each refitted without its own (or reusing a model that fills without
    # training: known once the first draw has tuned it).
    found, variability = [], None
    # The validation pixels are filled with the hold-out observed, as the product's gaps
    # are: the hold-out stays out of every fit and is never scored here. The window's
    # data is the same for every draw, so it is read once (with the first draw's pixels).
    frames, raw, first_val, hold, coords = _validation_window(cube, data, validation, hide)
    draw, draws = 0, 1
    while draw < draws:
        model, val = fitted, first_val
        if draw:
            draw_hide, draw_validation = fit_masks(observed, spec, missing, persist=stream,
                                                   draw=draw)
            model = refit(fitted, cube, draw_hide | draw_validation, draw, stream,
                          method=method_obj.calibration_copy() if cheap else None)
            (val,) = _first_frames(cube, [draw_validation], frames)
        if variability is None:  # how much each pixel changes, as the first fit saw it
            variability = time_variability(cube.normaliser.normalise(np.where(val, np.nan, raw)))
        with methods.limit_threads(method_obj.options.threads, int(np.prod(cube.shape))):
            if not draw and val.any():  # what the fit left open, chosen on these pixels
                truth = cube.normaliser.normalise(raw).astype(np.float32)
                calibrated.tune(np.where(val, np.nan, truth), truth, val,
                                np.random.default_rng([seed, 3]), coords)
            found.append(validation_errors(model, raw, val, coords, seed=seed,
                                           variability=variability))
        if not draw:
            draws = validation_draws(calibrated, int(first_val.sum()), stream)
        draw += 1
    # What the hold-out's observations are worth to the fill: the hold-out MAE's scale.
    scale, hidden_hold = _holdout_scale(fitted, cube, raw, hold, first_val, found[0][0], coords,
                                        seed, variability)
    abs_error, features = (np.concatenate(parts, axis=-1) for parts in zip(*found))
    error_model = ErrorModel.fit(abs_error, features, uses_native=method_obj.provides_error,
                                 variability=variability)
    # A model that trained learns its error from one draw of validation pixels, whose
    # patches may be easier or harder than most: correct its scale by what one draw
    # does to the error model of a cheap fill of the same cube, as far as the two fills
    # find the same pixels hard.
    control, slope = 1.0, 0.0
    if draws == 1 and not cheap and not stream and first_val.any():
        control, slope = _draw_control(cube, observed, spec, missing, hide | validation,
                                       first_val, frames, raw, coords, seed, variability,
                                       found[0][0])
        error_model = error_model.rescaled(control)
    # The validation pixels are scored in a fill that lacks them; the product has them.
    # What more observations are worth beyond what the error model's features say is
    # measured with the hold-out's, and scales the error.
    gain = _observation_gain(error_model, found[0], hidden_hold, np.nonzero(first_val)[1],
                             first_val.shape[1])
    error_model = error_model.rescaled(gain)
    info = {
        "variable": cube.name,
        "shape": list(cube.shape),
        "fit_seconds": round(fit_seconds, 3),
        "calibration_seconds": round(time.perf_counter() - start, 3),
        "validation_draws": draws,
        "validation_control": control,
        "validation_control_slope": slope,
        "holdout_scale": scale,
        "observation_gain": gain,
        "fitted_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "gapfill_version": __version__,
    }
    return FittedModel(method_obj, cube.normaliser, cube.dims, cube.name, spec, info, error_model)


def _holdout_scale(
    fitted: FittedModel, cube: Cube, raw: np.ndarray, hold: np.ndarray,
    validation: np.ndarray, abs_error: np.ndarray, coords: Any, seed: int,
    variability: np.ndarray | None = None,
) -> tuple[float, tuple[np.ndarray, np.ndarray] | None]:
    """How much smaller the product's error is than that of the fill its hold-out is
    scored in (``info["holdout_scale"]``; :class:`~gapfill.diagnostics.Diagnostics`
    multiplies the hold-out MAE by it), and the validation pixels' errors and features in
    the fill with the hold-out hidden (for :func:`_observation_gain`; ``None`` when there
    is nothing to compare).

    The hold-out is scored in a fill without the held-out observations; the product has
    them. Most held-out pieces border a real gap, so hiding them enlarges it. The fitted
    model fills the validation pixels of the window ``raw`` once with the hold-out
    (``hold``) observed (their ``abs_error``) and once with it hidden too; the factor is
    the ratio of the two MAEs. The product has every observation the scored fill has, and
    more, so a ratio above 1 is the validation pixels' chance and the factor is then 1.
    NaN when there is nothing to compare.
    """
    if not validation.any() or not hold.any():
        return float("nan"), None
    with methods.limit_threads(fitted.method.options.threads, int(np.prod(cube.shape))):
        without, features = validation_errors(fitted, np.where(hold, np.nan, raw), validation,
                                              coords, seed=seed, variability=variability)
    ok = np.isfinite(abs_error) & np.isfinite(without)
    if not ok.any() or not without[ok].sum() > 0:
        return float("nan"), None
    return float(min(1.0, abs_error[ok].mean() / without[ok].mean())), (without, features)


def _observation_gain(
    error_model: ErrorModel, with_hold: tuple[np.ndarray, np.ndarray],
    without_hold: tuple[np.ndarray, np.ndarray] | None, time_index: np.ndarray, n_time: int,
) -> float:
    """The factor on the error model's σ for the observations its validation fill lacks
    (``info["observation_gain"]``, at most 1).

    The error model learns from validation pixels scored in a fill without them, and the
    product's gaps are filled with them observed. Whatever more observations do to the
    error beyond what the features (distances, gap length) say is measured with the
    hold-out's: the validation pixels' errors with the hold-out observed and hidden
    (``(abs_error, features)`` each; ``time_index``, the frame of each pixel of the
    ``n_time`` frames) change by the ratio of their MAEs, the model's prediction by the
    ratio of its means; their quotient ``g`` is measured with a standard error ``se`` (a
    block bootstrap over stretches of time, :func:`~gapfill.diagnostics.time_block_draws`)
    and shrunk towards 1 by its precision, to ``exp(L · L² / (L² + se²))`` with
    ``L = log g``. 1 when there is nothing to compare, when fewer than
    :data:`~gapfill.diagnostics.MIN_SE_BLOCKS` stretches hold pixels, or when ``g >= 1``.
    """
    if without_hold is None:
        return 1.0
    (e1, f1), (e0, f0) = with_hold, without_hold
    ok = (np.isfinite(e1) & np.isfinite(e0) & np.isfinite(f1).all(0) & np.isfinite(f0).all(0))
    if not ok.any():
        return 1.0
    p1, p0 = (error_model.predict(f[:, ok]).astype(np.float64) for f in (f1, f0))
    block, draw = time_block_draws(n_time)
    where = block[np.asarray(time_index)[ok]]
    if np.unique(where).size < MIN_SE_BLOCKS:
        return 1.0
    # sums by stretch of time of the four means' terms: the point estimate, then resamples
    sums = np.stack([np.bincount(where, weights=v, minlength=TIME_BLOCKS)
                     for v in (e1[ok], e0[ok], p1, p0)])
    with np.errstate(invalid="ignore", divide="ignore"):
        log_g = np.log(sums[0].sum() * sums[3].sum() / (sums[1].sum() * sums[2].sum()))
        drawn = sums[:, draw].sum(-1)
        resampled = np.log(drawn[0] * drawn[3] / (drawn[1] * drawn[2]))
    finite = resampled[np.isfinite(resampled)]
    se = float(np.std(finite)) if finite.size else float("nan")
    if not (np.isfinite(log_g) and log_g < 0 and np.isfinite(se)):
        return 1.0
    return float(np.exp(log_g * log_g**2 / (log_g**2 + se**2)))


def _draw_control(
    cube: Cube, observed: Any, spec: Holdout, missing: np.ndarray | None, first_hidden: Any,
    first_val: np.ndarray, frames: slice, raw: np.ndarray, coords: Any, seed: int,
    variability: np.ndarray | None, first_errors: np.ndarray,
) -> tuple[float, float]:
    """How much the error model of a one-draw fit is rescaled, a control variate for the
    draw's chance: ``(factor, slope)`` (``info["validation_control"]`` and
    ``info["validation_control_slope"]``).

    ``linear`` (cheap) is fitted for :data:`~gapfill.diagnostics.MAX_VALIDATION_DRAWS`
    draws of hold-out and validation pixels, the first being the fit's own (its hidden
    pixels ``first_hidden``, its validation pixels ``first_val`` in the window ``raw``).
    A draw whose pixels are easy for ``linear`` is easy for the method as far as their
    errors go together: ``slope`` is that of the method's log error (``first_errors``, at
    the first draw's validation pixels) on ``linear``'s at the same pixels, clipped to
    ``[0, 1]``. ``linear``'s draw's chance, ``c``, is the median over the window's real
    gaps of the error its model predicts from all draws over the error it predicts from
    the first draw alone, and the factor is ``c ** slope``. ``(1, 0)`` when there is
    nothing to compare.
    """
    linear = methods.get("linear")()
    _fit_method(linear, cube.with_hide(first_hidden), seed, False)
    first = FittedModel(linear, cube.normaliser, cube.dims, cube.name, spec)
    threads = (linear.options.threads, int(np.prod(cube.shape)))
    found, slope = [], 0.0
    for draw in range(MAX_VALIDATION_DRAWS):
        model, val = first, first_val
        if draw:
            hide, validation = fit_masks(observed, spec, missing, draw=draw)
            model = refit(first, cube, hide | validation, draw)
            (val,) = _first_frames(cube, [validation], frames)
        if not val.any():
            return 1.0, 0.0
        with methods.limit_threads(*threads):
            found.append(validation_errors(model, raw, val, coords, seed=seed,
                                           variability=variability))
        if not draw:
            slope = _log_slope(first_errors, found[0][0])
            if slope == 0.0:  # nothing of linear's chance is the method's
                return 1.0, 0.0
    one = ErrorModel.fit(*found[0], variability=variability)
    abs_error, features = (np.concatenate(parts, axis=-1) for parts in zip(*found))
    pooled = ErrorModel.fit(abs_error, features, variability=variability)
    # compared where it matters: the real gaps of the window, as linear fills them
    seen = np.isfinite(raw)
    gaps = ~seen & seen.any(1, keepdims=True)
    if not gaps.any():
        return 1.0, slope
    with methods.limit_threads(*threads):
        _, features = validation_errors(first, raw, gaps, coords, seed=seed,
                                        variability=variability)
    ok = np.isfinite(features).all(0)
    ratio = pooled.predict(features[:, ok]) / one.predict(features[:, ok])
    chance = float(np.median(ratio)) if ratio.size else float("nan")
    if not (np.isfinite(chance) and chance > 0):
        return 1.0, slope
    return chance**slope, slope


def _log_slope(y: np.ndarray, x: np.ndarray) -> float:
    """Least-squares slope of ``log y`` on ``log x`` (absolute errors at the same pixels,
    each offset by 1% of its median), clipped to ``[0, 1]``; 0 with fewer than 3 pairs."""
    ok = np.isfinite(y) & np.isfinite(x)
    if ok.sum() < 3:
        return 0.0
    ly, lx = (np.log(v[ok] + max(1e-2 * float(np.median(v[ok])), 1e-12)) for v in (y, x))
    spread = float(np.var(lx))
    if not spread > 0:
        return 0.0
    slope = float(np.mean((lx - lx.mean()) * (ly - ly.mean())) / spread)
    return float(np.clip(slope, 0.0, 1.0))


def _fit_method(method: Any, fit_cube: Cube, seed: int, stream: bool) -> None:
    """Fit ``method`` on ``fit_cube`` (streamed when ``stream``), in its thread limit."""
    rng = np.random.default_rng(seed)
    with methods.limit_threads(method.options.threads, int(np.prod(fit_cube.shape))):
        if stream:
            streaming.fit(method, fit_cube, rng)
        else:
            method.fit(fit_cube, rng)


def _validation_window(
    cube: Cube, data: Any, validation: Any, hide: Any
) -> tuple[slice, np.ndarray, np.ndarray, np.ndarray, Any]:
    """The first frames of the cube (at most :data:`~gapfill.errors.WINDOW_PIXELS`),
    where the error model learns: the frames, their ``(C, T, H, W)`` data (NaN =
    missing), ``validation`` pixels and hold-out (``hide``), read in one pass, and their
    coordinates."""
    frames = slice(0, window_frames(cube.shape))
    raw, val, hold = _first_frames(
        cube, [data if data.ndim == 4 else data[None], validation, hide], frames)
    coords = cube.coords()
    coords = None if coords is None else coords.isel(frames, slice(None), slice(None))
    return frames, raw.astype(np.float64), val, hold, coords


def _first_frames(cube: Cube, arrays: list[Any], frames: slice) -> list[np.ndarray]:
    """``frames`` of each ``(C, T, H, W)`` array, as numpy (whatever the chunks of a
    dask-backed cube: chunk by chunk in one pass, no task holds the window)."""
    parts = [a[:, frames] for a in arrays]
    if cube.is_lazy:
        import dask

        slabs = [[p.blocks[:, i] for i in range(p.numblocks[1])] for p in parts]
        parts = [np.concatenate(blocks, axis=1) for blocks in dask.compute(*slabs)]
    return [np.asarray(p) for p in parts]


@xr.register_dataarray_accessor("gapfill")
class GapfillAccessor:
    """``da.gapfill``: fit a gap-filling method to a gappy cube and fill it."""

    def __init__(self, obj: xr.DataArray) -> None:
        self._obj = obj

    def fit(
        self,
        method: str = "eof",
        *,
        dims: Mapping[str, str] | None = None,
        holdout: float = 0.1,
        holdout_process: str = "auto",
        seed: int = 0,
        streaming_fit: bool | None = None,
        options: Mapping[str, Any] | None = None,
        **more_options: Any,
    ) -> FittedModel:
        """Learn a filling model from the gappy cube itself.

        Parameters
        ----------
        method
            A name from :func:`gapfill.methods.available` (``"eof"``, ``"linear"``,
            ``"climatology"``, ``"gan"``, ...).
        dims
            Overrides of the detected dims, e.g. ``{"time": "t", "y": "row", "x": "col"}``.
        holdout
            Share of observed pixels hidden from the fit, in patches shaped by
            ``holdout_process``, and used by :meth:`score` and :meth:`fill` for
            MAE/RMSE/bias. 0 disables it.
        holdout_process
            ``"auto"`` (the default: ``"empirical"``, the cube's own gap shapes, when it
            has enough gaps, else ``"cloud"``), ``"empirical"``, ``"cloud"`` or any
            process of :mod:`gapfill.masks`.
        seed
            Seed of the hold-out draw and of the method (a method's own ``seed``
            option, given in ``options``, takes precedence for the method).
        streaming_fit
            Fit a dask-backed cube in a few blockwise passes instead of loading it
            (``eof`` and ``climatology``; see :mod:`gapfill.streaming`). ``None``:
            when the cube is dask-backed and larger than
            ``gapfill.streaming.IN_MEMORY_FIT_BYTES``.
        options
            The method's options as a mapping (see its ``Options`` class); needed
            for an option whose name is also an argument here, such as ``seed``.
        **more_options
            The method's options as keywords, e.g. ``max_modes=10``.

        Returns
        -------
        FittedModel
        """
        return fit_dataarray(
            self._obj, method, dims=dims, holdout=holdout, holdout_process=holdout_process,
            seed=seed, streaming_fit=streaming_fit, options=options, **more_options,
        )

    def score(self, model: FittedModel, seed: int = 0) -> Diagnostics:
        """Fill with the model's hold-out hidden and score the held-out pixels."""
        return score(self._obj, model, seed=seed)

    def fill(
        self,
        model: FittedModel,
        *,
        samples: int = 1,
        diagnostics: Diagnostics | bool | None = None,
        fill_never_observed: bool = False,
        seed: int = 0,
        keep_packing: bool = False,
    ) -> xr.Dataset:
        """Fill the gaps with a fitted model.

        Parameters
        ----------
        model
            From :meth:`fit` or :func:`gapfill.load`.
        samples
            Number of stochastic fills for methods that draw them (their mean is
            returned, their spread is the error).
        diagnostics
            ``True`` scores the hold-out (a second fill), a :class:`Diagnostics`
            from :meth:`score` is used as is, ``False`` skips. ``None``: score
            in-memory data, skip dask-backed data to keep it lazy.
        fill_never_observed
            Also fill pixels with no observation at any time (land). Off by default.
        seed
            Seed of stochastic fills; the same seed gives the same output.
        keep_packing
            Give the filled variable the input's packing (dtype, ``scale_factor``,
            ``add_offset``, ``_FillValue``) as its encoding, so ``to_netcdf`` writes
            it back as the input was stored. The values returned are floats either way.

        Returns
        -------
        xarray.Dataset
            ``<name>`` (filled), ``<name>_flag`` (0 observed, 1 filled, 2 never
            observed), ``<name>_error`` where the method gives one; hold-out
            scores in the attrs. Dask-backed input gives a dask-backed output.
        """
        return fill_dataarray(
            self._obj, model, samples=samples, diagnostics=diagnostics,
            fill_never_observed=fill_never_observed, seed=seed, keep_packing=keep_packing,
        )


def _cube_variables(ds: xr.Dataset, variable: str | list[str] | None) -> list[str]:
    if isinstance(variable, str):
        variable = [variable]
    if variable is not None:
        missing = [v for v in variable if v not in ds.data_vars]
        if missing:
            raise ValueError(
                f"variable(s) {missing} not in the dataset; it has {list(ds.data_vars)}"
            )
        return list(variable)
    names = []
    for name, da in ds.data_vars.items():
        if da.ndim < 3 or not (np.issubdtype(da.dtype, np.floating) or is_undecoded(da)):
            continue
        try:
            find_dims(da)
        except ValueError:
            continue
        names.append(str(name))
    if not names:
        raise ValueError(
            f"no data variable with time, y and x dims among {list(ds.data_vars)}; "
            "pass variable='name' (and dims=...)"
        )
    return names


@xr.register_dataset_accessor("gapfill")
class GapfillDatasetAccessor:
    """``ds.gapfill``: the DataArray accessor applied to one or more variables."""

    def __init__(self, obj: xr.Dataset) -> None:
        self._obj = obj

    def fit(
        self, method: str = "eof", *, variable: str | list[str] | None = None, **kwargs: Any
    ) -> FittedModel | dict[str, FittedModel]:
        """Fit each chosen variable (default: every float variable with time, y, x dims).

        Returns one :class:`FittedModel` for one variable, else a dict by variable name.
        Other keyword arguments are those of :meth:`GapfillAccessor.fit`.
        """
        names = _cube_variables(self._obj, variable)
        models = {n: fit_dataarray(self._obj[n], method, **kwargs) for n in names}
        return models[names[0]] if len(names) == 1 else models

    def fill(
        self, model: FittedModel | Mapping[str, FittedModel], **kwargs: Any
    ) -> xr.Dataset:
        """Fill the fitted variables; other variables and attrs are kept.

        Keyword arguments are those of :meth:`GapfillAccessor.fill`.
        """
        if not isinstance(model, Mapping):
            check_model(model)
        models = {model.variable: model} if isinstance(model, FittedModel) else dict(model)
        out = self._obj.copy()
        method_attrs: dict[str, Any] = {}
        for name, m in models.items():
            if name not in self._obj.data_vars:
                raise ValueError(f"the model was fitted on {name!r}, which is not in this dataset")
            filled = fill_dataarray(self._obj[name], m, **kwargs)
            mapping = self._obj[name].attrs.get("grid_mapping")
            if mapping in self._obj.variables:  # the dataset holds it: keep the reference
                for var in filled.data_vars.values():
                    var.attrs["grid_mapping"] = mapping
            out = out.drop_vars(name).merge(filled, compat="override")
            prefix = "" if len(models) == 1 else f"{name}_"
            method_attrs.update({f"{prefix}{k}": v for k, v in filled.attrs.items()
                                 if k.startswith("gapfill_")})
        out.attrs.update(method_attrs)
        return cf_product(out, f"{'/'.join(m.name for m in models.values())} fill of "
                               f"{', '.join(models)}")
