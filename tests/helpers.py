"""Small in-memory data and models shared by the training tests and the torchrun worker."""

from __future__ import annotations

import math
import re
import shutil
import tarfile
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
import torch
from torch.utils.data import Dataset

from benchmark.config import load_config
from benchmark.errors import UserError
from benchmark.model import build_model
from reports.tables import PAPER_METHOD

SOT, EOT = 49406, 49407


def stage_of(run_name: str) -> str:
    """A run's UI name without what tells it apart from other invocations' runs: the stage part of a nested run
    ("<plan run> · evaluate/finetuned" -> "evaluate/finetuned"), an invocation's own without its start time."""
    return re.sub(r" \d\d-\d\d \d\d:\d\d:\d\d$", "", run_name.rsplit(" · ", 1)[-1])


class ClassPairs(Dataset):
    """n learnable (caption, clip) items: class c is token 1000 + c, a frame tint and an audio offset."""

    def __init__(self, n: int = 16, classes: int = 4, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.items = []
        for i in range(n):
            c = i % classes
            tokens = torch.zeros(8, dtype=torch.long)
            tokens[:3] = torch.tensor([SOT, 1000 + c, EOT])
            frames = torch.randn(2, 3, 224, 224, generator=g) * 0.1 + c
            audio = torch.randn(1, 3, 224, 224, generator=g) * 0.1 - c
            self.items.append({
                "tokens": tokens, "frames": frames, "frame_mask": torch.ones(2),
                "audio": audio, "audio_mask": torch.ones(1), "audio_type": torch.tensor(c % 2),
                "audio_aug": audio + torch.randn(audio.shape, generator=g) * 0.05,
            })

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return self.items[index]


class ServedItems:
    """Stands in for ClipTensors in evaluation: each clip's item looked up by media key (model inputs already,
    so the default `Batches` stacks and moves them); `read` lists the clips this process read."""

    def __init__(self, items: dict[str, dict[str, torch.Tensor]]) -> None:
        from benchmark.data import Batches

        self.items, self.batches, self.read = items, Batches(), []

    def __call__(self, clip) -> dict[str, torch.Tensor]:
        self.read.append(clip.id)
        return self.items[clip.media_key]


def class_batch(n: int = 4) -> dict[str, torch.Tensor]:
    """The first n ClassPairs items stacked into one batch."""
    items = [ClassPairs(n)[i] for i in range(n)]
    return {k: torch.stack([item[k] for item in items]) for k in items[0]}


def tiny_model(seed: int = 0, *overrides: str):
    torch.manual_seed(seed)
    cfg = load_config({}, ["model.clip_name=tiny-clip4vla", "model.pretrained=null", *overrides])
    return build_model(cfg.model), cfg


def train_config(*overrides: str):
    return load_config({}, ["finetune.batch_size=8", "finetune.lr=1e-3", "finetune.coef_lr=1.0",
                            "finetune.warmup=0.0", "finetune.log_every=1", *overrides]).finetune


def pretrain_then_finetune_suite(name: str, finetune: str, pretrain: str = "{max_steps: 2, batch_size: 8}") -> str:
    """A two-run suite on the generated data (pre-train on AudioSet, fine-tune AudioCaps retrieval), tiny model."""
    return f"""
suite: {name}
seeds: [0]
base:
  device: cpu
  model: {{clip_name: tiny-clip4vla, pretrained: null, logit_scale_init: 14.3}}
  data: {{max_frames: 2, max_audio_segments: 2}}
  pretrain: {pretrain}
  finetune: {finetune}
  eval: {{bootstrap: 0}}
plan:
  - {{name: pre, stage: pretrain, config: {{pretrain_corpus: [audioset]}}}}
  - {{name: ft, stage: finetune, init: pre, config: {{task: audiocaps_retrieval}}}}
"""


def one_line_stderr(capsys) -> str:
    """What a CLI verb printed to stderr, which must be one line (its one-line error)."""
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def one_line_error(call: Callable[[], object], *fragments: str) -> str:
    """Run `call`, which must raise a UserError of one line holding every fragment; returns the message."""
    with pytest.raises(UserError) as caught:
        call()
    message = str(caught.value)
    assert "\n" not in message, message
    for fragment in fragments:
        assert fragment in message, message
    return message


def annotations_copy(dataset: Path, into: Path) -> Path:
    """A dataset folder without its media, to break annotation files in."""
    dst = into / dataset.name
    shutil.copytree(dataset, dst, ignore=shutil.ignore_patterns("videos", "audio"))
    return dst


def damage_member(tar: Path, suffix: str, position: int, at: int, data: bytes) -> str:
    """Overwrite `data` at byte `at` of the `position`-th member named *`suffix` of a store shard (same size: the
    shard still opens); returns that sample's key."""
    with tarfile.open(tar) as t:
        member = [m for m in t.getmembers() if m.name.endswith(suffix)][position]
    damaged = bytearray(tar.read_bytes())
    damaged[member.offset_data + at : member.offset_data + at + len(data)] = data
    tar.write_bytes(bytes(damaged))
    return member.name[: -len(suffix)]


# ------------------------------------------------------------------------------ comparison-report frames

FINGERPRINT = "abc123abc123"


def ours(
    values,
    *,
    task="msrvtt_retrieval",
    variant="full",
    direction="t2va",
    metric="R1",
    seeds=None,
    fingerprint=FINGERPRINT,
    protocol="paper",
    ci=(math.nan, math.nan),
    missing_audio=12,
):
    """reports/collect.py's result rows of one (task, variant, direction, metric), one per seed."""
    seeds = range(len(values)) if seeds is None else seeds
    return pd.DataFrame(
        [
            {
                "task": task,
                "variant": variant,
                "seed": seed,
                "split": "test",
                "direction": direction,
                "metric": metric,
                "value": float(value),
                "protocol": protocol,
                "protocol_fingerprint": fingerprint,
                "clips_used": 975,
                "clips_listed": 975,
                "missing_video": 0,
                "missing_audio": missing_audio,
                "ci_low": ci[0],
                "ci_high": ci[1],
                "run_id": f"{variant}-{seed}-{fingerprint}",
            }
            for seed, value in zip(seeds, values, strict=True)
        ]
    )


def published(
    method,
    value,
    *,
    variant="",
    task="msrvtt_retrieval",
    direction="t2va",
    metric="R1",
    confidence="E",
    comparability="same",
    split="test",
):
    return {
        "method": method,
        "variant": variant,
        "dataset": "MSR-VTT",
        "split": split,
        "task": task,
        "direction": direction,
        "metric": metric,
        "value": value,
        "source": "paper",
        "table": "2",
        "confidence": confidence,
        "comparability": comparability,
        "note": "",
    }


def paper(value, **kwargs):
    return published(PAPER_METHOD, value, variant=kwargs.pop("variant", "full"), **kwargs)
