"""Shared fixtures: no network, generated data, tiny models."""

from __future__ import annotations

import os

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"  # never reach a hub from a test (open_clip stalls ~46 s on retries)


@pytest.fixture(scope="session")
def msrvtt_small(tmp_path_factory):
    """A 24-clip generated MSR-VTT (with its planted defects), written once per session."""
    from tasks.msrvtt import write_msrvtt

    root = tmp_path_factory.mktemp("data") / "msrvtt"  # root.parent is a data.root
    planted = write_msrvtt(root, seed=1, n_videos=24, test_size=6)
    return root, planted


@pytest.fixture(scope="session")
def generated(tmp_path_factory):
    """VATEX, AudioCaps, AudioSet and HowTo100M generated once per session: (data root, planted)."""
    from benchmark.synthetic import synthesize

    root = tmp_path_factory.mktemp("data")
    return root, synthesize(root, seed=0, only={"vatex", "audiocaps", "audioset", "howto100m"})


@pytest.fixture(scope="session")
def tiny_config(tmp_path_factory):
    """A run config (not a suite) with the smoke suite's tiny-model settings, for the single-run verbs."""
    import yaml

    from benchmark.sweep import read_suite_yaml
    from configs import path

    config = tmp_path_factory.mktemp("configs") / "tiny.yaml"
    config.write_text(yaml.safe_dump(read_suite_yaml(path("smoke.yaml"))["base"]))
    return config
