"""`clip4vla prepare TASK --root DIR`: check a dataset, decode every item once into the media store, write the
manifest.

The manifest (CSV, one row per item and split) records id, split, has_video, has_audio, duration, decodable,
bytes, sha256, the reason of any failure, the store shard holding it and whether this prepare decoded it again
because its media changed, so what a run used can be compared across machines. Re-running decodes only what is
not stored yet, or changed since (a file added, replaced or repaired).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import logging
from pathlib import Path

from benchmark.config import RunConfig
from benchmark.data import media_counts
from benchmark.media.decode import MediaColumns, MediaStatus
from benchmark.media.store import write_atomically
from benchmark.pipeline import media_store
from benchmark.progress import Ticker
from benchmark.registry import load_tasks

MANIFEST_COLUMNS = ("id", "split", "has_video", "has_audio", "duration", "decodable", "bytes", "sha256",
                    "video_error", "audio_error", "shard", "media_changed")
BROKEN = {"corrupt", "empty", "too_short", "non_finite"}
log = logging.getLogger("clip4vla")


def summarise(statuses: list[MediaStatus], columns: MediaColumns, needs_video: bool) -> dict[str, int]:
    """Counts printed by prepare: the run records' missing video / audio (`media_counts` of the statuses'
    columns), plus how many clips have no audio track and how many files are broken."""
    media = media_counts(columns, needs_video)
    return {
        "items": len(statuses),
        "missing_video": media["missing_video"],
        "missing_audio": media["missing_audio"],
        "no_audio_track": sum(s.audio_error == "no_stream" for s in statuses),
        "undecodable": sum(bool({s.video_error if needs_video else None, s.audio_error} & BROKEN) for s in statuses),
    }


def prepare(task_name: str, cfg: RunConfig, splits: list[str] | None, workers: int, verify: bool = False
            ) -> tuple[dict[str, dict[str, int]], Path]:
    """Decode every clip of `splits` (default: all) of a task; returns the counts per split and the manifest.
    `verify` first checks every stored entry and its media file's SHA-256, and decodes the damaged or changed ones
    again (each named in a warning)."""
    task = load_tasks().get(task_name)()
    spec = task.spec
    root = Path(cfg.data.root) / spec.data_dir
    store = media_store(cfg)
    loaded = {split: task.load(root, split, cfg.data.limit, cfg.data.audio_template) for split in splits or spec.splits}
    everything = [clip for clips in loaded.values() for clip in clips]
    for damaged in store.verify(everything) if verify else ():
        log.warning("%s: decoded again", damaged)
    ticker = Ticker(f"decode {task_name}", len({c.media_key for c in store.stale(everything)}), "clips")
    store.fill(everything, progress=lambda done, total: ticker.update(), workers=workers)
    ticker.close()
    needs_video = "video" in spec.modalities
    manifest = store.dir / f"manifest-{task_name}.csv"
    summary = {}
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=MANIFEST_COLUMNS)
    writer.writeheader()
    for split, clips in loaded.items():
        statuses, shards, columns = store.described(clips)
        for clip, status, shard in zip(clips, statuses, shards, strict=True):
            row = {k: v for k, v in dataclasses.asdict(status).items() if k != "clip_id"}
            writer.writerow({"id": status.clip_id, "split": split, "decodable": status.decodable, **row,
                             "shard": shard, "media_changed": clip.media_key in store.changed})
        summary[split] = {**summarise(statuses, columns, needs_video),
                          "media_changed": sum(c.media_key in store.changed for c in clips)}
    write_atomically(manifest, text.getvalue())
    return summary, manifest
