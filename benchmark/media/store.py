"""The media store: every clip decoded once into WebDataset tar shards that standard tools read.

Layout of `<data.cache>/<fingerprint>/` (README, "The media store"):

    preprocessing.json        what the tensors depend on (the fingerprint's fields; `store_format` among them)
    shards/000000.tar         WebDataset samples: <key>.json (the entry's record), <key>.000.jpg ... (frames),
                              <key>.flac (16 kHz PCM audio)
    shards/000000.json        the shard's index: its entries' records and the tar's size; written after the tar,
                              so a shard exists once its index does (a kill loses at most the shard being written)
    manifest-<task>.csv       one row per clip and split (`clip4vla prepare`)

An entry stores what the authors' pipeline stores (spec §4, §3): JPEG frames at 1 fps with the shorter side at
224, centre-cropped when read, and the clip's 16 kHz audio as 24-bit PCM (FLAC; `data.audio_bits=16` halves it),
from which the log-mel is computed when read. Each record names its media files' identity (size, mtime): a file added, replaced or repaired
after a `prepare` is decoded again. Each file of an entry carries a CRC-32: a truncated, garbage, swapped or
wrongly shaped entry is a `BadEntry` naming the shard and the clip, never another clip's tensors.

Random access goes through `wids` (webdataset's indexed tar reader, memory-mapped).
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
import multiprocessing
import os
import zlib
from collections import OrderedDict
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from benchmark.errors import UserError
from benchmark.items import Clip
from benchmark.media import audio as audio_fe
from benchmark.media import video as video_fe
from benchmark.media.decode import STORE_FORMAT, MediaStatus, Preprocessing, decode_clips
from benchmark.output_lock import hold_folder

log = logging.getLogger(__name__)
SHARD_BYTES = 1 << 30  # 1 GiB tars: few files on shared storage, a bounded loss when a prepare is killed
OPEN_SHARDS = 16  # memory-mapped shards kept open per process
TAR_MTIME = 0.0  # a fixed member mtime: equal inputs give byte-equal shards


class BadEntry(Exception):
    """A stored entry that does not match its record (checksum, key or shape); names the shard and the clip."""


@dataclass(frozen=True)
class Location:
    shard: Path
    position: int  # the sample's index in its shard
    record: dict


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


def entry_key(clip: Clip) -> str:
    """A sample's key in its shard: a hash of the media key (ids never become file names)."""
    return hashlib.sha1(clip.media_key.encode()).hexdigest()[:20]


def encode_entry(clip: Clip, entry: dict, status: MediaStatus, prep: Preprocessing) -> dict[str, bytes]:
    """The files of one sample (extension -> bytes), its record as `json` (with every other file's CRC-32)."""
    import soundfile
    from torchvision.io import encode_jpeg

    files: dict[str, bytes] = {}
    frames, wave = entry["frames"], entry["wave"]
    if frames is not None:
        for i, frame in enumerate(frames):
            files[f"{i:03d}.jpg"] = encode_jpeg(frame, quality=prep.jpeg_quality).numpy().tobytes()
    if wave is not None:
        buffer = io.BytesIO()
        soundfile.write(buffer, wave.T, audio_fe.SAMPLE_RATE, format="FLAC", subtype=f"PCM_{prep.audio_bits}")
        files["flac"] = buffer.getvalue()
    record = {
        "key": entry_key(clip), "media_key": clip.media_key, "source": clip_source(clip),
        "status": {k: v for k, v in dataclasses.asdict(status).items() if k != "clip_id"},
        "frames": None if frames is None else list(frames.shape),
        "audio": None if wave is None else list(wave.shape),
        "crc32": {ext: zlib.crc32(data) for ext, data in files.items()},
    }
    return {"json": json.dumps(record, sort_keys=True).encode(), **files}


