"""Invariants of the training core that hold at any scale (issue: paper-scale correctness): every optimizer step
consumes exactly grad_accum micro-batches and their mean gradient, the learnable similarity scale learns and
stays capped, and every trainable parameter gets a gradient under each objective."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import ClassPairs, class_batch, one_line_error, tiny_model, train_config
from torch import nn

from benchmark.data import epoch_indices
from benchmark.losses import CaptionLoss, PretrainLoss, RetrievalLoss
from benchmark.model import build_model
from benchmark.model.clip4vla import MAX_LOGIT_SCALE
from benchmark.stage_config import stage_config
from benchmark.train import train


class Counting(nn.Module):
    """A loss that counts its calls: one call per micro-batch."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner, self.objective, self.calls = inner, inner.objective, 0

    def forward(self, out):
        self.calls += 1
        return self.inner(out)


@pytest.fixture
def optimizer_steps():
    """Parameters and gradients of every optimizer step, captured just before the update."""
    from torch.optim.optimizer import register_optimizer_step_pre_hook

    seen: list[dict[int, tuple[torch.Tensor, torch.Tensor | None]]] = []  # id(parameter) -> (value, gradient)

    def hook(optimizer, args, kwargs):
        seen.append({id(p): (p.detach().clone(), None if p.grad is None else p.grad.detach().clone())
                     for group in optimizer.param_groups for p in group["params"]})

    handle = register_optimizer_step_pre_hook(hook)
    yield seen
    handle.remove()


