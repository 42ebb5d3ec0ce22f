"""Start and stop the dask cluster a recipe's ``compute`` section asks for.

>>> with session(recipe.compute) as client:          # doctest: +SKIP
...     pipeline.run(recipe, start_cluster=False)

``local`` starts a :class:`distributed.LocalCluster`; ``slurm``/``pbs`` a
dask-jobqueue cluster whose keys are the recipe's, passed straight through,
scaled to ``n_jobs`` jobs; ``address`` connects to a running scheduler;
``threads``/``none`` use dask's threaded scheduler without a cluster. The
cluster is closed when the block ends, also on errors and interrupts.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gapfill.recipe import ComputeConfig

__all__ = ["job_script", "make_cluster", "session"]

log = logging.getLogger("gapfill")

_JOBQUEUE = {"slurm": "SLURMCluster", "pbs": "PBSCluster"}


def _jobqueue_class(kind: str) -> Any:
    from gapfill.extras import require

    dask_jobqueue = require("dask_jobqueue", f"compute.kind {kind!r}")
    return getattr(dask_jobqueue, _JOBQUEUE[kind])


def make_cluster(cfg: ComputeConfig) -> Any:
    """The cluster object for ``local``/``slurm``/``pbs`` (not scaled, no client yet)."""
    options = cfg.cluster_options()
    if cfg.kind == "local":
        from distributed import LocalCluster

        options.setdefault("dashboard_address", ":0")  # any free port: runs may share a host
        options.setdefault("processes", False)  # threads: numpy releases the GIL, no transfers
        return LocalCluster(**options)
    if cfg.kind in _JOBQUEUE:
        return _jobqueue_class(cfg.kind)(**options)
    raise ValueError(f"compute kind {cfg.kind!r} has no cluster")


def job_script(cfg: ComputeConfig) -> str:
    """The batch script a ``slurm``/``pbs`` recipe submits for each job (nothing is submitted).

    Raises
    ------
    ValueError
        For kinds that submit no job.
    """
    if cfg.kind not in _JOBQUEUE:
        raise ValueError(f"compute kind {cfg.kind!r} submits no batch job")
    cluster = make_cluster(cfg)
    try:
        return cluster.job_script()
    finally:
        cluster.close()


def describe(cfg: ComputeConfig) -> str:
    """One line saying where the computations run."""
    if cfg.kind == "address":
        return f"dask scheduler at {cfg.address}"
    if cfg.kind in ("threads", "none"):
        n = f", {cfg.n_workers} threads" if cfg.n_workers else ""
        return f"dask threaded scheduler (no cluster{n})"
    opts = ", ".join(f"{k}={v}" for k, v in cfg.cluster_options().items())
    jobs = f", {cfg.n_jobs} job(s)" if cfg.kind in _JOBQUEUE else ""
    return f"{cfg.kind} dask cluster ({opts or 'defaults'}{jobs})"


@contextmanager
def session(cfg: ComputeConfig) -> Iterator[Any]:
    """Run the block on the configured scheduler; yields the ``distributed.Client`` or ``None``."""
    import dask

    if cfg.kind in ("threads", "none"):
        settings: dict[str, Any] = {"scheduler": "threads"}
        if cfg.n_workers:
            settings["num_workers"] = cfg.n_workers
        log.info("compute: %s", describe(cfg))
        with dask.config.set(settings):
            yield None
        return

    from distributed import Client

    if cfg.kind == "address":
        client = Client(cfg.address)
        log.info("compute: %s (dashboard %s)", describe(cfg), client.dashboard_link)
        try:
            yield client
        finally:
            client.close()
        return

    cluster = make_cluster(cfg)
    client = None
    try:
        if cfg.kind in _JOBQUEUE:
            cluster.scale(jobs=cfg.n_jobs)
        client = Client(cluster)
        log.info("compute: %s", describe(cfg))
        log.info("dask dashboard: %s", client.dashboard_link)
        yield client
    finally:
        if client is not None:
            client.close()
        cluster.close()
