"""Video front-end (spec §4): decode with PyAV, one frame per second, uniform subsampling, CLIP transform.

Frames are stored as JPEG with the shorter side resized to 224 and centre-cropped when read (media/store.py);
they travel as uint8 and `normalize` applies CLIP's mean/std on the device (data.ClipBatches.to_device).
"""

from __future__ import annotations

import functools
import math
from pathlib import Path

import numpy as np
import torch

from benchmark.media.errors import MediaError

FRAME_SIZE = 224
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def decode_frames(path: Path, max_frames: int, size: int = FRAME_SIZE, start: float | None = None,
                  end: float | None = None) -> torch.Tensor:
    """uint8 [T, 3, size, size]: the first frame of each second, uniformly subsampled to at most `max_frames`
    (`decode_seconds`, `cut_frames`, `center_crop`). Raises MediaError for missing, empty, corrupt or stream-less
    files."""
    seconds = decode_seconds(path, second_range(start, end)[1])
    return center_crop(cut_frames(seconds, path, max_frames, size, start, end), size)


def second_range(start: float | None, end: float | None) -> tuple[int, float]:
    """A segment keeps seconds [floor(start), ceil(end)) (spec §4); the whole file without start / end."""
    return (math.floor(start) if start is not None else 0, math.ceil(end) if end is not None else math.inf)


def decode_seconds(path: Path, last: float = math.inf) -> list:
    """The first frame of each second before `last` (as the authors' offline extraction: for second s, the frame
    with index s·int(fps), spec §4), as PIL images indexed by second. Frames decoded before a truncated tail are
    kept (the manifest records the file); raises MediaError when nothing decodes."""
    import av

    path = Path(path)
    if not path.is_file():
        raise MediaError(path, "missing")
    if path.stat().st_size == 0:
        raise MediaError(path, "empty")
    seconds = []
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise MediaError(path, "no_stream", "no video track")
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate or 1
            step = max(int(rate), 1)
            for index, frame in enumerate(container.decode(stream)):
                if index // step >= last:
                    break
                if index % step == 0:
                    seconds.append(frame.to_image())
    except MediaError:
        raise
    except Exception as exc:  # PyAV raises InvalidDataError and friends on broken files
        if not seconds:
            raise MediaError(path, "corrupt", f"{type(exc).__name__}: {exc}") from exc
    if not seconds:
        raise MediaError(path, "corrupt", "no decodable frame")
    return seconds


def cut_frames(seconds: list, path: Path, max_frames: int, size: int = FRAME_SIZE, start: float | None = None,
               end: float | None = None) -> torch.Tensor:
    """One segment's frames from `decode_seconds`: its seconds, `linspace`-subsampled beyond `max_frames`
    (slice_framepos 2), the shorter side resized to `size` (uint8 [T, 3, H, W]; `center_crop` makes them
    square). A segment with no decoded second is MediaError corrupt."""
    first, last = second_range(start, end)
    picked = seconds[first : None if last == math.inf else int(last)]
    if not picked:
        raise MediaError(path, "corrupt", "no decodable frame in the segment")
    if len(picked) > max_frames:
        keep = np.linspace(0, len(picked) - 1, num=max_frames, dtype=int)
        picked = [picked[i] for i in keep]
    return torch.stack([_resize(image, size) for image in picked])


def _resize(image, size: int) -> torch.Tensor:
    """PIL image -> uint8 [3, H, W] with the shorter side `size` (bicubic, CLIP's Resize)."""
    from PIL import Image

    width, height = image.size
    scale = size / min(width, height)
    new_w, new_h = max(size, round(width * scale)), max(size, round(height * scale))
    image = image.convert("RGB").resize((new_w, new_h), Image.BICUBIC)
    return torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1)


def center_crop(frames: torch.Tensor, size: int) -> torch.Tensor:
    """[..., H, W] -> [..., size, size], CLIP's CenterCrop (the offsets PIL's crop takes)."""
    height, width = frames.shape[-2:]
    top, left = (height - size) // 2, (width - size) // 2
    return frames[..., top : top + size, left : left + size].contiguous()


def normalize(frames: torch.Tensor) -> torch.Tensor:
    """uint8 [..., 3, H, W] -> float with CLIP's mean and std."""
    mean, std = _clip_stats(frames.device)
    return (frames.float() / 255.0 - mean) / std


@functools.lru_cache(maxsize=8)
def _clip_stats(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """CLIP's mean and std [3, 1, 1] on `device`, made once: a tensor from a list waits for the device's queue."""
    return (torch.tensor(CLIP_MEAN, device=device).view(3, 1, 1), torch.tensor(CLIP_STD, device=device).view(3, 1, 1))


def duration_seconds(path: Path) -> float | None:
    """Container duration in seconds, or None when the file does not say (or cannot be opened)."""
    import av

    try:
        with av.open(str(path)) as container:
            return container.duration / av.time_base if container.duration else None
    except Exception:  # probing only: decode errors are reported by decode_frames
        return None
