"""Caption decoder (spec §2.7): shared CLIP text encoder -> cross transformer over [caption; frames; audio]
-> LM head tied to the token embedding; teacher-forced loss, greedy decoding and beam search.

Decoding caches keys and values: the text encoder is causal and the context (frames, audio) never attends to
the caption, so each step runs only the new token through both transformers (the authors re-encode the whole
prefix at every step, spec §2.7; about 1.9x slower end to end, §12 item 21d). Padding is open_clip's id 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from open_clip.transformer import QuickGELU
from torch import nn

from benchmark.model.cross import AUDIO, TEXT, VIDEO, CrossTransformer, additive_mask, block_step, heads_qkv

SOT, EOT, PAD = 49406, 49407, 0


@dataclass
class Context:
    """The caption's conditioning tokens: raw frame and segment features with their masks."""

    features: torch.Tensor  # [B, K, D]
    mask: torch.Tensor  # [B, K]
    type_ids: torch.Tensor  # [K]

    @staticmethod
    def of(frames: torch.Tensor | None, frame_mask: torch.Tensor | None, segments: torch.Tensor | None,
           audio_mask: torch.Tensor | None) -> Context:
        """Only the modalities given are included (audio-only captioning drops frames, video-only drops audio)."""
        parts = [(f, m, t) for f, m, t in ((frames, frame_mask, VIDEO), (segments, audio_mask, AUDIO)) if f is not None]
        features = torch.cat([f for f, _, _ in parts], dim=1)
        device = features.device
        type_ids = torch.cat([torch.full((f.shape[1],), t, device=device) for f, _, t in parts])
        return Context(features, torch.cat([m for _, m, _ in parts], dim=1), type_ids)

    def repeat(self, times: int) -> Context:
        return Context(self.features.repeat_interleave(times, 0), self.mask.repeat_interleave(times, 0),
                       self.type_ids)


class LMHead(nn.Module):
    """Linear(D, D) ~ N(0, 0.02) -> QuickGELU -> LayerNorm(eps 1e-12) -> the token embedding (tied) + a bias."""

    def __init__(self, width: int, vocab: int) -> None:
        super().__init__()
        self.dense = nn.Linear(width, width)
        nn.init.normal_(self.dense.weight, std=0.02)
        nn.init.zeros_(self.dense.bias)
        self.act = QuickGELU()
        self.norm = nn.LayerNorm(width, eps=1e-12)
        self.bias = nn.Parameter(torch.zeros(vocab))

    def forward(self, states: torch.Tensor, token_embedding: torch.Tensor) -> torch.Tensor:
        """[..., D] caption states -> [..., vocab] logits."""
        return self.norm(self.act(self.dense(states))) @ token_embedding.t() + self.bias


