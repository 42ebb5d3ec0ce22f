"""Shared pieces of the OSTIA benchmarks: the data, the held-out gaps, the score.

OSTIA is a gap-free analysis over the ocean, so cloud gaps punched into it
have a known truth; land is NaN and never scored.
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np
import xarray as xr


def ostia_path() -> str:
    """Path of ``ostia_monthly.nc`` in the ``iris-sample-data`` package."""
    try:
        import iris_sample_data
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("the OSTIA benchmark needs `pip install iris-sample-data`") from err
    root = os.path.dirname(iris_sample_data.__file__)
    return os.path.join(root, "sample_data", "ostia_monthly.nc")


def load_ostia() -> xr.DataArray:
    """OSTIA monthly SST in kelvin, dims ``(time, lat, lon)`` (54 × 18 × 432), land NaN."""
    with xr.open_dataset(ostia_path()) as ds:
        da = ds["surface_temperature"].load()
    da = da.rename(latitude="lat", longitude="lon")
    return da.drop_vars([c for c in da.coords if c not in da.dims])


def punch_clouds(da: xr.DataArray, coverage: float = 0.4, seed: int = 0) -> xr.DataArray:
    """Hide cloud-shaped patches (:class:`gapfill.masks.Cloud`) of ``da`` with NaN.

    About ``coverage`` of the pixels of every frame are hidden (of the ocean
    ones too, on average); longitude wraps around.
    """
    from gapfill.masks import Cloud

    shape = tuple(da.sizes[d] for d in ("time", "lat", "lon"))
    periodic = (False, _is_global(da["lon"].values))
    hidden = Cloud(coverage=coverage, seed=seed, periodic=periodic).sample(shape)
    mask = xr.DataArray(hidden, dims=("time", "lat", "lon"))
    return da.where(~mask.transpose(*da.dims))


def _is_global(lon: np.ndarray) -> bool:
    step = np.median(np.diff(lon)) if lon.size > 1 else 0
    return bool(step and abs(lon[-1] - lon[0] + step - 360) < 1e-3 * 360)


def score(truth: xr.DataArray, gappy: xr.DataArray, filled: xr.DataArray) -> dict[str, float]:
    """MAE, RMSE and bias (filled − truth) on the hidden pixels that can be scored.

    Scored pixels are finite in ``truth``, NaN in ``gappy`` and at a location
    observed at least once in ``gappy`` (a location never observed is "land"
    to a filler and stays NaN in a gapfill product; those are counted in
    ``never_observed``). A NaN in ``filled`` at a scored pixel is counted in
    ``unfilled`` and left out of the errors.
    """
    dims = gappy.dims
    time_axis = dims.index("time") if "time" in dims else 0
    t = np.asarray(truth.transpose(*dims).values, dtype=np.float64)
    g = np.asarray(gappy.values, dtype=np.float64)
    f = np.asarray(filled.transpose(*dims).values, dtype=np.float64)
    seen = np.isfinite(g).any(axis=time_axis, keepdims=True)
    hidden = np.isfinite(t) & ~np.isfinite(g)
    scored = hidden & seen
    ok = scored & np.isfinite(f)
    diff = f[ok] - t[ok]
    return {
        "mae": float(np.abs(diff).mean()),
        "rmse": float(np.sqrt((diff**2).mean())),
        "bias": float(diff.mean()),
        "n": int(ok.sum()),
        "unfilled": int((scored & ~ok).sum()),
        "never_observed": int((hidden & ~seen).sum()),
    }


def parse_options(pairs: list[str]) -> dict:
    """``--option KEY=VALUE`` arguments as a dict; each value is read as JSON (numbers,
    lists, ``null``...), else kept as text."""
    options = {}
    for pair in pairs:
        key, text = pair.split("=", 1)
        try:
            options[key] = json.loads(text)
        except json.JSONDecodeError:
            options[key] = text
    return options


def add_gan_option_arguments(parser: argparse.ArgumentParser) -> None:
    """``--threads`` and ``--option KEY=VALUE`` (a ``gan`` option; see :func:`parse_options`)."""
    parser.add_argument("--threads", type=int, default=None, help="torch and BLAS threads")
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                        help="a gan option, e.g. time_budget=300 (the value is read as JSON)")


def gan_options(args: argparse.Namespace) -> dict:
    """The ``gan`` options of :func:`add_gan_option_arguments`'s arguments."""
    options = parse_options(args.option)
    if args.threads:
        options.setdefault("threads", args.threads)
    return options
