"""Progress of long loops as log lines that read without a terminal (issue 15 item 4): a line at most every
EVERY_S seconds and one at the end, with the count, the share, the rate and the time left."""

from __future__ import annotations

import logging

from benchmark import progress
from benchmark.cli import main
from benchmark.config import load_config
from benchmark.progress import Ticker


def test_a_long_loop_says_where_it_is_every_interval_and_at_the_end(caplog):
    now = [0.0]
    caplog.set_level(logging.INFO, logger="clip4vla")
    ticker = Ticker("decode x", 100, "clips", clock=lambda: now[0])
    for _ in range(100):  # 1 clip per second: a line after 30 s, 60 s and 90 s, then the last
        now[0] += 1.0
        ticker.update()
    ticker.close()
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["  decode x: 30/100 clips (30%), 1 clips/s, ETA 0:01:10",
                     "  decode x: 60/100 clips (60%), 1 clips/s, ETA 0:00:40",
                     "  decode x: 90/100 clips (90%), 1 clips/s, ETA 0:00:10",
                     "  decode x: 100/100 clips (100%), 1 clips/s, ETA 0:00:00"]


def test_a_loop_with_nothing_to_do_says_nothing(caplog):
    caplog.set_level(logging.INFO, logger="clip4vla")
    Ticker("decode x", 0, "clips").close()
    assert not caplog.records


def test_prepare_reports_its_decoding_in_the_log_without_a_terminal(generated, tmp_path, monkeypatch, caplog):
    """`clip4vla prepare` under a batch scheduler: a tqdm bar there is disabled (no terminal) and said nothing."""
    root, _ = generated
    monkeypatch.setattr(progress, "EVERY_S", 0.0)
    caplog.set_level(logging.INFO, logger="clip4vla")
    cfg = load_config({}, [f"data.root={root}", f"data.cache={tmp_path}"])
    assert main(["prepare", "audiocaps_retrieval", "--root", str(root), "--workers", "0", "--splits", "test",
                 f"data.cache={tmp_path}"]) == 0
    lines = [r.getMessage() for r in caplog.records if "decode audiocaps_retrieval" in r.getMessage()]
    assert len(lines) >= 2 and lines[-1].split(": ")[1].startswith(f"{_clips(cfg)}/{_clips(cfg)} clips (100%)")


def _clips(cfg) -> int:
    from benchmark.registry import load_tasks

    task = load_tasks().get("audiocaps_retrieval")()
    return len({c.media_key for c in task.load(cfg.data.root + "/audiocaps", "test")})
