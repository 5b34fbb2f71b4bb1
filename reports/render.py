"""The comparison report: our seeds against the paper and published baselines, the ablations, training curves.

One document is built once and written three ways: report.md (links the PNGs in plots/), report.html
(self-contained, PNGs embedded) and tables.tex (the result tables only, booktabs). Its order: a banner when the
numbers come from generated data, the summary (each task's main score against its reference), the contents, how to
read it, a section per task, the ablations, the training curves, and the provenance (code, data, hardware,
commands).
"""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from benchmark.records import git_state
from reports.plots import plot_ablation, plot_training_curves
from reports.tables import (
    ABLATION_VERDICTS,
    CONTEXT_SEPARATOR,
    DEFAULT_MARGINS,
    VERDICTS_VS_REFERENCE,
    Table,
    ablation_table,
    joined,
    paired_ablation,
    summary_table,
    task_tables,
)


@dataclass
class Heading:
    level: int
    text: str

    @property
    def anchor(self) -> str:
        """GitHub's anchor for a Markdown heading (lower case, punctuation dropped, spaces as hyphens); the HTML
        report uses the same ids, so the contents links work in both."""
        return re.sub(r"[^\w\- ]", "", self.text.lower()).replace(" ", "-")


@dataclass
class Paragraph:
    text: str


@dataclass
class Banner:
    """A warning shown above everything else (report.md and report.html)."""

    text: str


@dataclass
class Contents:
    """The list of the report's sections (level-2 headings), with links."""


@dataclass
class Image:
    path: Path  # relative to the report folder
    caption: str


Block = Heading | Paragraph | Banner | Contents | Table | Image

STATISTICS = (
    "Ours: mean over seeds with a 95% interval. With two or more seeds the Student-t interval over seeds, printed "
    "as mean ± half-width; with one seed that run's test-set bootstrap interval, printed as mean [low, high], or "
    "no interval. Runs under different protocol fingerprints are never averaged together. "
    "Reference: the paper's number on our split when transcribed, else the authors' released log's (CLIP4VLA "
    "(official log)), never a number on another split; under each table, whose it is. "
    "Δ vs reference = ours mean − reference value. Published numbers carry their confidence: E exact from the "
    "primary source, S exact from a secondary source, R recalled and unverified; pending = not transcribed yet. "
    "Lower is better for MdR and MnR, higher for everything else. Every number has one decimal."
)
GENERATED_DATA = (
    "Generated data: these numbers were measured on datasets clip4vla generated (the smoke job, or a test), with "
    "models that small. They show that every stage ran end to end; they say nothing about CLIP4VLA's accuracy."
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
    provenance: pd.DataFrame | None = None,
    command: str = "",
) -> dict[str, Path]:
    """Write report.md, report.html, tables.tex and plots/*.png into out_dir; returns {"md", "html", "tex"}.
    `provenance` (reports/collect.py's, a row per result run) feeds the banner and the provenance section;
    `command` is the command line that wrote the report."""
    out_dir = Path(out_dir)
    (out_dir / "plots").mkdir(parents=True, exist_ok=True)
    provenance = pd.DataFrame(columns=["data_generated"]) if provenance is None else provenance
    summary = summary_table(results, baselines, main_scores, reference_variant, margins)
    blocks: list[Block] = [Heading(1, title)]
    if provenance["data_generated"].astype(str).eq("True").any():
        blocks.append(Banner(GENERATED_DATA))
    blocks += [Heading(2, "Summary"), summary, Contents(), Heading(2, "How to read this report"),
               Paragraph(STATISTICS), Paragraph(_vocabulary("Verdicts vs reference", VERDICTS_VS_REFERENCE))]
    blocks += _task_sections(results, baselines, main_scores, reference_variant, margins)
    blocks += _ablation_section(results, baselines, main_scores, reference_variant, out_dir)
    blocks += _curve_section(curves, out_dir)
    tex_tables = [b for b in blocks if isinstance(b, Table)]  # the paper's kind of tables; provenance is not one
    blocks += _provenance_section(provenance, command)

    paths = {"md": out_dir / "report.md", "html": out_dir / "report.html", "tex": out_dir / "tables.tex"}
    paths["md"].write_text(render_markdown(blocks), encoding="utf-8")
    paths["html"].write_text(render_html(blocks, title, out_dir), encoding="utf-8")
    paths["tex"].write_text(render_tex(tex_tables), encoding="utf-8")
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
    blocks.append(ablation_table(ablation, results, reference_variant))
    path = plot_ablation(ablation, out_dir / "plots" / "ablation.png")
    if path is None:
        return blocks + [Paragraph("No variant shares a seed with the reference: nothing to plot.")]
    return blocks + [Image(path.relative_to(out_dir), "Paired Δ of each task's main score (variant − reference), "
                           "95% interval over the paired seeds; n = paired seeds")]


