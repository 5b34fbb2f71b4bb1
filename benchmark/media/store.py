"""The media store: every clip decoded once into WebDataset tar shards that standard tools read.

Layout of `<data.cache>/<fingerprint>/` (README, "The media store"):

    preprocessing.json        what the tensors depend on (the fingerprint's fields; `store_format` among them)
    shards/000000.tar         WebDataset samples: <key>.json (the entry's record), <key>.000.jpg ... (frames),
                              <key>.flac (16 kHz PCM audio)
    shards/000000.index.npy   the shard's index: one fixed-size row per entry (`shard_index`)
    shards/000000.json        the shard's commit marker: store format, the tar's size, the row count; written
                              last, so a shard exists once it does (a kill loses at most the shard being written)
    manifest-<task>.csv       one row per clip and split (`clip4vla prepare`)

An entry stores what the authors' pipeline stores (spec §4, §3): JPEG frames at 1 fps with the shorter side at
224, centre-cropped when read, and the clip's 16 kHz audio as 24-bit PCM (FLAC; `data.audio_bits=16` halves it),
from which the log-mel is computed on the training device (data.ClipBatches). Each record names its media
files' identity (size, mtime): a file added, replaced or repaired after a `prepare` is decoded again. Each file
of an entry carries a CRC-32: a truncated, garbage, swapped or wrongly shaped entry is a `BadEntry` naming the
shard and the clip, never another clip's tensors.

Random access reads an entry's byte range, which its index row holds (`read_sample`: one pread, parsed by tarfile);
the index is numpy columns (`shard_index`), so opening a store of 1 M clips reads ~100 MB of arrays rather than
parsing 2.5 GB of JSON.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
import multiprocessing
import os
import tarfile
import zlib
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch

from benchmark.errors import UserError
from benchmark.items import Clip, StoredClip
from benchmark.media import audio as audio_fe
from benchmark.media import video as video_fe
from benchmark.media.decode import (STORE_FORMAT, MediaColumns, MediaStatus, Preprocessing, decode_clips,
                                   file_digest, main_file)
from benchmark.media.shard_index import ROW, StoreIndex, identity_columns, key_hash, row_of
from benchmark.output_lock import hold_folder

log = logging.getLogger(__name__)
SHARD_BYTES = 1 << 30  # 1 GiB tars: few files on shared storage, a bounded loss when a prepare is killed
TAR_MTIME = 0  # a fixed member mtime, equal inputs give byte-equal shards; an int: a float adds a PAX header (1 kB)


class BadEntry(Exception):
    """A stored entry that does not match its record (checksum, key or shape); names the shard and the clip."""


def media_identity(path: Path | None) -> list[int] | None:
    """[size, mtime_ns] of a media file, None when absent: what says a stored entry is still current."""
    if path is None:
        return None
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return [stat.st_size, stat.st_mtime_ns]


def clip_source(clip: Clip) -> dict:
    return {"video": media_identity(clip.video), "audio": media_identity(clip.audio)}


def entry_key(clip: Clip | StoredClip) -> str:
    """A sample's key in its shard: a hash of the media key (ids never become file names)."""
    return hashlib.sha1(clip.media_key.encode()).hexdigest()[:20]


def encode_entry(clip: Clip, entry: dict, status: MediaStatus, prep: Preprocessing) -> dict[str, bytes]:
    """The files of one sample (extension -> bytes), its record as `json` (with every other file's CRC-32)."""
    import soundfile
    from torchvision.io import encode_jpeg

    files: dict[str, bytes] = {}
    frames, pcm = entry["frames"], entry["pcm"]
    if frames is not None:
        for i, frame in enumerate(frames):
            files[f"{i:03d}.jpg"] = encode_jpeg(frame, quality=prep.jpeg_quality).numpy().tobytes()
    if pcm is not None:
        buffer = io.BytesIO()
        soundfile.write(buffer, pcm.T, audio_fe.SAMPLE_RATE, format="FLAC", subtype=f"PCM_{prep.audio_bits}")
        files["flac"] = buffer.getvalue()
    record = {
        "key": entry_key(clip), "media_key": clip.media_key, "source": clip_source(clip),
        "status": {k: v for k, v in dataclasses.asdict(status).items() if k != "clip_id"},
        "frames": None if frames is None else list(frames.shape),
        "audio": None if pcm is None else list(pcm.shape),
        "crc32": {ext: zlib.crc32(data) for ext, data in files.items()},
    }
    return {"json": json.dumps(record, sort_keys=True).encode(), **files}


