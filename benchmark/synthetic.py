"""Tiny, learnable datasets written in the real on-disk formats (spec/datasets.md), for smoke runs and tests.

Every clip is a short real mp4 (H.264 + AAC through PyAV). What is seen (background colour, where a black
square sits) and what is heard (hum, whistle, beeping, static) are drawn per clip and named in its captions,
so a tiny model trained for a few seconds retrieves far above chance. The files carry the formats' quirks
and planted defects (clips without an audio track, a truncated file, a listed but missing file), so the
loaders under test are the loaders users run. Deterministic for a seed.

This module holds what every generated dataset shares (content, frames, sound, mp4 / WAV / CSV writers) and
`synthesize`; each dataset's writer lives in its task module, next to its loader (`register_synthetic`), so a
new dataset is one module in tasks/.
"""

from __future__ import annotations

import csv
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmark.registry import Registry

SAMPLE_RATE = 16_000
FPS = 8
FRAME_W, FRAME_H = 64, 48

COLOURS = {
    "red": (210, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 70, 210),
    "yellow": (230, 210, 40),
    "purple": (130, 50, 170),
    "white": (235, 235, 235),
}
POSITIONS = ("left", "right", "top", "bottom")
SOUNDS = ("a low hum", "a high whistle", "a beeping sound", "static noise")


@dataclass(frozen=True)
class Content:
    """What one generated clip shows and plays."""

    colour: str
    position: str
    sound: str
    seconds: float

    def captions(self, rng: random.Random, count: int) -> list[str]:
        """`count` distinct paraphrases naming colour, position and sound."""
        seen = [
            f"a {self.colour} screen with a black square on the {self.position}",
            f"a black square at the {self.position} of a {self.colour} background",
            f"{self.colour} background and a dark square to the {self.position}",
            f"the picture is {self.colour} with a square on its {self.position} side",
        ]
        heard = [f"while {self.sound} plays", f"with {self.sound}", f"and you can hear {self.sound}",
                 f"as {self.sound} goes on"]
        pairs = [f"{s} {h}" for s in seen for h in heard] + [f"{self.sound} over a {self.colour} screen",
                                                              f"{self.sound} and a {self.colour} picture",
                                                              f"you hear {self.sound} and see {self.colour}",
                                                              f"{self.colour} video, {self.sound}"]
        rng.shuffle(pairs)
        return pairs[:count]


def draw_content(rng: random.Random, min_seconds: float = 2.0, max_seconds: float = 4.0) -> Content:
    return Content(rng.choice(list(COLOURS)), rng.choice(POSITIONS), rng.choice(SOUNDS),
                   round(rng.uniform(min_seconds, max_seconds), 2))


