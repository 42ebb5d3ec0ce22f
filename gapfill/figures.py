"""Diagnostics figure of a gap-filled product.

One PNG: a map of one filled time step with the filled areas hatched, a map of
the status flags (observed / filled / never observed), a histogram of the
held-out errors with MAE, RMSE and bias, a summary of the run, and, when the
product has an error variable, its map and a reliability diagram (the share of
held-out errors within k sigma, expected against observed). Maps use
cartopy (PlateCarree) when the grid is longitude/latitude; land is drawn from
the product's never-observed flag, and coastlines are added only when Natural
Earth files are already on disk (this never downloads anything). Drawing uses
matplotlib's Agg renderer without pyplot, and the file is written atomically.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from gapfill.localisation import is_lonlat

__all__ = [
    "central_longitude", "coastline_file", "diagnostics_figure", "error_map", "reliability_panel",
    "unwrap_longitudes",
]

log = logging.getLogger("gapfill")

#: Colours of the flag values 0 observed, 1 filled, 2 never observed.
FLAG_COLOURS = ("#a6cee3", "#e6550d", "#cfcac0")
LAND = FLAG_COLOURS[2]
#: Smallest height (inches) of a map panel; thinner domains are stretched north-south.
MIN_MAP_HEIGHT = 1.5
MAX_MAP_HEIGHT = 4.0
WIDTH = 11.0


def coastline_file(resolution: str = "110m") -> Path | None:
    """The Natural Earth coastline shapefile if cartopy already has it on disk, else ``None``."""
    try:
        import cartopy
    except ImportError:
        return None
    rel = Path("shapefiles", "natural_earth", "physical", f"ne_{resolution}_coastline.shp")
    for key in ("pre_existing_data_dir", "data_dir"):
        base = cartopy.config.get(key)
        if base and (Path(base) / rel).is_file():
            return Path(base) / rel
    return None


def diagnostics_figure(
    out: xr.Dataset,
    variable: str,
    errors: np.ndarray,
    path: str | os.PathLike,
    time_index: int | None = None,
    *,
    punched_errors: np.ndarray | None = None,
    predicted_error: np.ndarray | None = None,
    dpi: int = 150,
) -> Path:
    """Draw the diagnostics figure of a filled product and write it as PNG.

    Parameters
    ----------
    out
        The product of ``fill``: ``<variable>`` and ``<variable>_flag``.
    variable
        Name of the filled variable.
    errors
        Filled minus observed values at the held-out pixels (``Diagnostics.errors``).
    path
        The PNG to write (atomically; parent directories are created).
    time_index
        Time step shown on the maps; default: the one with the most filled pixels.
    punched_errors
        Optional filled minus true values at punched pixels, overlaid on the histogram.
    predicted_error
        The one-sigma error at the held-out pixels (``Diagnostics.predicted_error``),
        for the reliability diagram.
    dpi
        Resolution of the PNG.

    Returns
    -------
    pathlib.Path
        The written file.
    """
    from gapfill.dims import find_dims
    from gapfill.extras import require

    require("matplotlib", "the diagnostics figure")
    from matplotlib.figure import Figure

    da = out[variable]
    flag = out[f"{variable}_flag"] if f"{variable}_flag" in out else np.isnan(da).astype("uint8")
    dims = find_dims(da)
    if dims.channel:
        da, flag = da.isel({dims.channel: 0}), flag.isel({dims.channel: 0})
    da = da.transpose(*dims.core)
    flag = flag.transpose(*dims.core)
    filled_counts = np.asarray((flag == 1).sum((dims.y, dims.x)).values)
    if time_index is None:
        time_index = int(np.argmax(filled_counts))
    field = np.asarray(da.isel({dims.time: time_index}).values, dtype=float)
    status = np.asarray(flag.isel({dims.time: time_index}).values)
    x, y = _coord(da, dims.x), _coord(da, dims.y)
    geographic = is_lonlat(da, dims)
    if geographic:
        x = unwrap_longitudes(x)

    aspect = _aspect(x, y, geographic)
    natural = (WIDTH - 1.6) / aspect
    map_h = float(np.clip(natural, MIN_MAP_HEIGHT, MAX_MAP_HEIGHT))
    stretch = map_h / natural
    with_error = f"{variable}_error" in out
    fig = Figure(figsize=(WIDTH, 2 * map_h + 3.9 + with_error * 3.2), layout="constrained")
    grid = fig.add_gridspec(3 + with_error, 2,
                            height_ratios=[map_h, map_h, 3.0] + [3.0] * with_error,
                            width_ratios=[1.9, 1])
    axes = [_map_axes(fig, grid[i, :], x, geographic) for i in range(2)]

    units = da.attrs.get("units", "")
    label = _label(da)
    when = _time_label(da, dims.time, time_index)
    share = _share_filled(status)
    stretch_note = f"; north–south stretched ×{stretch:.0f}" if stretch > 1.5 else ""

    # (a) the filled field, filled pixels hatched, land from the never-observed flag
    ax = axes[0]
    finite = field[np.isfinite(field)]
    vmin, vmax = (np.percentile(finite, [1, 99]) if finite.size else (0.0, 1.0))
    _land(ax, x, y, status, geographic)
    mesh = ax.pcolormesh(x, y, np.ma.masked_invalid(field), cmap="RdYlBu_r", vmin=vmin,
                         vmax=vmax, shading="nearest", rasterized=True, **_tf(geographic))
    _hatch(ax, x, y, status == 1, geographic)
    cbar = fig.colorbar(mesh, ax=ax, orientation="vertical", fraction=0.025, pad=0.01,
                        extend="both")
    cbar.set_label(units)
    ax.set_title(f"(a) Filled {label}, {when} — hatched: filled ({share:.0%} of valid pixels)"
                 f"{stretch_note}", loc="left", fontsize=10)

    # (b) status flags
    ax = axes[1]
    from matplotlib.colors import BoundaryNorm, ListedColormap

    cmap = ListedColormap(FLAG_COLOURS)
    flags = ax.pcolormesh(x, y, status, cmap=cmap, norm=BoundaryNorm([-0.5, 0.5, 1.5, 2.5], 3),
                          shading="nearest", rasterized=True, **_tf(geographic))
    meanings = str(flag.attrs.get("flag_meanings", "observed filled never_observed")).split()
    cbar = fig.colorbar(flags, ax=ax, orientation="vertical", fraction=0.025, pad=0.01,
                        ticks=[0, 1, 2])
    cbar.ax.set_yticklabels([m.replace("_", " ") for m in meanings[:3]], fontsize=8)
    ax.set_title(f"(b) Status flag ({variable}_flag), {when}", loc="left", fontsize=10)
    for a in axes:
        a._gapfill_dims = (dims.y, dims.x)
        _decorate(a, x, y, geographic)

    # (c) histogram of held-out errors, (d) summary
    _histogram(fig.add_subplot(grid[2, 0]), np.asarray(errors, dtype=float), punched_errors, units)
    _summary(fig.add_subplot(grid[2, 1]), out, variable, units)
    if with_error:  # (e) the error variable, (f) its reliability on the hold-out
        error_map(fig, grid[3, 0], out[f"{variable}_error"], time_index, status)
        reliability_panel(fig.add_subplot(grid[3, 1]), errors, predicted_error)
    fig.suptitle(_suptitle(out, label), fontsize=12, fontweight="bold")
    return _save(fig, Path(path), dpi)


def error_map(fig: Any, spec: Any, error: xr.DataArray, time_index: int, status: np.ndarray) -> Any:
    """Map the error variable at ``time_index`` in the figure cell ``spec``; returns the axes."""
    from gapfill.dims import find_dims

    dims = find_dims(error)
    if dims.channel:
        error = error.isel({dims.channel: 0})
    error = error.transpose(*dims.core)
    field = np.asarray(error.isel({dims.time: time_index}).values, dtype=float)
    x, y = _coord(error, dims.x), _coord(error, dims.y)
    geographic = is_lonlat(error, dims)
    if geographic:
        x = unwrap_longitudes(x)
    ax = _map_axes(fig, spec, x, geographic)
    _land(ax, x, y, status, geographic)
    shown = np.ma.masked_invalid(np.where(status == 1, field, np.nan))
    top = float(np.nanpercentile(field[status == 1], 99)) if (status == 1).any() else 1.0
    mesh = ax.pcolormesh(x, y, shown, cmap="viridis", vmin=0.0, vmax=top or 1.0,
                         shading="nearest", rasterized=True, **_tf(geographic))
    cbar = fig.colorbar(mesh, ax=ax, orientation="vertical", fraction=0.04, pad=0.01,
                        extend="max")
    cbar.set_label(error.attrs.get("units", ""))
    ax._gapfill_dims = (dims.y, dims.x)
    _decorate(ax, x, y, geographic)
    ax.set_title(f"(e) One-sigma error ({error.name}), filled pixels, "
                 f"{_time_label(error, dims.time, time_index)}", loc="left", fontsize=10)
    return ax


def reliability_panel(ax: Any, errors: np.ndarray, sigma: np.ndarray | None) -> None:
    """Share of held-out ``errors`` within k·``sigma`` against a Gaussian's, k in 0.25–3."""
    from math import erf, sqrt

    ax.set_title("(f) Reliability of the error (held-out)", loc="left", fontsize=10)
    errors = np.asarray(errors, dtype=float)
    if sigma is None or not np.size(errors):
        ax.text(0.5, 0.5, "no held-out pixels", ha="center", va="center",
                transform=ax.transAxes, color="0.4")
        ax.set_axis_off()
        return
    from gapfill.errors import within_shares

    ks = np.linspace(0.25, 3.0, 12)
    expected = [erf(k / sqrt(2.0)) for k in ks]
    observed = within_shares(np.abs(errors), np.asarray(sigma, dtype=float), tuple(ks))
    ax.plot([0, 1], [0, 1], color="0.6", linewidth=0.8, linestyle="--", label="calibrated")
    ax.plot(expected, observed, marker="o", markersize=3, color="#3182bd", label="observed")
    for k, offset in ((1, (-40, 6)), (2, (-50, -14))):
        e, o = erf(k / sqrt(2.0)), within_shares(np.abs(errors), sigma, (k,))[0]
        ax.annotate(f"{k}σ: {o:.0%}", (e, o), textcoords="offset points", xytext=offset,
                    fontsize=8)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("expected share within kσ (Gaussian)")
    ax.set_ylabel("observed share")
    ax.legend(fontsize=8, frameon=False, loc="lower right")
    ax.grid(alpha=0.3, linewidth=0.5)
    ax.tick_params(labelsize=8)


