"""The media store (issue 13 item 1): WebDataset shards that standard tools read, entries equal to what the
front-ends decode (within JPEG's and 16-bit PCM's error), a prepare killed at any point resumes to a byte-equal
store, media changed after a prepare are decoded again, and damaged entries are named, never another clip's."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import textwrap
import zlib

import numpy as np
import pytest
import torch

from benchmark.errors import UserError
from benchmark.media import audio as audio_fe
from benchmark.media import video as video_fe
from benchmark.media.decode import Preprocessing
from benchmark.media.shard_index import key_hash
from benchmark.media.store import BadEntry, MediaStore
from tasks.audiocaps import AudioCapsRetrieval
from tasks.vatex import VATEXRetrieval
from helpers import damage_member

SMALL_SHARDS = 200_000  # bytes: a few clips per shard, so a prepare writes several


@pytest.fixture
def vatex_test(generated, tmp_path):
    """VATEX's test clips (video + audio track) and a fresh store."""
    clips = VATEXRetrieval().load(generated[0] / "vatex", "test")
    return clips, MediaStore(tmp_path / "store", Preprocessing(), shard_bytes=SMALL_SHARDS)


def stored_log_mel(entry: dict) -> torch.Tensor:
    return audio_fe.log_mel(audio_fe.lmr(audio_fe.from_pcm(entry["pcm"])))


def shard_bytes(store: MediaStore) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(store.shards.iterdir())}


def test_entries_equal_the_front_ends_within_jpeg_and_pcm16_error(vatex_test):
    clips, store = vatex_test
    store.fill(clips)
    assert len(list(store.shards.glob("*.tar"))) > 1
    decoded = [c for c in clips if store.status(c).has_video and store.status(c).has_audio]
    assert decoded
    for clip in decoded:
        entry = store.load(clip)
        frames = video_fe.decode_frames(clip.video, Preprocessing().max_frames)
        assert entry["frames"].shape == frames.shape and entry["frames"].dtype == torch.uint8
        error = (entry["frames"].float() - frames.float()).abs()
        assert error.mean() < 1.5 and error.max() <= 64  # JPEG quality 95 (README: measured pixel error)
        logmel = audio_fe.file_log_mel(clip.audio)
        assert stored_log_mel(entry).shape == logmel.shape
        assert (stored_log_mel(entry) - logmel).abs().max() < 0.01  # dB: the audio tests' tolerance (24-bit PCM)


@pytest.mark.parametrize("bits", [16, 24])
def test_storage_is_exact_for_16khz_16bit_audio(generated, tmp_path, bits):
    """The authors' audios_16k files (16 kHz int16 WAV) are stored without loss: the log-mel is bit-equal."""
    clips = [c for c in AudioCapsRetrieval().load(generated[0] / "audiocaps", "test") if c.audio.is_file()]
    store = MediaStore(tmp_path, Preprocessing(audio_bits=bits))
    store.fill(clips)
    for clip in clips:
        if store.status(clip).has_audio and audio_fe.read_file(clip.audio)[1] == 16_000:
            assert torch.equal(stored_log_mel(store.load(clip)), audio_fe.file_log_mel(clip.audio))


def test_shards_are_webdataset_tars_that_standard_tools_read(vatex_test):
    import webdataset

    clips, store = vatex_test
    store.fill(clips)
    first = sorted(store.shards.glob("*.tar"))[0]
    with tarfile.open(first) as tar:
        names = tar.getnames()
    assert any(n.endswith(".000.jpg") for n in names) and any(n.endswith(".flac") for n in names)
    samples = list(webdataset.WebDataset(str(first), shardshuffle=False))
    index = np.load(first.with_suffix(".index.npy"))  # the shard's index: numpy rows in tar order
    assert [int(s["__key__"][:16], 16) for s in samples] == index["key"].tolist()
    assert [json.loads(s["json"])["frames"] is not None for s in samples] == index["has_video"].tolist()


def test_an_unchanged_store_is_not_written_again(vatex_test):
    clips, store = vatex_test
    store.fill(clips)
    before = shard_bytes(store)
    calls = []
    MediaStore(store.dir, Preprocessing(), SMALL_SHARDS).fill(clips, progress=lambda done, total: calls.append(done))
    assert calls == [] and shard_bytes(store) == before


