"""Contrastive losses of CLIP4VLA (spec §6), composed from config: ablations are switches, not code paths.

Each loss module maps the model's output dict to a dict of named terms. Keys ending in `_loss` are summed by
the training loop; other keys (such as `tv_nce`, computed but not trained, spec §6.1) are only logged. Each
module names the `objective` it asks of the model's forward pass (benchmark.model.clip4vla.OBJECTIVES).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from benchmark.config import LossConfig


def info_nce(logits: torch.Tensor) -> torch.Tensor:
    """Row-wise InfoNCE with diagonal positives: CE(S) of spec §6."""
    return F.cross_entropy(logits, torch.arange(logits.shape[0], device=logits.device))


def symmetric_info_nce(logits: torch.Tensor) -> torch.Tensor:
    """Sym(S) = (CE(S) + CE(S^T)) / 2."""
    return (info_nce(logits) + info_nce(logits.t())) / 2


def nt_xent(a: torch.Tensor, a_aug: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Intra-modal L_AA (spec §6.2): each clip against its augmented view, with 2B-2 negatives.

    Row i: [s·a_i·ã_j]_j ++ [s·a_i·a_j]_j with the self-similarity a_i·a_i masked out (the "black squares"
    of the paper's Fig. 1); target i. The second direction swaps a and ã; L_AA is the mean of both.
    """
    n = a.shape[0]
    self_mask = torch.eye(n, dtype=torch.bool, device=a.device)
    targets = torch.arange(n, device=a.device)

    def one_direction(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        cross = scale * x @ y.t()
        same = (scale * x @ x.t()).masked_fill(self_mask, float("-inf"))
        return F.cross_entropy(torch.cat([cross, same], dim=1), targets)

    return (one_direction(a, a_aug) + one_direction(a_aug, a)) / 2


def _with_audio(out: dict[str, torch.Tensor]) -> torch.Tensor:
    """Bool [B]: items whose audio is present. Audio terms use only these (a zero feature is not a sample)."""
    return out["audio_mask"].bool().any(dim=1)


class PretrainLoss(nn.Module):
    """Pre-training objective (spec §6.1-6.3).

    paper:          L_TA + L_VA (+ L_AA if intra_modal) (+ L_TV if text_video)
    released-code:  L_TA + 2·L_VA (+ L_AA) + L_TT + L_VV, the released tav_nce + with_self_supervised script
    """

    objective = "pretrain"

    def __init__(self, cfg: LossConfig) -> None:
        super().__init__()
        self.cfg = cfg

    def forward(self, out: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        s = out["scale"]
        text, video, audio = out["text"], out["video"], out["audio"]
        has = _with_audio(out)
        terms: dict[str, torch.Tensor] = {}
        tv = symmetric_info_nce(s * text @ video.t())
        terms["tv_loss" if self.cfg.text_video else "tv_nce"] = tv
        if has.sum() >= 2:  # a contrastive term needs at least one negative
            t, v, a = text[has], video[has], audio[has]
            terms["ta_loss"] = symmetric_info_nce(s * t @ a.t())
            terms["va_loss"] = symmetric_info_nce(s * v @ a.t())
            if self.cfg.released_terms:
                terms["va_repeat_loss"] = terms["va_loss"]  # spec §6.3: tav_nce adds L_VA twice
            if self.cfg.intra_modal:
                terms["aa_loss"] = nt_xent(a, out["audio_aug"][has], s)
        if self.cfg.released_terms:  # self-positive "uniformity" terms of the released script (spec §6.2)
            terms["tt_loss"] = symmetric_info_nce(s * text @ text.t())
            terms["vv_loss"] = symmetric_info_nce(s * video @ video.t())
        return terms


class RetrievalLoss(nn.Module):
    """Fine-tuning for retrieval (spec §6.4): text against the candidate (fused v+a, or one modality).

    paper: symmetric; released-code: text->candidate only (the `or 'cross_align'` bug, spec §12 item 9).
    """

    objective = "retrieval"

    def __init__(self, cfg: LossConfig, candidate: str = "fused") -> None:
        super().__init__()
        self.cfg = cfg
        self.candidate = candidate

    def forward(self, out: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        logits = out["scale"] * out["text"] @ out[self.candidate].t()
        if self.cfg.symmetric_finetune:
            return {f"t_{self.candidate}_loss": symmetric_info_nce(logits)}
        return {f"t2{self.candidate}_loss": info_nce(logits)}


class CaptionLoss(nn.Module):
    """Token-level cross-entropy of the caption decoder over the whole vocabulary (spec §6.4).

    Targets after EOT are padding: ignored under `paper`; supervised under `released-code`, where the
    authors' ignore_index -1 never matches their PAD id (spec §12 item 13).
    """

    objective = "caption"

    def __init__(self, supervise_pad: bool) -> None:
        super().__init__()
        self.supervise_pad = supervise_pad

    def forward(self, out: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """out["caption_logits"] [B, L, V], ["caption_targets"] [B, L], ["caption_valid"] [B, L] (words and EOT)
        -> {"caption_loss"}."""
        logits, targets, target_valid = out["caption_logits"], out["caption_targets"], out["caption_valid"]
        if not self.supervise_pad:
            targets = targets.masked_fill(~target_valid.bool(), -100)  # F.cross_entropy's ignore_index
        return {"caption_loss": F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten())}
