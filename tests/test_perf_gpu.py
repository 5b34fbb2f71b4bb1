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


def test_perf_caption_times_encoders_and_decoding_apart(capsys):
    """`clip4vla perf caption` (issue 16 item 3): a row per model, each part a median over the timed runs."""
    assert main(["perf", "caption", "--models", "tiny", "--iters", "2"]) == 0
    row = capsys.readouterr().out.strip().splitlines()[-1]
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[:2] == ["tiny", "8"]
    encoders, decoding, total = (float(c.split()[0]) for c in cells[2:])
    assert 0 < encoders and 0 < decoding and total == pytest.approx(encoders + decoding, abs=2e-3)
