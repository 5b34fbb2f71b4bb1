"""The reproduction path: prepare data, pre-train, fine-tune and evaluate one task, each stage a nested MLflow run.

`clip4vla smoke` runs exactly this on generated data with a tiny model; a real reproduction runs it with real
data and CLIP weights. Evaluations happen at three points so every report shows the learning signal: the
initial model (CLIP zero-shot, or chance for random weights), after pre-training, and after fine-tuning.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml
from torch import nn

from benchmark import distributed
from benchmark.checkpoint import Checkpointer, load_checkpoint
from benchmark.config import ModelConfig, RunConfig, flatten, to_dict
from benchmark.data import CaptionPairs, ClipTensors, MixedCorpus, PreparedSplit, loader_workers, prepare_split
from benchmark.errors import UserError
from benchmark.evaluate import available
from benchmark.losses import PretrainLoss
from benchmark.media.decode import Preprocessing
from benchmark.media.store import MediaStore
from benchmark.media.text import CaptionTokens, Tokenizer
from benchmark.model import CLIP4VLA, build_model
from benchmark.records import RunRecord, fingerprint, git_state, package_versions
from benchmark.registry import load_tasks
from benchmark.task_kinds import Scoring, TaskKind, kind_of
from benchmark.tracking import NullRun, RunLedger, TrackedRun, Tracker, default_uri
from benchmark.train import checkpoint_dir, train

log = logging.getLogger("clip4vla")


class Progress:
    """One line per stage with the time since start (stderr, through logging)."""

    def __init__(self) -> None:
        self.start = time.perf_counter()

    def say(self, text: str) -> None:
        if os.environ.get("RANK", "0") == "0":  # under torchrun, rank 0 speaks for all
            log.info("[%6.1fs] %s", time.perf_counter() - self.start, text)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        begin = time.perf_counter()
        self.say(f"{name} ...")
        yield
        self.say(f"{name} done in {time.perf_counter() - begin:.1f}s")


@dataclass
class Prepared:
    """A task split after decoding, with its captions' tokens (tokenized where they are read, see CaptionTokens)."""

    task: object
    split: PreparedSplit
    split_name: str
    tokens: CaptionTokens


@dataclass(frozen=True)
class Reports:
    """How run records become reports, handed in by what composes this library with reports/ (the CLI,
    `cli.report_writers`): the pipeline and the sweep never import reports/, which reads their records and the
    tracking store (issue 14 item 3). `run(records, path, title)` writes one run's report.md;
    `suite(tracker, out, title, reference)` a sweep's comparison report, returning its files by format."""

    run: Callable[[list[RunRecord], Path, str], Path]
    suite: Callable[[Tracker, Path, str, str | None], dict[str, Path]]


def joined(values) -> str:
    """One tag value for what pre-training reads from several corpora, e.g. "1.0+1.0"."""
    return "+".join(str(v) for v in values)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def cache_dir(cfg: RunConfig) -> Path:
    """data.cache, else <data.root>/clip4vla-cache (where `clip4vla prepare` writes by default)."""
    return Path(cfg.data.cache or Path(cfg.data.root) / "clip4vla-cache")


def media_store(cfg: RunConfig) -> MediaStore:
    """The run's media store (`data.cache`, `data.max_frames`, `data.shard_mb`)."""
    return MediaStore(cache_dir(cfg), Preprocessing.of(cfg.data), cfg.data.shard_mb << 20)


def stage_model_config(cfg: RunConfig, stage: str) -> ModelConfig:
    """The model a stage builds. Pre-training has no fusion module and no decoder (spec §2.5: neither is used
    nor trained there), so a pre-training run, its checkpoint and what starts from it never depend on
    model.fusion or model.decoder (which its run key leaves out)."""
    if stage == "pretrain":
        return dataclasses.replace(cfg.model, fusion="feat_avg", decoder=False)
    return cfg.model


def stage_loss(cfg: RunConfig, stage: str, kind: TaskKind | None = None, modalities: tuple[str, ...] = ()
               ) -> nn.Module:
    """The loss a training stage minimises (spec §6): pre-training's, or the fine-tuning loss of the task's kind."""
    if stage == "pretrain":
        return PretrainLoss(cfg.loss)
    return kind.loss(cfg, tuple(modalities))


