"""VATEX v1.0/v1.1 (Wang et al., ICCV 2019): English captions from the official JSONs, grouped by videoID.

Files under the root: vatex_training_v1.0.json, vatex_validation_v1.0.json, vatex_public_test_english_v1.1.json
(lists of {"videoID", "enCap": [10], ...}); the HGR retrieval split as id lists train_list.txt, val_list.txt,
test_list.txt (val and test are the two halves of the official validation set); videos/<videoID>.mp4.
"""

from __future__ import annotations

from pathlib import Path

from benchmark.errors import UserError
from benchmark.items import Clip
from benchmark.registry import register_task
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
