"""Published numbers for the comparison tables: `published.csv`, one row per number, with provenance.

Transcribed from `shared/spec/baselines.md`. Each row is one (method, variant, dataset, split, task, direction,
metric) number with its source, where it sits in baselines.md, and a confidence code:

- `E`: exact, read in a primary source (the paper, or the authors' own README/log);
- `S`: exact digits read in a secondary source that quotes the paper (provenance in `source`);
- `R`: recalled, not found in stored text; verify against the cited table before publishing;
- `pending`: not transcribed yet (the CLIP4VLA paper's own rows); `value` is empty.

`comparability` is `same` when the row follows the suite's protocol for the task (split, ViT-B/32 CLIP backbone,
captions per item at test), otherwise `context`, with the reason in `note`.

Filling in a paper number is a one-line edit: put the value and change `pending` to `E`.
Never invent a number; a cell the source does not print has no row.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from benchmark.errors import UserError

COLUMNS = (
    "method", "variant", "dataset", "split", "task", "direction", "metric", "value",
    "source", "table", "confidence", "comparability", "note",
)  # fmt: skip
KEY = ("method", "variant", "dataset", "split", "task", "direction", "metric")
REQUIRED = ("method", "dataset", "split", "task", "direction", "metric", "source")  # must not be empty
CONFIDENCE = ("E", "S", "R", "pending")
COMPARABILITY = ("same", "context")
DEFAULT = Path(__file__).with_name("published.csv")


def _shown(path: Path) -> str:
    """The path as the user would type it: relative to the working directory when it lies below it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _problem(row: pd.Series) -> str | None:
    """What is wrong with one row (all fields str), or None."""
    for column in COLUMNS:
        if "\n" in row[column] or "\r" in row[column]:
            return f"{column} contains a line break"
    for column in REQUIRED:
        if not row[column].strip():
            return f"{column} is empty"
    if row["confidence"] not in CONFIDENCE:
        return f"confidence '{row['confidence']}' is not one of {', '.join(CONFIDENCE)}"
    if row["comparability"] not in COMPARABILITY:
        return f"comparability '{row['comparability']}' is not one of {', '.join(COMPARABILITY)}"
    value = row["value"].strip()
    if row["confidence"] == "pending":
        return f"value '{value}' given but confidence is pending (set it to E, S or R)" if value else None
    if not value:
        return f"value is empty but confidence is '{row['confidence']}' (use pending for a missing number)"
    try:
        number = float(value)
    except ValueError:
        return f"value '{value}' is not a number"
    return None if math.isfinite(number) else f"value '{value}' is not a finite number"


def load(path: Path | None = None) -> pd.DataFrame:
    """The validated table with `value` as float (NaN for pending rows); UserError names the file and line."""
    path = Path(path) if path is not None else DEFAULT
    shown = _shown(path)
    if not path.is_file():
        raise UserError(f"{shown}: no such file")
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, skip_blank_lines=False, encoding="utf-8")
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UserError(f"{shown}: not a readable CSV ({reason})") from None
    if tuple(frame.columns) != COLUMNS:
        raise UserError(f"{shown} line 1: columns are {', '.join(frame.columns)}; expected {', '.join(COLUMNS)}")
    seen: dict[tuple[str, ...], int] = {}
    for index, row in frame.iterrows():
        line = int(index) + 2  # line 1 is the header; skip_blank_lines=False keeps the numbering exact
        problem = _problem(row)
        if problem:
            raise UserError(f"{shown} line {line}: {problem}")
        key = tuple(row[c] for c in KEY)
        if key in seen:
            raise UserError(f"{shown} line {line}: duplicate of line {seen[key]} ({', '.join(k for k in key if k)})")
        seen[key] = line
    frame["value"] = frame["value"].map(lambda value: float(value) if value.strip() else math.nan)
    return frame
