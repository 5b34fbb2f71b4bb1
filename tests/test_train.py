"""The training loop: it learns, checkpoints are complete and atomic, and resume equals the uninterrupted run."""

from __future__ import annotations

import pytest
import torch
from helpers import ClassPairs, tiny_model, train_config

from benchmark.checkpoint import Checkpointer
from benchmark.losses import PretrainLoss, RetrievalLoss
from benchmark.train import train


def test_loss_falls_on_a_fixed_batch():
    model, cfg = tiny_model(0)
    losses = []
    train(model, PretrainLoss(cfg.loss), ClassPairs(8), train_config("finetune.max_steps=15"), seed=0,
          log=lambda metrics, step: losses.append(metrics["train/loss"]))
    assert len(losses) == 15
    assert losses[-1] < 0.5 * losses[0], losses


class Interrupt(Exception):
    pass


def _run(tmp_path, stop_at=None, resume=False):
    model, cfg = tiny_model(0)
    tc = train_config("finetune.max_steps=6", "finetune.checkpoint_every=2")

    def log(metrics, step):
        if step == stop_at:
            raise Interrupt  # the process dies between two checkpoints

    train(model, RetrievalLoss(cfg.loss, "fused"), ClassPairs(24), tc, seed=3, log=log,
          checkpoints=Checkpointer(tmp_path / "ckpt", keep_last=2), resume=resume)
    return model


def test_resume_after_a_crash_equals_the_uninterrupted_run_bitwise(tmp_path):
    reference = _run(tmp_path / "a")
    with pytest.raises(Interrupt):
        _run(tmp_path / "b", stop_at=5)
    assert Checkpointer(tmp_path / "b" / "ckpt").steps() == [2, 4]
    resumed = _run(tmp_path / "b", resume=True)
    for (name, p), q in zip(reference.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(p, q), name


def test_checkpoints_are_complete_pruned_and_load_with_weights_only(tmp_path):
    _run(tmp_path)
    ckpt = Checkpointer(tmp_path / "ckpt")
    assert ckpt.steps() == [4, 6]  # keep_last=2
    state = ckpt.load(ckpt.latest())  # torch.load(weights_only=True)
    assert {"model", "optimizer", "scheduler", "scaler", "rng", "position", "step"} <= set(state)
    assert state["position"]["step"] == 6 and state["step"] == 6
    assert not list((tmp_path / "ckpt").glob("*.tmp"))


def test_the_best_checkpoint_survives_pruning(tmp_path):
    ckpt = Checkpointer(tmp_path, keep_last=1)
    for step, score in [(1, 0.5), (2, 0.9), (3, 0.1), (4, 0.2)]:
        ckpt.save(step, {"x": torch.tensor(step)}, score=score)
    assert ckpt.steps() == [2, 4] and ckpt.best() == ckpt.path(2)