def decode_entry(files: dict[str, bytes], record: dict, prep: Preprocessing, where: str) -> dict:
    """Sample files checked by `entry_record` -> {"frames": uint8 [T, 3, 224, 224] | None, "pcm": int32 [C, N]
    at 16 kHz (`audio.from_pcm` makes it float) | None}; BadEntry naming `where` for anything that does not match
    the record."""
    try:
        return _decoded(files, record, prep, where)
    except BadEntry:
        raise
    except Exception as exc:  # the JPEG and FLAC decoders raise their own types on bytes that passed the checks
        raise BadEntry(f"{where}: undecodable ({type(exc).__name__}: {exc})") from None


def entry_record(files: dict[str, bytes], record_crc: int, media_key: str, where: str) -> dict:
    """The sample's record (its .json), checked: the CRC-32 the index row was made from (a flipped bit in a frame
    count or a shape is caught here), the clip's media key, and every file it lists with its CRC-32."""
    if zlib.crc32(files.get("json", b"")) != record_crc:
        raise BadEntry(f"{where}: the shard index and the entry's own record disagree (checksum)")
    record = json.loads(files["json"])
    if record["media_key"] != media_key:
        raise BadEntry(f"{where}: the entry is media {record['media_key']!r}, not {media_key!r}")
    for ext, crc in record["crc32"].items():
        if ext not in files or zlib.crc32(files[ext]) != crc:
            raise BadEntry(f"{where}: {ext} is {'missing' if ext not in files else 'damaged'} (checksum)")
    extra = sorted(set(files) - set(record["crc32"]) - {"json"})
    if extra:
        raise BadEntry(f"{where}: files the record does not list: {', '.join(extra)}")
    return record


def _decoded(files: dict[str, bytes], record: dict, prep: Preprocessing, where: str) -> dict:
    import soundfile
    from torchvision.io import decode_jpeg

    out: dict[str, torch.Tensor | None] = {"frames": None, "pcm": None}
    if record["frames"] is not None:
        names = [f"{i:03d}.jpg" for i in range(record["frames"][0])]
        frames = torch.stack(decode_jpeg([torch.frombuffer(bytearray(files[n]), dtype=torch.uint8) for n in names]))
        if list(frames.shape) != record["frames"]:
            raise BadEntry(f"{where}: frames decode to {list(frames.shape)}, the record says {record['frames']}")
        out["frames"] = video_fe.center_crop(frames, prep.frame_size)
    if record["audio"] is not None:
        pcm, rate = soundfile.read(io.BytesIO(files["flac"]), dtype="int32", always_2d=True)
        if [pcm.shape[1], pcm.shape[0]] != record["audio"] or rate != audio_fe.SAMPLE_RATE:
            raise BadEntry(f"{where}: audio decodes to {[pcm.shape[1], pcm.shape[0]]} at {rate} Hz, the record "
                           f"says {record['audio']} at {audio_fe.SAMPLE_RATE} Hz")
        out["pcm"] = torch.from_numpy(np.ascontiguousarray(pcm.T))
    return out


def _single_threaded() -> None:
    """Worker initialiser: one intra-op thread per decoding process, or the workers oversubscribe the cores."""
    torch.set_num_threads(1)


def _decode_and_encode(job: tuple[list[Clip], Preprocessing]) -> list[tuple[MediaStatus, dict[str, bytes]]]:
    """Decode a group of clips cut from the same media and encode each as sample files (in a worker)."""
    clips, prep = job
    return [(status, encode_entry(clip, entry, status, prep))
            for clip, (entry, status) in zip(clips, decode_clips(clips, prep), strict=True)]


def read_sample(tar: Path, offset: int, span: int) -> tuple[str, dict[str, bytes]]:
    """(key, extension -> bytes) of the WebDataset sample whose members fill bytes [offset, offset + span) of
    `tar` (its index row's range): one read, parsed by the standard library's tarfile; nothing else of the shard
    is looked at, so a read costs the same in a shard of 10 or 10,000 entries and no shard is held open."""
    fd = os.open(tar, os.O_RDONLY)
    try:
        data = os.pread(fd, span, offset)
    finally:
        os.close(fd)
    if len(data) != span:
        raise ValueError(f"{len(data)} of {span} bytes at {offset}")
    keys, files = set(), {}
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as members:
        for member in members:
            key, ext = member.name.split(".", 1)
            keys.add(key)
            files[ext] = members.extractfile(member).read()
    if len(keys) != 1:
        raise ValueError(f"members of {len(keys)} samples")
    return keys.pop(), files