# -- helpers ----------------------------------------------------------------------------------
def _coord(da: xr.DataArray, dim: str) -> np.ndarray:
    if dim in da.coords and np.issubdtype(da[dim].dtype, np.number):
        return np.asarray(da[dim].values, dtype=float)
    return np.arange(da.sizes[dim], dtype=float)


def _aspect(x: np.ndarray, y: np.ndarray, geographic: bool) -> float:
    dx = np.ptp(x) + (abs(x[1] - x[0]) if x.size > 1 else 1.0)
    dy = np.ptp(y) + (abs(y[1] - y[0]) if y.size > 1 else 1.0)
    return float(dx / dy) if geographic else float(x.size / y.size)


def unwrap_longitudes(lon: np.ndarray) -> np.ndarray:
    """Longitudes made continuous across the dateline or 0° (e.g. 170, 180, -170 -> 170,
    180, 190), then shifted by whole turns so their middle lies in ``[-180, 180)``."""
    lon = np.unwrap(np.asarray(lon, dtype=float), period=360.0)
    middle = (lon.min() + lon.max()) / 2
    return lon - 360.0 * np.floor((middle + 180.0) / 360.0)


def central_longitude(lon: np.ndarray) -> float:
    """The longitude a map of ``lon`` is centred on: the middle of their span, so a
    basin across the dateline or a regional 0–360 grid is drawn in one piece."""
    lon = unwrap_longitudes(lon)
    return float((lon.min() + lon.max()) / 2)


