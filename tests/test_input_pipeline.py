"""The input pipeline (issue 13 item 2): reading processes hand on only what clips hold (frames they have, 16 kHz
PCM, SpecAugment masks), never padding or an absent modality as float zeros, and the model inputs made from that
on the device equal, bit for bit, what the per-clip front-end computes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from benchmark.config import load_config
from benchmark.data import ClipTensors, prepare_split
from benchmark.evaluate import clip_batches
from benchmark.media import audio as audio_fe
from benchmark.media import video as video_fe
from benchmark.media.decode import Preprocessing
from benchmark.media.store import MediaStore
from tasks.audiocaps import AudioCapsRetrieval
from tasks.vatex import VATEXRetrieval

CPU = torch.device("cpu")


@pytest.fixture
def mixed(generated, tmp_path):
    """Clips with video and audio, without audio, and without video (audio only), in a filled store; a data
    config that keeps fewer frames than clips have."""
    root = generated[0]
    clips = VATEXRetrieval().load(root / "vatex", "test") + AudioCapsRetrieval().load(root / "audiocaps", "test")[:3]
    store = MediaStore(tmp_path / "store", Preprocessing())
    split = prepare_split(clips, store, "zero", needs_video=False)
    data = load_config({}, ["data.max_frames=2", "data.max_audio_segments=2"]).data
    entries = [store.load(c) for c in split.clips]
    assert any(e["pcm"] is None for e in entries) and any(e["frames"] is None for e in entries)
    assert any(e["frames"] is not None and e["frames"].shape[0] > data.max_frames for e in entries)
    return split, store, data, entries


def per_clip_inputs(entry: dict, data, generator: torch.Generator | None) -> dict[str, torch.Tensor]:
    """One clip's model inputs computed alone from its store entry (what a reading process served before the
    log-mel moved to the device): padded frames and segments, the SpecAugment view from the same draws."""
    frames = torch.zeros(data.max_frames, 3, 224, 224, dtype=torch.uint8)
    frame_mask = torch.zeros(data.max_frames)
    if entry["frames"] is not None:
        n = min(entry["frames"].shape[0], data.max_frames)
        frames[:n], frame_mask[:n] = entry["frames"][:n], 1
    out = {"frames": video_fe.normalize(frames), "frame_mask": frame_mask}
    shape = (data.max_audio_segments, 3, 224, 224)
    if entry["pcm"] is None:
        out.update(audio=torch.zeros(shape), audio_aug=torch.zeros(shape), audio_mask=torch.zeros(shape[0]))
        return out
    logmel = audio_fe.log_mel(audio_fe.lmr(audio_fe.from_pcm(entry["pcm"])))
    out["audio"], out["audio_mask"] = audio_fe.segments(logmel, data.max_audio_segments)
    if generator is not None:
        keep_time, keep_freq = audio_fe.spec_augment_masks(logmel.shape[1], generator)
        out["audio_aug"] = audio_fe.segments(logmel * (keep_time[:, None] & keep_freq[None, :]),
                                             data.max_audio_segments)[0]
    return out


@pytest.mark.parametrize("augment", [False, True])
def test_model_inputs_made_on_the_device_equal_each_clip_computed_alone(mixed, augment):
    split, store, data, entries = mixed
    tensors = ClipTensors(store, data)
    seeds = range(len(split.clips))
    items = [tensors(c.stored, torch.Generator().manual_seed(s) if augment else None)
             for c, s in zip(split.clips, seeds, strict=True)]
    batch = tensors.batches.to_device(tensors.batches.collate(items), CPU)
    expected = [per_clip_inputs(e, data, torch.Generator().manual_seed(s) if augment else None)
                for e, s in zip(entries, seeds)]
    keys = ["frames", "frame_mask", "audio", "audio_mask"] + (["audio_aug"] if augment else [])
    assert sorted(batch) == sorted([*keys, "audio_type"])
    for key in keys:
        assert torch.equal(batch[key], torch.stack([e[key] for e in expected])), key
    assert batch["audio_type"].tolist() == [c.audio_type for c in split.clips]


def test_reading_processes_hand_on_no_padding_and_no_absent_media(mixed):
    """What a batch costs to assemble, pin and copy is the media its clips hold: uint8 frames up to max_frames
    and int32 PCM (before: float32 zeros for every padded segment and absent modality, 9.6 MB a clip at 16
    segments); two DataLoader workers hand on the same batches as the training process reading alone."""
    split, store, data, entries = mixed
    tensors = ClipTensors(store, data)
    held = sum(e["frames"][: data.max_frames].numel() if e["frames"] is not None else 0 for e in entries)
    held += sum(4 * e["pcm"].numel() if e["pcm"] is not None else 0 for e in entries)
    alone = list(clip_batches(split, tensors, 4, CPU))
    handed_on = sum(v.numel() * v.element_size() for batch in alone for v in batch.values())
    assert held <= handed_on <= held + 100 * len(split.clips)  # shapes, masks, types: bytes per clip
    with_workers = list(clip_batches(split, tensors, 4, CPU, workers=2))
    assert all(a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
               for a, b in zip(alone, with_workers, strict=True))


def test_without_audio_or_with_a_skipped_entry_a_clip_is_zero_masked(mixed, caplog):
    """The no-audio ablation (use_audio=False) hands on no PCM: every clip's segments are zero-masked, the frames
    are unchanged; a damaged entry under data.bad_entry=skip hands on neither frames nor PCM."""
    split, store, data, _ = mixed
    clips = split.clips[:4]
    with_audio = ClipTensors(store, data)
    full = with_audio.batches.to_device(with_audio.batches.collate([with_audio(c.stored) for c in clips]), CPU)
    without = ClipTensors(store, data, use_audio=False)
    batch = without.batches.to_device(without.batches.collate([without(c.stored) for c in clips]), CPU)
    assert full["audio_mask"].sum() > 0 and batch["audio_mask"].sum() == 0 and batch["audio"].abs().sum() == 0
    assert torch.equal(batch["frames"], full["frames"]) and torch.equal(batch["frame_mask"], full["frame_mask"])

    class Damaged:
        def load(self, clip):
            from benchmark.media.store import BadEntry

            raise BadEntry(f"store shard 000000.tar, clip '{clip.id}': flac is damaged (checksum)")

    skip = load_config({}, ["data.bad_entry=skip", "data.max_frames=2", "data.max_audio_segments=2"]).data
    skipping = ClipTensors(Damaged(), skip)
    batch = skipping.batches.to_device(skipping.batches.collate([skipping(c.stored) for c in clips]), CPU)
    assert batch["frame_mask"].sum() == 0 and batch["audio_mask"].sum() == 0


EPOCH_READ = """
import sys
from pathlib import Path
import torch
from benchmark.data import CaptionPairs, PreparedSplit
from benchmark.items import Clip
from benchmark.media.text import CaptionTokens
from benchmark.scale import forked_read_mb

