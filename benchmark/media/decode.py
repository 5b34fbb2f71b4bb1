"""Decoding media into what the store keeps (spec §3, §4), and the preprocessing fingerprint of it.

A decoded clip is uint8 frames [T, 3, H, W] at 1 fps with the shorter side resized to 224 (centre-cropped when
read, as the authors' pipeline crops its JPEGs) and its audio as 16 kHz PCM [C, N] (C = 1 or 2, the
first two channels, centred 60 s at most): what the authors stored as raw_frames/*.jpg and audios_16k/*.wav.
The log-mel [3, T, 224] is computed from it on the training device, batch by batch (data.ClipBatches), never
stored: the SpecAugment view of the intra-modal loss masks the log-mel (spec §3), and segment selection depends
on max_audio_segments.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmark.config import DataConfig
from benchmark.items import Clip
from benchmark.media import audio as audio_fe
from benchmark.media import video as video_fe
from benchmark.media.errors import MediaError

# 2: non-finite and shorter-than-one-window audio are media failures (issue 12), no longer cached as audio
# 3: WebDataset shards of JPEG frames and 16 kHz PCM audio (issue 13), replacing one .pt per clip
# 4: each shard's index as fixed-size numpy rows (shard_index.py) instead of JSON records: 1 M clips open in seconds
# 5: each row holds its entry's byte range in the tar: a read is one pread, no shard is scanned (wids' open of a
#    1 GiB shard parsed all its ~14 k member headers, on nearly every read of a random epoch over 2 000 shards)
STORE_FORMAT = 5


@dataclass(frozen=True)
class Preprocessing:
    """Everything that changes stored entries. Its hash is the fingerprint that names the store's folder."""

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
    resampler: str = audio_fe.RESAMPLER  # caches made with torchaudio's resampler (no such field) never match
    jpeg_quality: int = 95  # OpenCV's default, what the authors' frames were written with (spec §4)
    audio_bits: int = 24  # stored PCM: 24 keeps the log-mel within 0.004 dB; 16 (the authors' audios_16k) 0.8 dB
    store_format: int = STORE_FORMAT

    @classmethod
    def of(cls, data: DataConfig) -> Preprocessing:
        """The preprocessing a run's data config asks for (what training, evaluation and prepare share)."""
        # data.stft_pad_mode acts when the log-mel is computed, after reading: it never changes what is stored
        return cls(max_frames=data.max_frames, audio_bits=data.audio_bits)

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


@dataclass(frozen=True)
class MediaColumns:
    """The decode statuses of many clips as columns, what `prepare_split` and the run records count: a million
    MediaStatus objects cost seconds to build (issue 13, `clip4vla perf scale`)."""

    has_video: np.ndarray  # bool [n]
    has_audio: np.ndarray  # bool [n]
    video_error: np.ndarray  # int [n]: index into `reasons`, -1 for none
    audio_error: np.ndarray
    reasons: tuple[str, ...]

    def error_counts(self, kind: str, rows: np.ndarray) -> dict[str, int]:
        """{reason: clips} of the `kind` ("video" or "audio") errors among `rows` (a bool mask)."""
        codes = getattr(self, f"{kind}_error")[rows]
        counts = np.bincount(codes[codes >= 0], minlength=len(self.reasons))
        return {reason: int(n) for reason, n in zip(self.reasons, counts.tolist(), strict=True) if n}


def main_file(clip: Clip) -> Path | None:
    """The file whose size and SHA-256 a clip's entry records: its video when it exists, else its audio."""
    return clip.video if clip.video is not None and clip.video.exists() else clip.audio


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


def decode_clips(clips: list[Clip], prep: Preprocessing) -> list[tuple[dict, MediaStatus]]:
    """Decode clips cut from the same media files (e.g. the ASR segments of one long video; a single clip
    otherwise): each file is decoded and hashed once, then cut per clip. Media problems are recorded in the
    statuses, never raised. Each entry: {"frames": uint8 [T, 3, H, W] | None, "pcm": int32 PCM [C, N] | None}."""
    video, audio = clips[0].video, clips[0].audio
    last = max(video_fe.second_range(c.start, c.end)[1] for c in clips)
    seconds, video_error = _attempt(lambda: video_fe.decode_seconds(video, last)) if video else (None, None)
    whole, audio_error = _attempt(lambda: audio_fe.read_file(audio)) if audio else (None, None)
    container_duration = functools.cache(lambda: video_fe.duration_seconds(video))  # probed only if needed
    size, digest = file_digest(main_file(clips[0]))
    out = []
    for clip in clips:
        entry: dict = {"frames": None, "pcm": None}
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
                entry["pcm"] = audio_fe.pcm(audio_fe.to_16k(wave, rate), prep.audio_bits)
                status.has_audio = True
        if status.duration is None and status.has_video:
            status.duration = container_duration()
        out.append((entry, status))
    return out
