"""Launchers: jobs that wait for each other, on SLURM or on this machine, through submitit.

A job is a command and the jobs it waits for. `slurm` submits every job at once with sbatch, each with an
`afterok` dependency on the jobs it waits for, so SLURM starts it only when they all finished successfully.
A run's job is submitted once: a rerun while it is still queued or running (squeue lists it) waits for
that job instead of submitting a second, which would train the same run twice and, failing on its folder's
lock, cancel what waits for it. `local` runs the same jobs with submitit's LocalExecutor, one at a time in
the given order (LocalExecutor has no dependencies, and one at a time leaves every GPU of the machine to the
job that runs); a job whose dependency failed is not started, as under `afterok`.

What a job asks for (partition, GPUs, CPUs, time limit) is a `Resources`. A job with more than one GPU runs its
command under `torchrun --standalone` on one node: one process per GPU.
"""

from __future__ import annotations

import getpass
import io
import json
import os
import re
import shlex
import shutil
import subprocess
from collections.abc import Callable
from contextlib import redirect_stderr
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmark.errors import UserError
from benchmark.media.store import write_atomically
from benchmark.registry import closest

LAUNCHERS = ("local", "slurm")
RESOURCE_KEYS = ("partition", "gpus", "cpus", "time")
# SLURM's --time formats without its ambiguous ones ("2:00" is 2 minutes to SLURM, 2 hours to a reader)
TIME_FORMAT = re.compile(r"(?:(?P<days>\d+)-)?(?P<hours>\d+):(?P<minutes>[0-5]\d):(?P<seconds>[0-5]\d)|(?P<plain>\d+)")
# LocalExecutor always stops a job at its time limit (2 minutes unless told): a year stands for none
NO_TIME_LIMIT_MIN = 365 * 24 * 60


@dataclass(frozen=True)
class Resources:
    """What each job asks for."""

    partition: str | None = None  # SLURM partition; None: the cluster's default
    gpus: int = 1  # per job, on one node; more than one runs the command under torchrun
    cpus: int | None = None  # per job; None: the scheduler's default
    minutes: int | None = None  # time limit; SLURM needs one, local jobs have none unless given


@dataclass(frozen=True)
class Job:
    """A command for the scheduler and the jobs it waits for."""

    name: str
    command: list[str]
    after: tuple[Job, ...] = ()  # jobs that must finish successfully before this one starts
    uses_gpus: bool = True  # False: asks for no GPU whatever the resources say (the report)
    queued_once: bool = True  # a run: never queued twice (a rerun waits for its job); False: the report


def read_resources(values: dict[str, Any], name: Callable[[str], str]) -> dict[str, Any]:
    """Checked `Resources` fields from a suite's `launcher:` section or the command line's flags (strings);
    `name(key)` is how a one-line error names the setting."""
    fields: dict[str, Any] = {}
    for key, value in values.items():
        if key == "partition":
            if not isinstance(value, str) or not value or any(c.isspace() for c in value):
                raise UserError(f"{name(key)}: expected a SLURM partition name, got {value!r}")
            fields["partition"] = value
        elif key in ("gpus", "cpus"):
            least = 0 if key == "gpus" else 1
            number = int(value) if isinstance(value, str) and value.isdigit() else value
            if isinstance(number, bool) or not isinstance(number, int) or number < least:
                raise UserError(f"{name(key)}: expected a whole number >= {least} per job, got {value!r}")
            fields[key] = number
        elif key == "time":
            fields["minutes"] = time_limit(value, name(key))
    return fields


def time_limit(value: Any, where: str) -> int:
    """Minutes from SLURM's time formats: MINUTES, HH:MM:SS or D-HH:MM:SS (seconds round up)."""
    if not isinstance(value, str):  # unquoted, YAML reads 12:00:00 as the sexagesimal number 43200
        raise UserError(f"{where}: write the time limit as a quoted string, e.g. '12:00:00' or '2-00:00:00', "
                        f"got {value!r}")
    match = TIME_FORMAT.fullmatch(value.strip())
    if match is None:
        raise UserError(f"{where}: expected minutes (90), HH:MM:SS or D-HH:MM:SS, got {value!r}")
    part = {k: int(v or 0) for k, v in match.groupdict().items()}
    minutes = part["plain"] or (part["days"] * 24 + part["hours"]) * 60 + part["minutes"] + (part["seconds"] > 0)
    if minutes < 1:
        raise UserError(f"{where}: the time limit must be at least one minute, got {value!r}")
    return minutes


