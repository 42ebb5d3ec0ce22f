"""Seconds of one ``"regem"`` guide on one core, against :func:`gapfill.guides.regem_seconds`.

For each cube (``pacific``, ``hgt``, ``a1b`` of :func:`gan_benchmark.load_case`, seed 0),
as given and with ``--extra`` shares more of its values hidden at random (a fit through
``da.gapfill.fit`` hides some), one guide (:class:`gapfill.guides.Guide`, EM ridge and fill
ridge 1e-4) is built and timed at each E-step count of
:data:`gapfill.guides.REGEM_STEPS`, with one BLAS thread and nothing else running: guides
timed side by side on a 2-core machine take several times longer. Each row prints the
seconds, the estimate and the terms of its cost model; the last lines give the
coefficients of :data:`gapfill.guides.REGEM_COSTS` fitted to the rows by least squares of
the relative error, and the largest relative error of the estimate.

Run::

    python benchmarks/regem_guide_cost.py                  # ~12 min, A1B most of it
    python benchmarks/regem_guide_cost.py --cases pacific,hgt
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from gan_benchmark import load_case
from threadpoolctl import threadpool_limits

from gapfill.cube import Cube
from gapfill.guides import REGEM_STEPS, Guide, eof_guide, regem_seconds


def terms(x: np.ndarray, steps: int) -> list[float]:
    """The cost model's terms of a guide of ``x``: ``(steps + 1)`` times ``n³``, ``Σ g³``,
    ``Σ g²`` and ``T`` (see :func:`gapfill.guides.regem_seconds`)."""
    seen = np.isfinite(x).reshape(x.shape[0], x.shape[1], -1)
    fitted = seen.any(1)
    n = float(fitted.sum())
    gaps = (~seen & fitted[:, None]).sum((0, 2)).astype(np.float64)
    return [(steps + 1) * v for v in (n**3, (gaps**3).sum(), (gaps**2).sum(), len(gaps))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", default="pacific,hgt,a1b")
    parser.add_argument("--extra", default="0,0.15,0.3",
                        help="shares of the values hidden at random besides the cube's gaps")
    args = parser.parse_args()
    rows, seconds = [], []
    print("case   extra  steps  seconds  estimate")
    with threadpool_limits(1):
        for case in args.cases.split(","):
            _, gappy, _, _ = load_case(case, 0)
            cube = Cube(gappy)
            x, coords = cube.values(), cube.coords()
            _, modes = eof_guide(x)
            grid = [[float(v) for v in coords.y], [float(v) for v in coords.x]]
            rng = np.random.default_rng(0)
            for extra in (float(v) for v in args.extra.split(",")):
                xx = np.where(rng.random(x.shape) < extra, np.nan, x)
                for steps in REGEM_STEPS:
                    guide = Guide("regem", modes=modes, fill_ridge=1e-4, em_ridge=1e-4,
                                  steps=steps, grid=grid)
                    started = time.perf_counter()
                    guide.make(xx)
                    took = time.perf_counter() - started
                    rows.append(terms(xx, steps))
                    seconds.append(took)
                    print(f"{case:7s}{extra:5.2f}{steps:7d}{took:9.2f}"
                          f"{regem_seconds(xx, steps):10.2f}", flush=True)
    a, y = np.asarray(rows), np.asarray(seconds)
    coef, *_ = np.linalg.lstsq(a / y[:, None], np.ones(len(y)), rcond=None)
    print("fitted REGEM_COSTS (n³, Σg³, Σg², T per E-step):",
          ", ".join(f"{v:.3g}" for v in coef))
    print(f"largest relative error: fitted {np.max(np.abs(a @ coef / y - 1)):.2f}")


if __name__ == "__main__":
    main()
