"""AudioCaps (Kim et al., NAACL 2019), official dataset/ CSVs: `audiocap_id,youtube_id,start_time,caption`.

A clip is youtube_id + start_time; its rows are not contiguous (train: 1 caption, val/test: 5). Audio is one
10 s file per clip under the root: audio/<youtube_id>.wav by default, or what the downloader wrote
(audio/Y<youtube_id>.wav, audio/<youtube_id>_<start_time>.wav; or set data.audio_template). Clips that could
not be downloaded (5-10%) are counted by the missing-audio policy.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np

from benchmark.items import Clip
from benchmark.registry import register_task
from benchmark.synthetic import (Content, draw_content, register_synthetic, render_audio, write_csv, write_wav,
                                 youtube_ids)
from tasks.base import Task, TaskSpec, first_existing, read_csv

TEMPLATES = ("audio/{youtube_id}.wav", "audio/Y{youtube_id}.wav", "audio/{youtube_id}_{start_time}.wav")
REFERENCE = "Kim et al., NAACL 2019; CLIP4VLA: Ruan et al., AAAI 2023"


def load_split(root: Path, split: str, audio_template: str | None) -> list[Clip]:
    path = root / f"{split}.csv"
    grouped: dict[tuple[str, str], list[str]] = {}
    for row in read_csv(path, ("youtube_id", "start_time", "caption")):
        grouped.setdefault((row["youtube_id"], row["start_time"]), []).append(row["caption"])
    templates = (audio_template,) if audio_template else TEMPLATES
    out = []
    for (youtube_id, start_time), captions in grouped.items():
        audio = first_existing(root, templates, path, youtube_id, youtube_id=youtube_id, start_time=start_time)
        out.append(Clip(f"{youtube_id}_{start_time}", tuple(captions), None, audio))
    return out


def audiocaps_spec(name: str, kind: str, directions: tuple[str, ...], main_score: str) -> TaskSpec:
    """Both AudioCaps tasks read the same splits; they differ in kind, directions and main score."""
    return TaskSpec(
        name=name, version="1.0", dataset="AudioCaps", data_dir="audiocaps", kind=kind,
        splits=("train", "val", "test"), train_split="train", test_split="test", val_split="val",
        modalities=("text", "audio"), directions=directions, captions_per_item=5, main_score=main_score,
        reference=REFERENCE, test_clips=975, train_pairs=49_838,
    )


class AudioCapsTask(Task):
    def _load(self, root: Path, split: str, audio_template: str | None) -> list[Clip]:
        return load_split(root, split, audio_template)


@register_task("audiocaps_retrieval")
class AudioCapsRetrieval(AudioCapsTask):
    """Text-audio retrieval: train 49,838 clips x 1 caption; test 975 clips x 5 captions."""

    spec = audiocaps_spec("audiocaps_retrieval", "retrieval", ("t2a", "a2t"), "t2a/R1")


@register_task("audiocaps_caption")
class AudioCapsCaption(AudioCapsTask):
    """Audio captioning: train with 1 caption per clip; val/test scored against 5 references."""

    spec = audiocaps_spec("audiocaps_caption", "caption", (), "CIDEr")


@register_synthetic("audiocaps", n_train=40, n_val=8, n_test=12)
def write_audiocaps(root: Path, seed: int = 0, n_train: int = 40, n_val: int = 8, n_test: int = 12) -> dict:
    """AudioCaps official CSVs (train 1 caption per clip; val/test 5, rows not contiguous, quoted captions with
    commas) and audio/<youtube_id>.wav cut at start_time. Planted: ~8% of clips never downloaded, one 0.2 s
    WAV, one 48 kHz stereo WAV, one zero-byte WAV."""
    rng, nrng = random.Random(seed + 2), np.random.default_rng(seed + 2)
    root = Path(root)
    ids = youtube_ids(rng, n_train + n_val + n_test)
    splits = {"train": ids[:n_train], "val": ids[n_train : n_train + n_val], "test": ids[n_train + n_val :]}
    missing = rng.sample(splits["train"], max(len(ids) * 8 // 100 - 1, 1)) + [splits["test"][0]]
    short, hi_rate, empty = splits["test"][1], splits["test"][2], splits["train"][-1]
    audio_id = 100
    planted: dict[str, list[str]] = {"missing": sorted(missing), "short": [short], "48k": [hi_rate],
                                     "empty": [empty]}
    for split, members in splits.items():
        rows = []
        for youtube_id in members:
            content = draw_content(rng, 3.0, 5.0)
            start = rng.randrange(0, 200)
            sounds = [f"{content.sound}, then {content.sound} again", f"{content.sound} goes on",
                      f"someone plays {content.sound}", f"{content.sound} in a quiet room",
                      f"a recording of {content.sound}"]
            for caption in sounds[: 1 if split == "train" else 5]:
                rows.append([str(audio_id), youtube_id, str(start), caption])
                audio_id += 1
            if youtube_id in missing:
                continue
            path = root / "audio" / f"{youtube_id}.wav"
            if youtube_id == empty:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(b"")
            elif youtube_id == short:
                write_wav(path, render_audio(Content(content.colour, content.position, content.sound, 0.2), nrng))
            elif youtube_id == hi_rate:
                wave = render_audio(content, nrng)
                write_wav(path, np.repeat(wave, 3, axis=1), rate=48_000)  # the same sound, stored at 48 kHz
            else:
                write_wav(path, render_audio(content, nrng))
        rng.shuffle(rows)  # rows of one clip are not contiguous
        write_csv(root / f"{split}.csv", ["audiocap_id", "youtube_id", "start_time", "caption"], rows)
    planted.update(splits)
    return planted
