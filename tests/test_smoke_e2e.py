"""The smoke path end to end, as a user runs it: the installed `clip4vla` command, from outside the repository."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess

import pytest
from helpers import stage_of

TASKS = ("msrvtt_retrieval", "vatex_retrieval", "audiocaps_retrieval", "msrvtt_caption", "vatex_caption",
         "audiocaps_caption")
VARIANTS = ("full", "no_intra", "no_type_token")
RUN_TAGS = ("task", "task_version", "protocol", "variant", "seed", "protocol_fingerprint", "data_manifest", "git_sha",
            "git_dirty", "version.torch", "version.open_clip_torch", "device", "world_size", "global_batch",
            "precision", "sweep.key")


@pytest.fixture(scope="module")
def smoke_output(tmp_path_factory):
    exe = shutil.which("clip4vla")
    assert exe, "the clip4vla console script is not installed"
    cwd = tmp_path_factory.mktemp("elsewhere")
    out = tmp_path_factory.mktemp("smoke") / "out"
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    proc = subprocess.run([exe, "smoke", "--out", str(out)], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, cwd, proc


def _run_folder(out, step, variant="full"):
    """The folder of a plan run, found through its config (folder names carry the run key)."""
    import yaml

    for folder in sorted((out / "runs").glob(f"{step}-*")):
        record = json.loads((folder / "runs" / "finetuned" / "results.json").read_text()) \
            if (folder / "runs" / "finetuned").exists() else None
        if record and variant in record["extra"]["variant"].split(","):
            assert yaml.safe_load((folder / "config.yaml").read_text())["task"] == step
            return folder
    raise AssertionError(f"no run folder for {step}/{variant}")


def _results(folder, point):
    return json.loads((folder / "runs" / point / "results.json").read_text())


@pytest.mark.slow
def test_smoke_writes_only_into_its_output_folder(smoke_output):
    out, cwd, proc = smoke_output
    assert list(cwd.iterdir()) == []
    for name in ("report.md", "report.html", "tables.tex", "mlruns.db", "plots/ablation.png"):
        assert (out / name).is_file(), name
    assert len(list((out / "runs").iterdir())) == 3 * (1 + len(TASKS))  # pre-training + six tasks per variant
    checkpoints = _run_folder(out, "msrvtt_retrieval") / "checkpoints" / "finetune-msrvtt_retrieval"
    assert list(checkpoints.glob("step-*.pt")) and (checkpoints / "scores.json").is_file()
    assert "prepare data done" in proc.stderr and "finetune/msrvtt_retrieval step" in proc.stderr


@pytest.mark.slow
def test_smoke_logs_nested_mlflow_runs_with_tags_and_metric_keys(smoke_output):
    from mlflow.tracking import MlflowClient

    from benchmark.records import git_state

    out, _, _ = smoke_output
    client = MlflowClient(f"sqlite:///{out}/mlruns.db")
    experiment = client.get_experiment_by_name("clip4vla-smoke")
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    assert all(r.info.status == "FINISHED" for r in runs)
    assert len({r.info.run_name for r in runs}) == len(runs)  # unique names: a list or a comparison tells them apart
    sweep = [r for r in runs if r.info.run_name.startswith("sweep smoke ")]
    assert len(sweep) == 1
    plan = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == sweep[0].info.run_id]
    assert len(plan) == 21 and {r.data.tags["variant"] for r in plan} == set(VARIANTS)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"  # the UI opens on its runs
    assert {r.data.tags["mlflow.source.git.commit"] for r in plan} == {git_state()["git_sha"]}
    # the plan runs carry their evaluations' main scores, so the UI charts variants side by side
    assert all("finetuned/main" in r.data.metrics for r in plan if r.data.tags.get("sweep.step", "") != "pretrain")
    full_msrvtt = next(r for r in plan if r.info.run_name == "msrvtt_retrieval/full/seed0")
    children = {stage_of(r.info.run_name): r for r in runs
                if r.data.tags.get("mlflow.parentRunId") == full_msrvtt.info.run_id}
    assert all(r.info.run_name.startswith("msrvtt_retrieval/full/seed0 · ") for r in children.values())
    assert set(children) == {"evaluate/initial", "finetune/msrvtt_retrieval", "evaluate/finetuned"}
    for run in children.values():
        missing = [t for t in RUN_TAGS if not run.data.tags.get(t)]
        assert not missing, (run.info.run_name, missing)
    for point in ("initial", "finetuned"):
        metrics = children[f"evaluate/{point}"].data.metrics
        for direction in ("t2v", "v2t", "t2va", "va2t", "t2a", "a2t"):
            for metric in ("R1", "R5", "R10", "MdR", "MnR"):
                assert f"{direction}/{metric}" in metrics
    finetune = children["finetune/msrvtt_retrieval"]
    assert finetune.data.tags["selection_split"] == "train_9k-heldout"  # paper protocol: never the test split
    assert len(client.get_metric_history(finetune.info.run_id, "select/score")) == 2
    assert len(client.get_metric_history(finetune.info.run_id, "train/loss")) >= 2
    artifacts = [a.path for a in client.list_artifacts(children["evaluate/finetuned"].info.run_id)]
    assert {"results.json", "queries.csv"} <= set(artifacts)
    assert "config.yaml" in [a.path for a in client.list_artifacts(full_msrvtt.info.run_id)]
    pretrain_plan = [r for r in plan if r.data.tags["sweep.step"] == "pretrain"]
    assert len(pretrain_plan) == 3
    for run in pretrain_plan:
        child = next(r for r in runs if r.data.tags.get("mlflow.parentRunId") == run.info.run_id)
        metrics, params = child.data.metrics, child.data.params
        assert child.data.tags["task"] == "audioset+howto100m"
        assert {"final/ta_loss", "final/va_loss", "final/tv_loss"} <= set(metrics)
        intra = run.data.tags["variant"] != "no_intra"
        assert params["loss.intra_modal"] == str(intra) and ("final/aa_loss" in metrics) == intra
        assert params["model.type_token"] == ("off" if run.data.tags["variant"] == "no_type_token" else "mix")
    captions = next(r for r in runs if stage_of(r.info.run_name) == "evaluate/finetuned"
                    and r.data.tags["task"] == "audiocaps_caption")
    assert {"Bleu_4", "METEOR", "ROUGE_L", "CIDEr"} <= set(captions.data.metrics)


@pytest.mark.slow
def test_smoke_comparison_report_covers_every_task_and_ablation(smoke_output):
    out, _, _ = smoke_output
    report = (out / "report.md").read_text()
    for task in TASKS:
        assert f"## {task}" in report
    assert "CLIP4VLA (paper)" in report and "pending" in report and "(E)" in report
    ablations = report[report.index("## Ablations"):]
    for task in TASKS:
        for variant in VARIANTS[1:]:
            assert re.search(rf"\|\s*{task}\s*\|\s*{variant}\s*\|", ablations), (task, variant)
    assert "fingerprint" in report and "missing audio" in report
    assert "data:image/png;base64" in (out / "report.html").read_text()
    assert "\\toprule" in (out / "tables.tex").read_text()


@pytest.mark.slow
def test_smoke_records_count_the_planted_defects(smoke_output):
    out, _, _ = smoke_output
    record = _results(_run_folder(out, "msrvtt_retrieval"), "finetuned")
    # the generated test split plants one listed-but-missing video and one clip without an audio track
    assert record["counts"]["missing_video"] == 1 and record["counts"]["missing_audio"] == 1
    assert record["task"] == "msrvtt_retrieval" and record["split"] == "test_1k_a"
    assert record["environment"]["packages"]["torch"] and record["extra"]["data_manifest"]


@pytest.mark.slow
def test_finetuned_model_retrieves_far_above_chance(smoke_output):
    out, _, _ = smoke_output
    folder = _run_folder(out, "msrvtt_retrieval")
    finetuned, pretrained = _results(folder, "finetuned"), _results(folder, "initial")
    chance = finetuned["extra"]["chance_R1"]
    assert finetuned["metrics"]["t2v/R1"] >= 3 * chance, finetuned["metrics"]
    assert pretrained["metrics"]["t2v/R1"] < 3 * chance, pretrained["metrics"]


@pytest.mark.slow
def test_evaluate_from_the_kept_checkpoint_reproduces_the_finetuned_scores(smoke_output, tmp_path):
    from benchmark.cli import main

    out, _, _ = smoke_output
    folder = _run_folder(out, "msrvtt_retrieval")
    checkpoint = folder / "checkpoints" / "finetune-msrvtt_retrieval"
    assert main(["evaluate", "msrvtt_retrieval", "--config", str(folder / "config.yaml"),
                 "--checkpoint", str(checkpoint), "--out", str(tmp_path)]) == 0
    again = json.loads((tmp_path / "runs" / "evaluated" / "results.json").read_text())["metrics"]
    finetuned = _results(folder, "finetuned")["metrics"]
    for direction in ("t2v", "v2t", "t2va"):
        assert again[f"{direction}/R1"] == pytest.approx(finetuned[f"{direction}/R1"])
    rows = (tmp_path / "runs" / "evaluated" / "queries.csv").read_text().splitlines()
    assert rows[0] == "direction,query,clip,rank,caption,top10" and len(rows) > 39
