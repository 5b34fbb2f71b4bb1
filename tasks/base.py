"""What a task is (typed metadata + a loader), and the annotation readers every loader shares.

A task only reads annotation files and names media paths; decoding, models and metrics live in `benchmark/`.
Readers raise one-line UserErrors that name the file and the problem.
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import gc
import io
import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from benchmark.errors import UserError
from benchmark.items import Clip

log = logging.getLogger(__name__)
OFFLINE_AUDIO = "audios_16k"  # the authors' offline-extracted audio: <root>/audios_16k/<id>.wav (spec §4)


@dataclass(frozen=True)
class TaskSpec:
    """Typed task metadata (mteb's TaskMetadata cut to what this suite needs)."""

    name: str
    version: str  # bump when the split, preprocessing or metric changes
    dataset: str
    data_dir: str  # the dataset's folder under `data.root` (what `clip4vla synth` writes)
    kind: str  # a registered task kind (benchmark.task_kinds): retrieval, caption, corpus
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


@contextlib.contextmanager
def paused_gc() -> Iterator[None]:
    """No cyclic garbage collection while a loader builds its clips: a loader makes no reference cycles, and a
    pre-training corpus's million Clip objects (and the parsed JSON behind them) would set off collections that
    scan everything allocated so far, 0.7 s of the 1.8 s that making 1 M clips takes (issue 13)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


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
        with paused_gc():
            clips = self._load(root, split, audio_template)
        if not clips:  # before any model is built: an empty split would train or score nothing
            raise UserError(f"task {self.spec.name}: split '{split}' lists no clips under {root}")
        ignored = irregular_offline_audio(root, clips)
        if ignored:
            log.warning("%d clips of %s/%s use their video's audio track: %s/<id>.wav is not a regular file "
                        "(first: %s)", len(ignored), self.spec.name, split, OFFLINE_AUDIO, ignored[0])
        return clips[:limit] if limit else clips

    def _load(self, root: Path, split: str, audio_template: str | None) -> list[Clip]:
        raise NotImplementedError


def inside_root(root: Path, relative: str, source: Path, clip_id: str) -> Path:
    """root / relative, refused (a one-line UserError naming the annotation file and the id) when it leaves root:
    an absolute id, or '..' parts climbing out. The check is lexical, so symlinks the user made inside root (a
    videos/ folder on another disk) keep working."""
    if "\0" in relative:
        raise UserError(f"{source}: id {clip_id!r} holds a NUL character")
    if os.path.isabs(clip_id):
        raise UserError(f"{source}: id {clip_id!r} is an absolute path (media must lie inside the dataset folder "
                        f"{root})")
    path = Path(os.path.normpath(root / relative))
    if not path.is_relative_to(os.path.normpath(root)):
        raise UserError(f"{source}: id {clip_id!r} names a file outside the dataset folder {root}: {path}")
    return path


def video_and_audio(root: Path, clip_id: str, source: Path, video_dir: str = "videos") -> tuple[Path, Path]:
    """(video, audio source) of a clip listed in `source`, stored as <video_dir>/<id>.mp4; the audio is its own
    track unless audios_16k/<id>.wav is a regular file (the authors' offline extraction). A missing video stays a
    path so that the manifest reports it."""
    video = inside_root(root, f"{video_dir}/{clip_id}.mp4", source, clip_id)
    nested = inside_root(root, f"{video_dir}/all/{clip_id}.mp4", source, clip_id)
    if not video.exists() and nested.exists():
        video = nested
    wav = inside_root(root, f"{OFFLINE_AUDIO}/{clip_id}.wav", source, clip_id)
    return video, (wav if wav.is_file() else video)


def irregular_offline_audio(root: Path, clips: list[Clip]) -> list[Path]:
    """audios_16k/<id>.wav entries of clips that fell back to their video's track because the entry is not a
    regular file (a folder, a FIFO, a broken link): reported, so an ignored extraction is never silent."""
    folder = root / OFFLINE_AUDIO
    if not folder.is_dir():
        return []
    stems = dict.fromkeys(c.video.stem for c in clips if c.video is not None and c.audio == c.video)
    return [p for stem in stems if os.path.lexists(p := folder / f"{stem}.wav") and not p.is_file()]


def clips_with_captions(root: Path, ids: list[str], captions: dict[str, list[str]], source: Path) -> list[Clip]:
    """Clips of `ids` with all their captions and media paths; an id without captions is a one-line error."""
    absent = [v for v in ids if v not in captions]
    if absent:
        raise UserError(f"{source}: video '{absent[0]}' has no captions ({len(absent)} such)")
    return [Clip(v, tuple(captions[v]), *video_and_audio(root, v, source)) for v in ids]


def first_existing(root: Path, templates: tuple[str, ...], source: Path, clip_id: str, **fields: str) -> Path:
    """The first template (formatted with `fields`) that is a file under root, else the first one; a template or
    field that leaves root is refused (`inside_root`)."""
    try:
        names = [t.format(**fields) for t in templates]
    except (KeyError, IndexError, ValueError) as exc:
        raise UserError(f"audio template {templates[0]!r}: unknown field {exc} (fields: "
                        f"{', '.join('{' + k + '}' for k in fields)})") from None
    paths = [inside_root(root, name, source, clip_id) for name in names]
    return next((p for p in paths if p.is_file()), paths[0])


def read_text(path: Path) -> str:
    """A UTF-8 text file's contents without a byte-order mark; binary or other encodings are one-line errors."""
    if not path.is_file():
        raise UserError(f"{path}: file not found")
    data = path.read_bytes()
    if b"\0" in data:
        raise UserError(f"{path}: not UTF-8 text (binary: a NUL byte at offset {data.index(0)})")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start})") from None


