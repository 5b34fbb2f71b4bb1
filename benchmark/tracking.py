"""MLflow tracking; the only module that imports mlflow (architecture.md).

One experiment per suite, one parent run per invocation, and nested runs per stage. The embedded default is a
SQLite store in the output folder (MLflow 3 refuses the old ./mlruns file store), with artifacts next to it;
MLFLOW_TRACKING_URI, when set, wins over the default.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

from benchmark.errors import UserError
from benchmark.output_lock import waiting_for
from benchmark.registry import closest

MAX_PARAM_LENGTH = 500  # long values (lists) are cut; the full config is logged as an artifact

# The MLflow 3 UI opens an experiment on its GenAI overview (traces, empty here) unless the experiment says it is
# model development: then on its runs, which chart and compare variants.
EXPERIMENT_KIND, MODEL_TRAINING = "mlflow.experimentKind", "custom_model_development"


def default_uri(out_dir: Path, configured: str | None = None) -> str:
    """configured > $MLFLOW_TRACKING_URI > sqlite:///<out_dir>/mlruns.db."""
    return configured or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path(out_dir).resolve()}/mlruns.db"


log = logging.getLogger("clip4vla")


def runs_page(server: str, experiment_id: str) -> str:
    """The experiment's run list in the MLflow UI. MLflow 3.17 opens an experiment on its GenAI overview (empty
    here) whatever the experiment's kind tag says; `workflowType=machine_learning` opens the runs."""
    return f"{server}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"


def brief(exc: Exception) -> str:
    """An exception as one short line."""
    return " ".join(str(exc).split())[:200]


def client_for(uri: str) -> Any:
    """An MlflowClient that fails in seconds, not after MLflow's minutes of retries, when a server is down."""
    logging.getLogger("alembic").setLevel(logging.WARNING)  # SQLite schema-migration chatter off the console
    # its SQLAlchemy tracebacks (a full disk: ~60 lines) repeat what the one-line warnings of TrackedRun say
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)
    # the system-metrics monitor's start / stop / "skip GPU" lines, 4 per training stage, tell a user nothing
    logging.getLogger("mlflow.system_metrics").setLevel(logging.WARNING)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # the report reads many small files
    if uri.startswith(("http://", "https://")):
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def experiment_names(uri: str) -> list[str]:
    """Experiments of a store, without MLflow's Default; a store that cannot be read is a UserError."""
    try:
        return [e.name for e in client_for(uri).search_experiments() if e.name != "Default"]
    except Exception as exc:  # unreachable server, unknown scheme, not a store
        raise UserError(f"cannot read the tracking store {uri}: {brief(exc)}") from None


def store_opening(uri: str):
    """A SQLite store is created and migrated by whoever opens it first: two invocations opening a new one at
    once left it half-migrated. They take turns (`<db>.lock`); servers do their own locking."""
    if uri.startswith("sqlite:///"):
        return waiting_for(Path(uri[len("sqlite:///"):] + ".lock"))
    return nullcontext()


