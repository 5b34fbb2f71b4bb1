"""Run keys hash what a stage receives (benchmark.stage_config): each stage is handed its slice of the config, the
rest at defaults, so a key cannot miss a value that changes the stage. Checked here: every config key reaches a
stage or never changes a result; a changed key changes a stage's run key exactly when it changes the slice the
stage is handed; handing a stage its slice instead of the whole config changes nothing it computes (forward
outputs, loss terms, an optimizer step), key by key; and what a stage records does not depend on keys it does
not receive."""

from __future__ import annotations

import dataclasses
import types
import typing

import pytest
import torch
from helpers import ClassPairs, class_batch

from benchmark.config import RunConfig, flatten, load_config, to_dict
from benchmark.losses import PretrainLoss
from benchmark.model import build_model
from benchmark.registry import load_tasks
from benchmark.stage_config import NOT_RESULT_KEYS, RECEIVES, result_slice, stage_config
from benchmark.sweep import STAGES, Step, run_key
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
# A changed value for the keys a stage does not receive that a suite sets; for a switch whose default is the
# protocol's, both values (the one unlike the stage's base is taken).
CHANGED = {
    "task": "task=audiocaps_retrieval",
    "finetune.lr": "finetune.lr=0.5",
    "pretrain.lr": "pretrain.lr=0.5",
    "eval.beam": "eval.beam=3",
    "eval.ties": "eval.ties=optimistic",
    "model.type_mix": "model.type_mix=0.9",
    "model.supervise_pad": ("model.supervise_pad=true", "model.supervise_pad=false"),
    "data.val_fraction": "data.val_fraction=0.5",
    "data.missing_audio": "data.missing_audio=drop",
    "loss.symmetric_finetune": ("loss.symmetric_finetune=true", "loss.symmetric_finetune=false"),
    "loss.intra_modal": "loss.intra_modal=false",
    "loss.text_video": "loss.text_video=true",
    "loss.released_terms": ("loss.released_terms=true", "loss.released_terms=false"),
    "pretrain_corpus": "pretrain_corpus=[howto100m]",
    "pretrain_mix": "pretrain_mix=[1.0]",
    "pretrain_epoch_size": "pretrain_epoch_size=7",
}


def _received(key: str, stage: str) -> bool:
    return any(key == r or key.startswith(r + ".") for r in RECEIVES[stage])


CASES = [(stage, key) for stage in STAGES for key in CHANGED if not _received(key, stage)]


def test_every_config_key_reaches_a_stage_or_changes_no_result():
    """A key added to the config and listed nowhere would be silently at its default in every stage."""
    for key in flatten(to_dict(RunConfig())):
        assert any(_received(key, s) for s in STAGES) or any(key == n or key.startswith(n + ".")
                                                               for n in NOT_RESULT_KEYS), key


