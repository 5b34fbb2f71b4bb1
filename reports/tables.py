"""Comparison tables: our seeds summarised, verdicts against the paper, per-task tables and the ablation table.

All statistics of the comparison report live in this module:

* Ours, per (task, variant, protocol_fingerprint, direction, metric): n seeds, their mean, and a 95% interval.
  n >= 2: the Student-t interval over seeds, mean ± t_{0.975, n-1} * s / sqrt(n), s the sample standard
  deviation (ddof=1); ci_kind "seeds". n == 1: that run's own test-set bootstrap interval (ci_low, ci_high)
  when present, ci_kind "test-set bootstrap"; otherwise no interval, ci_kind "none". Rows of different
  protocol fingerprints are never averaged together.
* The reference of a cell: the paper's number on our split when it is transcribed, else the authors' own released
  log's (`CLIP4VLA (official log)`), never a number on another split; the table says which.
* Δ vs reference = ours mean − reference value.
* Verdict vs reference: an equivalence test with a margin per metric (DEFAULT_MARGINS, configurable): see
  VERDICTS_VS_REFERENCE.
* Ablation, per (task, variant, main score): seeds present in both the variant and the reference variant are
  paired, Δ_i = variant_i − reference_i; mean Δ with the Student-t interval over the paired deltas (n >= 2).
  Verdicts: see ABLATION_VERDICTS.

"Better" depends on the metric: lower is better for the ranks MdR and MnR, higher for everything else.
Tables are DataFrames of strings so that Markdown, HTML and LaTeX show the same cells.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats

PAPER_METHOD = "CLIP4VLA (paper)"
OFFICIAL_LOG_METHOD = "CLIP4VLA (official log)"  # the authors' released logs (baselines.md §0)
REFERENCE_METHODS = (PAPER_METHOD, OFFICIAL_LOG_METHOD)  # in the order a cell's reference is taken
# How far our interval may reach from the reference and still reproduce it (in the metric's units: points of
# R@K and of caption metrics, ranks of MdR/MnR); `clip4vla report --margin METRIC=VALUE` changes one.
DEFAULT_MARGINS = {"R1": 1.0, "R5": 1.0, "R10": 1.0, "MdR": 1.0, "MnR": 2.0, "Bleu_1": 1.0, "Bleu_2": 1.0,
                   "Bleu_3": 1.0, "Bleu_4": 1.0, "METEOR": 1.0, "ROUGE_L": 1.0, "CIDEr": 2.0}
LOWER_IS_BETTER = frozenset({"MdR", "MnR"})
CAPTION_DIRECTION = "caption"
METRIC_ORDER = ("R1", "R5", "R10", "MdR", "MnR", "Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr")
DIRECTION_ORDER = ("t2v", "v2t", "t2a", "a2t", "t2va", "va2t", CAPTION_DIRECTION)
SUMMARY_KEYS = ["task", "variant", "protocol_fingerprint", "direction", "metric"]
CONTEXT_SEPARATOR = "context (different protocol)"
ABSENT = "—"  # a cell with nothing to show (no run of ours, or no published number for it)
COLLAPSE_OVER = 3  # more published baseline rows than this fold away below ours in the HTML report

VERDICTS_VS_REFERENCE = {
    "pending": "the paper's number is not transcribed yet and no official log has one",
    "no reference": "neither the paper nor an official log has a number for this direction and metric on our split",
    "no interval": "ours has a single run without a test-set bootstrap interval",
    "reproduced": "our whole 95% interval lies within ± the margin of the reference",
    "above": "our whole 95% interval is better than the reference by more than the margin (lower, for MdR and MnR)",
    "below": "our whole 95% interval is worse than the reference by more than the margin (higher, for MdR and MnR)",
    "inconclusive": "our 95% interval reaches both inside and outside ± the margin of the reference",
}
ABLATION_VERDICTS = {
    "hurts": "the 95% interval of the paired Δ excludes 0 on the worse side",
    "helps": "the 95% interval of the paired Δ excludes 0 on the better side",
    "no clear difference": "the 95% interval of the paired Δ contains 0",
    "n < 2": "fewer than two paired seeds, so no interval",
}


@dataclass
class Table:
    """A rendered table: a title, a DataFrame of strings, and the lines printed under it. `ours` holds the
    positions of the rows with our numbers (the HTML report highlights them); rows from `collapse_from` on are
    published baselines that the HTML report folds away below ours when there are many."""

    title: str
    frame: pd.DataFrame
    footer: list[str] = field(default_factory=list)
    ours: frozenset[int] = frozenset()
    collapse_from: int | None = None


@dataclass(frozen=True)
class PublishedValue:
    """One published number; value is NaN and confidence "pending" until someone transcribes it."""

    value: float
    confidence: str  # E exact/primary, S exact/secondary, R recalled/unverified, or "pending"
    method: str = PAPER_METHOD  # whose number it is
    comparability: str = "same"  # published.csv's: "context" when it was measured under another protocol

    @property
    def pending(self) -> bool:
        return self.confidence == "pending" or math.isnan(self.value)


# ---------------------------------------------------------------------------------------------- statistics


def higher_is_better(metric: str) -> bool:
    return metric not in LOWER_IS_BETTER


def parse_main_score(score: str) -> tuple[str, str]:
    """Split a main score: "t2va/R1" -> ("t2va", "R1"); a bare caption metric "CIDEr" -> ("caption", "CIDEr")."""
    direction, _, metric = score.rpartition("/")
    return direction or CAPTION_DIRECTION, metric


def t_interval(values: Iterable[float]) -> tuple[float, float]:
    """Mean and half-width of the two-sided 95% Student-t interval, t_{0.975, n-1} * s / sqrt(n) with s the
    sample standard deviation (ddof=1). The half-width is NaN below two values, the mean NaN for none."""
    values = np.asarray(list(values), dtype=float)
    if len(values) == 0:
        return math.nan, math.nan
    mean = float(values.mean())
    if len(values) < 2:
        return mean, math.nan
    half_width = stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / math.sqrt(len(values))
    return mean, float(half_width)


def summarize_seeds(results: pd.DataFrame) -> pd.DataFrame:
    """One row per (task, variant, protocol_fingerprint, direction, metric): n, mean, ci_low, ci_high, ci_kind
    (see the module docstring), the protocol(s) and split(s) as text, and the seeds."""
    _require_one_run_per_seed(results)
    rows = []
    for key, group in results.groupby(SUMMARY_KEYS, sort=False, dropna=False):
        rows.append(
            {
                **dict(zip(SUMMARY_KEYS, key, strict=True)),
                **_seed_interval(group),
                "protocol": joined(group["protocol"]),
                "split": joined(group["split"]),
                "seeds": tuple(sorted(group["seed"])),
            }
        )
    columns = SUMMARY_KEYS + ["n", "mean", "ci_low", "ci_high", "ci_kind", "protocol", "split", "seeds"]
    return pd.DataFrame(rows, columns=columns)


def _seed_interval(group: pd.DataFrame) -> dict:
    n = len(group)
    mean, half_width = t_interval(group["value"])
    if n >= 2:
        return {"n": n, "mean": mean, "ci_low": mean - half_width, "ci_high": mean + half_width, "ci_kind": "seeds"}
    low, high = group["ci_low"].iloc[0], group["ci_high"].iloc[0]
    if pd.notna(low) and pd.notna(high):
        return {"n": 1, "mean": mean, "ci_low": float(low), "ci_high": float(high), "ci_kind": "test-set bootstrap"}
    return {"n": 1, "mean": mean, "ci_low": math.nan, "ci_high": math.nan, "ci_kind": "none"}


def _require_one_run_per_seed(results: pd.DataFrame) -> None:
    """Two runs of one seed would count as two seeds and narrow the interval: refuse them."""
    duplicated = results[results.duplicated(SUMMARY_KEYS + ["seed"], keep=False)]
    if not duplicated.empty:
        first = duplicated.iloc[0]
        runs = ", ".join(map(str, duplicated["run_id"].unique()))
        raise ValueError(
            f"several results for one seed ({first['task']} {first['variant']} seed {first['seed']} "
            f"{first['direction']}/{first['metric']}, runs {runs}): keep one run per seed"
        )


def verdict_vs_reference(ci_low: float, ci_high: float, reference: PublishedValue | None, metric: str,
                         margin: float) -> str:
    """One of VERDICTS_VS_REFERENCE: an equivalence test of our 95% interval against reference ± margin."""
    if reference is None:
        return "no reference"
    if reference.pending:
        return "pending"
    if math.isnan(ci_low) or math.isnan(ci_high):
        return "no interval"
    if reference.value - margin <= ci_low and ci_high <= reference.value + margin:
        return "reproduced"
    if ci_low > reference.value + margin or ci_high < reference.value - margin:
        return "above" if (ci_low > reference.value) == higher_is_better(metric) else "below"
    return "inconclusive"


def ablation_verdict(delta_low: float, delta_high: float, metric: str, n_pairs: int) -> str:
    """One of ABLATION_VERDICTS, from the 95% interval of the paired Δ = variant − reference."""
    if n_pairs < 2:
        return "n < 2"
    if delta_low <= 0 <= delta_high:
        return "no clear difference"
    variant_is_higher = delta_low > 0
    return "helps" if variant_is_higher == higher_is_better(metric) else "hurts"


# ------------------------------------------------------------------------------------------ published rows


def published_value(
    baselines: pd.DataFrame, method: str, task: str, variant: str, direction: str, metric: str, splits: Iterable[str]
) -> PublishedValue | None:
    """`method`'s number for one cell on one of our splits, or None when it has none there (a number on
    another split is never taken: it measures other clips)."""
    rows = baselines[
        (baselines["method"] == method)
        & (baselines["task"] == task)
        & (baselines["variant"].fillna("") == variant)
        & (baselines["direction"] == direction)
        & (baselines["metric"] == metric)
        & baselines["split"].isin(list(splits))
    ]
    if rows.empty:
        return None
    if len(rows) > 1:
        raise ValueError(
            f"{len(rows)} {method} rows for {task} {variant} {direction}/{metric} on splits "
            f"{joined(rows['split'])}: keep one"
        )
    return PublishedValue(float(rows["value"].iloc[0]), str(rows["confidence"].iloc[0]), method,
                          str(rows["comparability"].iloc[0]))


def paper_value(baselines: pd.DataFrame, task: str, variant: str, direction: str, metric: str,
                splits: Iterable[str]) -> PublishedValue | None:
    return published_value(baselines, PAPER_METHOD, task, variant, direction, metric, splits)


def reference_value(baselines: pd.DataFrame, task: str, variant: str, direction: str, metric: str,
                    splits: Iterable[str]) -> PublishedValue | None:
    """The reference of one cell: the paper's number when transcribed, else the official log's, else the paper's
    pending row (shown as pending), else None."""
    splits = list(splits)
    found = [published_value(baselines, m, task, variant, direction, metric, splits) for m in REFERENCE_METHODS]
    filled = [v for v in found if v is not None and not v.pending]
    return filled[0] if filled else found[0]


def _baseline_rows(baselines: pd.DataFrame, task: str, direction: str) -> pd.DataFrame:
    """Other methods' rows for one table, with the row label: the method, its variant if any, and its split
    when the method has numbers on several splits of this task."""
    rows = baselines[(baselines["method"] != PAPER_METHOD) & (baselines["task"] == task)].copy()
    rows["variant"] = rows["variant"].fillna("")
    splits_per_method = rows.groupby("method")["split"].transform("nunique")
    rows = rows[rows["direction"] == direction]
    variant_part = rows["variant"].map(lambda v: f" ({v})" if v else "")
    split_part = np.where(splits_per_method[rows.index] > 1, " [" + rows["split"].astype(str) + "]", "")
    rows["label"] = rows["method"] + variant_part + split_part
    duplicated = rows[rows.duplicated(["label", "metric"], keep=False)]
    if not duplicated.empty:
        raise ValueError(f"several baseline rows for {task} {direction}: {sorted(set(duplicated['label']))}")
    return rows


# ------------------------------------------------------------------------------------------------ formatting


# Every metric is in points (R@K in %, caption scores x 100) or ranks, as the paper prints them: one decimal for
# every number of every metric, so one column never mixes "0.512" and "46.1" (issue 15).
DECIMALS = 1


def format_number(value: float) -> str:
    return f"{value:.{DECIMALS}f}"


def format_estimate(mean: float, ci_low: float, ci_high: float, ci_kind: str) -> str:
    """Mean and interval: "46.1 ± 0.8" for a seed interval (± the half-width), "46.1 [44.0, 48.2]" for a bootstrap
    one, the mean alone without an interval."""
    if ci_kind == "seeds":
        return f"{format_number(mean)} ± {format_number((ci_high - ci_low) / 2)}"
    if ci_kind == "test-set bootstrap":
        return f"{format_number(mean)} [{format_number(ci_low)}, {format_number(ci_high)}]"
    return format_number(mean)


def format_published(value: PublishedValue | None) -> str:
    """A published number with its confidence letter, "43.1 (S)"; "pending" when not transcribed."""
    if value is None:
        return ABSENT
    return "pending" if value.pending else f"{format_number(value.value)} ({value.confidence})"


def _format_delta(ours_mean: float, reference: PublishedValue | None) -> str:
    if reference is None:
        return ABSENT
    if reference.pending:
        return "pending"
    return format_signed(ours_mean - reference.value)


def format_signed(value: float) -> str:
    """A difference with its sign, "+1.0" / "-2.5"; one that rounds to zero prints "+0.0", never "-0.0"."""
    return f"{round(value, DECIMALS) + 0.0:+.{DECIMALS}f}"


def joined(values: Iterable) -> str:
    return ", ".join(sorted({str(v) for v in values}))


def _span(values: pd.Series) -> str:
    """One count over runs: "975" when all runs agree, "970–975" when they differ."""
    low, high = int(values.min()), int(values.max())
    return str(low) if low == high else f"{low}–{high}"


def _ordered(names: Iterable[str], order: tuple[str, ...]) -> list[str]:
    """Names in the canonical order, unknown ones after them alphabetically."""
    names = set(names)
    return [n for n in order if n in names] + sorted(names - set(order))


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


# ----------------------------------------------------------------------------------------------- summary

SUMMARY_COLUMNS = ["task", "main score", "ours", "reference", "reference source", "Δ vs reference", "verdict",
                   "seeds"]


def summary_table(
    results: pd.DataFrame, baselines: pd.DataFrame, main_scores: Mapping[str, str], reference_variant: str = "full",
    margins: Mapping[str, float] = DEFAULT_MARGINS,
) -> Table:
    """The report's first table: per task (and protocol fingerprint of ours), its main score, ours (the reference
    variant) against the reference on our split, Δ, the verdict and the seeds; a task without results says so."""
    rows = []
    for task, score in main_scores.items():
        direction, metric = parse_main_score(score)
        runs = results[(results["task"] == task) & (results["variant"] == reference_variant)
                       & (results["direction"] == direction) & (results["metric"] == metric)]
        if runs.empty:
            rows.append({"task": task, "main score": score, **dict.fromkeys(SUMMARY_COLUMNS[2:], ABSENT),
                         "verdict": f"no results of {reference_variant}"})
        for summary in summarize_seeds(runs).itertuples():
            split = set(runs.loc[runs["protocol_fingerprint"] == summary.protocol_fingerprint, "split"])
            cited = reference_value(baselines, task, reference_variant, direction, metric, split)
            source = ABSENT if cited is None else f"{cited.method}, {joined(split)}"
            rows.append({
                "task": task, "main score": score,
                "ours": format_estimate(summary.mean, summary.ci_low, summary.ci_high, summary.ci_kind),
                "reference": format_published(cited), "reference source": source,
                "Δ vs reference": _format_delta(summary.mean, cited),
                "verdict": verdict_vs_reference(summary.ci_low, summary.ci_high, cited, metric,
                                                margins.get(metric, 0.0)),
                "seeds": ", ".join(map(str, summary.seeds)),
            })
    footer = [f"ours: {reference_variant}; intervals, references and verdicts as in each task's section",
              _margin_line(_ordered({parse_main_score(s)[1] for s in main_scores.values()}, METRIC_ORDER), margins)]
    return Table("Main scores", pd.DataFrame(rows, columns=SUMMARY_COLUMNS), footer)


# ------------------------------------------------------------------------------------------ per-task tables


def task_tables(
    results: pd.DataFrame, baselines: pd.DataFrame, task: str, reference_variant: str = "full",
    margins: Mapping[str, float] = DEFAULT_MARGINS,
) -> list[Table]:
    """One table per direction of ours (the reference variant) in this task, none without such runs: the
    reference, ours with Δ and verdict, then published baselines of the same protocol and, after a separator,
    those of other protocols."""
    reference = results[(results["task"] == task) & (results["variant"] == reference_variant)]
    directions = _ordered(reference["direction"], DIRECTION_ORDER)
    return [_direction_table(reference, baselines, task, d, reference_variant, margins) for d in directions]


def _direction_table(
    reference: pd.DataFrame, baselines: pd.DataFrame, task: str, direction: str, reference_variant: str,
    margins: Mapping[str, float],
) -> Table:
    ours = reference[reference["direction"] == direction]
    summary = summarize_seeds(ours)
    splits = set(ours["split"])
    others = _baseline_rows(baselines, task, direction)
    paper_metrics = baselines.loc[
        (baselines["method"] == PAPER_METHOD) & (baselines["task"] == task) & (baselines["direction"] == direction),
        "metric",
    ]
    metrics = _ordered(set(summary["metric"]) | set(others["metric"]) | set(paper_metrics), METRIC_ORDER)
    fingerprints = list(dict.fromkeys(summary["protocol_fingerprint"]))
    # each fingerprint of ours against the reference on its own split(s): never a number on another split
    split_of = {fp: set(ours.loc[ours["protocol_fingerprint"] == fp, "split"]) for fp in fingerprints}
    cited_for = {fp: {m: reference_value(baselines, task, reference_variant, direction, m, split_of[fp])
                      for m in metrics} for fp in fingerprints}
    one_reference = len({frozenset(v) for v in split_of.values()}) <= 1
    cited = cited_for[fingerprints[0]] if fingerprints else {}

    rows = [{"": "reference", **{m: format_published(cited.get(m)) for m in metrics}}] if one_reference else []
    reference_lines = [_reference_line(cited, splits)] if one_reference else []
    ours_rows: set[int] = set()
    for fingerprint in fingerprints:
        tag = f", {fingerprint}" if len(fingerprints) > 1 else ""
        runs = ours[ours["protocol_fingerprint"] == fingerprint]
        if not one_reference:
            rows.append({"": f"reference{tag}", **{m: format_published(cited_for[fingerprint][m]) for m in metrics}})
            reference_lines.append(f"{fingerprint}: {_reference_line(cited_for[fingerprint], split_of[fingerprint])}")
        ours_rows.update(range(len(rows), len(rows) + 3))  # estimate, Δ and verdict
        rows += _ours_rows(
            summary[summary["protocol_fingerprint"] == fingerprint],
            cited_for[fingerprint],
            metrics,
            margins,
            label=f"ours ({reference_variant}, {_plural(runs['seed'].nunique(), 'seed')}{tag})",
            tag=tag,
        )
    first_baseline = len(rows)
    same = others["comparability"] == "same"
    rows += _published_rows(others[same], metrics)
    if (~same).any():
        rows.append({"": CONTEXT_SEPARATOR, **dict.fromkeys(metrics, "")})
        rows += _published_rows(others[~same], metrics)

    footer = [*reference_lines, _margin_line(metrics, margins),
              *(line for fingerprint in fingerprints for line in _footer_lines(ours, fingerprint))]
    if len(fingerprints) > 1:
        footer.insert(
            0,
            f"WARNING, mixed protocols: {reference_variant} was evaluated under "
            f"{len(fingerprints)} protocol fingerprints ({', '.join(fingerprints)}); "
            "each has its own rows and they are never averaged",
        )
    collapse_from = first_baseline if len(rows) - first_baseline > COLLAPSE_OVER else None
    return Table(f"{task} — {direction}", pd.DataFrame(rows, columns=[""] + metrics), footer, frozenset(ours_rows),
                 collapse_from)


def _reference_line(cited: Mapping[str, PublishedValue | None], splits: set[str]) -> str:
    """Whose number each reference cell is, e.g. "reference on test_1k_a: CLIP4VLA (official log) for R1, R5;
    CLIP4VLA (paper) (pending) for MdR"."""
    by_method: dict[str, list[str]] = {}
    for metric, value in cited.items():
        if value is not None:
            marks = " (pending)" * value.pending + " (context: another protocol)" * (value.comparability != "same")
            by_method.setdefault(f"{value.method}{marks}", []).append(metric)
    named = "; ".join(f"{method} for {', '.join(found)}" for method, found in by_method.items())
    return f"reference on {joined(splits)}: {named or 'none'}"


