"""Typed run configuration: dataclass defaults, YAML files and dotted CLI overrides (design/style.md).

Defaults live here only. A YAML file and `key.sub=value` overrides are merged onto them and type-checked;
an unknown key is an error that names it and suggests the closest one. Every field carries its meaning
(`setting`), which `clip4vla config show` prints. Fields left at `None` whose meaning says "(protocol)" take their
value from the chosen protocol (`paper` or `released-code`, architecture.md), and the resolved config, with every
switch concrete, is what each run records.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from benchmark.errors import UserError
from benchmark.registry import closest

Protocol = Literal["paper", "released-code"]


def setting(default: Any = dataclasses.MISSING, meaning: str = "", factory: Any = dataclasses.MISSING) -> Any:
    """A config field with its meaning, kept next to it: the one text `clip4vla config show` prints."""
    return field(default=default, default_factory=factory, metadata={"meaning": meaning})


def meanings(cls: type, prefix: str = "") -> dict[str, str]:
    """Dotted key -> meaning of every key of config dataclass `cls`, sections included ("model", "model.init")."""
    hints = _field_types(cls)
    out: dict[str, str] = {}
    for f in dataclasses.fields(cls):
        out[prefix + f.name] = f.metadata.get("meaning", "")
        if dataclasses.is_dataclass(hints[f.name]):
            out.update(meanings(hints[f.name], f"{prefix}{f.name}."))
    return out


@dataclass
class ModelConfig:
    clip_name: str = setting("ViT-B-32-quickgelu", "open_clip model config (OpenAI weights need QuickGELU)")
    pretrained: str | None = setting("openai", "open_clip tag, a local checkpoint path, or null for random weights")
    audio_init: Literal["visual", "random"] = setting("visual", "audio tower copied from the image tower (visual, "
                                                      "spec §2.3) or randomly initialised")
    type_token: Literal["off", "index", "mix", "both"] = setting("mix", "audio type token: spec §2.3 modes -1 / 2 / "
                                                                 "c / 3")
    type_mix: float = setting(0.5, "c in (1-c)·e0 + c·e1 for type_token mix (per task, spec §9.1)")
    type_pos_init_std: float | None = setting(None, "std of the new TYPE positional row (protocol)")
    learnable_logit_scale: bool | None = setting(None, "similarity scale learnable (paper) or fixed (released-code), "
                                                 "capped at 100 (protocol)")
    logit_scale_init: float = setting(100.0, "similarity scale at the start (spec §2.4); random weights learn faster "
                                      "lower")
    init: str | None = setting(None, "CLIP4VLA checkpoint (or a stage's checkpoint folder: its best, else newest) "
                               "to start from")
    fusion: Literal["feat_avg", "loose_seq"] = setting("feat_avg", "video+audio feature: (v + a) / 2, optionally "
                                                       "after the cross transformer (loose_seq)")
    cross_layers: int = setting(4, "cross transformer depth, initialised from CLIP text layers 0.. (spec §2.6)")
    decoder: bool = setting(False, "build the caption decoder (cross transformer + tied LM head, spec §2.7); on "
                            "for captioning tasks")
    supervise_pad: bool | None = setting(None, "caption cross-entropy also on padding targets, as the authors' code "
                                         "(protocol)")


@dataclass
class DataConfig:
    root: str | None = setting(None, "folder holding one sub-folder per dataset (each task's data_dir)")
    cache: str | None = setting(None, "the media store (WebDataset shards); default <root>/clip4vla-cache")
    audio_template: str | None = setting(None, "per-clip audio file of tasks that ship them, e.g. "
                                         "\"audio/Y{youtube_id}.wav\"")
    stft_pad_mode: Literal["constant", "reflect"] = setting("constant", "STFT padding: librosa 0.9 zeros (constant) "
                                                            "or 0.8 reflect (spec §3)")
    max_words: int = setting(32, "text tokens incl. SOT/EOT (spec §5)")
    max_frames: int = setting(12, "frames at 1 fps, uniformly subsampled beyond this (spec §4)")
    max_audio_segments: int = setting(16, "224-frame log-mel segments, centred window (spec §3)")
    missing_audio: Literal["zero", "drop", "miss"] | None = setting(None, "a clip without audio: zero feature, "
                                                                    "dropped, or ranked last (task: zero with video, "
                                                                    "miss for audio-only tasks; architecture.md)")
    limit: int | None = setting(None, "use only the first N clips of each split (lm-eval --limit)")
    val_fraction: float = setting(0.05, "training clips held out for model selection when a task has no val split")
    workers: int | None = setting(None, "DataLoader worker processes; null: one per CPU core but one, at most 8")
    audio_bits: Literal[16, 24] = setting(24, "stored PCM bits: 24 within 0.004 dB of the float log-mel; 16 halves "
                                          "the bytes")
    shard_mb: int = setting(1024, "size of the store's tar shards in MiB: a killed `prepare` loses at most one")
    bad_entry: Literal["error", "skip"] = setting("error", "a damaged store entry: stop, or go on without its media")


@dataclass
class TrainConfig:
    epochs: int = setting(10, "passes over the training data")
    max_steps: int | None = setting(None, "stop after this many optimizer steps (smoke runs, tests); 0 skips the stage")
    batch_size: int = setting(128, "global batch per optimizer step")
    grad_accum: int = setting(1, "micro-batches per step; the contrastive batch is batch_size / grad_accum "
                              "(spec §7.2)")
    lr: float = setting(5e-4, "peak learning rate of the new modules")
    coef_lr: float = setting(2e-4, "encoders train at lr * coef_lr (spec §8)")
    weight_decay: float = setting(0.2, "AdamW weight decay")
    warmup: float = setting(0.1, "fraction of steps with linear warmup, then cosine over the whole run (spec §8)")
    grad_clip: float = setting(1.0, "global gradient-norm clip")
    precision: Literal["fp32", "bf16", "fp16"] = setting("fp32", "autocast dtype; fp16 uses a GradScaler (GPU)")
    grad_checkpointing: bool = setting(False, "recompute tower activations in backward: less memory, more time")
    param_groups: Literal["clean", "released"] | None = setting(None, "lr / weight-decay groups, see train.py "
                                                                "(protocol)")
    log_every: int = setting(10, "optimizer steps between logged training metrics")
    checkpoint_every: int = setting(0, "optimizer steps between checkpoints (0: only at the end)")
    eval_every: int = setting(0, "steps between model-selection evaluations; the best is kept and restored (0: none)")
    keep_last: int = setting(2, "newest checkpoints kept besides the best (>= 1: --resume continues from the newest)")
    skip_nonfinite: bool = setting(False, "a non-finite loss skips its step (counted) instead of stopping the run")


@dataclass
class LossConfig:
    intra_modal: bool = setting(True, "L_AA, audio vs its SpecAugment view (spec §6.2)")
    text_video: bool = setting(False, "add L_TV to the pre-training loss (always logged, spec §6.1)")
    released_terms: bool | None = setting(None, "doubled L_VA + L_TT + L_VV, as the released script (protocol)")
    symmetric_finetune: bool | None = setting(None, "fine-tuning loss t<->clip (paper) or t->clip only "
                                              "(released-code) (protocol)")


@dataclass
class EvalConfig:
    split: str | None = setting(None, "the split scored: one of the task's splits (`clip4vla tasks`); null: its "
                                "test split")
    batch_size: int = setting(64, "clips encoded at once")
    ties: Literal["average", "optimistic", "pessimistic"] = setting("average", "rank of tied scores (spec §10.1)")
    selection_split: Literal["val", "test"] | None = setting(None, "model selection split (protocol)")
    postprocess: Literal["none", "dual_softmax", "inverted_softmax"] = setting("none", "similarity re-normalisation "
                                                                               "before ranking; recorded in the "
                                                                               "fingerprint")
    postprocess_temperature: float = setting(0.01, "softmax temperature of eval.postprocess")
    bootstrap: int = setting(1000, "resamples of the test queries for 95% intervals (0: none)")
    beam: int = setting(5, "caption decoding beam size (spec §2.7); 1 is greedy")


@dataclass
class TrackingConfig:
    uri: str | None = setting(None, "MLflow tracking URI; default: MLFLOW_TRACKING_URI, else a SQLite file in the "
                              "output folder")
    experiment: str = setting("clip4vla", "MLflow experiment the runs log to (a suite's default: clip4vla-<suite>)")
    system_metrics_s: float = setting(10.0, "CPU/GPU/memory use logged every N seconds of a training stage (0: none)")


@dataclass
class RunConfig:
    protocol: Protocol = setting("paper", "paper or released-code: fills every (protocol) switch left at null "
                                 "(README \"Protocols\")")
    seed: int = setting(42, "seed of the model's initialisation, the data order and the augmentations")
    device: str = setting("auto", "torch device; auto = cuda when available, else cpu")
    task: str | None = setting(None, "downstream task fine-tuned and evaluated (`clip4vla tasks`)")
    pretrain_corpus: list[str] = setting(factory=list, meaning="pre-training corpora (`clip4vla tasks`, kind corpus)")
    pretrain_mix: list[float] | None = setting(None, "weight per pretrain_corpus entry; null: every item once per "
                                               "epoch")
    pretrain_epoch_size: int | None = setting(None, "items per pre-training epoch with pretrain_mix (default: all "
                                              "items)")
    modalities: list[str] | None = setting(None, "restrict the task's modalities, e.g. [text, video] = "
                                           "CLIP4Clip-meanP")
    model: ModelConfig = setting(factory=ModelConfig, meaning="the model: open_clip towers, audio tower, fusion, "
                                 "decoder")
    data: DataConfig = setting(factory=DataConfig, meaning="datasets, media store and preprocessing")
    loss: LossConfig = setting(factory=LossConfig, meaning="the loss terms (spec §6)")
    pretrain: TrainConfig = setting(factory=lambda: TrainConfig(batch_size=4096, lr=1e-7, coef_lr=1.0),
                                    meaning="the pre-training recipe: stage 2 of the released script (spec §7.2), "
                                    "per optimizer step of 4096 samples")
    finetune: TrainConfig = setting(factory=TrainConfig, meaning="the fine-tuning recipe: video retrieval's, spec "
                                    "§9.1 (encoders at 5e-4 * 2e-4 = 1e-7, new modules at 5e-4)")
    eval: EvalConfig = setting(factory=EvalConfig, meaning="how a split is scored")
    tracking: TrackingConfig = setting(factory=TrackingConfig, meaning="where the runs are recorded (MLflow)")


# What each protocol means for the "(protocol)" switches (architecture.md "Protocols"; spec §2.3, §2.4, §6, §12).
PROTOCOL_DEFAULTS: dict[str, dict[str, Any]] = {
    "paper": {
        "model.type_pos_init_std": 0.01,  # spec §14: initialise the new row small
        "model.learnable_logit_scale": True,
        "loss.released_terms": False,
        "loss.symmetric_finetune": True,
        "model.supervise_pad": False,  # spec §6.4 [R]: ignore pads
        "eval.selection_split": "val",  # never select on the test set
        "pretrain.param_groups": "clean",
        "finetune.param_groups": "clean",
    },
    "released-code": {
        "model.type_pos_init_std": 1.0,  # spec §12 item 12: std-1 noise, as the authors' code
        "model.learnable_logit_scale": False,  # spec §2.4: fixed 100
        "loss.released_terms": True,  # spec §6.3: tav_nce + with_self_supervised
        "loss.symmetric_finetune": False,  # spec §12 item 9
        "model.supervise_pad": True,  # spec §12 item 13: ignore_index -1 never matches PAD
        "eval.selection_split": "test",  # spec §10.1 / §12 item 14: the authors select on the test set
        "pretrain.param_groups": "released",  # spec §8 / §12 item 23
        "finetune.param_groups": "released",
    },
}


def to_dict(cfg: Any) -> dict[str, Any]:
    """Nested plain dict of a config dataclass (what YAML and MLflow params see)."""
    return dataclasses.asdict(cfg)


def annotated_yaml(cfg: Any) -> str:
    """`cfg` as YAML with each key's meaning as a comment (`clip4vla config show`): without the comments, the
    mapping a run records as its config.yaml, so the output is a valid `--config` file."""
    rows = list(_annotated_rows(cfg, ""))
    width = min(max(len(key) for key, _ in rows), 60)
    return "\n".join(f"{key:<{width}}  # {meaning}" for key, meaning in rows)


def _annotated_rows(cfg: Any, indent: str) -> Iterator[tuple[str, str]]:
    for f in dataclasses.fields(cfg):
        value, meaning = getattr(cfg, f.name), f.metadata.get("meaning", "")
        if dataclasses.is_dataclass(value):
            yield f"{indent}{f.name}:", meaning
            yield from _annotated_rows(value, indent + "  ")
        else:
            yield f"{indent}{f.name}: {yaml_value(value)}", meaning


def yaml_value(value: Any) -> str:
    """One value as YAML on one line (flow style), e.g. null, 1.0e-07, [audioset, howto100m]."""
    return yaml.safe_dump(value, default_flow_style=True, width=math.inf).removesuffix("...\n").strip()


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _check_value(value: Any, tp: Any, key: str) -> Any:
    """Return `value` converted to `tp`, or raise a UserError naming `key`."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _check_value(value, arg, key)
            except UserError as exc:
                errors.append(str(exc))
        raise UserError(errors[0] if errors else f"config key '{key}' cannot be null")
    if origin is Literal:
        if isinstance(value, bool) and all(isinstance(a, str) for a in args):
            # YAML 1.1 reads `off`/`no` as false and `on`/`yes` as true: `type_token: off` must mean "off"
            spelled = [w for w in (("on", "yes", "true") if value else ("off", "no", "false")) if w in args]
            value = spelled[0] if spelled else value
        if value not in args:
            raise UserError(f"config key '{key}' must be one of {list(args)}, got {value!r}")
        return value
    if origin is list:
        if not isinstance(value, list | tuple):
            raise UserError(f"config key '{key}' must be a list, got {value!r}")
        return [_check_value(v, args[0], key) for v in value]
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise UserError(f"config key '{key}' must be a mapping, got {value!r}")
        return from_dict(tp, value, prefix=key + ".")
    if tp is bool:
        if not isinstance(value, bool):
            raise UserError(f"config key '{key}' must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise UserError(f"config key '{key}' must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str) and _looks_like_float(value):
            value = float(value)  # YAML 1.1 reads "1e-5" (no dot) as a string
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise UserError(f"config key '{key}' must be a number, got {value!r}")
        if not math.isfinite(value):  # YAML reads .nan and .inf as floats: a NaN lr trains NaN weights
            raise UserError(f"config key '{key}' must be a finite number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise UserError(f"config key '{key}' must be a string, got {value!r}")
        return value
    raise TypeError(f"unsupported config type {tp} for '{key}'")


def from_dict(cls: type, data: dict[str, Any], prefix: str = "") -> Any:
    """Build dataclass `cls` from a (partial) dict; unknown keys and wrong types raise UserError."""
    hints = _field_types(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        if key not in hints:
            known = [prefix + n for n in names]
            raise UserError(f"unknown config key '{prefix}{key}'{closest(prefix + str(key), known)}")
        kwargs[key] = _check_value(value, hints[key], prefix + key)
    default = cls()
    for name in names:
        if name in kwargs and dataclasses.is_dataclass(hints[name]):
            # merge a partial sub-mapping onto the default sub-config instead of replacing it
            sub = to_dict(getattr(default, name))
            merge(sub, data[name])
            kwargs[name] = from_dict(hints[name], sub, prefix=prefix + name + ".")
    return dataclasses.replace(default, **kwargs)


def merge(base: dict[str, Any], update: dict[str, Any]) -> None:
    """Merge nested mapping `update` into `base` in place; sub-mappings merge key by key."""
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            merge(base[key], value)
        else:
            base[key] = value


def parse_override(text: str) -> dict[str, Any]:
    """'train.lr=1e-5' -> {"train": {"lr": 1e-05}}; the value is read as YAML (numbers, bools, null, lists)."""
    if "=" not in text:
        raise UserError(f"override '{text}' must look like key.sub=value")
    key, raw = text.split("=", 1)
    value = yaml.safe_load(raw) if raw.strip() else ""
    nested: dict[str, Any] = {}
    node = nested
    parts = key.strip().split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return nested


def _looks_like_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return text.strip().lower() not in ("nan", "inf", "-inf", "infinity")


def read_yaml(path: Path) -> dict[str, Any]:
    """Read a YAML mapping, with one-line errors for a missing file or bad syntax."""
    if not path.is_file():
        raise UserError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: invalid YAML: {str(exc).splitlines()[0]}") from exc
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping at the top level")
    return data


def resolve_protocol(cfg: RunConfig) -> RunConfig:
    """Fill every "(protocol)" switch left at None from PROTOCOL_DEFAULTS; explicit values win."""
    data = to_dict(cfg)
    for dotted, value in PROTOCOL_DEFAULTS[cfg.protocol].items():
        section, name = dotted.split(".")
        if data[section][name] is None:
            data[section][name] = value
    return from_dict(RunConfig, data)


def resolve_task_defaults(cfg: RunConfig) -> RunConfig:
    """Fill the "(task)" switches. data.missing_audio: `miss` when the task's clips are audio only (with the
    modalities restriction applied), `zero` otherwise. Under `zero`, an audio-only clip without audio would be
    an all-zero feature with similarity 0 to every caption, outranking every real clip scored below 0. And
    model.decoder is on when the task's kind needs it (captioning), so the resolved config, the one recorded,
    says which model ran; nothing changes it later."""
    if cfg.task is None:
        return cfg if cfg.data.missing_audio is not None else \
            dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, missing_audio="zero"))
    from benchmark.registry import load_tasks
    from benchmark.task_kinds import kind_of

    spec = load_tasks().get(cfg.task).spec
    missing_audio = cfg.data.missing_audio
    if missing_audio is None:
        modalities = set(spec.modalities) & set(cfg.modalities) if cfg.modalities else set(spec.modalities)
        missing_audio = "zero" if "video" in modalities else "miss"
    return dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, missing_audio=missing_audio),
                               model=dataclasses.replace(cfg.model,
                                                         decoder=cfg.model.decoder or kind_of(spec).needs_decoder))


