"""The `clip4vla` command. Every verb exits non-zero with a one-line reason on bad input, no traceback."""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import logging
import math
import os
import sys
from contextlib import nullcontext
from importlib.metadata import PackageNotFoundError, packages_distributions, version
from pathlib import Path

from benchmark.errors import UserError
from benchmark.registry import closest


def cmd_tasks(args: argparse.Namespace) -> int:
    """List the registered tasks and pre-training corpora with their metadata.

    For each: version, dataset and kind; the dataset folder it reads under data.root; its splits (train, val and
    test marked) with the clips each one's annotation files list, counted when --root holds the data (without it
    the sizes are unknown: nothing is guessed); modalities, retrieval directions, captions per test clip, the
    main score (none for a pre-training corpus) and the reference. NAME shows one task; --json prints the same
    as a JSON list.
    """
    from benchmark.registry import load_tasks

    registry = load_tasks()
    infos = [task_info(name, Path(args.root) if args.root else None) for name in ([args.name] if args.name else
                                                                                   registry)]
    if args.json:
        print(json.dumps(infos, indent=2))
        return 0
    for info in infos:
        print(f"{info['name']}  v{info['version']}  {info['dataset']} {info['kind']}")
        print(f"    dataset folder: {info['data_folder'] or 'DATA_ROOT/' + info['data_dir']}")
        print(f"    splits: {'; '.join(split_line(info, split) for split in info['splits'])}")
        print(f"    modalities: {', '.join(info['modalities'])}; directions: {', '.join(info['directions']) or 'none'}")
        main = info["main_score"] or "none (pre-training corpus)"
        print(f"    captions per test item: {info['captions_per_item']}; main score: {main}")
        print(f"    reference: {info['reference']}")
    return 0


def task_info(name: str, root: Path | None) -> dict:
    """A task's metadata (its TaskSpec) with its dataset folder under `root`, the clips each split lists there
    (`split_clips`; null, with the reason in `split_clips_unknown`, when they cannot be counted) and the main
    score its evaluation reports (null for a pre-training corpus, which is never scored)."""
    from benchmark.registry import load_tasks
    from benchmark.task_kinds import kind_of

    task = load_tasks().get(name)()
    spec, kind = task.spec, kind_of(task.spec)
    folder = root.resolve() / spec.data_dir if root else None
    clips: dict[str, int | None] = {}
    unknown: dict[str, str] = {}
    for split in spec.splits:
        clips[split] = None
        if folder is None:
            unknown[split] = "no data root given (--root DIR)"
        elif not folder.is_dir():
            unknown[split] = f"{folder} is not a folder"
        else:
            try:
                clips[split] = len(task.load(folder, split))
            except UserError as exc:
                unknown[split] = " ".join(str(exc).split())
    return {**dataclasses.asdict(spec), "data_folder": str(folder) if folder else None, "split_clips": clips,
            "split_clips_unknown": unknown, "main_score": kind.main_score(spec, spec.directions) if kind.scored
            else None}


def split_line(info: dict, split: str) -> str:
    """'train_9k (train): 9,000 clips', or '... clips unknown: why'."""
    roles = [role for role in ("train", "val", "test") if info[f"{role}_split"] == split]
    name = f"{split} ({', '.join(roles)})" if roles else split
    clips = info["split_clips"][split]
    return f"{name}: {clips:,} clips" if clips is not None else f"{name}: clips unknown, " \
                                                                  f"{info['split_clips_unknown'][split]}"


def cmd_config(args: argparse.Namespace) -> int:
    """Print the resolved run config with each key's meaning.

    The defaults, then --config FILE, then KEY=VALUE overrides, type-checked and resolved as a run resolves them
    (every "(protocol)" and "(task)" switch concrete), printed as YAML with each key's meaning as a comment: the
    output is itself a valid --config file.
    """
    from benchmark.config import annotated_yaml

    print(annotated_yaml(run_config(args, [])[0]))
    return 0