def _curve_section(curves: pd.DataFrame, out_dir: Path) -> list[Block]:
    blocks: list[Block] = [Heading(2, "Training curves")]
    paths = plot_training_curves(curves, out_dir / "plots")
    if not paths:
        return blocks + [Paragraph("No training curves recorded.")]
    caption = "{}, {}: each loss term and the model-selection score against step, per variant and seed"
    return blocks + [Image(path.relative_to(out_dir), caption.format(*key)) for key, path in paths.items()]


def _provenance_section(provenance: pd.DataFrame, command: str) -> list[Block]:
    """What produced the numbers: a row per group of result runs sharing code, data and hardware, then the
    package versions and the commands of the runs, and the command that wrote this report."""
    blocks: list[Block] = [Heading(2, "Provenance")]
    git = git_state()
    dirty = {True: "with uncommitted changes", False: "clean", None: "dirty state unknown"}[git["git_dirty"]]
    blocks.append(Paragraph(f"This report: {command or 'written by reports.render'}, from git {git['git_sha']} "
                            f"({dirty})."))
    if provenance.empty:
        return blocks + [Paragraph("No result runs: nothing else to trace.")]
    keys = ["task", "variant", "split", "protocol", "protocol_fingerprint", "data_manifest", "data_generated",
            "git_sha", "git_dirty", "hardware", "device", "world_size"]
    rows = []
    for key, group in provenance.groupby(keys, sort=False, dropna=False):
        row = dict(zip(keys, key, strict=True))
        rows.append({
            "task": row["task"], "variant": row["variant"], "seeds": ", ".join(map(str, sorted(group["seed"]))),
            "split": row["split"], "protocol": row["protocol"], "fingerprint": row["protocol_fingerprint"],
            "data manifest": row["data_manifest"], "data": "generated" if str(row["data_generated"]) == "True" else "",
            "git": f"{str(row['git_sha'])[:10]}{' (dirty)' * (str(row['git_dirty']) == 'True')}",
            "hardware": f"{row['hardware'] or row['device']} x{row['world_size']}",
        })
    blocks.append(Table("Runs behind the results", pd.DataFrame(rows), [
        "fingerprint: the protocol's (what is scored and how); data manifest: the hash of the clips used and which "
        "had audio; git: the code each run ran (dirty: with uncommitted changes); hardware x processes"]))
    for packages, group in provenance.groupby("packages", sort=False):
        where = "" if provenance["packages"].nunique() == 1 else f" ({joined(group['task'])})"
        blocks.append(Paragraph(f"Package versions{where}: {packages or 'not recorded'}."))
    commands = [c for c in dict.fromkeys(provenance["command"]) if c]
    blocks.append(Paragraph("Commands of the runs: " + ("; ".join(commands) if commands else "not recorded") + "."))
    return blocks


# ---------------------------------------------------------------------------------------------------- Markdown


def _sections(blocks: list[Block]) -> list[Heading]:
    return [b for b in blocks if isinstance(b, Heading) and b.level == 2]


