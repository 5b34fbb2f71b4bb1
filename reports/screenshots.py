"""README's screenshots, made from a smoke output in headless Chromium: the comparison report's summary, and the
MLflow UI's run list and its compare view of one plan step's variants (each plan run carries its main scores, so
variants chart side by side).

    python -m reports.screenshots SMOKE_OUT [--to reports/screenshots]

The MLflow UI is served from the smoke output's store on 127.0.0.1 for the duration, and stopped after.
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections import Counter
from pathlib import Path

from benchmark.errors import UserError
from benchmark.tracking import Tracker, experiment_names, runs_page

# as in tests/test_report_pages.py: root in throwaway containers needs --no-sandbox
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"]
WIDTH = 1280


def screenshot(url: str, path: Path, height: int, wait_ms: int) -> Path:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        raise UserError("screenshots need Chromium: apt install chromium")
    subprocess.run([browser, *CHROMIUM_FLAGS, f"--window-size={WIDTH},{height}", f"--virtual-time-budget={wait_ms}",
                    f"--screenshot={path}", url], check=True, capture_output=True, timeout=180)
    return path


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def serve_ui(uri: str, port: int) -> subprocess.Popen:
    """`mlflow ui` on 127.0.0.1:port, once it answers; raises UserError if it does not within a minute."""
    server = subprocess.Popen([sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host",
                               "127.0.0.1", "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                return server
        except OSError:
            time.sleep(0.5)
    server.terminate()
    raise UserError(f"mlflow ui on 127.0.0.1:{port} did not answer within 60 s")


def make_screenshots(smoke_out: Path, to: Path) -> list[Path]:
    smoke_out, to = Path(smoke_out).resolve(), Path(to)
    if not (smoke_out / "report.html").exists():
        raise UserError(f"{smoke_out} holds no report.html: give the --out folder of a finished `clip4vla smoke`")
    to.mkdir(parents=True, exist_ok=True)
    shots = [screenshot((smoke_out / "report.html").as_uri(), to / "report-summary.png", 900, 3000)]
    uri = f"sqlite:///{smoke_out / 'mlruns.db'}"
    names = experiment_names(uri)
    if not names:
        raise UserError(f"{smoke_out / 'mlruns.db'} holds no experiment")
    tracker = Tracker(uri, names[0], create=False)
    # the variants of the first plan step that has the most of them and main scores to compare (pre-training
    # plan runs have none)
    plan_runs = [r for r in reversed(tracker.search(finished_only=True)) if r["tags"].get("role") == "plan-run"
                 and any(key.endswith("/main") for key in r["metrics"])]
    if not plan_runs:
        raise UserError(f"{smoke_out / 'mlruns.db'} holds no finished plan run with a main score")
    step = Counter(r["tags"].get("sweep.step") for r in plan_runs).most_common(1)[0][0]
    compared = [r["run_id"] for r in plan_runs if r["tags"].get("sweep.step") == step]
    port = free_port()
    ui = serve_ui(uri, port)
    try:
        server, experiment = f"http://127.0.0.1:{port}", tracker.experiment_id
        shots.append(screenshot(runs_page(server, experiment), to / "mlflow-runs.png", 800, 20000))
        query = urllib.parse.urlencode({"runs": json.dumps(compared), "experiments": json.dumps([experiment])})
        shots.append(screenshot(f"{server}/#/compare-runs?{query}", to / "mlflow-compare.png", 1900, 20000))
    finally:
        ui.terminate()
        ui.wait(timeout=30)
    return shots


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("smoke_out", type=Path, help="the --out folder of a finished `clip4vla smoke`")
    parser.add_argument("--to", type=Path, default=Path(__file__).parent / "screenshots")
    args = parser.parse_args()
    for path in make_screenshots(args.smoke_out, args.to):
        print(path)


if __name__ == "__main__":
    main()
