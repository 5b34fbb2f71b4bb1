"""Sweeps as scheduler jobs: SLURM through a fake sbatch that records what submitit hands it, the local launcher
for real (a 3-run plan where one run starts from another), and the one-line errors of bad launcher settings."""

from __future__ import annotations

import logging
import os
import re
import shlex
import sys
from pathlib import Path

import pytest
from bad_inputs import BAD_LAUNCH_ARGS
from helpers import one_line_error, one_line_stderr, pretrain_then_finetune_suite

from benchmark.cli import main
from benchmark.launchers import Job, Resources, check_launcher, launch, time_limit
from benchmark.sweep import emit, expand, load_suite

REPO = Path(__file__).resolve().parents[1]
# pre -> ft (starts from pre), and ev, a zero-shot evaluation that starts from nothing
SUITE = pretrain_then_finetune_suite("launch", finetune="{max_steps: 2, batch_size: 8}") + """\
  - {name: ev, stage: evaluate, config: {task: vatex_retrieval}}
launcher: {partition: short, gpus: 0, cpus: 2, time: "00:30:00"}
"""
FAKE_SBATCH = """#!/bin/sh
# records the batch script submitit wrote and answers as sbatch does, with job ids 1001, 1002, ...
n=$(( $(ls "{record}" | wc -l) + 1001 ))
if [ -n "$REFUSE_FROM" ] && [ "$n" -ge "$REFUSE_FROM" ]; then
    echo "sbatch: error: QOSMaxSubmitJobPerUserLimit" >&2
    exit 1
fi
cp "$1" "{record}/$n.sh"
echo "Submitted batch job $n"
"""
# lists the job ids in {queued} (one per line) as squeue --noheader --format=%i does; exits 1 with SQUEUE_DOWN
FAKE_SQUEUE = """#!/bin/sh
if [ -n "$SQUEUE_DOWN" ]; then
    echo "squeue: error: Unable to contact slurm controller (connect failure)" >&2
    exit 1
fi
cat "{queued}" 2>/dev/null
exit 0
"""


def write_suite(tmp_path, text=SUITE) -> Path:
    path = tmp_path / "launch.yaml"
    path.write_text(text)
    return path


@pytest.fixture
def fake_slurm(tmp_path, monkeypatch) -> Path:
    """sbatch, squeue and srun on PATH: sbatch keeps each batch script as <job id>.sh in the returned folder;
    squeue lists the ids written to its sibling file `queued`."""
    record, bin_dir = tmp_path / "sbatch-record", tmp_path / "bin"
    record.mkdir()
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text(FAKE_SBATCH.replace("{record}", str(record)))
    (bin_dir / "squeue").write_text(FAKE_SQUEUE.replace("{queued}", str(tmp_path / "queued")))
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 0\n")  # submitit looks for it; the jobs never run here
    for tool in ("sbatch", "squeue", "srun"):
        (bin_dir / tool).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return record


def sbatch_flags(script: Path) -> dict[str, str]:
    return dict(re.findall(r"^#SBATCH --([\w-]+)=(.*)$", script.read_text(), flags=re.M))


def submitted_command(out: Path, job_id: str) -> list[str]:
    """The command a submitted job runs, from the pickle submitit hands the job."""
    from submitit.core.utils import DelayedSubmission

    body = DelayedSubmission.load(out / "jobs" / job_id / f"{job_id}_submitted.pkl").function
    assert body.checkpoint().function == body  # requeued at its time limit: the same command, which resumes
    return body.command


