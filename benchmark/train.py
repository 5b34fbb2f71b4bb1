"""One readable training loop (nanoGPT style): set lr, forward under autocast, sum losses, backward, clip, step,
log, checkpoint. Used for pre-training and fine-tuning alike; what differs is the dataset and the loss module.

Under `torchrun` each rank encodes its slice of every global batch and the features are all-gathered with
gradients (torch.distributed.nn), so the contrastive batch is the global batch and the result equals the
1-process run with the same global batch (tests/test_distributed.py). Checkpoints hold everything needed to
continue exactly: model, optimizer, scheduler, scaler, RNG states and the data position.
"""

from __future__ import annotations

import dataclasses
import datetime
import gc
import math
import random
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from benchmark import distributed
from benchmark.checkpoint import Checkpointer
from benchmark.config import TrainConfig
from benchmark.data import Batches, EpochItems, EpochReads, epoch_indices
from benchmark.errors import UserError

AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def autocast_for(device: torch.device, precision: str):
    """The numerics switch `precision` as a context (fp32: none): training and evaluation run under the same."""
    return torch.autocast(device.type, dtype=AUTOCAST_DTYPES[precision]) if precision in AUTOCAST_DTYPES \
        else nullcontext()
GATHERED = ("text", "video", "audio", "audio_aug", "fused", "audio_mask")


def no_weight_decay(name: str, param: torch.Tensor, rule: str) -> bool:
    """`clean`: open_clip's rule (gains, biases, LayerNorms and the logit scale are not decayed). `released`:
    the authors' name test for 'bias' / 'LayerNorm', which CLIP's `ln_*` never match (spec §8)."""
    if rule == "released":
        return "bias" in name or "LayerNorm" in name
    return param.ndim < 2 or "ln" in name or "bias" in name or "logit_scale" in name


def is_encoder(name: str, rule: str, cross: bool) -> bool:
    """Trains at lr·coef_lr. `clean`: CLIP and the audio tower. `released`: the "clip." parameters, plus the
    audio tower only when the cross transformer exists (prep_optimizer_clip vs _s2, spec §8, §12 item 23)."""
    if rule == "released" and not cross:
        return name.startswith("clip.")
    return name.startswith(("clip.", "audio.visual."))


def param_groups(model: nn.Module, cfg: TrainConfig, objective: str = "retrieval") -> list[dict]:
    """Encoders at lr·coef_lr with weight decay; new modules at lr without (spec §8). Which groups the authors
    used depends on whether the objective runs the cross transformer (never in pre-training)."""
    rule = cfg.param_groups or "clean"
    cross = model.uses_cross(objective)
    groups: dict[tuple[bool, bool], list[torch.Tensor]] = {}
    for name, param in model.named_parameters():
        if param.requires_grad:
            key = (not is_encoder(name, rule, cross), no_weight_decay(name, param, rule))
            groups.setdefault(key, []).append(param)
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


@dataclass
class Position:
    """Where training stands: optimizer steps done, and the epoch and micro-batch to read next."""

    step: int = 0
    epoch: int = 0
    micro: int = 0  # micro-batches of `epoch` already consumed
    skipped: int = 0  # steps whose loss was non-finite, skipped under `skip_nonfinite`


def rng_state() -> dict:
    """Every RNG this process uses, in types that torch.load(weights_only=True) accepts."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": random.getstate(),
             "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                       "has_gauss": int(has_gauss), "gauss": float(gauss)}}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def adamw(groups: list[dict]) -> torch.optim.AdamW:
    """The optimizer of every training stage: AdamW with CLIP's betas and eps (spec §8), fused (one kernel for
    all parameters) on CUDA and on the CPU alike: the same algorithm, equal to the unfused update to float
    rounding (tested), and on the CPU 14x faster here than the foreach loop for 80 M parameters in 20 tensors
    (0.67 -> 0.05 s a step; issue 16 reports 4-6x for ViT-B/32). A checkpoint saved by an unfused optimizer
    resumes unfused (its saved `fused` setting comes back with its state): the resumed run stays exact."""
    return torch.optim.AdamW(groups, betas=(0.9, 0.98), eps=1e-6, fused=True)


def progress_line(metrics: dict[str, float], step: int, total: int, epoch: int, rate: float, left: float) -> str:
    """One log step of training, readable without a terminal (a line, not a bar): step of total, epoch, lr, the
    loss and each of its terms, the similarity scale, the rate since the last line and the time left (`epoch`
    counted from 1), e.g.
    "step 40/400 (epoch 1): lr 1.0e-04, loss 5.912 (tv_loss 2.955, ta_loss 2.957), logit scale 14.3,
    51 samples/s, ETA 0:01:30"."""
    terms = ", ".join(f"{k[len('train/'):]} {v:.3f}" for k, v in metrics.items() if k.endswith("_loss"))
    return (f"step {step}/{total} (epoch {epoch}): lr {metrics['train/lr']:.1e}, loss {metrics['train/loss']:.3f}"
            f" ({terms}), logit scale {metrics['train/logit_scale']:.1f}, "
            f"{rate:.3g} samples/s, ETA {datetime.timedelta(seconds=round(left))}")