class TrackedRun:
    """A started MLflow run: log metrics, params, tags and artifacts. If the store stops answering, the run
    says so once and goes on without it: results are still written locally."""

    def __init__(self, client: Any, run_id: str, reattached: bool = False, path: str = "", display: str = "") -> None:
        self.client = client
        self.run_id = run_id
        self.reattached = reattached  # continues a run of an earlier, interrupted invocation
        self.path = path  # its name under its parents' ("finetune/finetune"): a nested run never shares a parent's
        self.display = display  # its name in the MLflow UI
        self.lost = False

    def _send(self, call, *args, **kwargs) -> Any:
        """`call`'s answer, or None once the store stopped answering."""
        if self.lost:
            return None
        try:
            return call(*args, **kwargs)
        except Exception as exc:  # network errors come as several MLflow and requests types
            self.lost = True
            log.warning("MLflow stopped answering (%s); this run goes on and writes its results locally only",
                        brief(exc))
            return None

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, step or 0) for k, v in metrics.items()]
        self._send(self.client.log_batch, self.run_id, metrics=batch)

    def log_params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        values = {k: str(v)[:MAX_PARAM_LENGTH] for k, v in params.items()}
        if self.reattached:  # MLflow refuses to change a logged param: keep the first values, say what changed
            found = self._send(self.client.get_run, self.run_id)
            if found is None:
                return
            logged = found.data.params
            changed = sorted(k for k in values if k in logged and logged[k] != values[k])
            if changed:
                log.warning("resumed with %d changed settings (%s); MLflow keeps the first values, config.yaml "
                            "holds the current ones", len(changed), ", ".join(changed[:5]))
            values = {k: v for k, v in values.items() if k not in logged}
        batch = [Param(k, v) for k, v in values.items()]
        for start in range(0, len(batch), 100):  # MLflow accepts at most 100 params per batch
            self._send(self.client.log_batch, self.run_id, params=batch[start : start + 100])

    def set_tags(self, tags: dict[str, Any]) -> None:
        from mlflow.entities import RunTag

        self._send(self.client.log_batch, self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_artifact(self, path: Path, folder: str | None = None) -> None:
        self._send(self.client.log_artifact, self.run_id, str(path), folder)

    def log_input(self, name: str, digest: str, source: str, context: str, profile: dict[str, Any]) -> None:
        """A dataset the run read, as MLflow's run inputs (the UI's "Datasets used"): `digest` identifies its
        clips (the data manifest hash), `source` where it lives, `context` training / selection / evaluation."""
        from mlflow.entities import Dataset, DatasetInput, InputTag

        dataset = Dataset(name, digest[:36], "local", json.dumps({"uri": source}), profile=json.dumps(profile))
        self._send(self.client.log_inputs, self.run_id, [DatasetInput(dataset, [InputTag("mlflow.data.context",
                                                                                          context)])])

    @contextmanager
    def system_metrics(self, interval_s: float) -> Iterator[None]:
        """CPU, memory, disk, network and, with pynvml, GPU use as `system/...` metrics every `interval_s`
        seconds while the block runs (MLflow's own monitor, on a thread); 0: none."""
        if interval_s <= 0 or self.lost:
            yield
            return
        from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

        monitor = SystemMetricsMonitor(self.run_id, sampling_interval=interval_s, resume_logging=self.reattached,
                                       tracking_uri=self.client.tracking_uri)
        monitor.start()
        try:
            yield
        finally:
            monitor.finish()


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

    def log_input(self, name: str, digest: str, source: str, context: str, profile: dict[str, Any]) -> None:
        pass

    @contextmanager
    def system_metrics(self, interval_s: float) -> Iterator[None]:
        yield


class Tracker:
    """An MLflow store and experiment; `run()` opens a (nested) run and closes it FINISHED or FAILED."""

    def __init__(self, uri: str, experiment: str, artifact_root: Path | None = None, create: bool = True) -> None:
        self.uri = uri
        self.experiment = experiment
        self.offline = False
        try:
            with store_opening(uri):
                self.client = client_for(uri)
                found = self.client.get_experiment_by_name(experiment)
                if found is not None:
                    self.experiment_id = found.experiment_id
                    if create and EXPERIMENT_KIND not in found.tags:  # made before the kind was set
                        self.client.set_experiment_tag(self.experiment_id, EXPERIMENT_KIND, MODEL_TRAINING)
                elif not create:
                    names = experiment_names(uri)
                    raise UserError(f"no experiment '{experiment}' in {uri}{closest(experiment, names)} "
                                    f"(experiments there: {', '.join(names) or 'none'})")
                else:
                    self.experiment_id = self._create_experiment(artifact_root)
        except UserError:
            raise
        except Exception as exc:  # unreachable server, refused connection, bad store
            if not create:
                raise UserError(f"cannot read the tracking store {uri}: {brief(exc)}") from None
            if not uri.startswith(("http://", "https://")):
                raise
            self.offline = True
            log.warning("MLflow server %s cannot be reached (%s); the run goes on and writes its results locally "
                        "only", uri, brief(exc))

    def _create_experiment(self, artifact_root: Path | None) -> str:
        location = Path(artifact_root).resolve().as_uri() if artifact_root else None
        try:
            return self.client.create_experiment(self.experiment, artifact_location=location,
                                                 tags={EXPERIMENT_KIND: MODEL_TRAINING})
        except Exception:  # another machine created it between our lookup and now (a shared server)
            found = self.client.get_experiment_by_name(self.experiment)
            if found is None:
                raise
            return found.experiment_id

    def search(self, finished_only: bool = False) -> list[dict[str, Any]]:
        """Every run of the experiment (newest first) as {run_id, name, status, start_time, parent, tags, metrics,
        params}:
        the latest value of each metric. Empty when the store cannot be reached."""
        if self.offline:
            return []
        found, token = [], None
        while True:
            page = self.client.search_runs(
                [self.experiment_id], "attributes.status = 'FINISHED'" if finished_only else "",
                max_results=1000, order_by=["attributes.start_time DESC"], page_token=token)
            found += [{"run_id": r.info.run_id, "name": r.info.run_name, "status": r.info.status,
                       "start_time": r.info.start_time, "parent": r.data.tags.get("mlflow.parentRunId"),
                       "tags": dict(r.data.tags), "metrics": dict(r.data.metrics), "params": dict(r.data.params)}
                      for r in page]
            token = page.token
            if not token:
                return found

    def history(self, run_id: str, key: str) -> list[tuple[int, float]]:
        """(step, value) of one metric of one run, in step order; of a step logged twice (by a run that was
        killed after its last checkpoint and resumed from it), the value logged last."""
        latest = {}
        for m in sorted(self.client.get_metric_history(run_id, key), key=lambda m: m.timestamp):
            latest[m.step] = m.value
        return sorted(latest.items())

    def artifact_json(self, run_id: str, path: str) -> Any:
        """A JSON artifact of a run (e.g. an evaluation's results.json), or None when it has none or it cannot be
        read."""
        import tempfile

        try:
            with tempfile.TemporaryDirectory() as folder:
                local = self.client.download_artifacts(run_id, path, folder)
                return json.loads(Path(local).read_text())
        except Exception:  # no such artifact, a store without artifacts, a half-written file
            return None

    def set_tags(self, run_id: str, tags: dict[str, Any]) -> None:
        """Tag an existing run (e.g. a finished run that a new variant of a suite shares)."""
        TrackedRun(self.client, run_id).set_tags(tags)

    @contextmanager
    def run(self, name: str, parent: TrackedRun | NullRun | None = None, tags: dict[str, Any] | None = None,
            ledger: RunLedger | None = None, resume: bool = False, display: str | None = None
            ) -> Iterator[TrackedRun | NullRun]:
        """A run that ends FINISHED, or FAILED when the block raises. With a `ledger` (the output folder's record
        of its runs), `resume` reattaches to the run this name had there when it did not finish (or, inside a
        reattached parent, whatever its status), so a killed and resumed run is one MLflow run with a whole
        curve; without `resume`, a run the ledger shows RUNNING is marked KILLED: its process is gone, since
        this one holds the folder's lock. `display`: its name in the UI (default `name`)."""
        all_tags = {k: str(v) for k, v in (tags or {}).items()}
        if isinstance(parent, TrackedRun):
            all_tags["mlflow.parentRunId"] = parent.run_id
        if self.offline or (isinstance(parent, TrackedRun) and parent.lost):
            yield NullRun()
            return
        path = f"{parent.path}/{name}" if isinstance(parent, TrackedRun) else name  # the ledger's key
        try:
            run = self._reattach(path, parent, ledger) if ledger and resume else None
            if ledger and not resume:
                self._mark_killed(ledger.run_id(path, self))
            if run is None:
                created = self.client.create_run(self.experiment_id, run_name=display or name, tags=all_tags)
                run = TrackedRun(self.client, created.info.run_id, path=path, display=display or name)
            else:
                run.set_tags(all_tags)
        except Exception as exc:  # the store went away between runs
            log.warning("MLflow did not answer (%s); results are written locally only", brief(exc))
            self.offline = True
            yield NullRun()
            return
        if ledger:
            ledger.remember(path, run.run_id, self)
        try:
            yield run
        except BaseException:
            run._send(self.client.set_terminated, run.run_id, status="FAILED")
            raise
        run._send(self.client.set_terminated, run.run_id, status="FINISHED")

    def _reattach(self, path: str, parent: TrackedRun | NullRun | None, ledger: RunLedger) -> TrackedRun | None:
        """The ledger's run at `path`, set RUNNING again, when it may be continued (see `run`)."""
        run_id = ledger.run_id(path, self)
        if run_id is None:
            return None
        try:
            info = self.client.get_run(run_id).info
        except Exception:  # deleted from the store, or a store that was replaced: start a new run
            return None
        inside_resumed = isinstance(parent, TrackedRun) and parent.reattached
        if info.lifecycle_stage != "active" or (info.status == "FINISHED" and not inside_resumed):
            return None
        self.client.update_run(run_id, status="RUNNING")
        log.info("MLflow: continuing run %s (%s, was %s)", path, run_id, info.status)
        return TrackedRun(self.client, run_id, reattached=True, path=path, display=info.run_name)

    def _mark_killed(self, run_id: str | None) -> None:
        if run_id is None:
            return
        try:
            if self.client.get_run(run_id).info.status == "RUNNING":
                self.client.set_terminated(run_id, status="KILLED")
        except Exception:  # no longer in the store: nothing is left RUNNING
            return


class RunLedger:
    """`<folder>/mlflow_runs.json`: the MLflow run id of each run name an output folder has started, per store
    and experiment, so that `--resume` (and a sweep's rerun) continues those runs instead of opening new ones."""

    FILE = "mlflow_runs.json"

    def __init__(self, folder: Path) -> None:
        self.path = Path(folder) / self.FILE

    def _entries(self) -> dict[str, str]:
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):  # absent, or cut short by a kill: nothing to continue
            return {}

    @staticmethod
    def _key(name: str, tracker: Tracker) -> str:
        return f"{tracker.uri}|{tracker.experiment_id}|{name}"

    def run_id(self, name: str, tracker: Tracker) -> str | None:
        return self._entries().get(self._key(name, tracker))

    def remember(self, name: str, run_id: str, tracker: Tracker) -> None:
        entries = {**self._entries(), self._key(name, tracker): run_id}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(entries, indent=1))
        os.replace(tmp, self.path)
