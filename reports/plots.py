"""PNG figures of the comparison report: training curves and the ablation bars."""

from __future__ import annotations

import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on the machines that build reports

import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

LOSS_KEY = "train/loss"
SELECTION_KEY = "select/score"
DPI = 100


def _slug(text: str) -> str:
    """A file-name-safe form: "audioset+howto100m" -> "audioset-howto100m"."""
    return re.sub(r"[^A-Za-z0-9_.]+", "-", text).strip("-")


def _variant_colours(variants) -> dict[str, tuple]:
    palette = matplotlib.colormaps["tab10"].colors
    return {variant: palette[i % len(palette)] for i, variant in enumerate(dict.fromkeys(variants))}


def plot_training_curves(curves: pd.DataFrame, out_dir: Path) -> dict[tuple[str, str], Path]:
    """One PNG per (task, stage): train/loss against step, a line per (variant, seed) coloured by variant, and
    select/score as markers on a second axis when recorded. Returns {(task, stage): path}, empty for no curves."""
    paths = {}
    for (task, stage), group in curves.groupby(["task", "stage"], sort=False):
        paths[task, stage] = Path(out_dir) / f"curves_{_slug(task)}_{_slug(stage)}.png"
        _plot_one_training(group, f"{task}, {stage}", paths[task, stage])
    return paths


def _plot_one_training(group: pd.DataFrame, title: str, path: Path) -> None:
    colours = _variant_colours(group["variant"])
    fig, loss_axis = plt.subplots(figsize=(7, 4), layout="constrained")
    has_selection = (group["key"] == SELECTION_KEY).any()
    selection_axis = loss_axis.twinx() if has_selection else None
    labelled = set()  # one legend entry per variant: colour tells variants apart, seeds share it
    for (variant, _seed), run in group.groupby(["variant", "seed"], sort=False):
        loss = run[run["key"] == LOSS_KEY].sort_values("step")
        label = variant if variant not in labelled else "_nolegend_"
        labelled.add(variant)
        loss_axis.plot(loss["step"], loss["value"], color=colours[variant], linewidth=1, label=label)
        if selection_axis is not None:
            selected = run[run["key"] == SELECTION_KEY].sort_values("step")
            selection_axis.plot(
                selected["step"], selected["value"], linestyle="none", marker="o", color=colours[variant], markersize=4
            )
    loss_axis.set_xlabel("step")
    loss_axis.set_ylabel(f"{LOSS_KEY} (lines, one per seed)")
    if selection_axis is not None:
        selection_axis.set_ylabel(f"{SELECTION_KEY} (markers)")
    loss_axis.set_title(title)
    fig.legend(loc="outside right upper", fontsize="small")
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


def plot_ablation(ablation: pd.DataFrame, path: Path) -> Path:
    """Bars of the paired Δ of each task's main score: a panel per task (scores differ in scale), a bar per
    ablation row coloured by variant, the 95% interval as error bars (none below two pairs), a line at 0."""
    colours = _variant_colours(ablation["variant"])
    tasks = list(dict.fromkeys(ablation["task"]))
    widths = [ablation["task"].eq(task).sum() + 1 for task in tasks]
    fig, axes = plt.subplots(
        1, len(tasks), figsize=(1.3 * sum(widths) + 1, 4), width_ratios=widths, squeeze=False, layout="constrained"
    )
    for axis, task in zip(axes[0], tasks, strict=True):
        rows = ablation[ablation["task"] == task]
        positions = np.arange(len(rows))
        half_widths = np.where(rows["n_pairs"] >= 2, (rows["delta_high"] - rows["delta_low"]) / 2, np.nan)
        axis.bar(
            positions, rows["delta_mean"], yerr=half_widths, capsize=4, color=[colours[v] for v in rows["variant"]]
        )
        axis.axhline(0, color="black", linewidth=0.8)
        axis.set_xticks(positions, rows["label"], rotation=20, ha="right", fontsize="small")
        axis.set_xlim(-0.75, len(rows) - 0.25)
        axis.set_title(f"{task}\nΔ {rows['score'].iloc[0]}", fontsize="medium")
    axes[0][0].set_ylabel("paired Δ vs reference")
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path
