"""The comparison report: our seeds against the paper and published baselines, the ablations, training curves.

One document (headings, paragraphs, tables, images) is built once and written three ways: report.md (links the
PNGs in plots/), report.html (self-contained, PNGs embedded) and tables.tex (the tables only, booktabs).
"""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from reports.plots import plot_ablation, plot_training_curves
from reports.tables import (
    ABLATION_VERDICTS,
    CONTEXT_SEPARATOR,
    DEFAULT_MARGINS,
    VERDICTS_VS_REFERENCE,
    Table,
    ablation_table,
    paired_ablation,
    task_tables,
)


@dataclass
class Heading:
    level: int
    text: str


@dataclass
class Paragraph:
    text: str


@dataclass
class Image:
    path: Path  # relative to the report folder
    caption: str


Block = Heading | Paragraph | Table | Image

STATISTICS = (
    "Ours: mean over seeds with a 95% interval. With two or more seeds the Student-t interval over seeds, printed "
    "as mean ± half-width; with one seed that run's test-set bootstrap interval, printed as mean [low, high], or "
    "no interval. Runs under different protocol fingerprints are never averaged together. "
    "Reference: the paper's number on our split when transcribed, else the authors' released log's (CLIP4VLA "
    "(official log)), never a number on another split; under each table, whose it is. "
    "Δ vs reference = ours mean − reference value. Published numbers carry their confidence: E exact from the "
    "primary source, S exact from a secondary source, R recalled and unverified; pending = not transcribed yet. "
    "Lower is better for MdR and MnR, higher for everything else."
)


def write_comparison_report(
    results: pd.DataFrame,
    curves: pd.DataFrame,
    baselines: pd.DataFrame,
    out_dir: Path,
    title: str,
    main_scores: Mapping[str, str],
    reference_variant: str = "full",
    margins: Mapping[str, float] = DEFAULT_MARGINS,
) -> dict[str, Path]:
    """Write report.md, report.html, tables.tex and plots/*.png into out_dir; returns {"md", "html", "tex"}."""
    out_dir = Path(out_dir)
    (out_dir / "plots").mkdir(parents=True, exist_ok=True)
    blocks = [Heading(1, title), Paragraph(STATISTICS),
              Paragraph(_vocabulary("Verdicts vs reference", VERDICTS_VS_REFERENCE))]
    blocks += _task_sections(results, baselines, main_scores, reference_variant, margins)
    blocks += _ablation_section(results, baselines, main_scores, reference_variant, out_dir)
    blocks += _curve_section(curves, out_dir)

    paths = {"md": out_dir / "report.md", "html": out_dir / "report.html", "tex": out_dir / "tables.tex"}
    paths["md"].write_text(render_markdown(blocks), encoding="utf-8")
    paths["html"].write_text(render_html(blocks, title, out_dir), encoding="utf-8")
    paths["tex"].write_text(render_tex([b for b in blocks if isinstance(b, Table)]), encoding="utf-8")
    return paths


def _vocabulary(name: str, meanings: Mapping[str, str]) -> str:
    return f"{name}: " + "; ".join(f"“{word}” {meaning}" for word, meaning in meanings.items()) + "."


def _task_sections(
    results: pd.DataFrame, baselines: pd.DataFrame, main_scores: Mapping[str, str], reference_variant: str,
    margins: Mapping[str, float],
) -> list[Block]:
    """A section per task in main_scores order; tasks we ran without a main score come last, said so."""
    unscored = sorted(set(results["task"]) - set(main_scores))
    blocks: list[Block] = []
    for task in [*main_scores, *unscored]:
        blocks.append(Heading(2, task))
        score = main_scores.get(task)
        blocks.append(Paragraph(f"Main score: {score}." if score else "No main score given: not in the ablations."))
        tables = task_tables(results, baselines, task, reference_variant, margins)
        blocks += tables or [Paragraph(f"No results of ours ({reference_variant}) for this task.")]
    return blocks


def _ablation_section(
    results: pd.DataFrame,
    baselines: pd.DataFrame,
    main_scores: Mapping[str, str],
    reference_variant: str,
    out_dir: Path,
) -> list[Block]:
    blocks: list[Block] = [
        Heading(2, "Ablations"),
        Paragraph(
            f"Each variant against {reference_variant} on the task's main score, paired by seed: Δ = variant − "
            f"{reference_variant} per seed, means over the paired seeds, 95% Student-t interval over the "
            "paired deltas. " + _vocabulary("Verdicts", ABLATION_VERDICTS)
        ),
    ]
    ablation = paired_ablation(results, baselines, main_scores, reference_variant)
    if ablation.empty:
        return blocks + [Paragraph("No ablation runs.")]
    path = plot_ablation(ablation, out_dir / "plots" / "ablation.png")
    return blocks + [
        ablation_table(ablation, results, reference_variant),
        Image(path.relative_to(out_dir), "Paired Δ of the main score, 95% interval"),
    ]