def _margin_line(metrics: list[str], margins: Mapping[str, float]) -> str:
    shown = ", ".join(f"{m} ±{format_number(margins[m])}" for m in metrics if m in margins)
    return f"verdict margins (reproduced: our whole interval within ± the margin of the reference): {shown}"


def _ours_rows(
    summary: pd.DataFrame, cited: Mapping[str, PublishedValue | None], metrics: list[str],
    margins: Mapping[str, float], label: str, tag: str,
) -> list[dict]:
    """The estimate, Δ vs reference and verdict rows of one fingerprint of ours."""
    by_metric = summary.set_index("metric")
    estimate, delta, verdict = {"": label}, {"": f"Δ vs reference{tag}"}, {"": f"verdict{tag}"}
    for metric in metrics:
        if metric not in by_metric.index:
            estimate[metric] = delta[metric] = verdict[metric] = ABSENT
            continue
        row = by_metric.loc[metric]
        estimate[metric] = format_estimate(row["mean"], row["ci_low"], row["ci_high"], row["ci_kind"])
        delta[metric] = _format_delta(row["mean"], cited[metric])
        verdict[metric] = verdict_vs_reference(row["ci_low"], row["ci_high"], cited[metric], metric,
                                               margins.get(metric, 0.0))
    return [estimate, delta, verdict]


