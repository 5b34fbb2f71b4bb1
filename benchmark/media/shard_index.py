"""The media store's index: one fixed-size row per entry, held as numpy columns (issue 13: a store of 1 M clips).

Each committed shard has `NNNNNN.index.npy` (its rows, in tar order) and `NNNNNN.json` (written last, so a shard
exists once it does: store format, the tar's size, the row count, the index file's CRC-32 and the table of error
reasons the rows' codes point into). The entry's full record (file checksums, shapes, media identity, decode
status) is the sample's own `.json` in the tar; a row keeps what opening a store and choosing what to decode
need, and the record's CRC-32, so the record read from the tar is the one the row was made from.

A row is 110 bytes: 1 M clips are 110 MB of numpy arrays, which forked DataLoader workers share without copying
(the per-entry dicts of store format 3 were ~2.5 kB of Python objects each, 2.5 GB per process at 1 M, and JSON to
parse at every open). Lookup is a binary search on the first 64 bits of the SHA-1 of the media key, sorted once.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from benchmark.media.decode import STORE_FORMAT, MediaColumns, MediaStatus

log = logging.getLogger("benchmark.media.store")

NONE = -1  # an absent file's size / mtime, a missing duration's byte count, no error reason
ROW = np.dtype([
    ("key", "<u8"),  # the first 64 bits of sha1(media key): what `find` searches
    ("offset", "<i8"), ("span", "<u4"),  # the sample's bytes in its tar: first member header to last padding
    ("record_crc", "<u4"),  # CRC-32 of the sample's .json (its record) in the tar
    ("video_size", "<i8"), ("video_mtime", "<i8"),  # the media files' identity when decoded (NONE: no file)
    ("audio_size", "<i8"), ("audio_mtime", "<i8"),
    ("has_video", "?"), ("has_audio", "?"),
    ("video_error", "<i2"), ("audio_error", "<i2"),  # codes into the shard's reason table (NONE: no error)
    ("duration", "<f8"),  # NaN: unknown
    ("bytes", "<i8"),  # NONE: unknown
    ("sha256", "u1", (32,)),  # of the main media file; zeros when there is none
])


def key_hashes(media_keys: Sequence[str]) -> np.ndarray:
    """The first 64 bits of sha1(media key) of each key (uint64), the leading 16 hex digits of the sample's key in
    its tar."""
    digests = b"".join([hashlib.sha1(k.encode()).digest()[:8] for k in media_keys])
    return np.frombuffer(digests, ">u8").astype(np.uint64)


def key_hash(media_key: str) -> int:
    return int(key_hashes([media_key])[0])


def identity_columns(source: dict) -> tuple[int, int, int, int]:
    """A record's `source` ({"video": [size, mtime_ns] | None, "audio": ...}) as the row's four columns."""
    video, audio = source["video"] or (NONE, NONE), source["audio"] or (NONE, NONE)
    return video[0], video[1], audio[0], audio[1]


def row_of(record: dict, record_crc: int, where: tuple[int, int], reasons: list[str]) -> tuple:
    """The index row of an entry's record (`store.encode_entry`) at `where` (offset, span) in its tar; new error
    reasons are appended to `reasons`."""
    def code(reason: str | None) -> int:
        if reason is None:
            return NONE
        if reason not in reasons:
            reasons.append(reason)
        return reasons.index(reason)

    status = record["status"]
    digest = bytes.fromhex(status["sha256"]) if status["sha256"] else bytes(32)
    return (key_hash(record["media_key"]), *where, record_crc, *identity_columns(record["source"]),
            status["has_video"], status["has_audio"], code(status["video_error"]), code(status["audio_error"]),
            math.nan if status["duration"] is None else status["duration"],
            NONE if status["bytes"] is None else status["bytes"], np.frombuffer(digest, np.uint8))


def _read_shard(marker: Path) -> tuple[np.ndarray, list[str]] | None:
    """(rows, reason table) of a committed shard, or None (with a warning naming it) when it cannot be used."""
    tar = marker.with_suffix(".tar")
    try:
        found = json.loads(marker.read_text())
        data = marker.with_suffix(".index.npy").read_bytes()
        if zlib.crc32(data) != found["index_crc32"]:
            raise ValueError("its index does not match the CRC-32 in its marker")
        rows = np.load(io.BytesIO(data), allow_pickle=False)
        size, expected, count, reasons = tar.stat().st_size, found["tar_bytes"], found["entries"], found["reasons"]
        if found["store_format"] != STORE_FORMAT or rows.dtype != ROW or len(rows) != count:
            raise ValueError(f"its index is not {count} rows of store format {STORE_FORMAT}")
        codes = np.concatenate([rows["video_error"], rows["audio_error"]])
        if not isinstance(reasons, list) or codes.max(initial=NONE) >= len(reasons) or codes.min(initial=NONE) < NONE:
            raise ValueError("its error codes point outside its reason table")
    except (OSError, EOFError, ValueError, KeyError, TypeError) as exc:
        log.warning("store shard %s is unreadable (%s: %s): its clips are decoded again", marker, type(exc).__name__,
                    exc)
        return None
    if size != expected:
        log.warning("store shard %s has %d bytes, its index says %s: its %d clips are decoded again", tar, size,
                    expected, count)
        return None
    return rows, reasons


class StoreIndex:
    """Every committed shard's rows, sorted by key (a later shard supersedes an earlier entry of the same key)."""

    def __init__(self, shards: Path, forgotten: set[int] = frozenset()) -> None:
        self.shards = shards
        self.reasons: list[str] = []
        parts, numbers = [], []
        for marker in sorted(shards.glob("[0-9]*.json")):
            read = _read_shard(marker)
            if read is None:
                continue
            rows, reasons = read
            codes = np.array([self._code(r) for r in reasons] + [NONE], dtype=np.int16)  # [-1] -> NONE
            for column in ("video_error", "audio_error"):
                rows[column] = codes[rows[column]]
            parts.append(rows)
            numbers.append(np.full(len(rows), int(marker.stem), dtype=np.uint32))
        rows = np.concatenate(parts) if parts else np.zeros(0, ROW)
        shard = np.concatenate(numbers) if numbers else np.zeros(0, np.uint32)
        order = np.argsort(rows["key"], kind="stable")
        keys = rows["key"][order]
        last = np.ones(len(keys), bool)  # the last of equal keys: the latest shard's entry
        last[:-1] = keys[1:] != keys[:-1]
        keep = order[last]
        keep = keep[~np.isin(rows["key"][keep], np.fromiter(forgotten, np.uint64, len(forgotten)))]
        self._set(rows[keep], shard[keep])

    def _set(self, rows: np.ndarray, shard: np.ndarray) -> None:
        self.rows, self.shard = rows, shard
        # contiguous: searchsorted on the strided column of 110-byte rows would copy it at every call (8 MB at 1 M)
        self.keys = np.ascontiguousarray(rows["key"])

    def _code(self, reason: str) -> int:
        if reason not in self.reasons:
            self.reasons.append(reason)
        return self.reasons.index(reason)

    def __len__(self) -> int:
        return len(self.rows)

    def find(self, media_keys: Sequence[str]) -> np.ndarray:
        """Row numbers of the media keys, -1 where absent."""
        wanted, keys = key_hashes(media_keys), self.keys
        order = np.argsort(wanted)  # searched in sorted order: 3x faster at 1 M keys than in a random one
        at = np.empty(len(wanted), np.int64)
        at[order] = np.searchsorted(keys, wanted[order])
        found = at < len(keys)
        found[found] = keys[at[found]] == wanted[found]
        return np.where(found, at, -1)

    def drop(self, rows: np.ndarray) -> None:
        keep = np.ones(len(self.rows), bool)
        keep[rows] = False
        self._set(self.rows[keep], self.shard[keep])

    def tar(self, row: int) -> Path:
        return self.shards / f"{int(self.shard[row]):06d}.tar"

    def tars(self, rows: np.ndarray) -> list[str]:
        """The shard file name of each row."""
        return [f"{number:06d}.tar" for number in self.shard[rows].tolist()]

    def identity(self, rows: np.ndarray) -> np.ndarray:
        """[len(rows), 4] media identity (video size, mtime, audio size, mtime) the entries were decoded from."""
        picked = self.rows[rows]
        return np.stack([picked[c] for c in ("video_size", "video_mtime", "audio_size", "audio_mtime")], axis=1)

    def columns(self, rows: np.ndarray) -> MediaColumns:
        """The decode statuses of rows (all present) as columns."""
        picked = self.rows[rows]
        return MediaColumns(picked["has_video"], picked["has_audio"], picked["video_error"].astype(np.int64),
                            picked["audio_error"].astype(np.int64), tuple(self.reasons))

    def statuses(self, rows: np.ndarray, clip_ids: Sequence[str]) -> list[MediaStatus]:
        """The decode statuses of rows (all present), as MediaStatus of the given clip ids."""
        picked = self.rows[rows]
        reasons = [*self.reasons, None]  # code NONE (-1) -> None
        raw, has_digest = picked["sha256"].tobytes(), picked["sha256"].any(axis=1).tolist()
        digests = [raw[32 * i : 32 * i + 32].hex() if has else None for i, has in enumerate(has_digest)]
        columns = zip(clip_ids, picked["has_video"].tolist(), picked["has_audio"].tolist(),
                      picked["video_error"].tolist(), picked["audio_error"].tolist(), picked["duration"].tolist(),
                      picked["bytes"].tolist(), digests, strict=True)
        return [MediaStatus(clip_id, has_video, has_audio, reasons[video_error], reasons[audio_error],
                            None if math.isnan(duration) else duration, None if size == NONE else size, digest)
                for clip_id, has_video, has_audio, video_error, audio_error, duration, size, digest in columns]
