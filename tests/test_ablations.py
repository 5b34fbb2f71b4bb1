"""Each ablation switch changes exactly what it names (issue: ablations are configuration, not code paths)."""

from __future__ import annotations

import torch
from helpers import class_batch, tiny_model

from benchmark.evaluate import available
from benchmark.losses import PretrainLoss



def _grads(model, cfg):
    terms = PretrainLoss(cfg.loss)(model(class_batch(), objective="pretrain"))
    sum(v for k, v in terms.items() if k.endswith("_loss")).backward()
    return {n: p.grad for n, p in model.named_parameters()}, terms


def test_type_token_off_removes_the_table_and_mix_trains_it():
    model, cfg = tiny_model(0, "model.type_token=off")
    grads, _ = _grads(model, cfg)
    assert not [n for n in grads if "type_" in n]  # no table, hence no gradient into one
    model, cfg = tiny_model(0, "model.type_token=index")
    grads, _ = _grads(model, cfg)
    assert grads["audio.type_embedding"].abs().sum() > 0 and grads["audio.type_position"].abs().sum() > 0
    # everything else is the same set of parameters
    off, _ = tiny_model(0, "model.type_token=off")
    assert set(grads) - {n for n, _ in off.named_parameters()} == {"audio.type_embedding", "audio.type_position"}


def test_intra_modal_off_removes_only_the_intra_term():
    model, cfg = tiny_model(0)
    _, with_intra = _grads(model, cfg)
    model, cfg = tiny_model(0, "loss.intra_modal=false")
    _, without = _grads(model, cfg)
    assert set(with_intra) - set(without) == {"aa_loss"}
    for key in without:
        torch.testing.assert_close(without[key], with_intra[key])


def test_audio_init_random_changes_only_the_audio_tower():
    copied, _ = tiny_model(0)
    random_init, _ = tiny_model(0, "model.audio_init=random")
    torch.testing.assert_close(copied.audio.visual.conv1.weight, copied.clip.visual.conv1.weight)
    assert not torch.allclose(random_init.audio.visual.conv1.weight, random_init.clip.visual.conv1.weight)
    torch.testing.assert_close(random_init.clip.visual.conv1.weight, copied.clip.visual.conv1.weight)


def test_fusion_switch_builds_the_cross_transformer_only_for_loose_seq():
    assert tiny_model(0)[0].cross is None
    assert tiny_model(0, "model.fusion=loose_seq", "model.cross_layers=2")[0].cross is not None


def test_no_audio_leaves_only_the_video_directions():
    directions = ("t2v", "v2t", "t2a", "a2t", "t2va", "va2t")
    assert available(directions, {"text", "video"}) == ("t2v", "v2t")
    assert available(directions, {"text", "audio"}) == ("t2a", "a2t")
    assert available(directions, {"text", "video", "audio"}) == directions
