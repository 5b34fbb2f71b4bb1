"""From a tracking store to the comparison report: the runs of one experiment as long pandas frames.

`results` holds one row per final metric of a final evaluation (after fine-tuning, or a standalone evaluation),
`curves` the training histories; reports/render.py puts them beside the paper and the published baselines.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

import baselines
from benchmark.errors import UserError
from benchmark.evaluate import DIRECTIONS
from benchmark.metrics import CAPTION_METRICS
from benchmark.records import invocation
from benchmark.registry import closest, load_tasks
from benchmark.tracking import Tracker
from reports.render import write_comparison_report
from reports.tables import DEFAULT_MARGINS

log = logging.getLogger("clip4vla")
FINAL_LABELS = ("finetuned", "evaluated")  # "initial" and "pretrained" are the learning signal, not the result
RANK_METRICS = ("R1", "R5", "R10", "MdR", "MnR")
SELECTION_KEY = "select/score"
PROVENANCE_TAGS = ("split", "protocol", "protocol_fingerprint", "data_manifest", "data_generated", "git_sha",
                   "git_dirty", "device", "world_size", "hardware", "command")
COUNTS = ("clips_used", "clips_listed", "missing_video", "missing_audio")
# With no audio at all the fused feature is the video feature (spec §2.5: an item without audio is its video
# alone), so a video-only run's t2v / v2t also stand for t2va / va2t, and the no-audio ablation pairs with the
# full model's main score.
VIDEO_ONLY_ALIASES = {"t2v": "t2va", "v2t": "va2t"}


def _variants(run: dict[str, Any], plan_variants: dict[str, str]) -> list[str]:
    """The variants a run serves: its plan run's tag (updated when a later suite shares the run), else its own."""
    tag = plan_variants.get(run["tags"].get("sweep.key", ""), run["tags"].get("variant", "default"))
    return [v for v in tag.split(",") if v] or ["default"]


def _video_only(run: dict[str, Any]) -> bool:
    modalities = run["params"].get("modalities", "None")
    return modalities != "None" and "audio" not in modalities


def _metric_rows(run: dict[str, Any], intervals: Mapping[str, tuple[float, float]]) -> list[dict[str, Any]]:
    """A row per final metric, with its 95% interval from `intervals` (the results.json of the run)."""
    metrics, rows = run["metrics"], []
    for key, value in metrics.items():
        direction, _, metric = key.partition("/")
        if direction in DIRECTIONS and metric in RANK_METRICS:
            low, high = intervals.get(key, (None, None))
            rows.append({"direction": direction, "metric": metric, "value": value, "ci_low": low, "ci_high": high})
            if _video_only(run) and direction in VIDEO_ONLY_ALIASES:
                rows.append({**rows[-1], "direction": VIDEO_ONLY_ALIASES[direction]})
        elif key in CAPTION_METRICS:
            rows.append({"direction": "caption", "metric": key, "value": value, "ci_low": None, "ci_high": None})
    return rows


def curve_keys(run: dict[str, Any]) -> list[str]:
    """The histories a training run's curves plot: each loss term (train/<term>_loss; their sum train/loss
    differs in its terms by variant, so it is not compared) and the model-selection score."""
    terms = sorted(k for k in run["metrics"] if k.startswith("train/") and k.endswith("_loss"))
    return [*terms, SELECTION_KEY]


def _provenance_row(run: dict[str, Any]) -> dict[str, Any]:
    """What produced one result: its run's tags (code, data, hardware, command) and package versions."""
    tags = run["tags"]
    packages = ", ".join(f"{k.removeprefix('version.')} {v}" for k, v in sorted(tags.items())
                         if k.startswith("version."))
    return {**{t: tags.get(t, "") for t in PROVENANCE_TAGS}, "packages": packages}