def csv_records(path: Path, **options: object) -> list[tuple[int, list[str]]]:
    """(line number, fields) of each non-empty record of a CSV. None of the annotation formats has a field
    spanning lines, so one is an error naming the line (an unbalanced quote swallows the rows after it)."""
    reader = csv.reader(io.StringIO(read_text(path), newline=""), **options)  # CR, LF and CRLF rows alike
    out = []
    while True:
        line = reader.line_num + 1
        try:
            fields = next(reader)
        except StopIteration:
            return out
        except csv.Error as exc:
            raise UserError(f"{path}: line {line}: unreadable CSV: {exc}") from None
        if any("\n" in f or "\r" in f for f in fields):
            raise UserError(f"{path}: line {line}: a quoted field runs over lines {line}-{reader.line_num} "
                            "(an unbalanced quote?)")
        if fields:
            out.append((line, fields))


def read_csv(path: Path, required: tuple[str, ...]) -> list[dict[str, str]]:
    """Rows of a CSV with a header; quoted fields may hold commas. Checks that `required` columns exist, that every
    row has the header's field count, and that required fields are not empty."""
    records = csv_records(path)
    header = records[0][1] if records else []
    missing = [c for c in required if c not in header]
    if missing:
        raise UserError(f"{path}: missing column '{missing[0]}' (found: {', '.join(header) or 'no header'})")
    rows = []
    for line, fields in records[1:]:
        if len(fields) != len(header):
            raise UserError(f"{path}: line {line}: {len(fields)} fields where the header has {len(header)}")
        row = dict(zip(header, fields, strict=True))
        empty = [c for c in required if not row[c].strip()]
        if empty:
            raise UserError(f"{path}: line {line}: empty '{empty[0]}'")
        rows.append(row)
    return rows


def read_lines(path: Path) -> list[str]:
    """Non-empty stripped lines of a text file (split id lists)."""
    return [line.strip() for line in read_text(path).splitlines() if line.strip()]


def read_json(path: Path) -> Any:
    try:
        return json.loads(read_text(path))
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from exc


JSON_CHUNK_BYTES = 1 << 20


