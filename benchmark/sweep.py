"""Suites: a YAML plan of steps x variants x seeds, expanded into runs that a tracking store can tell apart.

A suite file (configs/paper.yaml, ablations.yaml, smoke.yaml) holds:

    suite: NAME                 # the MLflow experiment is clip4vla-NAME unless base.tracking.experiment says
    seeds: [0, 1, 2]            # paired across variants: seed k of every variant starts from the same draw
    base: {RunConfig keys}      # applied to every run
    variants:                   # the first one is the reference of the ablation table
      full: {}
      no_intra: {overrides: {loss.intra_modal: false}}
      no_audio: {overrides: {modalities: [text, video]}, skip: [pretrain-stage1]}
    plan:                       # in order; `init` names an earlier step whose checkpoint this one starts from
      - {name: pretrain-stage1, stage: pretrain, seeds: shared, config: {...}}
      - {name: my_task, stage: finetune, init: pretrain-stage1, config: {task: my_task}}
    estimate: {seconds_per_sample: 0.072, unit: GPU}   # for --dry-run's time estimate
    launcher: {partition: gpu, gpus: 4, cpus: 32, time: "24:00:00"}   # each job of --launcher slurm / local

`extends: other.yaml` takes what the file does not say from another suite (base merged key by key) and
`steps: [...]` keeps part of its plan; top-level keys starting with `x-` only hold YAML anchors.

Every (step, variant, seed) resolves to a RunConfig. Its key is a hash of what the stage actually uses (a
fine-tune ignores pre-training settings, a pre-training run ignores the fine-tuning recipe), of the key of
the run it starts from, and of its seed, so variants that agree on a step share one run (e.g. the type-mix
variants share the full model's pre-training). A run is done when the store holds a FINISHED run with its key:
running the suite again, on this machine or another one logging to the same MLflow server, skips it.
"""

from __future__ import annotations

import copy
import dataclasses
import shlex
from contextlib import ExitStack, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmark import distributed
from benchmark.config import RunConfig, TrackingConfig, load_config, merge, read_yaml
from benchmark.errors import UserError
from benchmark.launchers import RESOURCE_KEYS, Job, Resources, check_launcher, launch, read_resources
from benchmark.output_lock import hold_folder
from benchmark.pipeline import Progress, Reports, check_tasks, reproduce, resolve_device, say_where, started_at
from benchmark.records import fingerprint
from benchmark.registry import closest, load_tasks
from benchmark.stage_config import result_slice
from benchmark.tracking import RunLedger, Tracker, default_uri
from benchmark.train import checkpoint_dir

STAGES = ("pretrain", "finetune", "evaluate")
SUITE_KEYS = ("suite", "seeds", "base", "variants", "plan", "steps", "estimate", "launcher")
STEP_KEYS = ("name", "stage", "init", "seeds", "config")
VARIANT_KEYS = ("overrides", "skip")

@dataclass(frozen=True)
class Step:
    name: str
    stage: str
    config: dict[str, Any]
    init: str | None = None
    shared_seed: bool = False  # `seeds: shared`: one run (the first seed) that every seed's later steps start from


@dataclass(frozen=True)
class Variant:
    name: str
    overrides: dict[str, Any]
    skip: tuple[str, ...] = ()  # steps this variant leaves out; its later steps start from what those started from


@dataclass
class Suite:
    name: str
    path: Path
    seeds: list[int]
    base: dict[str, Any]
    variants: list[Variant]
    steps: list[Step]
    seconds_per_sample: float  # training cost per (caption, clip) pair, for --dry-run's time estimate
    estimate_unit: str
    resources: Resources  # what each job of --launcher asks for, before the command line's flags

    @property
    def reference(self) -> str:
        return self.variants[0].name


@dataclass
class PlannedRun:
    key: str
    step: Step
    seed: int
    config: RunConfig  # without model.init: where the checkpoint lives is decided when the run starts
    variants: list[str] = field(default_factory=list)
    init: PlannedRun | None = None

    @property
    def label(self) -> str:
        return f"{self.step.name}/{','.join(self.variants)}/seed{self.seed}"

    @property
    def folder(self) -> str:
        return f"{self.step.name}-{self.key[:10]}"

    def checkpoints(self, out: Path) -> Path:
        """The checkpoint folder a later step starts from (its best checkpoint, else its newest)."""
        stage = self.step.stage if self.step.stage == "pretrain" else f"finetune/{self.config.task}"
        return checkpoint_dir(out / "runs" / self.folder, stage)

    def tags(self, suite: Suite) -> dict[str, str]:
        """Tags of the run and of every run nested in it (stage and task tags stay the nested runs' own)."""
        return {"suite": suite.name, "sweep.key": self.key, "sweep.step": self.step.name,
                "sweep.stage": self.step.stage, "sweep.task": self.config.task or "",
                "sweep.init": self.init.key if self.init else "", "variant": ",".join(self.variants)}


