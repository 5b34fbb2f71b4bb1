"""What a task is (typed metadata + a loader), and the annotation readers every loader shares.

A task only reads annotation files and names media paths; decoding, models and metrics live in `benchmark/`.
Readers raise one-line UserErrors that name the file and the problem.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

from benchmark.errors import UserError
from benchmark.items import Clip


@dataclass(frozen=True)
class TaskSpec:
    """Typed task metadata (mteb's TaskMetadata cut to what this suite needs)."""

    name: str
    version: str  # bump when the split, preprocessing or metric changes
    dataset: str
    data_dir: str  # the dataset's folder under `data.root` (what `clip4vla synth` writes)
    kind: Literal["retrieval", "caption", "corpus"]
    splits: tuple[str, ...]
    train_split: str
    test_split: str | None  # None for pre-training corpora
    val_split: str | None  # model selection under `paper`; None: a held-out part of the training split
    modalities: tuple[str, ...]  # subset of text, video, audio
    directions: tuple[str, ...]  # retrieval directions scored, e.g. t2v v2t t2va va2t; () for captioning
    captions_per_item: int  # captions (references) per test clip
    main_score: str | None  # a key the task's evaluation produces
    reference: str
    audio_only_splits: tuple[str, ...] = ()  # splits that keep only clips with audio (authors' --filter_video_id)
    test_clips: int | None = None  # clips in the released test split (benchmarks size their matrices by it)
    train_pairs: int | None = None  # (caption, clip) pairs per epoch of the released training split (plan estimates)


class Task:
    """A dataset's loader. Subclasses set `spec` and implement `_load(root, split)`."""

    spec: ClassVar[TaskSpec]

    def load(self, root: Path, split: str, limit: int | None = None, audio_template: str | None = None
             ) -> list[Clip]:
        """Clips of `split` under `root` with captions grouped by clip id; `limit` keeps the first N.

        `audio_template` (tasks with per-clip audio files) names the file under `root`, e.g.
        "audio/Y{youtube_id}.wav"; by default the common downloaders' names are tried.
        """
        if split not in self.spec.splits:
            raise UserError(f"task {self.spec.name} has no split '{split}' (splits: {', '.join(self.spec.splits)})")
        root = Path(root)
        if not root.is_dir():
            raise UserError(f"dataset root not found: {root}")
        clips = self._load(root, split, audio_template)
        return clips[:limit] if limit else clips

    def _load(self, root: Path, split: str, audio_template: str | None) -> list[Clip]:
        raise NotImplementedError


def video_and_audio(root: Path, clip_id: str, video_dir: str = "videos") -> tuple[Path, Path]:
    """(video, audio source) of a clip stored as <video_dir>/<id>.mp4; the audio is its own track unless
    audios_16k/<id>.wav exists (the authors' offline extraction). A missing video stays a path so that the
    manifest reports it."""
    video = root / video_dir / f"{clip_id}.mp4"
    if not video.exists() and (root / video_dir / "all" / f"{clip_id}.mp4").exists():
        video = root / video_dir / "all" / f"{clip_id}.mp4"
    wav = root / "audios_16k" / f"{clip_id}.wav"
    return video, (wav if wav.exists() else video)


def clips_with_captions(root: Path, ids: list[str], captions: dict[str, list[str]], source: Path) -> list[Clip]:
    """Clips of `ids` with all their captions and media paths; an id without captions is a one-line error."""
    absent = [v for v in ids if v not in captions]
    if absent:
        raise UserError(f"{source}: video '{absent[0]}' has no captions ({len(absent)} such)")
    return [Clip(v, tuple(captions[v]), *video_and_audio(root, v)) for v in ids]


def first_existing(root: Path, templates: tuple[str, ...], **fields: str) -> Path:
    """The first template (formatted with `fields`) that exists under root, else the first one."""
    try:
        paths = [root / t.format(**fields) for t in templates]
    except (KeyError, IndexError, ValueError) as exc:
        raise UserError(f"audio template {templates[0]!r}: unknown field {exc} (fields: "
                        f"{', '.join('{' + k + '}' for k in fields)})") from None
    return next((p for p in paths if p.exists()), paths[0])


def read_csv(path: Path, required: tuple[str, ...]) -> list[dict[str, str]]:
    """Rows of a CSV with a header; quoted fields may hold commas. Checks that `required` columns exist."""
    if not path.is_file():
        raise UserError(f"{path}: file not found")
    try:
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            header = reader.fieldnames or []
            missing = [c for c in required if c not in header]
            if missing:
                raise UserError(f"{path}: missing column '{missing[0]}' (found: {', '.join(header) or 'no header'})")
            rows = list(reader)
    except (csv.Error, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: unreadable CSV: {exc}") from exc
    for number, row in enumerate(rows, start=2):
        for column in required:
            if not (row.get(column) or "").strip():
                raise UserError(f"{path}: line {number}: empty '{column}'")
    return rows


def read_lines(path: Path) -> list[str]:
    """Non-empty stripped lines of a text file (split id lists)."""
    if not path.is_file():
        raise UserError(f"{path}: file not found")
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def read_json(path: Path) -> Any:
    if not path.is_file():
        raise UserError(f"{path}: file not found")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from exc


def unique_ids(ids: list[str], path: Path) -> list[str]:
    """`ids` unchanged, or a UserError naming the first duplicate."""
    seen: set[str] = set()
    for clip_id in ids:
        if clip_id in seen:
            raise UserError(f"{path}: duplicate id '{clip_id}'")
        seen.add(clip_id)
    return ids
