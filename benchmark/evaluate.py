"""Retrieval evaluation: encode each clip once and each caption once, then score every requested direction.

Under torchrun each rank encodes (or captions) its contiguous share of the clips and captions; the features are
gathered in rank order, so every rank holds what one process computes, and scores it alike.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader, Subset

from benchmark import distributed
from benchmark.data import ClipItems, ClipTensors, PreparedSplit
from benchmark.media.text import CaptionTokens
from benchmark.metrics import caption_clip_ranks, postprocess
from benchmark.model import CLIP4VLA
from benchmark.progress import Ticker
from benchmark.train import autocast_for

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


def share(n: int) -> range:
    """This rank's contiguous share of n items: all of them in one process."""
    world, rank = distributed.world_size(), distributed.rank()
    return range(n * rank // world, n * (rank + 1) // world)


def gathered(parts: list) -> list:
    """Every rank's `parts` (lists of batches), concatenated in rank order, on every rank."""
    return [part for ranks in distributed.gather_objects(parts) for part in ranks]


def clip_batches(split: PreparedSplit, tensors: ClipTensors, batch_size: int, device: torch.device,
                 workers: int = 0) -> DataLoader:
    """This rank's share of the clips, in order, in batches (the global RNG left untouched)."""
    mine = Subset(ClipItems(split, tensors), share(len(split.clips)))
    return DataLoader(mine, batch_size=batch_size, num_workers=workers, generator=torch.Generator(),
                      collate_fn=tensors.batches.collate, pin_memory=device.type == "cuda")


@torch.no_grad()
def encode(
    model: CLIP4VLA, split: PreparedSplit, tensors: ClipTensors, tokens: CaptionTokens | torch.Tensor,
    batch_size: int, workers: int = 0, precision: str = "fp32",
) -> Encoded:
    """Encode every clip and every caption of `split` once, under the training's `precision` (features are
    returned as float32); `tokens` rows follow `split.captions` (CaptionTokens tokenizes one batch at a time)."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    parts: dict[str, list[torch.Tensor]] = {"video": [], "audio": [], "fused": []}
    clips = Ticker("encode clips", len(share(len(split.clips))), "clips")
    for batch in clip_batches(split, tensors, batch_size, device, workers):
        batch = tensors.batches.to_device(batch, device)  # the log-mel in float64, outside autocast
        with autocast_for(device, precision):
            out = model(batch)
        for key in parts:
            parts[key].append(out[key].float().cpu())
        clips.update(len(parts["fused"][-1]))
    clips.close()
    rows = share(len(tokens))
    text, captions = [], Ticker("encode captions", len(rows), "captions")
    for i in range(rows.start, rows.stop, batch_size):
        with autocast_for(device, precision):
            text.append(model.encode_text(tokens[i : min(i + batch_size, rows.stop)].to(device)).float().cpu())
        captions.update(len(text[-1]))
    captions.close()
    model.train(was_training)
    caption_clip = torch.tensor([clip for clip, _ in split.captions])
    return Encoded(torch.cat(gathered(text)), caption_clip, {k: torch.cat(gathered(v)) for k, v in parts.items()})


@dataclass
class Scored:
    """One direction's result: 0-based ranks per query and each query's 10 best candidates (indices)."""

    ranks: torch.Tensor
    top10: torch.Tensor


def score_directions(enc: Encoded, directions: tuple[str, ...], ties: str, audio_valid: torch.Tensor | None = None,
                     post: str = "none", temperature: float = 0.01) -> dict[str, Scored]:
    """Similarity matrix, optional post-processing and ranks for each direction (spec §10.1 plus v2t/a2t/va2t).

    `audio_valid` [N clips] (the `miss` policy): clips without audio miss in every direction that needs audio.
    One matrix per clip feature serves both of its directions; without post-processing both are ranked in one
    pass over it (`caption_clip_ranks`), and the next clip feature's matrix is written over it.
    """
    scored: dict[str, Scored] = {}
    sides: dict[str, list[str]] = {}  # clip feature -> its requested directions, in request order
    for direction in directions:
        query, candidate = DIRECTIONS[direction]
        sides.setdefault(candidate if query == "text" else query, []).append(direction)
    sim = None
    for clip_side, pair in sides.items():
        # the next matrix overwrites the last one (nothing returned points into it): a fresh 90 MB one at 15,000 x 1,500
        # costs ~30 ms of page faults on first touch
        sim = enc.text @ enc.clips[clip_side].t() if sim is None else torch.mm(enc.text, enc.clips[clip_side].t(),
                                                                                out=sim)
        valid = audio_valid if audio_valid is not None and "audio" in NEEDS[clip_side] else None
        text_query = next((d for d in pair if DIRECTIONS[d][0] == "text"), None)
        clip_query = next((d for d in pair if DIRECTIONS[d][0] != "text"), None)
        if post == "none":
            t_ranks, t_top, c_ranks, c_top = caption_clip_ranks(sim, enc.caption_clip, ties, valid,
                                                                text_query is not None, clip_query is not None, top=10)
        else:  # each direction re-weights over its own queries: two different matrices
            if text_query:
                t_ranks, t_top = caption_clip_ranks(postprocess(sim, post, temperature), enc.caption_clip, ties, valid,
                                                    clips=False, top=10)[:2]
            if clip_query:
                c_ranks, c_top = caption_clip_ranks(postprocess(sim.t(), post, temperature).t(), enc.caption_clip,
                                                    ties, valid, text=False, top=10)[2:]
        if text_query:
            scored[text_query] = Scored(t_ranks, t_top)
        if clip_query:
            scored[clip_query] = Scored(c_ranks, c_top)
    return {d: scored[d] for d in directions}


def available(directions: tuple[str, ...], modalities: set[str]) -> tuple[str, ...]:
    """The directions whose query and candidate need only `modalities`."""
    return tuple(d for d in directions if all(NEEDS[side] <= modalities for side in DIRECTIONS[d]))


@torch.no_grad()
def generate_captions(model: CLIP4VLA, split: PreparedSplit, tensors: ClipTensors, decode, max_words: int,
                      beam: int, batch_size: int, precision: str = "fp32") -> list[str]:
    """One caption per clip with the decoder (beam search; beam 1 = greedy) under `precision`, decoded to text."""
    from benchmark.model.decoder import generate

    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    texts, ticker = [], Ticker(f"caption (beam {beam})", len(share(len(split.clips))), "clips")
    for batch in clip_batches(split, tensors, batch_size, device):
        batch = tensors.batches.to_device(batch, device)
        with autocast_for(device, precision):
            context = model.context(batch)
            texts += [decode(ids) for ids in generate(model, context, max_words, beam)]
        ticker.update(len(texts) - ticker.done)
    ticker.close()
    model.train(was_training)
    return gathered(texts)