def _published_rows(rows: pd.DataFrame, metrics: list[str]) -> list[dict]:
    out = []
    for label, group in rows.groupby("label", sort=False):
        by_metric = {r.metric: PublishedValue(float(r.value), str(r.confidence)) for r in group.itertuples()}
        out.append({"": label, **{m: format_published(by_metric.get(m)) for m in metrics}})
    return out


def _footer_lines(ours: pd.DataFrame, fingerprint: str) -> list[str]:
    """What one fingerprint of ours measured: protocol, split, seeds, then the coverage, e.g. "test clips used
    975 of 975; missing video 0, missing audio 12" (ranges when the runs differ)."""
    runs = ours[ours["protocol_fingerprint"] == fingerprint]
    seeds = ", ".join(map(str, sorted(runs["seed"].unique())))
    split = joined(runs["split"])
    return [
        f"ours: protocol {joined(runs['protocol'])}, fingerprint {fingerprint}, split {split}, seeds {seeds}",
        _coverage(runs),
    ]


def _coverage(runs: pd.DataFrame) -> str:
    """The items a set of runs was scored on, e.g. "test clips used 975 of 975; missing video 0, missing audio 12"."""
    return (
        f"{joined(runs['split'])} clips used {_span(runs['clips_used'])} of {_span(runs['clips_listed'])}; "
        f"missing video {_span(runs['missing_video'])}, missing audio {_span(runs['missing_audio'])}"
    )