def nested(mapping: dict[str, Any], where: str) -> dict[str, Any]:
    """Accept both nested mappings and dotted keys ({"loss.intra_modal": false}); return a nested mapping."""
    if not isinstance(mapping, dict):
        raise UserError(f"{where} must be a mapping of config keys, got {mapping!r}")
    out: dict[str, Any] = {}
    for key, value in mapping.items():
        node, parts = out, str(key).split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = nested(value, where) if isinstance(value, dict) else value
    return out


def _check_keys(data: dict[str, Any], allowed: tuple[str, ...], where: str) -> None:
    for key in data:
        if key not in allowed:
            raise UserError(f"{where}: unknown key '{key}'{closest(str(key), list(allowed))} "
                            f"(allowed: {', '.join(allowed)})")


def load_suite(path: Path) -> Suite:
    """Read and check a suite YAML; every mistake is a one-line error naming the file and the key."""
    data = read_suite_yaml(path)
    _check_keys(data, SUITE_KEYS, str(path))
    for required in ("suite", "plan"):
        if required not in data:
            raise UserError(f"{path}: missing '{required}'")
    seeds = data.get("seeds", [0])
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) for s in seeds):
        raise UserError(f"{path}: seeds must be a non-empty list of integers, got {seeds!r}")
    variants = []
    declared = data.get("variants") or {"full": {}}
    if not isinstance(declared, dict):
        raise UserError(f"{path}: variants must be a mapping of name -> {{overrides: ..., skip: [...]}}")
    for name, spec in declared.items():
        spec = spec or {}
        if not isinstance(spec, dict):
            raise UserError(f"{path}: variant '{name}' must be a mapping with 'overrides' and/or 'skip'")
        _check_keys(spec, VARIANT_KEYS, f"{path}: variant '{name}'")
        variants.append(Variant(str(name), nested(spec.get("overrides") or {}, f"{path}: variant '{name}'"),
                                tuple(_names(spec.get("skip"), f"{path}: variant '{name}': skip"))))
    steps: list[Step] = []
    for i, raw in enumerate(data["plan"] if isinstance(data["plan"], list) else []):
        where = f"{path}: plan entry {i + 1}"
        if not isinstance(raw, dict):
            raise UserError(f"{where} must be a mapping")
        _check_keys(raw, STEP_KEYS, where)
        if raw.get("stage") not in STAGES:
            raise UserError(f"{where}: stage must be one of {', '.join(STAGES)}, got {raw.get('stage')!r}")
        name = str(raw.get("name") or raw["stage"])
        if any(s.name == name for s in steps):
            raise UserError(f"{where}: step name '{name}' is used twice")
        init = raw.get("init")
        if init is not None and not any(s.name == init for s in steps):
            raise UserError(f"{where}: init '{init}' is not an earlier step"
                            f"{closest(str(init), [s.name for s in steps])}")
        if raw.get("seeds", "each") not in ("each", "shared"):
            raise UserError(f"{where}: seeds must be 'each' or 'shared', got {raw.get('seeds')!r}")
        steps.append(Step(name, raw["stage"], nested(raw.get("config") or {}, where), init,
                          raw.get("seeds") == "shared"))
    if "steps" in data:  # a subset of the plan (e.g. an ablation suite that extends the paper's)
        kept = _names(data["steps"], f"{path}: steps")
        steps = [s for s in steps if s.name in kept]
        for name in kept:
            if not any(s.name == name for s in steps):
                raise UserError(f"{path}: steps: '{name}' is not in the plan")
        for step in steps:
            if step.init and step.init not in kept:
                raise UserError(f"{path}: steps: '{step.name}' starts from '{step.init}', which is left out")
    if not steps:
        raise UserError(f"{path}: the plan is empty")
    for variant in variants:
        for skipped in variant.skip:
            if not any(s.name == skipped for s in steps):
                raise UserError(f"{path}: variant '{variant.name}' skips unknown step '{skipped}'")
    estimate = data.get("estimate") or {}
    _check_keys(estimate if isinstance(estimate, dict) else {"?": 0}, ("seconds_per_sample", "unit"),
                f"{path}: estimate")
    seconds = estimate.get("seconds_per_sample", 0.072)
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds <= 0:
        raise UserError(f"{path}: estimate.seconds_per_sample must be a positive number, got {seconds!r}")
    launcher = data.get("launcher") or {}
    if not isinstance(launcher, dict):
        raise UserError(f"{path}: launcher must be a mapping of {', '.join(RESOURCE_KEYS)}, got {launcher!r}")
    _check_keys(launcher, RESOURCE_KEYS, f"{path}: launcher")
    resources = Resources(**read_resources(launcher, lambda key: f"{path}: launcher.{key}"))
    return Suite(str(data["suite"]), path, seeds, nested(data.get("base") or {}, f"{path}: base"), variants, steps,
                 float(seconds), str(estimate.get("unit", "GPU")), resources)


