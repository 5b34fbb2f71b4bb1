"""The `clip4vla` command. Every verb exits non-zero with a one-line reason on bad input, no traceback."""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
from contextlib import nullcontext
from pathlib import Path

from benchmark.errors import UserError
from benchmark.registry import closest


def cmd_tasks(args: argparse.Namespace) -> int:
    """Print the registered tasks with their metadata."""
    from benchmark.registry import load_tasks

    registry = load_tasks()
    for name in registry:
        spec = registry.get(name).spec
        print(f"{spec.name}  v{spec.version}  {spec.dataset} {spec.kind}")
        print(f"    splits: {', '.join(spec.splits)} (train {spec.train_split}, test {spec.test_split})")
        print(f"    modalities: {', '.join(spec.modalities)}; directions: {', '.join(spec.directions)}")
        print(f"    captions per test item: {spec.captions_per_item}; main score: {spec.main_score}")
        print(f"    reference: {spec.reference}")
    return 0


def cmd_synth(args: argparse.Namespace) -> int:
    """Write the generated datasets in their real on-disk formats."""
    from benchmark.synthetic import synthesize

    planted = synthesize(Path(args.out), seed=args.seed, scale=args.scale)
    defects = ("no_audio", "truncated", "missing", "empty", "short", "48k", "no_captions")
    for dataset, planted_items in planted.items():
        print(f"{args.out}/{dataset}: planted " + ", ".join(
            f"{k} {len(v)}" for k, v in planted_items.items() if k in defects))
    return 0


def cmd_prepare(args: argparse.Namespace) -> int:
    """Check a dataset, decode every item into the media store, write the manifest, print the counts."""
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
    """Generated data + tiny model + MLflow store + report: the whole path in a few minutes on a CPU."""
    from benchmark.smoke import run_smoke

    run_smoke(Path(args.out) if args.out else None, args.overrides, report_writers(), seed=args.seed)
    return 0


def _reproduce(args: argparse.Namespace, stages: tuple[str, ...], extra: list[str]) -> int:
    from benchmark.config import load_config, read_yaml
    from benchmark.output_lock import hold_folder
    from benchmark.pipeline import Progress, reproduce

    config = Path(args.config) if args.config else None
    data = read_yaml(config) if config else {}
    if "plan" in data:
        raise UserError(f"{config} is a suite: run it with `clip4vla sweep {config} --out DIR`, or give the "
                        "config.yaml of one of its runs (OUT/runs/<step>-<key>/config.yaml)")
    cfg = load_config(data, [*extra, *args.overrides])
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    # torchrun: rank 0 holds the folder for its whole group
    with hold_folder(out) if int(os.environ.get("RANK", "0")) == 0 else nullcontext():
        reproduce(cfg, out, config.stem if config else "-".join(stages), Progress(), stages,
                  getattr(args, "resume", False), reports=report_writers())
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    """Pre-train, fine-tune and evaluate one task from a config file."""
    return _reproduce(args, ("pretrain", "finetune"), [])


def cmd_pretrain(args: argparse.Namespace) -> int:
    """Pre-train on the corpora (pretrain_corpus); checkpoints in OUT/checkpoints/pretrain."""
    return _reproduce(args, ("pretrain",), [])


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Score TASK's test split with a checkpoint, or zero-shot with the configured CLIP weights."""
    init = [f"model.init={Path(args.checkpoint).resolve()}"] if args.checkpoint else []
    return _reproduce(args, ("evaluate",), [f"task={args.task}", *init])


def cmd_import_checkpoint(args: argparse.Namespace) -> int:
    """Convert the authors' pytorch_model.bin into a checkpoint `evaluate --checkpoint` takes; print the line."""
    from benchmark.original_checkpoint import import_checkpoint

    print(import_checkpoint(Path(args.path), Path(args.out), args.overrides).summary())
    return 0


def cmd_finetune(args: argparse.Namespace) -> int:
    """Fine-tune TASK (from model.init, e.g. a pre-training checkpoint) with model selection, then evaluate."""
    return _reproduce(args, ("finetune",), [f"task={args.task}"])