def check_tasks(cfg: RunConfig, needs_task: bool = True, needs_corpus: bool = False) -> None:
    """Fail early, with the closest name, when the config names an unknown task or corpus, or lacks one."""
    tasks = load_tasks()
    for name in [n for n in [cfg.task, *cfg.pretrain_corpus] if n is not None]:
        tasks.get(name)
    if needs_task and cfg.task is None:
        raise UserError("no task: set task=NAME (see `clip4vla tasks`)")
    if needs_task and not kind_of(tasks.get(cfg.task).spec).scored:
        raise UserError(f"'{cfg.task}' is a pre-training corpus, not a task to fine-tune or evaluate")
    if needs_corpus and not cfg.pretrain_corpus:
        raise UserError("no pre-training corpus: set pretrain_corpus=[NAME, ...] (see `clip4vla tasks`)")


class Reproduction:
    """Holds what all stages share: config, data, model, tracker, parent run.

    Under torchrun every rank runs the same stages (evaluation is repeated on every rank, which keeps the ranks
    in step); only rank 0 decodes into the cache, logs to MLflow and writes records and checkpoints.
    """

    def __init__(self, cfg: RunConfig, out: Path, tracker: Tracker | None, parent: TrackedRun | None,
                 progress: Progress, resume: bool = False, tags: dict[str, object] | None = None) -> None:
        if not cfg.data.root:
            raise UserError("data.root is not set: point it at the folder holding the dataset folders")
        self.cfg, self.out, self.tracker, self.parent, self.progress = cfg, out, tracker, parent, progress
        self.resume = resume
        self.tags = {"variant": "default", **(tags or {})}  # a sweep names the variant and its plan entry
        self.tasks = load_tasks()
        self.task = self.tasks.get(cfg.task)() if cfg.task else None  # None: pre-training only
        self.kind = kind_of(self.task.spec) if self.task else None
        self.corpus = [self.tasks.get(name)() for name in cfg.pretrain_corpus]
        task_modalities = set(self.task.spec.modalities) if self.task else {"text", "video", "audio"}
        self.modalities = task_modalities & set(cfg.modalities) if cfg.modalities else task_modalities
        self.directions = available(self.task.spec.directions, self.modalities) if self.task else ()
        self.device = distributed.setup(resolve_device(cfg.device))
        if self.device.type == "cuda":  # fp32 matmuls and convolutions on tensor cores (TF32); bf16 runs unchanged
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        self.rank = distributed.rank()
        self.store = media_store(cfg)
        self.tensors = ClipTensors(self.store, cfg.data, use_audio="audio" in self.modalities)
        self.tokenizer = Tokenizer(cfg.model.clip_name, cfg.data.max_words)
        self.scoring = Scoring(cfg, self.tensors, self.tokenizer.decode, self.directions, self.rank)
        self.records: list[RunRecord] = []
        self.prepared: dict[tuple[str, str], Prepared] = {}
        self.environment = {
            **git_state(), "packages": package_versions(), "device": str(self.device),
            "world_size": distributed.world_size(),
        }

    # -- data ---------------------------------------------------------------------------------------------
    def prepare(self, task: object, split: str, exclude: set[str] | None = None, label: str | None = None,
                policy: str | None = None) -> Prepared:
        """Load a split and decode what the store lacks (one process; under torchrun the store must hold every
        clip: `clip4vla prepare` writes it). `policy` overrides data.missing_audio (pre-training corpora keep
        every clip: their audio terms skip clips without audio)."""
        policy = "drop" if split in task.spec.audio_only_splits else policy or self.cfg.data.missing_audio
        key = (task.spec.name, split, tuple(sorted(exclude or ())), policy)
        if key in self.prepared:  # e.g. a task's train split that is also the pre-training corpus
            return self.prepared[key]
        root = Path(self.cfg.data.root) / task.spec.data_dir
        clips = task.load(root, split, self.cfg.data.limit, self.cfg.data.audio_template)
        clips = [c for c in clips if c.id not in (exclude or set())]
        stale = self.store.stale(clips) if distributed.world_size() > 1 else []
        if stale:  # decoding on rank 0 alone would keep the others at a barrier past NCCL's timeout
            raise UserError(f"{task.spec.name}/{label or split}: {len(stale)} of {len(clips)} clips are not in the "
                            f"media store {self.store.dir} (or their media changed since), e.g. '{stale[0].id}': "
                            f"run `clip4vla prepare {task.spec.name} --root {self.cfg.data.root}` first, then torchrun")
        prepared = prepare_split(clips, self.store, policy, "video" in task.spec.modalities)
        if not prepared.clips:  # before any model is built: nothing to train on or to score
            c = prepared.counts
            raise UserError(f"{task.spec.name}/{label or split}: none of its {c['clips_listed']} clips has usable "
                            f"media under {root} (missing video {c['missing_video']}, missing audio "
                            f"{c['missing_audio']}); `clip4vla prepare {task.spec.name}` lists why per clip")
        captions = [text for _, text in prepared.captions]
        # tokenized where read, not here: a 1M-caption corpus would spend 33 s and 256 MB per process up front
        tokens = CaptionTokens(captions, self.tokenizer, kind_of(task.spec).token_length(self.cfg.data.max_words))
        c = prepared.counts
        self.progress.say(
            f"  {task.spec.name}/{label or split}: {c['clips_used']} of {c['clips_listed']} clips used, "
            f"{len(captions)} captions; missing video {c['missing_video']}, missing audio {c['missing_audio']}"
        )
        self.prepared[key] = Prepared(task, prepared, label or split, tokens)
        return self.prepared[key]

    def selection_split(self) -> tuple[Prepared, Prepared]:
        """(training data, model-selection data) of the task, by protocol (architecture.md).

        paper: the task's validation split, or, when it has none, data.val_fraction of the
        training clips held out by a fixed hash of their ids; released-code: the split that is scored (the test
        split, or eval.split), as the authors.
        """
        spec = self.task.spec
        if self.cfg.eval.selection_split == "test":
            return self.prepare(self.task, spec.train_split), self.prepare(self.task, self.scored_split())
        if spec.val_split:
            return self.prepare(self.task, spec.train_split), self.prepare(self.task, spec.val_split)
        root = Path(self.cfg.data.root) / spec.data_dir
        ids = [c.id for c in self.task.load(root, spec.train_split, self.cfg.data.limit, self.cfg.data.audio_template)]
        held_out = {i for i in ids if int(hashlib.sha256(i.encode()).hexdigest(), 16) % 10_000
                    < self.cfg.data.val_fraction * 10_000}
        train_set = self.prepare(self.task, spec.train_split, exclude=held_out)
        return train_set, self.prepare(self.task, spec.train_split, set(ids) - held_out, f"{spec.train_split}-heldout")

    def scored_split(self) -> str:
        """The split the evaluations score: eval.split (e.g. an audio-filtered test split the authors scored),
        else the task's test split."""
        return self.cfg.eval.split or self.task.spec.test_split

    def refuse_a_seen_scored_split(self) -> None:
        """A fine-tuned model is never scored on what it trained on, or on what picked its checkpoint (under
        `paper`, the task's validation split): a one-line error before any work."""
        spec, scored = self.task.spec, self.scored_split()
        seen = {spec.train_split: "trains on"}
        if self.cfg.eval.selection_split != "test" and spec.val_split:
            seen[spec.val_split] = "selects its checkpoint on"
        if scored in seen:
            raise UserError(f"eval.split={scored}: fine-tuning {spec.name} {seen[scored]} that split, so its scores "
                            f"there say nothing about other clips; score another split ({', '.join(spec.splits)})")

    def protocol_fingerprint(self, prepared: Prepared) -> str:
        spec = prepared.task.spec
        return fingerprint({
            "task": spec.name, "task_version": spec.version, "split": prepared.split_name,
            "captions_per_item": spec.captions_per_item, "preprocessing": self.store.prep.fingerprint(),
            "max_words": self.cfg.data.max_words, "max_audio_segments": self.cfg.data.max_audio_segments,
            "missing_audio": self.cfg.data.missing_audio, "ties": self.cfg.eval.ties, "protocol": self.cfg.protocol,
            "selection_split": self.cfg.eval.selection_split, "modalities": sorted(self.modalities),
            "postprocess": self.cfg.eval.postprocess,
        })

    # -- stages -------------------------------------------------------------------------------------------
    def run(self, stages: tuple[str, ...] = ("pretrain", "finetune")) -> list[RunRecord]:
        """Prepare, build, then the stages asked for, with evaluations before, between and after them."""
        scoring = "finetune" in stages or "evaluate" in stages
        check_tasks(self.cfg, needs_task=scoring, needs_corpus=stages == ("pretrain",))
        if "finetune" in stages:
            self.refuse_a_seen_scored_split()
        with self.progress.stage("prepare data"):
            corpus = [self.prepare(t, t.spec.train_split, policy="zero") for t in self.corpus] \
                if "pretrain" in stages else []
            if "finetune" in stages:
                train_set, selection = self.selection_split()
            if scoring:
                test_set = self.prepare(self.task, self.scored_split())
        model = self.build("finetune", self.cfg.model.init) if scoring else None
        if "evaluate" in stages:  # a checkpoint (model.init) or the CLIP weights, zero-shot
            self.evaluate(model, test_set, "evaluated")
        if "finetune" in stages:
            self.evaluate(model, test_set, "initial")
        if corpus and "audio" not in self.modalities:
            self.progress.say("  no pre-training: its losses pair text and video with audio, which is switched off")
        elif corpus and self.cfg.pretrain.max_steps != 0:
            model = None  # the initial model is scored; pre-training builds its own
            pretrained = self.pretrain(corpus)
            if "finetune" in stages:  # as a sweep's fine-tune run started from the pre-training checkpoint
                model = self.build("finetune", pretrained.state_dict())
                self.evaluate(model, test_set, "pretrained")
        if "finetune" in stages and self.cfg.finetune.max_steps != 0:
            self.finetune(model, train_set, selection)
            self.evaluate(model, test_set, "finetuned")
        return self.records

    def build(self, stage: str, init: str | Path | dict | None) -> CLIP4VLA:
        """The model `stage` trains or scores, seeded by the run's seed, so equal configs give equal models in
        one process and across a sweep's runs; started from `init` (a checkpoint or a state dict) when given."""
        cfg = stage_model_config(self.cfg, stage)
        with self.progress.stage(f"build model {cfg.clip_name} (weights: {cfg.pretrained})"):
            torch.manual_seed(self.cfg.seed)
            model = build_model(cfg).to(self.device)
            if init is not None:
                self.load_init(model, init)
        return model

    def load_init(self, model: CLIP4VLA, source: str | Path | dict) -> None:
        """Start from a CLIP4VLA checkpoint (e.g. pre-training) or state dict; modules it lacks keep their own
        init, and which ones is said (spec §12 item 21c: the cross transformer stays initialised from CLIP text
        layers)."""
        if isinstance(source, dict):
            state, where = source, "the pre-trained model"
        else:
            path = Path(source)
            if path.is_dir():  # a stage's checkpoint folder: its best checkpoint, else its newest
                folder = Checkpointer(path)
                path = folder.best() or folder.latest() or path
            if not path.is_file():
                raise UserError(f"model.init checkpoint not found: {path}")
            state, where = load_checkpoint(path, self.device), path
        missing, unexpected = model.load_state_dict(state.get("model", state), strict=False)
        if unexpected:
            raise UserError(f"model.init {where} does not fit this model: unexpected keys such as {unexpected[0]}")
        kept = sorted({k.split(".")[0] for k in missing})
        self.progress.say(f"  initialised from {where}" + (f"; kept own init for: {', '.join(kept)}" if kept else ""))

    def pretrain(self, corpus: list[Prepared]) -> CLIP4VLA:
        """Pre-train a model built for pre-training (no fusion module, no decoder) and return it."""
        model = self.build("pretrain", self.cfg.model.init)
        pairs = [CaptionPairs(p.split, self.tensors, p.tokens, augment=self.cfg.loss.intra_modal, seed=self.cfg.seed)
                 for p in corpus]
        data = MixedCorpus(pairs, self.cfg.pretrain_mix, self.cfg.pretrain_epoch_size, self.cfg.seed)
        self.train_stage("pretrain", model, data, stage_loss(self.cfg, "pretrain"), self.cfg.pretrain, corpus)
        return model

    def finetune(self, model: CLIP4VLA, data: Prepared, selection: Prepared) -> None:
        """Retrieval: the contrastive fine-tuning loss; captioning: the decoder's token cross-entropy (spec §6.4).
        With finetune.eval_every, the main score on the selection split picks the checkpoint that is kept."""
        pairs = CaptionPairs(data.split, self.tensors, data.tokens, augment=False, seed=self.cfg.seed)
        spec, main = data.task.spec, self.main_score()

        def select() -> float:
            return self.kind.selection_score(self.scoring, model, selection, self.out / "runs" / "selection", main)

        self.train_stage(f"finetune/{spec.name}", model, pairs, stage_loss(self.cfg, "finetune", self.kind,
                                                                            self.modalities),
                         self.cfg.finetune, [data], select=select if self.cfg.finetune.eval_every else None,
                         tags={"selection_split": selection.split_name})

    def train_stage(self, name: str, model: CLIP4VLA, pairs, loss, train_cfg, data: list[Prepared], select=None,
                    tags: dict | None = None) -> None:
        """Train `model` on `pairs` (built from `data`) as one nested run: per-step metrics, checkpoints, record."""
        task = "+".join(p.task.spec.name for p in data)
        stage = name.split("/")[0]
        tags = {"stage": stage, "task": task, **self.run_tags(data, train_cfg.precision, train_cfg.batch_size),
                **(tags or {})}
        checkpoints = Checkpointer(checkpoint_dir(self.out, name), train_cfg.keep_last,
                                   extra={"config": to_dict(self.cfg), "stage": name,
                                          "preprocessing_fingerprint": self.store.prep.fingerprint()})
        with self.progress.stage(f"{name}: {len(pairs)} caption-clip pairs"), self._run(name, tags) as run:

            def log_step(metrics: dict[str, float], step: int) -> None:
                run.log_metrics(metrics, step)
                if "select/score" in metrics:
                    self.progress.say(f"  {name} step {step}: selection score {metrics['select/score']:.3f}")

            begin = time.perf_counter()
            summary = train(model, loss, pairs, train_cfg, self.cfg.seed, log_step, loader_workers(self.cfg.data),
                            checkpoints=checkpoints, resume=self.resume, select=select,
                            say=lambda line: self.progress.say(f"  {name} {line}"),
                            batches=self.tensors.batches)
            run.log_metrics(summary)
            self.records.append(self.record(name, tags, summary, {"pairs": len(pairs)}, None, begin,
                                            {"checkpoints": str(checkpoints.dir)}))

    def evaluate(self, model: CLIP4VLA, data: Prepared, label: str) -> None:
        """Score `data` (retrieval: every direction with intervals and per-query records; captioning: generated
        captions scored with pycocoevalcap) and record it as a nested run and runs/<label>/results.json."""
        spec = data.task.spec
        name = f"evaluate/{label}"
        tags = {"stage": "evaluate", "task": spec.name, "label": label, "main_score": self.main_score(),
                **{f"count.{k}": v for k, v in data.split.counts.items()},
                **self.run_tags([data], self.cfg.finetune.precision, self.cfg.eval.batch_size)}
        folder = self.out / "runs" / label
        with self.progress.stage(f"{name} on {spec.name}/{data.split_name}"), self._run(name, tags) as run:
            begin = time.perf_counter()
            metrics, extra, artifact = self.kind.score(self.scoring, model, data, folder)
            run.log_metrics(metrics)
            record = self.record(name, tags, metrics, data.split.counts, self.main_score(), begin,
                                 {"chance_R1": 100.0 / max(len(data.split.clips), 1),
                                  "selection_split": self.cfg.eval.selection_split, **extra})
            if self.rank == 0:
                run.log_artifact(artifact)
                run.log_artifact(record.save(folder / "results.json"))
            self.records.append(record)
            self.progress.say(f"  {label}: " + ", ".join(f"{k} {metrics[k]:.1f}"
                                                         for k in self.kind.headline(self.directions)))

    def main_score(self) -> str:
        return self.kind.main_score(self.task.spec, self.directions)

    @contextmanager
    def _run(self, name: str, tags: dict) -> Iterator[TrackedRun | NullRun]:
        """A nested MLflow run with the flattened config as params, on rank 0; elsewhere one that records nothing."""
        if self.rank != 0 or self.tracker is None:
            yield NullRun()
            return
        with self.tracker.run(name, self.parent, tags, RunLedger(self.out), self.resume) as run:
            run.log_params(flatten(to_dict(self.cfg)))
            yield run

    def record(self, name: str, tags: dict, metrics: dict[str, float], counts: dict[str, int],
               main_score: str | None, begin: float, extra: dict) -> RunRecord:
        """The run record of a nested run: each thing its tags say goes to its one place in the record (fields,
        environment, counts); the rest of the tags (data manifest, precision, batch, variant, sweep) to extra."""
        stored = {"stage", "task", "task_version", "split", "protocol", "seed", "protocol_fingerprint",
                  *self.environment}
        rest = {k: v for k, v in tags.items()
                if k not in stored and not k.startswith(("version.", "count.", "mlflow."))}
        return RunRecord(
            name=name, stage=tags["stage"], task=tags["task"], task_version=tags["task_version"], split=tags["split"],
            metrics=metrics, main_score=main_score, counts=counts, protocol=self.cfg.protocol,
            protocol_fingerprint=tags["protocol_fingerprint"], seed=self.cfg.seed, config=to_dict(self.cfg),
            environment=self.environment, wall_seconds=time.perf_counter() - begin, extra={**rest, **extra})

    def run_tags(self, data: list[Prepared], precision: str, global_batch: int) -> dict[str, object]:
        """What every nested run is tagged with (architecture.md "Run record"): the data it saw (split, protocol
        fingerprint, manifest hash), how it ran (precision, global batch, device, world size) and from what code
        (git, package versions), plus the sweep's variant and plan entry."""
        env = self.environment
        return {
            "task_version": joined(p.task.spec.version for p in data), "split": joined(p.split_name for p in data),
            "protocol": self.cfg.protocol, "seed": self.cfg.seed,
            "protocol_fingerprint": joined(self.protocol_fingerprint(p) for p in data),
            "data_manifest": joined(p.split.manifest_hash() for p in data),
            "config_fingerprint": fingerprint(to_dict(self.cfg)),
            "precision": precision, "global_batch": global_batch, "device": env["device"],
            "world_size": env["world_size"], "git_sha": env["git_sha"], "git_dirty": env["git_dirty"],
            **commit_tag(env["git_sha"]),
            **{f"version.{name}": v for name, v in env["packages"].items()}, **self.tags,
        }