# -------------------------------------------------------------------------------------------------- ablation

ABLATION_COLUMNS = [
    "task",
    "variant",
    "label",
    "score",
    "metric",
    "reference_fingerprint",
    "reference_protocol",
    "variant_fingerprint",
    "variant_protocol",
    "n_pairs",
    "seeds_paired",
    "seeds_only_reference",
    "seeds_only_variant",
    "reference_mean",
    "variant_mean",
    "delta_mean",
    "delta_low",
    "delta_high",
    "verdict",
    "paper_delta",
    "paper_delta_note",
]


def paired_ablation(
    results: pd.DataFrame, baselines: pd.DataFrame, main_scores: Mapping[str, str], reference_variant: str = "full"
) -> pd.DataFrame:
    """Numeric ablation rows (ABLATION_COLUMNS), one per (task, variant, variant fingerprint, reference
    fingerprint) on the task's main score; fingerprints need not match across variants (they are shown, and a
    variant with several gets a row for each). Means are over the paired seeds only, so delta_mean equals
    variant_mean − reference_mean. paper_delta is NaN with paper_delta_note "pending" or "not in paper" when
    the paper lacks a number for either variant."""
    _require_one_run_per_seed(results)
    rows = []
    for task, score in main_scores.items():
        direction, metric = parse_main_score(score)
        scored = results[
            (results["task"] == task) & (results["direction"] == direction) & (results["metric"] == metric)
        ]
        reference = scored[scored["variant"] == reference_variant]
        reference_groups = list(reference.groupby("protocol_fingerprint", sort=False)) or [(ABSENT, reference)]
        paper_reference = paper_value(baselines, task, reference_variant, direction, metric, scored["split"])
        variants = scored[scored["variant"] != reference_variant]
        for (variant, fingerprint), variant_runs in variants.groupby(["variant", "protocol_fingerprint"], sort=False):
            paper_variant = paper_value(baselines, task, variant, direction, metric, scored["split"])
            for reference_fingerprint, reference_runs in reference_groups:
                rows.append(
                    {
                        "task": task,
                        "variant": variant,
                        "score": score,
                        "metric": metric,
                        "reference_fingerprint": reference_fingerprint,
                        "reference_protocol": joined(reference_runs["protocol"]),
                        "variant_fingerprint": fingerprint,
                        "variant_protocol": joined(variant_runs["protocol"]),
                        **_paired_deltas(reference_runs, variant_runs, metric),
                        **_paper_delta(paper_reference, paper_variant),
                    }
                )
    frame = pd.DataFrame(rows, columns=ABLATION_COLUMNS)
    frame["label"] = _ablation_labels(frame)
    return frame


