"""Data-parallel training with ``torch.distributed``, as launched by ``torchrun``.

gapfill does not schedule processes itself: ``torchrun`` (or ``srun``/``mpirun``
setting the same variables) starts one process per GPU or CPU slot and sets
``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``.
:func:`init_from_env` joins that process group (NCCL on GPUs, gloo on CPUs)
and the trainers then wrap their networks in
:class:`torch.nn.parallel.DistributedDataParallel`: every process draws its own
training windows, gradients are averaged across processes at each step, so the
weights stay identical everywhere, and only rank 0 writes checkpoints, logs and
the saved model.

Without those variables (or with ``WORLD_SIZE=1``) everything here is a no-op
and training runs in one process, exactly as without this module.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import Any

__all__ = ["Context", "context", "init_from_env", "shutdown"]


@dataclass(frozen=True)
class Context:
    """Where this process stands in a data-parallel run.

    Attributes
    ----------
    rank
        This process's index, ``0 .. world_size - 1``.
    world_size
        Number of processes training together (1: not distributed).
    local_rank
        Index of this process on its node (its GPU, on GPU nodes).
    backend
        ``"nccl"``, ``"gloo"`` or ``None`` when not distributed.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def enabled(self) -> bool:
        """Whether more than one process trains together."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Whether this process writes files (rank 0)."""
        return self.rank == 0

    # -- wrapping -------------------------------------------------------------------
    def wrap(self, module: Any, device: Any) -> Any:
        """``module`` in ``DistributedDataParallel`` when distributed, else unchanged."""
        if not self.enabled:
            return module
        from torch.nn.parallel import DistributedDataParallel

        ids = [device.index if device.index is not None else self.local_rank] \
            if device.type == "cuda" else None
        return DistributedDataParallel(module, device_ids=ids)

    # -- collective decisions ---------------------------------------------------------
    def from_main(self, value: Any) -> Any:
        """Rank 0's ``value`` on every rank (any picklable object)."""
        if not self.enabled:
            return value
        import torch.distributed as dist

        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, value: Any) -> list[Any]:
        """Every rank's ``value``, in rank order, on every rank."""
        if not self.enabled:
            return [value]
        import torch.distributed as dist

        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, value)
        return out

    def weights_in_sync(self, module: Any) -> bool:
        """Whether ``module``'s parameters are bit-for-bit equal on every rank."""
        digests = self.gather(weights_digest(module))
        return len(set(digests)) == 1


def weights_digest(module: Any) -> str:
    """SHA-256 of ``module``'s parameters (names and exact bytes), for comparing replicas."""
    h = hashlib.sha256()
    for name, p in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(p.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def context() -> Context:
    """The current process group, or a single-process context if there is none."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return Context()
    return Context(
        rank=dist.get_rank(),
        world_size=dist.get_world_size(),
        local_rank=int(os.environ.get("LOCAL_RANK", 0)),
        backend=str(dist.get_backend()),
    )


def world_size_from_env() -> int:
    """The number of processes ``torchrun`` announced (``WORLD_SIZE``; 1 without it)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def init_from_env(backend: str | None = None) -> Context:
    """Join the process group that ``torchrun`` describes in the environment.

    Parameters
    ----------
    backend
        ``"nccl"`` or ``"gloo"``; default: NCCL when CUDA is available, else gloo.

    Returns
    -------
    Context
        Single-process when ``WORLD_SIZE`` is unset or 1.

    Raises
    ------
    ValueError
        If ``WORLD_SIZE > 1`` but the rendezvous variables are missing.
    """
    import torch
    import torch.distributed as dist

    world = world_size_from_env()
    if world <= 1:
        return Context()
    if dist.is_initialized():
        return context()
    missing = [k for k in ("RANK", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
    if missing:
        raise ValueError(
            f"WORLD_SIZE={world} but {', '.join(missing)} not set: start distributed "
            "training with torchrun, e.g. `torchrun --nproc_per_node=4 -m gapfill train "
            "recipe.yaml`"
        )
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend=backend)
    return context()


def shutdown() -> None:
    """Leave the process group, if this process joined one."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
