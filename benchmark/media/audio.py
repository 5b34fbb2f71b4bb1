"""Audio front-end of CLIP4VLA (spec §3): waveform -> per-channel log-mel [3, T, 224] -> z-scored segments.

The log-mel "image" of one segment is [3, 224, 224]: channels (L, M=(L+R)/2, R), rows = 224 frames of 8 ms
(1.792 s), columns = 224 Slaney mel bins up to 8 kHz. It matches the authors' librosa 0.9 front-end
(tests/fixtures/audio/, checked in tests/test_audio_frontend.py), including its resampler: resampy's kaiser_best,
as librosa 0.9's `resample`. Deliberate differences from the authors' code: any input rate is resampled to 16 kHz
(stereo included; the authors' loader turned >16 kHz stereo into silence, spec §12 item 21b) and mono files of
any length work (item 21).
"""

from __future__ import annotations

import functools
import math
import warnings
from pathlib import Path

import numpy as np
import torch

from benchmark.media.errors import MediaError

SAMPLE_RATE = 16_000
N_FFT = 512  # 32 ms
HOP = 128  # 8 ms
N_MELS = 224
F_MAX = 8_000.0
TOP_DB = 80.0
SEGMENT_FRAMES = 224  # 1.792 s per segment
MAX_SECONDS = 60.0  # longer inputs keep their centred 60 s (spec §3 step 2)
AMIN = 1e-10
RESAMPLER = "resampy-kaiser_best"  # librosa 0.9's default res_type; part of the cache fingerprint


def read_file(path: Path) -> tuple[np.ndarray, int]:
    """Read any audio file or the audio track of a video: float32 [channels, samples] in [-1, 1], and its rate.

    WAV/FLAC go through soundfile; containers (mp4, mkv, webm, m4a) through PyAV. Raises MediaError.
    """
    path = Path(path)
    if not path.is_file():
        raise MediaError(path, "missing")
    if path.stat().st_size == 0:
        raise MediaError(path, "empty")
    if path.suffix.lower() in (".wav", ".flac", ".ogg"):
        import soundfile

        try:
            data, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
        except Exception as exc:  # libsndfile raises its own RuntimeError subclasses
            raise MediaError(path, "corrupt", str(exc)) from exc
        wave = data.T
    else:
        wave, rate = _read_container_audio(path)
    if not np.isfinite(wave).all():  # float WAVs can hold NaN/Inf: one such clip turns every weight NaN
        raise MediaError(path, "non_finite", f"{int((~np.isfinite(wave)).sum())} NaN or Inf samples")
    return wave, int(rate)


def cut_waveform(wave: np.ndarray, rate: int, path: Path, start: float | None = None, end: float | None = None
                 ) -> tuple[np.ndarray, int]:
    """The [rate·floor(start), rate·ceil(end)) samples of a whole waveform read by `read_file` (spec §3 step 1);
    a cut shorter than one STFT window (32 ms) is MediaError too_short: it holds no full frame of sound."""
    if start is not None or end is not None:
        first = int(rate * math.floor(start or 0))
        wave = wave[:, first : int(rate * math.ceil(end)) if end is not None else None]
    window = math.ceil(rate * N_FFT / SAMPLE_RATE)
    if wave.shape[1] < window:
        raise MediaError(path, "too_short", f"{wave.shape[1]} samples, fewer than one {window}-sample window")
    return np.ascontiguousarray(wave), int(rate)


def read_waveform(path: Path, start: float | None = None, end: float | None = None) -> tuple[np.ndarray, int]:
    """`read_file` then `cut_waveform`: one clip's samples."""
    return cut_waveform(*read_file(path), path, start, end)


def _read_container_audio(path: Path) -> tuple[np.ndarray, int]:
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise MediaError(path, "no_stream", "no audio track")
            stream = container.streams.audio[0]
            resampler = av.AudioResampler(format="fltp", layout=stream.layout.name, rate=stream.rate)
            chunks = []
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    chunks.append(out.to_ndarray())
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray())
            rate = stream.rate
    except MediaError:
        raise
    except Exception as exc:  # PyAV raises InvalidDataError, EOFError, ... for broken containers
        raise MediaError(path, "corrupt", f"{type(exc).__name__}: {exc}") from exc
    if not chunks:
        raise MediaError(path, "too_short", "audio track has no samples")
    return np.concatenate(chunks, axis=1).astype(np.float32), rate


def lmr_channels(wave: np.ndarray, rate: int) -> torch.Tensor:
    """[C, N] at `rate` -> float64 [3, N'] = (L, (L+R)/2, R) at 16 kHz, centred 60 s at most (spec §3 step 2):
    `lmr(to_16k(...))`."""
    return lmr(torch.from_numpy(to_16k(wave, rate)))