class ShardWriter:
    """Appends samples to numbered tar shards; a shard is committed (tar renamed, then its index and its marker
    written atomically) when it reaches `shard_bytes` or at `commit`. `abort` removes the shard being written."""

    def __init__(self, folder: Path, first: int, shard_bytes: int) -> None:
        self.folder, self.number, self.shard_bytes = folder, first, shard_bytes
        self.tar = None
        self.rows: list[tuple] = []
        self.reasons: list[str] = []  # the shard's error reasons, which its rows' codes point into
        self.bytes = 0

    def _tmp(self) -> Path:
        return self.folder / f"{self.number:06d}.tar.tmp"

    def add(self, files: dict[str, bytes]) -> None:
        from webdataset import TarWriter

        if self.tar is None:
            self.tar = TarWriter(str(self._tmp()), encoder=False, mtime=TAR_MTIME)
        record = json.loads(files["json"])
        offset = self.tar.tarstream.offset
        self.tar.write({"__key__": record["key"], **files})
        where = (offset, self.tar.tarstream.offset - offset)
        self.rows.append(row_of(record, zlib.crc32(files["json"]), where, self.reasons))
        self.bytes += sum(len(data) for data in files.values())
        if self.bytes >= self.shard_bytes:
            self.commit()

    def commit(self) -> None:
        if self.tar is None:
            return
        self.tar.close()
        tar = self.folder / f"{self.number:06d}.tar"
        with self._tmp().open("rb") as f:
            os.fsync(f.fileno())
        self._tmp().replace(tar)
        buffer = io.BytesIO()
        np.save(buffer, np.array(self.rows, dtype=ROW), allow_pickle=False)
        write_atomically(tar.with_suffix(".index.npy"), buffer.getvalue())
        marker = {"store_format": STORE_FORMAT, "tar_bytes": tar.stat().st_size, "entries": len(self.rows),
                  "index_crc32": zlib.crc32(buffer.getvalue()), "reasons": self.reasons}
        write_atomically(tar.with_suffix(".json"), json.dumps(marker, sort_keys=True))
        self.tar, self.rows, self.reasons, self.bytes, self.number = None, [], [], 0, self.number + 1

    def abort(self) -> None:
        if self.tar is not None:
            self.tar.close()
            self._tmp().unlink(missing_ok=True)
            self.tar = None


def read_preprocessing(path: Path) -> dict:
    try:
        found = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise UserError(f"{path} is unreadable ({type(exc).__name__}): delete its folder and run `clip4vla "
                        "prepare` again") from None
    if not isinstance(found, dict):
        raise UserError(f"{path} is not a preprocessing record: delete its folder and run `clip4vla prepare` again")
    return found


def older_format(found: dict) -> str | None:
    """What an older clip4vla's preprocessing.json says it wrote, None when it is this store format."""
    if "cache_format" in found:
        return f"a media cache of an older clip4vla (cache format {found['cache_format']}, one .pt per clip)"
    if found.get("store_format") != STORE_FORMAT:
        return f"a media store of another clip4vla (store format {found.get('store_format')})"
    return None


def write_atomically(path: Path, data: str | bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)