def _crs(geographic: bool, x: np.ndarray | None = None) -> Any:
    import cartopy.crs as ccrs

    central = 0.0 if x is None or not x.size else central_longitude(x)
    return ccrs.PlateCarree(central_longitude=central)


def _cartopy_ok() -> bool:
    try:
        import cartopy.crs  # noqa: F401
    except ImportError:
        log.warning("cartopy is not installed (pip install 'gapfill[plot]'): maps drawn "
                    "unprojected")
        return False
    return True


def _map_axes(fig: Any, spec: Any, x: np.ndarray, geographic: bool) -> Any:
    if geographic and _cartopy_ok():
        ax = fig.add_subplot(spec, projection=_crs(True, x))
        ax._gapfill_geo = True
        return ax
    ax = fig.add_subplot(spec)
    ax._gapfill_geo = False
    return ax


def _tf(geographic: bool) -> dict[str, Any]:
    if geographic and _cartopy_ok():
        import cartopy.crs as ccrs

        return {"transform": ccrs.PlateCarree()}
    return {}


def _land(ax: Any, x: np.ndarray, y: np.ndarray, status: np.ndarray, geographic: bool) -> None:
    from matplotlib.colors import ListedColormap

    land = np.ma.masked_where(status != 2, np.ones(status.shape))
    ax.pcolormesh(x, y, land, cmap=ListedColormap([LAND]), shading="nearest",
                  rasterized=True, **_tf(geographic))


