"""Checkpoints written atomically (temporary file, then rename), the last N and the best kept, loaded with
torch.load(weights_only=True) behind one-line errors.

Model selection survives a kill at any point of a write: a step's selection score is stored in its checkpoint
and in `scores.json`, which is written *before* the checkpoint's rename, and the best checkpoint is the
highest-scoring step whose file exists. A kill before the rename leaves a score without a file (ignored: the
resumed run scores that step again); after it, the file and its score agree. (The score used to live only in a
`best.json` written after the rename: a kill between the two made the resumed run select another "best".)
"""

from __future__ import annotations

import errno
import json
import logging
import os
import pickle
import shutil
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch

from benchmark.errors import UserError

log = logging.getLogger(__name__)


class CorruptCheckpoint(UserError):
    """A checkpoint file that exists but cannot be read (truncated, empty, not a checkpoint)."""

    def __init__(self, path: Path, message: str) -> None:
        super().__init__(message)
        self.path = Path(path)


def load_checkpoint(path: Path, map_location: Any = "cpu") -> dict[str, Any]:
    """torch.load(weights_only=True) with one-line errors naming the file: missing, corrupt, or holding Python
    objects (a pickle that weights_only refuses; never retried unsafely, whatever PyTorch's message advises)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint not found: {path}")
    if path.stat().st_size == 0:
        raise CorruptCheckpoint(path, f"checkpoint {path} is empty")
    try:
        with warnings.catch_warnings():  # a plain pickle gets a protocol warning before its one-line error
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        reason = _unpickler_reason(exc)
        if reason.startswith("Unsupported global"):
            raise UserError(f"checkpoint {path} holds Python objects that a weights-only load refuses "
                            f"({reason.split(' was not')[0]}); this suite never unpickles them: re-save it as a "
                            "plain state dict of tensors") from None
        raise CorruptCheckpoint(path, f"checkpoint {path} is not a readable checkpoint ({reason})") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as exc:
        raise CorruptCheckpoint(path, f"checkpoint {path} is corrupt or truncated ({_first_line(exc)})") from None
    if not isinstance(state, dict):
        raise CorruptCheckpoint(path, f"checkpoint {path} holds a {type(state).__name__}, not a state dict")
    return state


def _unpickler_reason(exc: BaseException) -> str:
    """The reason inside PyTorch's weights-only error, without its advice to load the file unsafely."""
    _, marker, rest = str(exc).partition("WeightsUnpickler error:")
    lines = [line.strip() for line in rest.splitlines() if line.strip()] if marker else []
    return lines[0][:160] if lines else _first_line(exc)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:160]


class Checkpointer:
    """`<dir>/step-00000042.pt` files; `scores.json` holds the selection score of each scored step."""

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

    def refuse_earlier_run(self) -> None:
        """A fresh start into a folder holding another run's checkpoints would prune its own and select among
        theirs (a silent wrong model): a one-line error instead."""
        steps = self.steps()
        if steps:
            raise UserError(f"{self.dir} holds checkpoints of an earlier run (steps {steps[0]}..{steps[-1]}): add "
                            "--resume to continue it, or give another --out")

    def latest(self) -> Path | None:
        steps = self.steps()
        return self.path(steps[-1]) if steps else None

    def scores(self) -> dict[int, float]:
        """Selection score per step (written before each checkpoint's rename; a step may lack its file)."""
        record, legacy = self.dir / "scores.json", self.dir / "best.json"
        if record.exists():
            return {int(k): v for k, v in json.loads(record.read_text()).items()}
        if legacy.exists():  # a folder written before scores.json: its best step only
            best = json.loads(legacy.read_text())
            return {int(best["step"]): best["score"]}
        return {}

    def best(self) -> Path | None:
        """The highest-scoring checkpoint that exists; the earliest of equal scores (as `>` kept it)."""
        scored = [(score, -step) for step, score in self.scores().items() if self.path(step).exists()]
        return self.path(-max(scored)[1]) if scored else None

    def save(self, step: int, state: dict[str, Any], score: float | None = None) -> Path:
        """Write atomically, with `score` recorded first (module docstring); prune to the last N and the best."""
        self.dir.mkdir(parents=True, exist_ok=True)
        if score is not None:
            self._write_json("scores.json", {**{str(k): v for k, v in self.scores().items()}, str(step): score})
        target = self.path(step)
        tmp = target.with_suffix(".tmp")
        try:
            torch.save({**state, **self.extra, "step": step, "score": score}, tmp)
            with tmp.open("rb") as f:  # on disk before the rename: a power loss never leaves a hollow file
                os.fsync(f.fileno())
        except (OSError, RuntimeError) as exc:  # torch's zip writer reports a full disk as a RuntimeError
            tmp.unlink(missing_ok=True)
            raise UserError(_write_failure(target, exc)) from None
        os.replace(tmp, target)  # a crash never leaves a half-written checkpoint under a real name
        _fsync_folder(self.dir)
        self._prune()
        return target

    def _write_json(self, name: str, data: dict[str, Any]) -> None:
        record, tmp = self.dir / name, self.dir / f"{name}.tmp"
        try:
            tmp.write_text(json.dumps(data))
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise UserError(_write_failure(record, exc)) from None
        os.replace(tmp, record)

    def _prune(self) -> None:
        keep = set(self.steps()[-self.keep_last :])
        best = self.best()
        for step in self.steps():
            if step not in keep and self.path(step) != best:
                self.path(step).unlink()

    def load(self, path: Path, map_location: Any = "cpu") -> dict[str, Any]:
        return load_checkpoint(path, map_location)

    def resume_state(self, map_location: Any = "cpu") -> dict[str, Any] | None:
        """The newest intact checkpoint (None when there is none). A corrupt newer one is passed over with one
        warning naming both files; when every one is corrupt, a one-line error naming them."""
        broken: list[CorruptCheckpoint] = []
        for step in reversed(self.steps()):
            try:
                state = self.load(self.path(step), map_location)
            except CorruptCheckpoint as exc:
                broken.append(exc)
                continue
            if broken:
                log.warning("resuming from %s: %s", self.path(step).name, "; ".join(map(str, broken)))
                for exc in broken:  # set aside: neither pruning nor best() may count a file that cannot load
                    os.replace(exc.path, exc.path.with_name(exc.path.name + ".corrupt"))
            return state
        if broken:
            raise UserError(f"no intact checkpoint in {self.dir} to resume from: " + "; ".join(map(str, broken)))
        return None


def _fsync_folder(folder: Path) -> None:
    """Make a rename inside `folder` durable."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_failure(path: Path, exc: BaseException) -> str:
    """One line for a failed write: a full disk is named as such, with the free space left."""
    free = shutil.disk_usage(path.parent).free if path.parent.exists() else 0
    full = getattr(exc, "errno", None) == errno.ENOSPC or "write failed" in str(exc) or free < 2**20
    if full:
        return f"cannot write {path}: the disk is full ({free / 2**20:.0f} MiB free on {path.parent}); free space " \
               "and rerun with --resume"
    return f"cannot write {path}: {_first_line(exc)}"