def cmd_synth(args: argparse.Namespace) -> int:
    """Write tiny learnable datasets in their real on-disk formats.

    MSR-VTT, VATEX, AudioCaps, AudioSet and HowTo100M as their releases lay them out (annotation files, mp4 and
    wav clips), with planted defects: clips without an audio track, truncated, missing, empty or short files,
    48 kHz audio, clips without captions. Prints what was planted per dataset; --out is then a data.root.
    """
    from benchmark.synthetic import synthesize

    planted = synthesize(Path(args.out), seed=args.seed, scale=args.scale)
    defects = ("no_audio", "truncated", "missing", "empty", "short", "48k", "no_captions")
    for dataset, planted_items in planted.items():
        print(f"{args.out}/{dataset}: planted " + ", ".join(
            f"{k} {len(v)}" for k, v in planted_items.items() if k in defects))
    return 0


def cmd_prepare(args: argparse.Namespace) -> int:
    """Check a dataset, decode it once into the media store, write its manifest, print the counts.

    Reads TASK's annotation files under --root, decodes every listed clip's video and audio (in --workers
    processes) into the media store (data.cache, default ROOT/clip4vla-cache), and writes a per-item manifest;
    the table counts per split the items and the missing, silent, undecodable and changed ones. Run it once per
    task before a long job (under torchrun it is required).
    """
    from benchmark.config import load_config
    from benchmark.prepare import prepare

    cfg = load_config({}, [f"data.root={Path(args.root).resolve()}", *args.overrides])
    summary, manifest = prepare(args.task, cfg, args.splits.split(",") if args.splits else None, args.workers,
                                args.verify)
    columns = ("items", "missing_video", "missing_audio", "no_audio_track", "undecodable", "media_changed")
    print(f"{'split':<18}" + "".join(f"{c.replace('_', ' '):>16}" for c in columns))
    for split, counts in summary.items():
        print(f"{split:<18}" + "".join(f"{counts[c]:>16}" for c in columns))
    print(f"manifest: {manifest}")
    return 0


def report_writers():
    """The reports the runs write (reports/): composed here, so that reports/ reads what benchmark/ records and
    benchmark/ never imports reports/ (issue 14 item 3)."""
    from benchmark.pipeline import Reports
    from reports.collect import write_report
    from reports.run_report import write_run_report

    return Reports(run=write_run_report, suite=write_report)


def cmd_smoke(args: argparse.Namespace) -> int:
    """The main job in miniature: generated data, a tiny model, an MLflow store and the report.

    Generates the five datasets, decodes them, and runs the smoke suite (configs/smoke.yaml: the paper's plan
    with a tiny random-weight CLIP4VLA): pre-training, then fine-tuning and evaluation on all six tasks for the
    full model and the paper's two ablations. A few minutes on a CPU; the report and the MLflow store in --out.
    """
    from benchmark.smoke import run_smoke

    run_smoke(Path(args.out) if args.out else None, args.overrides, report_writers(), seed=args.seed)
    return 0


def run_config(args: argparse.Namespace, extra: list[str]):
    """(the resolved config of --config and the overrides, the --config path or None); a suite is refused."""
    from benchmark.config import load_config, read_yaml

    config = Path(args.config) if args.config else None
    data = read_yaml(config) if config else {}
    if "plan" in data:
        raise UserError(f"{config} is a suite: run it with `clip4vla sweep {config} --out DIR`, or give the "
                        "config.yaml of one of its runs (OUT/runs/<step>-<key>/config.yaml)")
    return load_config(data, [*extra, *args.overrides]), config


def check_data(cfg, tasks: list[str]) -> None:
    """data.root is a folder holding the dataset folder of each of `tasks`: checked before any tracking store is
    opened (a missing one used to leave mlruns.db and a FAILED run behind)."""
    from benchmark.registry import load_tasks

    if not cfg.data.root:
        raise UserError("data.root is not set: point it at the folder holding the dataset folders")
    root = Path(cfg.data.root)
    if not root.is_dir():
        raise UserError(f"data.root {root}: no such folder (it holds one folder per dataset, see `clip4vla tasks`)")
    for name in tasks:
        folder = root / load_tasks().get(name).spec.data_dir
        if not folder.is_dir():
            raise UserError(f"{name}: its dataset folder {folder} is not there (data.root={root}; see "
                            f"`clip4vla tasks {name}`)")


