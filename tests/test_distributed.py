"""2 processes with gloo under torchrun end where 1 process with the same global batch ends."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import pretrain_then_finetune_suite, stage_of

WORKER = Path(__file__).with_name("ddp_worker.py")


def _run(args, out):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, *args, str(WORKER), str(out)], env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return torch.load(out, weights_only=True)


@pytest.mark.slow
def test_two_gloo_processes_equal_one_process_with_the_same_global_batch(tmp_path):
    single = _run([], tmp_path / "one.pt")
    double = _run(["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"], tmp_path / "two.pt")
    assert single["world"] == 1 and double["world"] == 2
    worst = max((single["state"][k].float() - double["state"][k].float()).abs().max().item() for k in single["state"])
    # Same global contrastive batch and gradients; only float summation order differs between the runs.
    # Measured: 2e-7; without the gradient-carrying all-gather (per-rank contrastive batches): 4e-3.
    assert worst < 1e-4, worst


SUITE = pretrain_then_finetune_suite("ddp", finetune="{max_steps: 2, batch_size: 8}")


def _sweep(launcher, suite, out, root):
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    proc = subprocess.run([sys.executable, *launcher, "-m", "benchmark.cli", "sweep", str(suite), "--out", str(out),
                           f"data.root={root}"], env={**env, "OMP_NUM_THREADS": "1"}, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    from benchmark.tracking import Tracker

    runs = Tracker(f"sqlite:///{out}/mlruns.db", "clip4vla-ddp", create=False).search()
    return {stage_of(r["name"]): r for r in runs}


@pytest.mark.slow
def test_a_sweep_under_torchrun_logs_once_and_ends_where_one_process_ends(tmp_path, generated):
    root, _ = generated
    suite = tmp_path / "ddp.yaml"
    suite.write_text(SUITE)
    single = _sweep([], suite, tmp_path / "one", root)
    double = _sweep(["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"], suite,
                    tmp_path / "two", root)
    assert sorted(single) == sorted(double)  # rank 1 logged nothing: the same runs, once
    assert double["pretrain"]["tags"]["world_size"] == "2" and single["pretrain"]["tags"]["world_size"] == "1"
    for name in ("pretrain", "finetune/audiocaps_retrieval"):
        ours, theirs = single[name]["metrics"], double[name]["metrics"]
        assert ours["final/ta_loss" if name == "pretrain" else "train/loss"] == pytest.approx(
            theirs["final/ta_loss" if name == "pretrain" else "train/loss"], rel=1e-4)
    assert (tmp_path / "two" / "report.md").is_file()


@pytest.mark.slow
def test_evaluation_shared_across_two_processes_equals_one_process(tmp_path):
    """Each rank encodes and captions its share of the clips; gathered, rank 0 holds what one process computes."""
    worker = WORKER.with_name("eval_worker.py")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    runs = {}
    for name, launcher in (("one", []), ("two", ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
                                                 "2"])):
        proc = subprocess.run([sys.executable, *launcher, str(worker), str(tmp_path / f"{name}.pt")], env=env,
                              capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        runs[name] = torch.load(tmp_path / f"{name}.pt", weights_only=True)
    one, two = runs["one"], runs["two"]
    assert (one["world"], two["world"]) == (1, 2)
    assert one["text"].shape == two["text"].shape == (14, one["text"].shape[1])
    torch.testing.assert_close(two["text"], one["text"], atol=1e-5, rtol=0)
    for key in ("video", "audio", "fused"):
        assert two["clips"][key].shape[0] == 7
        torch.testing.assert_close(two["clips"][key], one["clips"][key], atol=1e-5, rtol=0)
    assert two["captions"] == one["captions"] and len(one["captions"]) == 7
    assert [len(ids) for ids in two["served"]] == [2 * 3, 2 * 4]  # each clip read once, by one rank, per pass
