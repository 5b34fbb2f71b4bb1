"""Logging to an `mlflow server` on loopback (the multi-machine setup), and finishing when it is unreachable."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from helpers import stage_of

from benchmark.cli import main


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    mlflow = shutil.which("mlflow") or str(Path(sys.executable).with_name("mlflow"))
    folder = tmp_path_factory.mktemp("server")
    port = _free_port()
    proc = subprocess.Popen([mlflow, "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
                             "--backend-store-uri", f"sqlite:///{folder}/store.db"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    uri = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):  # the server takes ~20 s to start on 2 cores
            try:
                if urllib.request.urlopen(f"{uri}/health", timeout=2).status == 200:
                    break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail("mlflow server did not start within 60 s")
        yield uri
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _evaluate(out, root, config):
    return main(["evaluate", "msrvtt_retrieval", "--config", str(config), "--out", str(out),
                 f"data.root={root}", "eval.bootstrap=0", "tracking.experiment=server-test"])


@pytest.mark.slow
def test_runs_are_logged_to_the_server(mlflow_server, msrvtt_small, tiny_config, tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    assert _evaluate(tmp_path / "out", msrvtt_small[0].parent, tiny_config) == 0
    client = MlflowClient(mlflow_server)
    runs = client.search_runs([client.get_experiment_by_name("server-test").experiment_id])
    names = {stage_of(r.info.run_name): r for r in runs}
    assert "evaluate/evaluated" in names and any(r.info.run_name.startswith(f"{tiny_config.stem} ") for r in runs)
    assert "t2va/R1" in names["evaluate/evaluated"].data.metrics
    assert not (tmp_path / "out" / "mlruns.db").exists()  # MLFLOW_TRACKING_URI won over the local default


def test_an_unreachable_server_still_finishes_with_local_results(msrvtt_small, tiny_config, tmp_path, monkeypatch,
                                                                 caplog):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{_free_port()}")
    with caplog.at_level("WARNING", logger="clip4vla"):
        assert _evaluate(tmp_path / "out", msrvtt_small[0].parent, tiny_config) == 0
    assert "cannot be reached" in caplog.text
    record = json.loads((tmp_path / "out" / "runs" / "evaluated" / "results.json").read_text())
    assert "t2v/R1" in record["metrics"]
    assert (tmp_path / "out" / "report.md").is_file()