def test_slurm_jobs_wait_for_the_run_they_start_from_and_a_finished_one_is_not_waited_for(tmp_path, fake_slurm):
    suite, out = write_suite(tmp_path), tmp_path / "out"
    args = ["sweep", str(suite), "--out", str(out), "--launcher", "slurm", "--gpus", "4", "--time", "12:00:00",
            "data.root=/data"]
    assert main(args) == 0
    scripts = {p.stem: sbatch_flags(p) for p in sorted(fake_slurm.glob("*.sh"))}
    assert sorted(scripts) == ["1001", "1002", "1003", "1004"]  # pre, ft, ev, then the report
    runs = expand(load_suite(suite), ["data.root=/data"])
    assert [scripts[i]["job-name"] for i in scripts] == [f"launch:{r.step.name}:{r.key[:10]}" for r in runs] + [
        "launch:report"]
    assert "dependency" not in scripts["1001"] and "dependency" not in scripts["1003"]
    assert scripts["1002"]["dependency"] == "afterok:1001"  # ft starts from pre's checkpoint
    assert scripts["1004"]["dependency"] == "afterok:1001:1002:1003"
    for job_id in ("1001", "1002", "1003"):  # the command line's --gpus and --time win; the suite gives the rest
        assert {k: scripts[job_id][k] for k in ("partition", "cpus-per-task", "gpus-per-node", "time")} == {
            "partition": "short", "cpus-per-task": "2", "gpus-per-node": "4", "time": "720"}
    assert "gpus-per-node" not in scripts["1004"]  # the report needs no GPU
    # each run's job is the command --emit prints, under torchrun for its 4 GPUs
    emitted = [line for line in emit(load_suite(suite), runs, set(), out, ["data.root=/data"]).splitlines()
               if not line.startswith("#")]
    for job_id, line in zip(("1001", "1002", "1003"), emitted, strict=True):
        assert submitted_command(out, job_id) == ["torchrun", "--standalone", "--nproc_per_node=4", "--no-python",
                                                  *shlex.split(line)]
    report = submitted_command(out, "1004")
    assert report[:2] == ["clip4vla", "report"] and report[report.index("--experiment") + 1] == "clip4vla-launch"

    mark_finished(out, runs[0].key)  # pre finished: ft starts from it without waiting, and pre is not submitted
    assert main(args) == 0
    again = {p.stem: sbatch_flags(p) for p in sorted(fake_slurm.glob("*.sh")) if p.stem > "1004"}
    assert [again[i]["job-name"].split(":")[1] for i in again] == ["ft", "ev", "report"]
    assert "dependency" not in again["1005"] and again["1007"]["dependency"] == "afterok:1005:1006"


def test_a_rerun_while_run_jobs_are_queued_waits_for_them_instead_of_submitting_them_again(tmp_path, fake_slurm):
    """Submitted twice, a queued run would train twice, and the second job, stopped by the run folder's lock,
    would cancel everything waiting on it (afterok)."""
    suite, out = write_suite(tmp_path), tmp_path / "out"
    args = ["sweep", str(suite), "--out", str(out), "--launcher", "slurm", "data.root=/data"]
    assert main(args) == 0  # pre 1001, ft 1002, ev 1003, report 1004
    (tmp_path / "queued").write_text("1001\n1002\n")  # pre and ft wait or run; ev failed, the report was cancelled
    assert main(args) == 0
    again = {p.stem: sbatch_flags(p) for p in sorted(fake_slurm.glob("*.sh")) if p.stem > "1004"}
    assert [again[i]["job-name"].split(":")[1] for i in again] == ["ev", "report"]
    assert again["1006"]["dependency"] == "afterok:1001:1002:1005"


def test_a_cluster_whose_squeue_cannot_answer_is_a_one_line_error_before_any_submission(
        tmp_path, fake_slurm, monkeypatch, capsys):
    suite, out = write_suite(tmp_path), tmp_path / "out"
    args = ["sweep", str(suite), "--out", str(out), "--launcher", "slurm", "data.root=/data"]
    assert main(args) == 0
    capsys.readouterr()
    monkeypatch.setenv("SQUEUE_DOWN", "1")
    assert main(args) != 0
    line = one_line_stderr(capsys)
    assert "cannot ask SLURM which of the 3 run jobs submitted before are still queued" in line
    assert "Unable to contact slurm controller" in line
    assert sorted(p.stem for p in fake_slurm.glob("*.sh")) == ["1001", "1002", "1003", "1004"]


def mark_finished(out: Path, key: str) -> None:
    """A FINISHED plan run with this key in the suite's store, as a finished job leaves it."""
    from benchmark.tracking import Tracker

    tracker = Tracker(f"sqlite:///{out}/mlruns.db", "clip4vla-launch", create=False)
    run = tracker.client.create_run(tracker.experiment_id, tags={"sweep.key": key, "role": "plan-run"})
    tracker.client.set_terminated(run.info.run_id, "FINISHED")


def test_slurm_needs_a_time_limit(tmp_path, fake_slurm, capsys):
    suite = write_suite(tmp_path, SUITE.replace(', time: "00:30:00"', ""))
    assert main(["sweep", str(suite), "--out", str(tmp_path / "out"), "--launcher", "slurm"]) == 2
    assert "--launcher slurm needs a time limit per job: set launcher.time" in one_line_stderr(capsys)
    assert not (tmp_path / "out").exists()


def test_a_refused_submission_names_the_jobs_to_withdraw(tmp_path, fake_slurm, monkeypatch, capsys):
    monkeypatch.setenv("REFUSE_FROM", "1003")  # the user's limit of queued jobs is reached at the third
    assert main(["sweep", str(write_suite(tmp_path)), "--out", str(tmp_path / "out"), "--launcher", "slurm"]) == 2
    line = one_line_stderr(capsys)
    assert "sbatch refused job launch:ev:" in line and "QOSMaxSubmitJobPerUserLimit" in line
    assert line.endswith("withdraw the jobs submitted before it with: scancel 1001 1002")