def _other_value(value, tp):
    """A value of type `tp` unlike `value`."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return _other_value(value, next(a for a in typing.get_args(tp) if a is not type(None)))
    if typing.get_origin(tp) is typing.Literal:
        return next(a for a in typing.get_args(tp) if a != value)
    if typing.get_origin(tp) is list:
        return [*(value or []), "audioset" if typing.get_args(tp)[0] is str else 1.0]
    return {bool: lambda: not value, int: lambda: (value or 0) + 1, float: lambda: (value or 0.0) + 0.25,
            str: lambda: f"{value}-other"}[tp]()


def _leaf_changes():
    """(stage, key, config, config with that one key changed) for every key of the config and every stage."""
    base = load_config({}, [*TINY, *BASE["finetune"]])
    for key, value in flatten(to_dict(base)).items():
        section, _, name = key.rpartition(".")
        owner = getattr(base, section) if section else base
        tp = typing.get_type_hints(type(owner))[name]
        changed = dataclasses.replace(owner, **{name: _other_value(value, tp)})
        other = dataclasses.replace(base, **{section: changed}) if section else changed
        for stage in STAGES:
            yield stage, key, base, other


@pytest.mark.parametrize(("stage", "key", "base", "other"), list(_leaf_changes()),
                         ids=[f"{s}-{k}" for s, k, _, _ in _leaf_changes()])
def test_a_key_changes_the_run_key_exactly_when_it_changes_what_the_stage_is_handed(stage, key, base, other):
    step = Step("s", stage, {})
    same_key = run_key(step, base, None) == run_key(step, other, None)
    if any(key == n or key.startswith(n + ".") for n in NOT_RESULT_KEYS):
        assert same_key  # paths, machine settings and logging never rerun anything
    else:
        assert same_key == (stage_config(base, stage) == stage_config(other, stage)), key
        assert same_key == (result_slice(base, stage) == result_slice(other, stage)), key


def _stage(cfg, stage):
    """What `stage` computes from `cfg` on a fixed batch: forward outputs, loss terms, weights after a step."""
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model)
    if stage == "evaluate":
        with torch.no_grad():
            return model.eval()(class_batch()), {}, {}
    if stage == "pretrain":
        loss = PretrainLoss(cfg.loss)
    else:
        spec = load_tasks().get(cfg.task).spec
        loss = kind_of(spec).loss(cfg, spec.modalities)
    out = model(class_batch(), objective=loss.objective)
    terms = {k: v.detach() for k, v in loss(out).items()}
    recipe = dataclasses.replace(getattr(cfg, stage), max_steps=1, batch_size=4, warmup=0.0)
    train(model, loss, ClassPairs(8), recipe, seed=cfg.seed, log=lambda m, s: None)
    return {k: v.detach() for k, v in out.items()}, terms, model.state_dict()


@pytest.mark.parametrize(("stage", "key"), CASES, ids=[f"{s}-{k}" for s, k in CASES])
def test_handing_a_stage_its_slice_changes_nothing_it_computes(stage, key):
    """The keys a stage does not receive were never read by it: the stage computes the same from the whole
    config (the value changed) as from the slice it is handed (the value at its default)."""
    base = load_config({}, [*TINY, *BASE[stage]])
    candidates = CHANGED[key] if isinstance(CHANGED[key], tuple) else (CHANGED[key],)
    whole = next(c for c in (load_config({}, [*TINY, *BASE[stage], o]) for o in candidates) if c != base)
    sliced = stage_config(whole, stage)
    for a, b in zip(_stage(whole, stage), _stage(sliced, stage), strict=True):
        assert a.keys() == b.keys()
        for name in a:
            assert torch.equal(a[name], b[name]), f"{stage}: {key} changes {name}"


def test_evaluation_is_keyed_on_the_precision_it_autocasts_with():
    """Evaluation runs under autocast at finetune.precision (task_kinds.py): a bf16 and an fp32 evaluation of one
    checkpoint are different runs (the hand-kept list of unused keys left the whole finetune section out)."""
    step = Step("s", "evaluate", {})
    fp32 = load_config({}, [*TINY, *BASE["evaluate"]])
    bf16 = load_config({}, [*TINY, *BASE["evaluate"], "finetune.precision=bf16"])
    assert run_key(step, fp32, None) != run_key(step, bf16, None)
    assert stage_config(bf16, "evaluate").finetune.precision == "bf16"


# The smoke suite's run keys: a change reruns, in every user's store, every run whose key changed. Change this
# only on purpose, and say in README ("Run keys") which runs rerun and why.
SMOKE_RUN_KEYS = "c497a7ce6d20"


def test_the_smoke_suite_run_keys_change_only_on_purpose():
    from benchmark.records import fingerprint
    from benchmark.sweep import expand, load_suite
    from configs import path

    runs = expand(load_suite(path("smoke.yaml")), ["data.root=/data"])
    assert fingerprint(sorted({r.key for r in runs})) == SMOKE_RUN_KEYS


@pytest.mark.slow
def test_what_pretraining_records_does_not_depend_on_the_downstream_task(generated, tiny_config, tmp_path):
    """A suite shares one pre-training run between variants whose task differs (the task is not in its key):
    so what pre-training trains and records must not depend on it. It did: its protocol fingerprint took the
    task's modalities and missing-audio policy, and its record the whole config, task included."""
    import yaml

    from benchmark.pipeline import open_session, run_stages
    from benchmark.progress import Progress

    root, _ = generated
    records = []
    for task in ("vatex_retrieval", "audiocaps_retrieval"):
        cfg = load_config(yaml.safe_load(tiny_config.read_text()),
                          [f"task={task}", f"data.root={root}", "pretrain_corpus=[audioset]", "pretrain.max_steps=2",
                           "pretrain.batch_size=4"])
        [record] = run_stages(cfg, ("pretrain",), open_session(cfg, tmp_path / task, None, None, Progress()))
        records.append(record)
    first, second = records
    assert first.protocol_fingerprint == second.protocol_fingerprint
    assert first.config == second.config and first.config["task"] is None
    losses = sorted(k for k in first.metrics if k.endswith("loss"))
    assert losses and [first.metrics[k] for k in losses] == [second.metrics[k] for k in losses]
