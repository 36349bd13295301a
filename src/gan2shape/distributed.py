"""Running a command on several processes or machines with torchrun (torch.distributed).

A command started by ``torchrun`` finds ``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK`` in its
environment (:func:`from_environment`). Each process takes one GPU, ``cuda:<LOCAL_RANK>``
(:func:`process_device`). Commands over many images split the images between the processes
and need nothing more (:meth:`Group.shard`); training joins the process group (:func:`joined`:
NCCL on GPUs, Gloo on CPUs) and averages gradients: with DistributedDataParallel in
``train-gan``, with :meth:`Group.average_gradients` in joint pre-training. Started
without torchrun, a command is a group of one and nothing here talks to anyone.

    torchrun --nproc_per_node 4 -m gan2shape reconstruct ...        # one machine, 4 GPUs
    torchrun --nnodes 2 --node_rank R --master_addr HOST --nproc_per_node 4 -m gan2shape ...
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from .errors import UserError

T = TypeVar("T")


@dataclass(frozen=True)
class Group:
    """This process's place among the processes of one run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """The process that writes shared files and prints summaries."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def shard(self, items: Sequence[T]) -> list[T]:
        """This process's share of ``items``: every world_size-th item from its rank, so the
        shares differ in length by at most one and together hold every item once."""
        return list(items[self.rank::self.world_size])

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def gather(self, value: Any) -> list[Any]:
        """Every process's ``value`` (picklable), in rank order, on every process."""
        if not self.distributed:
            return [value]
        values: list[Any] = [None] * self.world_size
        dist.all_gather_object(values, value)
        return values

    def any(self, flag: bool, device: torch.device | str = "cpu") -> bool:
        """True on every process when ``flag`` is true on any of them."""
        if not self.distributed:
            return flag
        t = torch.tensor([float(flag)], device=device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())

    def broadcast(self, value: Any) -> Any:
        """Process 0's ``value`` (picklable) on every process."""
        if not self.distributed:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def broadcast_modules(self, modules: Iterable[torch.nn.Module]) -> None:
        """Overwrite every process's parameters and buffers with process 0's."""
        if not self.distributed:
            return
        with torch.no_grad():
            for module in modules:
                for tensor in (*module.parameters(), *module.buffers()):
                    dist.broadcast(tensor, src=0)

    def average_gradients(self, parameters: Sequence[torch.nn.Parameter]) -> None:
        """Replace each parameter's gradient by its mean over the processes, in one
        all-reduce of the flattened gradients. A missing gradient counts as zero (the
        processes train the same parameters, so this only happens to unused ones)."""
        if not self.distributed:
            return
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in parameters]
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        flat /= self.world_size
        for p, mean in zip(parameters, flat.split([p.numel() for p in parameters]),
                           strict=True):
            p.grad = mean.view_as(p)


SINGLE = Group()  # a run of one process


def from_environment() -> Group:
    """The group torchrun describes in the environment (a group of one without it)."""
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", "0"))
    except ValueError as exc:
        raise UserError(f"bad torchrun environment (WORLD_SIZE/RANK/LOCAL_RANK): {exc}") from exc
    if world < 1 or not 0 <= rank < world or local < 0:
        raise UserError(f"bad torchrun environment: RANK {rank}, WORLD_SIZE {world}, "
                        f"LOCAL_RANK {local}")
    return Group(rank, world, local)


def process_device(group: Group, device: torch.device) -> torch.device:
    """The device of this process: ``cuda:<local rank>`` when the run is on CUDA and
    distributed (one GPU per process), else ``device`` as chosen."""
    if device.type != "cuda" or not group.distributed or device.index is not None:
        return device
    if group.local_rank >= torch.cuda.device_count():
        raise UserError(f"process {group.local_rank} on this machine has no GPU: "
                        f"{torch.cuda.device_count()} visible; start fewer processes per node")
    return torch.device("cuda", group.local_rank)


@contextlib.contextmanager
def joined(group: Group, device: torch.device) -> Iterator[None]:
    """Member of the torchrun process group for the life of the block (NCCL when
    ``device`` is CUDA, Gloo otherwise); a group of one joins nothing."""
    if not group.distributed:
        yield
        return
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo",
                            rank=group.rank, world_size=group.world_size,
                            device_id=device if device.type == "cuda" else None)
    try:
        yield
    finally:
        dist.destroy_process_group()