def decode_entry(files: dict[str, bytes], record: dict, prep: Preprocessing, where: str) -> dict:
    """Checked sample files -> {"frames": uint8 [T, 3, 224, 224] | None, "wave": float64 [C, N] at 16 kHz | None};
    BadEntry naming `where` for anything that does not match the record."""
    check_files(files, record, where)
    try:
        return _decoded(files, record, prep, where)
    except BadEntry:
        raise
    except Exception as exc:  # the JPEG and FLAC decoders raise their own types on bytes that passed the checks
        raise BadEntry(f"{where}: undecodable ({type(exc).__name__}: {exc})") from None


def check_files(files: dict[str, bytes], record: dict, where: str) -> None:
    """The sample's files are exactly the record's, each with its CRC-32, and the record in the shard index is the
    one stored in the tar (a damaged index, e.g. one flipped bit in a frame count, is caught here)."""
    for ext, crc in record["crc32"].items():
        if ext not in files or zlib.crc32(files[ext]) != crc:
            raise BadEntry(f"{where}: {ext} is {'missing' if ext not in files else 'damaged'} (checksum)")
    extra = sorted(set(files) - set(record["crc32"]) - {"json"})
    if extra:
        raise BadEntry(f"{where}: files the record does not list: {', '.join(extra)}")
    try:
        stored = json.loads(files.get("json", b""))
    except ValueError:
        stored = None
    if stored != record:
        raise BadEntry(f"{where}: the shard index and the entry's own record disagree")


def _decoded(files: dict[str, bytes], record: dict, prep: Preprocessing, where: str) -> dict:
    import soundfile
    from torchvision.io import decode_jpeg

    out: dict[str, torch.Tensor | None] = {"frames": None, "wave": None}
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
        out["wave"] = torch.from_numpy(pcm.T.astype(np.float64) / audio_fe.PCM_SCALE)
    return out


def _single_threaded() -> None:
    """Worker initialiser: one intra-op thread per decoding process, or the workers oversubscribe the cores."""
    torch.set_num_threads(1)


def _decode_and_encode(job: tuple[list[Clip], Preprocessing]) -> list[tuple[MediaStatus, dict[str, bytes]]]:
    """Decode a group of clips cut from the same media and encode each as sample files (in a worker)."""
    clips, prep = job
    return [(status, encode_entry(clip, entry, status, prep))
            for clip, (entry, status) in zip(clips, decode_clips(clips, prep), strict=True)]


class ShardWriter:
    """Appends samples to numbered tar shards; a shard is committed (tar renamed, then its index written
    atomically) when it reaches `shard_bytes` or at `close`. `abort` removes the shard being written."""

    def __init__(self, folder: Path, first: int, shard_bytes: int) -> None:
        self.folder, self.number, self.shard_bytes = folder, first, shard_bytes
        self.tar = None
        self.records: list[dict] = []
        self.bytes = 0

    def _tmp(self) -> Path:
        return self.folder / f"{self.number:06d}.tar.tmp"

    def add(self, files: dict[str, bytes]) -> Location:
        from webdataset import TarWriter

        if self.tar is None:
            self.tar = TarWriter(str(self._tmp()), encoder=False, mtime=TAR_MTIME)
        record = json.loads(files["json"])
        self.tar.write({"__key__": record["key"], **files})
        self.records.append(record)
        self.bytes += sum(len(data) for data in files.values())
        location = Location(self.folder / f"{self.number:06d}.tar", len(self.records) - 1, record)
        if self.bytes >= self.shard_bytes:
            self.commit()
        return location

    def commit(self) -> None:
        if self.tar is None:
            return
        self.tar.close()
        tar = self.folder / f"{self.number:06d}.tar"
        with self._tmp().open("rb") as f:
            os.fsync(f.fileno())
        self._tmp().replace(tar)
        index = {"store_format": STORE_FORMAT, "tar_bytes": tar.stat().st_size, "entries": self.records}
        write_atomically(self.folder / f"{self.number:06d}.json", json.dumps(index, sort_keys=True))
        self.tar, self.records, self.bytes, self.number = None, [], 0, self.number + 1

    def abort(self) -> None:
        if self.tar is not None:
            self.tar.close()
            self._tmp().unlink(missing_ok=True)
            self.tar = None


