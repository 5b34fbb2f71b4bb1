"""`clip4vla smoke`: generate data, run the smoke suite (configs/smoke.yaml) on it, write the report.

Output folder layout: data/ (generated datasets; data/clip4vla-cache/ the decoded tensors),
mlruns.db + mlartifacts/ (MLflow), runs/<step>-<key>/ (checkpoints, runs/<point>/results.json, report.md of
one run), report.md + report.html + tables.tex + plots/ (the comparison report).
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from benchmark.errors import UserError
from benchmark.output_lock import LOCK_NAME, hold_folder
from benchmark.pipeline import Progress, Reports
from benchmark.registry import load_tasks
from benchmark.sweep import expand, load_suite, run_sweep
from benchmark.synthetic import synthesize
from configs import path as config_path

SUITE = config_path("smoke.yaml")
MARKER = ".clip4vla-smoke"  # marks a folder this command made, so a rerun may replace it


def reusable_content(out: Path) -> list[Path]:
    """What `out` holds, when it may be replaced: it must be new, empty, or a previous smoke output."""
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; give a new or empty folder")
    content = [p for p in out.iterdir() if p.name != LOCK_NAME] if out.exists() else []
    if content and not (out / MARKER).exists():
        raise UserError(f"--out {out} exists and is not a previous smoke output; give a new or empty folder")
    return content


def prepare_output(out: Path) -> None:
    """Empty a reusable `out` (its lock file stays: this process holds it) and mark it as a smoke output."""
    for path in reusable_content(out):
        shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
    (out / MARKER).write_text("made by clip4vla smoke; rerunning smoke with this --out replaces the folder\n")


def run_smoke(out: Path | None, overrides: list[str], reports: Reports, seed: int = 0) -> Path:
    """Run the smoke suite into `out` (default: a new clip4vla-smoke-<time> folder here), writing its reports with
    `reports`; returns report.md."""
    progress = Progress()
    out = Path(out or Path.cwd() / time.strftime("clip4vla-smoke-%Y%m%d-%H%M%S")).resolve()
    overrides = [f"data.root={out / 'data'}", *overrides]
    runs = expand(load_suite(SUITE), overrides)  # bad input fails before any work
    reusable_content(out)  # refused before the lock file is made in someone else's folder
    with hold_folder(out):  # run_sweep below holds it too: one hold per process
        prepare_output(out)
        progress.say(f"output folder {out}")
        with progress.stage(f"synth: generated datasets (seed {seed})"):
            tasks = load_tasks()
            used = {tasks.get(name).spec.data_dir for run in runs
                    for name in [run.config.task, *run.config.pretrain_corpus] if name is not None}
            synthesize(out / "data", seed=seed, only=used)
        return run_sweep(SUITE, out, overrides, progress, reports=reports)
