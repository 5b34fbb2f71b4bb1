"""MSR-VTT (Xu et al., CVPR 2016) as the CLIP4Clip/UniVL release ships it (spec/datasets.md, spec §9.2).

Files under the root: MSRVTT_data.json (captions, keys with spaces), MSRVTT_train.9k.csv / .7k.csv
(`video_id`), MSRVTT_JSFUSION_test.csv (1k-A: `key,vid_key,video_id,sentence`), videos/<id>.mp4 (or
videos/all/<id>.mp4). Audio is the video's own track, or audios_16k/<id>.wav when that file exists.
"""

from __future__ import annotations

from pathlib import Path

from benchmark.errors import UserError
from benchmark.items import Clip
from benchmark.registry import register_task
from tasks.base import Task, TaskSpec, read_csv, read_json, unique_ids

TRAIN_LISTS = {"train_9k": "MSRVTT_train.9k.csv", "train_7k": "MSRVTT_train.7k.csv"}
TEST_1K_A = "MSRVTT_JSFUSION_test.csv"


def media_paths(root: Path, video_id: str) -> tuple[Path, Path]:
    """(video, audio source) of a clip; a missing video stays a path so the manifest can report it."""
    video = root / "videos" / f"{video_id}.mp4"
    if not video.exists() and (root / "videos" / "all" / f"{video_id}.mp4").exists():
        video = root / "videos" / "all" / f"{video_id}.mp4"
    wav = root / "audios_16k" / f"{video_id}.wav"
    return video, (wav if wav.exists() else video)


def captions_by_video(root: Path) -> dict[str, list[str]]:
    """All sentences of MSRVTT_data.json grouped by video_id (rows of one video are not contiguous)."""
    path = root / "MSRVTT_data.json"
    data = read_json(path)
    if not isinstance(data, dict) or "sentences" not in data:
        raise UserError(f"{path}: expected an object with a 'sentences' list")
    grouped: dict[str, list[str]] = {}
    for number, row in enumerate(data["sentences"]):
        if not isinstance(row, dict) or "video_id" not in row or "caption" not in row:
            raise UserError(f"{path}: sentences[{number}] lacks 'video_id' or 'caption'")
        if not str(row["caption"]).strip():
            raise UserError(f"{path}: sentences[{number}] has an empty caption (video '{row['video_id']}')")
        grouped.setdefault(row["video_id"], []).append(row["caption"])
    return grouped


@register_task("msrvtt_retrieval")
class MSRVTTRetrieval(Task):
    """Text-video retrieval: train on 9k (or 7k) with all 20 captions per video, test on 1k-A (1 caption)."""

    spec = TaskSpec(
        name="msrvtt_retrieval",
        version="1.0",
        dataset="MSR-VTT",
        data_dir="msrvtt",
        kind="retrieval",
        splits=("train_9k", "train_7k", "test_1k_a"),
        train_split="train_9k",
        test_split="test_1k_a",
        modalities=("text", "video", "audio"),
        directions=("t2v", "v2t", "t2a", "a2t", "t2va", "va2t"),
        captions_per_item=1,
        main_score="t2va/R1",
        reference="Xu et al., CVPR 2016; 1k-A: Yu et al., ECCV 2018; CLIP4VLA: Ruan et al., AAAI 2023",
    )

    def _load(self, root: Path, split: str) -> list[Clip]:
        if split == "test_1k_a":
            path = root / TEST_1K_A
            rows = read_csv(path, ("video_id", "sentence"))
            ids = unique_ids([r["video_id"] for r in rows], path)
            return [Clip(v, (r["sentence"],), *media_paths(root, v)) for v, r in zip(ids, rows, strict=True)]
        path = root / TRAIN_LISTS[split]
        ids = unique_ids([r["video_id"] for r in read_csv(path, ("video_id",))], path)
        captions = captions_by_video(root)
        absent = [v for v in ids if v not in captions]
        if absent:
            raise UserError(f"{path}: video '{absent[0]}' has no caption in MSRVTT_data.json ({len(absent)} such)")
        return [Clip(v, tuple(captions[v]), *media_paths(root, v)) for v in ids]
