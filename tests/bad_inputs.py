"""The bad-input corpus: every broken config, media file, checkpoint and annotation the reliability tests feed
the suite, each one line, with the fragments its one-line error (or recorded skip) must hold.

A new case is one line in the table of its kind; the tests iterate the tables (test_reliability.py,
test_annotation_safety.py).
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from pathlib import Path

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
    ("modalities=[text, vidoe]", ("unknown modality 'vidoe'", "did you mean 'video'?")),
    ("modalities=[video, audio]", ("'modalities' must hold text",)),
    (("task=audiocaps_retrieval", "modalities=[text, video]"), ("leaves task audiocaps_retrieval no clip",)),
    ("pretrain_mix=[1.0]", ("'pretrain_mix' has 1 weights for 0 corpora",)),
    (("pretrain_corpus=[audioset, howto100m]", "pretrain_mix=[1, -1]"), ("'pretrain_mix' must be non-negative",)),
]


# --- media: audio files with broken contents ---------------------------------------------------------------
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


# --- annotations and clip ids --------------------------------------------------------------------------------
