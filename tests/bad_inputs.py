"""The bad-input corpus: every broken config, media file, checkpoint and annotation the reliability tests feed
the suite, each one line, with the fragments its one-line error (or recorded skip) must hold.

A new case is one line in the table of its kind; the tests iterate the tables (test_reliability.py,
test_annotation_safety.py).
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import soundfile
import torch

# --- configs: (override, fragments of the one-line error) -------------------------------------------------
# an entry's overrides: one `key=value`, or a tuple of them
BAD_CONFIGS: list[tuple[str | tuple[str, ...], tuple[str, ...]]] = [
    ("finetune.lr=.nan", ("'finetune.lr'", "finite", "nan")),
    ("pretrain.weight_decay=.inf", ("'pretrain.weight_decay'", "finite", "inf")),
    ("model.type_mix=-.inf", ("'model.type_mix'", "finite")),
    ("finetune.max_steps=-3", ("'finetune.max_steps'", ">= 0", "-3")),
    ("finetune.epochs=0", ("'finetune.epochs'", ">= 1", "0")),
    ("pretrain.batch_size=0", ("'pretrain.batch_size'", ">= 1")),
    ("finetune.grad_accum=0", ("'finetune.grad_accum'", ">= 1")),
    ("finetune.grad_accum=3", ("'finetune.grad_accum' (3) must divide 'finetune.batch_size' (128)",)),
    ("finetune.lr=-1e-4", ("'finetune.lr'", ">= 0")),
    ("finetune.warmup=1.5", ("'finetune.warmup'", "in [0, 1]", "1.5")),
    ("finetune.grad_clip=0", ("'finetune.grad_clip'", "> 0")),
    ("finetune.log_every=0", ("'finetune.log_every'", ">= 1")),
    ("finetune.eval_every=-1", ("'finetune.eval_every'", ">= 0")),
    ("pretrain.checkpoint_every=-5", ("'pretrain.checkpoint_every'", ">= 0")),
    ("finetune.keep_last=0", ("'finetune.keep_last'", ">= 1")),
    ("data.max_words=2", ("'data.max_words'", "in [3, 77]")),
    ("data.max_words=100", ("'data.max_words'", "in [3, 77]", "100")),
    ("data.max_frames=0", ("'data.max_frames'", ">= 1")),
    ("data.max_audio_segments=0", ("'data.max_audio_segments'", ">= 1")),
    ("data.limit=0", ("'data.limit'", ">= 1")),
    ("data.val_fraction=2", ("'data.val_fraction'", "in [0, 1]")),
    ("data.workers=-1", ("'data.workers'", ">= 0")),
    ("model.type_mix=1.5", ("'model.type_mix'", "in [0, 1]")),
    ("model.logit_scale_init=0", ("'model.logit_scale_init'", "in (0, 100]")),
    ("model.cross_layers=0", ("'model.cross_layers'", ">= 1")),
    ("eval.beam=0", ("'eval.beam'", ">= 1")),
    ("eval.bootstrap=-1", ("'eval.bootstrap'", ">= 0")),
    ("eval.batch_size=0", ("'eval.batch_size'", ">= 1")),
    ("eval.postprocess_temperature=0", ("'eval.postprocess_temperature'", "> 0")),
    ("pretrain_epoch_size=0", ("'pretrain_epoch_size'", ">= 1")),
    (("task=msrvtt_caption", "eval.split=test_1k_a_audi"), ("'eval.split'", "no split 'test_1k_a_audi'",
                                                             "did you mean 'test_1k_a_audio'?")),
    ("modalities=[text, vidoe]", ("unknown modality 'vidoe'", "did you mean 'video'?")),
    ("modalities=[video, audio]", ("'modalities' must hold text",)),
    (("task=audiocaps_retrieval", "modalities=[text, video]"), ("leaves task audiocaps_retrieval no clip",)),
    ("pretrain_mix=[1.0]", ("'pretrain_mix' has 1 weights for 0 corpora",)),
    (("pretrain_corpus=[audioset, howto100m]", "pretrain_mix=[1, -1]"), ("'pretrain_mix' must be non-negative",)),
    (("pretrain_corpus=[audioset, howto100m]", "pretrain_mix=[1e308, 1e308]"), ("positive, finite sum",)),
]


# --- media: audio files with broken contents ---------------------------------------------------------------
# --- benchmark arguments: (argv after `clip4vla perf`, fragment of the one-line error) --------------------
BAD_PERF_ARGS: list[tuple[list[str], str]] = [
    (["scale", "--clips", "100"], "clip counts of at least 672"),
    (["scale", "--clips", "10k"], "clip counts of at least 672"),
    (["scale", "--workers", "-1"], "--workers -1: expected 0 or more"),
    (["scale", "--dir", "/nonexistent/folder"], "--dir /nonexistent/folder: not a folder"),
]
# --- launcher arguments: (argv after `clip4vla sweep SUITE --out DIR`, fragment of the one-line error) ---------
# (run without sbatch on PATH)
BAD_LAUNCH_ARGS: list[tuple[list[str], str]] = [
    (["--launcher", "pbs"], "unknown launcher 'pbs' (known: local, slurm)"),
    (["--launcher", "slurmm"], "unknown launcher 'slurmm'; did you mean 'slurm'?"),
    (["--launcher", "slurm", "--time", "1:00:00"], "sbatch not found: --launcher slurm submits to SLURM"),
    (["--launcher", "local", "--time", "2h"], "--time: expected minutes (90), HH:MM:SS or D-HH:MM:SS, got '2h'"),
    (["--launcher", "local", "--time", "1:30"], "--time: expected minutes (90), HH:MM:SS or D-HH:MM:SS"),  # ambiguous
    (["--launcher", "local", "--time", "1:75:00"], "--time: expected minutes (90), HH:MM:SS or D-HH:MM:SS"),
    (["--launcher", "local", "--time", "0"], "--time: the time limit must be at least one minute"),
    (["--launcher", "local", "--gpus", "two"], "--gpus: expected a whole number >= 0 per job, got 'two'"),
    (["--launcher", "local", "--cpus", "0"], "--cpus: expected a whole number >= 1 per job"),
    (["--launcher", "slurm", "--partition", "a b"], "--partition: expected a SLURM partition name"),
    (["--gpus", "2"], "--gpus: these set what --launcher's jobs ask for"),
    (["--launcher", "local", "--only", "abc"], "leave out --only, --dry-run and --emit"),
    (["--launcher", "local", "--emit"], "leave out --only, --dry-run and --emit"),
]


def _float_wav(samples: np.ndarray, rate: int = 16_000) -> Callable[[Path], None]:
    return lambda path: soundfile.write(str(path), samples.astype(np.float32), rate, subtype="FLOAT")


def _with(value: float) -> np.ndarray:
    wave = np.sin(np.linspace(0, 2000, 32_000)) * 0.3
    wave[1000:1010] = value
    return wave


# name -> (writes the file, MediaError reason)
BAD_AUDIO: dict[str, tuple[Callable[[Path], None], str]] = {
    "nan_samples": (_float_wav(_with(np.nan)), "non_finite"),
    "inf_samples": (_float_wav(_with(np.inf)), "non_finite"),
    "shorter_than_one_window": (_float_wav(np.full(300, 0.1)), "too_short"),  # 300 < 512 samples at 16 kHz
    "shorter_than_one_window_at_44k": (_float_wav(np.full(1000, 0.1), 44_100), "too_short"),  # < 1412
}


# --- checkpoints: ways a checkpoint file is broken ---------------------------------------------------------
class NotATensor:
    """An arbitrary Python object: a weights-only load must refuse it."""


# name -> rewrites an existing, good checkpoint file
CORRUPT_CHECKPOINTS: dict[str, Callable[[Path], None]] = {
    "truncated": lambda path: path.write_bytes(path.read_bytes()[: path.stat().st_size // 2]),
    "empty": lambda path: path.write_bytes(b""),
    "garbage": lambda path: path.write_bytes(bytes(range(256)) * 64),
    "plain_pickle": lambda path: path.write_bytes(pickle.dumps({"model": NotATensor()})),  # not torch.save's
}
# refused as unsafe, never loaded: one line naming the file, without PyTorch's advice to load it unsafely
UNSAFE_CHECKPOINTS: dict[str, Callable[[Path], None]] = {
    "arbitrary_object": lambda path: torch.save({"model": NotATensor()}, path),
    "arbitrary_object_legacy_format": lambda path: torch.save({"model": NotATensor()}, path,
                                                              _use_new_zipfile_serialization=False),
}

# the authors' pytorch_model.bin (tiny, retrieval layout), edited in place before `import-checkpoint` reads it:
# name -> (edit, fragments of the one-line error)
BAD_ORIGINAL_STATE_DICTS: dict[str, tuple[Callable[[dict], object], tuple[str, ...]]] = {
    "unknown_key": (lambda s: s.update({"audio.visual.bg_embedding": torch.zeros(64)}),  # --with_bg_token
                    ("keys the CLIP4VLA key map does not know (1): audio.visual.bg_embedding",)),
    "missing_keys": (lambda s: [s.pop(k) for k in ("clip.ln_final.bias", "audio.visual.proj")],
                     ("lacks keys of the retrieval model of tiny-clip4vla (2)",
                      "audio.visual.proj, clip.ln_final.bias")),
    "wrong_shape": (lambda s: s.update({"clip.text_projection": torch.zeros(3, 3)}),
                    ("other shapes", "clip.text_projection [3, 3] (model [64, 64])")),
    "not_a_tensor": (lambda s: s.update({"epoch": 3}), ("not a CLIP4VLA state dict of tensors: epoch (int)",)),
    "untied_lm_decoder": (lambda s: s.update({"cls.predictions.decoder.weight": torch.zeros(49411, 64)}),
                          ("cls.predictions.decoder.weight differs from clip.token_embedding.weight",)),
    "a_suite_checkpoint": (lambda s: s.update({"model": dict(s)}), ("model (dict)",)),
}


# --- annotations and clip ids --------------------------------------------------------------------------------
# Each case breaks files of a generated dataset folder (media left out); loading the split must raise a one-line
# UserError holding every fragment (the broken file's name among them).
Breakage = Callable[[Path], None]
JSFUSION, AUDIOCAPS_TEST, VATEX_TRAIN = "MSRVTT_JSFUSION_test.csv", "test.csv", "vatex_training_v1.0.json"
SEGMENTS, MSRVTT_JSON, HOWTO_ASR = "balanced_train_segments.csv", "MSRVTT_data.json", "caption.json"


def _write(name: str, content: str | bytes) -> Breakage:
    def write(root: Path) -> None:
        path = root / name
        path.write_bytes(content) if isinstance(content, bytes) else path.write_text(content, encoding="utf-8")
    return write


def _append(name: str, text: str) -> Breakage:
    return lambda root: (root / name).write_text((root / name).read_text() + text)


def _edit_json(name: str, edit: Callable[[Any], object]) -> Breakage:
    """Rewrite a JSON file after `edit` changed its parsed contents in place."""
    def rewrite(root: Path) -> None:
        data = json.loads((root / name).read_text())
        edit(data)
        (root / name).write_text(json.dumps(data))
    return rewrite


def _both(first: Breakage, second: Breakage) -> Breakage:
    return lambda root: (first(root), second(root)) and None


def _jsfusion(rows: str) -> Breakage:
    return _write(JSFUSION, "key,vid_key,video_id,sentence\n" + rows)


def _audiocaps_test(rows: str) -> Breakage:
    return _write(AUDIOCAPS_TEST, "audiocap_id,youtube_id,start_time,caption\n" + rows)


def _vatex_train(video_id: object, captions: list) -> Breakage:
    return _write(VATEX_TRAIN, json.dumps([{"videoID": video_id, "enCap": captions}]))


def _first_asr(**fields: list) -> Breakage:
    """Replace lists of the first video's ASR in caption.json."""
    return _edit_json(HOWTO_ASR, lambda asr: asr[next(iter(asr))].update(fields))


