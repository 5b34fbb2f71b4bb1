"""The cross transformer (spec §2.6): `loose_seq` fusion over frame and audio tokens, and the caption decoder.

Four pre-LN blocks copied from CLIP's text transformer layers 0-3 (so the width is CLIP's text width, which
equals the feature size in every OpenAI config), CLIP's text positional table, a 3-row token-type embedding
(0 text, 1 video, 2 audio) drawn from N(0, 0.02), dropout 0.1 after the embeddings, no final LayerNorm, and an
additive attention mask (1 - m) * -1e6.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from benchmark.errors import UserError

TEXT, VIDEO, AUDIO = 0, 1, 2
MASK_VALUE = -1e6  # spec §2.6


class CrossTransformer(nn.Module):
    def __init__(self, clip: nn.Module, layers: int) -> None:
        super().__init__()
        source = clip.transformer.resblocks
        width = clip.transformer.width
        if layers > len(source):
            raise UserError(f"model.cross_layers={layers} but the CLIP text tower has only {len(source)} layers")
        if width != clip.text_projection.shape[-1]:
            raise UserError(f"the cross transformer needs CLIP text width ({width}) == feature size "
                            f"({clip.text_projection.shape[-1]}), as in the OpenAI configs")
        self.blocks = nn.ModuleList(copy.deepcopy(source[i]) for i in range(layers))
        self.positional_embedding = nn.Parameter(clip.positional_embedding.detach().clone())
        self.type_embedding = nn.Parameter(torch.randn(3, width) * 0.02)
        self.dropout = nn.Dropout(0.1)
        self.heads = self.blocks[0].attn.num_heads

    def embed(self, x: torch.Tensor, type_ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """x [B, L, D] + positional rows `positions` [L] + type rows `type_ids` [L], then dropout."""
        return self.dropout(x + self.positional_embedding[positions] + self.type_embedding[type_ids])

    def forward(self, x: torch.Tensor, type_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x [B, L, D]; type_ids [L]; mask [B, L] (keys) or [B, L, L] (query x key), 1 = may attend."""
        x = self.embed(x, type_ids, torch.arange(x.shape[1], device=x.device))
        attn_mask = additive_mask(mask, self.heads, x.dtype)
        for block in self.blocks:
            x = block(x, attn_mask=attn_mask)
        return x


def additive_mask(mask: torch.Tensor, heads: int, dtype: torch.dtype) -> torch.Tensor:
    """Key mask [B, L] or [B, L, L] (1 = may attend) -> the additive (1 - m) * -1e6 mask [B * heads, L, L] that
    nn.MultiheadAttention takes (spec §2.6)."""
    if mask.dim() == 2:
        mask = mask[:, None, :].expand(-1, mask.shape[1], -1)
    return ((1.0 - mask.to(dtype)) * MASK_VALUE).repeat_interleave(heads, dim=0)


def heads_qkv(block: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The queries, keys and values [B, heads, L, hd] that `block` computes for tokens x [B, L, D]."""
    attn = block.attn
    batch, length, width = x.shape
    shape = (batch, length, attn.num_heads, width // attn.num_heads)
    qkv = F.linear(block.ln_1(x), attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1)
    return tuple(t.view(shape).transpose(1, 2) for t in qkv)


class KVCache:
    """Keys/values of one attention layer for N sequences decoded one token at a time, in buffers allocated once:
    `fixed` leading slots (keys every query may attend to where `fixed_mask` allows: the caption context,
    written once) then a slot per token. Appending writes into the buffers and attending reads slot views, so a
    step copies nothing but its own keys/values (growing the cache by torch.cat, and concatenating the context
    to it, copied every earlier key at every step: a quarter of the decoding time at beam 5, issue 16)."""

    def __init__(self, capacity: int, fixed_kv: tuple[torch.Tensor, torch.Tensor] | None = None,
                 fixed_mask: torch.Tensor | None = None) -> None:
        self.capacity = capacity
        self.fixed_kv, self.fixed_mask = fixed_kv, fixed_mask
        self.fixed = 0 if fixed_kv is None else fixed_kv[0].shape[2]
        self.length = 0  # tokens written

    def _allocate(self, k: torch.Tensor) -> None:
        """The buffers, in the dtype the keys come in (bf16 under autocast)."""
        n, heads, _, head_dim = k.shape
        slots = self.fixed + self.capacity
        self.keys, self.values = k.new_empty(n, heads, slots, head_dim), k.new_empty(n, heads, slots, head_dim)
        self.allowed = torch.ones(n, 1, 1, slots, dtype=torch.bool, device=k.device)
        if self.fixed_kv is not None:
            self.keys[:, :, :self.fixed], self.values[:, :, :self.fixed] = self.fixed_kv
            self.allowed[:, 0, 0, :self.fixed] = self.fixed_mask.bool()
            self.fixed_kv = self.fixed_mask = None  # the buffers hold them now: no second copy kept

    def append(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Write the new tokens' k, v [N, heads, T, hd]; returns keys and values [N, heads, S, hd] of every
        filled slot and which of them each new token may attend to [N, 1, T, S] (the fixed slots by their mask,
        earlier tokens and itself)."""
        new = k.shape[2]
        if self.length + new > self.capacity:
            raise ValueError(f"the KV cache holds {self.capacity} tokens; {self.length + new} asked")
        if self.length == 0:
            self._allocate(k)
        start = self.fixed + self.length
        self.keys[:, :, start:start + new], self.values[:, :, start:start + new] = k, v
        self.length += new
        end = start + new
        allowed = self.allowed[:, :, :, :end]
        if new > 1:  # new tokens see each other causally
            causal = torch.ones(new, self.length, dtype=torch.bool, device=k.device).tril(self.length - new)
            allowed = torch.cat([allowed[..., :self.fixed].expand(-1, -1, new, -1),
                                 causal.expand(allowed.shape[0], 1, new, self.length)], dim=-1)
        return self.keys[:, :, :end], self.values[:, :, :end], allowed

    def reorder(self, origin: torch.Tensor) -> None:
        """Sequence i now continues sequence origin[i]. Only the token slots move: `origin` stays within one
        instance's beams (beam_search), whose fixed slots (its context) are equal."""
        tokens = slice(self.fixed, self.fixed + self.length)
        self.keys[:, :, tokens] = self.keys[origin, :, tokens]
        self.values[:, :, tokens] = self.values[origin, :, tokens]


def block_step(block: nn.Module, x: torch.Tensor, cache: KVCache) -> torch.Tensor:
    """One open_clip residual block for new query tokens only, reusing the cached keys/values (incremental
    decoding): x [B, T, D] are the new tokens; they attend to the cache's fixed slots (the caption context) where
    its mask allows, to all earlier tokens, and causally to each other. Equal to the block's full forward on the
    whole prefix (tests/test_decoder.py).
    """
    attn = block.attn
    batch, new, width = x.shape
    q, k, v = heads_qkv(block, x)
    keys, values, allowed = cache.append(k, v)
    out = F.scaled_dot_product_attention(q, keys, values, attn_mask=allowed)
    out = F.linear(out.transpose(1, 2).reshape(batch, new, width), attn.out_proj.weight, attn.out_proj.bias)
    x = x + block.ls_1(out)
    return x + block.ls_2(block.mlp(block.ln_2(x)))