def render_frames(content: Content, rng: np.random.Generator) -> np.ndarray:
    """uint8 [T, H, W, 3] at FPS: flat colour, a black square at the named position, a little pixel noise."""
    n = max(int(content.seconds * FPS), 1)
    base = np.empty((FRAME_H, FRAME_W, 3), dtype=np.float32)
    base[:] = COLOURS[content.colour]
    side = FRAME_H // 2  # large enough to survive the resize and centre crop to 224
    top = {"top": 2, "bottom": FRAME_H - side - 2}.get(content.position, (FRAME_H - side) // 2)
    left = {"left": 2, "right": FRAME_W - side - 2}.get(content.position, (FRAME_W - side) // 2)
    base[top : top + side, left : left + side] = 0
    noise = rng.normal(0, 6, size=(n, FRAME_H, FRAME_W, 3))
    return np.clip(base[None] + noise, 0, 255).astype(np.uint8)


def render_audio(content: Content, rng: np.random.Generator) -> np.ndarray:
    """float32 [2, N] at 16 kHz for the named sound; the right channel is a slightly quieter copy."""
    t = np.arange(int(content.seconds * SAMPLE_RATE)) / SAMPLE_RATE
    jitter = rng.uniform(0.95, 1.05)
    if content.sound == "a low hum":
        wave = sum(np.sin(2 * np.pi * 150 * k * jitter * t) / k for k in (1, 2, 3))
    elif content.sound == "a high whistle":
        wave = np.sin(2 * np.pi * 3000 * jitter * t)
    elif content.sound == "a beeping sound":
        wave = np.sin(2 * np.pi * 1000 * jitter * t) * (np.sin(2 * np.pi * 4 * t) > 0)
    else:
        wave = rng.normal(0, 0.5, size=t.shape)
    wave = 0.3 * wave / max(np.abs(wave).max(), 1e-6)
    wave = wave + rng.normal(0, 0.003, size=t.shape)
    return np.stack([wave, 0.8 * wave]).astype(np.float32)


def write_mp4(path: Path, frames: np.ndarray, audio: np.ndarray | None, fps: int = FPS,
              rate: int = SAMPLE_RATE) -> None:
    """Write H.264 video (+ AAC stereo audio when given) with PyAV."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=fps)
        video.width, video.height, video.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        video.options = {"preset": "ultrafast", "crf": "18"}
        sound = None
        if audio is not None:
            sound = container.add_stream("aac", rate=rate)
            sound.layout = "stereo"
            sound.options = {"aac_coder": "fast"}  # FFmpeg's default two-loop coder is 2x slower
        for image in frames:
            container.mux(video.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(video.encode(None))
        if sound is not None:
            chunk = 1024  # the AAC frame size
            for start in range(0, audio.shape[1], chunk):
                block = np.ascontiguousarray(audio[:, start : start + chunk])
                frame = av.AudioFrame.from_ndarray(block, format="fltp", layout="stereo")
                frame.sample_rate, frame.pts = rate, start
                container.mux(sound.encode(frame))
            container.mux(sound.encode(None))


def truncate(path: Path) -> None:
    """Plant a corrupt file: keep the first 30% of the bytes."""
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * 0.3)])


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


def youtube_ids(rng: random.Random, count: int) -> list[str]:
    """Distinct 11-character YouTube-style ids; every fifth starts with '-' or '_' (a real quirk)."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    out: list[str] = []
    while len(out) < count:
        head = "-_"[len(out) % 2] if len(out) % 5 == 0 else rng.choice(alphabet[:62])
        candidate = head + "".join(rng.choice(alphabet) for _ in range(10))
        if candidate not in out:
            out.append(candidate)
    return out


def write_wav(path: Path, wave: np.ndarray, rate: int = SAMPLE_RATE) -> None:
    import soundfile

    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(str(path), wave.T, rate)


SCALES = {"tiny": 1, "small": 4}  # "small" multiplies every size
DATASETS: Registry = Registry("generated dataset")
GENERATED_MARKER = "GENERATED_BY_CLIP4VLA.txt"


def register_synthetic(folder: str, **sizes: int) -> Callable:
    """Register `writer(root, seed, **sizes)` as the generator of the dataset folder `folder` (a task module's
    own writer, next to its loader), with its sizes at scale "tiny"; it returns what it planted."""
    def add(writer: Callable[..., dict]) -> Callable[..., dict]:
        DATASETS.register(folder)((writer, sizes))
        return writer

    return add


def synthesize(out: Path, seed: int = 0, scale: str = "tiny", only: set[str] | None = None) -> dict[str, dict]:
    """Write the generated datasets under `out/<dataset>/` (all, or those in `only`); returns what was planted."""
    from benchmark.registry import load_tasks

    load_tasks()  # the task modules register their datasets' writers
    planted = {}
    for name in DATASETS:
        if only is None or name in only:
            writer, sizes = DATASETS.get(name)
            planted[name] = writer(Path(out) / name, seed=seed, **{k: v * SCALES[scale] for k, v in sizes.items()})
            (Path(out) / name / GENERATED_MARKER).write_text("generated by clip4vla (benchmark/synthetic.py): runs on "
                                                             "this folder are tagged data_generated\n")
    return planted


def is_generated(folder: Path) -> bool:
    """Whether `folder` is a dataset synthesize() wrote: the report puts a banner over numbers measured on one."""
    return (Path(folder) / GENERATED_MARKER).exists()