def cmd_sweep(args: argparse.Namespace) -> int:
    """Run a suite's plan (skipping runs the store holds as finished), then write the comparison report."""
    from benchmark.launchers import RESOURCE_KEYS
    from benchmark.pipeline import Progress
    from benchmark.sweep import run_sweep

    flags = {key: getattr(args, key) for key in RESOURCE_KEYS if getattr(args, key) is not None}
    run_sweep(Path(args.config), Path(args.out), args.overrides, Progress(), args.only, args.dry_run, args.emit,
              args.launcher, flags, reports=report_writers())
    return 0


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
    """The comparison report (md, html, tex, plots) of one experiment of a tracking store."""
    from benchmark.output_lock import hold_folder
    from benchmark.tracking import Tracker, default_uri
    from reports.collect import write_report

    chosen = margins(args.margin)
    out = Path(args.out).resolve()
    uri = default_uri(out, args.tracking_uri)
    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///"):]).is_file():
        raise UserError(f"no tracking store at {uri[len('sqlite:///'):]}: give --tracking-uri (or set "
                        "MLFLOW_TRACKING_URI), or --out the folder a sweep wrote")
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
    """Print a benchmark table (results are recorded in README's performance section)."""
    from benchmark.perf import perf_data, perf_metrics, perf_model, perf_train
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
    else:
        perf_train(cases, args.iters, tuple(args.precisions.split(",")))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="clip4vla", description="CLIP4VLA reproducibility suite (AAAI 2023): audio in CLIP, retrieval.")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", required=True)

    p = verbs.add_parser("tasks", help="list the registered tasks and their metadata")
    p.set_defaults(func=cmd_tasks)

    p = verbs.add_parser("synth", help="write tiny learnable datasets in the real on-disk formats")
    p.add_argument("--out", required=True, help="folder to write <dataset>/ folders into")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--scale", choices=("tiny", "small"), default="tiny")
    p.set_defaults(func=cmd_synth)

    p = verbs.add_parser("prepare", help="check a dataset, decode it once into the media store, write its manifest")
    p.add_argument("task", help="a task or corpus name (see `clip4vla tasks`)")
    p.add_argument("--root", required=True, help="folder holding the dataset folders (data.root)")
    p.add_argument("--splits", help="comma-separated splits (default: all of the task's splits)")
    p.add_argument("--workers", type=int, default=2, help="decoding processes (0: in this process)")
    p.add_argument("--verify", action="store_true", help="check every stored entry's checksums and re-hash its "
                   "media file first (a replacement of the same size and mtime), and decode the damaged or changed "
                   "ones again")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="e.g. data.max_frames=12 data.cache=/fast/cache")
    p.set_defaults(func=cmd_prepare)

    p = verbs.add_parser("smoke", help="the main job on the embedded default: synth + pre-train + fine-tune + "
                         "evaluate + MLflow + report.md, minutes on a CPU")
    p.add_argument("--out", help="output folder (default: a new clip4vla-smoke-<time> folder here)")
    p.add_argument("--seed", type=int, default=0, help="seed of the generated data")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. finetune.max_steps=10")
    p.set_defaults(func=cmd_smoke)

    for verb, func, text in (
        ("run", cmd_run, "pre-train, fine-tune and evaluate one task from a config file"),
        ("pretrain", cmd_pretrain, "pre-train on the corpora listed in pretrain_corpus"),
        ("finetune", cmd_finetune, "fine-tune one task with model selection, then evaluate it"),
        ("evaluate", cmd_evaluate, "score a task's test split with a checkpoint, or zero-shot from CLIP weights"),
    ):
        p = verbs.add_parser(verb, help=text)
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
        p.set_defaults(func=func)

    p = verbs.add_parser("import-checkpoint", help="convert the authors' CLIP4VLA pytorch_model.bin (retrieval, "
                         "pre-training or captioning) into a checkpoint for evaluate --checkpoint / model.init")
    p.add_argument("path", help="the authors' pytorch_model.bin")
    p.add_argument("--out", required=True, help="checkpoint file to write")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="e.g. model.clip_name=ViT-B-32-quickgelu")
    p.set_defaults(func=cmd_import_checkpoint)

    p = verbs.add_parser("sweep", help="run a suite (configs/paper.yaml, ablations.yaml): every step x variant x "
                         "seed, skipping runs already finished in the tracking store; then the comparison report")
    p.add_argument("config", help="suite YAML (see configs/)")
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
    p.set_defaults(func=cmd_sweep)

    p = verbs.add_parser("report", help="comparison report of a tracked experiment: paper, baselines, ours "
                         "(mean and 95%% CI over seeds), ablations; report.md, report.html, tables.tex")
    p.add_argument("--out", required=True, help="folder to write the report into (and the default store to read)")
    p.add_argument("--experiment", help="MLflow experiment (default: the store's only one)")
    p.add_argument("--tracking-uri", help="store to read (default: MLFLOW_TRACKING_URI, else OUT/mlruns.db)")
    p.add_argument("--reference", default="full", help="variant the ablation deltas are taken against")
    p.add_argument("--title", help="report title")
    p.add_argument("--baselines", help="published numbers CSV (default: the shipped baselines/published.csv)")
    p.add_argument("--margin", action="append", default=[], metavar="METRIC=VALUE",
                   help="equivalence margin of a verdict, e.g. CIDEr=3 (repeatable; defaults: R@K and caption "
                        "metrics 1, CIDEr 2, MdR 1, MnR 2, printed under each table)")
    p.set_defaults(func=cmd_report)

    p = verbs.add_parser("perf", help="benchmarks: 'model' = fwd+bwd time per sample and peak memory (CPU); "
                         "'train' = whole steps, fp32/bf16, SDPA/math, checkpointing; 'data' = decode and read; "
                         "'metrics' = scoring time at each retrieval task's test size; 'scale' = opening a generated "
                         "corpus and store of N clips and its first batch, with memory per DataLoader worker; "
                         "'gpu' = the GPU check (training steps at the paper's shapes, bf16 and fp32, caption "
                         "decoding, the data path, an NCCL step); one line and nothing else without CUDA")
    p.add_argument("what", choices=("model", "train", "data", "metrics", "scale", "gpu"))
    p.add_argument("--task", help="perf data, perf gpu: the task whose generated dataset is decoded "
                   "and read")
    p.add_argument("--scale", choices=("tiny", "small"), default="small", help="perf data: generated size")
    p.add_argument("--models", default="tiny,vit-b-32", help="comma-separated: tiny, vit-b-32")
    p.add_argument("--iters", type=int, default=3, help="perf model, perf train: timed steps after one warm-up step")
    p.add_argument("--precisions", default="fp32,bf16", help="perf train: comma-separated fp32, bf16")
    p.add_argument("--clips", default="10000,100000,1000000", help="perf scale: comma-separated corpus sizes")
    p.add_argument("--workers", type=int, default=2, help="perf scale: DataLoader worker processes")
    p.add_argument("--dir", help="perf scale: where the generated corpora and stores go (4 GB at 1 M clips; "
                   "default: the system's temporary folder)")
    p.set_defaults(func=cmd_perf)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
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
