from __future__ import annotations

import pytest
import torch

from benchmark.metrics import clip_to_text_ranks, rank_metrics, text_to_clip_ranks


def test_text_to_clip_ranks_with_ties():
    sim = torch.tensor([[0.9, 0.1, 0.2],   # caption 0 -> clip 0: rank 0
                        [0.5, 0.5, 0.5],   # caption 1 -> clip 1: three-way tie -> average rank 1
                        [0.3, 0.8, 0.8]])  # caption 2 -> clip 2: tie with clip 1 for first -> 0.5
    gt = torch.tensor([0, 1, 2])
    assert text_to_clip_ranks(sim, gt).tolist() == [0.0, 1.0, 0.5]
    assert text_to_clip_ranks(sim, gt, "optimistic").tolist() == [0.0, 0.0, 0.0]
    assert text_to_clip_ranks(sim, gt, "pessimistic").tolist() == [0.0, 2.0, 1.0]


def test_clip_to_text_takes_the_best_of_shuffled_captions():
    # 5 captions of 2 clips in shuffled order: captions 0, 3 -> clip 1; captions 1, 2, 4 -> clip 0
    caption_clip = torch.tensor([1, 0, 0, 1, 0])
    sim = torch.tensor([[0.1, 0.2, 0.9, 0.3, 0.0],   # clip 0: its best caption (2) ranks first
                        [0.4, 0.6, 0.7, 0.5, 0.8]])  # clip 1: best own caption 0.5 has 3 above it
    assert clip_to_text_ranks(sim, caption_clip).tolist() == [0.0, 3.0]


def test_rank_metrics_golden():
    metrics = rank_metrics(torch.tensor([0.0, 0.0, 4.0, 9.0, 20.0]), "t2v")
    assert metrics == pytest.approx({"t2v/R1": 40.0, "t2v/R5": 60.0, "t2v/R10": 80.0, "t2v/MdR": 5.0,
                                     "t2v/MnR": 7.6})
