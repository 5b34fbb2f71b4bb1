"""`clip4vla prepare`: decode once, manifest counts equal what synth planted, cache fingerprints."""

from __future__ import annotations

import csv

import pytest
import torch

from benchmark.cli import main
from benchmark.config import load_config
from benchmark.errors import UserError
from benchmark.media.decode import Preprocessing
from benchmark.media.store import MediaStore
from benchmark.prepare import prepare
from tasks.vatex import VATEXRetrieval
from helpers import damage_member


def _manifest(path):
    with path.open() as f:
        return list(csv.DictReader(f))


def test_audiocaps_manifest_counts_equal_what_was_planted(generated):
    root, planted = generated
    cfg = load_config({}, [f"data.root={root}"])
    summary, manifest = prepare("audiocaps_retrieval", cfg, None, workers=0)
    audiocaps = planted["audiocaps"]
    missing_train = [m for m in audiocaps["missing"] if m in audiocaps["train"]]
    assert summary["train"]["missing_audio"] == len(missing_train) + 1  # + the zero-byte WAV
    assert summary["train"]["undecodable"] == 1
    assert summary["test"]["missing_audio"] == 1
    rows = {r["id"].rsplit("_", 1)[0]: r for r in _manifest(manifest) if r["split"] == "test"}
    assert rows[audiocaps["short"][0]]["has_audio"] == "True"  # a 0.2 s WAV still gives one segment
    assert float(rows[audiocaps["short"][0]]["duration"]) == pytest.approx(0.2, abs=0.01)
    assert rows[audiocaps["48k"][0]]["has_audio"] == "True"  # 48 kHz stereo is resampled, not dropped
    missing_test = [m for m in audiocaps["missing"] if m in audiocaps["test"]]
    assert [rows[m]["audio_error"] for m in missing_test] == ["missing"]
    assert all(len(r["sha256"]) == 64 for r in rows.values() if r["has_audio"] == "True")
    empty = [r for r in _manifest(manifest) if r["id"].startswith(audiocaps["empty"][0])]
    assert empty[0]["audio_error"] == "empty" and empty[0]["decodable"] == "False"


def test_msrvtt_manifest_flags_missing_truncated_and_trackless_videos(msrvtt_small, tmp_path):
    root, planted = msrvtt_small
    cfg = load_config({}, [f"data.root={root.parent}", f"data.cache={tmp_path / 'cache'}"])
    summary, manifest = prepare("msrvtt_retrieval", cfg, ["train_9k", "test_1k_a"], workers=2)
    rows = {(r["split"], r["id"]): r for r in _manifest(manifest)}
    assert summary["test_1k_a"]["missing_video"] == len(planted["missing"])
    assert summary["train_9k"]["undecodable"] == len(planted["truncated"])
    assert rows[("train_9k", planted["truncated"][0])]["video_error"] == "corrupt"
    # what prepare prints is what a run records for the same split
    from benchmark.data import prepare_split
    from tasks.msrvtt import MSRVTTRetrieval

    store = MediaStore(tmp_path / "cache", Preprocessing.of(cfg.data))
    for split in ("train_9k", "test_1k_a"):
        counts = prepare_split(MSRVTTRetrieval().load(root, split), store, "zero").counts
        assert (counts["missing_video"], counts["missing_audio"]) == (
            summary[split]["missing_video"], summary[split]["missing_audio"])
    assert summary["train_9k"]["missing_video"] >= len(planted["truncated"])  # a broken video is a missing one
    for clip_id in planted["no_audio"]:
        split = "test_1k_a" if clip_id in planted["test_ids"] else "train_9k"
        assert rows[(split, clip_id)]["audio_error"] == "no_stream" and rows[(split, clip_id)]["has_video"] == "True"
    assert summary["test_1k_a"]["no_audio_track"] + summary["train_9k"]["no_audio_track"] == len(planted["no_audio"])


def test_rerun_decodes_nothing_new(generated, tmp_path):
    root, _ = generated
    cfg = load_config({}, [f"data.root={root}", f"data.cache={tmp_path}"])
    clips = VATEXRetrieval().load(root / "vatex", "test")
    first = []
    MediaStore(tmp_path, Preprocessing.of(cfg.data)).fill(clips, progress=lambda done, total: first.append(done))
    assert len(first) == len(clips)  # a fresh cache decodes every clip (and reports it)
    prepare("vatex_retrieval", cfg, ["test"], workers=0)
    calls = []
    MediaStore(tmp_path, Preprocessing.of(cfg.data)).fill(clips, progress=lambda done, total: calls.append(done))
    assert calls == []


