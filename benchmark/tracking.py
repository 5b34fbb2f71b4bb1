"""MLflow tracking; the only module that imports mlflow (architecture.md).

One experiment per suite, one parent run per invocation, and nested runs per stage. The embedded default is a
SQLite store in the output folder (MLflow 3 refuses the old ./mlruns file store), with artifacts next to it;
MLFLOW_TRACKING_URI, when set, wins over the default.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

MAX_PARAM_LENGTH = 500  # long values (lists) are cut; the full config is logged as an artifact


def default_uri(out_dir: Path, configured: str | None = None) -> str:
    """configured > $MLFLOW_TRACKING_URI > sqlite:///<out_dir>/mlruns.db."""
    return configured or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path(out_dir).resolve()}/mlruns.db"


class TrackedRun:
    """A started MLflow run: log metrics, params, tags and artifacts."""

    def __init__(self, client: Any, run_id: str) -> None:
        self.client = client
        self.run_id = run_id

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, step or 0) for k, v in metrics.items()]
        self.client.log_batch(self.run_id, metrics=batch)

    def log_params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        batch = [Param(k, str(v)[:MAX_PARAM_LENGTH]) for k, v in params.items()]
        for start in range(0, len(batch), 100):  # MLflow accepts at most 100 params per batch
            self.client.log_batch(self.run_id, params=batch[start : start + 100])

    def set_tags(self, tags: dict[str, Any]) -> None:
        from mlflow.entities import RunTag

        self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_artifact(self, path: Path, folder: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), folder)


class NullRun:
    """A run that records nothing (ranks other than 0 under torchrun)."""

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        pass

    def log_params(self, params: dict[str, Any]) -> None:
        pass

    def set_tags(self, tags: dict[str, Any]) -> None:
        pass

    def log_artifact(self, path: Path, folder: str | None = None) -> None:
        pass


class Tracker:
    """An MLflow store and experiment; `run()` opens a (nested) run and closes it FINISHED or FAILED."""

    def __init__(self, uri: str, experiment: str, artifact_root: Path | None = None) -> None:
        for name in ("alembic", "mlflow.store.db.utils"):  # keep SQLite schema-migration chatter off the console
            logging.getLogger(name).setLevel(logging.WARNING)
        from mlflow.tracking import MlflowClient

        self.uri = uri
        self.client = MlflowClient(tracking_uri=uri)
        found = self.client.get_experiment_by_name(experiment)
        if found is not None:
            self.experiment_id = found.experiment_id
        else:
            location = Path(artifact_root).resolve().as_uri() if artifact_root else None
            self.experiment_id = self.client.create_experiment(experiment, artifact_location=location)

    @contextmanager
    def run(self, name: str, parent: TrackedRun | None = None, tags: dict[str, Any] | None = None
            ) -> Iterator[TrackedRun]:
        all_tags = {k: str(v) for k, v in (tags or {}).items()}
        if parent is not None:
            all_tags["mlflow.parentRunId"] = parent.run_id
        created = self.client.create_run(self.experiment_id, run_name=name, tags=all_tags)
        run = TrackedRun(self.client, created.info.run_id)
        try:
            yield run
        except BaseException:
            self.client.set_terminated(run.run_id, status="FAILED")
            raise
        self.client.set_terminated(run.run_id, status="FINISHED")

    def runs(self) -> list[Any]:
        """Every run of the experiment (for reports and tests)."""
        return self.client.search_runs([self.experiment_id], max_results=10_000)
