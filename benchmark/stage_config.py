"""The part of the resolved config each stage receives, and the part of that which can change its results.

A stage function is handed `stage_config(cfg, stage)`: the config with every key the stage does not receive
set to its default, so what a stage does cannot depend on a key outside RECEIVES. Its run key is the hash of
`result_slice` (what it receives, less the keys that never change a number), so two configs share a run
exactly when the stage is handed equal configs (issue 14 item 3): a key cannot change a stage without changing
its key. A key added to the config reaches no stage until it is listed here (tests/test_stage_keys.py checks
that every key reaches some stage or is a NOT_RESULT key).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from benchmark.config import RunConfig, flatten, from_dict, resolve_protocol, to_dict


def _leaves(section: str, *withheld: str) -> tuple[str, ...]:
    """Every key of a config section but `withheld`."""
    fields = dataclasses.fields(type(getattr(RunConfig(), section)))
    return tuple(f"{section}.{f.name}" for f in fields if f.name not in withheld)


# Paths, machine settings and logging: every stage receives them, none changes a result, so they stay out of run
# keys: a suite continues on a machine with other mounts, or with other logging, without running anything again.
NOT_RESULT_KEYS = ("device", "tracking", "data.root", "data.cache", "data.workers", "eval.batch_size",
                   *(f"{stage}.{key}" for stage in ("pretrain", "finetune")
                     for key in ("log_every", "checkpoint_every", "keep_last", "grad_checkpointing")))

_EVERY_STAGE = ("protocol", "seed", "modalities")
RECEIVES: dict[str, tuple[str, ...]] = {
    # Pre-training builds no fusion module and no decoder (spec §2.5) and scores nothing; its corpora keep clips
    # without audio (policy `zero`), and it knows no downstream task.
    "pretrain": (*_EVERY_STAGE, "pretrain_corpus", "pretrain_mix", "pretrain_epoch_size", "pretrain",
                 "loss.intra_modal", "loss.text_video", "loss.released_terms",
                 *_leaves("model", "type_mix", "fusion", "decoder", "supervise_pad"),
                 *_leaves("data", "val_fraction", "missing_audio")),
    # Fine-tuning scores the task before, between and after training (eval.*), with the fine-tuning precision.
    "finetune": (*_EVERY_STAGE, "task", "model", "data", "finetune", "eval", "loss.symmetric_finetune"),
    # Evaluation autocasts as fine-tuning does (finetune.precision), and builds the model the seed initialises.
    "evaluate": (*_EVERY_STAGE, "task", "model", "data", "eval", "finetune.precision"),
}


def _received(key: str, stage: str) -> bool:
    return any(key == r or key.startswith(r + ".") for r in RECEIVES[stage])


def stage_config(cfg: RunConfig, stage: str) -> RunConfig:
    """`cfg` as `stage` receives it: the keys it does not receive at the defaults of cfg's protocol."""
    given = flatten(to_dict(cfg))
    defaults = flatten(to_dict(resolve_protocol(RunConfig(protocol=cfg.protocol))))
    nested: dict[str, Any] = {}
    for key, default in defaults.items():
        *sections, name = key.split(".")
        node = nested
        for section in sections:
            node = node.setdefault(section, {})
        node[name] = given[key] if _received(key, stage) else default
    return from_dict(RunConfig, nested)


def result_slice(cfg: RunConfig, stage: str, also_withheld: tuple[str, ...] = ()) -> dict[str, Any]:
    """The flattened keys `stage` receives that can change its results (a run key hashes these), less
    `also_withheld` (a sweep's model.init, which the key of the run it starts from stands for)."""
    withheld = NOT_RESULT_KEYS + also_withheld
    return {k: v for k, v in flatten(to_dict(cfg)).items()
            if _received(k, stage) and not any(k == w or k.startswith(w + ".") for w in withheld)}