def caption_inputs(tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Tokenised captions [B, W] ([SOT] words [EOT] 0...) -> decoder input [B, W-1] = [SOT] + words, its
    validity (up to and including EOT), targets [B, W-1] = words + [EOT] + pads, and target validity."""
    inputs, targets = tokens[:, :-1], tokens[:, 1:]
    eot = (tokens == EOT).int().argmax(dim=1, keepdim=True)
    positions = torch.arange(inputs.shape[1], device=tokens.device)[None]
    return inputs, positions <= eot, targets, positions < eot


def teacher_forced_logits(model: nn.Module, text_states: torch.Tensor, text_valid: torch.Tensor,
                          context: Context) -> torch.Tensor:
    """text_states [B, L, D] of [SOT] + caption from the shared text encoder -> logits [B, L, vocab].

    Mask (spec §2.7): caption -> caption causal and key-padding; caption -> context key-padding;
    context -> caption never; context -> context key-padding.
    """
    batch, length, _ = text_states.shape
    total = length + context.features.shape[1]
    device = text_states.device
    mask = torch.zeros(batch, total, total, dtype=torch.bool, device=device)
    mask[:, :length, :length] = torch.ones(length, length, dtype=torch.bool, device=device).tril() & \
        text_valid.bool()[:, None, :]
    mask[:, :, length:] = context.mask.bool()[:, None, :]
    types = torch.cat([torch.full((length,), TEXT, device=device), context.type_ids])
    out = model.cross(torch.cat([text_states, context.features.to(text_states.dtype)], dim=1), types, mask)
    return model.lm_head(out[:, :length], model.clip.token_embedding.weight)


def _context_kv(cross: CrossTransformer, context: Context, offset: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per cross layer, the context's keys/values; context rows see only the context, so they never change."""
    positions = torch.arange(offset, offset + context.features.shape[1], device=context.features.device)
    x = cross.embed(context.features, context.type_ids, positions)
    attn_mask = additive_mask(context.mask, cross.heads, x.dtype)
    kv = []
    for block in cross.blocks:
        kv.append(heads_qkv(block, x)[1:])
        x = block(x, attn_mask=attn_mask)
    return kv


def _step(model: nn.Module, token: torch.Tensor, position: int, caches: dict, context_kv: list,
          context_mask: torch.Tensor) -> torch.Tensor:
    """Run one new token [B] at `position` through the text encoder and the cross transformer -> logits [B, V]."""
    clip, cross = model.clip, model.cross
    x = clip.token_embedding(token)[:, None] + clip.positional_embedding[position]
    for i, block in enumerate(clip.transformer.resblocks):
        x = block_step(block, x, caches.setdefault(("text", i), {}))
    state = clip.ln_final(x) @ clip.text_projection
    where = torch.full((1,), position, device=token.device)
    x = cross.embed(state, torch.full((1,), TEXT, device=token.device), where)
    for i, block in enumerate(cross.blocks):
        x = block_step(block, x, caches.setdefault(("cross", i), {}), context_kv[i], context_mask)
    return model.lm_head(x[:, 0], clip.token_embedding.weight)


@torch.no_grad()
def generate(model: nn.Module, context: Context, max_words: int, beam: int = 5) -> list[list[int]]:
    """Beam search (OpenNMT-style, no length penalty) from [SOT] for at most max_words - 1 tokens.

    An instance is done when its best beam ends with EOT; the best hypothesis by summed log-probability is
    returned without SOT, cut before the first EOT. beam=1 is greedy decoding.
    """
    text_length = max_words - 1  # the context sits after the caption positions, as in training
    batch, device = context.features.shape[0], context.features.device
    ctx = context.repeat(beam)
    context_kv = _context_kv(model.cross, ctx, text_length)
    caches: dict = {}
    tokens = torch.full((batch * beam, 1), SOT, device=device)
    scores = torch.zeros(batch, beam, device=device)
    scores[:, 1:] = float("-inf")  # all beams start identical: keep one
    ended = torch.zeros(batch * beam, dtype=torch.bool, device=device)
    for position in range(text_length):
        log_probs = F.log_softmax(_step(model, tokens[:, -1], position, caches, context_kv, ctx.mask).float(), -1)
        log_probs[ended] = float("-inf")  # an ended hypothesis only extends with PAD, at no cost
        log_probs[ended, PAD] = 0.0
        scores, flat = (scores.view(-1, 1) + log_probs).view(batch, -1).topk(beam, dim=1)
        vocab = log_probs.shape[1]
        origin = (flat // vocab + torch.arange(batch, device=device)[:, None] * beam).view(-1)
        next_token = (flat % vocab).view(-1)
        tokens = torch.cat([tokens[origin], next_token[:, None]], dim=1)
        ended = ended[origin] | (next_token == EOT)
        for cache in caches.values():
            cache["k"], cache["v"] = cache["k"][origin], cache["v"][origin]
        if ended.view(batch, beam)[:, 0].all():  # every instance's best beam has ended
            break
    out = []
    for row in tokens.view(batch, beam, -1)[:, 0, 1:].tolist():
        out.append(row[: row.index(EOT)] if EOT in row else row)
    return out