def json_object_items(path: Path, expected: str, chunk_bytes: int | None = None) -> Iterator[tuple[str, Any]]:
    """The (key, value) pairs of a file holding one JSON object, read `chunk_bytes` (JSON_CHUNK_BYTES by default)
    at a time, so a multi-GB annotation file (HowTo100M's caption.json) is never held whole, as text or as a dict.
    Errors are `read_json`'s (line and column of invalid JSON, binary or non-UTF-8 bytes with their offset); a file
    that is not an object is "`path`: expected `expected`". A key given twice yields twice (json.loads keeps the
    last)."""
    if not path.is_file():
        raise UserError(f"{path}: file not found")
    chunk_bytes = chunk_bytes or JSON_CHUNK_BYTES
    decoder, utf8 = json.JSONDecoder(), codecs.getincrementaldecoder("utf-8-sig")()
    text, pos, dropped_lines, column_base, read, eof = "", 0, 0, 0, 0, False

    def invalid(at: int, message: str) -> UserError:
        newline = text.rfind("\n", 0, at)
        column = at - newline if newline >= 0 else column_base + at + 1
        return UserError(f"{path}: invalid JSON at line {dropped_lines + text.count(chr(10), 0, at) + 1} column "
                         f"{column}: {message}")

    with path.open("rb") as f:
        def more() -> bool:
            nonlocal text, pos, dropped_lines, column_base, read, eof
            if eof:
                return False
            data = f.read(chunk_bytes)
            if b"\0" in data:
                raise UserError(f"{path}: not UTF-8 text (binary: a NUL byte at offset {read + data.index(0)})")
            try:
                decoded = utf8.decode(data, final=not data)
            except UnicodeDecodeError as exc:  # exc.object: the decoder's held-back bytes, then this chunk
                offset = read - (len(exc.object) - len(data)) + exc.start
                raise UserError(f"{path}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset "
                                f"{offset})") from None
            read, eof = read + len(data), not data
            if pos > len(text) // 2:  # drop what was parsed, keeping positions for error messages
                gone = text[:pos]
                newline = gone.rfind("\n")
                dropped_lines += gone.count("\n")
                column_base = len(gone) - newline - 1 if newline >= 0 else column_base + len(gone)
                text, pos = text[pos:], 0
            text += decoded
            return True

        def next_char() -> str:
            """The next non-blank character (pos left on it), '' at the end of the file."""
            nonlocal pos
            while True:
                while pos < len(text) and text[pos] in " \t\n\r":
                    pos += 1
                if pos < len(text) or not more():
                    return text[pos] if pos < len(text) else ""

        def value() -> Any:
            """The JSON value at pos, read on past the chunk's end when it is cut there (a number is decoded once
            a character that cannot continue it follows, so that "-0.0025" cut after "-0" is never read short)."""
            nonlocal pos
            while True:
                try:
                    found, end = decoder.raw_decode(text, pos)
                except json.JSONDecodeError as exc:
                    # a value cut by the chunk's end fails at that end (or, a string, where it starts): read on
                    cut = exc.pos >= len(text) - 8 or exc.msg.startswith("Unterminated string")
                    if cut and more():
                        continue
                    raise invalid(exc.pos, exc.msg) from None
                number = isinstance(found, int | float) and not isinstance(found, bool)
                if number and (end == len(text) or text[end] in "0123456789.eE+-") and more():
                    continue
                pos = end
                return found

        if next_char() != "{":
            raise UserError(f"{path}: expected {expected}")
        pos += 1
        first = True
        while True:
            c = next_char()
            if c == "}" and first:
                break
            if c != '"':
                raise invalid(pos, "Expecting property name enclosed in double quotes")
            key = value()
            if next_char() != ":":
                raise invalid(pos, "Expecting ':' delimiter")
            pos += 1
            next_char()
            yield key, value()
            c, first = next_char(), False
            if c == "}":
                break
            if c != ",":
                raise invalid(pos, "Expecting ',' delimiter")
            pos += 1
        pos += 1
        if next_char():
            raise invalid(pos, "Extra data")


def is_text(value: object) -> bool:
    """A caption: a non-blank string (annotation JSONs sometimes hold numbers or nulls)."""
    return isinstance(value, str) and bool(value.strip())


def unique_ids(ids: list[str], path: Path) -> list[str]:
    """`ids` unchanged, or a UserError naming the first duplicate."""
    seen: set[str] = set()
    for clip_id in ids:
        if clip_id in seen:
            raise UserError(f"{path}: duplicate id '{clip_id}'")
        seen.add(clip_id)
    return ids