@dataclass(frozen=True)
class Range:
    """Allowed values of a numeric key: `low` <= value (< when `open_low`) and value <= `high`."""

    low: float | None
    high: float | None = None
    why: str = ""
    open_low: bool = False

    def allows(self, value: float) -> bool:
        above = self.low is None or (value > self.low if self.open_low else value >= self.low)
        return above and (self.high is None or value <= self.high)

    def __str__(self) -> str:
        if self.high is not None:
            return f"in {'(' if self.open_low else '['}{self.low:g}, {self.high:g}]"
        return f"{'>' if self.open_low else '>='} {self.low:g}"


# Checked when a config is built, before any data is read. A `train.` key stands for pretrain. and finetune.
RANGES: dict[str, Range] = {
    "train.epochs": Range(1, why="passes over the training data"),
    "train.max_steps": Range(0, why="optimizer steps; 0 skips the stage"),
    "train.batch_size": Range(1, why="samples per optimizer step"),
    "train.grad_accum": Range(1, why="micro-batches per optimizer step"),
    "train.lr": Range(0, why="learning rate"),
    "train.coef_lr": Range(0, why="encoder learning-rate factor"),
    "train.weight_decay": Range(0, why="AdamW weight decay"),
    "train.warmup": Range(0, 1, why="fraction of the steps"),
    "train.grad_clip": Range(0, why="a clip at 0 zeroes every gradient", open_low=True),
    "train.log_every": Range(1, why="optimizer steps between logged metrics"),
    "train.checkpoint_every": Range(0, why="0: only at the end"),
    "train.eval_every": Range(0, why="0: no model selection"),
    "train.keep_last": Range(1, why="--resume continues from the newest checkpoint"),
    "data.max_words": Range(3, 77, why="SOT + at least one word + EOT, within CLIP's 77 positions"),
    "data.max_frames": Range(1, why="frames per clip"),
    "data.max_audio_segments": Range(1, why="log-mel segments per clip"),
    "data.limit": Range(1, why="clips per split; null uses all"),
    "data.val_fraction": Range(0, 1, why="share of the training clips held out"),
    "data.workers": Range(0, why="DataLoader worker processes"),
    "data.shard_mb": Range(1, why="MiB per store shard"),
    "model.type_mix": Range(0, 1, why="c in (1-c)·e0 + c·e1"),
    "model.type_pos_init_std": Range(0, why="std of the type token's positional row"),
    "model.logit_scale_init": Range(0, 100, why="the scale is capped at 100", open_low=True),
    "model.cross_layers": Range(1, why="cross transformer layers"),
    "eval.batch_size": Range(1, why="clips encoded at once"),
    "eval.postprocess_temperature": Range(0, why="softmax temperature", open_low=True),
    "eval.bootstrap": Range(0, why="resamples; 0: no intervals"),
    "eval.beam": Range(1, why="beam size; 1 is greedy"),
    "pretrain_epoch_size": Range(1, why="items per pre-training epoch"),
}
MODALITIES = ("text", "video", "audio")


