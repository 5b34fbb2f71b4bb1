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


def block_step(block: nn.Module, x: torch.Tensor, cache: dict[str, torch.Tensor] | None,
               extra_kv: tuple[torch.Tensor, torch.Tensor] | None = None,
               extra_mask: torch.Tensor | None = None) -> torch.Tensor:
    """One open_clip residual block for new query tokens only, reusing cached keys/values (incremental decoding).

    x [B, T, D] are the new tokens; `cache` holds the keys/values of earlier tokens ([B, heads, t, hd]) and is
    extended in place; `extra_kv` are fixed keys/values appended after them (the caption context), with key
    mask `extra_mask` [B, K]. New tokens attend to all earlier tokens and causally to each other. Equal to the
    block's full forward on the whole prefix (tests/test_decoder.py).
    """
    attn = block.attn
    batch, new, width = x.shape
    q, k, v = heads_qkv(block, x)
    if cache is not None:
        if "k" in cache:
            k, v = torch.cat([cache["k"], k], dim=2), torch.cat([cache["v"], v], dim=2)
        cache["k"], cache["v"] = k, v
    seen = k.shape[2]
    allowed = torch.ones(new, seen, dtype=torch.bool, device=x.device).tril(seen - new)
    allowed = allowed.expand(batch, 1, new, seen)
    if extra_kv is not None:
        k, v = torch.cat([k, extra_kv[0]], dim=2), torch.cat([v, extra_kv[1]], dim=2)
        context = extra_mask.bool()[:, None, None, :].expand(batch, 1, new, -1)
        allowed = torch.cat([allowed, context], dim=-1)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)
    out = F.linear(out.transpose(1, 2).reshape(batch, new, width), attn.out_proj.weight, attn.out_proj.bias)
    x = x + block.ls_1(out)
    return x + block.ls_2(block.mlp(block.ln_2(x)))