def _paired_deltas(reference_runs: pd.DataFrame, variant_runs: pd.DataFrame, metric: str) -> dict:
    paired = pd.merge(
        reference_runs[["seed", "value"]],
        variant_runs[["seed", "value"]],
        on="seed",
        suffixes=("_reference", "_variant"),
    ).sort_values("seed")
    mean, half_width = t_interval(paired["value_variant"] - paired["value_reference"])
    low, high = mean - half_width, mean + half_width
    return {
        "n_pairs": len(paired),
        "seeds_paired": tuple(paired["seed"]),
        "seeds_only_reference": tuple(sorted(set(reference_runs["seed"]) - set(paired["seed"]))),
        "seeds_only_variant": tuple(sorted(set(variant_runs["seed"]) - set(paired["seed"]))),
        "reference_mean": paired["value_reference"].mean(),
        "variant_mean": paired["value_variant"].mean(),
        "delta_mean": mean,
        "delta_low": low,
        "delta_high": high,
        "verdict": ablation_verdict(low, high, metric, len(paired)),
    }


def _paper_delta(reference: PublishedValue | None, variant: PublishedValue | None) -> dict:
    if reference is None or variant is None:
        return {"paper_delta": math.nan, "paper_delta_note": "not in paper"}
    if reference.pending or variant.pending:
        return {"paper_delta": math.nan, "paper_delta_note": "pending"}
    return {"paper_delta": variant.value - reference.value, "paper_delta_note": ""}


