"""baselines/published.csv: the shipped table loads and matches baselines.md; malformed copies fail in one line."""

from __future__ import annotations

import math
import re

import pandas as pd
import pytest
from helpers import one_line_error

import baselines

TASKS = ("msrvtt_retrieval", "vatex_retrieval", "audiocaps_retrieval", "msrvtt_caption", "vatex_caption",
         "audiocaps_caption")  # fmt: skip
RETRIEVAL_DIRECTIONS = ("t2v", "v2t", "t2a", "a2t", "t2va", "va2t")
RETRIEVAL_METRICS = ("R1", "R5", "R10", "MdR", "MnR")
CAPTION_METRICS = ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr", "SPICE")
PAPER = "CLIP4VLA (paper)"


@pytest.fixture(scope="module")
def table() -> pd.DataFrame:
    return baselines.load()


def one(
    table: pd.DataFrame, method: str, task: str, direction: str, metric: str, variant: str = "", split: str = "test"
) -> pd.Series:
    split = "test_1k_a" if task == "msrvtt_retrieval" else split
    rows = table[
        (table.method == method)
        & (table.variant == variant)
        & (table.split == split)
        & (table.task == task)
        & (table.direction == direction)
        & (table.metric == metric)
    ]
    assert len(rows) == 1, f"{method} {task} {direction} {metric}: {len(rows)} rows"
    return rows.iloc[0]


def test_shipped_csv_loads(table):
    assert tuple(table.columns) == baselines.COLUMNS
    assert len(table) > 100
    assert table["value"].dtype == float


def test_vocabularies(table):
    assert set(table.task) <= set(TASKS)
    assert set(table.confidence) <= set(baselines.CONFIDENCE)
    assert set(table.comparability) <= set(baselines.COMPARABILITY)
    retrieval = table[table.task.str.endswith("_retrieval")]
    caption = table[table.task.str.endswith("_caption")]
    assert set(retrieval.direction) <= set(RETRIEVAL_DIRECTIONS)
    assert set(retrieval.metric) <= set(RETRIEVAL_METRICS)
    assert set(caption.direction) == {"caption"}
    assert set(caption.metric) <= set(CAPTION_METRICS)


def test_ascii_identifiers(table):
    """baselines.md uses non-breaking hyphens (U+2011); the CSV's names and sources are plain ASCII."""
    for column in ("method", "variant", "dataset", "split", "task", "direction", "metric", "source"):
        assert table[column].map(str.isascii).all(), column


def test_context_rows_say_why(table):
    context = table[table.comparability == "context"]
    assert (context.note.str.strip() != "").all()


def test_paper_rows_are_pending(table):
    paper = table[table.method == PAPER]
    assert set(paper.variant) == {"full", "no_intra", "no_type_token"}
    assert (paper.confidence == "pending").all()
    assert paper["value"].isna().all()
    assert set(paper.task) == set(TASKS)  # every task has the paper's rows to fill in
    assert (paper.source == "Ruan et al., AAAI 2023, arXiv:2303.06591").all()
    assert (paper.table == "to transcribe").all()
    # only the paper's rows are pending
    assert set(table[table.confidence == "pending"].method) == {PAPER}
    assert table[table.confidence != "pending"]["value"].notna().all()


@pytest.mark.parametrize(
    ("method", "task", "direction", "metric", "value", "confidence", "comparability"),
    [
        ("CLIP4Clip-meanP", "msrvtt_retrieval", "t2v", "R1", 43.1, "S", "same"),
        ("CLIP4Clip-meanP", "msrvtt_retrieval", "t2v", "MdR", 2.0, "R", "same"),
        ("CLIP4Clip-meanP", "msrvtt_retrieval", "v2t", "MnR", 12.4, "S", "same"),
        ("CLIP4Clip-seqTransf (7k)", "msrvtt_retrieval", "t2v", "R1", 42.0, "R", "context"),
        ("CLIP4Clip-meanP (mmaction2 reproduction)", "msrvtt_retrieval", "t2v", "MnR", 16.8, "E", "same"),
        ("X-CLIP (ViT-B/16)", "msrvtt_retrieval", "t2v", "R1", 49.3, "E", "context"),
        ("X-CLIP (ViT-B/16)", "msrvtt_retrieval", "t2v", "R5", 75.8, "R", "context"),
        ("TS2-Net", "msrvtt_retrieval", "t2v", "R10", 83.8, "E", "same"),
        ("TS2-Net", "msrvtt_retrieval", "t2v", "MnR", 13.0, "S", "same"),
        ("TEFAL", "msrvtt_retrieval", "t2va", "R1", 49.4, "S", "same"),
        ("TS2-Net", "vatex_retrieval", "t2v", "R1", 59.1, "E", "same"),
        ("TS2-Net", "vatex_retrieval", "t2v", "MdR", 1.0, "R", "same"),
        ("CE-VGGish", "audiocaps_retrieval", "t2a", "R1", 18.5, "E", "context"),
        ("MMT-VGGish+VGGSound", "audiocaps_retrieval", "a2t", "R10", 86.7, "E", "context"),
        ("SwinBERT", "msrvtt_caption", "caption", "CIDEr", 53.8, "E", "context"),
        ("SwinBERT", "vatex_caption", "caption", "METEOR", 26.2, "R", "context"),
        ("TopDown-AlignedAtt", "audiocaps_caption", "caption", "SPICE", 14.4, "R", "context"),
    ],
)
def test_golden_values(table, method, task, direction, metric, value, confidence, comparability):
    """Spot checks read off the spec's baselines.md (published numbers with provenance)."""
    row = one(table, method, task, direction, metric)
    assert row["value"] == value
    assert row["confidence"] == confidence
    assert row["comparability"] == comparability


