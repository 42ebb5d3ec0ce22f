"""``combcn`` and ``tgfnet`` with each guide: the plain methods of the papers and the guided ones.

Runs the ``ostia`` and ``video`` benchmarks of :mod:`method_scores` (same data,
gaps, scores and per-method options) once per ``guide`` value, so the
contribution of the network can be told from that of its first guess.
``guide="none"`` is the plain architecture of each paper.

Usage::

    python benchmarks/guide_ablation.py                                   # ~25 min on 2 cores
    python benchmarks/guide_ablation.py --guides none --benchmarks video --methods tgfnet
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import copy
import json
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import method_scores as i6  # noqa: E402


def main(argv: list[str] | None = None) -> dict:
    """Print one markdown table per benchmark with a row per (method, guide)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--methods", default="combcn,tgfnet")
    p.add_argument("--guides", default="none,linear,eof")
    p.add_argument("--benchmarks", default="ostia,video")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="also write the rows to this JSON file")
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    base = copy.deepcopy(i6.METHODS)
    results: dict[str, list] = {}
    for bench in args.benchmarks.split(","):
        fn, title, columns = i6.TABLES[bench]
        rows = []
        for guide in args.guides.split(","):
            for m in args.methods.split(","):
                conf = copy.deepcopy(base[m])
                conf[bench] = {**conf.get(bench, {}), "guide": guide}
                i6.METHODS[m] = conf
                for r in fn([m], args.quick, args.seed):
                    rows.append({**r, "method": f"{m} (guide={guide})"})
        i6.METHODS.update(copy.deepcopy(base))
        results[bench] = rows
        print(f"\n### {title}\n")
        print(i6.markdown(rows, [c for c in columns if any(c[0] in r for r in rows)]))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2, default=str)
    return results


if __name__ == "__main__":
    main()