_ASR = {"start": [0.0, 5.0], "end": [5.0, 11.0], "text": ["first we cut the", "onion into small pieces"]}
_OUTSIDE = "outside the dataset folder"
_QUOTE_OPEN = '1,a,0,"a dog\n' + "".join(f"{k},b{k},0,rain\n" for k in range(2, 25))  # 23 rows swallowed

# name -> (task, split, breakage, fragments of the one-line error)
BAD_ANNOTATIONS: dict[str, tuple[str, str, Breakage, tuple[str, ...]]] = {
    # ids never leave the dataset folder (absolute, climbing out, NUL), in every loader and audio template
    "id_climbs_out": ("msrvtt_retrieval", "test_1k_a", _jsfusion("r,m,../../../x,a\n"),
                      (JSFUSION, "'../../../x'", _OUTSIDE)),
    "absolute_id": ("msrvtt_retrieval", "test_1k_a", _jsfusion("r,m,/etc/hosts,a\n"),
                    (JSFUSION, "'/etc/hosts' is an absolute path")),
    "vatex_id_climbs_out": ("vatex_caption", "train", _vatex_train("../../x", ["a"]), (VATEX_TRAIN, _OUTSIDE)),
    "id_with_nul": ("vatex_caption", "train", _vatex_train("a\0b", ["a"]), (VATEX_TRAIN, "NUL character")),
    "youtube_id_climbs_out": ("audiocaps_retrieval", "test", _audiocaps_test("1,../../x,0,a dog barks\n"),
                              (AUDIOCAPS_TEST, "'../../x'", _OUTSIDE)),
    "audioset_absolute_id": ("audioset", "balanced_train", _append(SEGMENTS, '/tmp/x, 0.0, 10.0, "/m/hum01"\n'),
                             (SEGMENTS, "'/tmp/x' is an absolute path")),
    "howto100m_id_climbs_out": ("howto100m", "train",
                                _both(_append("HowTo100M_v1.csv", "../../x,F,R,1,7\n"),
                                      _edit_json(HOWTO_ASR, lambda d: d.update({"../../x": _ASR}))),
                                ("HowTo100M_v1.csv", "'../../x'", _OUTSIDE)),
    # CSV structure: an unbalanced quote swallowing the rows after it, field counts, columns
    "unbalanced_quote": ("audiocaps_retrieval", "test", _audiocaps_test(_QUOTE_OPEN),
                         (AUDIOCAPS_TEST, "line 2", "runs over lines 2-25", "unbalanced quote")),
    "unbalanced_quote_in_segments": ("audioset", "balanced_train",
                                     _append(SEGMENTS, 'ab, 0, 10, "/m/hum01\nac, 1, 2, x\n'),
                                     (SEGMENTS, "a quoted field runs over lines")),
    "too_many_fields": ("msrvtt_retrieval", "test_1k_a", _jsfusion("r,m,video1,a,b\n"),
                        (JSFUSION, "line 2: 5 fields where the header has 4")),
    "too_few_fields": ("audiocaps_retrieval", "test", _audiocaps_test("1,a,0,x\n2,b,0\n"),
                       (AUDIOCAPS_TEST, "line 3: 3 fields where the header has 4")),
    "missing_column": ("audiocaps_retrieval", "test", _write(AUDIOCAPS_TEST, "audiocap_id,youtube_id,caption\n1,a,b\n"),
                       (AUDIOCAPS_TEST, "missing column 'start_time'")),
    "msrvtt_missing_column": ("msrvtt_retrieval", "test_1k_a", _write(JSFUSION, "key,video_id\nret0,video1\n"),
                              (JSFUSION, "missing column 'sentence'")),
    "empty_sentence": ("msrvtt_retrieval", "test_1k_a", _jsfusion("ret0,m,video1,\n"),
                       (JSFUSION, "line 2: empty 'sentence'")),
    "segments_three_fields": ("audioset", "balanced_train", _write(SEGMENTS, '# c\nabc, 1.0, "/m/hum01"\n'),
                              (SEGMENTS, "line 2: expected 4 fields")),
    # encodings: binary, or not UTF-8 (a BOM is stripped: test_annotation_safety.py)
    "csv_latin1": ("audiocaps_retrieval", "test", _write(AUDIOCAPS_TEST, "caf\xe9,youtube_id,start_time,caption\n"
                                                         .encode("latin-1")),
                   (AUDIOCAPS_TEST, "not UTF-8 text", "byte 0xe9 at offset 3")),
    "json_binary": ("vatex_caption", "train", _write(VATEX_TRAIN, bytes(range(256))),
                    (VATEX_TRAIN, "not UTF-8", "NUL")),
    "id_list_utf16": ("vatex_retrieval", "test", _write("test_list.txt", "a\nb\n".encode("utf-16")),
                      ("test_list.txt", "not UTF-8 text")),
    "segments_gzip": ("audioset", "balanced_train", _write(SEGMENTS, b"\x1f\x8b\x08\x00" + bytes(60)),
                      (SEGMENTS, "not UTF-8 text")),
    # JSON contents of the wrong shape or type
    "invalid_json": ("vatex_retrieval", "train", _write(VATEX_TRAIN, "[{]"), (VATEX_TRAIN, "invalid JSON")),
    "msrvtt_invalid_json": ("msrvtt_retrieval", "train_9k", _write(MSRVTT_JSON, '{"sentences": [}'),
                            (MSRVTT_JSON, "invalid JSON at line 1")),
    "entry_without_captions": ("vatex_caption", "train", _write(VATEX_TRAIN, '[{"videoID": "x"}]'),
                               (VATEX_TRAIN, "entry 0 lacks a string 'videoID' or an 'enCap' list")),
    "numeric_id": ("vatex_caption", "train", _vatex_train(7, ["a"]), (VATEX_TRAIN, "entry 0 lacks a string 'videoID'")),
    "caption_not_string": ("vatex_caption", "train", _vatex_train("v", [1, None]),
                           (VATEX_TRAIN, "('v') has an empty or non-string caption: 1")),
    "blank_caption": ("vatex_caption", "train", _vatex_train("-a", ["x", " "]),
                      (VATEX_TRAIN, "('-a') has an empty or non-string caption: ' '")),
    "duplicate_id_in_json": ("vatex_caption", "train",
                             _write(VATEX_TRAIN, json.dumps([{"videoID": "a", "enCap": ["x"]}] * 2)),
                             (VATEX_TRAIN, "duplicate id 'a'")),
    "msrvtt_caption_not_string": ("msrvtt_retrieval", "train_9k",
                                  _edit_json(MSRVTT_JSON, lambda d: d["sentences"][3].update(caption=5)),
                                  (MSRVTT_JSON, "sentences[3]", "empty or non-string caption: 5")),
    "msrvtt_blank_caption": ("msrvtt_retrieval", "train_9k",
                             _edit_json(MSRVTT_JSON, lambda d: d["sentences"][3].update(caption="  ")),
                             (MSRVTT_JSON, "sentences[3]", "empty or non-string caption")),
    "msrvtt_videos_not_a_list": ("msrvtt_caption", "train", _edit_json(MSRVTT_JSON, lambda d: d.update(videos=5)),
                                 (MSRVTT_JSON, "'videos' must be a list", "not int")),
    "asr_text_not_strings": ("howto100m", "train", _first_asr(text=[1] * 8), (HOWTO_ASR, "not a string")),
    "asr_start_not_finite": ("howto100m", "train", _first_asr(start=[float("nan")] * 8), (HOWTO_ASR, "finite number")),
    "asr_start_too_large": ("howto100m", "train", _first_asr(start=[10**400] * 8), (HOWTO_ASR, "finite number")),
    "asr_lists_of_other_lengths": ("howto100m", "train", _first_asr(end=[1.0]), (HOWTO_ASR, "different lengths")),
    "no_caption_json": ("howto100m", "train", lambda root: (root / HOWTO_ASR).unlink(),
                        ("caption.json: file not found",)),
    "no_test_list": ("msrvtt_retrieval", "test_1k_a", lambda root: (root / JSFUSION).unlink(),
                     (JSFUSION, "file not found")),
    # ids: duplicated, without captions, with unknown labels
    "duplicate_id": ("msrvtt_retrieval", "train_9k", _write("MSRVTT_train.9k.csv", "video_id\nvideo0\nvideo0\n"),
                     ("MSRVTT_train.9k.csv", "duplicate id 'video0'")),
    "id_without_captions": ("msrvtt_retrieval", "train_9k",
                            _write("MSRVTT_train.9k.csv", "video_id\nvideo0\n\nnot_one\n"),
                            ("MSRVTT_train.9k.csv", "video 'not_one' has no caption")),
    "listed_id_without_captions": ("vatex_retrieval", "test", _write("test_list.txt", "_no_such_video\n"),
                                   ("test_list.txt", "video '_no_such_video' has no captions")),
    "unknown_label": ("audioset", "balanced_train", _write(SEGMENTS, 'abc, 1.0, 2.0, "/m/nope"\n'),
                      (SEGMENTS, "label '/m/nope' of 'abc' is not in class_labels_indices.csv")),
    # a split that lists nothing is an error before any model is built
    "header_only_csv": ("audiocaps_retrieval", "test", _audiocaps_test(""),
                        ("audiocaps_retrieval", "split 'test' lists no clips")),
    "header_only_jsfusion": ("msrvtt_retrieval", "test_1k_a", _jsfusion(""),
                             ("msrvtt_retrieval", "'test_1k_a' lists no clips")),
    "blank_id_list": ("vatex_retrieval", "test", _write("test_list.txt", "\n\n"),
                      ("vatex_retrieval", "lists no clips")),
}
