"""Decode each clip once: frames and log-mel are cached on disk, keyed by a preprocessing fingerprint.

Training and evaluation read the cache, never the media. A cache entry holds uint8 frames [T, 3, 224, 224]
(or None) and the dB log-mel [3, T, 224] before segmentation (or None), because the SpecAugment view of the
intra-modal loss is drawn on the log-mel (spec §3) and segment selection depends on max_audio_segments.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import multiprocessing
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch

from benchmark.config import DataConfig
from benchmark.errors import UserError
from benchmark.items import Clip
from benchmark.media import audio as audio_fe
from benchmark.media import video as video_fe
from benchmark.media.errors import MediaError

# 2: non-finite and shorter-than-one-window audio are media failures (issue 12), no longer cached as audio
CACHE_FORMAT = 2


@dataclass(frozen=True)
class Preprocessing:
    """Everything that changes cached tensors. Its hash is the fingerprint that names the cache folder."""

    max_frames: int = 12
    frame_size: int = video_fe.FRAME_SIZE
    frames_per_second: int = 1
    sample_rate: int = audio_fe.SAMPLE_RATE
    n_fft: int = audio_fe.N_FFT
    hop: int = audio_fe.HOP
    n_mels: int = audio_fe.N_MELS
    f_max: float = audio_fe.F_MAX
    top_db: float = audio_fe.TOP_DB
    max_seconds: float = audio_fe.MAX_SECONDS
    stft_pad_mode: str = "constant"  # librosa 0.9 zeros (spec §3); "reflect" reproduces librosa 0.8
    resampler: str = audio_fe.RESAMPLER  # caches made with torchaudio's resampler (no such field) never match
    cache_format: int = CACHE_FORMAT

    @classmethod
    def of(cls, data: DataConfig) -> Preprocessing:
        """The preprocessing a run's data config asks for (what training, evaluation and prepare share)."""
        return cls(max_frames=data.max_frames, stft_pad_mode=data.stft_pad_mode)

    def fingerprint(self) -> str:
        text = json.dumps(dataclasses.asdict(self), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]


@dataclass
class MediaStatus:
    """What decoding one clip found; the manifest and the run record count these."""

    clip_id: str
    has_video: bool
    has_audio: bool
    video_error: str | None = None  # MediaError.reason
    audio_error: str | None = None
    duration: float | None = None  # seconds of the media (audio samples / rate, else the container's)
    bytes: int | None = None  # size of the clip's main media file (the video, else the audio)
    sha256: str | None = None

    @property
    def decodable(self) -> bool:
        return self.has_video or self.has_audio


def file_digest(path: Path) -> tuple[int, str] | tuple[None, None]:
    """(bytes, sha256) of a file, or (None, None) when it does not exist."""
    if path is None or not Path(path).is_file():
        return None, None
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return Path(path).stat().st_size, digest.hexdigest()


def _attempt(read: Callable[[], object]) -> tuple[object | None, str | None]:
    """(what `read` returns, None), or (None, the MediaError reason)."""
    try:
        return read(), None
    except MediaError as exc:
        return None, exc.reason


def decode_clips(clips: list[Clip], prep: Preprocessing) -> list[tuple[dict[str, torch.Tensor | None], MediaStatus]]:
    """Decode clips cut from the same media files (e.g. the ASR segments of one long video; a single clip
    otherwise): each file is decoded and hashed once, then cut per clip. Media problems are recorded in the
    statuses, never raised."""
    video, audio = clips[0].video, clips[0].audio
    last = max(video_fe.second_range(c.start, c.end)[1] for c in clips)
    seconds, video_error = _attempt(lambda: video_fe.decode_seconds(video, last)) if video else (None, None)
    whole, audio_error = _attempt(lambda: audio_fe.read_file(audio)) if audio else (None, None)
    container_duration = functools.cache(lambda: video_fe.duration_seconds(video))  # probed only if needed
    size, digest = file_digest(video if video is not None and video.exists() else audio)
    out = []
    for clip in clips:
        entry: dict[str, torch.Tensor | None] = {"frames": None, "logmel": None}
        status = MediaStatus(clip.id, has_video=False, has_audio=False, video_error=video_error,
                             audio_error=audio_error, bytes=size, sha256=digest)
        if seconds is not None:
            entry["frames"], status.video_error = _attempt(lambda c=clip: video_fe.cut_frames(
                seconds, video, prep.max_frames, prep.frame_size, c.start, c.end))
            status.has_video = entry["frames"] is not None
        if whole is not None:
            cut, status.audio_error = _attempt(lambda c=clip: audio_fe.cut_waveform(*whole, audio, c.start, c.end))
            if cut is not None:
                wave, rate = cut
                status.duration = wave.shape[1] / rate
                entry["logmel"] = audio_fe.log_mel(audio_fe.lmr_channels(wave, rate), prep.stft_pad_mode)
                status.has_audio = True
        if status.duration is None and status.has_video:
            status.duration = container_duration()
        out.append((entry, status))
    return out


