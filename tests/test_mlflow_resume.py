"""Interrupted runs in MLflow (issue 12 item 10): a resumed run continues the run its output folder started
(one run, a whole curve), a run whose process died is not left RUNNING, and a run stopped by an error (a
non-finite loss, a full disk) is FAILED."""

from __future__ import annotations

import logging

import pytest

from benchmark.errors import UserError
from benchmark.tracking import RunLedger, Tracker


def store(tmp_path) -> Tracker:
    return Tracker(f"sqlite:///{tmp_path}/mlruns.db", "resume", tmp_path / "artifacts")


NEVER_LEFT = []  # blocks entered and never left (kept alive: closing them would mark their runs FAILED)


@pytest.fixture(autouse=True)
def _close_blocks_left_open():
    yield
    NEVER_LEFT.clear()  # while this test's store is still there


def died_inside(tracker: Tracker, ledger: RunLedger, name: str = "finetune", **kwargs) -> str:
    """Start a run and never leave its block, as a process killed with SIGKILL; returns its id."""
    NEVER_LEFT.append(tracker.run(name, ledger=ledger, **kwargs))
    run = NEVER_LEFT[-1].__enter__()
    run.log_metrics({"train/loss": 2.0}, step=1)
    run.log_params({"data.root": "/first"})
    return run.run_id


def status(tracker: Tracker, run_id: str) -> str:
    return tracker.client.get_run(run_id).info.status


def test_resume_continues_the_run_a_killed_process_left_running(tmp_path, caplog):
    tracker, ledger = store(tmp_path), RunLedger(tmp_path / "out")
    dead = died_inside(tracker, ledger)
    with caplog.at_level(logging.WARNING, "clip4vla"), \
            store(tmp_path).run("finetune", ledger=ledger, resume=True) as run:
        assert run.run_id == dead
        run.log_metrics({"train/loss": 1.0}, step=2)
        run.log_params({"data.root": "/elsewhere", "seed": 0})  # a changed param does not stop tracking
    assert "resumed with 1 changed settings (data.root)" in caplog.text and not run.lost
    assert status(tracker, dead) == "FINISHED" and len(tracker.search()) == 1
    assert tracker.history(dead, "train/loss") == [(1, 2.0), (2, 1.0)]
    assert tracker.client.get_run(dead).data.params == {"data.root": "/first", "seed": "0"}


def test_a_fresh_start_marks_the_dead_run_killed(tmp_path):
    tracker, ledger = store(tmp_path), RunLedger(tmp_path / "out")
    dead = died_inside(tracker, ledger)
    with store(tmp_path).run("finetune", ledger=ledger) as run:
        assert run.run_id != dead
    assert status(tracker, dead) == "KILLED" and status(tracker, run.run_id) == "FINISHED"


def test_a_finished_run_is_not_reopened_but_a_finished_child_of_a_resumed_parent_is(tmp_path):
    tracker, ledger = store(tmp_path), RunLedger(tmp_path / "out")
    with tracker.run("plan", ledger=ledger) as plan:
        pass
    with tracker.run("plan", ledger=ledger, resume=True) as again:
        assert again.run_id != plan.run_id  # a rerun after success is a new run

    parent = died_inside(tracker, ledger, "interrupted")
    child = tracker.client.create_run(tracker.experiment_id, run_name="evaluate").info.run_id
    tracker.client.set_terminated(child, "FINISHED")  # scored before the kill
    ledger.remember("interrupted/evaluate", child, tracker)
    with tracker.run("interrupted", ledger=ledger, resume=True) as resumed, \
            tracker.run("evaluate", parent=resumed, ledger=ledger, resume=True) as evaluated:
        assert (resumed.run_id, evaluated.run_id) == (parent, child)  # no second "evaluate" under one parent
    with tracker.run("interrupted", ledger=ledger, resume=True) as rerun, \
            tracker.run("evaluate", parent=rerun, ledger=ledger, resume=True) as evaluated:
        assert rerun.run_id != parent and evaluated.run_id != child  # everything had finished: a new attempt


def test_a_stage_named_as_its_parent_keeps_its_own_run(tmp_path):
    """`clip4vla pretrain` names its top run and its training stage `pretrain`: the stage must neither mark its
    live parent KILLED nor be reattached as its own parent."""
    tracker, ledger = store(tmp_path), RunLedger(tmp_path / "out")
    NEVER_LEFT.append(tracker.run("pretrain", ledger=ledger))
    parent = NEVER_LEFT[-1].__enter__()
    NEVER_LEFT.append(tracker.run("pretrain", parent=parent, ledger=ledger))
    child = NEVER_LEFT[-1].__enter__()
    assert status(tracker, parent.run_id) == "RUNNING" and child.run_id != parent.run_id
    with store(tmp_path).run("pretrain", ledger=ledger, resume=True) as resumed, \
            store(tmp_path).run("pretrain", parent=resumed, ledger=ledger, resume=True) as stage:
        assert (resumed.run_id, stage.run_id) == (parent.run_id, child.run_id)
    assert tracker.client.get_run(child.run_id).data.tags["mlflow.parentRunId"] == parent.run_id


def test_an_error_inside_a_run_marks_it_failed(tmp_path):
    tracker, ledger = store(tmp_path), RunLedger(tmp_path / "out")
    with pytest.raises(UserError), tracker.run("finetune", ledger=ledger) as run:
        raise UserError("non-finite loss at step 3 (epoch 1, micro-batch 1 of 1): t_fused_loss = nan")
    assert status(tracker, run.run_id) == "FAILED"
    with tracker.run("finetune", ledger=ledger, resume=True) as resumed:
        assert resumed.run_id == run.run_id  # a failed run is continued by --resume, too


def test_a_ledger_cut_short_by_a_kill_starts_a_new_run(tmp_path):
    tracker, ledger = store(tmp_path), RunLedger(tmp_path / "out")
    died_inside(tracker, ledger)
    ledger.path.write_text('{"sqlite:')  # truncated
    with tracker.run("finetune", ledger=ledger, resume=True) as run:
        pass
    assert len(tracker.search()) == 2 and status(tracker, run.run_id) == "FINISHED"


def test_experiments_say_they_are_model_training(tmp_path):
    """The MLflow 3 UI opens an experiment on the GenAI overview unless it is marked model development (issue 15);
    one made before the mark gets it when a run opens it again."""
    from benchmark.tracking import EXPERIMENT_KIND, MODEL_TRAINING

    made = Tracker(f"sqlite:///{tmp_path}/mlruns.db", "kind", tmp_path / "artifacts")
    assert made.client.get_experiment(made.experiment_id).tags[EXPERIMENT_KIND] == MODEL_TRAINING
    made.client.delete_experiment_tag(made.experiment_id, EXPERIMENT_KIND)
    again = Tracker(f"sqlite:///{tmp_path}/mlruns.db", "kind", tmp_path / "artifacts")
    assert again.client.get_experiment(again.experiment_id).tags[EXPERIMENT_KIND] == MODEL_TRAINING