@pytest.mark.parametrize(("pairs", "batch", "accum"), [(20, 8, 2), (30, 12, 3), (24, 8, 4), (16, 8, 1)])
def test_every_step_consumes_exactly_grad_accum_micro_batches(pairs, batch, accum):
    model, cfg = tiny_model(0)
    loss = Counting(RetrievalLoss(cfg.loss, "fused"))
    per_step = []

    def log(metrics, step):
        per_step.append(loss.calls)
        loss.calls = 0

    tc = train_config(f"finetune.batch_size={batch}", f"finetune.grad_accum={accum}", "finetune.epochs=2")
    summary = train(model, loss, ClassPairs(pairs), tc, seed=0, log=log)
    steps_per_epoch = (pairs // (batch // accum)) // accum
    assert summary["steps"] == 2 * steps_per_epoch
    assert per_step == [accum] * (2 * steps_per_epoch)


def test_an_epoch_shorter_than_one_step_is_a_one_line_error():
    model, cfg = tiny_model(0)
    tc = train_config("finetune.batch_size=8", "finetune.grad_accum=4", "finetune.epochs=1")
    one_line_error(lambda: train(model, RetrievalLoss(cfg.loss, "fused"), ClassPairs(6), tc, seed=0,
                                 log=lambda m, s: None), "6 pairs", "grad_accum 4", "micro-batch 2", "batch_size 8")


def test_the_accumulated_gradient_is_the_mean_of_the_micro_batch_gradients(optimizer_steps):
    """20 pairs, micro-batches of 4, grad_accum 2: 5 micro-batches an epoch, 2 steps, 1 left over. The first
    step of the second epoch must hold that epoch's first two micro-batches only (nothing spilled over)."""
    pairs, micro, accum, seed = ClassPairs(20), 4, 2, 5
    model, cfg = tiny_model(0)
    loss = RetrievalLoss(cfg.loss, "fused")
    tc = train_config("finetune.batch_size=8", "finetune.grad_accum=2", "finetune.max_steps=3",
                      "finetune.grad_clip=1e9")
    train(model, loss, pairs, tc, seed=seed, log=lambda m, s: None)
    assert len(optimizer_steps) == 3
    trained = {name: id(p) for name, p in model.named_parameters() if p.requires_grad}
    for step, epoch, first in [(0, 0, 0), (1, 0, 2), (2, 1, 0)]:
        params = {name: optimizer_steps[step][key] for name, key in trained.items()}
        probe, _ = tiny_model(0)
        with torch.no_grad():
            for name, p in probe.named_parameters():
                if p.requires_grad:
                    p.copy_(params[name][0])
        order = epoch_indices(len(pairs), seed, epoch)
        probe.zero_grad()
        for b in range(first, first + accum):
            items = [pairs[i] for i in order[b * micro : (b + 1) * micro]]
            batch = {k: torch.stack([item[k] for item in items]) for k in items[0]}
            terms = loss(probe(batch))
            (sum(v for k, v in terms.items() if k.endswith("_loss")) / accum).backward()
        for name, p in probe.named_parameters():
            if p.requires_grad and p.grad is not None:
                torch.testing.assert_close(params[name][1], p.grad, rtol=1e-4, atol=1e-7, msg=f"step {step}: {name}")


def test_resume_with_grad_accum_equals_the_uninterrupted_run(tmp_path):
    from benchmark.checkpoint import Checkpointer

    class Interrupt(Exception):
        pass

    def run(folder, stop_at=None, resume=False):
        model, cfg = tiny_model(0)
        tc = train_config("finetune.batch_size=8", "finetune.grad_accum=2", "finetune.max_steps=5",
                          "finetune.checkpoint_every=1")

        def log(metrics, step):
            if step == stop_at:
                raise Interrupt

        train(model, RetrievalLoss(cfg.loss, "fused"), ClassPairs(20), tc, seed=3, log=log,
              checkpoints=Checkpointer(folder, keep_last=2), resume=resume)
        return model

    reference = run(tmp_path / "a")
    with pytest.raises(Interrupt):
        run(tmp_path / "b", stop_at=4)  # in epoch 1, after its first step: mid-epoch, past a leftover micro-batch
    resumed = run(tmp_path / "b", resume=True)
    for (name, p), q in zip(reference.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(p, q), name


def test_the_learnable_scale_gets_a_gradient_at_100_and_stays_capped():
    """exp(ln 100) is 100.0000076 in fp32: a clamp at 100 in the forward pass gave the scale a zero gradient."""
    model, cfg = tiny_model(0, "protocol=paper")
    assert isinstance(model.logit_scale, nn.Parameter)
    grads, logged = [], []
    model.logit_scale.register_hook(lambda grad: grads.append(float(grad)))
    train(model, RetrievalLoss(cfg.loss, "fused"), ClassPairs(16), train_config("finetune.max_steps=4"), seed=0,
          log=lambda metrics, step: logged.append(metrics["train/logit_scale"]))
    assert len(grads) == 4 and all(g != 0.0 for g in grads)
    assert len(logged) == 4 and all(v <= MAX_LOGIT_SCALE * (1 + 1e-6) for v in logged)  # capped after each step
    assert float(model.logit_scale.detach()) <= math.log(MAX_LOGIT_SCALE)


def test_the_learnable_scale_moves_below_the_cap_and_the_fixed_one_never_does():
    model, cfg = tiny_model(0, "protocol=paper", "model.logit_scale_init=14.3")
    train(model, RetrievalLoss(cfg.loss, "fused"), ClassPairs(16), train_config("finetune.max_steps=3"), seed=0,
          log=lambda m, s: None)
    assert abs(float(model.scale().detach()) - 14.3) > 1e-3
    fixed, cfg = tiny_model(0, "protocol=released-code")
    train(fixed, RetrievalLoss(cfg.loss, "fused"), ClassPairs(16), train_config("finetune.max_steps=2"), seed=0,
          log=lambda m, s: None)
    assert float(fixed.scale()) == pytest.approx(100.0)



# Parameters that an objective is meant to leave without a gradient, and why.
NO_GRADIENT = {
    "pretrain": set(),
    "retrieval": set(),
    "caption": {"logit_scale"},  # the similarity scale: only the contrastive losses use it
}


@pytest.mark.parametrize(("objective", "overrides", "loss"), [
    ("pretrain", ("model.fusion=loose_seq", "model.decoder=true"), lambda cfg: PretrainLoss(cfg.loss)),
    ("retrieval", ("model.fusion=feat_avg",), lambda cfg: RetrievalLoss(cfg.loss, "fused")),
    ("retrieval", ("model.fusion=loose_seq",), lambda cfg: RetrievalLoss(cfg.loss, "fused")),
    ("caption", ("model.decoder=true",), lambda cfg: CaptionLoss(cfg.model.supervise_pad)),
], ids=["pretrain", "retrieval-feat_avg", "retrieval-loose_seq", "caption"])
def test_every_trainable_parameter_gets_a_gradient(objective, overrides, loss):
    _, cfg = tiny_model(0, "protocol=paper", "model.cross_layers=2", *overrides)
    stage = "pretrain" if objective == "pretrain" else "finetune"
    torch.manual_seed(0)
    model = build_model(stage_config(cfg, stage).model).train()
    terms = loss(cfg)(model(class_batch(), objective=objective))
    sum(v for k, v in terms.items() if k.endswith("_loss")).backward()
    silent = {n for n, p in model.named_parameters()
              if p.requires_grad and (p.grad is None or not p.grad.abs().sum() > 0)}
    assert silent == NO_GRADIENT[objective]
    if objective == "pretrain":  # pre-training builds no fusion module and no decoder (spec §2.5)
        assert model.cross is None and model.lm_head is None