def _single_threaded() -> None:
    """Worker initialiser: one intra-op thread per decoding process, or the workers oversubscribe the cores."""
    torch.set_num_threads(1)


def entry_name(clip: Clip) -> str:
    """The cache file of a clip: a hash of its media key, so ids never become paths."""
    return hashlib.sha1(clip.media_key.encode()).hexdigest()[:20] + ".pt"


def _decode_to_files(job: tuple[list[Clip], Preprocessing, Path]) -> list[MediaStatus]:
    """Decode a group of clips and save each entry (workers write directly, so only the small statuses cross
    the process boundary)."""
    clips, prep, directory = job
    statuses = []
    for clip, (entry, status) in zip(clips, decode_clips(clips, prep), strict=True):
        torch.save(entry, directory / entry_name(clip))
        statuses.append(status)
    return statuses


class MediaCache:
    """Folder `<root>/<fingerprint>/` with one `.pt` per decoded media segment (named by a hash of its media
    key, so ids never become paths), plus `index.json` (media key -> file, status) and `preprocessing.json`.

    `root` may also be a fingerprint folder itself; one made under another fingerprint is refused.
    """

    def __init__(self, root: Path, prep: Preprocessing) -> None:
        self.prep = prep
        root = Path(root)
        wanted = dataclasses.asdict(prep)
        if (root / "preprocessing.json").exists():
            self.dir = root
        else:
            self.dir = root / prep.fingerprint()
        recorded = self.dir / "preprocessing.json"
        if recorded.exists():
            found = json.loads(recorded.read_text())
            if found != wanted:
                changed = ", ".join(f"{k} {found.get(k)} -> {v}" for k, v in wanted.items() if found.get(k) != v)
                raise UserError(f"cache {self.dir} was made under another preprocessing fingerprint ({changed}); "
                                f"point data.cache at its parent folder or run `clip4vla prepare` again")
        self.dir.mkdir(parents=True, exist_ok=True)
        recorded.write_text(json.dumps(wanted, indent=2))
        index_path = self.dir / "index.json"
        self._index: dict[str, dict] = json.loads(index_path.read_text()) if index_path.exists() else {}

    def status(self, clip: Clip) -> MediaStatus:
        return MediaStatus(**{**self._index[clip.media_key]["status"], "clip_id": clip.id})

    def fill(self, clips: Iterable[Clip], progress: Callable[[int, int], None] | None = None,
             workers: int = 0) -> list[MediaStatus]:
        """Decode the clips not cached yet, in `workers` processes (0: in this one); returns every clip's status.

        The index is rewritten atomically at the end, also after an interruption, so a rerun does only the rest.
        """
        clips = list(clips)
        todo = list({c.media_key: c for c in clips if c.media_key not in self._index}.values())
        groups: dict[tuple, list[Clip]] = {}  # clips cut from the same files are decoded together
        for clip in todo:
            groups.setdefault((clip.video, clip.audio), []).append(clip)
        jobs = [(group, self.prep, self.dir) for group in groups.values()]
        if workers > 0 and len(jobs) > 1:
            # spawn, not fork: forking a process whose OpenMP threads already ran can hang the children
            pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                       initializer=_single_threaded)
            results = pool.map(_decode_to_files, jobs, chunksize=4)
        else:
            pool, results = None, map(_decode_to_files, jobs)
        done = 0
        try:
            for (group, _, _), statuses in zip(jobs, results, strict=True):
                for clip, status in zip(group, statuses, strict=True):
                    self._index[clip.media_key] = {"file": entry_name(clip), "status": dataclasses.asdict(status)}
                    done += 1
                    if progress:
                        progress(done, len(todo))
        finally:
            if pool is not None:
                pool.shutdown(cancel_futures=True)
            if todo:
                tmp = self.dir / "index.json.tmp"
                tmp.write_text(json.dumps(self._index))
                tmp.replace(self.dir / "index.json")
        return [self.status(c) for c in clips]

    def load(self, clip: Clip) -> dict[str, torch.Tensor | None]:
        return torch.load(self.dir / self._index[clip.media_key]["file"], weights_only=True)
