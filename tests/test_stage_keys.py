"""Run keys leave out the config keys a stage claims not to read (benchmark.sweep.UNUSED_BY_STAGE), so a sweep
shares one run between configs that differ only there. That is only sound if those configs really give the
same stage: equal forward outputs, equal losses and an equal optimizer step, checked here key by key."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from helpers import ClassPairs, class_batch

from benchmark.config import load_config
from benchmark.model import build_model
from benchmark.pipeline import stage_loss, stage_model_config
from benchmark.registry import load_tasks
from benchmark.sweep import UNUSED_BY_STAGE, Step, run_key
from benchmark.task_kinds import kind_of
from benchmark.train import train

TINY = ["model.clip_name=tiny-clip4vla", "model.pretrained=null", "model.cross_layers=2"]
# Each stage's base config: the released-code protocol for pre-training (its parameter groups depend on the
# cross transformer), loose_seq fine-tuning (the cross transformer runs).
BASE = {
    "pretrain": ["protocol=released-code", "pretrain_corpus=[audioset]"],
    "finetune": ["task=vatex_retrieval", "model.fusion=loose_seq", "pretrain_corpus=[audioset]"],
    "evaluate": ["task=vatex_retrieval", "model.fusion=loose_seq", "pretrain_corpus=[audioset]"],
}  # (a pretrain_corpus everywhere, as a suite's base gives, so that a one-weight pretrain_mix is valid)
# One changed value for every key a stage claims not to read: a new entry in UNUSED_BY_STAGE needs one here.
CHANGED = {
    "task": "task=audiocaps_retrieval",
    "finetune": "finetune.lr=0.5",
    "pretrain": "pretrain.lr=0.5",
    "eval": "eval.beam=3",
    "model.type_mix": "model.type_mix=0.9",
    "model.fusion": "model.fusion=loose_seq",
    "model.decoder": "model.decoder=true",
    "model.supervise_pad": "model.supervise_pad=false",
    "data.val_fraction": "data.val_fraction=0.5",
    "data.missing_audio": "data.missing_audio=drop",
    "loss": "loss.intra_modal=false",
    "loss.symmetric_finetune": "loss.symmetric_finetune=true",
    "loss.intra_modal": "loss.intra_modal=false",
    "loss.text_video": "loss.text_video=true",
    "loss.released_terms": "loss.released_terms=true",
    "pretrain_corpus": "pretrain_corpus=[howto100m]",
    "pretrain_mix": "pretrain_mix=[1.0]",
    "pretrain_epoch_size": "pretrain_epoch_size=7",
}
CASES = [(stage, key) for stage, keys in UNUSED_BY_STAGE.items() for key in keys]



def _stage(cfg, stage):
    """What `stage` computes from `cfg` on a fixed batch: forward outputs, loss terms, weights after a step."""
    torch.manual_seed(cfg.seed)
    model = build_model(stage_model_config(cfg, stage))
    if stage == "evaluate":
        with torch.no_grad():
            return model.eval()(class_batch()), {}, {}
    spec = load_tasks().get(cfg.task).spec if stage == "finetune" else None
    loss = stage_loss(cfg, stage, spec and kind_of(spec), spec and spec.modalities)
    out = model(class_batch(), objective=loss.objective)
    terms = {k: v.detach() for k, v in loss(out).items()}
    recipe = dataclasses.replace(getattr(cfg, stage), max_steps=1, batch_size=4, warmup=0.0)
    train(model, loss, ClassPairs(8), recipe, seed=cfg.seed, log=lambda m, s: None)
    return {k: v.detach() for k, v in out.items()}, terms, model.state_dict()


@pytest.mark.parametrize(("stage", "key"), CASES, ids=[f"{s}-{k}" for s, k in CASES])
def test_keys_a_stage_does_not_read_change_nothing_it_computes(stage, key):
    assert key in CHANGED, f"add a changed value for '{key}' to CHANGED"
    same = load_config({}, [*TINY, *BASE[stage]])
    other = load_config({}, [*TINY, *BASE[stage], CHANGED[key]])
    assert other != same  # the change is real
    step = Step("s", stage, {})
    assert run_key(step, same, None) == run_key(step, other, None)
    for a, b in zip(_stage(same, stage), _stage(other, stage), strict=True):
        assert a.keys() == b.keys()
        for name in a:
            assert torch.equal(a[name], b[name]), f"{stage}: {key} changes {name}"


# The smoke suite's run keys: a change reruns, in every user's store, every run whose key changed. Change this
# only on purpose, and say in README ("Run keys") which runs rerun and why.
SMOKE_RUN_KEYS = "c497a7ce6d20"


def test_the_smoke_suite_run_keys_change_only_on_purpose():
    from benchmark.records import fingerprint
    from benchmark.sweep import expand, load_suite
    from configs import path

    runs = expand(load_suite(path("smoke.yaml")), ["data.root=/data"])
    assert fingerprint(sorted({r.key for r in runs})) == SMOKE_RUN_KEYS