def _curve_section(curves: pd.DataFrame, out_dir: Path) -> list[Block]:
    blocks: list[Block] = [Heading(2, "Training curves")]
    paths = plot_training_curves(curves, out_dir / "plots")
    if not paths:
        return blocks + [Paragraph("No training curves recorded.")]
    caption = "{}, {}: train/loss per variant and seed; markers: select/score (model selection)"
    return blocks + [Image(path.relative_to(out_dir), caption.format(*key)) for key, path in paths.items()]


# ---------------------------------------------------------------------------------------------------- Markdown


def render_markdown(blocks: list[Block]) -> str:
    lines: list[str] = []
    for block in blocks:
        if isinstance(block, Heading):
            lines += ["#" * block.level + " " + block.text, ""]
        elif isinstance(block, Paragraph):
            lines += [block.text, ""]
        elif isinstance(block, Table):
            lines += [f"### {block.title}", "", block.frame.to_markdown(index=False, disable_numparse=True), ""]
            lines += [f"- {line}" for line in block.footer] + ([""] if block.footer else [])
        else:
            lines += [f"![{block.caption}]({block.path.as_posix()})", ""]
    return "\n".join(lines)


# -------------------------------------------------------------------------------------------------------- HTML

CSS = """
body { font-family: sans-serif; max-width: 1100px; margin: 2em auto; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0; font-size: 0.9em; }
th, td { padding: 0.25em 0.7em; border-bottom: 1px solid #ddd; text-align: right; }
td:first-child, th:first-child { text-align: left; }
.footer { font-size: 0.85em; color: #555; }
img { max-width: 100%; }
"""


def render_html(blocks: list[Block], title: str, out_dir: Path) -> str:
    """A self-contained page: images are embedded as base64 PNG data."""
    body: list[str] = []
    for block in blocks:
        if isinstance(block, Heading):
            body.append(f"<h{block.level}>{html.escape(block.text)}</h{block.level}>")
        elif isinstance(block, Paragraph):
            body.append(f"<p>{html.escape(block.text)}</p>")
        elif isinstance(block, Table):
            body.append(f"<h3>{html.escape(block.title)}</h3>")
            body.append(block.frame.to_html(index=False, border=0))
            if block.footer:
                items = "".join(f"<li>{html.escape(line)}</li>" for line in block.footer)
                body.append(f'<ul class="footer">{items}</ul>')
        else:
            data = base64.b64encode((out_dir / block.path).read_bytes()).decode("ascii")
            body.append(
                f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(block.caption)}">'
                f"<figcaption>{html.escape(block.caption)}</figcaption></figure>"
            )
    return (
        f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{CSS}</style></head>\n<body>\n" + "\n".join(body) + "\n</body></html>\n"
    )


# ------------------------------------------------------------------------------------------------------- LaTeX

LATEX_REPLACEMENTS = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "<": r"$<$",
    ">": r"$>$",
    "±": r"$\pm$",
    "Δ": r"$\Delta$",
    "−": "$-$",
    "–": "--",
    "—": "---",
    "“": "``",
    "”": "''",
}
LATEX_SPECIAL = re.compile("|".join(map(re.escape, LATEX_REPLACEMENTS)))


def latex_escape(text: str) -> str:
    """Escape LaTeX's special characters in one pass, so replacements are never escaped again."""
    return LATEX_SPECIAL.sub(lambda match: LATEX_REPLACEMENTS[match.group()], str(text))


def _tex_row(cells: tuple) -> str:
    """A table row; the separator before other-protocol baselines becomes a rule and a spanning label."""
    if cells[0] == CONTEXT_SEPARATOR:
        return rf"\midrule \multicolumn{{{len(cells)}}}{{l}}{{\emph{{{latex_escape(CONTEXT_SEPARATOR)}}}}} \\"
    return " & ".join(latex_escape(cell) for cell in cells) + r" \\"


def render_tex(tables: list[Table]) -> str:
    """Each table as a booktabs tabular in a table float, its footer in small print under it."""
    parts = ["% Comparison tables, generated by reports/render.py. Needs \\usepackage{booktabs}.", ""]
    for table in tables:
        frame = table.frame
        header = " & ".join(latex_escape(c) for c in frame.columns) + r" \\"
        rows = [_tex_row(row) for row in frame.itertuples(index=False)]
        footer = "".join(latex_escape(line) + r"\par " for line in table.footer)
        parts += [
            r"\begin{table}[ht]",
            r"\centering",
            rf"\caption{{{latex_escape(table.title)}}}",
            rf"\begin{{tabular}}{{{'l' * len(frame.columns)}}}",
            r"\toprule",
            header,
            r"\midrule",
            *rows,
            r"\bottomrule",
            r"\end{tabular}",
            *([rf"\par\smallskip{{\footnotesize {footer}}}"] if footer else []),
            r"\end{table}",
            "",
        ]
    return "\n".join(parts)
