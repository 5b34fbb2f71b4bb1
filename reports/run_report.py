"""report.md for one reproduction run: retrieval metrics at each evaluation point, training summaries, and what
was measured (split, counts, fingerprint, environment)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from benchmark.metrics import CAPTION_METRICS, RECALL_AT
from benchmark.records import RunRecord

METRIC_COLUMNS = [f"R{k}" for k in RECALL_AT] + ["MdR", "MnR"]
HEADERS = {f"R{k}": f"R@{k}" for k in RECALL_AT}  # MLflow keys cannot hold "@"; headers can


def retrieval_table(records: list[RunRecord]) -> pd.DataFrame:
    """Long frame of evaluation records -> rows (point, direction), columns R@1 ... MnR (with 95% intervals)."""
    rows = []
    for record in records:
        for key, value in record.metrics.items():
            parts = key.split("/")
            if len(parts) == 2 and parts[1] in METRIC_COLUMNS:
                low, high = record.extra.get("ci95", {}).get(key, (None, None))
                text = f"{value:.2f}" if low is None else f"{value:.2f} [{low:.1f}, {high:.1f}]"
                rows.append({"point": record.extra["label"], "direction": parts[0], "metric": parts[1],
                             "value": text})
    frame = pd.DataFrame(rows)
    order = list(dict.fromkeys(r.extra["label"] for r in records))
    table = frame.pivot_table(index=["point", "direction"], columns="metric", values="value", sort=False,
                              aggfunc="first")
    table = table.reindex(columns=METRIC_COLUMNS).rename(columns=HEADERS)
    return table.reindex(order, level="point")


def write_run_report(records: list[RunRecord], path: Path, title: str) -> Path:
    evaluations = [r for r in records if r.stage == "evaluate"]
    trainings = [r for r in records if r.stage != "evaluate"]
    lines = [f"# {title}", ""]
    captions = [r for r in evaluations if set(CAPTION_METRICS) <= set(r.metrics)]
    evaluations = [r for r in evaluations if r not in captions]
    if captions:
        first = captions[-1]
        table = pd.DataFrame([{"point": r.extra["label"], **{m: r.metrics[m] for m in CAPTION_METRICS}}
                              for r in captions])
        lines += [
            f"Task **{first.task}** v{first.task_version}, split `{first.split}`, protocol `{first.protocol}`, "
            f"seed {first.seed}; beam {first.extra.get('beam')}.",
            "",
            "## Captioning",
            "",
            "pycocoevalcap scores x 100 over the whole split (PTB tokenisation, all references of each clip).",
            "",
            table.round(2).to_markdown(index=False),
            "",
            f"Protocol fingerprint `{first.protocol_fingerprint}`; items: "
            + ", ".join(f"{k} {v}" for k, v in first.counts.items()) + ".",
            "",
        ]
    if evaluations:
        first = evaluations[-1]
        lines += [
            f"Task **{first.task}** v{first.task_version}, split `{first.split}`, protocol `{first.protocol}`, "
            f"seed {first.seed}. Chance R@1 = {first.extra['chance_R1']:.2f}%.",
            "",
            "## Retrieval",
            "",
            "R@K in %, MdR/MnR are ranks (lower is better), with 95% bootstrap intervals over the queries. "
            "`initial` is the model before any training (CLIP zero-shot, or chance for random weights), "
            "`pretrained` after pre-training, `finetuned` after fine-tuning.",
            "",
            retrieval_table(evaluations).reset_index().to_markdown(index=False),
            "",
            f"Protocol fingerprint `{first.protocol_fingerprint}`; items: "
            + ", ".join(f"{k} {v}" for k, v in first.counts.items()) + ".",
            "",
        ]
    if trainings:
        lines += ["## Training", "", "| stage | pairs | steps | final loss terms | seconds | samples/s |",
                  "|---|---|---|---|---|---|"]
        for r in trainings:
            terms = ", ".join(f"{k.split('/')[1]} {v:.3f}" for k, v in r.metrics.items() if k.startswith("final/"))
            lines.append(f"| {r.name} | {r.counts['pairs']} | {r.metrics['steps']} | {terms} | "
                         f"{r.metrics['seconds']:.1f} | {r.metrics['samples_per_second']:.1f} |")
        lines.append("")
    if records:
        env = records[0].environment
        packages = ", ".join(f"{k} {v}" for k, v in env["packages"].items())
        lines += ["## Environment", "", f"git {env['git_sha']} (dirty: {env['git_dirty']}), device {env['device']}, "
                  f"world size {env['world_size']}; {packages}.", ""]
    path.write_text("\n".join(lines))
    return path
