"""The GPU check (`clip4vla perf gpu`, issue 13 item 5): one line and exit 0 without CUDA; the same code path
runs here on CPU with the tiny model, so what the GPU machine runs has been run."""

from __future__ import annotations

import pytest
import torch

from benchmark.cli import main
from benchmark.perf_gpu import perf_gpu


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA: the check would run")
def test_without_cuda_the_gpu_check_is_one_line_and_exit_0(capsys):
    assert main(["perf", "gpu"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and out[0].startswith("perf gpu: skipped, no CUDA device here")


def test_the_gpu_check_runs_on_cpu_with_the_tiny_model(capsys):
    assert perf_gpu("cpu", "tiny-clip4vla", iters=1, batch=2, overrides=("model.cross_layers=2",)) == 0
    out = capsys.readouterr().out
    for shape in ("fine-tune retrieval", "pre-train"):
        for precision in ("bf16", "fp32"):
            assert f"| {shape} | {precision} | 2 |" in out
    assert "s per video" in out
    assert "model inputs made on cpu vs the CPU: largest difference" in out  # the line a GPU run prints
    assert "ddp step ok: backend gloo, world 1" in out
