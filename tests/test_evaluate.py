"""Evaluation runs under the training's numerics switch (issue 13 item 2) and scores the split eval.split names;
sharing across ranks is in test_distributed.py."""

from __future__ import annotations

import json

import torch
from helpers import ClassPairs, ServedItems, tiny_model

from benchmark.data import PreparedSplit
from benchmark.evaluate import encode
from benchmark.items import Clip


def test_encoding_runs_under_the_training_precision_and_returns_float32_features():
    model, _ = tiny_model(0)
    items = ClassPairs(4)
    clips = [Clip(f"clip{i}", (f"caption {i}",), None, None) for i in range(4)]
    served = ServedItems({c.media_key: items[i] for i, c in enumerate(clips)})
    tokens = torch.stack([items[i]["tokens"] for i in range(4)])

    def encoded(precision):
        return encode(model, PreparedSplit(clips), served, tokens, batch_size=2, precision=precision)

    full, half = encoded("fp32"), encoded("bf16")
    for a, b in [(full.text, half.text), *((full.clips[k], half.clips[k]) for k in ("video", "audio", "fused"))]:
        assert b.dtype == torch.float32 and not torch.equal(a, b)  # bf16 autocast did run
        assert torch.nn.functional.cosine_similarity(a, b, dim=-1).min() > 0.98


def test_eval_split_scores_that_split_and_the_record_says_which(msrvtt_small, tiny_config, tmp_path):
    """eval.split (issue 14 item 4): `evaluate` scores the named split of the task, and its record and protocol
    fingerprint name it (a number on another split is never compared as if it were the test split's)."""
    from benchmark.cli import main
    from tasks.msrvtt import MSRVTTRetrieval

    def evaluated(*overrides: str) -> dict:
        out = tmp_path / ("-".join(overrides) or "default")
        assert main(["evaluate", "msrvtt_retrieval", "--config", str(tiny_config), "--out", str(out),
                     f"data.root={msrvtt_small[0].parent}", "eval.bootstrap=0", *overrides]) == 0
        return json.loads((out / "runs" / "evaluated" / "results.json").read_text())

    default, other = evaluated(), evaluated("eval.split=train_7k")
    assert (default["split"], other["split"]) == ("test_1k_a", "train_7k")
    listed = len(MSRVTTRetrieval().load(msrvtt_small[0], "train_7k"))
    assert other["counts"]["clips_listed"] == listed != default["counts"]["clips_listed"]
    assert other["protocol_fingerprint"] != default["protocol_fingerprint"]


def test_a_fine_tuned_model_is_never_scored_on_what_it_trained_on(msrvtt_small, tiny_config, tmp_path, capsys):
    from benchmark.cli import main

    assert main(["finetune", "msrvtt_retrieval", "--config", str(tiny_config), "--out", str(tmp_path / "out"),
                 f"data.root={msrvtt_small[0].parent}", "eval.split=train_9k"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "eval.split=train_9k: fine-tuning msrvtt_retrieval trains on that split" in err[0]
