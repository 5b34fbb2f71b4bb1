"""The training recipes `clip4vla perf model` and `perf train` time: runs of configs/paper.yaml, as the sweep
resolves them (issue 16 item 1), not the config defaults.

A recipe is one plan step of the paper's suite (its `x-perf-recipes` list: stage-1 pre-training and the two
video-retrieval fine-tunes): its config as the stage receives it (stage_config.py; e.g. `loose_seq` fusion, the
protocol's loss and parameter groups, gradient clipping, warmup-cosine), with the model swapped for the one
measured (random weights) and a batch small enough for a CPU. `perf train` runs `train.py`'s own loop on it
(collate, model inputs on the device, forward, loss, backward, clipping, fused AdamW, scheduler) and times each
optimizer step between its log callbacks; `perf model` times forward + backward of the same batch alone.
Clips have the lengths of 10-30-s web videos, shorter than the recipe's maxima so that padding exists.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from typing import Any

import torch

from benchmark.config import RunConfig, load_config, read_yaml, to_dict
from benchmark.losses import PretrainLoss
from benchmark.stage_config import stage_config

CASES = {"tiny": ("tiny-clip4vla", ("model.cross_layers=2",)), "vit-b-32": ("ViT-B-32-quickgelu", ())}
FRAMES, SEGMENTS = (10, 12, 11, 8), (16, 9, 12, 6)  # real lengths of the 4 clips of a batch, before the maxima
MAX_WORDS = 32


@dataclasses.dataclass(frozen=True)
class Recipe:
    """A plan step of the paper's suite, resolved for timing: its stage, its config slice, its loss."""

    name: str
    stage: str
    cfg: RunConfig

    @property
    def objective(self) -> str:
        return self.loss().objective

    def loss(self) -> torch.nn.Module:
        if self.stage == "pretrain":
            return PretrainLoss(self.cfg.loss)
        from benchmark.registry import load_tasks
        from benchmark.task_kinds import kind_of

        spec = load_tasks().get(self.cfg.task).spec
        modalities = set(spec.modalities) & set(self.cfg.modalities or spec.modalities)
        return kind_of(spec).loss(self.cfg, tuple(modalities))

    @property
    def recipe(self):
        """The training recipe of its stage (pretrain.* or finetune.*)."""
        return getattr(self.cfg, self.stage)


def paper_recipes(case: str, precision: str = "fp32", checkpointing: bool = False, batch: int = len(FRAMES),
                  names: tuple[str, ...] | None = None) -> list[Recipe]:
    """The recipes of configs/paper.yaml (its `x-perf-recipes`, or `names`) for model `case`, at `precision`,
    with `batch` clips per step and no gradient accumulation (the contrastive batch is the step's batch)."""
    from benchmark.sweep import expand, load_suite
    from configs import path

    suite_file = path("paper.yaml")
    names = names or tuple(read_yaml(suite_file)["x-perf-recipes"])
    runs = {r.step.name: r for r in expand(load_suite(suite_file), ["data.root=/unused"])}
    clip_name, model_overrides = CASES[case]
    recipes = []
    for name in names:
        run = runs[name]
        stage = run.step.stage
        data = to_dict(run.config)
        data["model"].update(clip_name=clip_name, pretrained=None, init=None)
        data[stage].update(batch_size=batch, grad_accum=1, precision=precision, grad_checkpointing=checkpointing,
                           log_every=1, eval_every=0, checkpoint_every=0, epochs=1)
        cfg = load_config(data, list(model_overrides))
        recipes.append(Recipe(name, stage, stage_config(cfg, stage)))
    return recipes


