"""The unit of data every task loader returns and every stage consumes: one clip with its captions; and a split's
clips as columns, for the processes that read them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


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

    @property
    def stored(self) -> StoredClip:
        return StoredClip(self.id, self.media_key, self.audio_type)


@dataclass(frozen=True, slots=True)
class StoredClip:
    """What reading a clip's media from the store needs (`MediaStore.load`, `ClipTensors`): its id (for messages),
    its media key and its audio type."""

    id: str
    media_key: str
    audio_type: int


class StoredClips:
    """A split's clips as numpy columns (`StoredClip`'s fields; text in numpy's StringDType), for the datasets that
    DataLoader workers read: `[i]` is clips[i].stored, made when it is read.

    Why not a list of clips: a worker forked from the main process shares its memory until it writes to a page, and
    reading a Python object writes its reference count, so a worker reading an epoch of a list of Clips copies every
    page they lie on (`gc.freeze` does not prevent it; PyTorch issue 13246): about 680 bytes a clip, 680 MB in every
    worker over a 1 M-clip pre-training epoch (issue 13). Making a Path in the worker does the same to the interned
    names of every file (pathlib interns path parts). Arrays are read without writing to them.
    """

    def __init__(self, clips: list[Clip]) -> None:
        text = np.dtypes.StringDType()
        self.ids = np.array([c.id for c in clips], dtype=text)
        self.media_keys = np.array([c.media_key for c in clips], dtype=text)
        self.audio_types = np.array([c.audio_type for c in clips], dtype=np.int64)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> StoredClip:
        return StoredClip(str(self.ids[index]), str(self.media_keys[index]), int(self.audio_types[index]))
