"""One code path for a plain process and for ``torchrun`` (DistributedDataParallel).

torchrun sets RANK, WORLD_SIZE and LOCAL_RANK; without them everything runs as rank 0 of 1.
NCCL is used on GPUs, gloo on CPUs.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Sequence

import torch
import torch.distributed as dist

from gramcast.device import device_option


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str = "auto") -> DistInfo:
    """Join the process group when launched by torchrun; pick this rank's device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = device_option(device)
    if dev.type == "cuda":
        dev = torch.device("cuda", local % max(torch.cuda.device_count(), 1))
        torch.cuda.set_device(dev)
        # a run's shapes are fixed: cuDNN times its convolution algorithms once per shape and keeps the
        # fastest, instead of its heuristic pick (bench/train_step.py's cudnn_benchmark=false compares)
        torch.backends.cudnn.benchmark = True
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo", rank=rank, world_size=world)
    return DistInfo(rank, world, local, dev)


def shutdown_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def all_reduce_mean(value: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Mean of a tensor over ranks (for logging; gradients are reduced by DDP)."""
    if not info.distributed:
        return value
    value = value.detach().clone()
    dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value / info.world_size


def barrier(info: DistInfo) -> None:
    if info.distributed:
        dist.barrier()


def parameter_spread(modules, info: DistInfo) -> float:
    """Largest difference between ranks of any parameter tensor's sum (0.0 when in sync).

    DDP keeps replicas identical; this makes that checkable (and catches a desynchronised run).
    """
    params = [p for m in modules for p in m.parameters()]
    if not info.distributed or not params:
        return 0.0
    sums = torch.stack([p.detach().double().sum() for p in params]).to(info.device)
    gathered = [torch.empty_like(sums) for _ in range(info.world_size)]
    dist.all_gather(gathered, sums)
    stacked = torch.stack(gathered)
    return float((stacked.max(0).values - stacked.min(0).values).max())


def wrap_ddp(module: torch.nn.Module, info: DistInfo, **kwargs) -> torch.nn.Module:
    """``module`` inside DistributedDataParallel on this rank's device when the run is distributed,
    else ``module`` itself. ``kwargs`` go to DDP (e.g. ``find_unused_parameters``)."""
    if not info.distributed:
        return module
    from torch.nn.parallel import DistributedDataParallel as DDP

    return DDP(module, device_ids=[info.device.index] if info.device.type == "cuda" else None, **kwargs)


def reduce_scalars(scalars: dict, info: DistInfo, modules=()) -> dict[str, float]:
    """A step's scalars (tensors or numbers) averaged over ranks, as floats; with several ranks also
    ``dist/param_spread`` of ``modules`` (0.0 while the replicas are in sync)."""
    # one vector, so one all-reduce and one read back to the host per step, whatever the number of scalars
    keys = list(scalars)
    # float64 from the start: a Python float (a learning rate) comes back exactly
    values = torch.stack([torch.as_tensor(scalars[k], dtype=torch.float64).detach().to(info.device).reshape(())
                          for k in keys]) if keys else torch.zeros(0, dtype=torch.float64)
    out = dict(zip(keys, all_reduce_mean(values, info).tolist()))
    if info.distributed:
        out["dist/param_spread"] = parameter_spread(modules, info)
    return out


@dataclass
class StepScalars:
    """A training step's scalars, left where they were computed until the trainer reads them.

    Reading a GPU tensor waits for the GPU to finish everything queued, so a step that returned
    floats would stop the host from queueing the next step's kernels while this one's run; the
    trainer calls ``reduce()`` only on the steps it logs (on every rank: it is a collective).
    ``main_only`` holds figures rank 0 computed alone (evaluations), passed through as they are.
    """

    values: dict[str, torch.Tensor | float]
    info: DistInfo
    modules: Sequence[torch.nn.Module] = ()
    main_only: dict[str, float] = field(default_factory=dict)

    def __post_init__(self):
        # detached, so a kept result does not hold on to the step's autograd graph
        self.values = {k: v.detach() if isinstance(v, torch.Tensor) else v for k, v in self.values.items()}

    def reduce(self) -> dict[str, float]:
        """The values averaged over ranks (``reduce_scalars``), then ``main_only``."""
        return {**reduce_scalars(self.values, self.info, self.modules), **self.main_only}
