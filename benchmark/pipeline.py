"""The reproduction path: prepare data, pre-train, fine-tune and evaluate one task, each stage a nested MLflow run.

`clip4vla smoke` runs exactly this on generated data with a tiny model; a real reproduction runs it with real
data and CLIP weights. Evaluations happen at three points so every report shows the learning signal: the
initial model (CLIP zero-shot, or chance for random weights), after pre-training, and after fine-tuning. The
stages themselves are the functions of stages.py; this module composes them and opens what they share.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml

from benchmark import distributed
from benchmark.config import RunConfig, flatten, to_dict
from benchmark.errors import UserError
from benchmark.media.decode import Preprocessing
from benchmark.media.store import MediaStore
from benchmark.progress import Progress
from benchmark.records import RunRecord, git_state, hardware, invocation, package_versions
from benchmark.registry import load_tasks
from benchmark.stage_config import stage_config
from benchmark.stages import (
    Session,
    StageInputs,
    build,
    commit_tag,
    evaluate,
    finetune,
    prepare,
    pretrain,
    refuse_a_seen_scored_split,
    selection_split,
)
from benchmark.task_kinds import kind_of
from benchmark.tracking import RunLedger, TrackedRun, Tracker, default_uri, runs_page


@dataclass(frozen=True)
class Reports:
    """How run records become reports, handed in by what composes this library with reports/ (the CLI,
    `cli.report_writers`): the pipeline and the sweep never import reports/, which reads their records and the
    tracking store (issue 14 item 3). `run(records, path, title)` writes one run's report.md;
    `suite(tracker, out, title, reference)` a sweep's comparison report, returning its files by format."""

    run: Callable[[list[RunRecord], Path, str], Path]
    suite: Callable[[Tracker, Path, str, str | None], dict[str, Path]]


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


def open_session(cfg: RunConfig, out: Path, tracker: Tracker | None, parent: TrackedRun | None,
                 progress: Progress, resume: bool = False, tags: dict[str, object] | None = None) -> Session:
    """What the stages of one invocation share: the device (CUDA: TF32 matmuls and convolutions; bf16 runs
    unchanged), the media store, the environment every record carries, the tracker and the parent run."""
    if not cfg.data.root:
        raise UserError("data.root is not set: point it at the folder holding the dataset folders")
    device = distributed.setup(resolve_device(cfg.device))
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    accelerator = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    environment = {**git_state(), "packages": package_versions(), "device": str(device),
                   "world_size": distributed.world_size(), "hardware": hardware(accelerator), "command": invocation()}
    return Session(out, tracker, parent, progress, media_store(cfg), device, environment,
                   {"variant": "default", **(tags or {})}, resume)


def run_stages(cfg: RunConfig, stages: tuple[str, ...], session: Session) -> list[RunRecord]:
    """Prepare, build, then the stages asked for, with evaluations before, between and after them; each stage is
    handed its own slice of `cfg` (stage_config.py). Returns the run records, in the order they were made."""
    scoring = "finetune" in stages or "evaluate" in stages
    check_tasks(cfg, needs_task=scoring, needs_corpus=stages == ("pretrain",))
    inputs = {stage: StageInputs.of(stage_config(cfg, stage), session) for stage in stages}
    pre, tune, scored = inputs.get("pretrain"), inputs.get("finetune"), inputs.get("evaluate")
    if tune:
        refuse_a_seen_scored_split(tune)
    scorer = tune or scored  # the stage whose model is scored on the task's scored split
    records: list[RunRecord] = []
    with session.progress.stage("prepare data"):
        corpus = [prepare(pre, t, t.spec.train_split, policy="zero")
                  for t in (load_tasks().get(name)() for name in pre.cfg.pretrain_corpus)] if pre else []
        if tune:
            train_set, selection = selection_split(tune)
        if scorer:
            test_set = prepare(scorer, scorer.task, scorer.scored_split())
    model = build(scorer, scorer.cfg.model.init, scored_as_is=tune is None) if scorer else None
    if scored:  # a checkpoint (model.init) or the CLIP weights, zero-shot
        records.append(evaluate(scored, model, test_set, "evaluated"))
    if tune:
        records.append(evaluate(tune, model, test_set, "initial"))
    if corpus and "audio" not in pre.modalities:
        session.progress.say("  no pre-training: its losses pair text and video with audio, which is switched off")
    elif corpus and pre.cfg.pretrain.max_steps != 0:
        model = None  # the initial model is scored; pre-training builds its own
        pretrained, record = pretrain(pre, corpus)
        records.append(record)
        if tune:  # as a sweep's fine-tune run started from the pre-training checkpoint
            model = build(tune, pretrained.state_dict())
            records.append(evaluate(tune, model, test_set, "pretrained"))
    if tune and tune.cfg.finetune.max_steps != 0:
        records.append(finetune(tune, model, train_set, selection))
        records.append(evaluate(tune, model, test_set, "finetuned"))
    return records


def reproduce(cfg: RunConfig, out: Path, name: str, progress: Progress,
              stages: tuple[str, ...] = ("pretrain", "finetune"), resume: bool = False, tracker: Tracker | None = None,
              parent: TrackedRun | None = None, tags: dict[str, object] | None = None,
              reports: Reports | None = None) -> Path | None:
    """Run `stages` under one MLflow run called `name` (nested under `parent` when a sweep runs it); with
    `reports`, write out/report.md and return its path. Without a tracker, opens the configured store (rank 0
    only)."""
    if int(os.environ.get("RANK", "0")) != 0:  # torchrun: only rank 0 tracks and reports
        run_stages(cfg, stages, open_session(cfg, out, None, None, progress, resume, tags))
        return None
    own_tracker = tracker is None
    if own_tracker:
        with progress.stage("open the MLflow store"):
            tracker = Tracker(default_uri(out, cfg.tracking.uri), cfg.tracking.experiment, out / "mlartifacts")
    # role: this run stands for the whole invocation; a sweep counts a key as done only by such a run
    run_tags = {"suite": name, "protocol": cfg.protocol, **(tags or {}), "role": "plan-run",
                **commit_tag(git_state()["git_sha"])}
    # in the UI: a sweep's plan run by its step, variant and seed; a single-run verb's by what it ran and when
    display = name if parent else " ".join(filter(None, [name, cfg.task, started_at()]))
    with tracker.run(name, parent, run_tags, RunLedger(out), resume, display) as run:
        out.mkdir(parents=True, exist_ok=True)
        config = out / "config.yaml"  # the resolved config: `--config` of any verb reruns exactly this
        config.write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
        run.log_artifact(config)
        run.log_params(flatten(to_dict(cfg)))
        records = run_stages(cfg, stages, open_session(cfg, out, tracker, run, progress, resume, tags))
        run.log_metrics(plan_scores(records))
        report = reports.run(records, out / "report.md", f"clip4vla {name} report") if reports else None
        if report:
            run.log_artifact(report)
    if own_tracker:
        if report:
            progress.say(f"report: {report}")
        say_where(tracker, out, progress)
    return report


def started_at() -> str:
    """When an invocation started, to tell its run apart from the same command's other runs in the UI."""
    return time.strftime("%m-%d %H:%M:%S")


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
    elif tracker.uri.startswith(("http://", "https://")):
        progress.say(f"MLflow: open {runs_page(tracker.uri.rstrip('/'), tracker.experiment_id)}")
    else:
        page = runs_page("http://127.0.0.1:5000", tracker.experiment_id)
        progress.say(f"MLflow: mlflow ui --backend-store-uri {tracker.uri}, then open {page}")

