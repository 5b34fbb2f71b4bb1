"""Tiny, learnable datasets written in the real on-disk formats (spec/datasets.md), for smoke runs and tests.

Every clip is a short real mp4 (H.264 + AAC through PyAV). What is seen (background colour, where a black
square sits) and what is heard (hum, whistle, beeping, static) are drawn per clip and named in its captions,
so a tiny model trained for a few seconds retrieves far above chance. The files carry the formats' quirks
and planted defects (clips without an audio track, a truncated file, a listed but missing file), so the
loaders under test are the loaders users run. Deterministic for a seed.
"""

from __future__ import annotations

import csv
import json
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np

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
    _write_csv(root / "MSRVTT_train.9k.csv", ["video_id"], [[v] for v in train_9k])
    _write_csv(root / "MSRVTT_train.7k.csv", ["video_id"], [[v] for v in train_7k])
    _write_csv(root / "MSRVTT_JSFUSION_test.csv", ["key", "vid_key", "video_id", "sentence"],
               [[f"ret{i}", f"msr{v[5:]}", v, test_captions[v]] for i, v in enumerate(test_ids)])
    return {"no_audio": sorted(no_audio), "truncated": [truncated], "missing": [missing],
            "test_ids": test_ids, "train_9k": train_9k}


def _write_csv(path: Path, header: list[str], rows: list[list[str]]) -> None:
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
        _write_csv(root / f"{split}.csv", ["audiocap_id", "youtube_id", "start_time", "caption"], rows)
    planted.update(splits)
    return planted


AUDIOSET_LABELS = {"a low hum": ("/m/hum01", "Hum"), "a high whistle": ("/m/whs01", "Whistle"),
                   "a beeping sound": ("/m/bep01", "Beep, bleep"), "static noise": ("/m/sta01", "Static")}


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
    _write_csv(root / "class_labels_indices.csv", ["index", "mid", "display_name"],
               [[str(i), mid, name] for i, (mid, name) in enumerate(AUDIOSET_LABELS.values())])
    return {"balanced_train": ids[:n_balanced], "unbalanced_train": ids[n_balanced:], "missing": [missing]}


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
    _write_csv(root / "HowTo100M_v1.csv", ["video_id", "category_1", "category_2", "rank", "task_id"],
               [[v, "Food and Entertaining", "Recipes", "1", str(100 + i)] for i, v in enumerate(ids)])
    (root / "caption.json").write_text(json.dumps(captions))
    return {"ids": ids, "no_captions": [unlabelled]}


WRITERS = {"msrvtt": write_msrvtt, "vatex": write_vatex, "audiocaps": write_audiocaps, "audioset": write_audioset,
           "howto100m": write_howto100m}
# Sizes at scale "tiny"; "small" multiplies them.
SIZES = {"msrvtt": {"n_videos": 160}, "vatex": {"n_videos": 60}, "audiocaps": {"n_train": 40, "n_val": 8, "n_test": 12},
         "audioset": {"n_clips": 100}, "howto100m": {"n_videos": 8}}
SCALES = {"tiny": 1, "small": 4}


def synthesize(out: Path, seed: int = 0, scale: str = "tiny", only: set[str] | None = None) -> dict[str, dict]:
    """Write the generated datasets under `out/<dataset>/` (all, or those in `only`); returns what was planted."""
    planted = {}
    for name, writer in WRITERS.items():
        if only is None or name in only:
            sizes = {k: v * SCALES[scale] for k, v in SIZES[name].items()}
            planted[name] = writer(Path(out) / name, seed=seed, **sizes)
    return planted