clips = [Clip(f"v{v}#{k}", (f"now stir the pot {v} {k}",), video, video, 0, 10.0 * k, 10.0 * k + 10)
         for v in range(1000) for video in [Path(f"/data/videos/v{v:05d}.mp4")] for k in range(100)]
split = PreparedSplit(clips)
tokens = CaptionTokens([text for _, text in split.captions],
                       lambda texts, length: torch.zeros(len(texts), length, dtype=torch.long), 4)
pairs = CaptionPairs(split, lambda clip, generator: {"audio_type": torch.tensor(clip.audio_type)}, tokens,
                     augment=False, seed=0)
assert [pairs.clips[i] for i in (0, 5, 99_999)] == [clips[i].stored for i in (0, 5, 99_999)]
print(forked_read_mb(pairs))
"""


def test_a_worker_reads_an_epoch_without_copying_the_clips():
    """Reading every pair of a 100 k-clip split (items, their clips, their captions; media stubbed out) copies
    under 3 MB into a reading process forked from the one that holds the split (measured in a fresh interpreter).
    A list of Clip objects and caption tuples is copied page by page as their reference counts are written
    (issue 13): 21 MB here on the code before."""
    run = subprocess.run([sys.executable, "-c", EPOCH_READ], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])})
    assert run.returncode == 0, run.stderr[-2000:]
    assert float(run.stdout.split()[-1]) < 3