def _hatch(ax: Any, x: np.ndarray, y: np.ndarray, mask: np.ndarray, geographic: bool) -> None:
    """Hatch and outline the ``mask`` pixels along their cell edges."""
    if not mask.any() or x.size < 2 or y.size < 2:
        return
    import matplotlib as mpl

    xe, ye = _edges_grid(x), _edges_grid(y)
    m = np.repeat(np.repeat(mask.astype(float), 2, axis=0), 2, axis=1)
    with mpl.rc_context({"hatch.color": "0.15", "hatch.linewidth": 0.6}):
        ax.contourf(xe, ye, m, levels=[0.5, 1.5], colors="none", hatches=["//////"],
                    **_tf(geographic))
    ax.contour(xe, ye, m, levels=[0.5], colors="0.15", linewidths=0.5, **_tf(geographic))


def _edges_grid(c: np.ndarray) -> np.ndarray:
    """Two points per cell, just inside its edges, so contours follow the cell edges."""
    half = np.abs(np.gradient(c)) / 2 * (1 - 1e-3)
    return np.column_stack([c - np.sign(c[-1] - c[0]) * half,
                            c + np.sign(c[-1] - c[0]) * half]).ravel()


def _decorate(ax: Any, x: np.ndarray, y: np.ndarray, geographic: bool) -> None:
    dx = abs(x[1] - x[0]) / 2 if x.size > 1 else 0.5
    dy = abs(y[1] - y[0]) / 2 if y.size > 1 else 0.5
    extent = [x.min() - dx, x.max() + dx, y.min() - dy, y.max() + dy]
    if getattr(ax, "_gapfill_geo", False):
        import cartopy.crs as ccrs
        from cartopy.mpl.ticker import LatitudeFormatter, LongitudeFormatter

        pc = ccrs.PlateCarree()
        # Limits in the map's own coordinates (degrees from its central longitude), so an
        # extent across the dateline or beyond 180° is one continuous range.
        central = central_longitude(x)  # as in _crs
        ax.set_xlim(extent[0] - central, extent[1] - central)
        ax.set_ylim(extent[2], extent[3])
        ax.set_aspect("auto")
        coast = coastline_file()
        if coast is not None:
            ax.coastlines(resolution="110m", linewidth=0.6, color="0.25")
        xt = _ticks(extent[0], extent[1], (1, 2, 5, 10, 15, 20, 30, 45, 60, 90), 3, 9)
        yt = _ticks(extent[2], extent[3], (1, 2, 5, 10, 15, 20, 30, 45), 2, 6)
        ax.set_xticks(xt, crs=pc)
        ax.set_yticks(yt, crs=pc)
        ax.xaxis.set_major_formatter(LongitudeFormatter(zero_direction_label=False))
        ax.yaxis.set_major_formatter(LatitudeFormatter())
    else:
        ax.set_xlim(extent[0], extent[1])
        ax.set_ylim(extent[2], extent[3])
        ax.set_aspect("auto")
        ax.set_xlabel(ax._gapfill_dims[1], fontsize=8)
        ax.set_ylabel(ax._gapfill_dims[0], fontsize=8)
    ax.tick_params(labelsize=8)


