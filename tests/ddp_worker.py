"""Run by tests/test_distributed.py, once alone and once under `torchrun --nproc_per_node 2` (gloo, CPU)."""

from __future__ import annotations

import sys

import torch
from helpers import ClassPairs, tiny_model, train_config

from benchmark import distributed
from benchmark.losses import PretrainLoss
from benchmark.train import train

if __name__ == "__main__":
    distributed.setup(torch.device("cpu"))
    model, cfg = tiny_model(0, *sys.argv[2:])
    train(model, PretrainLoss(cfg.loss), ClassPairs(16), train_config("finetune.max_steps=3"), seed=0,
          log=lambda metrics, step: None)
    if distributed.rank() == 0:
        torch.save({"state": model.state_dict(), "world": distributed.world_size()}, sys.argv[1])
