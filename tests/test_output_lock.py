"""One writer per output folder (issue 12 item 4): a second invocation on a held `--out` is a one-line error
naming the holder; a lock left by a dead process is taken over with a warning; `sweep --only` on distinct keys
share the folder; a new SQLite store opened by several processes at once is migrated once."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
from helpers import one_line_stderr

from benchmark.cli import main
from benchmark.errors import UserError
from benchmark.output_lock import LOCK_NAME, hold_folder

REPO = Path(__file__).resolve().parents[1]
HOLDER = """
import sys
from benchmark.output_lock import hold_folder
with hold_folder(sys.argv[1], sys.argv[2] == "many"):  # many holders, or one
    if len(sys.argv) > 3:
        with hold_folder(sys.argv[3]):
            print("held", flush=True); sys.stdin.read()
    else:
        print("held", flush=True); sys.stdin.read()
"""


@contextmanager
def held_elsewhere(folder: Path, shared: bool = False, run_folder: Path | None = None):
    """`folder` (and `run_folder`) held by another process for the block, as another invocation would."""
    args = [sys.executable, "-c", HOLDER, str(folder), "many" if shared else "one"]
    holder = subprocess.Popen([*args, *([str(run_folder)] if run_folder else [])], cwd=REPO, text=True,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert holder.stdout.readline().strip() == "held"
        yield holder.pid
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)


def test_a_second_invocation_on_a_held_folder_is_a_one_line_error_naming_the_holder(tmp_path, capsys):
    with held_elsewhere(tmp_path) as pid:
        assert main(["finetune", "msrvtt_retrieval", "--out", str(tmp_path), f"data.root={tmp_path}"]) == 2
        message = one_line_stderr(capsys)
    assert f"{tmp_path} is in use by pid {pid} on host" in message and "another --out" in message
    assert main(["finetune", "msrvtt_retrieval", "--out", str(tmp_path), "data.root="]) == 2  # released: next error
    assert "data.root is not set" in one_line_stderr(capsys)


def test_a_lock_left_by_a_dead_process_is_taken_over_with_a_warning(tmp_path, caplog):
    (tmp_path / LOCK_NAME).write_text("pid 999999 on host gone, since 2026-01-01 00:00:00: clip4vla sweep x\n")
    with caplog.at_level(logging.WARNING, "clip4vla"), hold_folder(tmp_path):
        written = (tmp_path / LOCK_NAME).read_text()
    assert "took over the lock" in caplog.text and "pid 999999 on host gone" in caplog.text
    assert "pid 999999" not in written and written.startswith("pid ")
    assert (tmp_path / LOCK_NAME).read_text() == ""  # released cleanly: the next holder takes it silently


def test_a_shared_holder_clears_a_dead_holders_name(tmp_path, capsys):
    """After an exclusive holder died, `sweep --only` jobs (shared) hold the folder: the refusal of a third
    invocation must not name the dead process."""
    (tmp_path / LOCK_NAME).write_text("pid 999999 on host gone, since 2026-01-01 00:00:00: clip4vla sweep x\n")
    with held_elsewhere(tmp_path, shared=True):
        assert main(["finetune", "msrvtt_retrieval", "--out", str(tmp_path), f"data.root={tmp_path}"]) == 2
        message = one_line_stderr(capsys)
    assert "pid 999999" not in message and "sweep --only" in message


def test_a_filesystem_without_locks_warns_and_goes_on(tmp_path, monkeypatch, caplog):
    import errno
    import fcntl

    def flock(f, operation):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", flock)
    with caplog.at_level(logging.WARNING, "clip4vla"), hold_folder(tmp_path):
        ran = True
    assert ran and "cannot lock" in caplog.text and "No locks available" in caplog.text


def test_one_process_may_hold_a_folder_twice(tmp_path):
    with hold_folder(tmp_path), hold_folder(tmp_path), hold_folder(tmp_path, shared=True):
        pass
    with hold_folder(tmp_path):  # and it was released
        pass


SUITE = """
suite: lock
base: {model: {clip_name: tiny-clip4vla, pretrained: null}, finetune: {max_steps: 1}}
variants: {full: {}, mix0: {overrides: {model.type_mix: 0.0}}}
plan:
  - {name: ft, stage: finetune, config: {task: audiocaps_retrieval}}
"""


def test_only_jobs_on_distinct_keys_share_a_folder_and_the_same_key_is_refused(tmp_path, monkeypatch):
    from benchmark import sweep
    from benchmark.pipeline import Progress

    suite = tmp_path / "suite.yaml"
    suite.write_text(textwrap.dedent(SUITE))
    out = tmp_path / "out"
    runs = sweep.expand(sweep.load_suite(suite), [f"data.root={tmp_path}"])
    first, second = runs
    ran = []
    monkeypatch.setattr(sweep, "reproduce", lambda cfg, folder, *args, **kwargs: ran.append(folder.name))
    with held_elsewhere(out, shared=True, run_folder=out / "runs" / first.folder):  # another machine: key 1
        sweep.run_sweep(suite, out, [f"data.root={tmp_path}"], Progress(), only=second.key)
        assert ran == [second.folder]
        with pytest.raises(UserError, match=f"runs/{first.folder} is in use by pid"):
            sweep.run_sweep(suite, out, [f"data.root={tmp_path}"], Progress(), only=first.key)
        with pytest.raises(UserError, match="in use by `clip4vla sweep --only` jobs"):
            sweep.run_sweep(suite, out, [f"data.root={tmp_path}"], Progress())
    assert ran == [second.folder]


RACE = """
import sys, time
from benchmark.tracking import Tracker
while time.time() < float(sys.argv[2]):
    pass
with Tracker(f"sqlite:///{sys.argv[1]}/mlruns.db", "race").run("r") as run:
    run.log_metrics({"a": 1.0})
print("ok")
"""


@pytest.mark.slow
def test_three_processes_opening_a_new_sqlite_store_at_once_all_succeed(tmp_path):
    """Unlocked, two of three fail on MLflow's schema migration (`ALTER TABLE metrics ...`) and the store is
    left half-migrated."""
    start = str(time.time() + 5)  # past the imports of all three
    procs = [subprocess.Popen([sys.executable, "-c", RACE, str(tmp_path), start], cwd=REPO, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(3)]
    results = [p.communicate(timeout=120) for p in procs]
    assert [out.strip() for out, _ in results] == ["ok"] * 3, [err[-300:] for _, err in results]