@pytest.mark.slow
def test_local_jobs_finish_in_order_and_a_rerun_submits_nothing(tmp_path, generated, monkeypatch, caplog):
    root, _ = generated
    suite, out = write_suite(tmp_path), tmp_path / "out"
    # the jobs run `clip4vla` from this checkout, with its own store in the output folder
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    args = ["sweep", str(suite), "--out", str(out), "--launcher", "local", f"data.root={root}"]
    assert main(args) == 0
    from benchmark.tracking import Tracker

    tracker = Tracker(f"sqlite:///{out}/mlruns.db", "clip4vla-launch", create=False)
    plan = {r["tags"]["sweep.step"]: tracker.client.get_run(r["run_id"]).info
            for r in tracker.search() if r["tags"].get("role") == "plan-run"}
    assert {step: info.status for step, info in plan.items()} == {"pre": "FINISHED", "ft": "FINISHED",
                                                                 "ev": "FINISHED"}
    assert plan["pre"].end_time <= plan["ft"].start_time  # ft started from pre's checkpoint, after it
    assert (out / "report.md").is_file()  # the last job's
    jobs, runs = sorted((out / "jobs").iterdir()), tracker.search()

    caplog.clear()
    assert main(args) == 0
    assert sorted((out / "jobs").iterdir()) == jobs and len(tracker.search()) == len(runs)
    assert "all 3 runs finished in the store; nothing to submit" in caplog.text


def test_a_local_job_whose_dependency_failed_does_not_start(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    order = tmp_path / "order.txt"

    def append(word: str) -> list[str]:
        return ["sh", "-c", f"echo {word} >> {order}"]

    first = Job("first", append("first"))
    broken = Job("broken", ["sh", "-c", "echo 'clip4vla: error: a broken run' >&2; exit 2"])
    jobs = [first, broken, Job("after-broken", append("after-broken"), (broken,)),
            Job("after-first", append("after-first"), (first,))]
    one_line_error(lambda: launch("local", jobs, Resources(gpus=0), tmp_path / "jobs", logging.getLogger().info),
                   "2 of 4 jobs failed or did not start (broken, after-broken)")
    assert order.read_text().split() == ["first", "after-first"]
    assert "broken: failed: clip4vla: error: a broken run" in caplog.text
    assert "after-broken: not started, since broken failed" in caplog.text


@pytest.mark.parametrize(("args", "message"), BAD_LAUNCH_ARGS)
def test_bad_launcher_arguments_are_one_line_before_any_work(tmp_path, monkeypatch, capsys, args, message):
    monkeypatch.setenv("PATH", str(tmp_path / "no-bin"))  # no sbatch here
    out = tmp_path / "out"
    assert main(["sweep", str(write_suite(tmp_path)), "--out", str(out), *args]) == 2
    assert message in one_line_stderr(capsys)
    assert not out.exists()


@pytest.mark.parametrize(("launcher", "message"), [
    ("{partiton: gpu}", "launch.yaml: launcher: unknown key 'partiton'; did you mean 'partition'?"),
    ("{time: 12:00:00}", "launcher.time: write the time limit as a quoted string, e.g. '12:00:00'"),  # YAML: 43200
    ("{gpus: -1}", "launcher.gpus: expected a whole number >= 0 per job, got -1"),
    ("{cpus: 1.5}", "launcher.cpus: expected a whole number >= 1 per job, got 1.5"),
    ("[gpu, 4]", "launcher must be a mapping of partition, gpus, cpus, time"),
])
def test_suite_launcher_mistakes_are_one_line_errors(tmp_path, launcher, message):
    text = re.sub(r"^launcher: .*$", f"launcher: {launcher}", SUITE, flags=re.M)
    one_line_error(lambda: load_suite(write_suite(tmp_path, text)), message)


def test_local_gpus_come_from_cuda_visible_devices(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-5f2e")
    one_line_error(lambda: check_launcher("local", Resources(gpus=1)), "CUDA_VISIBLE_DEVICES='GPU-5f2e' is not")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    one_line_error(lambda: check_launcher("local", Resources(gpus=4)), "4 GPUs per job", "lists 2; give --gpus 2")
    check_launcher("local", Resources(gpus=2))


@pytest.mark.parametrize(("text", "minutes"), [("90", 90), ("12:00:00", 720), ("2-00:00:00", 2880),
                                               ("00:00:30", 1), ("1-02:03:04", 1564)])  # seconds round up
def test_time_limits_read_slurms_formats_in_minutes(text, minutes):
    assert time_limit(text, "--time") == minutes