def _names(value: Any, where: str) -> list[str]:
    """A YAML list of step names (a bare string is a mistake, not a list of its letters)."""
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise UserError(f"{where} must be a list of step names, got {value!r}")
    return value


def read_suite_yaml(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The suite mapping; `extends: OTHER.yaml` (next to it) supplies what this file does not say, with `base`
    merged key by key. Top-level keys starting with x- only hold YAML anchors and are dropped."""
    if path.resolve() in seen:
        raise UserError(f"{path}: 'extends' goes round in a circle ({' -> '.join(p.name for p in seen)})")
    data = {k: v for k, v in read_yaml(path).items() if not str(k).startswith("x-")}
    parent = data.pop("extends", None)
    if parent is None:
        return data
    inherited = read_suite_yaml(path.parent / str(parent), (*seen, path.resolve()))
    base = nested(inherited.get("base") or {}, f"{parent}: base")
    merge(base, nested(data.get("base") or {}, f"{path}: base"))
    return {**inherited, **data, "base": base}


def run_key(step: Step, cfg: RunConfig, init: PlannedRun | None) -> str:
    """Hash of what this stage receives from the config that can change its results (stage_config.py), and of
    the run it starts from (whose key stands for model.init, which the sweep sets to that run's checkpoint
    folder)."""
    used = result_slice(cfg, step.stage, ("model.init",) if init else ())
    return fingerprint({"stage": step.stage, "config": used, "init": init.key if init else None})


def expand(suite: Suite, overrides: list[str] = ()) -> list[PlannedRun]:
    """Every (step, variant, seed) of the suite as runs in plan order, sharing a run where the keys agree.
    `overrides` (KEY=VALUE, e.g. data.root=/data) apply to every run, after the suite's own settings."""
    if any(text.split("=", 1)[0].strip() == "seed" for text in overrides):
        raise UserError(f"seed=... cannot override a suite: its seeds are the `seeds:` list of {suite.path}")
    runs: dict[str, PlannedRun] = {}
    for variant in suite.variants:
        for seed in suite.seeds:
            made: dict[str, PlannedRun | None] = {}  # step name -> its run for this (variant, seed)
            for step in suite.steps:
                init = made.get(step.init) if step.init else None
                if step.name in variant.skip:
                    made[step.name] = init  # later steps start from what the skipped step would have
                    continue
                run_seed = suite.seeds[0] if step.shared_seed else seed
                data: dict[str, Any] = {}
                for layer in (suite.base, step.config, variant.overrides):
                    merge(data, copy.deepcopy(layer))  # never alias the suite's own mappings
                try:  # unknown or missing tasks and corpora fail here, before any run starts
                    cfg = load_config(data, [f"seed={run_seed}", *overrides])
                    check_tasks(cfg, needs_task=step.stage != "pretrain", needs_corpus=step.stage == "pretrain")
                except UserError as exc:
                    raise UserError(f"{suite.path}: step '{step.name}': {exc}") from None
                key = run_key(step, cfg, init)
                run = runs.setdefault(key, PlannedRun(key, step, run_seed, cfg, init=init))
                if variant.name not in run.variants:
                    run.variants.append(variant.name)
                made[step.name] = run
    if not runs:
        raise UserError(f"{suite.path}: no runs: every variant skips every step")
    return list(runs.values())


def train_samples(run: PlannedRun) -> int | None:
    """(caption, clip) pairs the run trains on: max_steps x batch, else epochs x the task's nominal epoch."""
    cfg = run.config
    if run.step.stage == "evaluate":
        return 0
    recipe = cfg.pretrain if run.step.stage == "pretrain" else cfg.finetune
    if recipe.max_steps is not None:
        return recipe.max_steps * recipe.batch_size
    tasks = load_tasks()
    if run.step.stage == "pretrain":
        if cfg.pretrain_epoch_size:
            return recipe.epochs * cfg.pretrain_epoch_size
        sizes = [tasks.get(name).spec.train_pairs for name in cfg.pretrain_corpus]
        return None if None in sizes else recipe.epochs * sum(sizes)
    pairs = tasks.get(cfg.task).spec.train_pairs
    return None if pairs is None else recipe.epochs * pairs


def describe(suite: Suite, runs: list[PlannedRun], finished: set[str]) -> str:
    """The plan as a table: what runs, what it starts from, whether the store has it, what it costs."""
    lines = [f"suite {suite.name} ({suite.path}): {len(runs)} runs ({_n(suite.steps, 'step')} x "
             f"{_n(suite.variants, 'variant')} x {_n(suite.seeds, 'seed')}, shared runs counted once); "
             f"{sum(r.key in finished for r in runs)} already finished in the store"]
    header = f"{'key':<10}  {'status':<8}  {'stage':<8}  {'step':<28}  {'variants':<34}  {'seed':>4}  " \
             f"{'starts from':<10}  {'train samples':>13}  {'est. ' + suite.estimate_unit + ' time':>14}"
    lines += [header, "-" * len(header)]
    total, unknown = 0.0, 0
    for run in runs:
        samples = train_samples(run)
        hours = None if samples is None else samples * suite.seconds_per_sample / 3600
        if run.key not in finished:
            if hours is None:
                unknown += 1
            else:
                total += hours
        lines.append(
            f"{run.key[:10]:<10}  {'done' if run.key in finished else 'to run':<8}  {run.step.stage:<8}  "
            f"{run.step.name:<28}  {','.join(run.variants)[:34]:<34}  {run.seed:>4}  "
            f"{(run.init.key[:10] if run.init else '-'):<10}  {_count(samples):>13}  {_hours(hours):>14}")
    lines.append(f"estimated time to finish: {_hours(total)} of {suite.estimate_unit} time for training "
                 f"at {suite.seconds_per_sample:g} {suite.estimate_unit}-seconds per training sample"
                 + (f"; {unknown} runs have no nominal size (set pretrain_epoch_size)" if unknown else "")
                 + "; evaluation not included")
    return "\n".join(lines)


def _n(items: list, word: str) -> str:
    return f"{len(items)} {word}{'' if len(items) == 1 else 's'}"


def _count(n: int | None) -> str:
    return "?" if n is None else f"{n:,}"


def _hours(h: float | None) -> str:
    """Hours as '1,234.5 h', '12.0 min' or '40 s'."""
    if h is None:
        return "?"
    return f"{h:,.1f} h" if h >= 1 else f"{h * 60:.1f} min" if h * 60 >= 1 else f"{h * 3600:.0f} s"


def emit(suite: Suite, runs: list[PlannedRun], finished: set[str], out: Path, overrides: list[str]) -> str:
    """One shell command per unfinished run, in plan order; a run's `# after` line names the run it starts
    from, which a scheduler must finish first (the command refuses to start before that)."""
    lines = []
    for run in runs:
        if run.key in finished:
            continue
        after = f"; after {run.init.key[:10]}" if run.init and run.init.key not in finished else ""
        lines.append(f"# {run.label}{after}")
        lines.append(shlex.join(run_command(suite, run, out, overrides)))
    return "\n".join(lines)


def run_command(suite: Suite, run: PlannedRun, out: Path, overrides: list[str]) -> list[str]:
    """The command that runs one planned run (what --emit prints and --launcher submits)."""
    return ["clip4vla", "sweep", str(suite.path.resolve()), "--out", str(out.resolve()), "--only", run.key[:10],
            *overrides]


def report_command(suite: Suite, runs: list[PlannedRun], out: Path) -> list[str]:
    """The command that writes the suite's report once its runs finished (`--only` runs leave it to this)."""
    uri = runs[0].config.tracking.uri  # the report resolves the store as the runs do: this, else the environment
    return ["clip4vla", "report", "--out", str(out.resolve()), "--experiment", experiment_of(suite, runs),
            "--reference", suite.reference, "--title", report_title(suite), *(["--tracking-uri", uri] if uri else [])]


def report_title(suite: Suite) -> str:
    return f"clip4vla {suite.name}: reproduction report"


def select(runs: list[PlannedRun], only: str) -> PlannedRun:
    matches = [r for r in runs if r.key.startswith(only)]
    if len(matches) != 1:
        found = "no run of this suite has" if not matches else f"{len(matches)} runs of this suite have"
        raise UserError(f"--only {only}: {found} that key (see --dry-run)")
    return matches[0]


def with_init(run: PlannedRun, out: Path, finished: set[str]) -> RunConfig:
    """The run's config with model.init pointing at the checkpoint of the run it starts from."""
    if run.init is None:
        return run.config
    if run.init.key not in finished:
        raise UserError(f"run {run.label} starts from {run.init.label} (key {run.init.key[:10]}), "
                        "which has not finished yet: run that one first")
    folder = run.init.checkpoints(out)
    if not folder.is_dir():
        raise UserError(f"run {run.label} starts from {folder}, which is not on this machine: the run finished "
                        "elsewhere; give every machine the same --out on shared storage")
    return dataclasses.replace(run.config, model=dataclasses.replace(run.config.model, init=str(folder)))


def experiment_of(suite: Suite, runs: list[PlannedRun]) -> str:
    """The suite's MLflow experiment: tracking.experiment when the suite or an override sets it, else
    clip4vla-<suite>."""
    configured = runs[0].config.tracking.experiment
    return configured if configured != TrackingConfig().experiment else f"clip4vla-{suite.name}"


def finished_keys(tracker: Tracker) -> dict[str, dict[str, Any]]:
    """Runs of the suite that the store holds as FINISHED, by key (the newest when a key finished twice)."""
    done: dict[str, dict[str, Any]] = {}
    for run in tracker.search(finished_only=True):
        key = run["tags"].get("sweep.key")
        if key and run["tags"].get("role") == "plan-run" and key not in done:  # newest first
            done[key] = run
    return done


def look_up_finished(uri: str, experiment: str) -> set[str]:
    """Keys finished in a store, read without creating the store or the experiment (--dry-run, --emit)."""
    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///"):]).exists():
        return set()
    try:
        return set(finished_keys(Tracker(uri, experiment, create=False)))
    except UserError:  # no such experiment yet: nothing has run
        return set()


def run_sweep(path: Path, out: Path, overrides: list[str], progress: Progress, only: str | None = None,
              dry_run: bool = False, emit_commands: bool = False, launcher: str | None = None,
              resource_flags: dict[str, str] | None = None, reports: Reports | None = None) -> Path | None:
    """Run the suite's plan into `out` (skipping runs the store holds as finished), then write the comparison
    report there. --dry-run prints the plan; --emit prints one command per unfinished run; --only runs one run
    and leaves the report to `clip4vla report` (parallel jobs would race on it); --launcher runs each unfinished
    run as a job (`launch_sweep`), with the resources of the suite's `launcher:` section and `resource_flags`.

    Under torchrun every rank walks the same plan: rank 0 reads the store and tells the others what is done,
    and only rank 0 logs, writes records and the report, and holds the output folder's lock."""
    if resource_flags and not launcher:
        raise UserError(f"--{', --'.join(resource_flags)}: these set what --launcher's jobs ask for; give --launcher "
                        "local or slurm")
    if launcher and (only or dry_run or emit_commands):
        raise UserError("--launcher runs the whole plan as jobs: leave out --only, --dry-run and --emit")
    flags = read_resources(resource_flags or {}, lambda key: f"--{key}")
    suite = load_suite(path)
    resources = dataclasses.replace(suite.resources, **flags)
    if launcher:
        check_launcher(launcher, resources)
    runs = expand(suite, overrides)
    todo = [select(runs, only)] if only else runs
    out = out.resolve()
    uri, experiment = default_uri(out, runs[0].config.tracking.uri), experiment_of(suite, runs)
    if launcher:
        launch_sweep(suite, runs, out, overrides, uri, experiment, launcher, resources, progress)
        return None
    if dry_run or emit_commands:
        done = look_up_finished(uri, experiment)
        print(describe(suite, runs, done) if dry_run else emit(suite, runs, done, out, overrides))
        return None
    distributed.setup(resolve_device(runs[0].config.device))
    with ExitStack() as locks:
        if distributed.rank() == 0:  # one writer per folder; `--only` jobs share it, each with its own run folder
            locks.enter_context(hold_folder(out, shared=only is not None))
            if only:  # taken before the store is opened: a second job on this key stops at once
                locks.enter_context(hold_folder(out / "runs" / todo[0].folder))
        return run_plan(suite, path, todo, out, uri, experiment, progress, report=only is None, reports=reports)


def launch_sweep(suite: Suite, runs: list[PlannedRun], out: Path, overrides: list[str], uri: str, experiment: str,
                 launcher: str, resources: Resources, progress: Progress) -> None:
    """Each unfinished run as a job (the command --emit prints) that waits for the job of the run it starts from,
    then a job that waits for all of them and writes the report; nothing when every run finished."""
    with hold_folder(out, shared=True):  # next to its `--only` jobs; never next to a sweep that runs the plan
        # made here, once: jobs that start together would race on creating the store and the experiment
        tracker = Tracker(uri, experiment, out / "mlartifacts")
        finished = finished_keys(tracker)
        jobs: dict[str, Job] = {}
        for run in runs:
            if run.key in finished:
                tag_variants(tracker, finished[run.key], run)
                continue
            after = (jobs[run.init.key],) if run.init and run.init.key in jobs else ()  # a finished one: no wait
            jobs[run.key] = Job(f"{suite.name}:{run.step.name}:{run.key[:10]}", run_command(suite, run, out, overrides),
                                after)
        if not jobs:
            progress.say(f"suite {suite.name}: all {len(runs)} runs finished in the store; nothing to submit (the "
                         f"report: {shlex.join(report_command(suite, runs, out))})")
            return
        progress.say(f"suite {suite.name}: {len(jobs)} of {len(runs)} runs to run, as {launcher} jobs; MLflow {uri}, "
                     f"experiment {experiment}")
        report = Job(f"{suite.name}:report", report_command(suite, runs, out), tuple(jobs.values()), uses_gpus=False,
                     queued_once=False)
        launch(launcher, [*jobs.values(), report], resources, out / "jobs", progress.say)


def tag_variants(tracker: Tracker, finished: dict[str, Any], run: PlannedRun) -> None:
    """Add the run's variants to the `variant` tag of the finished run with its key: a new variant may share it,
    and the report must know."""
    old = finished["tags"].get("variant", "")
    tracker.set_tags(finished["run_id"], {"variant": ",".join(sorted({*old.split(","), *run.variants} - {""}))})


def run_plan(suite: Suite, path: Path, todo: list[PlannedRun], out: Path, uri: str, experiment: str,
             progress: Progress, report: bool, reports: Reports | None) -> Path | None:
    """The body of `run_sweep`, with the output folder held: each unfinished run (with its report.md, given
    `reports`), then, when `report` and given `reports`, the comparison report."""
    tracker = None
    if distributed.rank() == 0:
        out.mkdir(parents=True, exist_ok=True)
        tracker = Tracker(uri, experiment, out / "mlartifacts")
    finished = distributed.gather_objects(finished_keys(tracker) if tracker else None)[0]
    progress.say(f"suite {suite.name}: {len(todo)} runs, {sum(r.key in finished for r in todo)} already finished; "
                 f"MLflow {uri}, experiment {experiment}")
    # the sweep's own run continues an interrupted sweep's; `--only` jobs each open one (they share the folder)
    sweep_run = tracker.run(f"sweep {suite.name}", tags={"suite": suite.name, "sweep.file": str(path.resolve())},
                            ledger=RunLedger(out) if report else None, resume=True,
                            display=f"sweep {suite.name} {started_at()}") if tracker else nullcontext(None)
    with sweep_run as parent:
        for i, run in enumerate(todo, 1):
            if run.key in finished:
                if tracker:
                    tag_variants(tracker, finished[run.key], run)
                progress.say(f"[{i}/{len(todo)}] {run.label}: finished earlier, skipped")
                continue
            cfg = with_init(run, out, set(finished))
            folder = out / "runs" / run.folder  # held too: a `clip4vla run` into it would write the same files
            with progress.stage(f"[{i}/{len(todo)}] {run.label} (key {run.key[:10]})"), \
                    hold_folder(folder) if tracker else nullcontext():
                reproduce(cfg, folder, run.label, progress, (run.step.stage,), resume=True, tracker=tracker,
                          parent=parent, tags=run.tags(suite), reports=reports)
            finished[run.key] = {"tags": run.tags(suite)}
        if tracker is None or not report or reports is None:
            return None
        paths = reports.suite(tracker, out, report_title(suite), suite.reference)
        for written in paths.values():
            parent.log_artifact(written)
        for plot in sorted((out / "plots").glob("*.png")):
            parent.log_artifact(plot, "plots")
    progress.say(f"report: {', '.join(str(p) for p in paths.values())}")
    say_where(tracker, out, progress)
    return paths["md"]
