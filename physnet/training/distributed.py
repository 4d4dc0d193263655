"""Data-parallel training under ``torchrun``: process group, rank queries and reductions.

physnet does not launch processes itself. ``torchrun`` (``python -m torch.distributed.run``)
starts one process per device and sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR`` and ``MASTER_PORT``; :func:`init_distributed` reads them and joins the
process group (``nccl`` for CUDA devices, ``gloo`` on the CPU). Without those variables
everything here degrades to a single process: rank 0 of a world of size 1, reductions are
identities and :func:`is_main_process` is true.

Examples
--------
>>> from physnet.training.distributed import init_distributed
>>> context = init_distributed("cpu")  # not under torchrun: a world of one process
>>> context.rank, context.world_size, context.is_main
(0, 1, True)
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

__all__ = [
    "DistributedContext",
    "all_reduce_max",
    "all_reduce_sum",
    "barrier",
    "init_distributed",
    "is_main_process",
    "launched_by_torchrun",
]


@dataclass(frozen=True)
class DistributedContext:
    """Where this process stands in a data-parallel run.

    Attributes
    ----------
    rank, world_size, local_rank : int
        Global rank, number of processes, rank on this machine.
    backend : str or None
        ``"gloo"`` or ``"nccl"``; ``None`` in a single process.
    owns_process_group : bool
        Whether :func:`init_distributed` created the process group (and so
        :meth:`shutdown` destroys it); a group the caller set up is left alone.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None
    owns_process_group: bool = False

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shutdown(self) -> None:
        """Destroy the process group if this context created it."""
        if self.owns_process_group and dist.is_initialized():
            dist.destroy_process_group()


def launched_by_torchrun() -> bool:
    """Whether the environment describes a multi-process run (``WORLD_SIZE`` > 1)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_distributed(device: str | torch.device) -> DistributedContext:
    """Join the process group ``torchrun`` describes, or describe a single process.

    Parameters
    ----------
    device : str or torch.device
        The device this process trains on; ``cuda`` selects the ``nccl`` backend (and the
        process's CUDA device becomes ``cuda:LOCAL_RANK``), anything else ``gloo``.

    Returns
    -------
    DistributedContext

    Raises
    ------
    RuntimeError
        If ``WORLD_SIZE`` > 1 but ``RANK`` or ``MASTER_ADDR``/``MASTER_PORT`` are missing
        (the process was not started by ``torchrun``).
    """
    if dist.is_available() and dist.is_initialized():
        return DistributedContext(
            rank=dist.get_rank(),
            world_size=dist.get_world_size(),
            local_rank=int(os.environ.get("LOCAL_RANK", "0")),
            backend=str(dist.get_backend()),
        )
    if not launched_by_torchrun():
        return DistributedContext()
    missing = [name for name in ("RANK", "MASTER_ADDR", "MASTER_PORT") if name not in os.environ]
    if missing:
        raise RuntimeError(
            f"WORLD_SIZE={os.environ['WORLD_SIZE']} but {', '.join(missing)} not set: "
            "start multi-process training with torchrun (python -m torch.distributed.run)"
        )
    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    backend = "nccl" if torch.device(device).type == "cuda" else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend=backend)
    return DistributedContext(
        rank=dist.get_rank(),
        world_size=dist.get_world_size(),
        local_rank=local_rank,
        backend=backend,
        owns_process_group=True,
    )


def is_main_process() -> bool:
    """True on rank 0, and in any process outside a process group."""
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over all ranks, in place (a no-op outside a process group)."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def barrier() -> None:
    """Wait for every rank (a no-op outside a process group)."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def all_reduce_max(tensor: torch.Tensor) -> torch.Tensor:
    """Maximum of ``tensor`` over all ranks, in place (a no-op outside a process group)."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return tensor
