"""The front-end against features computed by the authors' own front-end (librosa 0.9.2), and its resampling
against resampy's kaiser_best, which librosa 0.9's `resample` used."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import resampy
import soundfile
import torch

from benchmark.media import audio

FIXTURES = Path(__file__).parent / "fixtures" / "audio"  # committed with the tests: a missing one is a failure
NAMES = ["mono16k_0p5s", "stereo16k_10s"]


def _fixture(name):
    data = np.load(FIXTURES / f"{name}.npz")
    wave = data["wav_pcm16"].astype(np.float64) / 32768
    wave = wave[None] if wave.ndim == 1 else wave.T
    return data, wave, int(data["wav_rate"])


@pytest.mark.parametrize("name", NAMES)
def test_log_mel_matches_the_authors_front_end(name):
    data, wave, rate = _fixture(name)
    logmel = audio.log_mel(audio.lmr_channels(wave, rate))
    reference = torch.from_numpy(data["logmel"])
    assert logmel.shape == reference.shape
    assert (logmel - reference).abs().max() < 0.01  # dB


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("max_segments", [6, 4])
def test_segments_selection_and_masks_match(name, max_segments):
    data, wave, rate = _fixture(name)
    segments, mask = audio.segments(audio.log_mel(audio.lmr_channels(wave, rate)), max_segments)
    assert mask.tolist() == data[f"audio_mask_L{max_segments}"].tolist()
    selected = torch.from_numpy(data["segments_all"][data[f"sel_L{max_segments}"]].astype(np.float32))
    n = int(mask.sum())
    torch.testing.assert_close(segments[:n], selected, atol=2e-3, rtol=1e-3)  # reference stored as float16
    assert segments[n:].abs().sum() == 0


def test_spec_augment_masks_about_the_documented_share():
    data, wave, rate = _fixture("stereo16k_10s")
    logmel = audio.log_mel(audio.lmr_channels(wave, rate))
    keep_time, keep_freq = audio.spec_augment_masks(logmel.shape[1], torch.Generator().manual_seed(0))
    augmented = logmel * (keep_time[:, None] & keep_freq[None, :])
    frames_masked = (augmented == 0).all(dim=2).all(dim=0).float().mean().item()
    bins_masked = (augmented == 0).all(dim=1).all(dim=0).float().mean().item()
    reference_frames = data["specaug_time_masked"].mean()
    assert abs(frames_masked - reference_frames) < 0.1  # ~half the frames of a 10 s clip (spec §3)
    assert 0.1 < bins_masked < 0.35  # ~20% of the mel bins


@pytest.mark.parametrize("rate", [8000, 16000, 44100, 48000])
@pytest.mark.parametrize("channels", [1, 2])
def test_any_rate_and_channel_count_gives_16k_frames(tmp_path, rate, channels):
    seconds = 1.5
    t = np.arange(int(seconds * rate)) / rate
    wave = np.stack([np.sin(2 * np.pi * 440 * t)] * channels, axis=1) * 0.3
    path = tmp_path / "tone.wav"
    soundfile.write(path, wave, rate)
    logmel = audio.file_log_mel(path)
    assert logmel.shape == (3, 1 + int(seconds * 16000) // 128, 224)
    assert torch.isfinite(logmel).all() and logmel.std() > 1  # stereo above 16 kHz is resampled, not silenced


def test_long_mono_input_keeps_the_centred_60_seconds():
    rate = 16000
    tone = np.sin(2 * np.pi * 440 * np.arange(2 * rate) / rate)
    at_edges, in_middle = np.zeros((1, 65 * rate)), np.zeros((1, 65 * rate))
    at_edges[0, : 2 * rate] = at_edges[0, -2 * rate :] = tone  # inside the 2.5 s cut from each end
    in_middle[0, 31 * rate : 33 * rate] = tone
    kept = audio.log_mel(audio.lmr_channels(at_edges, rate))
    assert kept.shape[1] == 1 + 60 * rate // 128
    assert kept.std() < 1e-3  # both tones were cut away: silence only
    assert audio.log_mel(audio.lmr_channels(in_middle, rate)).std() > 1


def _test_signal(rate, channels, seconds=2.0, seed=0):
    """[channels, N] float64: tones from 440 Hz to 7.9 kHz (around the 16 kHz resamplers' cut-offs) plus a little
    noise, different per channel."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    out = []
    for c in range(channels):
        tones = [440.0 * (c + 1), 2_500.0, 6_000.0 + 300 * c, 7_200.0, 7_650.0 + 100 * c, 7_900.0]
        x = sum(0.1 / (i + 1) * np.sin(2 * np.pi * f * t + i) for i, f in enumerate(tones))
        out.append(x + 1e-3 * rng.standard_normal(t.shape))
    return np.stack(out)


def _authors_resample(channel, rate):
    """librosa 0.9.2 `resample(y, rate, 16000)` (res_type 'kaiser_best'): resampy, then `fix_length` to
    ceil(N·16000/rate) samples (zero-pad or trim at the end)."""
    y = resampy.resample(np.asarray(channel, dtype=np.float64), rate, 16_000, filter="kaiser_best", axis=-1)
    size = int(np.ceil(channel.shape[-1] * 16_000 / rate))
    return y[:size] if y.shape[-1] >= size else np.pad(y, (0, size - y.shape[-1]))


@pytest.mark.parametrize("rate", [22050, 44100, 48000, 8000])
@pytest.mark.parametrize("channels", [1, 2])
def test_resampling_is_the_authors_resampy_kaiser_best(rate, channels):
    wave = _test_signal(rate, channels)
    left, right = (_authors_resample(wave[c], rate) for c in (0, -1))  # stereo resampled too (README deviations)
    reference = torch.from_numpy(np.stack([left, (left + right) / 2, right]))
    got = audio.lmr_channels(wave, rate)
    assert got.dtype == torch.float64 and got.shape == reference.shape == (3, math.ceil(wave.shape[1] * 16000 / rate))
    torch.testing.assert_close(got, reference, atol=1e-12, rtol=0)
    difference = (audio.log_mel(got) - audio.log_mel(reference)).abs()
    assert difference.amax(dim=(0, 1)).max() < 0.01  # dB, every one of the 224 mel bins (200-223 included)


def test_resampling_crops_the_centred_60_seconds_first():
    rate = 44100
    wave = _test_signal(rate, 1, seconds=61.0)
    start = (wave.shape[1] - 60 * rate) // 2
    expected = _authors_resample(wave[0, start : start + 60 * rate], rate)
    got = audio.lmr_channels(wave, rate)
    assert got.shape[1] == 60 * 16_000
    torch.testing.assert_close(got[1], torch.from_numpy(expected), atol=1e-12, rtol=0)


def test_a_few_samples_above_16k_give_a_padded_frame():
    got = audio.lmr_channels(np.full((2, 2), 0.5), 48000)  # resampy alone would have 0 output samples
    assert got.shape == (3, 1)
    assert torch.isfinite(audio.log_mel(got)).all()