def render_markdown(blocks: list[Block]) -> str:
    lines: list[str] = []
    for block in blocks:
        if isinstance(block, Heading):
            lines += ["#" * block.level + " " + block.text, ""]
        elif isinstance(block, Paragraph):
            lines += [block.text, ""]
        elif isinstance(block, Banner):
            lines += [f"> **{block.text}**", ""]
        elif isinstance(block, Contents):
            lines += ["Contents: " + " · ".join(f"[{h.text}](#{h.anchor})" for h in _sections(blocks)), ""]
        elif isinstance(block, Table):
            lines += [f"### {block.title}", "", block.frame.to_markdown(index=False, disable_numparse=True), ""]
            lines += [f"- {line}" for line in block.footer] + ([""] if block.footer else [])
        else:
            lines += [f"![{block.caption}]({block.path.as_posix()})", ""]
    return "\n".join(lines)


# -------------------------------------------------------------------------------------------------------- HTML

NUMERIC_CELL = re.compile(r"^[+\-−]?\d")

def _column_spec(frame: pd.DataFrame) -> str:
    """Left for the row labels and text columns, right for a column with numbers (so digits line up); the HTML
    and LaTeX tables align alike."""
    numeric = [i > 0 and frame[c].astype(str).str.match(NUMERIC_CELL).any() for i, c in enumerate(frame.columns)]
    return "".join("r" if n else "l" for n in numeric)



# The page must read at 1280 px without horizontal scrolling (issue 15): cells wrap, long tokens break, images
# shrink to the column, and a table that still does not fit scrolls inside its own box.
CSS = """
body { font-family: sans-serif; max-width: 1180px; margin: 1.5em auto; padding: 0 1em; color: #222; }
.table-box { max-width: 100%; overflow-x: auto; }
table { border-collapse: collapse; margin: 0.5em 0; font-size: 0.85em; }
th, td { padding: 0.25em 0.6em; border-bottom: 1px solid #ddd; text-align: left; overflow-wrap: anywhere; }
th.num, td.num { text-align: right; }
tr.ours td { background: #eef5ff; font-weight: 600; }
.banner { background: #fff3cd; border: 1px solid #e0b000; padding: 0.6em 1em; font-weight: 600; }
.footer { font-size: 0.85em; color: #555; }
nav ul { columns: 3; }
details > summary { cursor: pointer; color: #345; margin: 0.3em 0; }
img { max-width: 100%; height: auto; }
"""


def _html_table(frame: pd.DataFrame, ours: frozenset[int] = frozenset(), first: int = 0) -> str:
    """A table of strings, numeric columns right-aligned; rows whose position (from `first`) is in `ours` get
    class "ours"."""
    kinds = [' class="num"' if align == "r" else "" for align in _column_spec(frame)]
    head = "".join(f"<th{kind}>{html.escape(str(c))}</th>" for kind, c in zip(kinds, frame.columns, strict=True))
    body = []
    for position, row in enumerate(frame.itertuples(index=False), start=first):
        cells = "".join(f"<td{kind}>{html.escape(str(c))}</td>" for kind, c in zip(kinds, row, strict=True))
        body.append(f'<tr class="ours">{cells}</tr>' if position in ours else f"<tr>{cells}</tr>")
    return f'<div class="table-box"><table><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div>'


def _html_block(block: Block, blocks: list[Block], out_dir: Path) -> list[str]:
    if isinstance(block, Heading):
        return [f'<h{block.level} id="{block.anchor}">{html.escape(block.text)}</h{block.level}>']
    if isinstance(block, Paragraph):
        return [f"<p>{html.escape(block.text)}</p>"]
    if isinstance(block, Banner):
        return [f'<div class="banner" role="alert">{html.escape(block.text)}</div>']
    if isinstance(block, Contents):
        items = "".join(f'<li><a href="#{h.anchor}">{html.escape(h.text)}</a></li>' for h in _sections(blocks))
        return [f"<nav><h2>Contents</h2><ul>{items}</ul></nav>"]
    if isinstance(block, Table):
        parts = [f"<h3>{html.escape(block.title)}</h3>"]
        split = len(block.frame) if block.collapse_from is None else block.collapse_from
        parts.append(_html_table(block.frame.iloc[:split], block.ours))
        if split < len(block.frame):  # many published baselines: folded away below ours
            parts.append(f"<details><summary>{len(block.frame) - split} more rows: published baselines</summary>"
                         f"{_html_table(block.frame.iloc[split:], block.ours, first=split)}</details>")
        if block.footer:
            parts.append('<ul class="footer">' + "".join(f"<li>{html.escape(x)}</li>" for x in block.footer) + "</ul>")
        return parts
    data = base64.b64encode((out_dir / block.path).read_bytes()).decode("ascii")
    return [f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(block.caption)}">'
            f"<figcaption>{html.escape(block.caption)}</figcaption></figure>"]


