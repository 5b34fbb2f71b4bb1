"""Suites: loading and checking, expansion into shared runs, the plan printout, skip and resume in a store."""

from __future__ import annotations

import textwrap

import pytest
from helpers import one_line_error, pretrain_then_finetune_suite, stage_of

from benchmark.errors import UserError
from benchmark.sweep import describe, emit, expand, load_suite

SUITE = """
suite: t
seeds: [0, 1]
base: {model: {clip_name: tiny-clip4vla, pretrained: null}, pretrain: {max_steps: 2}, finetune: {max_steps: 2}}
variants:
  full: {}
  mix0: {overrides: {model.type_mix: 0.0}}
  no_intra: {overrides: {loss: {intra_modal: false}}}
  no_audio: {overrides: {modalities: [text, video]}, skip: [pre]}
plan:
  - {name: pre, stage: pretrain, seeds: shared, config: {pretrain_corpus: [audioset, howto100m]}}
  - {name: ft, stage: finetune, init: pre, config: {task: vatex_retrieval}}
"""


def write(tmp_path, text, name="suite.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def test_expansion_shares_runs_where_a_stage_reads_the_same_config(tmp_path):
    runs = expand(load_suite(write(tmp_path, SUITE)), ["data.root=/somewhere"])
    pre = [r for r in runs if r.step.name == "pre"]
    ft = [r for r in runs if r.step.name == "ft"]
    # type_mix and modalities do not reach pre-training; the intra-modal loss does; seeds are shared
    assert sorted(sorted(r.variants) for r in pre) == [["full", "mix0"], ["no_intra"]]
    assert {r.seed for r in pre} == {0}
    # every fine-tune differs: its own config (mix0, no_audio) or the run it starts from (no_intra)
    assert len(ft) == 4 * 2 and all(len(r.variants) == 1 for r in ft)
    no_audio = [r for r in ft if r.variants == ["no_audio"]]
    assert all(r.init is None for r in no_audio)  # the skipped step: it starts from CLIP
    full = [r for r in ft if r.variants == ["full"]]
    assert {r.seed for r in full} == {0, 1} and all(r.init.variants == ["full", "mix0"] for r in full)


def test_run_keys_ignore_machine_paths_and_unread_sections(tmp_path):
    suite = load_suite(write(tmp_path, SUITE))
    here = {(r.step.name, tuple(r.variants), r.seed): r.key for r in expand(suite, ["data.root=/a"])}
    there = {(r.step.name, tuple(r.variants), r.seed): r.key for r in expand(suite, ["data.root=/b", "device=cpu"])}
    assert here == there
    logging = expand(suite, ["finetune.log_every=1", "pretrain.checkpoint_every=7", "finetune.keep_last=5"])
    assert here == {(r.step.name, tuple(r.variants), r.seed): r.key for r in logging}  # logging is no result
    lr = {(r.step.name, tuple(r.variants), r.seed): r.key for r in expand(suite, ["finetune.lr=1e-3"])}
    assert all(lr[k] == v for k, v in here.items() if k[0] == "pre")  # the fine-tuning lr: pre-training stays
    assert all(lr[k] != v for k, v in here.items() if k[0] == "ft")


@pytest.mark.parametrize("change, message", [
    ("suite: t\nplan: []\n", "the plan is empty"),
    ("suite: t\nplann: []\n", "unknown key 'plann'; did you mean 'plan'?"),
    ("suite: t\nplan: [{name: a, stage: trian}]\n", "stage must be one of"),
    ("suite: t\nplan: [{name: a, stage: finetune, init: b}]\n", "init 'b' is not an earlier step"),
    ("suite: t\nplan: [{name: a, stage: pretrain}, {name: a, stage: pretrain}]\n", "used twice"),
    ("suite: t\nvariants: {v: {skip: [x]}}\nplan: [{name: a, stage: pretrain}]\n", "skips unknown step 'x'"),
    ("suite: t\nseeds: 3\nplan: [{name: a, stage: pretrain}]\n", "seeds must be a non-empty list"),
    ("suite: t\nvariants: {v: {overides: {}}}\nplan: [{name: a, stage: pretrain}]\n", "did you mean 'overrides'"),
    ("suite: t\nvariants: [a, b]\nplan: [{name: a, stage: pretrain}]\n", "variants must be a mapping"),
    ("suite: t\nvariants: {v: {skip: a}}\nplan: [{name: a, stage: pretrain}]\n", "skip must be a list"),
    ("suite: t\nsteps: a\nplan: [{name: a, stage: pretrain}]\n", "steps must be a list"),
    ("suite: t\nestimate: {seconds_per_sample: abc}\nplan: [{name: a, stage: pretrain}]\n", "positive number"),
    ("suite: t\nestimate: 5\nplan: [{name: a, stage: pretrain}]\n", "estimate: unknown key"),
    ("extends: suite.yaml\nsuite: t\nplan: [{name: a, stage: pretrain}]\n", "goes round in a circle"),
])
def test_suite_mistakes_are_one_line_errors(tmp_path, change, message):
    one_line_error(lambda: load_suite(write(tmp_path, change)), message)


def test_expansion_mistakes_are_one_line_errors(tmp_path):
    suite = load_suite(write(tmp_path, SUITE))
    with pytest.raises(UserError, match="its seeds are the `seeds:` list"):
        expand(suite, ["seed=5"])
    all_skipped = "suite: t\nvariants: {v: {skip: [a]}}\nplan: [{name: a, stage: pretrain}]\n"
    with pytest.raises(UserError, match="every variant skips every step"):
        expand(load_suite(write(tmp_path, all_skipped)), ["pretrain_corpus=[audioset]"])
    corpus_as_task = "suite: t\nplan: [{name: a, stage: evaluate, config: {task: audioset}}]\n"
    with pytest.raises(UserError, match="step 'a': 'audioset' is a pre-training corpus"):
        expand(load_suite(write(tmp_path, corpus_as_task)))
    with pytest.raises(UserError, match="step 'a': no pre-training corpus"):
        expand(load_suite(write(tmp_path, "suite: t\nplan: [{name: a, stage: pretrain}]\n")))


def test_bad_keys_and_task_names_fail_at_expansion(tmp_path):
    bad_task = write(tmp_path, "suite: t\nplan: [{name: a, stage: finetune, config: {task: msrvtt_retreival}}]\n")
    with pytest.raises(UserError, match="did you mean 'msrvtt_retrieval'"):
        expand(load_suite(bad_task))
    with pytest.raises(UserError, match="unknown config key 'finetune.lrr'"):
        expand(load_suite(write(tmp_path, SUITE)), ["finetune.lrr=1"])


def test_shipped_paper_plan_dry_run_lists_every_run(tmp_path):
    from configs import path

    suite = load_suite(path("paper.yaml"))
    runs = expand(suite, ["data.root=/data"])
    text = describe(suite, runs, finished=set())
    # two pre-training stages shared by the seeds, then six fine-tunes and MSR-VTT on its clips with audio
    # (spec §12 item 17) for each of 3 seeds
    stages = [r.step.stage for r in runs]
    assert (stages.count("pretrain"), stages.count("finetune"), stages.count("evaluate")) == (2, 6 * 3, 3)
    assert f"{len(runs)} runs" in text and "estimated time to finish" in text and "?" not in text.split("\n")[-1]
    commands = emit(suite, runs, set(), tmp_path, ["data.root=/data"]).splitlines()
    assert sum(line.startswith("clip4vla sweep") for line in commands) == len(runs)
    assert all("--only" in line for line in commands if not line.startswith("#"))


def test_shipped_ablation_plan_pairs_seeds_across_variants():
    from configs import path

    suite = load_suite(path("ablations.yaml"))
    runs = expand(suite, ["data.root=/data"])
    variants = [v.name for v in suite.variants]
    assert variants[0] == "full" and {"no_intra", "no_type_token", "random_audio_init", "no_audio", "mix_0",
                                      "mix_1", "feat_avg"} <= set(variants)
    for variant in variants:
        seeds = {r.seed for r in runs if variant in r.variants and r.step.stage == "finetune"}
        assert seeds == set(suite.seeds), variant


RESUME_SUITE = pretrain_then_finetune_suite(
    "resume", finetune="{max_steps: 4, batch_size: 8, log_every: 1, checkpoint_every: 1}",
    pretrain="{max_steps: 2, batch_size: 8, log_every: 1}")


def _final_metrics(out):
    from benchmark.tracking import Tracker

    tracker = Tracker(f"sqlite:///{out}/mlruns.db", "clip4vla-resume", create=False)
    runs = tracker.search()
    final = [r for r in runs if r["tags"].get("label") == "finetuned" and r["status"] == "FINISHED"]
    return tracker, runs, final


@pytest.mark.slow
def test_sweep_skips_finished_runs_and_resumes_a_crashed_one(tmp_path, generated, monkeypatch):
    from benchmark import stages
    from benchmark.cli import report_writers
    from benchmark.losses import RetrievalLoss
    from benchmark.pipeline import Progress
    from benchmark.sweep import run_sweep

    root, _ = generated
    suite = write(tmp_path, RESUME_SUITE)
    overrides = [f"data.root={root}"]
    run_sweep(suite, tmp_path / "straight", overrides, Progress(), reports=report_writers())

    real_train = stages.train

    def crash_at_step_3(model, loss, pairs, cfg, seed, log, *args, **kwargs):
        def log_then_crash(metrics, step):
            log(metrics, step)
            if isinstance(loss, RetrievalLoss) and step == 3:  # fine-tuning only; step 2 is checkpointed
                raise RuntimeError("simulated crash")

        return real_train(model, loss, pairs, cfg, seed, log_then_crash, *args, **kwargs)

    monkeypatch.setattr(stages, "train", crash_at_step_3)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_sweep(suite, tmp_path / "crashed", overrides, Progress(), reports=report_writers())
    _, runs, final = _final_metrics(tmp_path / "crashed")
    plan = {r["tags"]["sweep.step"]: r["status"] for r in runs if r["tags"].get("role") == "plan-run"}
    assert plan == {"pre": "FINISHED", "ft": "FAILED"} and not final

    monkeypatch.setattr(stages, "train", real_train)
    run_sweep(suite, tmp_path / "crashed", overrides, Progress(), reports=report_writers())
    tracker, runs, final = _final_metrics(tmp_path / "crashed")
    assert sum(stage_of(r["name"]) == "pretrain" for r in runs) == 1  # finished before the crash: not run again
    # the resumed runs continue the crashed ones in MLflow: one run each, none left FAILED, a whole curve
    assert [r["status"] for r in runs if r["tags"].get("sweep.step") == "ft" and r["tags"].get("role")] == ["FINISHED"]
    assert [r["status"] for r in runs if r["name"].startswith("sweep")] == ["FINISHED"]
    (resumed,) = [r for r in runs if stage_of(r["name"]) == "finetune/audiocaps_retrieval"]
    assert resumed["status"] == "FINISHED"
    logged = [m.step for m in tracker.client.get_metric_history(resumed["run_id"], "train/loss")]
    assert sorted(logged) == [1, 2, 3, 3, 4]  # step 3 again: continued from the step-2 checkpoint
    assert [step for step, _ in tracker.history(resumed["run_id"], "train/loss")] == [1, 2, 3, 4]
    _, _, straight = _final_metrics(tmp_path / "straight")
    metrics = {k: v for k, v in final[0]["metrics"].items() if "/" in k}
    assert metrics == {k: v for k, v in straight[0]["metrics"].items() if "/" in k}  # resumed == uninterrupted

    count = len(runs)
    run_sweep(suite, tmp_path / "crashed", overrides, Progress(), reports=report_writers())
    _, runs, _ = _final_metrics(tmp_path / "crashed")
    assert len(runs) == count + 1  # only the new invocation's "sweep resume" run: both runs were skipped
    assert (tmp_path / "crashed" / "report.md").is_file()
