"""The unit of data every task loader returns and every stage consumes: one clip with its captions."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Clip:
    """One video/audio clip and all of its captions (grouped by clip id, never by row order).

    `audio` is a WAV file or the video file itself (its audio track); None when the dataset has no audio source.
    `audio_type` is the type-token row used in `index` mode (pre-training): 0 verbal (HowTo100M-like),
    1 non-verbal (AudioSet-like) (spec §2.3).
    """

    id: str
    captions: tuple[str, ...]
    video: Path | None
    audio: Path | None
    audio_type: int = 1