def _ablation_labels(frame: pd.DataFrame) -> pd.Series:
    """The variant name, with its fingerprints when one task has several rows for that variant."""
    repeated = frame.duplicated(["task", "variant"], keep=False)
    fingerprints = frame["variant_fingerprint"] + " vs " + frame["reference_fingerprint"]
    with_fingerprints = frame["variant"] + " (" + fingerprints + ")"
    return frame["variant"].where(~repeated, with_fingerprints)


def ablation_table(ablation: pd.DataFrame, results: pd.DataFrame, reference_variant: str = "full") -> Table:
    """The string table of paired_ablation's rows, its footer naming fingerprints, paired seeds and each task's
    coverage in `results`."""
    rows = [_ablation_cells(r) for r in ablation.itertuples()]
    columns = [
        "task",
        "variant",
        "score",
        "reference mean",
        "variant mean",
        "paired Δ ± CI",
        "n pairs",
        "verdict",
        "paper Δ",
    ]
    footer = _mixed_protocol_warnings(ablation, reference_variant)
    footer += [_pairing_line(r, reference_variant) for r in ablation.itertuples()]
    footer += [f"{task}: {_coverage(results[results['task'] == task])}" for task in dict.fromkeys(ablation["task"])]
    return Table(
        f"Ablations against {reference_variant} (main score, paired by seed)",
        pd.DataFrame(rows, columns=columns),
        footer,
    )


