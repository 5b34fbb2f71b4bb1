"""Decode each clip once: frames and log-mel are cached on disk, keyed by a preprocessing fingerprint.

Training and evaluation read the cache, never the media. A cache entry holds uint8 frames [T, 3, 224, 224]
(or None) and the dB log-mel [3, T, 224] before segmentation (or None), because the SpecAugment view of the
intra-modal loss is drawn on the log-mel (spec §3) and segment selection depends on max_audio_segments.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import torch

from benchmark.items import Clip
from benchmark.media import audio as audio_fe
from benchmark.media import video as video_fe
from benchmark.media.errors import MediaError

CACHE_FORMAT = 1


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
    cache_format: int = CACHE_FORMAT

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


def decode_clip(clip: Clip, prep: Preprocessing) -> tuple[dict[str, torch.Tensor | None], MediaStatus]:
    """Decode one clip's frames and log-mel; media problems are recorded in the status, never raised."""
    entry: dict[str, torch.Tensor | None] = {"frames": None, "logmel": None}
    status = MediaStatus(clip.id, has_video=False, has_audio=False)
    if clip.video is not None:
        try:
            entry["frames"] = video_fe.decode_frames(clip.video, prep.max_frames, prep.frame_size,
                                                     clip.start, clip.end)
            status.has_video = True
        except MediaError as exc:
            status.video_error = exc.reason
    if clip.audio is not None:
        try:
            entry["logmel"] = audio_fe.file_log_mel(clip.audio, prep.stft_pad_mode, clip.start, clip.end)
            status.has_audio = True
        except MediaError as exc:
            status.audio_error = exc.reason
    return entry, status


class MediaCache:
    """Folder `<root>/<fingerprint>/` with one `<n>.pt` per clip plus `index.json` (clip id -> file, status)."""

    def __init__(self, root: Path, prep: Preprocessing) -> None:
        self.prep = prep
        self.dir = Path(root) / prep.fingerprint()
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "preprocessing.json").write_text(json.dumps(dataclasses.asdict(prep), indent=2))
        index_path = self.dir / "index.json"
        self._index: dict[str, dict] = json.loads(index_path.read_text()) if index_path.exists() else {}

    def status(self, clip: Clip) -> MediaStatus:
        return MediaStatus(**{**self._index[clip.media_key]["status"], "clip_id": clip.id})

    def __contains__(self, clip: Clip) -> bool:
        return clip.media_key in self._index

    def fill(self, clips: Iterable[Clip], progress: Callable[[int, int], None] | None = None) -> list[MediaStatus]:
        """Decode the clips not cached yet (entries are numbered files: ids never become paths)."""
        clips = list(clips)
        todo = list({c.media_key: c for c in clips if c.media_key not in self._index}.values())
        for done, clip in enumerate(todo, 1):
            entry, status = decode_clip(clip, self.prep)
            name = f"{len(self._index)}.pt"
            torch.save(entry, self.dir / name)
            self._index[clip.media_key] = {"file": name, "status": dataclasses.asdict(status)}
            if progress:
                progress(done, len(todo))
        if todo:
            tmp = self.dir / "index.json.tmp"
            tmp.write_text(json.dumps(self._index))
            tmp.replace(self.dir / "index.json")
        return [self.status(c) for c in clips]

    def load(self, clip: Clip) -> dict[str, torch.Tensor | None]:
        return torch.load(self.dir / self._index[clip.media_key]["file"], weights_only=True)