KILLER = textwrap.dedent("""
    import os, signal, sys
    from benchmark.media.decode import Preprocessing
    from benchmark.media.store import MediaStore
    from tasks.vatex import VATEXRetrieval
    data, store, kill_after = sys.argv[1], sys.argv[2], int(sys.argv[3])
    clips = VATEXRetrieval().load(data, "test")
    def progress(done, total):
        if done == kill_after:
            os.kill(os.getpid(), signal.SIGKILL)
    MediaStore(store, Preprocessing(), shard_bytes=int(sys.argv[4])).fill(clips, progress=progress)
""")


@pytest.mark.parametrize("kill_after", [1, 4, 9])  # inside the first shard, after one committed, later
def test_a_prepare_killed_mid_write_resumes_to_a_byte_equal_store(vatex_test, generated, tmp_path, kill_after):
    clips, uninterrupted = vatex_test
    uninterrupted.fill(clips)
    killed = tmp_path / "killed"
    run = subprocess.run([sys.executable, "-c", KILLER, str(generated[0] / "vatex"), str(killed), str(kill_after),
                          str(SMALL_SHARDS)], env={**os.environ, "HF_HUB_OFFLINE": "1"}, capture_output=True)
    assert run.returncode == -signal.SIGKILL, run.stderr.decode()[-2000:]
    store = MediaStore(killed, Preprocessing(), SMALL_SHARDS)
    assert len(store) < len({c.media_key for c in clips})  # the kill lost the shard being written
    store.fill(clips)
    assert shard_bytes(store) == shard_bytes(uninterrupted)


@pytest.mark.parametrize("written", [".tar", ".tar and .index.npy"])
def test_a_shard_committed_without_its_marker_is_written_again(vatex_test, written):
    """The windows between the tar's rename, its index and its marker: the rerun writes the shard again,
    byte-equal."""
    clips, store = vatex_test
    store.fill(clips)
    before = shard_bytes(store)
    last = sorted(store.shards.glob("*.json"))[-1]
    last.unlink()
    if written == ".tar":
        last.with_suffix(".index.npy").unlink()
    MediaStore(store.dir, Preprocessing(), SMALL_SHARDS).fill(clips)
    assert shard_bytes(store) == before


def test_media_added_or_replaced_after_a_prepare_are_decoded_again(generated, tmp_path):
    root = tmp_path / "audiocaps"
    shutil.copytree(generated[0] / "audiocaps", root)
    clips = AudioCapsRetrieval().load(root, "test")
    missing = [c for c in clips if not c.audio.exists()]
    present = [c for c in clips if c.audio.is_file() and c.audio.stat().st_size > 1000]
    assert missing and present
    store = MediaStore(tmp_path / "store", Preprocessing())
    store.fill(clips)
    assert not store.status(missing[0]).has_audio
    shutil.copy(present[0].audio, missing[0].audio)  # the download finished after the first prepare
    os.utime(present[1].audio, ns=(1, 1))  # a file replaced in place (another mtime)
    reopened = MediaStore(tmp_path / "store", Preprocessing())
    assert {c.id for c in reopened.stale(clips)} == {missing[0].id, present[1].id}
    reopened.fill(clips)
    assert reopened.status(missing[0]).has_audio
    assert reopened.changed == {missing[0].media_key, present[1].media_key}
    assert MediaStore(tmp_path / "store", Preprocessing()).stale(clips) == []


def test_a_replacement_of_the_same_size_and_mtime_is_found_by_verify(generated, tmp_path):
    """`stale` compares size and mtime only; `verify` re-hashes the media files, so a repaired file copied with
    its mtime kept (`cp -p`, `rsync -a`) is decoded again."""
    root = tmp_path / "audiocaps"
    shutil.copytree(generated[0] / "audiocaps", root)
    clips = [c for c in AudioCapsRetrieval().load(root, "test") if c.audio.is_file()]
    store = MediaStore(tmp_path / "store", Preprocessing())
    store.fill(clips)
    target = clips[0].audio
    stat, data = target.stat(), bytearray(target.read_bytes())
    data[-100:] = bytes(100)  # other samples at the end, same size
    target.write_bytes(bytes(data))
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    reopened = MediaStore(tmp_path / "store", Preprocessing())
    assert reopened.stale(clips) == []  # size and mtime cannot see it
    (line,) = reopened.verify(clips)
    assert f"'{clips[0].id}': its media {target} changed since it was decoded (SHA-256" in line
    assert reopened.stale(clips) == [clips[0]]
    reopened.fill(clips)
    assert MediaStore(tmp_path / "store", Preprocessing()).verify(clips) == []


