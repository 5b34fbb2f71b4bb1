from __future__ import annotations

import json

import pytest
from helpers import annotations_copy, one_line_error

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


@pytest.mark.parametrize(
    ("breakage", "split", "message"),
    [
        (lambda r: (r / "MSRVTT_JSFUSION_test.csv").unlink(), "test_1k_a", "MSRVTT_JSFUSION_test.csv: file not found"),
        (lambda r: (r / "MSRVTT_JSFUSION_test.csv").write_text("key,video_id\nret0,video1\n"), "test_1k_a",
         "missing column 'sentence'"),
        (lambda r: (r / "MSRVTT_data.json").write_text('{"sentences": [}'), "train_9k", "invalid JSON at line 1"),
        (lambda r: (r / "MSRVTT_train.9k.csv").write_text("video_id\nvideo0\nvideo0\n"), "train_9k",
         "duplicate id 'video0'"),
        (lambda r: (r / "MSRVTT_train.9k.csv").write_text("video_id\nvideo0\n\nnot_a_video\n"), "train_9k",
         "video 'not_a_video' has no caption"),
        (lambda r: (r / "MSRVTT_JSFUSION_test.csv").write_text("key,vid_key,video_id,sentence\nret0,m,video1,\n"),
         "test_1k_a", "line 2: empty 'sentence'"),
    ],
)
def test_malformed_annotations_give_one_line_errors(msrvtt_small, tmp_path, breakage, split, message):
    root = annotations_copy(msrvtt_small[0], tmp_path)
    breakage(root)
    one_line_error(lambda: MSRVTTRetrieval().load(root, split), message)


def test_empty_caption_in_json_names_the_video(msrvtt_small, tmp_path):
    root = annotations_copy(msrvtt_small[0], tmp_path)
    data = json.loads((root / "MSRVTT_data.json").read_text())
    data["sentences"][3]["caption"] = "  "
    (root / "MSRVTT_data.json").write_text(json.dumps(data))
    one_line_error(lambda: MSRVTTRetrieval().load(root, "train_9k"), "sentences[3] has an empty caption")


def test_unknown_split_and_root(msrvtt_small, tmp_path):
    with pytest.raises(UserError, match="has no split 'test_1k_b'"):
        MSRVTTRetrieval().load(msrvtt_small[0], "test_1k_b")
    with pytest.raises(UserError, match="dataset root not found"):
        MSRVTTRetrieval().load(tmp_path / "nowhere", "test_1k_a")
