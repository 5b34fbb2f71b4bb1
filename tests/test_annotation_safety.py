"""Annotation files and clip ids at the door (issue 12, items 5, 6, 9): every case of the corpus in bad_inputs.py
is a one-line error naming the file; ids never leave the dataset folder, while symlinks made inside it keep
working; a BOM is stripped; an offline audio entry that is not a regular file falls back to the video's track,
reported."""

from __future__ import annotations

import logging
import os
import shutil

import pytest
from bad_inputs import BAD_ANNOTATIONS
from helpers import annotations_copy, one_line_error

from benchmark.registry import load_tasks

TASKS = load_tasks()


def dataset_folder(task: str, generated, msrvtt_small):
    """The generated folder of a task's dataset (MSR-VTT is generated on its own, smaller)."""
    spec = TASKS.get(task).spec
    return msrvtt_small[0] if spec.data_dir == "msrvtt" else generated[0] / spec.data_dir


@pytest.mark.parametrize("case", sorted(BAD_ANNOTATIONS))
def test_bad_annotation_is_a_one_line_error_naming_the_file(case, generated, msrvtt_small, tmp_path):
    task, split, breakage, fragments = BAD_ANNOTATIONS[case]
    root = annotations_copy(dataset_folder(task, generated, msrvtt_small), tmp_path)
    breakage(root)
    one_line_error(lambda: TASKS.get(task)().load(root, split), *fragments)


@pytest.mark.parametrize(("task", "split", "name"), [
    ("audiocaps_retrieval", "test", "test.csv"),  # a header with a BOM: its first column is still found
    ("vatex_retrieval", "test", "test_list.txt"),  # the first id would carry the BOM
    ("vatex_retrieval", "test", "vatex_validation_v1.0.json"),  # json.loads refuses a BOM
    ("audioset", "balanced_train", "class_labels_indices.csv"),
    ("audioset", "balanced_train", "balanced_train_segments.csv"),
])
def test_a_utf8_byte_order_mark_is_stripped(task, split, name, generated, msrvtt_small, tmp_path):
    root = annotations_copy(dataset_folder(task, generated, msrvtt_small), tmp_path)
    loader = TASKS.get(task)()
    before = loader.load(root, split)
    (root / name).write_bytes(b"\xef\xbb\xbf" + (root / name).read_bytes())
    assert loader.load(root, split) == before


@pytest.mark.parametrize("newline", ["\r\n", "\r"])
def test_csv_rows_end_in_any_newline(newline, generated, msrvtt_small, tmp_path):
    root = annotations_copy(dataset_folder("audiocaps_retrieval", generated, msrvtt_small), tmp_path)
    loader = TASKS.get("audiocaps_retrieval")()
    before = loader.load(root, "test")
    text = (root / "test.csv").read_text()
    (root / "test.csv").write_bytes(text.replace("\n", newline).encode())
    assert loader.load(root, "test") == before


def test_symlinks_made_inside_the_dataset_folder_keep_working(generated, tmp_path):
    """videos/ on another disk (a folder symlink) and one clip linked file by file both load as media inside
    the folder; the check is on the path as listed, not on where links point."""
    source = generated[0] / "vatex"
    root = annotations_copy(source, tmp_path)
    os.symlink(source / "videos", root / "videos")
    clips = TASKS.get("vatex_retrieval")().load(root, "test")
    assert all(c.video.parent == root / "videos" for c in clips)
    assert sum(c.video.is_file() for c in clips) == sum((source / "videos" / f"{c.id}.mp4").is_file() for c in clips)
    (root / "videos").unlink()
    (root / "videos").mkdir()
    first = clips[0].id
    os.symlink(source / "videos" / f"{first}.mp4", root / "videos" / f"{first}.mp4")
    assert TASKS.get("vatex_retrieval")().load(root, "test")[0].video.is_file()


