"""One readable training loop (nanoGPT style): set lr, forward under autocast, sum losses, backward, clip, step, log.

Used for pre-training and fine-tuning alike; what differs is the dataset and the loss module.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from contextlib import nullcontext

import torch
from torch import nn
from torch.utils.data import DataLoader, RandomSampler

from benchmark.config import TrainConfig
from benchmark.errors import UserError

AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def no_weight_decay(name: str, param: torch.Tensor) -> bool:
    """open_clip's rule: gains, biases, LayerNorms and the logit scale are not decayed."""
    return param.ndim < 2 or "ln" in name or "bias" in name or "logit_scale" in name


def param_groups(model: nn.Module, cfg: TrainConfig) -> list[dict]:
    """Encoders (CLIP and audio tower) at lr·coef_lr with weight decay; new modules at lr without (spec §8)."""
    new = set(model.new_parameters())
    groups: dict[tuple[bool, bool], list[torch.Tensor]] = {}
    for name, param in model.named_parameters():
        if param.requires_grad:
            groups.setdefault((name in new, no_weight_decay(name, param)), []).append(param)
    out = []
    for (is_new, no_decay), params in sorted(groups.items()):
        lr = cfg.lr if is_new else cfg.lr * cfg.coef_lr
        decay = 0.0 if (is_new or no_decay) else cfg.weight_decay
        out.append({"params": params, "lr": lr, "weight_decay": decay})
    return out


def warmup_cosine(total_steps: int, warmup: float) -> Callable[[int], float]:
    """The authors' warmup_cosine (spec §8): linear to 1 over the first `warmup` fraction, then cosine over the
    whole run (not re-based, hence the small drop from 1.0 to 0.976 at the end of a 10% warmup)."""

    def factor(step: int) -> float:
        progress = step / max(total_steps, 1)
        if progress < warmup:
            return progress / warmup
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


def train(
    model: nn.Module,
    loss_fn: nn.Module,
    dataset: torch.utils.data.Dataset,
    cfg: TrainConfig,
    seed: int,
    log: Callable[[dict[str, float], int], None],
    workers: int = 0,
) -> dict[str, float]:
    """Train `model` on `dataset` for cfg.epochs (or cfg.max_steps optimizer steps); returns a summary."""
    device = next(model.parameters()).device
    # The authors divide the batch by the accumulation steps (spec §7.2): the contrastive batch is the
    # micro-batch, the optimizer batch is cfg.batch_size.
    accum = cfg.grad_accum
    micro_batch = cfg.batch_size // accum
    if len(dataset) < micro_batch:
        raise UserError(f"the training set has {len(dataset)} pairs, fewer than one batch of {micro_batch}")
    steps_per_epoch = max(len(dataset) // micro_batch // accum, 1)
    total = cfg.max_steps or steps_per_epoch * cfg.epochs
    optimizer = torch.optim.AdamW(
        param_groups(model, cfg), betas=(0.9, 0.98), eps=1e-6, fused=device.type == "cuda" or None
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(total, cfg.warmup))
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.precision == "fp16")
    autocast = (
        torch.autocast(device.type, dtype=AUTOCAST_DTYPES[cfg.precision])
        if cfg.precision in AUTOCAST_DTYPES
        else nullcontext()
    )
    model.train()
    step, epoch, micro, start = 0, 0, 0, time.perf_counter()
    running: dict[str, float] = {}
    while step < total:
        if hasattr(dataset, "set_epoch"):
            dataset.set_epoch(epoch)
        sampler = RandomSampler(dataset, generator=torch.Generator().manual_seed(seed * 1000 + epoch))
        loader = DataLoader(dataset, batch_size=micro_batch, sampler=sampler, drop_last=True, num_workers=workers)
        for batch in loader:
            batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
            with autocast:
                terms = loss_fn(model(batch))
            loss = sum(v for k, v in terms.items() if k.endswith("_loss"))
            scaler.scale(loss / accum).backward()
            for key, value in terms.items():
                running[key] = running.get(key, 0.0) + value.item() / accum
            micro += 1
            if micro % accum:
                continue
            scaler.unscale_(optimizer)
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            scheduler.step()
            step += 1
            if step % cfg.log_every == 0 or step == total:
                metrics = {f"train/{k}": v for k, v in running.items()}
                metrics["train/loss"] = sum(v for k, v in running.items() if k.endswith("_loss"))
                metrics["train/grad_norm"] = float(grad_norm)
                metrics["train/lr"] = cfg.lr * scheduler.lr_lambdas[0](step)
                log(metrics, step)
            last = running
            running = {}
            if step >= total:
                break
        epoch += 1
    seconds = time.perf_counter() - start
    summary = {f"final/{k}": v for k, v in last.items()}
    summary.update({"steps": step, "seconds": seconds, "samples_per_second": step * cfg.batch_size / seconds})
    return summary
