"""Comparison report: seed statistics, verdicts, ablation pairing and the written files, on fabricated frames."""

from __future__ import annotations

import math

import pandas as pd
import pytest
from helpers import FINGERPRINT, ours, paper, published

from reports.render import latex_escape, write_comparison_report
from reports.tables import (
    OFFICIAL_LOG_METHOD,
    PAPER_METHOD,
    PublishedValue,
    ablation_table,
    paired_ablation,
    summarize_seeds,
    task_tables,
    verdict_vs_reference,
)

T_975_2 = 4.302652729911275  # scipy.stats.t.ppf(0.975, 2)


def only_row(summary):
    assert len(summary) == 1
    return summary.iloc[0]


# ------------------------------------------------------------------------------------------- seed statistics


def test_three_seeds_give_the_t_interval():
    row = only_row(summarize_seeds(ours([40, 42, 44])))
    assert row["n"] == 3 and row["mean"] == pytest.approx(42.0)
    assert (row["ci_high"] - row["ci_low"]) / 2 == pytest.approx(T_975_2 * 2 / math.sqrt(3), abs=1e-3)
    assert (row["ci_high"] - row["ci_low"]) / 2 == pytest.approx(4.968, abs=1e-3)
    assert row["ci_kind"] == "seeds"


@pytest.mark.parametrize(("reference", "verdict"), [(43, "inconclusive"), (50, "below"), (30, "above")])
def test_a_wide_interval_reproduces_nothing(reference, verdict):
    """42 ± 5.0 over three seeds: the paper's 43 lies inside it, yet the interval reaches 4 points past the 1-point
    margin on both sides, so it is inconclusive, not reproduced (issue 15)."""
    row = only_row(summarize_seeds(ours([40, 42, 44])))
    assert verdict_vs_reference(row["ci_low"], row["ci_high"], PublishedValue(reference, "E"), "R1", 1.0) == verdict


@pytest.mark.parametrize(("interval", "verdict"), [((42.5, 43.5), "reproduced"), ((42.5, 44.5), "inconclusive"),
                                                     ((44.5, 45.0), "above"), ((40.0, 41.9), "below")])
def test_reproduced_means_the_whole_interval_lies_within_the_margin(interval, verdict):
    assert verdict_vs_reference(*interval, PublishedValue(43.0, "E"), "R1", 1.0) == verdict


def test_lower_ranks_beyond_the_margin_are_above():
    row = only_row(summarize_seeds(ours([10, 11, 12], metric="MnR")))  # 11 ± 2.48
    assert verdict_vs_reference(row["ci_low"], row["ci_high"], PublishedValue(20.0, "E"), "MnR", 2.0) == "above"
    assert verdict_vs_reference(row["ci_low"], row["ci_high"], PublishedValue(5.0, "E"), "MnR", 2.0) == "below"


def test_pending_and_missing_references():
    assert verdict_vs_reference(40.0, 44.0, PublishedValue(math.nan, "pending"), "R1", 1.0) == "pending"
    assert verdict_vs_reference(40.0, 44.0, None, "R1", 1.0) == "no reference"


def test_single_seed_uses_its_bootstrap_interval_or_none():
    with_bootstrap = only_row(summarize_seeds(ours([46.1], ci=(44.0, 48.2))))
    assert (with_bootstrap["ci_kind"], with_bootstrap["ci_low"], with_bootstrap["ci_high"]) == (
        "test-set bootstrap",
        44.0,
        48.2,
    )
    without = only_row(summarize_seeds(ours([46.1])))
    assert without["ci_kind"] == "none"
    assert verdict_vs_reference(without["ci_low"], without["ci_high"], PublishedValue(46.0, "E"), "R1",
                                1.0) == "no interval"


def test_two_runs_of_one_seed_are_refused():
    with pytest.raises(ValueError, match="one run per seed"):
        summarize_seeds(ours([40, 41], seeds=[0, 0]))


# ------------------------------------------------------------------------------------------ per-task tables


def table_rows(table):
    return table.frame.set_index("")