def reproduce(cfg: RunConfig, out: Path, name: str, progress: Progress,
              stages: tuple[str, ...] = ("pretrain", "finetune"), resume: bool = False, tracker: Tracker | None = None,
              parent: TrackedRun | None = None, tags: dict[str, object] | None = None,
              reports: Reports | None = None) -> Path | None:
    """Run `stages` under one MLflow run called `name` (nested under `parent` when a sweep runs it); with
    `reports`, write out/report.md and return its path. Without a tracker, opens the configured store (rank 0
    only)."""
    if int(os.environ.get("RANK", "0")) != 0:  # torchrun: only rank 0 tracks and reports
        Reproduction(cfg, out, None, None, progress, resume, tags).run(stages)
        return None
    own_tracker = tracker is None
    if own_tracker:
        with progress.stage("open the MLflow store"):
            tracker = Tracker(default_uri(out, cfg.tracking.uri), cfg.tracking.experiment, out / "mlartifacts")
    # role: this run stands for the whole invocation; a sweep counts a key as done only by such a run
    run_tags = {"suite": name, "protocol": cfg.protocol, **(tags or {}), "role": "plan-run",
                **commit_tag(git_state()["git_sha"])}
    with tracker.run(name, parent, run_tags, RunLedger(out), resume) as run:
        out.mkdir(parents=True, exist_ok=True)
        config = out / "config.yaml"  # the resolved config: `--config` of any verb reruns exactly this
        config.write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
        run.log_artifact(config)
        run.log_params(flatten(to_dict(cfg)))
        records = Reproduction(cfg, out, tracker, run, progress, resume, tags).run(stages)
        run.log_metrics(plan_scores(records))
        report = reports.run(records, out / "report.md", f"clip4vla {name} report") if reports else None
        if report:
            run.log_artifact(report)
    if own_tracker:
        if report:
            progress.say(f"report: {report}")
        say_where(tracker, out, progress)
    return report