def _reproduce(args: argparse.Namespace, stages: tuple[str, ...], extra: list[str]) -> int:
    from benchmark.output_lock import hold_folder
    from benchmark.pipeline import Progress, check_tasks, reproduce

    cfg, config = run_config(args, extra)
    scoring = "finetune" in stages or "evaluate" in stages  # what Reproduction.run asks for, checked here first
    check_tasks(cfg, needs_task=scoring, needs_corpus=stages == ("pretrain",))
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    # torchrun: rank 0 holds the folder for its whole group
    with hold_folder(out) if int(os.environ.get("RANK", "0")) == 0 else nullcontext():
        check_data(cfg, [cfg.task] * scoring + (cfg.pretrain_corpus if "pretrain" in stages else []))
        reproduce(cfg, out, config.stem if config else "-".join(stages), Progress(), stages,
                  getattr(args, "resume", False), reports=report_writers())
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    """Pre-train, fine-tune and evaluate one task from a run config.

    CONFIG is a run config (e.g. the config.yaml a suite run recorded: this reruns it). Pre-trains on its
    pretrain_corpus when it names one, fine-tunes its task with model selection and evaluates it before and
    after; one MLflow run with a nested run per stage, results and report.md in --out.
    """
    return _reproduce(args, ("pretrain", "finetune"), [])


def cmd_pretrain(args: argparse.Namespace) -> int:
    """Pre-train on the corpora listed in pretrain_corpus.

    The inter-modal (text-audio, video-audio) and intra-modal (audio vs its augmented view) contrastive losses
    of spec §6, with the pretrain.* recipe; checkpoints in OUT/checkpoints/pretrain, which model.init of a
    fine-tune takes.
    """
    return _reproduce(args, ("pretrain",), [])


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Score a task's test split with a checkpoint, or zero-shot with the configured CLIP weights.

    Retrieval: every direction the task's modalities allow, with bootstrap intervals and per-query records;
    captioning: beam-search captions scored with pycocoevalcap. eval.split scores another of the task's splits.
    """
    init = [f"model.init={Path(args.checkpoint).resolve()}"] if args.checkpoint else []
    return _reproduce(args, ("evaluate",), [f"task={args.task}", *init])


def cmd_import_checkpoint(args: argparse.Namespace) -> int:
    """Convert the authors' CLIP4VLA pytorch_model.bin into a checkpoint of this suite.

    Retrieval, pre-training and captioning checkpoints of the official release are mapped key by key onto this
    model; prints the `clip4vla evaluate ... --checkpoint` line with the model overrides the weights need.
    """
    from benchmark.original_checkpoint import import_checkpoint

    print(import_checkpoint(Path(args.path), Path(args.out), args.overrides).summary())
    return 0


def cmd_finetune(args: argparse.Namespace) -> int:
    """Fine-tune a task with model selection, then evaluate it.

    Starts from model.init (e.g. a pre-training checkpoint folder) or the CLIP weights, trains with the
    finetune.* recipe (spec §9.1), selects the checkpoint on the selection split every finetune.eval_every
    steps, and scores the test split before and after.
    """
    return _reproduce(args, ("finetune",), [f"task={args.task}"])


def suite_file(given: str) -> Path:
    """SUITE as a path, else a suite shipped with the package by its name (`paper`, `ablations`, `smoke`)."""
    from configs import path, suite_names

    name = given.removesuffix(".yaml")
    if Path(given).exists() or Path(given).parent != Path("."):
        return Path(given)  # a path: read_yaml says when it is missing
    if name in suite_names():
        return path(f"{name}.yaml")
    raise UserError(f"config file not found: {given}, and no shipped suite is called '{name}'"
                    f"{closest(name, suite_names())} (shipped: {', '.join(suite_names())})")


def cmd_sweep(args: argparse.Namespace) -> int:
    """Run a suite: every step x variant x seed of its plan, then the comparison report.

    SUITE is a suite file or the name of a shipped one (paper, ablations, smoke). Runs the store holds as
    FINISHED are skipped and crashed ones resume, so the same command continues a suite. --dry-run prints the
    plan with its cost, --emit one command per unfinished run (for a scheduler), --only KEY runs one run,
    --launcher runs each unfinished run as a local or SLURM job that waits for the run it starts from.
    """
    from benchmark.launchers import RESOURCE_KEYS
    from benchmark.pipeline import Progress
    from benchmark.sweep import expand, experiment_of, load_suite, run_sweep
    from benchmark.tracking import default_uri

    path, out = suite_file(args.config), Path(args.out).resolve()
    flags = {key: getattr(args, key) for key in RESOURCE_KEYS if getattr(args, key) is not None}
    if not (args.launcher or flags):  # those only submit jobs, which check for themselves (run_sweep checks flags)
        suite = load_suite(path)
        runs = expand(suite, args.overrides)
        if args.dry_run or args.emit:
            check_store_readable(default_uri(out, runs[0].config.tracking.uri), experiment_of(suite, runs),
                                 "--dry-run" if args.dry_run else "--emit")
        else:
            for run in runs:
                check_data(run.config, [])
    run_sweep(path, out, args.overrides, Progress(), args.only, args.dry_run, args.emit, args.launcher, flags,
              reports=report_writers())
    return 0


def sqlite_file(uri: str) -> Path | None:
    """The file of a sqlite:/// tracking URI; None for other stores."""
    return Path(uri[len("sqlite:///"):]) if uri.startswith("sqlite:///") else None