def to_16k(wave: np.ndarray, rate: int) -> np.ndarray:
    """[C, N] at `rate` -> float64 [min(C, 2), N'] at 16 kHz: more than two channels keep the first two (front
    left/right); the centred 60 s crop is taken at the original rate, then every channel is resampled as
    `resample_16k` does."""
    max_len = int(MAX_SECONDS * rate)
    if wave.shape[1] > max_len:
        start = (wave.shape[1] - max_len) // 2
        wave = wave[:, start : start + max_len]
    return resample_16k(np.asarray(wave[:2], dtype=np.float64), rate)


def lmr(x: torch.Tensor) -> torch.Tensor:
    """[1 or 2, N] -> [3, N] = (L, (L+R)/2, R); mono is duplicated (L = M = R)."""
    if x.shape[0] == 1:
        x = x.expand(2, -1)
    return torch.stack([x[0], (x[0] + x[1]) / 2, x[1]])


PCM_SCALE = 2.0**31  # stored samples are int32 with the PCM bits at the top, as libsndfile reads them


def pcm(x: np.ndarray, bits: int) -> np.ndarray:
    """float [C, N] -> int32 [C, N]: `bits`-bit PCM (rounded, clipped) in the top bits, as a WAV/FLAC writer
    stores it. Lossless for audio read from 16-bit files at 16 kHz (each sample is k / 32768), whatever `bits`."""
    full = 2.0 ** (bits - 1)
    q = np.clip(np.round(x * full), -full, full - 1).astype(np.int64)
    return (q << (32 - bits)).astype(np.int32)


def resample_16k(x: np.ndarray, rate: int) -> np.ndarray:
    """float64 [C, N] at `rate` -> [C, ceil(N·16000/rate)] at 16 kHz, as the authors' librosa 0.9.2
    `resample(y, rate, 16000)`: resampy's kaiser_best along the last axis, then `fix_length` (zero-pad or trim
    at the end). Any rate but 16 kHz goes through it, upsampling too.
    """
    if rate == SAMPLE_RATE:
        return x
    size = int(np.ceil(x.shape[-1] * SAMPLE_RATE / rate))
    if int(x.shape[-1] * float(SAMPLE_RATE) / float(rate)) < 1:
        # resampy refuses an empty output (librosa raised); a couple of samples above 16 kHz become zeros
        return np.zeros((*x.shape[:-1], size), dtype=x.dtype)
    import resampy  # imports numba; the first call in a process JIT-compiles the loop (~1-2 s)

    y = resampy.resample(x, rate, SAMPLE_RATE, filter="kaiser_best", axis=-1)
    if y.shape[-1] >= size:
        return y[..., :size]
    return np.pad(y, [(0, 0)] * (y.ndim - 1) + [(0, size - y.shape[-1])])


@functools.lru_cache(maxsize=8)
def _mel_transform(pad_mode: str, device: torch.device = torch.device("cpu")) -> torch.nn.Module:
    import torchaudio

    with warnings.catch_warnings():
        # 224 Slaney bins over 257 FFT bins leave a few empty filters; librosa builds the same ones (spec §3).
        warnings.filterwarnings("ignore", message="At least one mel filterbank has all zero values")
        transform = torchaudio.transforms.MelSpectrogram(
            sample_rate=SAMPLE_RATE,
            n_fft=N_FFT,
            win_length=N_FFT,
            hop_length=HOP,
            f_min=0.0,
            f_max=F_MAX,
            n_mels=N_MELS,
            power=2.0,
            center=True,
            pad_mode=pad_mode,  # "constant" = librosa 0.9 zero padding (default); "reflect" = librosa 0.8
            norm="slaney",
            mel_scale="slaney",
            window_fn=torch.hann_window,
        )
    return transform.double().to(device)


def log_mel(channels: torch.Tensor, pad_mode: str = "constant") -> torch.Tensor:
    """[3, N] 16 kHz -> float32 dB [3, T, 224] with T = 1 + N // 128, floored at max - 80 dB per channel."""
    power = _mel_transform(pad_mode, channels.device)(channels)  # [3, 224, T]
    db = 10.0 * torch.log10(power.clamp_min(AMIN))
    # Per channel, as the authors' per-channel librosa calls (AmplitudeToDB would take a joint max, spec §3).
    floor = db.amax(dim=(1, 2), keepdim=True) - TOP_DB
    return torch.maximum(db, floor).transpose(1, 2).float().contiguous()


def file_log_mel(path: Path, pad_mode: str = "constant", start: float | None = None, end: float | None = None
                 ) -> torch.Tensor:
    """Read `path` (or its [start, end) segment) and return its log-mel [3, T, 224]; raises MediaError."""
    wave, rate = read_waveform(path, start, end)
    return log_mel(lmr_channels(wave, rate), pad_mode)