def test_seed_std_goes_to_note(table):
    row = one(table, "CE-VGGish", "audiocaps_retrieval", "t2a", "R1")
    assert "±0.3 over 3 seeds" in row["note"]


def test_official_log_is_test_selected_context(table):
    row = one(table, "CLIP4VLA (official log)", "msrvtt_retrieval", "t2v", "R1", variant="full")
    assert (row["value"], row["confidence"], row["comparability"]) == (46.3, "E", "context")
    assert "test set" in row["note"]


# --- malformed copies ----------------------------------------------------------------------------------------------

GOOD = {
    "method": "Some method", "variant": "", "dataset": "MSR-VTT", "split": "test_1k_a", "task": "msrvtt_retrieval",
    "direction": "t2v", "metric": "R1", "value": "43.1", "source": "a README", "table": "baselines.md §2",
    "confidence": "E", "comparability": "same", "note": "",
}  # fmt: skip


def write(tmp_path, rows: list[dict], columns=baselines.COLUMNS):
    path = tmp_path / "published.csv"
    pd.DataFrame(rows, columns=list(columns)).to_csv(path, index=False)
    return path


def fails(path, *fragments: str) -> str:
    return one_line_error(lambda: baselines.load(path), "published.csv", *fragments)


def test_good_copy_loads(tmp_path):
    frame = baselines.load(write(tmp_path, [GOOD, {**GOOD, "metric": "R5", "value": "", "confidence": "pending"}]))
    assert frame["value"].iloc[0] == 43.1
    assert math.isnan(frame["value"].iloc[1])


def test_bad_confidence(tmp_path):
    path = write(tmp_path, [GOOD, GOOD | {"metric": "R5", "confidence": "X"}])
    fails(path, "line 3", "confidence 'X' is not one of E, S, R, pending")


def test_bad_comparability(tmp_path):
    fails(write(tmp_path, [GOOD | {"comparability": "similar"}]), "line 2", "comparability 'similar'")


def test_value_with_pending(tmp_path):
    fails(write(tmp_path, [GOOD | {"confidence": "pending"}]), "line 2", "pending")


def test_empty_value_without_pending(tmp_path):
    fails(write(tmp_path, [GOOD, GOOD | {"metric": "R5", "value": ""}]), "line 3", "value is empty")


@pytest.mark.parametrize("value", ["4x.1", "43.1%", "nan"])
def test_non_numeric_value(tmp_path, value):
    fails(write(tmp_path, [GOOD, GOOD | {"metric": "R5"}, GOOD | {"metric": "R10", "value": value}]), "line 4", value)


def test_duplicate_key(tmp_path):
    path = write(tmp_path, [GOOD, GOOD | {"metric": "R5"}, GOOD | {"value": "44.0", "source": "elsewhere"}])
    message = fails(path, "line 4", "duplicate of line 2")
    assert re.search(r"line 4\b", message)


def test_missing_column(tmp_path):
    columns = [c for c in baselines.COLUMNS if c != "comparability"]
    fails(write(tmp_path, [GOOD], columns=columns), "line 1", "columns")


def test_empty_method(tmp_path):
    fails(write(tmp_path, [GOOD, GOOD | {"method": ""}]), "line 3", "method is empty")


def test_blank_line_keeps_numbering(tmp_path):
    path = write(tmp_path, [GOOD])
    path.write_text(path.read_text() + "\n" + ",".join(GOOD[c] for c in baselines.COLUMNS) + "\n")
    fails(path, "line 3", "empty")  # the blank line itself is line 3


def test_missing_file(tmp_path):
    fails(tmp_path / "published.csv", "no such file")


def test_every_scored_step_of_the_paper_plan_has_paper_rows_on_its_split():
    """A step that scores another split than the paper's rows would meet no reference (issue 15: never another
    split): MSR-VTT captioning scores the authors' test_1k_a_audio."""
    import baselines
    from benchmark.registry import load_tasks
    from benchmark.sweep import expand, load_suite
    from configs import path

    rows = baselines.load()
    paper = set(zip(rows.loc[rows["method"] == "CLIP4VLA (paper)", "task"],
                    rows.loc[rows["method"] == "CLIP4VLA (paper)", "split"], strict=True))
    tasks = load_tasks()
    scored = {(r.config.task, r.config.eval.split or tasks.get(r.config.task).spec.test_split)
              for r in expand(load_suite(path("paper.yaml")), ["data.root=/data"]) if r.step.stage != "pretrain"}
    assert scored and scored <= paper, scored - paper
