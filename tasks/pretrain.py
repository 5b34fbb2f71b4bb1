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
import random
from pathlib import Path

import numpy as np

from benchmark.errors import UserError
from benchmark.items import Clip
from benchmark.registry import register_task
from benchmark.synthetic import (draw_content, register_synthetic, render_audio, render_frames, write_csv, write_mp4,
                                 youtube_ids)
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
        try:
            times_are_numbers = set(map(type, times)) <= {int, float} and all(map(math.isfinite, times))
        except OverflowError:  # an integer beyond any float (JSON has no limit)
            times_are_numbers = False
        if not times_are_numbers or not set(map(type, asr["text"])) <= {str}:
            raise UserError(f"{path}: '{video_id}' has a start/end that is not a finite number or a text that "
                            "is not a string")
        return merge_sentences(asr["start"], asr["end"], asr["text"])


AUDIOSET_LABELS = {"a low hum": ("/m/hum01", "Hum"), "a high whistle": ("/m/whs01", "Whistle"),
                   "a beeping sound": ("/m/bep01", "Beep, bleep"), "static noise": ("/m/sta01", "Static")}


@register_synthetic("audioset", n_clips=100)
def write_audioset(root: Path, seed: int = 0, n_clips: int = 100) -> dict:
    """AudioSet balanced/unbalanced_train_segments.csv (three '#' lines, quoted comma-separated MIDs; a quarter
    of the clips in the unbalanced list) and class_labels_indices.csv, with 10 s-style clips as mp4 (video +
    audio). Planted: one missing mp4 in the balanced list."""
    rng, nrng = random.Random(seed + 3), np.random.default_rng(seed + 3)
    root = Path(root)
    ids = youtube_ids(rng, n_clips)
    missing = ids[3]
    n_balanced = n_clips - n_clips // 4
    rows = []
    for youtube_id in ids:
        content = draw_content(rng, 2.0, 3.0)
        mids = [AUDIOSET_LABELS[content.sound][0]] + ([rng.choice(list(AUDIOSET_LABELS.values()))[0]]
                                                      if rng.random() < 0.2 else [])
        start = float(rng.randrange(0, 300))
        rows.append(f'{youtube_id}, {start:.3f}, {start + 10:.3f}, "{",".join(dict.fromkeys(mids))}"')
        if youtube_id != missing:
            write_mp4(root / "videos" / f"{youtube_id}.mp4", render_frames(content, nrng), render_audio(content, nrng))
    for name, part in (("balanced_train", rows[:n_balanced]), ("unbalanced_train", rows[n_balanced:])):
        header = ["# Segments csv created Sun Mar  5 10:54:31 2017",
                  f"# num_ytids={len(part)}, num_segs={len(part)}, num_unique_labels={len(AUDIOSET_LABELS)}",
                  "# YTID, start_seconds, end_seconds, positive_labels"]
        (root / f"{name}_segments.csv").write_text("\n".join(header + part) + "\n")
    write_csv(root / "class_labels_indices.csv", ["index", "mid", "display_name"],
               [[str(i), mid, name] for i, (mid, name) in enumerate(AUDIOSET_LABELS.values())])
    return {"balanced_train": ids[:n_balanced], "unbalanced_train": ids[n_balanced:], "missing": [missing]}


@register_synthetic("howto100m", n_videos=8)
def write_howto100m(root: Path, seed: int = 0, n_videos: int = 8, seconds: float = 24.0) -> dict:
    """HowTo100M_v1.csv and caption.json (ASR sentences with start/end), with long mp4s whose content changes
    every 12 s, so merged >= 10 s segments are learnable. Planted: one video listed without captions."""
    rng, nrng = random.Random(seed + 4), np.random.default_rng(seed + 4)
    root = Path(root)
    ids = youtube_ids(rng, n_videos)
    captions: dict[str, dict[str, list]] = {}
    for video_id in ids:
        parts = [draw_content(rng, seconds / 2, seconds / 2) for _ in range(2)]
        frames = np.concatenate([render_frames(p, nrng) for p in parts])
        audio = np.concatenate([render_audio(p, nrng) for p in parts], axis=1)
        write_mp4(root / "videos" / f"{video_id}.mp4", frames, audio)
        starts, ends, texts = [], [], []
        for index, part in enumerate(parts):
            for k in range(4):  # four 3-second ASR sentences per part
                begin = index * seconds / 2 + k * 3.0
                starts.append(begin)
                ends.append(begin + 2.5)
                texts.append(f"now the screen is {part.colour} and you hear {part.sound}")
        captions[video_id] = {"start": starts, "end": ends, "text": texts}
    unlabelled = ids[-1]
    del captions[unlabelled]
    write_csv(root / "HowTo100M_v1.csv", ["video_id", "category_1", "category_2", "rank", "task_id"],
               [[v, "Food and Entertaining", "Recipes", "1", str(100 + i)] for i, v in enumerate(ids)])
    (root / "caption.json").write_text(json.dumps(captions))
    return {"ids": ids, "no_captions": [unlabelled]}