def check_ranges(cfg: RunConfig) -> RunConfig:
    """`cfg` unchanged, or a one-line UserError naming the key, its value and the allowed range."""
    flat = flatten(to_dict(cfg))
    for pattern, allowed in RANGES.items():
        section, _, name = pattern.partition(".")
        for key in ([f"{stage}.{name}" for stage in ("pretrain", "finetune")] if section == "train" else [pattern]):
            value = flat[key]
            if value is not None and not allowed.allows(value):
                raise UserError(f"config key '{key}' must be {allowed} ({allowed.why}), got {value!r}")
    for stage in ("pretrain", "finetune"):
        recipe: TrainConfig = getattr(cfg, stage)
        if recipe.batch_size % recipe.grad_accum:
            raise UserError(f"config key '{stage}.grad_accum' ({recipe.grad_accum}) must divide "
                            f"'{stage}.batch_size' ({recipe.batch_size}): each step reads grad_accum equal "
                            "micro-batches")
    _check_modalities(cfg)
    _check_eval_split(cfg)
    _check_pretrain_mix(cfg)
    return cfg


def _check_eval_split(cfg: RunConfig) -> None:
    """eval.split names one of the task's splits (a pre-training run, without a task, scores nothing)."""
    if cfg.eval.split is None or cfg.task is None:
        return
    from benchmark.registry import load_tasks

    splits = load_tasks().get(cfg.task).spec.splits
    if cfg.eval.split not in splits:
        raise UserError(f"config key 'eval.split': task {cfg.task} has no split '{cfg.eval.split}'"
                        f"{closest(cfg.eval.split, splits)} (splits: {', '.join(splits)})")