def test_task_table_rows_cells_and_footer():
    results = pd.concat(
        [ours([40, 42, 44]), ours([70, 71, 72], metric="R5"), ours([46.1], direction="t2v", ci=(44.0, 48.2))]
    )
    baselines = pd.DataFrame(
        [
            paper(43.0),
            paper(math.nan, metric="R5", confidence="pending"),
            published("CLIP4Clip", 44.5, confidence="S"),
            published("MMT", 26.6, confidence="R", comparability="context"),
            published("AudioClip", 10.0, task="audiocaps_retrieval"),  # a task we did not run
        ]
    )
    t2v, t2va = task_tables(results, baselines, "msrvtt_retrieval")  # direction order: t2v before t2va
    rows = table_rows(t2va)
    assert list(t2va.frame.columns) == ["", "R1", "R5"]
    assert list(rows.index) == [
        "reference",
        "ours (full, 3 seeds)",
        "Δ vs reference",
        "verdict",
        "CLIP4Clip",
        "context (different protocol)",
        "MMT",
    ]
    assert rows.loc["reference", "R1"] == "43.0 (E)" and rows.loc["reference", "R5"] == "pending"
    assert rows.loc["ours (full, 3 seeds)", "R1"] == "42.0 ± 5.0"
    assert rows.loc["Δ vs reference", "R1"] == "-1.0" and rows.loc["Δ vs reference", "R5"] == "pending"
    assert rows.loc["verdict", "R1"] == "inconclusive" and rows.loc["verdict", "R5"] == "pending"
    assert f"reference on test: {PAPER_METHOD} for R1; {PAPER_METHOD} (pending) for R5" in t2va.footer
    assert any(line.startswith("verdict margins") and "R1 ±1.0, R5 ±1.0" in line for line in t2va.footer)
    assert rows.loc["CLIP4Clip", "R1"] == "44.5 (S)" and rows.loc["MMT", "R1"] == "26.6 (R)"
    assert "test clips used 975 of 975; missing video 0, missing audio 12" in t2va.footer
    assert table_rows(t2v).loc["ours (full, 1 seed)", "R1"] == "46.1 [44.0, 48.2]"
    assert table_rows(t2v).loc["verdict", "R1"] == "no reference"


def test_the_reference_is_the_paper_when_transcribed_else_the_official_log_never_another_split():
    """issue 15: a paper row on another split is never compared; the official log stands in where the paper's
    number is pending, and the table says whose number each cell is."""
    results = pd.concat([ours([46.1], ci=(45.5, 46.6)), ours([73.0], metric="R5", ci=(72.8, 74.0)),
                         ours([2.0], metric="MdR", ci=(2.0, 2.0))])
    baselines = pd.DataFrame([
        paper(44.0, split="test_1k_a_audio"),  # another split: never the reference
        paper(math.nan, metric="R5", confidence="pending"),
        published(OFFICIAL_LOG_METHOD, 46.2, variant="full"),
        published(OFFICIAL_LOG_METHOD, 73.5, variant="full", metric="R5", comparability="context"),
        paper(2.0, metric="MdR"),
        published(OFFICIAL_LOG_METHOD, 3.0, variant="full", metric="MdR"),  # the paper's is filled: not used
    ])
    (table,) = task_tables(results, baselines, "msrvtt_retrieval")
    rows = table_rows(table)
    assert rows.loc["reference", "R1"] == "46.2 (E)" and rows.loc["Δ vs reference", "R1"] == "-0.1"
    assert rows.loc["verdict", "R1"] == "reproduced"
    assert rows.loc["reference", "R5"] == "73.5 (E)" and rows.loc["verdict", "R5"] == "reproduced"
    assert rows.loc["reference", "MdR"] == "2.0 (E)" and rows.loc["verdict", "MdR"] == "reproduced"
    assert (f"reference on test: {OFFICIAL_LOG_METHOD} for R1; {OFFICIAL_LOG_METHOD} (context: another protocol) "
            f"for R5; {PAPER_METHOD} for MdR") in table.footer


def test_two_fingerprints_are_separate_rows_and_flagged():
    results = pd.concat([ours([40, 42, 44]), ours([50, 52], fingerprint="def456def456", protocol="released-code")])
    (table,) = task_tables(results, pd.DataFrame([paper(43.0)]), "msrvtt_retrieval")
    rows = table_rows(table)
    assert rows.loc[f"ours (full, 3 seeds, {FINGERPRINT})", "R1"] == "42.0 ± 5.0"
    assert rows.loc["ours (full, 2 seeds, def456def456)", "R1"].startswith("51.0 ± ")
    assert any(line.startswith("WARNING, mixed protocols") for line in table.footer)


