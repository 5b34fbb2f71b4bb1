"""The unit of data every task loader returns and every stage consumes: one clip with its captions."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class Clip:
    """One video/audio clip and all of its captions (grouped by clip id, never by row order). Slots, no __dict__:
    a 1M-clip pre-training corpus holds a million of them in every process.

    `audio` is a WAV file or the video file itself (its audio track); None when the dataset has no audio source.
    `audio_type` is the type-token row used in `index` mode (pre-training): 0 verbal (instructional speech),
    1 non-verbal (sound events) (spec §2.3). `start`/`end` (seconds) cut a segment out of longer media.
    """

    id: str
    captions: tuple[str, ...]
    video: Path | None
    audio: Path | None
    audio_type: int = 1
    start: float | None = None
    end: float | None = None

    @property
    def media_key(self) -> str:
        """What identifies the decoded tensors: the same media and segment decode once, whatever the task."""
        return f"{self.video}|{self.audio}|{self.start}|{self.end}"
