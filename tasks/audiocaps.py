"""AudioCaps (Kim et al., NAACL 2019), official dataset/ CSVs: `audiocap_id,youtube_id,start_time,caption`.

A clip is youtube_id + start_time; its rows are not contiguous (train: 1 caption, val/test: 5). Audio is one
10 s file per clip under the root: audio/<youtube_id>.wav by default, or what the downloader wrote
(audio/Y<youtube_id>.wav, audio/<youtube_id>_<start_time>.wav; or set data.audio_template). Clips that could
not be downloaded (5-10%) are counted by the missing-audio policy.
"""

from __future__ import annotations

from pathlib import Path

from benchmark.items import Clip
from benchmark.registry import register_task
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
