"""Caption scoring equals pycocoevalcap called directly; caption fine-tuning and evaluation run end to end."""

from __future__ import annotations

import json
import shutil

import pytest

from benchmark.cli import main
from benchmark.metrics import CAPTION_METRICS, caption_scores

pytestmark = pytest.mark.skipif(shutil.which("java") is None, reason="pycocoevalcap needs java")

REFERENCES = {
    "v1": ["a red screen with a low hum", "a red picture while a hum plays", "red video, a hum"],
    "v2": ["a blue square on the left", "static noise over a blue screen"],  # clips have different counts
    "v3": ["someone plays a beeping sound", "a beeping sound goes on", "beeping in a quiet room, again"],
}
CANDIDATES = {"v1": "a red screen with a hum", "v2": "a blue screen with static noise", "v3": "a beeping sound"}


@pytest.mark.slow
def test_caption_scores_equal_pycocoevalcap_called_directly():
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.meteor.meteor import Meteor
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    tok = PTBTokenizer()
    gts = tok.tokenize({k: [{"caption": c} for c in v] for k, v in REFERENCES.items()})
    res = tok.tokenize({k: [{"caption": v}] for k, v in CANDIDATES.items()})
    bleu, _ = Bleu(4).compute_score(gts, res)
    expected = {f"Bleu_{i + 1}": 100 * b for i, b in enumerate(bleu)}
    expected["METEOR"] = 100 * Meteor().compute_score(gts, res)[0]
    expected["ROUGE_L"] = 100 * Rouge().compute_score(gts, res)[0]
    expected["CIDEr"] = 100 * Cider().compute_score(gts, res)[0]
    ours = caption_scores(REFERENCES, CANDIDATES)
    assert set(ours) == set(CAPTION_METRICS)
    assert ours == pytest.approx(expected)
    assert ours["CIDEr"] > 0 and ours["Bleu_1"] > 50


@pytest.mark.slow
def test_caption_finetune_and_evaluate_end_to_end(msrvtt_small, tiny_config, tmp_path):
    root, _ = msrvtt_small
    out = tmp_path / "out"
    assert main(["finetune", "msrvtt_caption", "--config", str(tiny_config), "--out", str(out),
                 f"data.root={root.parent}", "model.cross_layers=2", "finetune.max_steps=2", "finetune.eval_every=0",
                 "eval.beam=2"]) == 0
    record = json.loads((out / "runs" / "finetuned" / "results.json").read_text())
    assert set(CAPTION_METRICS) <= set(record["metrics"]) and record["main_score"] == "CIDEr"
    assert record["config"]["model"]["decoder"] is True  # captioning switched the decoder on, and says so
    lines = (out / "runs" / "finetuned" / "captions.jsonl").read_text().splitlines()
    assert len(lines) == record["counts"]["clips_used"]
    assert len(json.loads(lines[0])["references"]) == 20
    assert "## Captioning" in (out / "report.md").read_text()


@pytest.mark.slow
def test_caption_tasks_tokenise_max_words_minus_one_words(msrvtt_small, tiny_config, tmp_path):
    """Preparing a caption task keeps [SOT] + up to max_words - 1 words + [EOT], so the decoder's inputs and
    targets fill the max_words caption block (the authors' count); retrieval tasks keep max_words tokens."""
    import yaml

    from benchmark.config import load_config
    from benchmark.model.decoder import EOT, SOT, caption_inputs
    from benchmark.pipeline import open_session
    from benchmark.progress import Progress
    from benchmark.registry import load_tasks
    from benchmark.stages import StageInputs, prepare

    root, _ = msrvtt_small
    max_words = 6
    cfg = load_config(yaml.safe_load(tiny_config.read_text()),
                      ["task=msrvtt_caption", f"data.root={root.parent}", f"data.max_words={max_words}"])
    stage = StageInputs.of(cfg, open_session(cfg, tmp_path / "out", None, None, Progress()))
    data = prepare(stage, stage.task, stage.task.spec.train_split)
    captions = [text for _, text in data.split.captions]
    full = stage.tokenizer(captions, 77)
    inputs, _, targets, _ = caption_inputs(data.tokens[:])
    assert inputs.shape[1] == targets.shape[1] == max_words
    cut = 0
    for row, words in enumerate(full.tolist()):
        words = words[1 : words.index(EOT)][: max_words - 1]
        cut += len(words) == max_words - 1
        pad = [0] * (max_words - 1 - len(words))
        assert inputs[row].tolist() == [SOT, *words, *pad] and targets[row].tolist() == [*words, EOT, *pad]
    assert cut  # some captions were long enough to be cut
    retrieval = load_tasks().get("msrvtt_retrieval")()
    assert prepare(stage, retrieval, retrieval.spec.test_split).tokens[:].shape[1] == max_words


def test_scoring_leaves_stderr_to_the_suite(capfd):
    """pycocoevalcap's Java tokenizer writes a rate line per call and "Untokenizable" warnings for emoji halves to
    the process's stderr (14% of the smoke log, issue 15): they go to the DEBUG log, not the terminal."""
    caption_scores({"a": ["a dog \U0001F600 runs on grass", "a dog runs"]}, {"a": "a dog runs \U0001F600"})
    err = capfd.readouterr().err
    assert "PTBTokenizer" not in err and "Untokenizable" not in err
