"""`clip4vla perf model` / `perf train` time the recipes of configs/paper.yaml (issue 16 item 1), as the sweep
resolves them, each step through train.py's own loop, with several timed steps."""

from __future__ import annotations

import pytest
import torch

from benchmark.losses import PretrainLoss, RetrievalLoss
from benchmark.perf_recipes import FRAMES, paper_recipes, time_forward_backward, time_training_steps


@pytest.fixture(scope="module")
def recipes():
    return {r.name: r for r in paper_recipes("tiny")}


def test_the_recipes_are_the_papers_runs_not_the_defaults(recipes):
    assert list(recipes) == ["pretrain-stage1", "msrvtt_retrieval", "vatex_retrieval"]
    pre, msrvtt = recipes["pretrain-stage1"], recipes["msrvtt_retrieval"]
    assert pre.stage == "pretrain" and isinstance(pre.loss(), PretrainLoss) and pre.cfg.model.fusion == "feat_avg"
    assert pre.cfg.task is None and pre.cfg.data.max_audio_segments == 10  # pre-training's slice: 10-s clips
    assert msrvtt.cfg.model.fusion == "loose_seq" and isinstance(msrvtt.loss(), RetrievalLoss)
    assert msrvtt.cfg.data.max_audio_segments == 16 and msrvtt.cfg.finetune.grad_clip == 1.0
    assert msrvtt.cfg.finetune.param_groups == "clean" and msrvtt.cfg.loss.symmetric_finetune  # paper protocol
    for recipe in recipes.values():  # a CPU batch of the 4 clip lengths, one step per batch, random weights
        assert recipe.recipe.batch_size == len(FRAMES) and recipe.recipe.grad_accum == 1
        assert recipe.cfg.model.clip_name == "tiny-clip4vla" and recipe.cfg.model.pretrained is None


@pytest.mark.parametrize("name", ["pretrain-stage1", "msrvtt_retrieval"])
def test_training_steps_run_the_training_loop_and_time_every_step(recipes, name, monkeypatch):
    from benchmark import train as train_module

    real_step, steps = torch.optim.AdamW.step, []

    def counted(self, *args, **kwargs):
        steps.append(1)
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", counted)
    clipped = []
    real_clip = train_module.torch.nn.utils.clip_grad_norm_
    monkeypatch.setattr(train_module.torch.nn.utils, "clip_grad_norm_",
                        lambda params, norm, **kw: clipped.append(norm) or real_clip(params, norm, **kw))
    timed = time_training_steps(recipes[name], iters=3)
    assert timed["steps"] == 3 and len(steps) == 4  # a warm-up and 3 timed optimizer steps
    assert clipped == [recipes[name].recipe.grad_clip] * 4
    low, high = timed["spread"]
    assert 0 < low <= timed["seconds_per_sample"] <= high


def test_forward_backward_times_the_recipes_batch(recipes):
    timed = time_forward_backward(recipes["vatex_retrieval"], iters=3, attention="math")
    assert timed["steps"] == 3 and timed["seconds_per_sample"] > 0 and timed["parameters_m"] > 1