def test_differing_counts_show_a_range():
    results = pd.concat([ours([40], seeds=[0], missing_audio=10), ours([42], seeds=[1], missing_audio=12)])
    (table,) = task_tables(results, pd.DataFrame([paper(43.0)]), "msrvtt_retrieval")
    assert "test clips used 975 of 975; missing video 0, missing audio 10–12" in table.footer


# ------------------------------------------------------------------------------------------------ ablation


MAIN_SCORES = {"msrvtt_retrieval": "t2va/R1"}


def test_paired_deltas_with_no_clear_difference():
    results = pd.concat([ours([40, 42, 44]), ours([38, 41, 41], variant="no_intra")])
    row = only_row(paired_ablation(results, pd.DataFrame([paper(43.0)]), MAIN_SCORES))
    assert row["n_pairs"] == 3 and row["delta_mean"] == pytest.approx(-2.0)
    assert row["delta_low"] == pytest.approx(-2.0 - T_975_2 / math.sqrt(3)) == pytest.approx(-4.484, abs=1e-3)
    assert row["delta_high"] == pytest.approx(0.484, abs=1e-3)
    assert row["verdict"] == "no clear difference"
    assert row["paper_delta_note"] == "not in paper"


def test_clear_drop_hurts_and_unpaired_seeds_are_ignored():
    results = pd.concat(
        [ours([40, 42, 44, 99], seeds=[0, 1, 2, 3]), ours([30, 32, 35, 7], variant="no_type_token", seeds=[0, 1, 2, 4])]
    )
    baselines = pd.DataFrame([paper(43.0), paper(40.5, variant="no_type_token")])
    row = only_row(paired_ablation(results, baselines, MAIN_SCORES))
    assert row["n_pairs"] == 3 and row["seeds_paired"] == (0, 1, 2)
    assert (row["seeds_only_reference"], row["seeds_only_variant"]) == ((3,), (4,))
    assert row["reference_mean"] == pytest.approx(42.0) and row["variant_mean"] == pytest.approx(97 / 3)
    assert row["verdict"] == "hurts"
    assert row["paper_delta"] == pytest.approx(-2.5)


def test_rising_mean_rank_hurts():
    results = pd.concat([ours([10, 11, 12], metric="MnR"), ours([20, 22, 23], metric="MnR", variant="no_intra")])
    row = only_row(paired_ablation(results, pd.DataFrame([paper(43.0)]), {"msrvtt_retrieval": "t2va/MnR"}))
    assert row["verdict"] == "hurts"


def test_ablation_table_strings_and_footer():
    results = pd.concat(
        [ours([40, 42, 44]), ours([38, 41, 41], variant="no_intra"), ours([39], variant="no_type_token")]
    )
    baselines = pd.DataFrame([paper(43.0), paper(math.nan, variant="no_intra", confidence="pending")])
    table = ablation_table(paired_ablation(results, baselines, MAIN_SCORES), results)
    rows = table.frame.set_index("variant")
    assert rows.loc["no_intra", "paired Δ ± CI"] == "-2.0 ± 2.5"
    assert rows.loc["no_intra", "paper Δ"] == "pending"
    assert (rows.loc["no_type_token", "n pairs"], rows.loc["no_type_token", "verdict"]) == ("1", "n < 2")
    assert any("paired seeds 0, 1, 2" in line for line in table.footer)
    assert any("unpaired, only in full: 1, 2" in line for line in table.footer)
    assert any(line.startswith("msrvtt_retrieval: ") and "missing audio" in line for line in table.footer)


def test_ablation_keeps_fingerprints_apart_and_warns():
    results = pd.concat(
        [
            ours([40, 42, 44]),
            ours([38, 41, 41], variant="no_intra"),
            ours([30, 31], variant="no_intra", fingerprint="def456def456", protocol="released-code"),
        ]
    )
    ablation = paired_ablation(results, pd.DataFrame([paper(43.0)]), MAIN_SCORES)
    assert list(ablation["n_pairs"]) == [3, 2]
    assert list(ablation["label"]) == [
        f"no_intra ({FINGERPRINT} vs {FINGERPRINT})",
        f"no_intra (def456def456 vs {FINGERPRINT})",
    ]
    assert any(line.startswith("WARNING, mixed protocols") for line in ablation_table(ablation, results).footer)


