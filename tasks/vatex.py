"""VATEX v1.0/v1.1 (Wang et al., ICCV 2019): English captions from the official JSONs, grouped by videoID.

Files under the root: vatex_training_v1.0.json, vatex_validation_v1.0.json, vatex_public_test_english_v1.1.json
(lists of {"videoID", "enCap": [10], ...}); the HGR retrieval split as id lists train_list.txt, val_list.txt,
test_list.txt (val and test are the two halves of the official validation set); videos/<videoID>.mp4.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np

from benchmark.errors import UserError
from benchmark.items import Clip
from benchmark.registry import register_task
from benchmark.synthetic import draw_content, register_synthetic, render_audio, render_frames, write_mp4, youtube_ids
from tasks.base import Task, TaskSpec, clips_with_captions, is_text, read_json, read_lines, unique_ids

JSONS = {"train": "vatex_training_v1.0.json", "val": "vatex_validation_v1.0.json",
         "test": "vatex_public_test_english_v1.1.json"}
LISTS = {"train": "train_list.txt", "val": "val_list.txt", "test": "test_list.txt"}
REFERENCE = "Wang et al., ICCV 2019; HGR split: Chen et al., CVPR 2020; CLIP4VLA: Ruan et al., AAAI 2023"


def english_captions(path: Path) -> dict[str, list[str]]:
    """{videoID: enCap} of one official JSON, with one-line errors for a malformed file."""
    data = read_json(path)
    if not isinstance(data, list):
        raise UserError(f"{path}: expected a JSON list of videos")
    out: dict[str, list[str]] = {}
    for number, row in enumerate(data):
        if not isinstance(row, dict) or not isinstance(row.get("videoID"), str) \
                or not isinstance(row.get("enCap"), list):
            raise UserError(f"{path}: entry {number} lacks a string 'videoID' or an 'enCap' list")
        if row["videoID"] in out:
            raise UserError(f"{path}: duplicate id '{row['videoID']}'")
        if not row["enCap"] or not all(is_text(c) for c in row["enCap"]):
            bad = next((c for c in row["enCap"] if not is_text(c)), "no captions")
            raise UserError(f"{path}: entry {number} ('{row['videoID']}') has an empty or non-string caption: "
                            f"{bad!r}")
        out[row["videoID"]] = list(row["enCap"])
    return out


@register_task("vatex_retrieval")
class VATEXRetrieval(Task):
    """Retrieval on the HGR split: 25,991 train / 1,500 val / 1,500 test, 10 captions per video."""

    spec = TaskSpec(
        name="vatex_retrieval", version="1.0", dataset="VATEX", data_dir="vatex", kind="retrieval",
        splits=("train", "val", "test"), train_split="train", test_split="test", val_split="val",
        modalities=("text", "video", "audio"), directions=("t2v", "v2t", "t2a", "a2t", "t2va", "va2t"),
        captions_per_item=10, main_score="t2va/R1", reference=REFERENCE, test_clips=1500,
        train_pairs=259_910,  # 25,991 clips x 10 captions
    )

    def _load(self, root: Path, split: str, audio_template: str | None) -> list[Clip]:
        path = root / LISTS[split]
        ids = unique_ids(read_lines(path), path)
        captions = {**english_captions(root / JSONS["train"]), **english_captions(root / JSONS["val"])}
        return clips_with_captions(root, ids, captions, path)


@register_task("vatex_caption")
class VATEXCaption(Task):
    """Captioning on the official split: train / validation (3,000) / public test (v1.1 English captions,
    the test split scored by default; the authors' test_caption.csv is unknown, spec §15), 10 references."""

    spec = TaskSpec(
        name="vatex_caption", version="1.0", dataset="VATEX", data_dir="vatex", kind="caption",
        splits=("train", "val", "test"), train_split="train", test_split="test", val_split="val",
        modalities=("text", "video", "audio"), directions=(), captions_per_item=10, main_score="CIDEr",
        reference=REFERENCE, test_clips=6000, train_pairs=259_910,
    )

    def _load(self, root: Path, split: str, audio_template: str | None) -> list[Clip]:
        path = root / JSONS[split]
        captions = english_captions(path)
        return clips_with_captions(root, list(captions), captions, path)


@register_synthetic("vatex", n_videos=60)
def write_vatex(root: Path, seed: int = 0, n_videos: int = 60) -> dict:
    """VATEX v1.0/v1.1: training/validation/public-test JSONs (10 English + 10 Chinese captions) and the HGR
    retrieval split lists (test = a half of the official validation). Planted: one clip without audio track
    and one listed but missing mp4 in the HGR test list, one zero-byte mp4 in the HGR val list."""
    rng, nrng = random.Random(seed + 1), np.random.default_rng(seed + 1)
    root = Path(root)
    ids = [f"{y}_{s:06d}_{s + 10:06d}" for y in youtube_ids(rng, n_videos) for s in [rng.randrange(0, 300)]]
    n_test_public = n_videos // 6
    n_val = n_videos // 3
    train, val, public_test = ids[: n_videos - n_val - n_test_public], ids[-n_val - n_test_public : -n_test_public], \
        ids[-n_test_public:]
    hgr_val, hgr_test = val[: n_val // 2], val[n_val // 2 :]
    no_audio, missing, empty = hgr_test[0], hgr_test[1], hgr_val[0]
    entries = {}
    for video_id in ids:
        content = draw_content(rng, 2.0, 3.0)
        entries[video_id] = {"videoID": video_id, "enCap": content.captions(rng, 10),
                             "chCap": [f"中文描述 {i}" for i in range(10)]}
        if video_id != missing:
            audio = None if video_id == no_audio else render_audio(content, nrng)
            write_mp4(root / "videos" / f"{video_id}.mp4", render_frames(content, nrng), audio)
    (root / "videos" / f"{empty}.mp4").write_bytes(b"")
    (root / "vatex_training_v1.0.json").write_text(json.dumps([entries[v] for v in train], ensure_ascii=False))
    (root / "vatex_validation_v1.0.json").write_text(json.dumps([entries[v] for v in val], ensure_ascii=False))
    (root / "vatex_public_test_english_v1.1.json").write_text(
        json.dumps([{"videoID": v, "enCap": entries[v]["enCap"]} for v in public_test]))
    for name, members in (("train_list.txt", train), ("val_list.txt", hgr_val), ("test_list.txt", hgr_test)):
        (root / name).write_text("\n".join(members) + "\n")
    return {"no_audio": [no_audio], "missing": [missing], "empty": [empty], "train": train, "val": val,
            "public_test": public_test, "hgr_val": hgr_val, "hgr_test": hgr_test}
