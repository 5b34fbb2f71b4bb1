"""Retrieval metrics with an explicit caption-to-clip mapping (spec §10.1).

Conventions (documented in README):
- text -> clip: each caption is a query; its one correct clip is ranked among all clips.
- clip -> text: each clip is a query; its rank is the best rank among its own captions (other captions of the
  same clip never count against it, because the best one is ranked above them).
- ranks are 0-based; ties are `average` (the authors' t2v_metrics: the mean of the tied positions),
  `optimistic` or `pessimistic`. R@K = % of queries with rank < K; MdR = median + 1; MnR = mean + 1.
"""

from __future__ import annotations

import numpy as np
import torch

RECALL_AT = (1, 5, 10)
HIGHER_IS_BETTER = {"R1": True, "R5": True, "R10": True, "MdR": False, "MnR": False}


def _tie_adjusted(greater: torch.Tensor, equal_others: torch.Tensor, ties: str) -> torch.Tensor:
    if ties == "average":
        return greater + equal_others / 2
    if ties == "optimistic":
        return greater.to(torch.float64)
    if ties == "pessimistic":
        return greater + equal_others
    raise ValueError(f"unknown tie rule '{ties}'")


def text_to_clip_ranks(sim: torch.Tensor, caption_clip: torch.Tensor, ties: str = "average") -> torch.Tensor:
    """sim [Q captions, N clips], caption_clip [Q] -> 0-based rank of each caption's clip, float64 [Q]."""
    sim = sim.double()
    target = sim.gather(1, caption_clip.view(-1, 1))
    greater = (sim > target).sum(1).double()
    equal = (sim == target).sum(1).double() - 1
    return _tie_adjusted(greater, equal, ties)


def clip_to_text_ranks(sim: torch.Tensor, caption_clip: torch.Tensor, ties: str = "average") -> torch.Tensor:
    """sim [N clips, Q captions], caption_clip [Q] -> 0-based rank of each clip's best caption, float64 [N]."""
    sim = sim.double()
    own = caption_clip.view(1, -1) == torch.arange(sim.shape[0]).view(-1, 1)  # [N, Q]
    best = sim.masked_fill(~own, float("-inf")).amax(1, keepdim=True)
    greater = (sim > best).sum(1).double()
    equal = (sim == best).sum(1).double() - 1
    return _tie_adjusted(greater, equal, ties)


def rank_metrics(ranks: torch.Tensor, prefix: str) -> dict[str, float]:
    """0-based ranks -> {prefix/R1, R5, R10 (percent), MdR, MnR}."""
    r = ranks.cpu().numpy()
    out = {f"{prefix}/R{k}": float(100.0 * np.mean(r < k)) for k in RECALL_AT}
    out[f"{prefix}/MdR"] = float(np.median(r) + 1)
    out[f"{prefix}/MnR"] = float(np.mean(r) + 1)
    return out
