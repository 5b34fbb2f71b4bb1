"""Every loader on generated data in the real formats (malformed annotations: test_annotation_safety.py)."""

from __future__ import annotations

import shutil

import pytest


from benchmark.errors import UserError
from benchmark.registry import load_tasks

TASKS = load_tasks()


def _load(name, root, split):
    task = TASKS.get(name)()
    return task.load(root / task.spec.data_dir, split)


def test_vatex_splits_and_caption_grouping(generated):
    root, planted = generated
    vatex = planted["vatex"]
    assert [c.id for c in _load("vatex_retrieval", root, "test")] == vatex["hgr_test"]
    assert [c.id for c in _load("vatex_caption", root, "val")] == vatex["val"]
    clips = _load("vatex_retrieval", root, "train")
    assert all(len(c.captions) == 10 for c in clips)
    assert any(c.id.startswith(("-", "_")) for c in clips)  # ids starting with '-' or '_' load as ids
    assert clips[0].video == root / "vatex" / "videos" / f"{clips[0].id}.mp4"


def test_audiocaps_groups_scattered_rows_by_clip(generated):
    root, planted = generated
    test = _load("audiocaps_retrieval", root, "test")
    assert len(test) == len(planted["audiocaps"]["test"]) and all(len(c.captions) == 5 for c in test)
    assert all(c.video is None for c in test)
    assert any("," in caption for c in test for caption in c.captions)  # quoted captions with commas
    train = _load("audiocaps_caption", root, "train")
    assert all(len(c.captions) == 1 for c in train)


def test_audiocaps_audio_template_is_configurable(generated, tmp_path):
    root, _ = generated
    copy = tmp_path / "audiocaps"
    shutil.copytree(root / "audiocaps", copy)
    task = TASKS.get("audiocaps_retrieval")()
    shipped = [c for c in task.load(copy, "test") if c.audio.exists()]
    for wav in (copy / "audio").iterdir():
        wav.rename(wav.with_name("Y" + wav.name))
    renamed = [c for c in task.load(copy, "test") if c.audio.exists()]
    assert len(renamed) == len(shipped) > 0  # a known downloader naming is found by default
    (copy / "audio").rename(copy / "sounds")  # a naming no default covers
    assert not [c for c in task.load(copy, "test") if c.audio.exists()]
    custom = task.load(copy, "test", audio_template="sounds/Y{youtube_id}.wav")
    assert len([c for c in custom if c.audio.exists()]) == len(shipped)


def test_audioset_text_and_type(generated):
    root, planted = generated
    clips = _load("audioset", root, "balanced_train")
    assert [c.id for c in clips] == planted["audioset"]["balanced_train"]
    assert all(c.captions[0].startswith("The sound of ") and c.audio_type == 1 for c in clips)
    # the display name "Beep, bleep" holds a comma inside its quoted CSV field: it stays one label
    assert any(c.captions[0] == "The sound of Beep, bleep" for c in clips)
    assert not any("/m/" in c.captions[0] for c in clips)  # every MID became its display name


def test_howto100m_segments_span_ten_seconds_and_five_words(generated):
    root, planted = generated
    clips = _load("howto100m", root, "train")
    assert clips and all(c.audio_type == 0 for c in clips)
    assert all(c.end - c.start >= 10 and len(c.captions[0].split()) >= 5 for c in clips)
    assert not any(c.id.startswith(planted["howto100m"]["no_captions"][0]) for c in clips)


def test_audioset_audio_template_names_per_clip_files(generated, tmp_path):
    root, _ = generated
    copy = tmp_path / "audioset"
    shutil.copytree(root / "audioset", copy, ignore=shutil.ignore_patterns("videos"))
    (copy / "sounds").mkdir()
    task = TASKS.get("audioset")()
    ids = [c.id for c in task.load(copy, "balanced_train")]
    (copy / "sounds" / f"{ids[0]}.flac").write_bytes(b"")
    clips = task.load(copy, "balanced_train", audio_template="sounds/{youtube_id}.flac")
    assert clips[0].audio == copy / "sounds" / f"{ids[0]}.flac"  # found by the template
    assert clips[1].audio.suffix == ".mp4"  # no file: the video's own track
    with pytest.raises(UserError, match=r"unknown field 'video_id'.*\{youtube_id\}"):
        task.load(copy, "balanced_train", audio_template="sounds/{video_id}.flac")


def test_asr_sentences_merge_into_segments_of_10_s_and_5_words():
    """HowTo100M segments (README, deviations: a fixed segmentation instead of spec §7.1's random first sentence
    and 5 BPE tokens): consecutive sentences merge until the segment spans >= 10 s and >= 5 words; a short tail
    is dropped (golden values worked by hand)."""
    from tasks.pretrain import merge_sentences

    starts, ends = [0, 4, 8, 12, 30, 31], [4, 8, 12, 25, 31, 32]
    texts = ["a b", "c", "d e f", "g h i j k", "l m n o p", "q"]
    assert merge_sentences(starts, ends, texts) == [(0, 12, "a b c d e f"), (12, 25, "g h i j k")]
    assert merge_sentences([0, 20], [15, 21], ["a", "b c d e"]) == [(0, 21, "a b c d e")]
