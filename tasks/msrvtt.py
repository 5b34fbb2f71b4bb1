"""MSR-VTT (Xu et al., CVPR 2016) as the CLIP4Clip/UniVL release ships it (spec/datasets.md, spec §9.2).

Files under the root: MSRVTT_data.json (captions, keys with spaces, a `split` per video), MSRVTT_train.9k.csv /
.7k.csv (`video_id`), MSRVTT_JSFUSION_test.csv (1k-A: `key,vid_key,video_id,sentence`), videos/<id>.mp4 (or
videos/all/<id>.mp4). Audio is the video's own track, or audios_16k/<id>.wav when that file exists.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np

from benchmark.errors import UserError
from benchmark.items import Clip
from benchmark.registry import register_task
from benchmark.synthetic import (draw_content, register_synthetic, render_audio, render_frames, truncate, write_csv,
                                 write_mp4)
from tasks.base import Task, TaskSpec, clips_with_captions, is_text, read_csv, read_json, unique_ids, video_and_audio

TRAIN_LISTS = {"train_9k": "MSRVTT_train.9k.csv", "train_7k": "MSRVTT_train.7k.csv"}
TEST_1K_A = "MSRVTT_JSFUSION_test.csv"
OFFICIAL = {"train": "train", "val": "validate", "test": "test"}  # our split name -> MSRVTT_data.json "split"
REFERENCE = "Xu et al., CVPR 2016; 1k-A: Yu et al., ECCV 2018; CLIP4VLA: Ruan et al., AAAI 2023"


def read_data_json(root: Path) -> tuple[dict[str, list[str]], dict[str, str]]:
    """MSRVTT_data.json -> (captions grouped by video_id, official split of each video_id)."""
    path = root / "MSRVTT_data.json"
    data = read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("sentences"), list):
        raise UserError(f"{path}: expected an object with a 'sentences' list")
    grouped: dict[str, list[str]] = {}
    for number, row in enumerate(data["sentences"]):
        if not isinstance(row, dict) or "video_id" not in row or "caption" not in row:
            raise UserError(f"{path}: sentences[{number}] lacks 'video_id' or 'caption'")
        if not isinstance(row["video_id"], str):
            raise UserError(f"{path}: sentences[{number}] has a video_id that is not a string: {row['video_id']!r}")
        if not is_text(row["caption"]):
            raise UserError(f"{path}: sentences[{number}] (video '{row['video_id']}') has an empty or non-string "
                            f"caption: {row['caption']!r}")
        grouped.setdefault(row["video_id"], []).append(row["caption"])
    videos = data.get("videos", [])
    if not isinstance(videos, list):
        raise UserError(f"{path}: 'videos' must be a list of {{video_id, split}} objects, not {type(videos).__name__}")
    splits = {v.get("video_id"): v.get("split") for v in videos if isinstance(v, dict)}
    return grouped, splits


def test_1k_a_ids(root: Path) -> tuple[list[str], list[dict[str, str]]]:
    path = root / TEST_1K_A
    rows = read_csv(path, ("video_id", "sentence"))
    return unique_ids([r["video_id"] for r in rows], path), rows


@register_task("msrvtt_retrieval")
class MSRVTTRetrieval(Task):
    """Text-video retrieval: train on 9k (or 7k) with all 20 captions per video, test on 1k-A (1 caption)."""

    spec = TaskSpec(
        name="msrvtt_retrieval", version="1.0", dataset="MSR-VTT", data_dir="msrvtt", kind="retrieval",
        splits=("train_9k", "train_7k", "test_1k_a"), train_split="train_9k", test_split="test_1k_a", val_split=None,
        modalities=("text", "video", "audio"), directions=("t2v", "v2t", "t2a", "a2t", "t2va", "va2t"),
        captions_per_item=1, main_score="t2va/R1", reference=REFERENCE, test_clips=1000,
        train_pairs=180_000,  # 9,000 clips x 20 captions (spec §9.2)
    )

    def _load(self, root: Path, split: str, audio_template: str | None) -> list[Clip]:
        if split == "test_1k_a":
            ids, rows = test_1k_a_ids(root)
            return [Clip(v, (r["sentence"],), *video_and_audio(root, v, root / TEST_1K_A))
                    for v, r in zip(ids, rows, strict=True)]
        path = root / TRAIN_LISTS[split]
        ids = unique_ids([r["video_id"] for r in read_csv(path, ("video_id",))], path)
        return clips_with_captions(root, ids, read_data_json(root)[0], path)


@register_task("msrvtt_caption")
class MSRVTTCaption(Task):
    """Captioning, official split (6,513 / 497 / 2,990 videos, 20 references); `test_1k_a_audio` is the authors'
    choice: the 1k-A videos that have audio, with all 20 references (spec §9.2, baselines.md)."""

    spec = TaskSpec(
        name="msrvtt_caption", version="1.0", dataset="MSR-VTT", data_dir="msrvtt", kind="caption",
        splits=("train", "val", "test", "test_1k_a_audio"), train_split="train", test_split="test", val_split="val",
        modalities=("text", "video", "audio"), directions=(), captions_per_item=20, main_score="CIDEr",
        reference=REFERENCE, audio_only_splits=("test_1k_a_audio",), test_clips=2990, train_pairs=130_260,
    )

    def _load(self, root: Path, split: str, audio_template: str | None) -> list[Clip]:
        captions, official = read_data_json(root)  # parsed once: ~200k sentences
        if split == "test_1k_a_audio":
            ids, _ = test_1k_a_ids(root)
            return clips_with_captions(root, ids, captions, root / TEST_1K_A)
        ids = [v for v, s in official.items() if s == OFFICIAL[split]]
        if not ids:
            raise UserError(f"{root / 'MSRVTT_data.json'}: no video has split '{OFFICIAL[split]}'")
        return clips_with_captions(root, ids, captions, root / "MSRVTT_data.json")


@register_synthetic("msrvtt", n_videos=160)
def write_msrvtt(root: Path, seed: int = 0, n_videos: int = 160, test_size: int | None = None) -> dict:
    """MSR-VTT as the CLIP4Clip release ships it: MSRVTT_data.json, train 9k/7k csvs, the 1k-A test csv, mp4s.

    Official captioning split by index (65% train, 5% validate, 30% test); 1k-A = `test_size` clips of the
    official test part; 9k = every other clip; 7k = official train + validate. Planted: ~3% of clips without
    an audio track (in train and test), one truncated mp4 in train, one listed but missing mp4 in test.
    Returns what was planted, for tests.
    """
    rng = random.Random(seed)
    nrng = np.random.default_rng(seed)
    root = Path(root)
    ids = [f"video{i}" for i in range(n_videos)]
    n_train, n_val = int(n_videos * 0.65), int(n_videos * 0.05)
    official = ["train"] * n_train + ["validate"] * n_val + ["test"] * (n_videos - n_train - n_val)
    test_pool = ids[n_train + n_val :]
    test_size = min(test_size or n_videos // 4, len(test_pool))
    test_ids = sorted(rng.sample(test_pool, test_size), key=lambda v: int(v[5:]))
    train_9k = [v for v in ids if v not in set(test_ids)]
    train_7k = ids[: n_train + n_val]

    no_audio = set(rng.sample(train_9k, max(n_videos * 3 // 100 - 1, 1)) + rng.sample(test_ids, 1))
    truncated = rng.choice([v for v in train_9k if v not in no_audio])
    missing = rng.choice([v for v in test_ids if v not in no_audio])

    videos, sentences, contents, test_captions = [], [], {}, {}
    for index, video_id in enumerate(ids):
        content = draw_content(rng)
        contents[video_id] = content
        captions = content.captions(rng, 20)
        videos.append({"category": rng.randrange(20), "url": f"https://www.youtube.com/watch?v=synthetic{index}",
                       "video_id": video_id, "start time": 0.0, "end time": content.seconds,
                       "split": official[index], "id": index})
        sentences += [{"caption": c, "video_id": video_id} for c in captions]
        test_captions[video_id] = rng.choice(captions)
        if video_id != missing:
            audio = None if video_id in no_audio else render_audio(content, nrng)
            write_mp4(root / "videos" / f"{video_id}.mp4", render_frames(content, nrng), audio)
    truncate(root / "videos" / f"{truncated}.mp4")
    rng.shuffle(sentences)  # caption rows of one clip are not contiguous
    for sen_id, row in enumerate(sentences):
        row["sen_id"] = sen_id
    data = {"info": {"year": 2016, "version": "synthetic", "description": "generated by clip4vla synth"},
            "videos": videos, "sentences": sentences}
    (root / "MSRVTT_data.json").write_text(json.dumps(data))
    write_csv(root / "MSRVTT_train.9k.csv", ["video_id"], [[v] for v in train_9k])
    write_csv(root / "MSRVTT_train.7k.csv", ["video_id"], [[v] for v in train_7k])
    write_csv(root / "MSRVTT_JSFUSION_test.csv", ["key", "vid_key", "video_id", "sentence"],
               [[f"ret{i}", f"msr{v[5:]}", v, test_captions[v]] for i, v in enumerate(test_ids)])
    return {"no_audio": sorted(no_audio), "truncated": [truncated], "missing": [missing],
            "test_ids": test_ids, "train_9k": train_9k}
