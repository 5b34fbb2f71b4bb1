"""Run by tests/test_distributed.py, alone and under `torchrun --nproc_per_node 2` (gloo, CPU): encode and
caption 7 clips (an odd number: the ranks' shares differ) and save what rank 0 holds afterwards."""

from __future__ import annotations

import sys

import torch
from helpers import ClassPairs, ServedItems, tiny_model

from benchmark import distributed
from benchmark.data import PreparedSplit
from benchmark.evaluate import encode, generate_captions
from benchmark.items import Clip

if __name__ == "__main__":
    distributed.setup(torch.device("cpu"))
    model, _ = tiny_model(0, "model.decoder=true", "model.cross_layers=1")
    items = ClassPairs(7)
    clips = [Clip(f"clip{i}", (f"caption {i}", f"another {i}"), None, None) for i in range(7)]
    split = PreparedSplit(clips)
    clip_tensors = ServedItems({c.media_key: items[i] for i, c in enumerate(clips)})
    tokens = torch.stack([items[i // 2]["tokens"] for i in range(14)])  # 14 captions, two per clip
    encoded = encode(model, split, clip_tensors, tokens, batch_size=3)
    texts = generate_captions(model, split, clip_tensors, lambda ids: " ".join(map(str, ids)), max_words=6, beam=2,
                              batch_size=2)
    served = distributed.gather_objects(clip_tensors.read)
    if distributed.rank() == 0:
        torch.save({"world": distributed.world_size(), "text": encoded.text, "clips": encoded.clips,
                    "captions": texts, "served": served}, sys.argv[1])