def _ticks(lo: float, hi: float, steps: tuple[float, ...], min_n: int, max_n: int) -> np.ndarray:
    for step in steps:
        t = np.arange(np.ceil(lo / step) * step, hi + 1e-9, step)
        if min_n <= t.size <= max_n:
            return t
    return np.linspace(lo, hi, min_n)


def _histogram(ax: Any, errors: np.ndarray, punched: np.ndarray | None, units: str) -> None:
    errors = errors[np.isfinite(errors)]
    u = f" {units}" if units else ""
    if not errors.size and (punched is None or not np.size(punched)):
        ax.text(0.5, 0.5, "no held-out pixels\n(holdout.fraction = 0)", ha="center",
                va="center", transform=ax.transAxes, color="0.4")
        ax.set_axis_off()
        ax.set_title("(c) Held-out errors", loc="left", fontsize=10)
        return
    both = errors if punched is None else np.concatenate([errors, punched[np.isfinite(punched)]])
    lim = float(np.percentile(np.abs(both), 99.5)) or 1.0
    bins = np.linspace(-lim, lim, 61)
    top = 0.0
    if errors.size:
        counts, _, _ = ax.hist(np.clip(errors, -lim, lim), bins=bins, density=True,
                               color="#3182bd", alpha=0.85,
                               label=f"held-out observed pixels (n={errors.size:,})")
        top = max(top, float(np.max(counts)))
    if punched is not None and np.size(punched):
        p = punched[np.isfinite(punched)]
        counts, _, _ = ax.hist(np.clip(p, -lim, lim), bins=bins, density=True, histtype="step",
                               color="#e6550d", linewidth=1.6,
                               label=f"punched pixels vs truth (n={p.size:,})")
        top = max(top, float(np.max(counts)))
    ax.axvline(0, color="0.2", linewidth=0.8)
    ax.set_xlim(-lim, lim)
    ax.set_ylim(0, 1.3 * top if top > 0 else 1)
    ax.text(0.99, 0.97, f"outer bins: |error| ≥ {_num(lim)}{u}", transform=ax.transAxes,
            ha="right", va="top", fontsize=7.5, color="0.4")
    ax.set_xlabel(f"filled − observed ({units})" if units else "filled − observed")
    ax.set_ylabel("density")
    ax.legend(fontsize=8, frameon=False, loc="upper left")
    ax.grid(alpha=0.3, linewidth=0.5)
    ax.tick_params(labelsize=8)
    if errors.size:
        mae, rmse, bias = np.abs(errors).mean(), np.sqrt((errors**2).mean()), errors.mean()
        ax.set_title(f"(c) Held-out errors (scored): MAE {_num(mae)}{u} · "
                     f"RMSE {_num(rmse)}{u} · bias {_num(bias, sign=True)}{u}",
                     loc="left", fontsize=10)
    else:
        ax.set_title("(c) Errors at punched pixels", loc="left", fontsize=10)