def check_launcher(kind: str, resources: Resources) -> None:
    """Fail in one line, before any work, when `kind` cannot run jobs with these resources here."""
    if kind not in LAUNCHERS:
        raise UserError(f"unknown launcher '{kind}'{closest(kind, list(LAUNCHERS))} (known: {', '.join(LAUNCHERS)})")
    if kind == "slurm":
        for tool in ("sbatch", "srun"):  # submitit submits with sbatch, and its jobs start under srun
            if shutil.which(tool) is None:
                raise UserError(f"{tool} not found: --launcher slurm submits to SLURM; run it where SLURM's "
                                "commands are on PATH (a login node), or use --launcher local")
        if resources.minutes is None:
            raise UserError("--launcher slurm needs a time limit per job: set launcher.time in the suite or give "
                            "--time (e.g. 12:00:00)")
    else:
        local_gpus(resources.gpus)


def local_gpus(gpus: int) -> tuple[int, ...]:
    """The GPU indices local jobs take theirs from: CUDA_VISIBLE_DEVICES when set (LocalExecutor sets it for every
    job, from 0 unless told)."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is None:
        return ()
    ids = [part.strip() for part in listed.split(",") if part.strip()]
    if not all(part.isdigit() for part in ids):
        raise UserError(f"--launcher local: CUDA_VISIBLE_DEVICES={listed!r} is not a list of GPU indices")
    if gpus > len(ids):
        raise UserError(f"--launcher local: {gpus} GPUs per job, but CUDA_VISIBLE_DEVICES={listed!r} lists "
                        f"{len(ids)}; give --gpus {len(ids)}")
    return tuple(int(part) for part in ids)


@dataclass(frozen=True)
class JobBody:
    """What every job runs: its command, with the output in the job's log; a failed command fails the job."""

    command: list[str]

    def __call__(self) -> None:
        returncode = subprocess.run(self.command).returncode
        if returncode:
            raise RuntimeError(f"{self.command[0]} exited with status {returncode}")

    def checkpoint(self) -> Any:
        """What submitit requeues a pre-empted job with, or one stopped at its time limit (up to 3 times): the
        same command, a sweep run, which resumes from its newest checkpoint."""
        from submitit.helpers import DelayedSubmission

        return DelayedSubmission(self)


def job_gpus(job: Job, resources: Resources) -> int:
    """The GPUs this job asks for."""
    return resources.gpus if job.uses_gpus else 0


def job_body(job: Job, resources: Resources) -> JobBody:
    """What the job runs: its command, under torchrun (one process per GPU) when it has several GPUs."""
    gpus = job_gpus(job, resources)
    if gpus <= 1:
        return JobBody(job.command)
    return JobBody(["torchrun", "--standalone", f"--nproc_per_node={gpus}", "--no-python", *job.command])


def launch(kind: str, jobs: list[Job], resources: Resources, folder: Path, say: Callable[[str], None]) -> None:
    """Run `jobs` (each after the jobs it waits for, which come earlier in the list); submitit keeps each job's
    files and logs in folder/<job id>/."""
    (submit_to_slurm if kind == "slurm" else run_here)(jobs, resources, folder, say)


