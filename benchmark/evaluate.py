"""Retrieval evaluation: encode each clip once and each caption once, then score every requested direction."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader

from benchmark.data import ClipItems, ClipTensors, PreparedSplit
from benchmark.metrics import clip_to_text_ranks, rank_metrics, text_to_clip_ranks
from benchmark.model import CLIP4VLA

# direction -> (query side, candidate side); "text" rows are captions, the others are clips.
NEEDS = {"video": {"video"}, "audio": {"audio"}, "fused": {"video", "audio"}, "text": set()}
DIRECTIONS = {
    "t2v": ("text", "video"),
    "v2t": ("video", "text"),
    "t2a": ("text", "audio"),
    "a2t": ("audio", "text"),
    "t2va": ("text", "fused"),
    "va2t": ("fused", "text"),
}


@dataclass
class Encoded:
    """Unit features of one split: text [Q, D] with caption_clip [Q], and per-clip video/audio/fused [N, D]."""

    text: torch.Tensor
    caption_clip: torch.Tensor
    clips: dict[str, torch.Tensor]


def _to(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


@torch.no_grad()
def encode(
    model: CLIP4VLA, split: PreparedSplit, tensors: ClipTensors, tokens: torch.Tensor, batch_size: int,
    workers: int = 0,
) -> Encoded:
    """Encode every clip and every caption of `split` once; `tokens` rows follow `split.captions`."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    parts: dict[str, list[torch.Tensor]] = {"video": [], "audio": [], "fused": []}
    loader = DataLoader(ClipItems(split, tensors), batch_size=batch_size, num_workers=workers,
                        generator=torch.Generator())  # leave the global RNG untouched
    for batch in loader:
        out = model(_to(batch, device))
        for key in parts:
            parts[key].append(out[key].float().cpu())
    text = [
        model.encode_text(tokens[i : i + batch_size].to(device)).float().cpu()
        for i in range(0, tokens.shape[0], batch_size)
    ]
    model.train(was_training)
    caption_clip = torch.tensor([clip for clip, _ in split.captions])
    return Encoded(torch.cat(text), caption_clip, {k: torch.cat(v) for k, v in parts.items()})


def retrieval_metrics(enc: Encoded, directions: tuple[str, ...], ties: str) -> dict[str, float]:
    """{direction/metric: value} for each direction (spec §10.1 plus v2t/a2t/va2t and MnR)."""
    metrics: dict[str, float] = {}
    for direction in directions:
        query, candidate = DIRECTIONS[direction]
        if query == "text":
            sim = enc.text @ enc.clips[candidate].t()
            ranks = text_to_clip_ranks(sim, enc.caption_clip, ties)
        else:
            sim = enc.clips[query] @ enc.text.t()
            ranks = clip_to_text_ranks(sim, enc.caption_clip, ties)
        metrics.update(rank_metrics(ranks, direction))
    return metrics


def available(directions: tuple[str, ...], modalities: set[str]) -> tuple[str, ...]:
    """The directions whose query and candidate need only `modalities`."""
    return tuple(d for d in directions if all(NEEDS[side] <= modalities for side in DIRECTIONS[d]))