def _ablation_cells(row) -> dict[str, str]:
    return {
        "task": row.task,
        "variant": row.label,
        "score": row.score,
        "reference mean": _maybe_number(row.reference_mean),
        "variant mean": _maybe_number(row.variant_mean),
        "paired Δ ± CI": _format_paired_delta(row.delta_mean, row.delta_low, row.delta_high, row.n_pairs),
        "n pairs": str(row.n_pairs),
        "verdict": row.verdict,
        "paper Δ": row.paper_delta_note or format_signed(row.paper_delta),
    }


def _maybe_number(value: float) -> str:
    return ABSENT if math.isnan(value) else format_number(value)


def _format_paired_delta(mean: float, low: float, high: float, n_pairs: int) -> str:
    if n_pairs == 0:
        return ABSENT
    if n_pairs < 2:
        return format_signed(mean)
    return f"{format_signed(mean)} ± {format_number((high - low) / 2)}"


def _pairing_line(row, reference_variant: str) -> str:
    seeds = ", ".join(map(str, row.seeds_paired)) or "none"
    reference = (
        f"fingerprint {row.reference_fingerprint} ({row.reference_protocol})"
        if row.reference_fingerprint != ABSENT
        else "has no runs"
    )
    line = (
        f"{row.task} {row.label}: {reference_variant} {reference}, {row.variant} fingerprint "
        f"{row.variant_fingerprint} ({row.variant_protocol}); paired seeds {seeds}"
    )
    if row.seeds_only_reference:
        line += f"; unpaired, only in {reference_variant}: {', '.join(map(str, row.seeds_only_reference))}"
    if row.seeds_only_variant:
        line += f"; unpaired, only in {row.variant}: {', '.join(map(str, row.seeds_only_variant))}"
    return line


def _mixed_protocol_warnings(ablation: pd.DataFrame, reference_variant: str) -> list[str]:
    """A warning per (task, variant) evaluated under more than one protocol fingerprint, reference included."""
    fingerprints = pd.concat(
        [
            ablation[["task", "reference_fingerprint"]]
            .set_axis(["task", "fingerprint"], axis=1)
            .assign(variant=reference_variant),
            ablation[["task", "variant_fingerprint", "variant"]].set_axis(["task", "fingerprint", "variant"], axis=1),
        ]
    )
    fingerprints = fingerprints[fingerprints["fingerprint"] != ABSENT]
    warnings = []
    for (task, variant), group in fingerprints.groupby(["task", "variant"], sort=False):
        if group["fingerprint"].nunique() > 1:
            warnings.append(
                f"WARNING, mixed protocols: {task} {variant} has fingerprints "
                f"{joined(group['fingerprint'])}; they are never averaged"
            )
    return warnings