def submit_to_slurm(jobs: list[Job], resources: Resources, folder: Path, say: Callable[[str], None]) -> None:
    """One sbatch per job, in order, each with `afterok` on the ids of the jobs it waits for; a run whose job from
    an earlier submission is still queued or running is not submitted again, and what waits for it waits for
    that job (folder/submitted.json keeps each run job's id)."""
    from submitit import SlurmExecutor
    from submitit.core.utils import FailedJobError

    executor = SlurmExecutor(folder / "%j")
    ledger = folder / "submitted.json"
    submitted: dict[str, str] = json.loads(ledger.read_text()) if ledger.is_file() else {}
    queued = still_queued(submitted)
    ids: dict[str, str] = {}
    for job in jobs:
        after = ":".join(ids[earlier.name] for earlier in job.after)
        if job.queued_once and job.name in queued:
            ids[job.name] = queued[job.name]
            say(f"{job.name}: SLURM job {ids[job.name]} is still queued or running; not submitted again")
            continue
        executor.update_parameters(job_name=job.name, partition=resources.partition, time=resources.minutes,
                                   cpus_per_task=resources.cpus, gpus_per_node=job_gpus(job, resources) or None,
                                   dependency=f"afterok:{after}" if after else None,
                                   # a job whose dependency failed is cancelled, not left pending for ever
                                   additional_parameters={"kill-on-invalid-dep": "yes"})
        try:
            with redirect_stderr(io.StringIO()):  # submitit prints sbatch's complaint, which the error below holds
                ids[job.name] = executor.submit(job_body(job, resources)).job_id
        except FailedJobError as exc:
            new = [ids[j.name] for j in jobs if j.name in ids and ids[j.name] != queued.get(j.name)]
            submitted = f"; withdraw the jobs submitted before it with: scancel {' '.join(new)}" if new else ""
            raise UserError(f"sbatch refused job {job.name}: {' '.join(str(exc).split())[:300]}{submitted}") from None
        if job.queued_once:
            submitted[job.name] = ids[job.name]
            write_atomically(ledger, json.dumps(submitted, indent=1))
        say(f"submitted {job.name}: SLURM job {ids[job.name]}" + (f", after {after.replace(':', ', ')}" * bool(after)))
    fresh = len([j for j in jobs if ids[j.name] != queued.get(j.name)])
    say(f"{fresh} jobs submitted; their logs: {folder}/<job id>/ (squeue --me shows them)")


def still_queued(submitted: dict[str, str]) -> dict[str, str]:
    """Of the run jobs submitted before (name -> job id), those squeue still lists (pending, running,
    completing), asked of SLURM only when there are any. A cluster whose squeue cannot answer is a one-line
    error: submitting blind could queue a run twice."""
    if not submitted:
        return {}
    command = ["squeue", "--noheader", "--format=%i", f"--user={getpass.getuser()}"]
    try:
        listed = subprocess.run(command, capture_output=True, text=True, check=True).stdout.split()
    except (OSError, subprocess.CalledProcessError) as exc:
        why = getattr(exc, "stderr", None) or exc
        raise UserError(f"cannot ask SLURM which of the {len(submitted)} run jobs submitted before are still queued "
                        f"({shlex.join(command)}: {' '.join(str(why).split())[:200]})") from None
    return {name: job_id for name, job_id in submitted.items() if job_id in set(listed)}


def run_here(jobs: list[Job], resources: Resources, folder: Path, say: Callable[[str], None]) -> None:
    """The jobs one after another on this machine; a job whose dependency failed is not started. Raises a
    one-line error naming the failed jobs when any failed."""
    from submitit import LocalExecutor
    from submitit.core.utils import FailedJobError, UncompletedJobError

    executor = LocalExecutor(folder / "%j")
    failed: list[str] = []
    for i, job in enumerate(jobs, 1):
        blocked = [earlier.name for earlier in job.after if earlier.name in failed]
        if blocked:
            failed.append(job.name)
            say(f"[{i}/{len(jobs)}] {job.name}: not started, since {blocked[0]} failed")
            continue
        gpus = job_gpus(job, resources)
        executor.update_parameters(timeout_min=resources.minutes or NO_TIME_LIMIT_MIN, gpus_per_node=gpus,
                                   visible_gpus=local_gpus(gpus))
        started = executor.submit(job_body(job, resources))
        say(f"[{i}/{len(jobs)}] {job.name}: started (log {started.paths.stdout.parent})")
        try:
            started.result()
        except (FailedJobError, UncompletedJobError):
            failed.append(job.name)
            say(f"[{i}/{len(jobs)}] {job.name}: failed: {failure_line(started.paths.stderr)}")
        except BaseException:  # interrupted: stop the job too (it runs in a process of its own)
            started.cancel(check=False)
            raise
        else:
            say(f"[{i}/{len(jobs)}] {job.name}: finished")
    if failed:
        raise UserError(f"{len(failed)} of {len(jobs)} jobs failed or did not start ({', '.join(failed)}); "
                        f"their logs: {folder}/<job id>/")


def failure_line(log: Path) -> str:
    """Why a job failed: the one-line error of the clip4vla command it ran, else the last line of its log
    (submitit writes its own traceback after the command's output)."""
    lines = log.read_text(errors="replace").strip().splitlines() if log.is_file() else []
    said = [line for line in lines if line.startswith("clip4vla: ")] or lines
    return said[-1][:300] if said else f"no output (see {log})"
