from __future__ import annotations

import json

import pytest

from benchmark.errors import UserError
from tasks.msrvtt import MSRVTTRetrieval


def test_splits_group_captions_by_clip(msrvtt_small):
    root, planted = msrvtt_small
    task = MSRVTTRetrieval()
    train = task.load(root, "train_9k")
    test = task.load(root, "test_1k_a")
    assert [c.id for c in train] == planted["train_9k"]
    assert [c.id for c in test] == planted["test_ids"]
    assert all(len(c.captions) == 20 for c in train)  # rows of one clip are scattered in the JSON
    assert all(len(c.captions) == 1 for c in test)
    data = json.loads((root / "MSRVTT_data.json").read_text())
    first = train[0]
    assert sorted(first.captions) == sorted(s["caption"] for s in data["sentences"] if s["video_id"] == first.id)
    assert first.video == root / "videos" / f"{first.id}.mp4" and first.audio == first.video


def test_unknown_split_and_root(msrvtt_small, tmp_path):
    with pytest.raises(UserError, match="has no split 'test_1k_b'"):
        MSRVTTRetrieval().load(msrvtt_small[0], "test_1k_b")
    with pytest.raises(UserError, match="dataset root not found"):
        MSRVTTRetrieval().load(tmp_path / "nowhere", "test_1k_a")