def _check_modalities(cfg: RunConfig) -> None:
    if cfg.modalities is None:
        return
    unknown = [m for m in cfg.modalities if m not in MODALITIES]
    if unknown:
        raise UserError(f"config key 'modalities': unknown modality '{unknown[0]}'{closest(unknown[0], MODALITIES)} "
                        f"(choose from {', '.join(MODALITIES)})")
    if "text" not in cfg.modalities or not {"video", "audio"} & set(cfg.modalities):
        raise UserError(f"config key 'modalities' must hold text and video and/or audio, got {cfg.modalities}")
    if cfg.task is not None:
        from benchmark.registry import load_tasks

        task_modalities = load_tasks().get(cfg.task).spec.modalities
        if not {"video", "audio"} & set(cfg.modalities) & set(task_modalities):
            raise UserError(f"config key 'modalities' {cfg.modalities} leaves task {cfg.task} no clip modality "
                            f"(it has {', '.join(task_modalities)})")


def _check_pretrain_mix(cfg: RunConfig) -> None:
    if cfg.pretrain_mix is None:
        return
    if len(cfg.pretrain_mix) != len(cfg.pretrain_corpus):
        raise UserError(f"config key 'pretrain_mix' has {len(cfg.pretrain_mix)} weights for "
                        f"{len(cfg.pretrain_corpus)} corpora in 'pretrain_corpus'")
    if any(w < 0 for w in cfg.pretrain_mix) or not 0 < sum(cfg.pretrain_mix) < math.inf:
        raise UserError(f"config key 'pretrain_mix' must be non-negative weights with a positive, finite sum, "
                        f"got {cfg.pretrain_mix}")


def load_config(base: dict[str, Any] | None = None, overrides: list[str] = ()) -> RunConfig:
    """Defaults <- `base` mapping (e.g. a YAML file) <- dotted overrides, type-checked, range-checked and
    resolved: every "(protocol)" and "(task)" switch concrete."""
    data: dict[str, Any] = {}
    merge(data, base or {})
    for text in overrides:
        merge(data, parse_override(text))
    return check_ranges(resolve_task_defaults(resolve_protocol(from_dict(RunConfig, data))))
