"""Evaluation runs under the training's numerics switch (issue 13 item 2); sharing across ranks is in
test_distributed.py."""

from __future__ import annotations

import torch
from helpers import ClassPairs, ServedItems, tiny_model

from benchmark.data import PreparedSplit
from benchmark.evaluate import encode
from benchmark.items import Clip


def test_encoding_runs_under_the_training_precision_and_returns_float32_features():
    model, _ = tiny_model(0)
    items = ClassPairs(4)
    clips = [Clip(f"clip{i}", (f"caption {i}",), None, None) for i in range(4)]
    served = ServedItems({c.media_key: items[i] for i, c in enumerate(clips)})
    tokens = torch.stack([items[i]["tokens"] for i in range(4)])

    def encoded(precision):
        return encode(model, PreparedSplit(clips), served, tokens, batch_size=2, precision=precision)

    full, half = encoded("fp32"), encoded("bf16")
    for a, b in [(full.text, half.text), *((full.clips[k], half.clips[k]) for k in ("video", "audio", "fused"))]:
        assert b.dtype == torch.float32 and not torch.equal(a, b)  # bf16 autocast did run
        assert torch.nn.functional.cosine_similarity(a, b, dim=-1).min() > 0.98