def check_store_readable(uri: str, experiment: str, flag: str) -> None:
    """--dry-run and --emit tell the finished runs from the store: one that cannot be read is an error, never
    "0 already finished" (sweep.look_up_finished reads an unreadable store as an empty one)."""
    from benchmark.tracking import experiment_names

    store = sqlite_file(uri)
    if store is not None and not store.exists():
        return  # no store yet: nothing has run
    try:
        experiment_names(uri)
    except UserError as exc:
        raise UserError(f"{flag}: {exc}; so which runs of experiment {experiment} finished is unknown (check "
                        "--out, tracking.uri and MLFLOW_TRACKING_URI)") from None


def margins(given: list[str]) -> dict[str, float]:
    """--margin METRIC=VALUE, checked: a metric the report shows, a finite value >= 0."""
    from reports.tables import DEFAULT_MARGINS

    out = {}
    for item in given:
        metric, _, value = item.partition("=")
        if metric not in DEFAULT_MARGINS:
            raise UserError(f"--margin {item}: unknown metric '{metric}'{closest(metric, list(DEFAULT_MARGINS))} "
                            f"(metrics: {', '.join(DEFAULT_MARGINS)})")
        try:
            out[metric] = float(value)
        except ValueError:
            out[metric] = math.nan
        if not math.isfinite(out[metric]) or out[metric] < 0:
            raise UserError(f"--margin {item}: expected METRIC=VALUE with a finite VALUE >= 0")
    return out


def cmd_report(args: argparse.Namespace) -> int:
    """Write the comparison report of a tracked experiment: report.md, report.html, tables.tex, plots.

    Reads the experiment's finished runs: per task and direction the reference (the paper's number on our split,
    else the authors' official log), ours as mean and 95% interval over seeds, the difference, an equivalence
    verdict within --margin, the published baselines; the ablation table of paired differences against
    --reference; under every table the protocol fingerprint and the items used and missing.
    """
    from benchmark.output_lock import hold_folder
    from benchmark.tracking import Tracker, default_uri
    from reports.collect import write_report

    chosen = margins(args.margin)
    out = Path(args.out).resolve()
    uri = default_uri(out, args.tracking_uri)
    store = sqlite_file(uri)
    if store is not None and not store.is_file():
        raise UserError(f"no tracking store at {store}: give --tracking-uri (or set MLFLOW_TRACKING_URI), or --out "
                        "the folder a sweep wrote")
    tracker = Tracker(uri, args.experiment or only_experiment(uri), create=False)
    with hold_folder(out, shared=True):  # next to `sweep --only` jobs, which leave the report to this verb
        paths = write_report(tracker, out, args.title or f"clip4vla report: {args.experiment or 'runs'}",
                             args.reference, Path(args.baselines) if args.baselines else None, chosen)
    print("\n".join(str(p) for p in paths.values()))
    return 0


def only_experiment(uri: str) -> str:
    """The store's experiment when it has exactly one (besides MLflow's Default)."""
    from benchmark.tracking import experiment_names

    names = experiment_names(uri)
    if len(names) != 1:
        raise UserError(f"{uri} holds {len(names)} experiments ({', '.join(names) or 'none'}): "
                        "choose one with --experiment")
    return names[0]


