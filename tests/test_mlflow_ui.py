"""What the MLflow UI shows of a run (issue 15 item 3): readable unique names, the data it read as dataset inputs,
the 95% intervals as a table artifact instead of 60 metrics per evaluation (the report still reads them), and
system metrics while a stage trains."""

from __future__ import annotations

import csv
import json
import logging
import time

import pytest
from helpers import stage_of

from benchmark.cli import main
from benchmark.pipeline import say_where
from benchmark.progress import Progress
from benchmark.tracking import Tracker
from reports.collect import collect


@pytest.mark.slow
def test_an_evaluation_shows_its_data_names_and_intervals_in_the_ui_and_the_report_reads_them(
        msrvtt_small, tiny_config, tmp_path):
    out = tmp_path / "out"
    assert main(["evaluate", "msrvtt_retrieval", "--config", str(tiny_config), "--out", str(out),
                 f"data.root={msrvtt_small[0].parent}", "eval.bootstrap=50", "tracking.experiment=ui"]) == 0
    tracker = Tracker(f"sqlite:///{out}/mlruns.db", "ui", create=False)
    (run,) = [r for r in tracker.search() if stage_of(r["name"]) == "evaluate/evaluated"]
    plan = next(r for r in tracker.search() if r["run_id"] == run["parent"])
    assert plan["name"].startswith(f"{tiny_config.stem} msrvtt_retrieval ")  # what ran, then when
    assert run["name"] == f"{plan['name']} · evaluate/evaluated"
    assert not [k for k in run["metrics"] if k.startswith("ci95/")]  # the charts show scores, not interval ends
    with (out / "runs" / "evaluated" / "ci95.csv").open() as f:
        table = {row["metric"]: (float(row["ci95_low"]), float(row["ci95_high"])) for row in csv.DictReader(f)}
    assert "ci95.csv" in [a.path for a in tracker.client.list_artifacts(run["run_id"])]
    record = json.loads((out / "runs" / "evaluated" / "results.json").read_text())
    assert table == {k: tuple(v) for k, v in record["extra"]["ci95"].items()} and "t2va/R1" in table
    (dataset,) = tracker.client.get_run(run["run_id"]).inputs.dataset_inputs
    assert dataset.dataset.name == "msrvtt_retrieval/test_1k_a" and dataset.dataset.digest
    assert {t.key: t.value for t in dataset.tags} == {"mlflow.data.context": "evaluation"}
    assert json.loads(dataset.dataset.profile)["clips_used"] == record["counts"]["clips_used"]
    results, _, _ = collect(tracker)
    row = results[(results["direction"] == "t2va") & (results["metric"] == "R1")].iloc[0]
    assert (row["ci_low"], row["ci_high"]) == table["t2va/R1"]  # the report's interval, from results.json


def test_a_training_stage_logs_system_metrics_while_it_runs(tmp_path, capfd):
    tracker = Tracker(f"sqlite:///{tmp_path}/mlruns.db", "sys", tmp_path / "artifacts")
    with tracker.run("finetune/x") as run, run.system_metrics(0.2):
        time.sleep(1.0)
    assert "system_metrics_monitor" not in capfd.readouterr().err  # its 4 start/stop lines per stage: log noise
    metrics = tracker.client.get_run(run.run_id).data.metrics
    assert "system/cpu_utilization_percentage" in metrics and "system/system_memory_usage_megabytes" in metrics
    with tracker.run("finetune/y") as quiet, quiet.system_metrics(0):
        time.sleep(0.3)
    assert not tracker.client.get_run(quiet.run_id).data.metrics


def test_the_last_line_opens_the_runs_not_the_genai_overview(tmp_path, caplog):
    """MLflow 3.17's UI opens an experiment on its (empty) GenAI overview whatever the experiment's kind tag says;
    the line a job ends with names the page of the runs."""
    tracker = Tracker(f"sqlite:///{tmp_path}/mlruns.db", "ui", tmp_path / "artifacts")
    with caplog.at_level(logging.INFO, logger="clip4vla"):
        say_where(tracker, tmp_path, Progress())
    assert (f"MLflow: mlflow ui --backend-store-uri {tracker.uri}, then open http://127.0.0.1:5000/#/experiments/"
            f"{tracker.experiment_id}/runs?workflowType=machine_learning") in caplog.text