def train(
    model: nn.Module,
    loss_fn: nn.Module,
    dataset: torch.utils.data.Dataset,
    cfg: TrainConfig,
    seed: int,
    log: Callable[[dict[str, float], int], None],
    workers: int = 0,
    checkpoints: Checkpointer | None = None,
    resume: bool = False,
    select: Callable[[], float] | None = None,
    batches: Batches | None = None,
    say: Callable[[str], None] | None = None,
) -> dict[str, float]:
    """Train `model` on `dataset` for cfg.epochs (or cfg.max_steps optimizer steps); returns a summary.

    With `checkpoints`, a checkpoint is written every cfg.checkpoint_every steps and at the end; with `resume`,
    training continues from the newest one exactly where it stopped. With `select` (higher is better), the
    model is scored every cfg.eval_every steps and at the end, and the best checkpoint is restored at the end.
    `batches` makes the dataset's items model inputs (ClipBatches for ClipTensors items; by default they are).
    `say` gets a progress line at every log step (`progress_line`).
    """
    if select is not None and checkpoints is None:
        raise ValueError("model selection keeps the best checkpoint: pass `checkpoints`")
    device = next(model.parameters()).device
    world, rank = distributed.world_size(), distributed.rank()
    # The authors divide the batch by the accumulation steps (spec §7.2): the contrastive batch is the
    # micro-batch, the optimizer batch is cfg.batch_size. Each rank reads 1/world of every micro-batch.
    accum = cfg.grad_accum  # divides batch_size (checked when the config is built)
    micro_batch = cfg.batch_size // accum
    if micro_batch % world:
        raise UserError(f"batch_size / grad_accum = {micro_batch} is not divisible by the {world} processes")
    per_rank = micro_batch // world
    micro_per_epoch = len(dataset) // micro_batch
    steps_per_epoch = micro_per_epoch // accum
    if steps_per_epoch == 0:
        raise UserError(f"the training set has {len(dataset)} pairs, fewer than one optimizer step reads "
                        f"(grad_accum {accum} x micro-batch {micro_batch} = batch_size {cfg.batch_size})")
    # Every optimizer step consumes exactly `accum` micro-batches: the micro_per_epoch % accum left over at the
    # end of an epoch are not read (drop_last at the step level), so no gradient spills into the next epoch.
    micro_used = steps_per_epoch * accum
    total = cfg.max_steps or steps_per_epoch * cfg.epochs
    objective = loss_fn.objective
    model.set_grad_checkpointing(cfg.grad_checkpointing)
    net = distributed.wrap(model)
    optimizer = adamw(param_groups(model, cfg, objective))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(total, cfg.warmup))
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.precision == "fp16")
    autocast = autocast_for(device, cfg.precision)
    at = Position()
    if checkpoints is not None and not resume:
        checkpoints.refuse_earlier_run()
    state = checkpoints.resume_state(device) if resume and checkpoints is not None else None
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        set_rng_state(state["rng"][min(rank, len(state["rng"]) - 1)])
        at = Position(**state["position"])
    else:
        torch.manual_seed(seed + rank)  # deterministic per rank (dropout); the data order is shared

    def save(position: Position, score: float | None = None) -> None:
        states = distributed.gather_objects(rng_state())
        if checkpoints is not None and rank == 0:
            checkpoints.save(position.step, {
                "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(), "rng": states,
                "position": vars(position),
            }, score=score)
        distributed.barrier()

    def selected(position: Position) -> float | None:
        """Score the model for selection when it is due (the RNG state is kept: scoring must not change it)."""
        if select is None or not (position.step % cfg.eval_every == 0 or position.step >= total):
            return None
        state = rng_state()
        score = select()
        set_rng_state(state)
        log({"select/score": score}, position.step)
        return score

    if workers:
        # what exists now (the clips, the captions) leaves the collector's reach until training ends: its passes
        # would write to every object and copy a million clips' pages into each forked worker (copy-on-write);
        # collected first, so no garbage is frozen with it
        gc.collect()
        gc.freeze()
    reads = EpochReads()  # this rank's (epoch, index) keys, replaced before each epoch
    # one loader for the whole training: its workers persist across epochs (EpochItems gives each item its epoch);
    # a private generator, so that creating it draws nothing from the global RNG (exact resume); pinned memory, so
    # the non-blocking copies overlap compute
    batches = batches or Batches()
    loader = DataLoader(EpochItems(dataset), batch_size=per_rank, sampler=reads, drop_last=True,
                        collate_fn=batches.collate,
                        num_workers=workers, persistent_workers=workers > 0,
                        generator=torch.Generator().manual_seed(seed), pin_memory=device.type == "cuda")
    model.train()
    start, running, last, step_broken = time.perf_counter(), {}, {}, False
    first = logged = (start, at.step)  # when this process began and last logged: rates are over steps since
    step_terms: list[tuple[list[str], torch.Tensor]] = []  # each micro-batch's terms this step, still on the device
    while at.step < total:
        order = epoch_indices(len(dataset), seed, at.epoch)[: micro_used * micro_batch]
        reads.keys = [(at.epoch, i) for b in range(at.micro, micro_used)
                      for i in order[b * micro_batch + rank * per_rank : b * micro_batch + (rank + 1) * per_rank]]
        for batch in loader:
            batch = batches.to_device(batch, device)
            sync = (at.micro + 1) % accum == 0
            with autocast, (nullcontext() if sync else distributed.no_sync(net)):
                out = net(batch, objective=objective)
                out = {k: distributed.all_gather(v) if k in GATHERED else v for k, v in out.items()}
                terms = loss_fn(out)
            loss = sum(v for k, v in terms.items() if k.endswith("_loss"))
            # all_gather's backward sums every rank's gradient into the local slice and DDP then averages over
            # ranks, so the update is exactly d(global loss)/dθ (the authors' op gives 1/world of it, spec §8)
            scaler.scale(loss / accum).backward()
            step_terms.append((list(terms), torch.stack([value.detach().float() for value in terms.values()])))
            at.micro += 1
            if not sync:
                continue
            # the step's one read-back from the device (none per term or micro-batch): the guard needs it. The
            # terms may differ between micro-batches (an audio term needs two clips with audio in its batch).
            flat = iter(torch.cat([values for _, values in step_terms]).tolist())
            for micro, (names, _) in enumerate(step_terms, start=1):
                row = [next(flat) for _ in names]
                broken = {key: v for key, v in zip(names, row, strict=True) if not math.isfinite(v)}
                if broken and not cfg.skip_nonfinite:
                    raise UserError(f"non-finite loss at step {at.step + 1} (epoch {at.epoch}, micro-batch "
                                    f"{micro} of {accum}): " + ", ".join(f"{k} = {v}" for k, v in broken.items())
                                    + "; training stopped (skip such steps with <stage>.skip_nonfinite=true)")
                step_broken = step_broken or bool(broken)
                for key, value in zip(names, row, strict=True):
                    running[key] = running.get(key, 0.0) + value / accum
            step_terms = []
            if step_broken:  # skip_nonfinite: no update from this step's gradients; the step is counted
                optimizer.zero_grad(set_to_none=True)
                scheduler.step()
                at.step, at.skipped, step_broken, running = at.step + 1, at.skipped + 1, False, {}
                if at.step >= total:
                    break
                continue
            scaler.unscale_(optimizer)
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            scheduler.step()
            model.clamp_logit_scale()  # the scale's cap is applied here, never in the forward pass (spec §2.4)
            at.step += 1
            if rank == 0 and (at.step % cfg.log_every == 0 or at.step == total):
                metrics = {f"train/{k}": v for k, v in running.items()}
                metrics["train/loss"] = sum(v for k, v in running.items() if k.endswith("_loss"))
                metrics["train/grad_norm"] = float(grad_norm)
                metrics["train/lr"] = cfg.lr * scheduler.lr_lambdas[0](at.step)
                metrics["train/logit_scale"] = float(model.scale().detach())
                metrics["train/skipped_steps"] = float(at.skipped)
                log(metrics, at.step)
                now = time.perf_counter()  # a rate, not a metric: equal runs log equal metrics (exact resume)
                rate = (at.step - logged[1]) * cfg.batch_size / max(now - logged[0], 1e-9)
                left = (now - start) / max(at.step - first[1], 1) * (total - at.step)  # at this process's rate
                if say is not None:
                    say(progress_line(metrics, at.step, total, at.epoch + 1, rate, left))
                logged = (now, at.step)
            last, running = running, {}
            if at.step >= total:
                break
            score = selected(at)
            if score is not None or (cfg.checkpoint_every and at.step % cfg.checkpoint_every == 0):
                save(dataclasses.replace(at), score)  # a snapshot: `at` moves on, the skip count with it
        else:
            at.epoch, at.micro = at.epoch + 1, 0
            continue
        break
    del loader  # its workers end here, not after the final selection and the best checkpoint's load
    gc.unfreeze()
    save(at, selected(at))
    if select is not None and checkpoints is not None:
        best = checkpoints.best() if rank == 0 else None
        best = distributed.gather_objects(best)[0]
        model.load_state_dict(checkpoints.load(best, map_location=device)["model"])
    seconds = time.perf_counter() - start
    summary = {f"final/{k}": v for k, v in last.items()}
    summary.update({"steps": at.step, "skipped_steps": at.skipped, "seconds": seconds,
                    "samples_per_second": at.step * cfg.batch_size / max(seconds, 1e-9)})
    return summary


def checkpoint_dir(out: Path, stage: str) -> Path:
    """Where a stage keeps its checkpoints inside a run's output folder."""
    return out / "checkpoints" / stage.replace("/", "-")
