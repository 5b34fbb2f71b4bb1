"""`clip4vla smoke`: generate data, run the reproduction path on the embedded default, write report.md.

Output folder layout: data/ (generated datasets; data/clip4vla-cache/ the decoded tensors),
mlruns.db + mlartifacts/ (MLflow), runs/<point>/results.json, report.md.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from benchmark.config import load_config, read_yaml
from benchmark.errors import UserError
from benchmark.pipeline import Progress, check_tasks, reproduce
from benchmark.registry import load_tasks
from benchmark.synthetic import synthesize
from configs import path as config_path

MARKER = ".clip4vla-smoke"  # marks a folder this command made, so a rerun may replace it


def prepare_output(out: Path) -> None:
    """Make `out` ready: it must be new, empty, or a previous smoke output (which is replaced)."""
    if out.exists():
        if (out / MARKER).exists():
            shutil.rmtree(out)
        elif out.is_dir() and not any(out.iterdir()):
            pass
        else:
            raise UserError(f"--out {out} exists and is not a previous smoke output; give a new or empty folder")
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text("made by clip4vla smoke; rerunning smoke with this --out replaces the folder\n")


def run_smoke(out: Path | None, overrides: list[str], seed: int = 0, scale: str = "tiny") -> Path:
    """Run the smoke job into `out` (default: a new clip4vla-smoke-<time> folder here); returns report.md."""
    progress = Progress()
    base = read_yaml(config_path("smoke.yaml"))
    out = Path(out or Path.cwd() / time.strftime("clip4vla-smoke-%Y%m%d-%H%M%S")).resolve()
    cfg = load_config(base, [f"data.root={out / 'data'}", *overrides])  # bad input fails before any work
    check_tasks(cfg, needs_corpus=True)
    prepare_output(out)
    progress.say(f"output folder {out}")
    with progress.stage(f"synth: generated datasets ({scale}, seed {seed})"):
        tasks = load_tasks()
        used = {tasks.get(name).spec.data_dir for name in [cfg.task, *cfg.pretrain_corpus]}
        synthesize(out / "data", seed=seed, scale=scale, only=used)
    return reproduce(cfg, out, "smoke", progress)