def render_html(blocks: list[Block], title: str, out_dir: Path) -> str:
    """A self-contained page: images are embedded as base64 PNG data."""
    body = [part for block in blocks for part in _html_block(block, blocks, out_dir)]
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1"><title>{html.escape(title)}</title>'
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


def _tex_row(cells: tuple, ours: bool) -> str:
    """A table row, its label in bold when it is ours; the separator before other-protocol baselines becomes a rule
    and a spanning label."""
    if cells[0] == CONTEXT_SEPARATOR:
        return rf"\midrule \multicolumn{{{len(cells)}}}{{l}}{{\emph{{{latex_escape(CONTEXT_SEPARATOR)}}}}} \\"
    escaped = [latex_escape(cell) for cell in cells]
    if ours:
        escaped[0] = rf"\textbf{{{escaped[0]}}}"
    return " & ".join(escaped) + r" \\"


TEX_ROWS_PER_TABLE = 30  # a longer table is split into floats of this many rows (an A4 page holds about 45)
# Shrinks a tabular wider than the text to the text width (never enlarges one); needs only graphicx.
TEX_PREAMBLE = (
    r"\providecommand{\fitwidth}[1]{\sbox0{#1}\ifdim\wd0>\linewidth\resizebox{\linewidth}{!}{\usebox0}"
    r"\else\usebox0\fi}"
)


def _tex_label(title: str, part: int) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")
    return f"tab:{slug}" + (f"-{part + 1}" if part else "")


def render_tex(tables: list[Table]) -> str:
    """Each table as a booktabs tabular in a table float, shrunk to the text width when wider, split into floats
    of TEX_ROWS_PER_TABLE rows when longer, with a label, right-aligned numeric columns and its footer in small
    print under it (after its last part)."""
    parts = ["% Comparison tables, generated by reports/render.py. Needs \\usepackage{booktabs} and "
             "\\usepackage{graphicx}.", TEX_PREAMBLE, ""]
    for table in tables:
        frame = table.frame
        header = " & ".join(latex_escape(c) for c in frame.columns) + r" \\"
        rows = [_tex_row(row, i in table.ours) for i, row in enumerate(frame.itertuples(index=False))]
        chunks = [rows[i:i + TEX_ROWS_PER_TABLE] for i in range(0, len(rows), TEX_ROWS_PER_TABLE)] or [[]]
        footer = "".join(latex_escape(line) + r"\par " for line in table.footer)
        for number, chunk in enumerate(chunks):
            title = table.title + (f" (part {number + 1} of {len(chunks)})" if len(chunks) > 1 else "")
            last = number == len(chunks) - 1
            parts += [
                r"\begin{table}[ht]",
                r"\centering",
                rf"\caption{{{latex_escape(title)}}}\label{{{_tex_label(table.title, number)}}}",
                rf"\fitwidth{{\begin{{tabular}}{{{_column_spec(frame)}}}",
                r"\toprule",
                header,
                r"\midrule",
                *chunk,
                r"\bottomrule",
                r"\end{tabular}}",
                *([rf"\par\smallskip{{\footnotesize\sloppy {footer}}}"] if footer and last else []),
                r"\end{table}",
                "",
            ]
    return "\n".join(parts)