def _summary(ax: Any, out: xr.Dataset, variable: str, units: str) -> None:
    a = out.attrs
    rows: list[tuple[str, str]] = []
    method = a.get("gapfill_method")
    if method:
        rows.append(("method", str(method)))
    try:
        opts = json.loads(a.get("gapfill_options", "{}"))
    except (TypeError, ValueError):
        opts = {}
    for key in list(opts)[:4]:
        rows.append((f"  {key}", str(opts[key])))
    flag = out[f"{variable}_flag"] if f"{variable}_flag" in out else None
    if flag is not None:
        valid, filled = (int(n) for n in ((flag != 2).sum(), (flag == 1).sum()))  # lazy-safe
        rows.append(("filled pixels", f"{filled:,} ({filled / max(valid, 1):.1%})"))
    u = f" {units}" if units else ""
    for prefix, title in (("gapfill_holdout_", "held-out"), ("gapfill_punched_", "punched")):
        if f"{prefix}mae" in a:
            se = float(a.get(f"{prefix}mae_se", np.nan))
            pm = f" ± {_num(se)}" if np.isfinite(se) else ""
            rows.append((f"{title} MAE / RMSE",
                         f"{_num(a[prefix + 'mae'])}{pm} / {_num(a[prefix + 'rmse'])}{u}"))
            draws = int(a.get(f"{prefix}draws", 1))
            pooled = f" ({draws} draws)" if draws > 1 else ""
            rows.append((f"{title} bias, n", f"{_num(a[prefix + 'bias'], sign=True)}{u}, "
                                             f"{int(a[prefix + 'n']):,}{pooled}"))
    if "gapfill_holdout_within_1sigma" in a:
        rows.append(("held-out in 1σ / 2σ",
                     f"{float(a['gapfill_holdout_within_1sigma']):.0%} / "
                     f"{float(a.get('gapfill_holdout_within_2sigma', np.nan)):.0%}"))
    scale = float(a.get("gapfill_holdout_scale", 1.0))
    transfer = float(a.get("gapfill_holdout_transfer", 1.0))
    if scale != 1.0 or transfer != 1.0:
        rows.append(("held-out scale, transfer", f"{scale:.2f}, {transfer:.2f} (scored MAE "
                                                 f"{_num(a['gapfill_holdout_scored_mae'])}{u})"))
    ax.set_axis_off()
    ax.set_title("(d) Run", loc="left", fontsize=10)
    for i, (k, v) in enumerate(rows[:13]):
        yy = 0.95 - i * 0.075
        ax.text(0.0, yy, k, transform=ax.transAxes, fontsize=8.5, color="0.35", va="top")
        ax.text(0.52, yy, v, transform=ax.transAxes, fontsize=8.5, va="top", family="monospace")


def _num(value: Any, sign: bool = False) -> str:
    """A number to 3 significant digits with a typographic minus sign."""
    text = f"{float(value):+.3g}" if sign else f"{float(value):.3g}"
    return text.replace("-", "\u2212")


def _label(da: xr.DataArray) -> str:
    name = da.attrs.get("long_name") or da.attrs.get("standard_name") or da.name or "data"
    return str(name).replace("_", " ")


def _time_label(da: xr.DataArray, dim: str, i: int) -> str:
    if dim not in da.coords:
        return f"{dim} {i}"
    value = da[dim].values[i]
    if np.issubdtype(da[dim].dtype, np.datetime64):
        return str(np.datetime_as_string(value, unit="D"))
    return str(value)


def _share_filled(status: np.ndarray) -> float:
    valid = (status != 2).sum()
    return float((status == 1).sum() / valid) if valid else 0.0


def _suptitle(out: xr.Dataset, label: str) -> str:
    method = out.attrs.get("gapfill_method")
    return f"Gap-filled {label}" + (f" — {method} method" if method else "")


def _save(fig: Any, path: Path, dpi: int) -> Path:
    from gapfill.atomic import replacing

    with replacing(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, facecolor="white")
    return path