# ------------------------------------------------------------------------------------------------- the files


def test_latex_escape():
    assert latex_escape("msrvtt_retrieval 5% & #1 ± 2") == r"msrvtt\_retrieval 5\% \& \#1 $\pm$ 2"


def test_write_comparison_report(tmp_path):
    results = pd.concat(
        [
            ours([40, 42, 44]),
            ours([38, 41, 41], variant="no_intra"),
            ours([0.45, 0.47], task="audiocaps_caption", direction="caption", metric="CIDEr"),
        ]
    )
    baselines = pd.DataFrame(
        [
            paper(math.nan, confidence="pending"),
            published("CLIP4Clip", 44.5, confidence="S"),
            published("AudioClip", 10.0, task="vatex_retrieval"),
        ]
    )
    curves = pd.DataFrame(
        [
            {
                "task": "msrvtt_retrieval",
                "stage": "finetune",
                "variant": variant,
                "seed": seed,
                "step": step,
                "key": key,
                "value": value,
                "run_id": "r",
            }
            for variant in ("full", "no_intra")
            for seed in (0, 1)
            for step in (0, 10, 20)
            for key, value in (("train/loss", 3.0 - step / 10), ("select/score", step + seed))
        ]
    )
    main_scores = {"msrvtt_retrieval": "t2va/R1", "audiocaps_caption": "CIDEr"}
    paths = write_comparison_report(results, curves, baselines, tmp_path, "CLIP4VLA reproduction", main_scores)

    assert set(paths) == {"md", "html", "tex"} and all(p.exists() for p in paths.values())
    assert {p.name for p in (tmp_path / "plots").glob("*.png")} == {
        "ablation.png",
        "curves_msrvtt_retrieval_finetune.png",
    }
    markdown = paths["md"].read_text(encoding="utf-8")
    assert "| pending" in markdown and "44.5 (S)" in markdown
    assert "(plots/ablation.png)" in markdown and "## audiocaps_caption" in markdown
    assert markdown.index("## msrvtt_retrieval") < markdown.index("## audiocaps_caption")
    assert "data:image/png;base64," in paths["html"].read_text(encoding="utf-8")
    tex = paths["tex"].read_text(encoding="utf-8")
    assert r"\toprule" in tex and r"msrvtt\_retrieval" in tex and r"$\pm$" in tex


def test_report_without_curves_says_so(tmp_path):
    empty_curves = pd.DataFrame(columns=["task", "stage", "variant", "seed", "step", "key", "value", "run_id"])
    paths = write_comparison_report(
        ours([40, 42, 44]), empty_curves, pd.DataFrame([paper(43.0)]), tmp_path, "t", MAIN_SCORES
    )
    assert "No training curves recorded." in paths["md"].read_text(encoding="utf-8")
    assert "No ablation runs." in paths["md"].read_text(encoding="utf-8")


def test_each_fingerprint_is_compared_with_the_reference_on_its_own_split():
    audio_only = ours([44.5], fingerprint="def456def456", ci=(44.0, 45.0))
    audio_only["split"] = "test_audio"
    results = pd.concat([ours([46.1], ci=(45.5, 46.6)), audio_only])
    baselines = pd.DataFrame([paper(46.0), paper(40.0, split="test_audio")])
    (table,) = task_tables(results, baselines, "msrvtt_retrieval")
    rows = table_rows(table)
    assert rows.loc[f"reference, {FINGERPRINT}", "R1"] == "46.0 (E)"
    assert rows.loc["reference, def456def456", "R1"] == "40.0 (E)"
    assert rows.loc[f"Δ vs reference, {FINGERPRINT}", "R1"] == "+0.1"
    assert rows.loc["Δ vs reference, def456def456", "R1"] == "+4.5"
    assert rows.loc["verdict, def456def456", "R1"] == "above"
    assert f"def456def456: reference on test_audio: {PAPER_METHOD} for R1" in table.footer