def cmd_perf(args: argparse.Namespace) -> int:
    """Benchmarks, each printed as a table (README's Performance section records them).

    model: forward + backward per sample and peak memory of the paper's training recipes (configs/paper.yaml,
    CPU), SDPA vs math; train: whole optimizer steps of those recipes through train.py's loop, fp32/bf16,
    checkpointing; caption: caption inference per video (encoders, beam-5 decoding), fp32 on the CPU; data:
    decode and read on --task's generated dataset; metrics: scoring time at each retrieval task's test size;
    scale: opening a generated corpus and store of N clips and its first batch, with memory per DataLoader
    worker; gpu: the GPU check (training steps at the paper's shapes, bf16 and fp32, caption decoding, the data
    path, an NCCL step), one line and nothing else without CUDA.
    """
    from benchmark.perf import perf_caption, perf_data, perf_metrics, perf_model, perf_train
    from benchmark.perf_recipes import CASES

    if args.what == "data":
        if not args.task:
            raise UserError("perf data needs --task TASK (see `clip4vla tasks`)")
        perf_data(args.task, args.scale)
        return 0
    if args.what == "metrics":
        perf_metrics()
        return 0
    if args.what == "gpu":
        from benchmark.perf_gpu import perf_gpu

        return perf_gpu(data_task=args.task)
    if args.what == "scale":
        from benchmark.scale import MIN_SCALE_CLIPS, perf_scale

        try:
            sizes = [int(n.replace("_", "")) for n in args.clips.split(",")]
        except ValueError:
            sizes = [0]
        if min(sizes) < MIN_SCALE_CLIPS:
            raise UserError(f"--clips {args.clips!r}: expected comma-separated clip counts of at least "
                            f"{MIN_SCALE_CLIPS}, e.g. 10000,100000")
        if args.workers < 0:
            raise UserError(f"--workers {args.workers}: expected 0 or more DataLoader worker processes")
        if args.dir and not Path(args.dir).is_dir():
            raise UserError(f"--dir {args.dir}: not a folder")
        perf_scale(sizes, args.workers, Path(args.dir) if args.dir else None)
        return 0
    cases = args.models.split(",")
    unknown = [c for c in cases if c not in CASES]
    if unknown:
        raise UserError(f"unknown perf model '{unknown[0]}' (known: {', '.join(CASES)})")
    if args.what == "model":
        perf_model(cases, args.iters)
    elif args.what == "caption":
        perf_caption(cases, args.iters)
    else:
        perf_train(cases, args.iters, tuple(args.precisions.split(",")))
    return 0


def version_line() -> str:
    """'clip4vla 0.1.0 (git 1a2b3c4d5e6f, dirty)': the installed package's version and the checkout's commit."""
    from benchmark.records import git_state

    dist = packages_distributions().get("benchmark", ["clip4vla-bench"])[0]
    try:
        number = version(dist)
    except PackageNotFoundError:
        number = "(not installed: pip install -e .)"
    git = git_state()
    commit = "" if git["git_sha"] == "unknown" else f" (git {git['git_sha'][:12]}{', dirty' * bool(git['git_dirty'])})"
    return f"clip4vla {number}{commit}"


