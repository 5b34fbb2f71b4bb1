"""torchrun support: process-group setup (NCCL on GPUs, gloo on CPU), DDP wrapping and gathers.

Everything degrades to a no-op in a single process, so the training loop has one code path.
"""

from __future__ import annotations

import os
from contextlib import nullcontext
from typing import Any

import torch
import torch.distributed as dist
from torch import nn


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def setup(device: torch.device, even_alone: bool = False) -> torch.device:
    """Join the process group torchrun describes (WORLD_SIZE > 1, or any size `even_alone`: the GPU check's
    1-process NCCL step); returns this rank's device."""
    if (int(os.environ.get("WORLD_SIZE", "1")) <= 1 and not even_alone) or is_distributed():
        return device
    if device.type == "cuda":
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        dist.init_process_group("nccl")
        return torch.device("cuda", local)
    dist.init_process_group("gloo")
    return device


def wrap(model: nn.Module) -> nn.Module:
    """DDP around `model` when distributed. Unused parameters exist (e.g. the image tower in audio-only tasks)."""
    if not is_distributed():
        return model
    device = next(model.parameters()).device
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids, find_unused_parameters=True)


def no_sync(net: nn.Module):
    """Skip the gradient all-reduce on accumulation micro-batches."""
    return net.no_sync() if isinstance(net, nn.parallel.DistributedDataParallel) else nullcontext()


def all_gather(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate every rank's tensor along dim 0, in rank order, keeping gradients for the local slice."""
    if not is_distributed():
        return tensor
    from torch.distributed.nn.functional import all_gather as gather_with_grad

    return torch.cat(gather_with_grad(tensor.contiguous()), dim=0)


def gather_objects(obj: Any) -> list[Any]:
    """[obj of rank 0, obj of rank 1, ...] on every rank."""
    if not is_distributed():
        return [obj]
    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def barrier() -> None:
    """Wait for every rank (no-op in one process)."""
    if is_distributed():
        dist.barrier()