RECORD_KEYS = ("key", "media_key", "source", "status", "frames", "audio", "crc32")


def checked(record: dict) -> dict:
    """A shard index's record, or KeyError / TypeError when it lacks what `load` reads (the shard is left out)."""
    missing = [k for k in RECORD_KEYS if k not in record]
    if missing:
        raise KeyError(f"a record without {missing[0]!r}")
    if not isinstance(record["crc32"], dict):
        raise TypeError("a record whose crc32 is not a mapping")
    return record


def read_preprocessing(path: Path) -> dict:
    try:
        found = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise UserError(f"{path} is unreadable ({type(exc).__name__}): delete its folder and run `clip4vla "
                        "prepare` again") from None
    if not isinstance(found, dict):
        raise UserError(f"{path} is not a preprocessing record: delete its folder and run `clip4vla prepare` again")
    return found


def write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w") as f:
        f.write(text)
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
            if "cache_format" in found:
                raise UserError(f"{self.dir} is a media cache of an older clip4vla (cache format "
                                f"{found['cache_format']}, one .pt per clip), which this one does not read: run "
                                f"`clip4vla prepare TASK` with data.cache at its parent folder to build the store "
                                f"next to it, then delete it")
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
        self._open: OrderedDict[Path, object] = OrderedDict()
        self.changed: set[str] = set()  # media keys the last `fill` decoded again because their files changed

    def _warn_about_older_stores(self, root: Path) -> None:
        for other in sorted(root.glob("*/preprocessing.json")):
            if "cache_format" in read_preprocessing(other):
                log.warning("%s holds a media cache of an older clip4vla (%s) that this one does not read; clips "
                            "are decoded into %s (delete the old folder to free its space)", root, other.parent.name,
                            self.dir)

    # -- reading ----------------------------------------------------------------------------------------------
    def _read_index(self) -> dict[str, Location]:
        """media key -> Location from every committed shard; a shard whose tar lost bytes is left out (its clips
        are decoded again) with a warning naming it. A later shard supersedes an earlier entry."""
        index: dict[str, Location] = {}
        for path in sorted(self.shards.glob("[0-9]*.json")):
            tar = path.with_suffix(".tar")
            try:
                shard = json.loads(path.read_text())
                size = tar.stat().st_size
                entries = {checked(record)["media_key"]: Location(tar, position, record)
                           for position, record in enumerate(shard["entries"])
                           if record["media_key"] not in self.forgotten}
                expected = shard["tar_bytes"]
            except (OSError, ValueError, KeyError, TypeError) as exc:
                log.warning("store shard %s is unreadable (%s: %s): its clips are decoded again", path,
                            type(exc).__name__, exc)
                continue
            if size != expected:
                log.warning("store shard %s has %d bytes, its index says %s: its %d clips are decoded again", tar,
                            size, expected, len(entries))
                continue
            index.update(entries)
        return index

    def __len__(self) -> int:
        return len(self._index)

    def stale(self, clips: Iterable[Clip]) -> list[Clip]:
        """Clips with no entry, or whose media files changed (size or mtime) since their entry was decoded."""
        return [c for c in clips if c.media_key not in self._index
                or self._index[c.media_key].record["source"] != clip_source(c)]

    def status(self, clip: Clip) -> MediaStatus:
        location = self._index[clip.media_key]
        return MediaStatus(**{**location.record["status"], "clip_id": clip.id})

    def shard_of(self, clip: Clip) -> str:
        return self._index[clip.media_key].shard.name

    def load(self, clip: Clip) -> dict[str, torch.Tensor | None]:
        """The clip's frames and waveform (`decode_entry`); BadEntry when the entry does not match its record."""
        location = self._index[clip.media_key]
        where = f"store shard {location.shard}, clip '{clip.id}'"
        return decode_entry(self._files(location, where), location.record, self.prep, where)

    def verify(self, clips: Iterable[Clip]) -> list[str]:
        """Check every stored entry of `clips` (checksums, keys, records; nothing decoded) and forget the damaged
        ones, so that the next `fill` decodes them again; returns what was wrong, one line per entry."""
        damaged = []
        for clip in {c.media_key: c for c in clips if c.media_key in self._index}.values():
            location = self._index[clip.media_key]
            where = f"store shard {location.shard}, clip '{clip.id}'"
            try:
                check_files(self._files(location, where), location.record, where)
            except BadEntry as exc:
                damaged.append(str(exc))
                del self._index[clip.media_key]
                self.forgotten.add(clip.media_key)
        return damaged

    def _files(self, location: Location, where: str) -> dict[str, bytes]:
        shard = self._shard(location.shard, where)
        try:
            sample = shard[location.position]
            files = {ext.lstrip("."): data.read() for ext, data in sample.items() if ext.startswith(".")}
        except Exception as exc:  # wids parsing a damaged tar raises whatever its parser hits
            raise BadEntry(f"{where}: unreadable ({type(exc).__name__}: {exc})") from None
        if sample["__key__"] != location.record["key"]:
            raise BadEntry(f"{where}: position {location.position} holds sample {sample['__key__']}, not "
                           f"{location.record['key']}")
        return files

    def _shard(self, path: Path, where: str):
        from wids.wids import IndexedTarSamples

        if path not in self._open:
            if len(self._open) >= OPEN_SHARDS:
                self._open.popitem(last=False)[1].close()
            try:
                self._open[path] = IndexedTarSamples(path=str(path))
            except Exception as exc:  # wids parsing a damaged tar raises whatever its parser hits
                raise BadEntry(f"{where}: the shard is unreadable ({type(exc).__name__}: {exc})") from None
        self._open.move_to_end(path)
        return self._open[path]

    def __getstate__(self) -> dict:
        """Spawned processes get the index, not this process's open memory maps (forked DataLoader workers
        inherit both: reading a memory map from several processes is safe)."""
        return {**self.__dict__, "_open": OrderedDict()}

    # -- writing ----------------------------------------------------------------------------------------------
    def fill(self, clips: Iterable[Clip], progress: Callable[[int, int], None] | None = None,
             workers: int = 0) -> list[MediaStatus]:
        """Decode the clips that are absent or changed, in `workers` processes (0: in this one), into new shards;
        returns every clip's status. Nothing is written when nothing is stale."""
        clips = list(clips)
        self.changed = set()
        if self.stale(clips):
            with hold_folder(self.dir):
                self._write(clips, progress, workers)
        return [self.status(c) for c in clips]

    def _write(self, clips: list[Clip], progress: Callable[[int, int], None] | None, workers: int) -> None:
        self.shards.mkdir(parents=True, exist_ok=True)
        for leftover in self.shards.glob("*.tmp"):  # the shard a killed prepare was writing
            leftover.unlink()
        if not (self.dir / "preprocessing.json").exists():
            write_atomically(self.dir / "preprocessing.json", json.dumps(self.wanted, indent=2))
        self._index = self._read_index()  # what another prepare committed meanwhile
        todo = list({c.media_key: c for c in self.stale(clips)}.values())
        self.changed = {c.media_key for c in todo if c.media_key in self._index}
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
                    self._index[clip.media_key] = writer.add(files)
                    done += 1
                    if progress:
                        progress(done, len(todo))
            writer.commit()
            self.forgotten -= {c.media_key for c in todo}
        except BaseException:
            writer.abort()  # committed shards stay: a rerun decodes only the rest
            self._index = self._read_index()
            raise
        finally:
            if pool is not None:
                pool.shutdown(cancel_futures=True)