class VersionAction(argparse.Action):
    """--version, worked out only when asked (it runs git)."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs) -> None:
        super().__init__(option_strings, dest, nargs=0, help="print the version and the git commit, then exit")

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        print(version_line())
        parser.exit()


def add_verb(verbs, name: str, func, *examples: str) -> argparse.ArgumentParser:
    """A verb whose one-line help is its function's docstring's first line; its --help shows the whole
    docstring and the examples."""
    text = inspect.cleandoc(func.__doc__)
    p = verbs.add_parser(name, help=text.splitlines()[0].rstrip("."), description=text,
                         epilog="example:\n" + "\n".join(f"  {e}" for e in examples),
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    p.set_defaults(func=func)
    return p


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="clip4vla", description="CLIP4VLA reproducibility suite (AAAI 2023): audio in CLIP, retrieval.")
    parser.add_argument("--version", action=VersionAction)
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", required=True)

    p = add_verb(verbs, "tasks", cmd_tasks, "clip4vla tasks msrvtt_retrieval --root /data")
    p.add_argument("name", nargs="?", metavar="NAME", help="one task or corpus (default: all)")
    p.add_argument("--root", help="folder holding the dataset folders (data.root): count the clips of each split")
    p.add_argument("--json", action="store_true", help="print a JSON list of the tasks' metadata")

    p = add_verb(verbs, "config", cmd_config, "clip4vla config show protocol=released-code finetune.lr=1e-5")
    p.add_argument("action", choices=("show",))
    p.add_argument("--config", help="YAML run config to resolve (default: the built-in paper defaults)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. task=msrvtt_caption")

    p = add_verb(verbs, "synth", cmd_synth, "clip4vla synth --out /tmp/data --scale small")
    p.add_argument("--out", required=True, help="folder to write <dataset>/ folders into")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--scale", choices=("tiny", "small"), default="tiny")

    p = add_verb(verbs, "prepare", cmd_prepare, "clip4vla prepare msrvtt_retrieval --root /data --workers 8")
    p.add_argument("task", help="a task or corpus name (see `clip4vla tasks`)")
    p.add_argument("--root", required=True, help="folder holding the dataset folders (data.root)")
    p.add_argument("--splits", help="comma-separated splits (default: all of the task's splits)")
    p.add_argument("--workers", type=int, default=2, help="decoding processes (0: in this process)")
    p.add_argument("--verify", action="store_true", help="check every stored entry's checksums and re-hash its "
                   "media file first (a replacement of the same size and mtime), and decode the damaged or changed "
                   "ones again")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="e.g. data.max_frames=12 data.cache=/fast/cache")

    p = add_verb(verbs, "smoke", cmd_smoke, "clip4vla smoke --out smoke-output")
    p.add_argument("--out", help="output folder (default: a new clip4vla-smoke-<time> folder here)")
    p.add_argument("--seed", type=int, default=0, help="seed of the generated data")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. finetune.max_steps=10")

    for verb, func, example in (
        ("run", cmd_run, "clip4vla run /runs/paper/runs/msrvtt_retrieval-1a2b3c4d5e/config.yaml --out /runs/again"),
        ("pretrain", cmd_pretrain, "clip4vla pretrain --out /runs/pre data.root=/data "
                                   "pretrain_corpus=[audioset,howto100m]"),
        ("finetune", cmd_finetune, "clip4vla finetune msrvtt_retrieval --out /runs/ft data.root=/data "
                                   "model.init=/runs/pre/checkpoints/pretrain"),
        ("evaluate", cmd_evaluate, "clip4vla evaluate msrvtt_retrieval --checkpoint /runs/ft/checkpoints "
                                   "--out /runs/eval data.root=/data"),
    ):
        p = add_verb(verbs, verb, func, example)
        if verb in ("finetune", "evaluate"):
            p.add_argument("task", help="a retrieval or captioning task (see `clip4vla tasks`)")
        if verb == "evaluate":
            p.add_argument("--checkpoint", help="a CLIP4VLA checkpoint or a stage's checkpoint folder")
        if verb == "run":
            p.add_argument("config", help="YAML config (see configs/)")
        else:
            p.add_argument("--config", help="YAML config (default: the built-in paper defaults)")
        p.add_argument("--out", required=True, help="output folder (checkpoints, MLflow store, results, report)")
        if verb != "evaluate":
            p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --out")
        p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. data.root=/data")

    p = add_verb(verbs, "import-checkpoint", cmd_import_checkpoint,
                 "clip4vla import-checkpoint pytorch_model.bin --out msrvtt_retrieval.pt")
    p.add_argument("path", help="the authors' pytorch_model.bin")
    p.add_argument("--out", required=True, help="checkpoint file to write")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="e.g. model.clip_name=ViT-B-32-quickgelu")

    p = add_verb(verbs, "sweep", cmd_sweep, "clip4vla sweep paper --out /runs/paper --dry-run data.root=/data",
                 "clip4vla sweep paper --out /runs/paper data.root=/data")
    p.add_argument("config", metavar="SUITE", help="suite YAML, or a shipped suite's name: "
                   "paper, ablations, smoke (configs/)")
    p.add_argument("--out", required=True, help="output folder: runs/, checkpoints, the default MLflow store, report")
    p.add_argument("--dry-run", action="store_true", help="print the plan: runs, status, time estimate")
    p.add_argument("--emit", action="store_true", help="print one shell command per unfinished run (schedulers)")
    p.add_argument("--only", metavar="KEY", help="run only the run with this key (as printed by --dry-run/--emit)")
    p.add_argument("--launcher", metavar="local|slurm", help="run each unfinished run as a job that waits for the "
                   "run it starts from, then a report job: 'slurm' submits them with sbatch, 'local' runs them here")
    p.add_argument("--partition", help="--launcher slurm: the partition (default: the suite's launcher.partition)")
    p.add_argument("--gpus", help="--launcher: GPUs per job, on one node; more than 1 runs it under torchrun "
                   "(default: launcher.gpus, else 1)")
    p.add_argument("--cpus", help="--launcher: CPUs per job (default: launcher.cpus, else the scheduler's)")
    p.add_argument("--time", help="--launcher: time limit per job, MINUTES, HH:MM:SS or D-HH:MM:SS (default: "
                   "launcher.time; slurm needs one)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="applied to every run, e.g. data.root=/data")

    p = add_verb(verbs, "report", cmd_report, "clip4vla report --out /runs/paper --margin CIDEr=3")
    p.add_argument("--out", required=True, help="folder to write the report into (and the default store to read)")
    p.add_argument("--experiment", help="MLflow experiment (default: the store's only one)")
    p.add_argument("--tracking-uri", help="store to read (default: MLFLOW_TRACKING_URI, else OUT/mlruns.db)")
    p.add_argument("--reference", default="full", help="variant the ablation deltas are taken against")
    p.add_argument("--title", help="report title")
    p.add_argument("--baselines", help="published numbers CSV (default: the shipped baselines/published.csv)")
    p.add_argument("--margin", action="append", default=[], metavar="METRIC=VALUE",
                   help="equivalence margin of a verdict, e.g. CIDEr=3 (repeatable; defaults: R@K and caption "
                        "metrics 1, CIDEr 2, MdR 1, MnR 2, printed under each table)")

    p = add_verb(verbs, "perf", cmd_perf, "clip4vla perf train --models tiny --iters 3",
                 "clip4vla perf gpu --task msrvtt_retrieval")
    p.add_argument("what", choices=("model", "train", "caption", "data", "metrics", "scale", "gpu"))
    p.add_argument("--task", help="perf data, perf gpu: the task whose generated dataset is decoded "
                   "and read")
    p.add_argument("--scale", choices=("tiny", "small"), default="small", help="perf data: generated size")
    p.add_argument("--models", default="tiny,vit-b-32", help="comma-separated: tiny, vit-b-32")
    p.add_argument("--iters", type=int, default=3, help="perf model, perf train, perf caption: timed steps (or "
                   "caption batches) after one warm-up")
    p.add_argument("--precisions", default="fp32,bf16", help="perf train: comma-separated fp32, bf16")
    p.add_argument("--clips", default="10000,100000,1000000", help="perf scale: comma-separated corpus sizes")
    p.add_argument("--workers", type=int, default=2, help="perf scale: DataLoader worker processes")
    p.add_argument("--dir", help="perf scale: where the generated corpora and stores go (4 GB at 1 M clips; "
                   "default: the system's temporary folder)")
    return parser


def unknown_verb(parser: argparse.ArgumentParser, argv: list[str]) -> str | None:
    """"unknown verb 'evalute'; did you mean 'evaluate'?" when the verb given is close to one; None otherwise
    (argparse's own error then). The top-level options take no value, so the first word is the verb."""
    verbs = list(parser._subparsers._group_actions[0].choices)
    given = next((word for word in argv if not word.startswith("-")), None)
    if given is None or given in verbs or not closest(given, verbs):
        return None
    return f"unknown verb '{given}'{closest(given, verbs)} (verbs: {', '.join(verbs)})"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else argv
    mistake = unknown_verb(parser, argv)
    if mistake:
        print(f"clip4vla: error: {mistake}", file=sys.stderr)
        return 2
    # KEY=VALUE overrides may come before or after options: argparse leaves the later ones over.
    args, rest = parser.parse_known_args(argv)
    unknown = [r for r in rest if r.startswith("-") or "=" not in r or not hasattr(args, "overrides")]
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    if rest:
        args.overrides = [*args.overrides, *rest]
    logging.basicConfig(level=logging.WARNING, format="%(message)s", stream=sys.stderr)
    logging.getLogger("clip4vla").setLevel(logging.INFO)
    if args.verb == "smoke":
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the smoke job never needs a hub; fail fast if asked
    try:
        return args.func(args)
    except UserError as exc:
        print(f"clip4vla: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("clip4vla: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug, not bad input: still one line unless asked for the traceback
        if os.environ.get("CLIP4VLA_DEBUG"):
            raise
        print(f"clip4vla: internal error: {type(exc).__name__}: {' '.join(str(exc).split())} "
              "(set CLIP4VLA_DEBUG=1 for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