def collect(tracker: Tracker) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(results, curves, provenance) of the tracker's experiment; provenance has a row per result run. Only
    FINISHED runs count, and of several results for one (task, variant, seed, protocol fingerprint) only the newest:
    a plan run that was run again after a change of its suite, or a single-run verb run twice, supersedes the older
    one instead of counting as another seed."""
    runs = tracker.search(finished_only=True)
    plan_variants: dict[str, str] = {}
    for run in runs:  # newest first
        key = run["tags"].get("sweep.key")
        if key and run["tags"].get("role") == "plan-run":
            plan_variants.setdefault(key, run["tags"].get("variant", ""))
    results, curves, provenance, seen = [], [], [], set()
    for run in runs:
        tags = run["tags"]
        if tags.get("sweep.key") and tags["sweep.key"] not in plan_variants:  # its plan run did not finish
            continue
        # pre-training stages of one plan (e.g. stage 1 and stage 2) are told apart by their plan step
        task = tags.get("sweep.step", tags.get("task", "")) if tags.get("stage") == "pretrain" else tags.get("task", "")
        common = {"task": task, "seed": int(tags.get("seed", 0)), "run_id": run["run_id"]}
        for variant in _variants(run, plan_variants):
            identity = (task, variant, common["seed"], tags.get("stage"), tags.get("label"),
                        tags.get("protocol_fingerprint"))
            if identity in seen:  # newest first: an older result of the same thing
                continue
            seen.add(identity)
            if tags.get("stage") == "evaluate" and tags.get("label") in FINAL_LABELS:
                info = {**common, "variant": variant, "split": tags.get("split", ""),
                        "protocol": tags.get("protocol", ""),
                        "protocol_fingerprint": tags.get("protocol_fingerprint", ""),
                        **{c: int(tags.get(f"count.{c}", 0)) for c in COUNTS}}
                record = tracker.artifact_json(run["run_id"], "results.json") or {}
                intervals = record.get("extra", {}).get("ci95", {})
                results += [{**info, **row} for row in _metric_rows(run, intervals)]
                provenance.append({**common, "variant": variant, **_provenance_row(run)})
            elif tags.get("stage") in ("pretrain", "finetune"):
                history = [(key, *point) for key in curve_keys(run) for point in tracker.history(run["run_id"], key)]
                curves += [{**common, "stage": tags["stage"], "variant": variant, "step": step, "key": key,
                            "value": value} for key, step, value in history]
    return (pd.DataFrame(results, columns=RESULT_COLUMNS), pd.DataFrame(curves, columns=CURVE_COLUMNS),
            pd.DataFrame(provenance, columns=PROVENANCE_COLUMNS))


RESULT_COLUMNS = ["task", "variant", "seed", "split", "direction", "metric", "value", "protocol",
                  "protocol_fingerprint", *COUNTS, "ci_low", "ci_high", "run_id"]
CURVE_COLUMNS = ["task", "stage", "variant", "seed", "step", "key", "value", "run_id"]
PROVENANCE_COLUMNS = ["task", "variant", "seed", "run_id", *PROVENANCE_TAGS, "packages"]


def main_scores(tasks: list[str]) -> dict[str, str]:
    """Each task's main score ("t2va/R1", or "CIDEr" for captioning), in registry order."""
    registry = load_tasks()
    return {name: registry.get(name).spec.main_score for name in registry if name in tasks}


def write_report(tracker: Tracker, out: Path, title: str, reference_variant: str = "full",
                 published: Path | None = None, margins: Mapping[str, float] | None = None) -> dict[str, Path]:
    """report.md, report.html and tables.tex (+ plots/) in `out` from the tracker's experiment, against the
    shipped baselines or a `published` CSV of the same columns (e.g. a copy with the paper's numbers filled in)."""
    results, curves, provenance = collect(tracker)
    if results.empty:
        log.warning("no finished evaluation in experiment %s of %s: the report has no results of ours",
                    tracker.experiment, tracker.uri)
    variants = sorted(set(results["variant"]))
    if variants and reference_variant not in variants:
        if reference_variant != "full" or len(variants) > 1:
            raise UserError(f"reference variant '{reference_variant}' has no results"
                            f"{closest(reference_variant, variants)} (variants: {', '.join(variants)})")
        reference_variant = variants[0]  # runs made outside a suite: their one variant is the reference
    scores = main_scores(sorted(set(results["task"])))
    return write_comparison_report(results, curves, baselines.load(published), out, title, scores, reference_variant,
                                   {**DEFAULT_MARGINS, **(margins or {})}, provenance, invocation())
