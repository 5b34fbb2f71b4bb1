"""The record every run writes (results.json, also an MLflow artifact): lm-eval's record cut to what a
reproducibility table needs (style.md "A run records config, metrics and artifacts")."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import platform
import subprocess
import sys
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

PACKAGES = ("torch", "torchaudio", "torchvision", "open_clip_torch", "mlflow", "pycocoevalcap", "av", "numpy")


@dataclass
class RunRecord:
    name: str  # e.g. "evaluate/finetuned"
    stage: str  # evaluate | pretrain | finetune
    task: str
    task_version: str
    split: str
    metrics: dict[str, float]
    main_score: str | None
    counts: dict[str, int]
    protocol: str
    protocol_fingerprint: str
    seed: int
    config: dict[str, Any]
    environment: dict[str, Any]
    wall_seconds: float
    extra: dict[str, Any] = field(default_factory=dict)

    def save(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True))
        return path


def fingerprint(data: dict[str, Any]) -> str:
    """Short stable hash of a JSON-able mapping."""
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:12]


def git_state() -> dict[str, Any]:
    """Commit and dirty flag of the checkout this package runs from ("unknown" outside a git checkout)."""
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10)
        if sha.returncode != 0:
            return {"git_sha": "unknown", "git_dirty": None}
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=here, capture_output=True, text=True,
                               timeout=10)
        return {"git_sha": sha.stdout.strip(), "git_dirty": bool(dirty.stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        return {"git_sha": "unknown", "git_dirty": None}


def invocation() -> str:
    """The command line of this process as a user typed it, e.g. "clip4vla sweep paper" (cut at 500 characters)."""
    return " ".join(["clip4vla", *sys.argv[1:]])[:500]


def hardware(accelerator: str | None) -> str:
    """What ran it, for the report's provenance: the accelerator's name (e.g. "NVIDIA H200"), else the CPU's
    architecture and core count."""
    return accelerator or f"{platform.machine()} CPU, {os.cpu_count()} cores"


def package_versions() -> dict[str, str]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "absent"
    return out
