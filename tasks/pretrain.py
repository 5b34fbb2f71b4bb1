"""Pre-training corpora (spec §7.1): AudioSet (non-verbal, type id 1) and HowTo100M (verbal, type id 0).

AudioSet: the segments CSVs (three '#' lines, then `YTID, start_seconds, end_seconds, "mid,mid"`) and
class_labels_indices.csv; text = "The sound of " + display names joined by commas; media videos/<YTID>.mp4
(clips already cut to their segment) or audio/<YTID>.wav. HowTo100M: HowTo100M_v1.csv and caption.json
({video_id: {"start", "end", "text"}}); each video is cut into consecutive segments of merged ASR sentences
spanning at least 10 s and 5 words. The authors draw a random first sentence per item and epoch; a fixed
segmentation lets every segment be decoded once (a deliberate difference, README).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from benchmark.errors import UserError
from benchmark.items import Clip
from benchmark.registry import register_task
from tasks.base import Task, TaskSpec, csv_records, first_existing, json_object_items, read_csv, video_and_audio

MIN_SECONDS, MIN_WORDS = 10.0, 5  # spec §7.1: min_time, min_words
VERBAL, NON_VERBAL = 0, 1


def audioset_rows(path: Path) -> list[tuple[str, float, float, list[str]]]:
    """(YTID, start, end, [mid]) of a segments CSV."""
    rows = []
    for number, row in csv_records(path, skipinitialspace=True):
        if row[0].startswith("#"):
            continue
        if len(row) != 4:
            raise UserError(f"{path}: line {number}: expected 4 fields (YTID, start, end, labels), got {len(row)}")
        try:
            rows.append((row[0], float(row[1]), float(row[2]), [m for m in row[3].split(",") if m]))
        except ValueError as exc:
            raise UserError(f"{path}: line {number}: {exc}") from exc
    return rows


@register_task("audioset")
class AudioSet(Task):
    spec = TaskSpec(
        name="audioset", version="1.0", dataset="AudioSet", data_dir="audioset", kind="corpus",
        splits=("balanced_train", "unbalanced_train"), train_split="balanced_train", test_split=None, val_split=None,
        modalities=("text", "video", "audio"), directions=(), captions_per_item=1, main_score=None,
        reference="Gemmeke et al., ICASSP 2017", train_pairs=22_160,  # rows of balanced_train_segments.csv
    )

    def _load(self, root: Path, split: str, audio_template: str | None) -> list[Clip]:
        names = {r["mid"]: r["display_name"] for r in read_csv(root / "class_labels_indices.csv",
                                                                 ("mid", "display_name"))}
        path = root / f"{split}_segments.csv"
        out = []
        for youtube_id, _, _, mids in audioset_rows(path):
            unknown = [m for m in mids if m not in names]
            if unknown:
                raise UserError(f"{path}: label '{unknown[0]}' of '{youtube_id}' is not in class_labels_indices.csv")
            video, track = video_and_audio(root, youtube_id, path)
            # a per-clip audio file (data.audio_template, default audio/<YTID>.wav) when present, else the track
            wav = first_existing(root, (audio_template or "audio/{youtube_id}.wav",), path, youtube_id,
                                 youtube_id=youtube_id)
            text = "The sound of " + ",".join(names[m] for m in mids)
            out.append(Clip(youtube_id, (text,), video, wav if wav.is_file() else track, audio_type=NON_VERBAL))
        return out


def merge_sentences(starts: list[float], ends: list[float], texts: list[str]) -> list[tuple[float, float, str]]:
    """Consecutive segments of merged ASR sentences, each spanning >= 10 s and >= 5 words (the last may be short
    and is dropped)."""
    out, first, words = [], 0, 0
    for last, text in enumerate(texts):
        words += len(text.split())
        if ends[last] - starts[first] >= MIN_SECONDS and words >= MIN_WORDS:
            out.append((starts[first], ends[last], " ".join(texts[first : last + 1])))
            first, words = last + 1, 0
    return out


@register_task("howto100m")
class HowTo100M(Task):
    spec = TaskSpec(
        name="howto100m", version="1.0", dataset="HowTo100M", data_dir="howto100m", kind="corpus",
        splits=("train",), train_split="train", test_split=None, val_split=None, modalities=("text", "video", "audio"),
        directions=(), captions_per_item=1, main_score=None, reference="Miech et al., ICCV 2019",
    )

    def _load(self, root: Path, split: str, audio_template: str | None) -> list[Clip]:
        listing = root / "HowTo100M_v1.csv"
        ids = [r["video_id"] for r in read_csv(listing, ("video_id",))]
        path = root / "caption.json"
        listed, segments = set(ids), {}
        # streamed (HowTo100M's caption.json holds 136 M sentences): only the listed videos' segments are kept
        for video_id, asr in json_object_items(path, "an object {video_id: {start, end, text}}"):
            if video_id in listed and asr is not None:  # null: listed without ASR, as a missing key
                segments[video_id] = self._segments(path, video_id, asr)
        out = []
        for video_id in ids:
            if video_id not in segments:
                continue  # listed without ASR: nothing to pair (counted by `clip4vla prepare` as not listed)
            video, audio = video_and_audio(root, video_id, listing)
            for k, (start, end, text) in enumerate(segments[video_id]):
                out.append(Clip(f"{video_id}#{k}", (text,), video, audio, VERBAL, start, end))
        return out

    SCALE_SEGMENTS_PER_VIDEO = 100  # HowTo100M has ~110 ASR segments per video

    def write_scale_corpus(self, root: Path, clips: int) -> Path:
        """A generated corpus of `clips` segments for `clip4vla perf scale`: each video a hard link to one tiny
        file, 100 sentences of 10 s and 6 words each (one segment each); returns its folder."""
        folder = root / self.spec.data_dir
        (folder / "videos").mkdir(parents=True, exist_ok=True)
        one = folder / "videos" / "one.mp4"
        one.write_bytes(bytes(1000))
        per = self.SCALE_SEGMENTS_PER_VIDEO
        ids = [f"v{i:07d}" for i in range(-(-clips // per))]
        for video_id in ids:
            os.link(one, folder / "videos" / f"{video_id}.mp4")
        (folder / "HowTo100M_v1.csv").write_text("video_id\n" + "\n".join(ids) + "\n")
        captions = {}
        for n, video_id in enumerate(ids):
            count = min(per, clips - n * per)
            captions[video_id] = {"start": [10.0 * k for k in range(count)],
                                  "end": [10.0 * k + 10 for k in range(count)],
                                  "text": [f"now stir the pot slowly {k}" for k in range(count)]}
        (folder / "caption.json").write_text(json.dumps(captions))
        return folder

    @staticmethod
    def _segments(path: Path, video_id: str, asr: object) -> list[tuple[float, float, str]]:
        """A video's checked ASR lists, merged into segments."""
        if not isinstance(asr, dict) or not all(isinstance(asr.get(k), list) for k in ("start", "end", "text")):
            raise UserError(f"{path}: '{video_id}' lacks start/end/text lists")
        if not len(asr["start"]) == len(asr["end"]) == len(asr["text"]):
            raise UserError(f"{path}: '{video_id}' has start/end/text lists of different lengths")
        times = asr["start"] + asr["end"]  # numbers (bool is an int, refused), finite; texts strings
        times_are_numbers = set(map(type, times)) <= {int, float} and all(map(math.isfinite, times))
        if not times_are_numbers or not set(map(type, asr["text"])) <= {str}:
            raise UserError(f"{path}: '{video_id}' has a start/end that is not a finite number or a text that "
                            "is not a string")
        return merge_sentences(asr["start"], asr["end"], asr["text"])