def frames_of(samples: int) -> int:
    """Log-mel frames of `samples` at 16 kHz: T = 1 + N // 128 (centred STFT frames, as `log_mel` makes)."""
    return 1 + samples // HOP


def spec_augment_masks(frames: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """The intra-modal positive view's masks (spec §3 "Augmentation") for a log-mel of `frames` frames: bool
    keep [frames] and keep [224]; the view is `logmel * (keep_time[:, None] & keep_freq[None, :])`, masked bins
    at 0 dB, all channels alike.

    11 frequency masks and int(0.15·T) time masks, each of width floor(U[0, 10)), start uniform over the valid
    range; no time warp. Roughly half the frames of a 10 s clip end up masked. Drawn where the clip is read (its
    generator, from (seed, epoch, item)); applied where the log-mel is computed (`model_segments`).
    """
    keep_time = _mask_axis(frames, int(frames * 0.15), generator)
    keep_freq = _mask_axis(N_MELS, int(N_MELS * 0.05), generator)
    return keep_time, keep_freq


def _mask_axis(length: int, count: int, generator: torch.Generator) -> torch.Tensor:
    """Bool [length]: False inside `count` random masks of width floor(U[0,10))."""
    if count == 0:
        return torch.ones(length, dtype=torch.bool)
    widths = torch.floor(torch.rand(count, generator=generator) * 10).long()
    starts = torch.floor(torch.rand(count, generator=generator) * (length - widths + 1)).long()
    idx = torch.arange(length)
    masked = ((idx[None, :] >= starts[:, None]) & (idx[None, :] < (starts + widths)[:, None])).any(0)
    return ~masked


def segments(logmel: torch.Tensor, max_segments: int) -> tuple[torch.Tensor, torch.Tensor]:
    """[3, T, 224] dB -> z-scored segments [max_segments, 3, 224, 224] and mask [max_segments] (spec §3 5-7).

    As the authors' `split_frame`: the time axis is zero-padded by 224 - T % 224 frames (a whole zero segment
    when T % 224 == 0), each segment and channel is z-scored over its 224x224 plane including that padding,
    and when there are more than `max_segments` the centred contiguous window is kept.
    """
    channels, frames, bins = logmel.shape
    pad = SEGMENT_FRAMES - frames % SEGMENT_FRAMES
    x = torch.nn.functional.pad(logmel, (0, 0, 0, pad))
    n = x.shape[1] // SEGMENT_FRAMES
    x = x.reshape(channels, n, SEGMENT_FRAMES, bins).transpose(0, 1)  # [n, 3, 224, 224]
    if n > max_segments:
        start = (n - max_segments) // 2
        x = x[start : start + max_segments]
        n = max_segments
    mean = x.mean(dim=(2, 3), keepdim=True)
    std = x.std(dim=(2, 3), keepdim=True, unbiased=False)
    x = (x - mean) / (std + 1e-10)
    out = x.new_zeros(max_segments, channels, SEGMENT_FRAMES, bins)
    out[:n] = x
    mask = x.new_zeros(max_segments)
    mask[:n] = 1
    return out, mask


def from_pcm(pcm: torch.Tensor) -> torch.Tensor:
    """Stored int32 PCM [C, N] (the bits at the top, `pcm`) -> float64 [C, N] in [-1, 1): exact (a power of two)."""
    return pcm.to(torch.float64) / PCM_SCALE


@torch.no_grad()
def model_segments(pcm: list[torch.Tensor], max_segments: int, pad_mode: str = "constant",
                   keep: list[tuple[torch.Tensor, torch.Tensor]] | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Each clip's 16 kHz PCM [C, N] (empty: no audio), on the device that computes -> z-scored segments
    [B, max_segments, 3, 224, 224], their mask [B, max_segments], and with `keep` (each clip's
    `spec_augment_masks`) the augmented view's segments (else None).

    One clip at a time at its own length, so every clip's log-mel is exactly the one it has alone (a batch
    padded to its longest clip would change the last frames under reflect padding, and each clip's -80 dB floor).
    """
    device = pcm[0].device if pcm else torch.device("cpu")
    shape = (len(pcm), max_segments, 3, SEGMENT_FRAMES, N_MELS)
    audio, mask = torch.zeros(shape, device=device), torch.zeros(len(pcm), max_segments, device=device)
    augmented = torch.zeros(shape, device=device) if keep is not None else None
    for i, samples in enumerate(pcm):
        if samples.numel() == 0:
            continue
        logmel = log_mel(lmr(from_pcm(samples)), pad_mode)
        audio[i], mask[i] = segments(logmel, max_segments)
        if keep is not None:
            keep_time, keep_freq = keep[i]
            augmented[i] = segments(logmel * (keep_time[:, None] & keep_freq[None, :]), max_segments)[0]
    return audio, mask, augmented