def _first_shard(store: MediaStore, clips) -> tuple:
    """(tar, index path, its rows, the clips of its entries in tar order)."""
    tar = sorted(store.shards.glob("*.tar"))[0]
    rows = np.load(tar.with_suffix(".index.npy"))
    by_key = {key_hash(c.media_key): c for c in clips}
    return tar, tar.with_suffix(".index.npy"), rows, [by_key[k] for k in rows["key"].tolist()]


def test_damaged_entries_are_named_never_another_clips_tensors(vatex_test, caplog):
    clips, store = vatex_test
    store.fill(clips)
    tar, index_path, rows, (first, second, *_) = _first_shard(store, clips)
    good, good_index = tar.read_bytes(), index_path.read_bytes()

    # garbage inside the first entry's first frame (the size stays, so the shard is opened)
    damage_member(tar, ".000.jpg", 0, 100, bytes(100))
    with pytest.raises(BadEntry, match=rf"{tar.name}.*'{first.id}'.*000.jpg is damaged"):
        MediaStore(store.dir, Preprocessing(), SMALL_SHARDS).load(first)
    tar.write_bytes(good)

    # swapped byte ranges in the index: the second clip's row now points at the first sample
    swapped = rows.copy()
    for column in ("offset", "span"):
        swapped[column][[0, 1]] = rows[column][[1, 0]]
    np.save(index_path, swapped)
    marker_path = index_path.with_suffix("").with_suffix(".json")
    good_marker = marker_path.read_text()
    marker = json.loads(good_marker)
    marker["index_crc32"] = zlib.crc32(index_path.read_bytes())  # a consistent but wrong index
    marker_path.write_text(json.dumps(marker))
    with pytest.raises(BadEntry, match=rf"'{second.id}'.*holds sample"):
        MediaStore(store.dir, Preprocessing(), SMALL_SHARDS).load(second)
    index_path.write_bytes(good_index)
    marker_path.write_text(good_marker)

    # an entry's record that lost a bit (a frame fewer, another shape): never fewer frames or another shape
    with tarfile.open(tar) as t:
        record = json.load(t.extractfile(next(m for m in t.getmembers() if m.name.endswith(".json"))))
    frames = record["frames"]
    for changed in ([frames[0] ^ 1, *frames[1:]], [frames[0], 3, frames[2] + 8, frames[3]]):
        text = json.dumps({**record, "frames": changed}, sort_keys=True).encode()
        assert len(text) == len(json.dumps(record, sort_keys=True))  # the tar keeps its size
        damage_member(tar, ".json", 0, 0, text)
        with pytest.raises(BadEntry, match=r"the shard index and the entry's own record disagree \(checksum\)"):
            MediaStore(store.dir, Preprocessing(), SMALL_SHARDS).load(first)
        tar.write_bytes(good)
    # an index that lost bytes or a bit (a status, an identity), or is empty: the shard is left out, its clips
    # decoded again, never a traceback or a status that is not the entry's
    changed = rows.copy()
    changed["has_audio"][0] = not rows["has_audio"][0]
    np.save(index_path, changed)
    for damaged in (index_path.read_bytes(), good_index[:-10], b""):
        index_path.write_bytes(damaged)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="benchmark.media.store"):
            assert first in MediaStore(store.dir, Preprocessing(), SMALL_SHARDS).stale(clips)
        assert "is unreadable (ValueError: its index does not match the CRC-32 in its marker)" in caplog.text
    index_path.write_bytes(good_index)

    # a truncated tar: the shard is left out with a warning and its clips are decoded again
    tar.write_bytes(good[: len(good) // 2])
    with caplog.at_level(logging.WARNING, logger="benchmark.media.store"):
        reopened = MediaStore(store.dir, Preprocessing(), SMALL_SHARDS)
    assert f"{tar.name} has {len(good) // 2} bytes" in caplog.text
    assert first in reopened.stale(clips)
    reopened.fill(clips)
    assert torch.equal(reopened.load(first)["frames"], store.load(first)["frames"])


# what the one-.pt-per-clip cache (format 2) wrote into preprocessing.json
OLD_CACHE = {"max_frames": 12, "frame_size": 224, "frames_per_second": 1, "sample_rate": 16000, "n_fft": 512,
             "hop": 128, "n_mels": 224, "f_max": 8000.0, "top_db": 80.0, "max_seconds": 60.0,
             "stft_pad_mode": "constant", "resampler": "resampy-kaiser_best", "cache_format": 2}


def test_a_store_of_another_fingerprint_or_an_older_format_is_refused(tmp_path, caplog):
    old = tmp_path / "5c1a2b3c4d5e"
    old.mkdir()
    (old / "preprocessing.json").write_text(json.dumps(OLD_CACHE))
    with pytest.raises(UserError, match=r"media cache of an older clip4vla \(cache format 2.*clip4vla prepare TASK"):
        MediaStore(old, Preprocessing())
    with caplog.at_level(logging.WARNING, logger="benchmark.media.store"):
        store = MediaStore(tmp_path, Preprocessing())  # the parent: a new store next to it, with a warning
    assert store.dir != old and "cache format 2, one .pt per clip) (5c1a2b3c4d5e)" in caplog.text
    # a store whose shard index is JSON records (store format 3): refused, never read as this format
    (old / "preprocessing.json").write_text(json.dumps({**store.wanted, "store_format": 3}))
    with pytest.raises(UserError, match=r"store of another clip4vla \(store format 3\), which this clip4vla \(store "
                                        r"format 5\) does not read: run `clip4vla prepare TASK`"):
        MediaStore(old, Preprocessing())
    store.dir.mkdir()
    (store.dir / "preprocessing.json").write_text(json.dumps(store.wanted))
    with pytest.raises(UserError, match=r"another preprocessing fingerprint \(max_frames 12 -> 8"):
        MediaStore(store.dir, Preprocessing(max_frames=8))
    (store.dir / "preprocessing.json").write_bytes(bytes(40))
    with pytest.raises(UserError, match=r"preprocessing.json is unreadable"):
        MediaStore(store.dir, Preprocessing())


def test_a_rerun_writes_the_rest_in_the_order_of_an_uninterrupted_prepare(generated, tmp_path):
    """Segments of one video that are not contiguous in the clip list ([A0, B0, A1]), one entry per shard:
    after an interruption, the rerun must write A1 before B0, as the uninterrupted prepare does."""
    from tasks.pretrain import HowTo100M

    segments = HowTo100M().load(generated[0] / "howto100m", "train")
    videos = list(dict.fromkeys(c.video for c in segments))
    a = [c for c in segments if c.video == videos[0]]
    b = next(c for c in segments if c.video == videos[1])
    clips = [a[0], b, a[1]]
    uninterrupted = MediaStore(tmp_path / "one", Preprocessing(), shard_bytes=1)
    uninterrupted.fill(clips)

    def stop(done, total):
        if done == 1:
            raise KeyboardInterrupt

    interrupted = MediaStore(tmp_path / "two", Preprocessing(), shard_bytes=1)
    with pytest.raises(KeyboardInterrupt):
        interrupted.fill(clips, progress=stop)
    MediaStore(tmp_path / "two", Preprocessing(), shard_bytes=1).fill(clips)
    assert shard_bytes(interrupted) == shard_bytes(uninterrupted)


def test_a_damaged_entry_is_a_recorded_skip_or_with_bad_entry_error_one_line(vatex_test, caplog):
    from benchmark.config import load_config
    from benchmark.data import ClipTensors

    clips, store = vatex_test
    store.fill(clips)
    tar, _, rows, shard_clips = _first_shard(store, clips)
    with_audio = rows["has_audio"].tolist()
    damage_member(tar, ".flac", sum(with_audio[: with_audio.index(True)]), 200, bytes(50))  # audio off its checksum
    damaged = shard_clips[with_audio.index(True)]
    reopened = MediaStore(store.dir, Preprocessing(), SMALL_SHARDS)
    data = load_config({}, ["data.bad_entry=skip"]).data
    with caplog.at_level(logging.WARNING, logger="clip4vla"):
        tensors = ClipTensors(reopened, data)
        item = tensors(damaged)
        tensors(damaged)  # read again (the next epoch): warned once
    assert item["frames"].numel() == 0 and item["pcm"].numel() == 0  # without media, never another's
    (warning,) = [r.getMessage() for r in caplog.records if "damaged" in r.getMessage()]  # once per clip
    assert f"'{damaged.id}'" in warning and "flac is damaged" in warning
    strict = load_config({}, []).data  # the default: a number computed without the clip would not be the run's
    with pytest.raises(UserError, match=rf"{tar.name}.*'{damaged.id}'.*flac is damaged.*"
                                        r"prepare TASK --verify"):
        ClipTensors(reopened, strict)(damaged)
    assert reopened.verify(clips) == [next(iter(caplog.records)).getMessage().split("; the clip")[0]]
    assert reopened.stale(clips) == [damaged]  # forgotten: the next fill decodes it again
    reopened.fill(clips)
    assert ClipTensors(MediaStore(store.dir, Preprocessing(), SMALL_SHARDS), strict)(damaged)["pcm"].numel() > 0


def test_under_torchrun_a_clip_missing_from_the_store_is_one_line_telling_to_prepare(msrvtt_small, tiny_config,
                                                                                      tmp_path, monkeypatch, capsys):
    """Rank 0 decoding while the others wait would outlast NCCL's 10-minute barrier: every rank refuses instead,
    and after `clip4vla prepare` nothing is missing."""
    import benchmark.distributed
    from benchmark.cli import main
    from benchmark.config import load_config
    from benchmark.pipeline import media_store
    from tasks.msrvtt import MSRVTTRetrieval

    data = msrvtt_small[0].parent
    overrides = [f"data.root={data}", f"data.cache={tmp_path / 'store'}"]
    monkeypatch.setattr(benchmark.distributed, "world_size", lambda: 2)
    assert main(["evaluate", "msrvtt_retrieval", "--config", str(tiny_config), "--out", str(tmp_path / "out"),
                 *overrides]) == 2
    (message,) = capsys.readouterr().err.strip().splitlines()
    assert "msrvtt_retrieval/test_1k_a: 6 of 6 clips are not in the media store" in message
    assert f"run `clip4vla prepare msrvtt_retrieval --root {data}` first" in message
    assert main(["prepare", "msrvtt_retrieval", "--root", str(data), "--splits", "test_1k_a", "--workers", "0",
                 f"data.cache={tmp_path / 'store'}"]) == 0
    clips = MSRVTTRetrieval().load(msrvtt_small[0], "test_1k_a")
    assert media_store(load_config({}, overrides)).stale(clips) == []


def test_the_index_of_a_large_store_is_compact_rows(tmp_path):
    """Opening a store reads fixed-size numpy rows, not per-entry Python objects (store format 3 held ~2.5 kB of
    dicts per entry, 2.5 GB per process at 1 M clips): 20,000 entries open in under 400 bytes each, found, current,
    with their statuses, and loadable."""
    import tracemalloc

    from benchmark.items import Clip
    from benchmark.scale import small_entry_files, write_store

    media = tmp_path / "video.mp4"
    media.write_bytes(bytes(100))
    clips = [Clip(f"v#{i}", ("a caption",), media, media, 0, 10.0 * i, 10.0 * i + 10) for i in range(20_000)]
    write_store(MediaStore(tmp_path / "store", Preprocessing()), clips, small_entry_files())
    tracemalloc.start()
    store = MediaStore(tmp_path / "store", Preprocessing())
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 400 * len(clips), f"{peak / len(clips):.0f} bytes per entry"
    assert len(store) == len(clips) and store.stale(clips) == []
    assert [s.has_video and s.has_audio and s.duration for s in store.statuses(clips[::5000])] == [10.0] * 4
    assert store.load(clips[12_345])["frames"].shape == (1, 3, 224, 224)


def test_a_read_is_the_entrys_own_bytes_whatever_its_shard_holds(tmp_path, monkeypatch):
    """An entry is read as the byte range its index row holds: one read of that range, no scan of the shard's
    other members (wids' open parsed every member header of a shard: ~14 k of them in a 1 GiB shard, on nearly
    every read of a random epoch over thousands of shards)."""
    from benchmark.items import Clip
    from benchmark.media import store as store_module
    from benchmark.scale import small_entry_files, write_store

    media = tmp_path / "video.mp4"
    media.write_bytes(bytes(100))
    clips = [Clip(f"v#{i}", ("a caption",), media, media, 0, 10.0 * i, 10.0 * i + 10) for i in range(2_000)]
    write_store(MediaStore(tmp_path / "store", Preprocessing()), clips, small_entry_files())
    store = MediaStore(tmp_path / "store", Preprocessing())
    reads = []
    real_pread = os.pread
    monkeypatch.setattr(store_module.os, "pread", lambda fd, n, at: reads.append((n, at)) or real_pread(fd, n, at))
    for clip in (clips[0], clips[1_234], clips[-1]):
        row = store._index.rows[store._row(clip)]
        reads.clear()
        assert store.load(clip)["frames"].shape == (1, 3, 224, 224)
        assert reads == [(int(row["span"]), int(row["offset"]))]
        assert row["span"] < 8_000  # the entry alone: its ~4 kB of media, record and tar headers