class MediaStore:
    """The store under `root` for `prep` (module docstring). `root` may also be a fingerprint folder itself; one
    made under another fingerprint (another preprocessing, or an older store format) is refused.

    Reading never writes: only `fill`, which decodes what is absent or changed, writes, under the folder's lock.
    """

    def __init__(self, root: Path, prep: Preprocessing, shard_bytes: int = SHARD_BYTES) -> None:
        self.prep, self.shard_bytes = prep, shard_bytes
        root = Path(root)
        self.wanted = dataclasses.asdict(prep)
        self.dir = root if (root / "preprocessing.json").exists() else root / prep.fingerprint()
        recorded = self.dir / "preprocessing.json"
        if recorded.exists():
            found = read_preprocessing(recorded)
            older = older_format(found)
            if older:
                raise UserError(f"{self.dir} is {older}, which this clip4vla (store format {STORE_FORMAT}) does not "
                                f"read: run `clip4vla prepare TASK` with data.cache at its parent folder to build the "
                                f"store next to it, then delete it")
            if found != self.wanted:
                changed = ", ".join(f"{k} {found.get(k)} -> {v}" for k, v in self.wanted.items() if found.get(k) != v)
                raise UserError(f"store {self.dir} was made under another preprocessing fingerprint ({changed}); "
                                f"point data.cache at its parent folder, or run `clip4vla prepare` into another "
                                f"data.cache")
        elif root != self.dir:
            self._warn_about_older_stores(root)
        self.shards = self.dir / "shards"
        self.forgotten: set[str] = set()  # media keys `verify` found damaged: absent until decoded again
        self._index = self._read_index()
        self.changed: set[str] = set()  # media keys the last `fill` decoded again because their files changed

    def _warn_about_older_stores(self, root: Path) -> None:
        for other in sorted(root.glob("*/preprocessing.json")):
            older = older_format(read_preprocessing(other))
            if older:
                log.warning("%s holds %s (%s) that this one does not read; clips are decoded into %s (delete the "
                            "old folder to free its space)", root, older, other.parent.name, self.dir)

    # -- reading ----------------------------------------------------------------------------------------------
    def _read_index(self) -> StoreIndex:
        """Every committed shard's rows (`StoreIndex`); a shard whose tar lost bytes or whose index is unreadable
        is left out (its clips are decoded again) with a warning naming it."""
        return StoreIndex(self.shards, {key_hash(k) for k in self.forgotten})

    def __len__(self) -> int:
        return len(self._index)

    def _rows(self, clips: list[Clip]) -> tuple[np.ndarray, np.ndarray]:
        """(row of each clip in the index, -1 where absent; whether the clip is stale: absent, or its media files
        changed size or mtime since its entry was decoded). Each media file is looked at once."""
        rows = self._index.find([c.media_key for c in clips])
        files: dict[tuple[Path | None, Path | None], tuple[int, int, int, int]] = {}
        identities = []
        for clip in clips:  # the segments of one video share its files
            identity = files.get(media := (clip.video, clip.audio))
            if identity is None:
                identity = files[media] = identity_columns(clip_source(clip))
            identities.append(identity)
        now = np.array(identities, dtype=np.int64).reshape(len(clips), 4)
        present = rows >= 0
        stale = ~present
        stale[present] = (self._index.identity(rows[present]) != now[present]).any(axis=1)
        return rows, stale

    def stale(self, clips: Iterable[Clip]) -> list[Clip]:
        """Clips with no entry, or whose media files changed (size or mtime) since their entry was decoded."""
        clips = list(clips)
        _, stale = self._rows(clips)
        return [c for c, s in zip(clips, stale.tolist(), strict=True) if s]

    def _row(self, clip: Clip | StoredClip) -> int:
        return int(self._present([clip])[0])

    def status(self, clip: Clip) -> MediaStatus:
        return self.statuses([clip])[0]

    def statuses(self, clips: list[Clip]) -> list[MediaStatus]:
        """The decode status of each clip (all in the store), from the index: nothing is read from the shards."""
        return self._index.statuses(self._present(clips), [c.id for c in clips])

    def _present(self, clips: Sequence[Clip | StoredClip]) -> np.ndarray:
        """The index rows of clips that are all in the store (KeyError naming the first that is not)."""
        rows = self._index.find([c.media_key for c in clips])
        if (rows < 0).any():
            raise KeyError(f"clip '{clips[int(np.argmax(rows < 0))].id}' is not in store {self.dir}")
        return rows

    def described(self, clips: list[Clip]) -> tuple[list[MediaStatus], list[str], MediaColumns]:
        """Each clip's status, the shard file name holding it, and the statuses as columns (all in the store),
        from one lookup: what `clip4vla prepare` writes to the manifest and counts."""
        rows = self._present(clips)
        return self._index.statuses(rows, [c.id for c in clips]), self._index.tars(rows), self._index.columns(rows)

    def load(self, clip: Clip | StoredClip) -> dict[str, torch.Tensor | None]:
        """The clip's frames and PCM (`decode_entry`); BadEntry when the entry does not match its record."""
        files, record, where = self._entry(clip, self._row(clip))
        return decode_entry(files, record, self.prep, where)

    def _entry(self, clip: Clip | StoredClip, row: int) -> tuple[dict[str, bytes], dict, str]:
        """(files, checked record, where) of the clip's sample; BadEntry naming where it is."""
        tar, (offset, span, record_crc) = self._index.tar(row), self._index.rows[["offset", "span", "record_crc"]][row]
        where = f"store shard {tar}, clip '{clip.id}'"
        try:
            key, files = read_sample(tar, int(offset), int(span))
        except Exception as exc:  # tarfile parsing damaged bytes raises whatever its parser hits
            raise BadEntry(f"{where}: unreadable ({type(exc).__name__}: {exc})") from None
        if key != entry_key(clip):
            raise BadEntry(f"{where}: byte {offset} holds sample {key}, not {entry_key(clip)}")
        try:
            return files, entry_record(files, int(record_crc), clip.media_key, where), where
        except (ValueError, KeyError, TypeError, AttributeError) as exc:  # a record that passed its CRC but not JSON
            raise BadEntry(f"{where}: the entry's record is malformed ({type(exc).__name__}: {exc})") from None

    def verify(self, clips: Iterable[Clip]) -> list[str]:
        """Check every stored entry of `clips` (checksums, keys, records; nothing decoded) and that its media file
        still has the SHA-256 it was decoded from (a replacement of the same size and mtime, which `stale` cannot
        see), and forget the entries that fail, so that the next `fill` decodes them again; returns what was
        wrong, one line per entry."""
        unique = list({c.media_key: c for c in clips}.values())
        damaged, dropped, digests = [], [], {}
        for clip, row in zip(unique, self._index.find([c.media_key for c in unique]).tolist(), strict=True):
            if row < 0:
                continue
            try:
                _, record, where = self._entry(clip, row)
                main, decoded = main_file(clip), record["status"]["sha256"]
                if main not in digests:  # the segments of one video share its file
                    digests[main] = file_digest(main)[1]
                if digests[main] != decoded:
                    raise BadEntry(f"{where}: its media {main} changed since it was decoded (SHA-256 "
                                   f"{(decoded or 'none')[:12]} -> {(digests[main] or 'none')[:12]})")
            except BadEntry as exc:
                damaged.append(str(exc))
                dropped.append(row)
                self.forgotten.add(clip.media_key)
        self._index.drop(np.array(dropped, dtype=np.int64))
        return damaged

    # -- writing ----------------------------------------------------------------------------------------------
    def fill(self, clips: Iterable[Clip], progress: Callable[[int, int], None] | None = None,
             workers: int = 0) -> MediaColumns:
        """Decode the clips that are absent or changed, in `workers` processes (0: in this one), into new shards;
        returns every clip's status, as columns. Nothing is written when nothing is stale."""
        clips = list(clips)
        self.changed = set()
        rows, stale = self._rows(clips)
        if stale.any():
            with hold_folder(self.dir):
                self._write(clips, progress, workers)
            rows = None
        return self._index.columns(self._present(clips) if rows is None else rows)

    def _write(self, clips: list[Clip], progress: Callable[[int, int], None] | None, workers: int) -> None:
        self.shards.mkdir(parents=True, exist_ok=True)
        for leftover in self.shards.glob("*.tmp"):  # the shard a killed prepare was writing
            leftover.unlink()
        if not (self.dir / "preprocessing.json").exists():
            write_atomically(self.dir / "preprocessing.json", json.dumps(self.wanted, indent=2))
        self._index = self._read_index()  # what another prepare committed meanwhile
        rows, stale = self._rows(clips)
        todo = list({c.media_key: c for c, s in zip(clips, stale.tolist(), strict=True) if s}.values())
        self.changed = {c.media_key for c, r, s in zip(clips, rows.tolist(), stale.tolist(), strict=True)
                        if s and r >= 0}
        stale = {c.media_key for c in todo}
        # clips cut from the same files are decoded together, groups in the order of all clips, so that a rerun
        # after a kill writes what is left in the order an uninterrupted prepare writes it
        groups: dict[tuple, list[Clip]] = {}
        for clip in {c.media_key: c for c in clips}.values():
            group = groups.setdefault((clip.video, clip.audio), [])
            if clip.media_key in stale:
                group.append(clip)
        groups = {k: g for k, g in groups.items() if g}
        jobs = [(group, self.prep) for group in groups.values()]
        numbers = [int(p.stem) for p in self.shards.glob("[0-9]*.json")]
        writer = ShardWriter(self.shards, max(numbers, default=-1) + 1, self.shard_bytes)
        pool = None
        if workers > 0 and len(jobs) > 1:
            # spawn, not fork: forking a process whose OpenMP threads already ran can hang the children
            pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                       initializer=_single_threaded)
        results = pool.map(_decode_and_encode, jobs, chunksize=4) if pool else map(_decode_and_encode, jobs)
        done = 0
        try:
            for (group, _), encoded in zip(jobs, results, strict=True):
                for clip, (_, files) in zip(group, encoded, strict=True):
                    writer.add(files)
                    done += 1
                    if progress:
                        progress(done, len(todo))
            writer.commit()
            self.forgotten -= {c.media_key for c in todo}
        except BaseException:
            writer.abort()  # committed shards stay: a rerun decodes only the rest
            raise
        finally:
            self._index = self._read_index()
            if pool is not None:
                pool.shutdown(cancel_futures=True)