def commit_tag(sha: str) -> dict[str, str]:
    """MLflow's source-commit tag (the UI's "source" column), none outside a git checkout."""
    return {} if sha == "unknown" else {"mlflow.source.git.commit": sha}


def plan_scores(records: list[RunRecord]) -> dict[str, float]:
    """Each evaluation's main score and R@1 per direction (captioning: every caption metric) on the plan run
    itself, as `<point>/main` and `<point>/<metric>` (e.g. `finetuned/main`, `finetuned/t2va/R1`): the MLflow UI
    charts and compares a suite's variants from their plan runs (issue 15)."""
    out = {}
    for record in records:
        if record.stage != "evaluate":
            continue
        point = record.name.split("/", 1)[1]
        out.update({f"{point}/{k}": v for k, v in record.metrics.items() if k.endswith("/R1") or "/" not in k})
        if record.main_score in record.metrics:
            out[f"{point}/main"] = record.metrics[record.main_score]
    return out


def say_where(tracker: Tracker, out: Path, progress: Progress) -> None:
    """Where the results are: the MLflow store, or only the local folder when it could not be reached."""
    if tracker.offline:
        progress.say(f"MLflow: {tracker.uri} was not reachable; the results above are in {out / 'runs'}")
    else:
        progress.say(f"MLflow: mlflow ui --backend-store-uri {tracker.uri}")