def test_offline_audio_that_is_not_a_regular_file_falls_back_to_the_video_track(generated, tmp_path, caplog):
    root = annotations_copy(generated[0] / "vatex", tmp_path)
    task = TASKS.get("vatex_retrieval")()
    ids = [c.id for c in task.load(root, "test")]
    (root / "audios_16k").mkdir()
    (root / "audios_16k" / f"{ids[0]}.wav").mkdir()  # a folder where a file should be
    os.symlink(tmp_path / "gone.wav", root / "audios_16k" / f"{ids[1]}.wav")  # a broken link
    shutil.copy(generated[0] / "audiocaps" / "audio" / next(os.scandir(generated[0] / "audiocaps" / "audio")).name,
                root / "audios_16k" / f"{ids[2]}.wav")  # a real file is used
    with caplog.at_level(logging.WARNING, logger="tasks.base"):
        clips = task.load(root, "test")
    assert clips[0].audio == clips[0].video and clips[1].audio == clips[1].video
    assert clips[2].audio == root / "audios_16k" / f"{ids[2]}.wav"
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1, warnings  # once per load, with the count and the first path
    assert warnings[0].startswith("2 clips of vatex_retrieval/test use their video's audio track")
    assert f"audios_16k/{ids[0]}.wav" in warnings[0]


def test_a_split_without_usable_media_is_one_line_before_any_model_is_built(msrvtt_small, tiny_config, tmp_path,
                                                                              monkeypatch, capsys):
    import benchmark.stages
    from benchmark.cli import main

    annotations_copy(msrvtt_small[0], tmp_path / "data")  # every video missing
    monkeypatch.setattr(benchmark.stages, "build_model", lambda *a, **k: pytest.fail("a model was built"))
    assert main(["evaluate", "msrvtt_retrieval", "--config", str(tiny_config), "--out", str(tmp_path / "out"),
                 f"data.root={tmp_path / 'data'}", f"data.cache={tmp_path / 'cache'}"]) == 2
    (message,) = capsys.readouterr().err.strip().splitlines()
    assert "msrvtt_retrieval/test_1k_a: none of its 6 clips has usable media" in message


def _random_json(rng, depth: int = 0):
    if depth > 3 or rng.random() < 0.3:
        return rng.choice([1, -2.5e-3, 123456789012, True, None, 'é\n"x\\', "日本語", "", 1e300])
    if rng.random() < 0.5:
        return [_random_json(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    return {f"k{rng.randint(0, 9)}ü": _random_json(rng, depth + 1) for _ in range(rng.randint(0, 4))}


BROKEN_JSON = ['{"a": 1,}', '{"a" 1}', '{"a": 1 "b": 2}', '{"a": [1, 2}', '{"a": 1} x', '{"a": tru}',
               '{\n "a":\n  [1,\n  }', '{"a": "x', '{"a": -0.00']


def test_a_json_object_streamed_in_any_chunk_size_equals_json_loads(tmp_path):
    """caption.json (136 M sentences in HowTo100M) is read in chunks, never whole: every chunk size gives what
    json.loads gives, values cut at a chunk's end included (a number cut after "-0" of "-0.0025", a UTF-8
    character cut in two), and a broken file is an error at json.loads' line and column."""
    import json
    import random

    from benchmark.errors import UserError
    from tasks.base import json_object_items

    rng, path = random.Random(0), tmp_path / "caption.json"
    for trial in range(60):
        value = {f"v{i}é": _random_json(rng) for i in range(rng.randint(0, 6))}
        text = json.dumps(value, ensure_ascii=trial % 2 == 0, indent=1 if trial % 4 < 2 else None)
        path.write_bytes(b"\xef\xbb\xbf" * (trial % 3 == 0) + text.encode())
        for chunk in (1, 2, 7, 1 << 20):
            assert dict(json_object_items(path, "an object", chunk)) == value, (trial, chunk)
    for broken in BROKEN_JSON:
        path.write_text(broken)
        with pytest.raises(json.JSONDecodeError) as expected:
            json.loads(broken)
        for chunk in (1, 3, 1 << 20):
            with pytest.raises(UserError, match=rf"line {expected.value.lineno} column {expected.value.colno}: "
                                                rf"{expected.value.msg}"):
                list(json_object_items(path, "an object", chunk))


def test_howto100m_never_reads_caption_json_whole(generated, tmp_path, monkeypatch):
    from pathlib import Path

    from tasks.pretrain import HowTo100M

    root = generated[0] / "howto100m"
    whole = HowTo100M().load(root, "train")
    real = Path.read_bytes

    def refuse(self):
        assert self.name != "caption.json", "caption.json read whole"
        return real(self)

    monkeypatch.setattr(Path, "read_bytes", refuse)
    monkeypatch.setattr("tasks.base.JSON_CHUNK_BYTES", 64)  # many chunks even for the small generated file
    assert HowTo100M().load(root, "train") == whole