def items(recipe: Recipe, generator: torch.Generator) -> list[dict[str, torch.Tensor]]:
    """One batch as the reading processes hand it on (ClipTensors' items): uint8 frames and 16-bit PCM of each
    clip's own length (capped at the recipe's maxima), tokens, and the SpecAugment masks where pre-training's
    intra-modal term draws them."""
    from benchmark.media import audio as audio_fe

    data, out = recipe.cfg.data, []
    augment = recipe.stage == "pretrain" and recipe.cfg.loss.intra_modal
    for i, (frames, segments) in enumerate(zip(FRAMES, SEGMENTS, strict=True)):
        samples = (audio_fe.SEGMENT_FRAMES * min(segments, data.max_audio_segments) - 2) * audio_fe.HOP
        tokens = torch.randint(1, 49000, (MAX_WORDS,), generator=generator)
        tokens[0], tokens[-1] = 49406, 49407
        item = {"tokens": tokens, "clip_index": torch.tensor(i),
                "frames": torch.randint(0, 256, (min(frames, data.max_frames), 3, 224, 224), dtype=torch.uint8,
                                        generator=generator),
                "pcm": torch.randint(-2**15, 2**15, (2, samples), dtype=torch.int32, generator=generator) << 16,
                "audio_type": torch.tensor(i % 2)}
        if augment:
            item["keep_time"], item["keep_freq"] = audio_fe.spec_augment_masks(audio_fe.frames_of(samples), generator)
        out.append(item)
    return out


class RepeatedBatch(torch.utils.data.Dataset):
    """`steps` copies of one batch's items: every optimizer step reads the same clips."""

    def __init__(self, batch: list[dict[str, torch.Tensor]], steps: int) -> None:
        self.batch, self.steps = batch, steps

    def __len__(self) -> int:
        return len(self.batch) * self.steps

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return self.batch[index % len(self.batch)]


def build(recipe: Recipe) -> torch.nn.Module:
    from benchmark.model import build_model

    torch.manual_seed(recipe.cfg.seed)
    model = build_model(recipe.cfg.model)
    model.set_grad_checkpointing(recipe.recipe.grad_checkpointing)
    return model


def time_training_steps(recipe: Recipe, iters: int, warmup: int = 1) -> dict[str, Any]:
    """`warmup` + `iters` optimizer steps of train.py's loop; each step's seconds is the time between two of its
    per-step log callbacks (which read the loss back, so a step has finished)."""
    from benchmark.data import ClipBatches
    from benchmark.train import train

    batch = items(recipe, torch.Generator().manual_seed(0))
    model, stamps = build(recipe), []
    cfg = dataclasses.replace(recipe.recipe, max_steps=warmup + iters)
    start = time.perf_counter()
    train(model, recipe.loss(), RepeatedBatch(batch, warmup + iters), cfg, recipe.cfg.seed,
          lambda metrics, step: stamps.append(time.perf_counter()), batches=ClipBatches(recipe.cfg.data))
    steps = [b - a for a, b in zip([start, *stamps], stamps, strict=False)][warmup:]
    return summary(steps, len(batch), model)


def time_forward_backward(recipe: Recipe, iters: int, attention: str = "sdpa", warmup: int = 1) -> dict[str, Any]:
    """Forward + loss + backward of the recipe's batch alone (no optimizer), with SDPA or math attention."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from benchmark.data import ClipBatches
    from benchmark.train import autocast_for

    batches = ClipBatches(recipe.cfg.data)
    batch = batches.to_device(batches.collate(items(recipe, torch.Generator().manual_seed(0))), torch.device("cpu"))
    model, loss_fn, steps = build(recipe).train(), recipe.loss(), []
    backends = [SDPBackend.MATH] if attention == "math" else [SDPBackend.FLASH_ATTENTION, SDPBackend.MATH]
    with sdpa_kernel(backends):
        for i in range(warmup + iters):
            start = time.perf_counter()
            with autocast_for(torch.device("cpu"), recipe.recipe.precision):
                terms = loss_fn(model(batch, objective=loss_fn.objective))
            sum(v for k, v in terms.items() if k.endswith("_loss")).backward()
            model.zero_grad(set_to_none=True)
            if i >= warmup:
                steps.append(time.perf_counter() - start)
    return summary(steps, len(FRAMES), model)


def summary(steps: list[float], batch: int, model: torch.nn.Module) -> dict[str, Any]:
    """Median seconds per sample, the spread of the timed steps, peak RSS and the model's size."""
    import resource

    return {"seconds_per_sample": statistics.median(steps) / batch,
            "spread": (min(steps) / batch, max(steps) / batch), "steps": len(steps),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "parameters_m": sum(p.numel() for p in model.parameters()) / 1e6}
