"""The smoke path end to end, as a user runs it: the installed `clip4vla` command, from outside the repository."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess

import pytest

EXPECTED_RUNS = {"evaluate/initial", "pretrain", "evaluate/pretrained", "finetune/msrvtt_retrieval",
                 "evaluate/finetuned"}


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


def _results(out, point):
    return json.loads((out / "runs" / point / "results.json").read_text())


@pytest.mark.slow
def test_smoke_writes_only_into_its_output_folder(smoke_output):
    out, cwd, proc = smoke_output
    assert list(cwd.iterdir()) == []
    assert (out / "report.md").is_file() and (out / "mlruns.db").is_file()
    finetune_ckpts = out / "checkpoints" / "finetune-msrvtt_retrieval"
    assert list(finetune_ckpts.glob("step-*.pt")) and (finetune_ckpts / "best.json").is_file()
    assert "prepare data done" in proc.stderr and "finetune/msrvtt_retrieval step" in proc.stderr


@pytest.mark.slow
def test_smoke_logs_nested_mlflow_runs_with_metric_keys(smoke_output):
    from mlflow.tracking import MlflowClient

    out, _, _ = smoke_output
    client = MlflowClient(f"sqlite:///{out}/mlruns.db")
    experiment = client.get_experiment_by_name("clip4vla-smoke")
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if r.info.run_name == "smoke"]
    assert len(parents) == 1
    children = {r.info.run_name: r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id}
    assert set(children) == EXPECTED_RUNS
    assert all(r.info.status == "FINISHED" for r in runs)
    for point in ("initial", "pretrained", "finetuned"):
        metrics = children[f"evaluate/{point}"].data.metrics
        for direction in ("t2v", "v2t", "t2va", "va2t", "t2a", "a2t"):
            for metric in ("R1", "R5", "R10", "MdR", "MnR"):
                assert f"{direction}/{metric}" in metrics
    for stage in ("pretrain", "finetune/msrvtt_retrieval"):
        history = client.get_metric_history(children[stage].info.run_id, "train/loss")
        assert len(history) >= 2
    pretrain = children["pretrain"].data.metrics
    # paper losses; configs/smoke.yaml also trains L_TV (random weights have no CLIP alignment to keep)
    assert {"final/ta_loss", "final/va_loss", "final/aa_loss", "final/tv_loss"} <= set(pretrain)
    assert not any(k.endswith(("va_repeat_loss", "tt_loss", "vv_loss")) for k in pretrain)  # released-code only
    params = children["pretrain"].data.params
    assert params["protocol"] == "paper" and params["loss.intra_modal"] == "True"
    artifacts = [a.path for a in client.list_artifacts(children["evaluate/finetuned"].info.run_id)]
    assert "results.json" in artifacts
    finetune = children["finetune/msrvtt_retrieval"]
    assert finetune.data.tags["selection_split"] == "train_9k-heldout"  # paper protocol: never the test split
    assert len(client.get_metric_history(finetune.info.run_id, "select/score")) == 4
    assert children["pretrain"].data.tags["task"] == "audioset+howto100m"


@pytest.mark.slow
def test_smoke_report_and_records(smoke_output):
    out, _, _ = smoke_output
    report = (out / "report.md").read_text()
    for text in ("## Retrieval", "R@1", "## Training", "Protocol fingerprint"):
        assert text in report
    assert re.search(r"\|\s*finetuned\s*\|\s*t2va\s*\|", report)
    record = _results(out, "finetuned")
    # the generated test split plants one listed-but-missing video and one clip without an audio track
    assert record["counts"]["missing_video"] == 1 and record["counts"]["missing_audio"] == 1
    assert record["task"] == "msrvtt_retrieval" and record["split"] == "test_1k_a"
    assert record["environment"]["packages"]["torch"]


@pytest.mark.slow
def test_finetuned_model_retrieves_far_above_chance_and_untrained_does_not(smoke_output):
    out, _, _ = smoke_output
    finetuned, initial = _results(out, "finetuned"), _results(out, "initial")
    chance = finetuned["extra"]["chance_R1"]
    assert finetuned["metrics"]["t2v/R1"] >= 3 * chance, finetuned["metrics"]
    assert initial["metrics"]["t2v/R1"] < 3 * chance, initial["metrics"]


@pytest.mark.slow
def test_evaluate_from_the_kept_checkpoint_reproduces_the_finetuned_scores(smoke_output, tmp_path):
    from benchmark.cli import main
    from configs import path as config_path

    out, _, _ = smoke_output
    assert main(["evaluate", "msrvtt_retrieval", "--config", str(config_path("smoke.yaml")),
                 "--checkpoint", str(out / "checkpoints" / "finetune-msrvtt_retrieval"), "--out", str(tmp_path),
                 f"data.root={out / 'data'}"]) == 0
    again = json.loads((tmp_path / "runs" / "evaluated" / "results.json").read_text())["metrics"]
    finetuned = _results(out, "finetuned")["metrics"]
    for direction in ("t2v", "v2t", "t2va"):
        assert again[f"{direction}/R1"] == pytest.approx(finetuned[f"{direction}/R1"])
    rows = (tmp_path / "runs" / "evaluated" / "queries.csv").read_text().splitlines()
    assert rows[0] == "direction,query,clip,rank,caption,top10" and len(rows) > 39
