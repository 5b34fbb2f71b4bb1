"""Checkpoints written atomically (temporary file, then rename), the last N and the best kept, loaded with
torch.load(weights_only=True)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch


class Checkpointer:
    """`<dir>/step-00000042.pt` files; `best.json` names the best one when scores are given."""

    def __init__(self, directory: Path, keep_last: int = 2, extra: dict[str, Any] | None = None) -> None:
        if keep_last < 1:  # 0 would delete the checkpoint just written, the one --resume needs
            raise ValueError(f"keep_last must be >= 1, got {keep_last}")
        self.dir = Path(directory)
        self.keep_last = keep_last
        self.extra = extra or {}  # stored in every checkpoint: config, fingerprint

    def path(self, step: int) -> Path:
        return self.dir / f"step-{step:08d}.pt"

    def steps(self) -> list[int]:
        return sorted(int(p.stem.split("-")[1]) for p in self.dir.glob("step-*.pt"))

    def latest(self) -> Path | None:
        steps = self.steps()
        return self.path(steps[-1]) if steps else None

    def best(self) -> Path | None:
        record = self.dir / "best.json"
        return self.path(json.loads(record.read_text())["step"]) if record.exists() else None

    def save(self, step: int, state: dict[str, Any], score: float | None = None) -> Path:
        """Write atomically; a higher `score` than the recorded best makes this the best checkpoint."""
        self.dir.mkdir(parents=True, exist_ok=True)
        target = self.path(step)
        tmp = target.with_suffix(".tmp")
        torch.save({**state, **self.extra, "step": step}, tmp)
        os.replace(tmp, target)  # a crash never leaves a half-written checkpoint under a real name
        if score is not None:
            record = self.dir / "best.json"
            if not record.exists() or score > json.loads(record.read_text())["score"]:
                tmp_record = record.with_suffix(".tmp")
                tmp_record.write_text(json.dumps({"step": step, "score": score}))
                os.replace(tmp_record, record)
        self._prune()
        return target

    def _prune(self) -> None:
        keep = set(self.steps()[-self.keep_last :])
        best = self.best()
        for step in self.steps():
            if step not in keep and self.path(step) != best:
                self.path(step).unlink()

    def load(self, path: Path, map_location: Any = "cpu") -> dict[str, Any]:
        return torch.load(path, map_location=map_location, weights_only=True)
