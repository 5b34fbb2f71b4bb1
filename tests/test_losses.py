"""Each loss against a direct float64 formula, and the loss switches (spec §6)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from benchmark.config import load_config
from benchmark.losses import PretrainLoss, RetrievalLoss, nt_xent, symmetric_info_nce


def _unit(*shape, seed):
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(*shape, generator=g), dim=-1)


def _row_ce(logits):
    """-(1/B) sum_i log softmax_j(S_ij)|_{j=i}, written out in float64."""
    s = logits.double()
    return float(-sum(s[i, i] - math.log(sum(math.exp(v) for v in s[i].tolist())) for i in range(len(s))) / len(s))


def test_symmetric_info_nce_is_the_spec_formula():
    t, a = _unit(6, 8, seed=0), _unit(6, 8, seed=1)
    logits = 10 * t @ a.t()
    expected = (_row_ce(logits) + _row_ce(logits.t())) / 2
    assert float(symmetric_info_nce(logits)) == pytest.approx(expected, rel=1e-5)


def test_nt_xent_masks_self_similarity_and_uses_2b_minus_2_negatives():
    a, aug, s = _unit(5, 8, seed=2), _unit(5, 8, seed=3), 10.0
    n = 5

    def direction(x, y):
        total = 0.0
        for i in range(n):
            row = [s * float(x[i] @ y[j]) for j in range(n)] + [s * float(x[i] @ x[j]) for j in range(n) if j != i]
            total += -(row[i] - math.log(sum(math.exp(v) for v in row)))
        return total / n

    expected = (direction(a.double(), aug.double()) + direction(aug.double(), a.double())) / 2
    assert float(nt_xent(a, aug, torch.tensor(s))) == pytest.approx(expected, rel=1e-5)


def _out(batch=6, with_audio=None):
    out = {"scale": torch.tensor(10.0), "text": _unit(batch, 8, seed=4), "video": _unit(batch, 8, seed=5),
           "audio": _unit(batch, 8, seed=6), "audio_aug": _unit(batch, 8, seed=7),
           "audio_mask": torch.ones(batch, 2)}
    if with_audio is not None:
        out["audio_mask"][~with_audio] = 0
    out["fused"] = (out["video"] + out["audio"]) / 2
    return out


@pytest.mark.parametrize(
    ("overrides", "terms"),
    [
        ([], {"ta_loss", "va_loss", "aa_loss", "tv_nce"}),
        (["loss.intra_modal=false"], {"ta_loss", "va_loss", "tv_nce"}),
        (["loss.text_video=true"], {"ta_loss", "va_loss", "aa_loss", "tv_loss"}),
        (["protocol=released-code"], {"ta_loss", "va_loss", "va_repeat_loss", "aa_loss", "tt_loss", "vv_loss",
                                      "tv_nce"}),
    ],
)
def test_pretraining_terms_follow_the_switches(overrides, terms):
    cfg = load_config({}, overrides)
    out = PretrainLoss(cfg.loss)(_out())
    assert set(out) == terms
    s = 10.0
    assert float(out["ta_loss"]) == pytest.approx(float(symmetric_info_nce(s * _out()["text"] @ _out()["audio"].t())))


def test_audio_terms_use_only_items_with_audio():
    has = torch.tensor([True, True, False, True, False, True])
    out = _out(with_audio=has)
    terms = PretrainLoss(load_config({}).loss)(out)
    expected = symmetric_info_nce(10.0 * out["text"][has] @ out["audio"][has].t())
    torch.testing.assert_close(terms["ta_loss"], expected)


def test_finetuning_loss_is_symmetric_under_paper_and_one_directional_under_released_code():
    out = _out()
    logits = 10.0 * out["text"] @ out["fused"].t()
    paper = RetrievalLoss(load_config({}).loss, "fused")(out)
    released = RetrievalLoss(load_config({"protocol": "released-code"}).loss, "fused")(out)
    assert float(paper["t_fused_loss"]) == pytest.approx((_row_ce(logits) + _row_ce(logits.t())) / 2, rel=1e-5)
    assert float(released["t2fused_loss"]) == pytest.approx(_row_ce(logits), rel=1e-5)
