"""Caption decoder (spec §2.7): shared CLIP text encoder -> cross transformer over [caption; frames; audio]
-> LM head tied to the token embedding; teacher-forced loss, greedy decoding and beam search.

Positions as the authors' training: the caption block is max_words long (input [SOT] + up to max_words - 1
words, target those words + [EOT], both padded to max_words) and the context (frames, audio) sits at cross
positions max_words, max_words + 1, .... Decoding keeps that layout, at most max_words steps. The authors
decode by re-encoding the whole prefix at every step, which puts the context at len(prefix), not where they
trained it (spec §2.7); here decoding caches keys and values instead: the text encoder is causal and the
context never attends to the caption, so each step runs only the new token through both transformers, and the
result equals re-encoding the prefix padded to max_words (tests/test_decoder.py). Padding is open_clip's id 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from open_clip.transformer import QuickGELU
from torch import nn

from benchmark.errors import UserError
from benchmark.model.cross import AUDIO, TEXT, VIDEO, CrossTransformer, KVCache, additive_mask, block_step, heads_qkv

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


def caption_token_length(max_words: int) -> int:
    """Tokens per caption for the decoder: [SOT] + up to max_words - 1 words + [EOT] (+ padding), so that
    caption_inputs gives inputs and targets of max_words positions, as the authors (spec §2.7)."""
    return max_words + 1


def caption_inputs(tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Tokenised captions [B, W] ([SOT] words [EOT] 0...; W = caption_token_length(max_words)) -> decoder
    input [B, W-1] = [SOT] + words, its validity (up to and including EOT), targets [B, W-1] = words + [EOT] +
    pads, and target validity."""
    inputs, targets = tokens[:, :-1], tokens[:, 1:]
    eot = (tokens == EOT).int().argmax(dim=1, keepdim=True)
    positions = torch.arange(inputs.shape[1], device=tokens.device)[None]
    return inputs, positions <= eot, targets, positions < eot


def check_positions(cross: CrossTransformer, max_words: int, context: Context) -> None:
    """The caption block and the context must fit the cross transformer's positional table (77 rows in CLIP)."""
    rows = cross.positional_embedding.shape[0]
    frames, segments = int((context.type_ids == VIDEO).sum()), int((context.type_ids == AUDIO).sum())
    if max_words + frames + segments > rows:
        raise UserError(f"captioning needs data.max_words + max_frames + max_audio_segments <= {rows} (the cross "
                        f"transformer's positions), got {max_words} + {frames} + {segments} = "
                        f"{max_words + frames + segments}")


def teacher_forced_logits(model: nn.Module, text_states: torch.Tensor, text_valid: torch.Tensor,
                          context: Context) -> torch.Tensor:
    """text_states [B, L, D] of [SOT] + caption from the shared text encoder -> logits [B, L, vocab].

    The caption takes cross positions 0..L-1 and the context L.. (L = max_words in training). Mask (spec
    §2.7): caption -> caption causal and key-padding; caption -> context key-padding; context -> caption never;
    context -> context key-padding.
    """
    batch, length, _ = text_states.shape
    check_positions(model.cross, length, context)
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


class CachedStep:
    """Next-token logits for growing prefixes, running only each prefix's newest token (cached keys/values).

    The context's keys/values are computed once per instance (not per beam) at cross positions max_words..
    (where training puts them); the caption token at step t takes position t in both transformers. Hypotheses
    are instance-major, beam-minor: `beam` per instance of `context`.
    """

    def __init__(self, model: nn.Module, context: Context, max_words: int, beam: int = 1) -> None:
        check_positions(model.cross, max_words, context)
        self.model = model
        self.text = [KVCache(max_words) for _ in model.clip.transformer.resblocks]
        mask = context.mask.repeat_interleave(beam, 0)
        self.cross = [KVCache(max_words, (k.repeat_interleave(beam, 0), v.repeat_interleave(beam, 0)), mask)
                      for k, v in _context_kv(model.cross, context, max_words)]

    def __call__(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens [N, t] prefixes from [SOT], of which the first t-1 were seen before -> logits [N, V] at t-1."""
        clip, cross = self.model.clip, self.model.cross
        position, token = tokens.shape[1] - 1, tokens[:, -1]
        x = clip.token_embedding(token)[:, None] + clip.positional_embedding[position]
        for block, cache in zip(clip.transformer.resblocks, self.text, strict=True):
            x = block_step(block, x, cache)
        state = clip.ln_final(x) @ clip.text_projection
        where = torch.full((1,), position, device=token.device)
        x = cross.embed(state, torch.full((1,), TEXT, device=token.device), where)
        for block, cache in zip(cross.blocks, self.cross, strict=True):
            x = block_step(block, x, cache)
        return self.model.lm_head(x[:, 0], clip.token_embedding.weight)

    def reorder(self, origin: torch.Tensor) -> None:
        """Hypothesis i now continues hypothesis origin[i]: reorder the cached keys/values alike."""
        for cache in (*self.text, *self.cross):
            cache.reorder(origin)


def beam_search(step, batch: int, beam: int, max_words: int, device: torch.device
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Beam search (OpenNMT-style, no length penalty) from [SOT] for at most max_words tokens (positions
    0..max_words-1, the caption block of training).

    `step(tokens [batch * beam, t]) -> logits [batch * beam, V]` scores the next token of every hypothesis
    (instance-major, beam-minor) and `step.reorder(origin)` follows the beams' reordering. An ended hypothesis
    extends only with PAD at no cost; an instance is done when its best beam ends with EOT. Returns tokens
    [batch, beam, 1 + steps] (with SOT) and their summed log-probabilities [batch, beam], best first.
    """
    tokens = torch.full((batch * beam, 1), SOT, device=device)
    scores = torch.zeros(batch, beam, device=device)
    scores[:, 1:] = float("-inf")  # all beams start identical: keep one
    ended = torch.zeros(batch * beam, dtype=torch.bool, device=device)
    for _ in range(max_words):
        log_probs = F.log_softmax(step(tokens).float(), -1)
        log_probs[ended] = float("-inf")  # an ended hypothesis only extends with PAD, at no cost
        log_probs[ended, PAD] = 0.0
        scores, flat = (scores.view(-1, 1) + log_probs).view(batch, -1).topk(beam, dim=1)
        vocab = log_probs.shape[1]
        origin = (flat // vocab + torch.arange(batch, device=device)[:, None] * beam).view(-1)
        next_token = (flat % vocab).view(-1)
        tokens = torch.cat([tokens[origin], next_token[:, None]], dim=1)
        ended = ended[origin] | (next_token == EOT)
        step.reorder(origin)
        if ended.view(batch, beam)[:, 0].all():  # every instance's best beam has ended
            break
    return tokens.view(batch, beam, -1), scores


@torch.no_grad()
def generate(model: nn.Module, context: Context, max_words: int, beam: int = 5) -> list[list[int]]:
    """Beam search with cached keys/values (beam=1 is greedy decoding): per instance, the best hypothesis by
    summed log-probability, without SOT, cut before the first EOT."""
    step = CachedStep(model, context, max_words, beam)
    tokens, _ = beam_search(step, context.features.shape[0], beam, max_words, context.features.device)
    out = []
    for row in tokens[:, 0, 1:].tolist():
        out.append(row[: row.index(EOT)] if EOT in row else row)
    return out
