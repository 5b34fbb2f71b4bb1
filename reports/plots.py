"""PNG figures of the comparison report: training curves and the ablation bars."""

from __future__ import annotations

import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on the machines that build reports

import matplotlib.lines  # noqa: E402  (the backend must be chosen first)
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

SELECTION_KEY = "select/score"
DPI = 100
PANEL_INCHES = (3.6, 2.8)  # one panel; at DPI 100 a row of three fits a 1100-px page at full size


def _slug(text: str) -> str:
    """A file-name-safe form: "audioset+howto100m" -> "audioset-howto100m"."""
    return re.sub(r"[^A-Za-z0-9_.]+", "-", text).strip("-")


def _variant_colours(variants) -> dict[str, tuple]:
    palette = matplotlib.colormaps["tab10"].colors
    return {variant: palette[i % len(palette)] for i, variant in enumerate(dict.fromkeys(variants))}


def plot_training_curves(curves: pd.DataFrame, out_dir: Path) -> dict[tuple[str, str], Path]:
    """One PNG per (task, stage): a panel per loss term and one for select/score (model selection) when recorded,
    each against step with a line per (variant, seed) coloured by variant. Returns {(task, stage): path}, empty for
    no curves."""
    paths = {}
    for (task, stage), group in curves.groupby(["task", "stage"], sort=False):
        paths[task, stage] = Path(out_dir) / f"curves_{_slug(task)}_{_slug(stage)}.png"
        _plot_one_training(group, f"{task}, {stage}", paths[task, stage])
    return paths


def _plot_one_training(group: pd.DataFrame, title: str, path: Path) -> None:
    colours = _variant_colours(group["variant"])
    keys = sorted(set(group["key"]) - {SELECTION_KEY}) + [SELECTION_KEY] * int((group["key"] == SELECTION_KEY).any())
    columns = min(3, len(keys))
    rows = -(-len(keys) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(PANEL_INCHES[0] * columns, PANEL_INCHES[1] * rows + 0.4),
                             squeeze=False, layout="constrained")
    for axis, key in zip(axes.flat, keys, strict=False):  # the grid may have spare panels
        for (variant, _seed), run in group[group["key"] == key].groupby(["variant", "seed"], sort=False):
            run = run.sort_values("step")
            marker = {"marker": "o", "markersize": 3} if key == SELECTION_KEY else {}
            axis.plot(run["step"], run["value"], color=colours[variant], linewidth=1, **marker)
        axis.set_title(key, fontsize="medium")
        axis.set_xlabel("step", fontsize="small")
        axis.tick_params(labelsize="small")
    for axis in list(axes.flat)[len(keys):]:
        axis.set_visible(False)  # no empty panels
    handles = [matplotlib.lines.Line2D([], [], color=c, label=v) for v, c in colours.items()]
    fig.legend(handles=handles, loc="outside upper center", ncols=min(len(handles), 6), fontsize="small")
    fig.suptitle(f"{title}: a line per seed, coloured by variant", fontsize="medium")
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


def plot_ablation(ablation: pd.DataFrame, path: Path) -> Path | None:
    """Bars of the paired Δ of each task's main score: a panel per task with paired rows (scores differ in scale), a
    bar per ablation row coloured by variant, the 95% interval as error bars (none below two pairs) and n under
    each bar, a line at 0. None when no row has a paired seed (no empty panels)."""
    ablation = ablation[ablation["n_pairs"] > 0]
    if ablation.empty:
        return None
    colours = _variant_colours(ablation["variant"])
    tasks = list(dict.fromkeys(ablation["task"]))
    fig, axes = plt.subplots(1, len(tasks), figsize=(PANEL_INCHES[0] * len(tasks), PANEL_INCHES[1] + 0.8),
                             squeeze=False, layout="constrained")
    for axis, task in zip(axes[0], tasks, strict=True):
        rows = ablation[ablation["task"] == task]
        positions = np.arange(len(rows))
        half_widths = np.where(rows["n_pairs"] >= 2, (rows["delta_high"] - rows["delta_low"]) / 2, np.nan)
        axis.bar(
            positions, rows["delta_mean"], yerr=half_widths, capsize=4, color=[colours[v] for v in rows["variant"]]
        )
        axis.axhline(0, color="black", linewidth=0.8)
        labels = [f"{label}\nn={n}" for label, n in zip(rows["label"], rows["n_pairs"], strict=True)]
        axis.set_xticks(positions, labels, fontsize="small")
        axis.set_xlim(-0.75, len(rows) - 0.25)
        axis.tick_params(axis="y", labelsize="small")
        axis.set_title(f"{task}\npaired Δ {rows['score'].iloc[0]}", fontsize="medium")
    axes[0][0].set_ylabel("variant − reference", fontsize="small")
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path