def test_prepare_command_prints_the_summary(generated, capsys):
    root, _ = generated
    assert main(["prepare", "howto100m", "--root", str(root), "--workers", "0"]) == 0
    out = capsys.readouterr().out
    assert "train" in out and "manifest:" in out and "undecodable" in out


def test_vatex_zero_byte_and_trackless_videos_are_flagged(generated, tmp_path):
    root, planted = generated
    cfg = load_config({}, [f"data.root={root}", f"data.cache={tmp_path}"])
    summary, manifest = prepare("vatex_retrieval", cfg, ["val", "test"], workers=0)
    rows = {r["id"]: r for r in _manifest(manifest)}
    vatex = planted["vatex"]
    assert rows[vatex["empty"][0]]["video_error"] == "empty" and rows[vatex["empty"][0]]["decodable"] == "False"
    assert rows[vatex["no_audio"][0]]["audio_error"] == "no_stream"
    assert rows[vatex["missing"][0]]["video_error"] == "missing"
    assert summary["val"]["undecodable"] == 1 and summary["test"]["missing_video"] == 1


def test_synth_is_deterministic_for_a_seed(tmp_path):
    from tasks.audiocaps import write_audiocaps

    first = write_audiocaps(tmp_path / "a", seed=3, n_train=6, n_val=2, n_test=3)
    second = write_audiocaps(tmp_path / "b", seed=3, n_train=6, n_val=2, n_test=3)
    assert first == second
    for name in ("train.csv", "val.csv", "test.csv"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    wavs = sorted(p.name for p in (tmp_path / "a" / "audio").iterdir())
    assert all((tmp_path / "a" / "audio" / w).read_bytes() == (tmp_path / "b" / "audio" / w).read_bytes() for w in wavs)


def test_segments_of_one_video_are_decoded_once_and_cut_as_if_decoded_alone(generated, monkeypatch):
    from benchmark.media import decode as decode_module
    from benchmark.media import video as video_fe
    from tasks.pretrain import HowTo100M

    root, _ = generated
    clips = [c for c in HowTo100M().load(root / "howto100m", "train") ]
    videos = {c.video for c in clips}
    assert len(clips) > len(videos)  # several segments per video
    prep = Preprocessing.of(load_config({}, []).data)
    alone = [decode_module.decode_clips([c], prep)[0] for c in clips]
    calls = []
    real = video_fe.decode_seconds
    monkeypatch.setattr(video_fe, "decode_seconds", lambda *a, **k: calls.append(a[0]) or real(*a, **k))
    together = []
    for video in videos:
        group = [c for c in clips if c.video == video]
        together += zip(group, decode_module.decode_clips(group, prep), strict=True)
    assert sorted(calls) == sorted(videos)  # one decode per file
    by_id = dict((c.id, result) for c, result in together)
    for clip, (entry, status) in zip(clips, alone, strict=True):
        grouped_entry, grouped_status = by_id[clip.id]
        assert grouped_status == status
        for key in ("frames", "pcm"):
            assert (entry[key] is None) == (grouped_entry[key] is None)
            if entry[key] is not None:
                assert torch.equal(torch.as_tensor(entry[key]), torch.as_tensor(grouped_entry[key]))


def test_prepare_verify_decodes_damaged_entries_again(generated, tmp_path, caplog):
    import logging

    from benchmark.media.store import entry_key
    from benchmark.pipeline import media_store
    from tasks.audiocaps import AudioCapsRetrieval

    root, _ = generated
    args = ["prepare", "audiocaps_retrieval", "--root", str(root), "--splits", "test", "--workers", "0",
            f"data.cache={tmp_path}"]
    assert main(args) == 0
    key = damage_member(sorted(tmp_path.glob("*/shards/*.tar"))[0], ".flac", 0, 200, bytes(50))
    with caplog.at_level(logging.WARNING, logger="clip4vla"):
        assert main([*args, "--verify"]) == 0
    assert "flac is damaged (checksum): decoded again" in caplog.text
    clip = next(c for c in AudioCapsRetrieval().load(root / "audiocaps", "test") if entry_key(c) == key)
    assert media_store(load_config({}, [f"data.root={root}", f"data.cache={tmp_path}"])).load(clip)["pcm"] is not None
