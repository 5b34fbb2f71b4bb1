"""The stages of a run as functions: prepare -> pre-train -> fine-tune -> evaluate, each recording itself.

Each stage is handed a `StageInputs`: its slice of the config (stage_config.py: the keys it does not receive are
at their defaults, so nothing outside the slice can change it), the task, its kind and modalities, and the
`Session` of services every stage of one invocation shares (output folder, tracker, parent run, progress lines,
device, the media store's prepared splits). Nothing here edits a config or sets a flag on a model: a stage
returns what it made (a model, a run record), and pipeline.run_stages composes them.

Under torchrun every rank runs the same stages (evaluation is repeated on every rank, which keeps the ranks in
step); only rank 0 logs to MLflow and writes records and checkpoints.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch

from benchmark import distributed
from benchmark.checkpoint import Checkpointer, load_checkpoint
from benchmark.config import ModelConfig, RunConfig, TrainConfig, flatten, to_dict
from benchmark.data import CaptionPairs, ClipTensors, MixedCorpus, PreparedSplit, loader_workers, prepare_split
from benchmark.errors import UserError
from benchmark.evaluate import available
from benchmark.losses import PretrainLoss
from benchmark.media.store import MediaStore
from benchmark.media.text import CaptionTokens, Tokenizer
from benchmark.model import CLIP4VLA, build_model
from benchmark.original_checkpoint import check_imported
from benchmark.progress import Progress
from benchmark.records import RunRecord, fingerprint
from benchmark.registry import load_tasks
from benchmark.synthetic import is_generated
from benchmark.task_kinds import Scoring, TaskKind, kind_of
from benchmark.tracking import NullRun, RunLedger, TrackedRun, Tracker
from benchmark.train import checkpoint_dir, train


@dataclass
class Prepared:
    """A task split after decoding, with its captions' tokens (tokenized where they are read, see CaptionTokens)
    and the missing-audio policy it was asked for (the protocol fingerprint's)."""

    task: object
    split: PreparedSplit
    split_name: str
    tokens: CaptionTokens
    missing_audio: str


@dataclass
class Session:
    """What every stage of one invocation shares; no config (each stage has its own slice). `prepared` holds the
    splits decoded so far, so a split two stages read (a task's train split that is also a corpus) is prepared
    once."""

    out: Path
    tracker: Tracker | None
    parent: TrackedRun | None
    progress: Progress
    store: MediaStore
    device: torch.device
    environment: dict[str, object]
    tags: dict[str, object]  # a sweep names the variant and its plan entry
    resume: bool = False
    prepared: dict[tuple, Prepared] = field(default_factory=dict)

    @property
    def rank(self) -> int:
        return distributed.rank()


@dataclass
class StageInputs:
    """One stage's config slice and what follows from it: the task (None for pre-training), its kind, the
    modalities and directions it has, where its clips are read, its tokenizer and how it scores."""

    cfg: RunConfig
    session: Session
    task: object | None
    kind: TaskKind | None
    modalities: set[str]
    directions: tuple[str, ...]
    tensors: ClipTensors
    tokenizer: Tokenizer
    scoring: Scoring

    @classmethod
    def of(cls, cfg: RunConfig, session: Session) -> StageInputs:
        task = load_tasks().get(cfg.task)() if cfg.task else None
        task_modalities = set(task.spec.modalities) if task else {"text", "video", "audio"}
        modalities = task_modalities & set(cfg.modalities) if cfg.modalities else task_modalities
        directions = available(task.spec.directions, modalities) if task else ()
        tensors = ClipTensors(session.store, cfg.data, use_audio="audio" in modalities)
        tokenizer = Tokenizer(cfg.model.clip_name, cfg.data.max_words)
        scoring = Scoring(cfg, tensors, tokenizer.decode, directions, session.rank)
        return cls(cfg, session, task, kind_of(task.spec) if task else None, modalities, directions, tensors,
                   tokenizer, scoring)

    def main_score(self) -> str:
        return self.kind.main_score(self.task.spec, self.directions)

    def scored_split(self) -> str:
        """The split the evaluations score: eval.split (e.g. an audio-filtered test split the authors scored),
        else the task's test split."""
        return self.cfg.eval.split or self.task.spec.test_split


# -- data ---------------------------------------------------------------------------------------------------
def prepare(inputs: StageInputs, task: object, split: str, exclude: set[str] | None = None, label: str | None = None,
            policy: str | None = None) -> Prepared:
    """Load a split and decode what the store lacks (one process; under torchrun the store must hold every clip:
    `clip4vla prepare` writes it). `policy` overrides data.missing_audio (pre-training corpora keep every clip:
    their audio terms skip clips without audio)."""
    cfg, session = inputs.cfg, inputs.session
    requested = policy or cfg.data.missing_audio
    effective = "drop" if split in task.spec.audio_only_splits else requested
    key = (task.spec.name, split, tuple(sorted(exclude or ())), requested)
    if key in session.prepared:  # e.g. a task's train split that is also the pre-training corpus
        return session.prepared[key]
    root = Path(cfg.data.root) / task.spec.data_dir
    clips = task.load(root, split, cfg.data.limit, cfg.data.audio_template)
    clips = [c for c in clips if c.id not in (exclude or set())]
    stale = session.store.stale(clips) if distributed.world_size() > 1 else []
    if stale:  # decoding on rank 0 alone would keep the others at a barrier past NCCL's timeout
        raise UserError(f"{task.spec.name}/{label or split}: {len(stale)} of {len(clips)} clips are not in the "
                        f"media store {session.store.dir} (or their media changed since), e.g. '{stale[0].id}': "
                        f"run `clip4vla prepare {task.spec.name} --root {cfg.data.root}` first, then torchrun")
    prepared = prepare_split(clips, session.store, effective, "video" in task.spec.modalities)
    c = prepared.counts
    if not prepared.clips:  # before any model is built: nothing to train on or to score
        raise UserError(f"{task.spec.name}/{label or split}: none of its {c['clips_listed']} clips has usable "
                        f"media under {root} (missing video {c['missing_video']}, missing audio "
                        f"{c['missing_audio']}); `clip4vla prepare {task.spec.name}` lists why per clip")
    captions = [text for _, text in prepared.captions]
    # tokenized where read, not here: a 1M-caption corpus would spend 33 s and 256 MB per process up front
    tokens = CaptionTokens(captions, inputs.tokenizer, kind_of(task.spec).token_length(cfg.data.max_words))
    session.progress.say(f"  {task.spec.name}/{label or split}: {c['clips_used']} of {c['clips_listed']} clips "
                         f"used, {len(captions)} captions; missing video {c['missing_video']}, missing audio "
                         f"{c['missing_audio']}")
    session.prepared[key] = Prepared(task, prepared, label or split, tokens, requested)
    return session.prepared[key]


def selection_split(inputs: StageInputs) -> tuple[Prepared, Prepared]:
    """(training data, model-selection data) of the task, by protocol (architecture.md).

    paper: the task's validation split, or, when it has none, data.val_fraction of the training clips held out
    by a fixed hash of their ids; released-code: the split that is scored (the test split, or eval.split), as
    the authors.
    """
    cfg, task = inputs.cfg, inputs.task
    spec = task.spec
    if cfg.eval.selection_split == "test":
        return prepare(inputs, task, spec.train_split), prepare(inputs, task, inputs.scored_split())
    if spec.val_split:
        return prepare(inputs, task, spec.train_split), prepare(inputs, task, spec.val_split)
    ids = [c.id for c in task.load(Path(cfg.data.root) / spec.data_dir, spec.train_split, cfg.data.limit,
                                   cfg.data.audio_template)]
    held_out = {i for i in ids if int(hashlib.sha256(i.encode()).hexdigest(), 16) % 10_000
                < cfg.data.val_fraction * 10_000}
    train_set = prepare(inputs, task, spec.train_split, exclude=held_out)
    return train_set, prepare(inputs, task, spec.train_split, set(ids) - held_out, f"{spec.train_split}-heldout")


def refuse_a_seen_scored_split(inputs: StageInputs) -> None:
    """A fine-tuned model is never scored on what it trained on, or on what picked its checkpoint (under `paper`,
    the task's validation split): a one-line error before any work."""
    spec, scored = inputs.task.spec, inputs.scored_split()
    seen = {spec.train_split: "trains on"}
    if inputs.cfg.eval.selection_split != "test" and spec.val_split:
        seen[spec.val_split] = "selects its checkpoint on"
    if scored in seen:
        raise UserError(f"eval.split={scored}: fine-tuning {spec.name} {seen[scored]} that split, so its scores "
                        f"there say nothing about other clips; score another split ({', '.join(spec.splits)})")


def protocol_fingerprint(inputs: StageInputs, prepared: Prepared) -> str:
    cfg, spec = inputs.cfg, prepared.task.spec
    return fingerprint({
        "task": spec.name, "task_version": spec.version, "split": prepared.split_name,
        "captions_per_item": spec.captions_per_item, "preprocessing": inputs.session.store.prep.fingerprint(),
        "max_words": cfg.data.max_words, "max_audio_segments": cfg.data.max_audio_segments,
        "missing_audio": prepared.missing_audio, "ties": cfg.eval.ties, "protocol": cfg.protocol,
        "selection_split": cfg.eval.selection_split, "modalities": sorted(inputs.modalities),
        "postprocess": cfg.eval.postprocess,
    })


# -- model --------------------------------------------------------------------------------------------------
def build(inputs: StageInputs, init: str | Path | dict | None, scored_as_is: bool = False) -> CLIP4VLA:
    """The model the stage trains or scores (pre-training's slice has no fusion module and no decoder, spec
    §2.5), seeded by the run's seed, so equal configs give equal models in one process and across a sweep's
    runs; started from `init` (a checkpoint or a state dict) when given. `scored_as_is`: scored without
    training, so an imported checkpoint must be built as its import says."""
    cfg = inputs.cfg.model
    with inputs.session.progress.stage(f"build model {cfg.clip_name} (weights: {cfg.pretrained})"):
        torch.manual_seed(inputs.cfg.seed)
        model = build_model(cfg).to(inputs.session.device)
        if init is not None:
            load_init(inputs.session, model, cfg, init, scored_as_is)
    return model


def load_init(session: Session, model: CLIP4VLA, model_cfg: ModelConfig, source: str | Path | dict,
              scored_as_is: bool = False) -> None:
    """Start from a CLIP4VLA checkpoint (e.g. pre-training, or one imported from the authors' file: scored as is,
    it must be built as its import says) or state dict; modules it lacks keep their own init, and which ones is
    said (spec §12 item 21c: the cross transformer stays initialised from CLIP text layers)."""
    if isinstance(source, dict):
        state, where = source, "the pre-trained model"
    else:
        path = Path(source)
        if path.is_dir():  # a stage's checkpoint folder: its best checkpoint, else its newest
            folder = Checkpointer(path)
            path = folder.best() or folder.latest() or path
        if not path.is_file():
            raise UserError(f"model.init checkpoint not found: {path}")
        state, where = load_checkpoint(path, session.device), path
        if scored_as_is and "imported_from" in state:
            check_imported(state["imported_from"], model_cfg, path)
    weights = state.get("model", state)
    own = model.state_dict()
    wrong = [f"{k} {list(v.shape)} (model {list(own[k].shape)})" for k, v in weights.items()
             if k in own and v.shape != own[k].shape]
    if wrong:  # load_state_dict's traceback otherwise
        raise UserError(f"model.init {where} does not fit this model ({model_cfg.clip_name}): {len(wrong)} tensors "
                        f"of other shapes, e.g. {wrong[0]}")
    missing, unexpected = model.load_state_dict(weights, strict=False)
    if unexpected:
        raise UserError(f"model.init {where} does not fit this model: unexpected keys such as {unexpected[0]}")
    kept = sorted({k.split(".")[0] for k in missing})
    session.progress.say(f"  initialised from {where}" + (f"; kept own init for: {', '.join(kept)}" if kept else ""))


# -- training stages ----------------------------------------------------------------------------------------
def pretrain(inputs: StageInputs, corpus: list[Prepared]) -> tuple[CLIP4VLA, RunRecord]:
    """Pre-train a model built from the pre-training slice on the mixed corpora (spec §7); returns it."""
    cfg = inputs.cfg
    model = build(inputs, cfg.model.init)
    pairs = [CaptionPairs(p.split, inputs.tensors, p.tokens, augment=cfg.loss.intra_modal, seed=cfg.seed)
             for p in corpus]
    data = MixedCorpus(pairs, cfg.pretrain_mix, cfg.pretrain_epoch_size, cfg.seed)
    return model, train_stage(inputs, "pretrain", model, data, PretrainLoss(cfg.loss), cfg.pretrain, corpus)


def finetune(inputs: StageInputs, model: CLIP4VLA, data: Prepared, selection: Prepared) -> RunRecord:
    """Train `model` with the fine-tuning loss of the task's kind (spec §6.4). With finetune.eval_every, the main
    score on the selection split picks the checkpoint that is kept."""
    cfg, spec, main = inputs.cfg, data.task.spec, inputs.main_score()
    pairs = CaptionPairs(data.split, inputs.tensors, data.tokens, augment=False, seed=cfg.seed)

    def select() -> float:
        folder = inputs.session.out / "runs" / "selection"
        return inputs.kind.selection_score(inputs.scoring, model, selection, folder, main)

    loss = inputs.kind.loss(cfg, tuple(inputs.modalities))
    return train_stage(inputs, f"finetune/{spec.name}", model, pairs, loss, cfg.finetune, [data],
                       select=select if cfg.finetune.eval_every else None,
                       tags={"selection_split": selection.split_name})


def train_stage(inputs: StageInputs, name: str, model: CLIP4VLA, pairs, loss, recipe: TrainConfig,
                data: list[Prepared], select=None, tags: dict | None = None) -> RunRecord:
    """Train `model` on `pairs` (built from `data`) as one nested run: per-step metrics, checkpoints, record."""
    cfg, session = inputs.cfg, inputs.session
    tags = {"stage": name.split("/")[0], "task": "+".join(p.task.spec.name for p in data),
            **run_tags(inputs, data, recipe.precision, recipe.batch_size), **(tags or {})}
    checkpoints = Checkpointer(checkpoint_dir(session.out, name), recipe.keep_last,
                               extra={"config": to_dict(cfg), "stage": name,
                                      "preprocessing_fingerprint": session.store.prep.fingerprint()})
    with session.progress.stage(f"{name}: {len(pairs)} caption-clip pairs"), tracked_run(inputs, name, tags) as run, \
            run.system_metrics(cfg.tracking.system_metrics_s):
        for p in data:
            log_input(inputs, run, p, "training")

        def log_step(metrics: dict[str, float], step: int) -> None:
            run.log_metrics(metrics, step)
            if "select/score" in metrics:
                session.progress.say(f"  {name} step {step}: selection score {metrics['select/score']:.3f}")

        begin = time.perf_counter()
        summary = train(model, loss, pairs, recipe, cfg.seed, log_step, loader_workers(cfg.data),
                        checkpoints=checkpoints, resume=session.resume, select=select,
                        say=lambda line: session.progress.say(f"  {name} {line}"), batches=inputs.tensors.batches)
        run.log_metrics(summary)
        return record(inputs, name, tags, summary, {"pairs": len(pairs)}, None, begin,
                      {"checkpoints": str(checkpoints.dir)})


# -- evaluation ---------------------------------------------------------------------------------------------
def evaluate(inputs: StageInputs, model: CLIP4VLA, data: Prepared, label: str) -> RunRecord:
    """Score `data` as the task's kind scores it (retrieval: every direction with intervals and per-query records;
    captioning: generated captions scored with pycocoevalcap), recorded as a nested run and
    runs/<label>/results.json."""
    cfg, session, spec, main = inputs.cfg, inputs.session, data.task.spec, inputs.main_score()
    name = f"evaluate/{label}"
    tags = {"stage": "evaluate", "task": spec.name, "label": label, "main_score": main,
            **{f"count.{k}": v for k, v in data.split.counts.items()},
            **run_tags(inputs, [data], cfg.finetune.precision, cfg.eval.batch_size)}
    folder = session.out / "runs" / label
    with session.progress.stage(f"{name} on {spec.name}/{data.split_name}"), tracked_run(inputs, name, tags) as run:
        begin = time.perf_counter()
        metrics, extra, artifact = inputs.kind.score(inputs.scoring, model, data, folder)
        run.log_metrics(metrics)
        log_input(inputs, run, data, "evaluation")
        result = record(inputs, name, tags, metrics, data.split.counts, main, begin,
                        {"chance_R1": 100.0 / max(len(data.split.clips), 1),
                         "selection_split": cfg.eval.selection_split, **extra})
        if session.rank == 0:
            run.log_artifact(artifact)
            run.log_artifact(result.save(folder / "results.json"))
            if extra.get("ci95"):  # a table, not 60 metrics that crowd the UI's charts (kept in results.json)
                run.log_artifact(interval_table(extra["ci95"], folder / "ci95.csv"))
        headline = inputs.kind.headline(inputs.directions)
        session.progress.say(f"  {label}: " + ", ".join(f"{k} {metrics[k]:.1f}" for k in headline))
    return result


# -- records ------------------------------------------------------------------------------------------------
@contextmanager
def tracked_run(inputs: StageInputs, name: str, tags: dict) -> Iterator[TrackedRun | NullRun]:
    """A nested MLflow run with the stage's config slice as params, on rank 0; elsewhere one that records
    nothing. Its name in the UI is its plan run's and its own, e.g. "<step>/<variant>/seed0 · evaluate/finetuned",
    so a list or a comparison of many runs tells them apart."""
    session = inputs.session
    if session.rank != 0 or session.tracker is None:
        yield NullRun()
        return
    display = f"{session.parent.display} · {name}" if getattr(session.parent, "display", "") else name
    with session.tracker.run(name, session.parent, tags, RunLedger(session.out), session.resume, display) as run:
        run.log_params(flatten(to_dict(inputs.cfg)))
        yield run


def record(inputs: StageInputs, name: str, tags: dict, metrics: dict[str, float], counts: dict[str, int],
           main_score: str | None, begin: float, extra: dict) -> RunRecord:
    """The run record of a nested run: each thing its tags say goes to its one place in the record (fields,
    environment, counts); the rest of the tags (data manifest, precision, batch, variant, sweep) to extra."""
    environment = inputs.session.environment
    stored = {"stage", "task", "task_version", "split", "protocol", "seed", "protocol_fingerprint", *environment}
    rest = {k: v for k, v in tags.items()
            if k not in stored and not k.startswith(("version.", "count.", "mlflow."))}
    return RunRecord(
        name=name, stage=tags["stage"], task=tags["task"], task_version=tags["task_version"], split=tags["split"],
        metrics=metrics, main_score=main_score, counts=counts, protocol=inputs.cfg.protocol,
        protocol_fingerprint=tags["protocol_fingerprint"], seed=inputs.cfg.seed, config=to_dict(inputs.cfg),
        environment=environment, wall_seconds=time.perf_counter() - begin, extra={**rest, **extra})


def log_input(inputs: StageInputs, run: TrackedRun | NullRun, data: Prepared, context: str) -> None:
    """The split a run read as an MLflow dataset input: named task/split, identified by its data manifest hash
    (the clips used and which had audio), with its counts; its source is the media store's manifest."""
    spec = data.task.spec
    source = inputs.session.store.dir / f"manifest-{spec.name}.csv"
    run.log_input(f"{spec.name}/{data.split_name}", data.split.manifest_hash(), str(source), context,
                  {"captions": len(data.split.captions), **data.split.counts})


def interval_table(intervals: dict[str, tuple[float, float]], path: Path) -> Path:
    """metric, low, high: the 95% bootstrap interval of each retrieval metric, as a CSV the MLflow UI shows."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("metric,ci95_low,ci95_high\n" + "".join(f"{k},{low!r},{high!r}\n"
                                                            for k, (low, high) in intervals.items()))
    return path


def joined(values) -> str:
    """One tag value for what pre-training reads from several corpora, e.g. "1.0+1.0"."""
    return "+".join(str(v) for v in values)


def commit_tag(sha: str) -> dict[str, str]:
    """MLflow's source-commit tag (the UI's "source" column), none outside a git checkout."""
    return {} if sha == "unknown" else {"mlflow.source.git.commit": sha}


def run_tags(inputs: StageInputs, data: list[Prepared], precision: str, global_batch: int) -> dict[str, object]:
    """What every nested run is tagged with (architecture.md "Run record"): the data it saw (split, protocol
    fingerprint, manifest hash), how it ran (precision, global batch, device, world size) and from what code (git,
    package versions), plus the sweep's variant and plan entry."""
    env = inputs.session.environment
    return {
        "task_version": joined(p.task.spec.version for p in data), "split": joined(p.split_name for p in data),
        "protocol": inputs.cfg.protocol, "seed": inputs.cfg.seed,
        "protocol_fingerprint": joined(protocol_fingerprint(inputs, p) for p in data),
        "data_manifest": joined(p.split.manifest_hash() for p in data),
        "data_generated": any(is_generated(Path(inputs.cfg.data.root) / p.task.spec.data_dir) for p in data),
        "config_fingerprint": fingerprint(to_dict(inputs.cfg)),
        "precision": precision, "global_batch": global_batch, "device": env["device"],
        "world_size": env["world_size"], "hardware": env["hardware"], "command": env["command"],
        "git_sha": env["git_sha"], "git_dirty": env["git_dirty"],
        **commit_tag(env["git_sha"]),
        **{f"version.{name}": v for name, v in env["packages"].items()}, **inputs.session.tags,
    }
