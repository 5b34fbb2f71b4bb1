from __future__ import annotations

import pytest
from helpers import one_line_error

from benchmark.config import PROTOCOL_DEFAULTS, RunConfig, load_config, parse_override, read_yaml
from benchmark.errors import UserError


def test_defaults_resolve_every_protocol_switch():
    paper, released = load_config({"protocol": "paper"}), load_config({"protocol": "released-code"})
    # spec §14 / §12 item 12, §2.4, §6.3, §12 item 9, §6.4 / item 13, item 14, §8
    assert (paper.model.type_pos_init_std, released.model.type_pos_init_std) == (0.01, 1.0)
    assert (paper.model.learnable_logit_scale, released.model.learnable_logit_scale) == (True, False)
    assert (paper.loss.released_terms, released.loss.released_terms) == (False, True)
    assert (paper.loss.symmetric_finetune, released.loss.symmetric_finetune) == (True, False)
    assert (paper.model.supervise_pad, released.model.supervise_pad) == (False, True)
    assert (paper.eval.selection_split, released.eval.selection_split) == ("val", "test")
    assert (paper.finetune.param_groups, released.pretrain.param_groups) == ("clean", "released")
    for protocol, switches in PROTOCOL_DEFAULTS.items():  # and no switch is left unresolved
        cfg = load_config({"protocol": protocol})
        assert all(getattr(getattr(cfg, d.split(".")[0]), d.split(".")[1]) is not None for d in switches)


def test_dotted_overrides_are_typed_and_merge_onto_yaml():
    cfg = load_config({"finetune": {"lr": 1e-4, "epochs": 3}}, ["finetune.lr=1e-5", "model.pretrained=null",
                                                                 "data.missing_audio=drop", "pretrain_corpus=[a, b]"])
    assert cfg.finetune.lr == 1e-5 and isinstance(cfg.finetune.lr, float)
    assert cfg.finetune.epochs == 3  # untouched YAML value survives the override of a sibling
    assert cfg.finetune.batch_size == RunConfig().finetune.batch_size
    assert cfg.model.pretrained is None
    assert cfg.data.missing_audio == "drop"
    assert cfg.pretrain_corpus == ["a", "b"]


def test_explicit_value_beats_protocol_default():
    cfg = load_config({"protocol": "released-code"}, ["loss.symmetric_finetune=true"])
    assert cfg.loss.symmetric_finetune is True
    assert cfg.loss.released_terms is True


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("finetune.lrr=1", "unknown config key 'finetune.lrr'; did you mean 'finetune.lr'?"),
        ("modle.clip_name=x", "unknown config key 'modle'; did you mean 'model'?"),
        ("finetune.epochs=1.5", "config key 'finetune.epochs' must be an integer"),
        ("data.missing_audio=skip", "config key 'data.missing_audio' must be one of ['zero', 'drop', 'miss']"),
        ("protocol=papr", "config key 'protocol' must be one of"),
        ("loss.intra_modal=maybe", "config key 'loss.intra_modal' must be true or false"),
        ("finetune", "override 'finetune' must look like key.sub=value"),
    ],
)
def test_bad_keys_and_values_name_the_key(override, message):
    one_line_error(lambda: load_config({}, [override]), message)


def test_yaml_errors_are_one_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n")
    with pytest.raises(UserError, match="invalid YAML"):
        read_yaml(bad)
    with pytest.raises(UserError, match="config file not found"):
        read_yaml(tmp_path / "absent.yaml")


def test_parse_override_reads_yaml_scalars():
    assert parse_override("a.b=3") == {"a": {"b": 3}}
    assert parse_override("a=true") == {"a": True}


def test_yaml_off_means_the_off_mode():
    assert load_config({"model": {"type_token": False}}).model.type_token == "off"  # `type_token: off` in YAML
    assert load_config({}, ["model.type_token=off"]).model.type_token == "off"


@pytest.mark.parametrize(("overrides", "policy"), [
    (["task=audiocaps_retrieval"], "miss"),  # audio-only clips: a clip without audio is never retrieved
    (["task=audiocaps_caption"], "miss"),
    (["task=msrvtt_retrieval", "modalities=[text, audio]"], "miss"),  # audio-only by restriction
    (["task=msrvtt_retrieval"], "zero"),  # video stands in for the missing audio (spec §14)
    ([], "zero"),
    (["task=audiocaps_retrieval", "data.missing_audio=drop"], "drop"),  # an explicit policy wins
])
def test_missing_audio_policy_defaults_by_task(overrides, policy):
    assert load_config({}, overrides).data.missing_audio == policy


@pytest.mark.parametrize("key", ["finetune.keep_last", "pretrain.keep_last", "finetune.grad_accum"])
def test_values_below_their_range_are_one_line_errors(key):
    one_line_error(lambda: load_config({}, [f"{key}=0"]), f"config key '{key}' must be >= 1", "got 0")


@pytest.mark.parametrize(("cores", "workers"), [(1, 0), (2, 1), (16, 8), (None, 0)])
def test_data_workers_default_to_the_cpu_count_but_one_and_an_explicit_value_wins(monkeypatch, cores, workers):
    import os

    from benchmark.data import loader_workers

    monkeypatch.setattr(os, "cpu_count", lambda: cores)
    assert loader_workers(load_config({}, []).data) == workers
    assert loader_workers(load_config({}, ["data.workers=3"]).data) == 3
