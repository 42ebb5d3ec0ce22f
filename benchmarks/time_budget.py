"""Where a ``gan`` fit's time budget goes, through ``da.gapfill.fit``.

For each case of ``benchmarks/gan_benchmark.py`` (the gappy cube only), ``gan`` is fitted
with default options and the given ``time_budget``, and the whole call is timed: the
seconds until training (``GAN.fit``) returns, the seconds after it (``GAN.tune``, the
error model's fills of its validation pixels and of the hold-out's, ``linear``'s control
of the draw; each timed on its own), and what training reserved for them
(``fit_info["reserved_seconds"]``). A fit keeps to its budget when ``whole`` is at most
``time_budget``, and its reserve holds when ``after`` is at most ``reserved``.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/time_budget.py --cases ostia,a1b --budget 150
    python benchmarks/time_budget.py --cases bikes-moving_bar --budget 570 --json out.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from gan_benchmark import CASES, load_case  # noqa: E402

from gapfill import accessor  # noqa: E402
from gapfill.methods.gan import GAN  # noqa: E402

#: What is timed after training: (owner, attribute, label).
PARTS = ((GAN, "tune", "tune"), (accessor, "validation_errors", "validation fills"),
         (accessor, "_draw_control", "linear's control"))


@contextlib.contextmanager
def timed(owner: Any, name: str, record: Callable[[float], None]) -> Iterator[None]:
    """Call ``record`` with the seconds of every call of ``owner.name`` meanwhile."""
    original = getattr(owner, name)

    def run(*args: Any, **kwargs: Any) -> Any:
        start = time.monotonic()
        try:
            return original(*args, **kwargs)
        finally:
            record(time.monotonic() - start)

    setattr(owner, name, run)
    try:
        yield
    finally:
        setattr(owner, name, original)


def run_case(case: str, budget: float, threads: int) -> dict[str, Any]:
    """Fit ``gan`` on ``case`` through ``da.gapfill.fit`` and time its parts."""
    _, gappy, _, _ = load_case(case, 0)
    parts: dict[str, list[float]] = {}
    trained: list[float] = []
    with contextlib.ExitStack() as stack:
        for owner, name, label in PARTS:
            stack.enter_context(timed(owner, name, parts.setdefault(label, []).append))
        stack.enter_context(timed(GAN, "fit", lambda _: trained.append(time.monotonic())))
        start = time.monotonic()
        model = gappy.gapfill.fit("gan", seed=0, progress="off", threads=threads,
                                  time_budget=budget)
        end = time.monotonic()
    info = model.method.fit_info
    return {
        "case": case, "budget": budget, "whole": end - start,
        "training": trained[0] - start, "after": end - trained[0],
        "reserved": info["reserved_seconds"], "steps": info["steps"],
        "share": info.get("correction_gain"), "draws": model.info["validation_draws"],
        "parts": {k: [round(s, 2) for s in v] for k, v in parts.items()},
    }


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", default=",".join(CASES))
    p.add_argument("--budget", type=float, default=570.0, help="gan's time_budget (s)")
    p.add_argument("--threads", type=int, default=1, help="torch and BLAS threads")
    p.add_argument("--json", default=None, help="write the rows here")
    args = p.parse_args(argv)
    warnings.filterwarnings("ignore", category=RuntimeWarning)
    rows = [run_case(c, args.budget, args.threads) for c in args.cases.split(",") if c]
    print("\n| case | budget (s) | whole (s) | training (s) | after (s) | reserved (s) "
          "| steps | share | draws | parts after training (s) |\n" + "|---" * 10 + "|")
    for r in rows:
        parts = "; ".join(f"{k} {', '.join(map(str, v))}" for k, v in r["parts"].items() if v)
        print(f"| {r['case']} | {r['budget']:.0f} | {r['whole']:.1f} | {r['training']:.1f} | "
              f"{r['after']:.1f} | {r['reserved']:.1f} | {r['steps']} | {r['share']} | "
              f"{r['draws']} | {parts} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "rows": rows}, f, indent=1)
    return rows


if __name__ == "__main__":
    main()
