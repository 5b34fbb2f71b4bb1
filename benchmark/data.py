"""From loaded clips to model batches: decode once into the media store, apply the missing-audio policy, serve
(caption, clip) pairs for training and clips / captions for evaluation, and make model inputs from what the
reading processes hand on, on the device."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import Dataset

from benchmark.config import DataConfig
from benchmark.errors import UserError
from benchmark.items import Clip, StoredClip, StoredClips
from benchmark.media import audio as audio_fe
from benchmark.media import video as video_fe
from benchmark.media.decode import MediaColumns
from benchmark.media.store import BadEntry, MediaStore
from benchmark.media.text import CaptionTokens
from benchmark.records import fingerprint

log = logging.getLogger("clip4vla")


@dataclass
class PreparedSplit:
    """A split after decoding: the clips a run uses, and what was missing (recorded with every result)."""

    clips: list[Clip]
    counts: dict[str, int] = field(default_factory=dict)
    has_audio: dict[str, bool] = field(default_factory=dict)

    @property
    def captions(self) -> list[tuple[int, str]]:
        """(clip index, caption) for every caption, in clip order: the explicit caption-to-clip mapping."""
        return [(i, text) for i, clip in enumerate(self.clips) for text in clip.captions]

    def manifest_hash(self) -> str:
        """Which clips (and which of them with audio) a result was computed on: equal hashes, equal data."""
        return fingerprint({"clips": [[c.id, self.has_audio.get(c.id, False)] for c in self.clips],
                            "counts": self.counts})


def prepare_split(
    clips: list[Clip], store: MediaStore, policy: str, needs_video: bool = True,
    progress: Callable[[int, int], None] | None = None, workers: int = 0,
) -> PreparedSplit:
    """Decode `clips` into `store` (those not in it yet), drop clips without decodable video when the task needs
    video, and apply the missing-audio policy.

    Policies (architecture.md): `zero` keeps clips without audio with a zero mask (fused feature = video
    alone); `drop` removes them (the authors' --filter_video_id); `miss` keeps them for evaluation to count
    as misses in audio directions.
    """
    media = store.fill(clips, progress, workers)
    kept = media.has_video | (not needs_video)
    counts = media_counts(media, needs_video)
    if policy == "drop":
        kept &= media.has_audio
    used = [c for c, k in zip(clips, kept.tolist(), strict=True) if k]
    counts = {"clips_listed": len(clips), "clips_used": len(used), **counts,
              "dropped_no_audio": counts["missing_audio"] if policy == "drop" else 0}
    return PreparedSplit(used, counts, dict(zip((c.id for c in used), media.has_audio[kept].tolist(), strict=True)))


def media_counts(media: MediaColumns, needs_video: bool) -> dict[str, int]:
    """What a split's media lack, one definition for `clip4vla prepare` and every run record: `missing_video`,
    clips without a decodable video (for tasks that need video; whatever the reason); `missing_audio`, clips
    left for the task (with video, when it needs video) without decodable audio; `error_<kind>_<reason>`, why."""
    usable = media.has_video | (not needs_video)
    errors = {f"video_{r}": n for r, n in media.error_counts("video", np.full(len(usable), needs_video)).items()}
    errors.update({f"audio_{r}": n for r, n in media.error_counts("audio", usable).items()})
    return {
        "missing_video": int((~usable).sum()),
        "missing_audio": int((usable & ~media.has_audio).sum()),
        **{f"error_{k}": v for k, v in sorted(errors.items())},
    }


class ClipTensors:
    """Store entry -> what a reading process hands on for one clip: the frames it has (uint8, at most
    data.max_frames), its 16 kHz PCM, and for the augmented view the SpecAugment masks drawn from the item's
    generator. `batches` turns a batch of them into model inputs on the device (`ClipBatches`)."""

    def __init__(self, store: MediaStore, cfg: DataConfig, use_audio: bool = True) -> None:
        self.store = store
        self.cfg = cfg
        self.use_audio = use_audio  # False: the no-audio ablation; segments stay zero-masked, never encoded
        self.batches = ClipBatches(cfg)
        self.reported: set[str] = set()

    def entry(self, clip: StoredClip) -> dict[str, torch.Tensor | None]:
        """frames and PCM of a clip. A damaged store entry is a one-line error (data.bad_entry=error, the
        default: a number computed without it would not be the run's), or under data.bad_entry=skip the clip goes
        on without media (zero masks), warned once per reading process."""
        try:
            return self.store.load(clip)
        except BadEntry as exc:
            fix = "run `clip4vla prepare TASK --verify` to decode it again"
            if self.cfg.bad_entry == "error":
                raise UserError(f"{exc}: {fix} (data.bad_entry=skip trains and scores it without media)") from None
            if clip.media_key not in self.reported:
                self.reported.add(clip.media_key)
                log.warning("%s; the clip is used without media (%s)", exc, fix)
            return {"frames": None, "pcm": None}

    def __call__(self, clip: StoredClip, augment: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        entry = self.entry(clip)
        frames, pcm = entry["frames"], entry["pcm"] if self.use_audio else None
        size = video_fe.FRAME_SIZE
        out = {  # what a clip lacks travels as an empty tensor (audio-only tasks: no frames)
            "frames": frames[: self.cfg.max_frames] if frames is not None
            else torch.zeros(0, 3, size, size, dtype=torch.uint8),
            "pcm": pcm if pcm is not None else torch.zeros(0, 0, dtype=torch.int32),
            "audio_type": torch.tensor(clip.audio_type),
        }
        if augment is not None:
            out["keep_time"], out["keep_freq"] = (
                audio_fe.spec_augment_masks(audio_fe.frames_of(pcm.shape[1]), augment) if pcm is not None
                else (torch.zeros(0, dtype=torch.bool), torch.zeros(audio_fe.N_MELS, dtype=torch.bool)))
        return out


class Batches:
    """How a dataset's items become model inputs: `collate` where they are read (a DataLoader worker),
    `to_device` in the training process, after the copy. This one is for items that are model inputs already:
    stacked, then moved."""

    def collate(self, items: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        return torch.utils.data.default_collate(items)

    def to_device(self, batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
        return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


PACKED = ("frames", "pcm", "keep_time")  # per-clip sizes differ: concatenated flat, with each clip's shape


class ClipBatches(Batches):
    """`ClipTensors` items -> model inputs. Read side (`collate`): each clip's frames, PCM and time mask are
    concatenated flat next to their shapes, so padding and absent media are never assembled, pinned or copied.
    Device side (`to_device`): frames padded to data.max_frames and normalised (CLIP's mean and std, spec §4),
    and the log-mel, its SpecAugment view and z-scored segments padded to data.max_audio_segments (spec §3),
    computed on the device, one clip at a time: it costs a CPU core about 40-70 ms per 10-s stereo clip (float64,
    as the authors' librosa), so the reading processes only decode JPEG and FLAC (`clip4vla perf gpu` times it
    apart from the training step)."""

    def __init__(self, cfg: DataConfig) -> None:
        self.cfg = cfg

    def collate(self, items: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        batch = {}
        for key in items[0]:
            if key in PACKED:
                batch[key] = torch.cat([item[key].reshape(-1) for item in items])
                batch[f"{key}_shape"] = torch.tensor([list(item[key].shape) for item in items], dtype=torch.long)
            else:
                batch[key] = torch.stack([item[key] for item in items])
        return batch

    @torch.no_grad()
    def to_device(self, batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
        shapes = {k: batch[f"{k}_shape"] for k in PACKED if k in batch}  # stay here: they cut the flat tensors
        out = {k: v.to(device, non_blocking=True) for k, v in batch.items() if not k.endswith("_shape")}
        pcm = unpacked(out.pop("pcm"), shapes["pcm"])
        frames, count = out.pop("frames"), shapes["frames"][:, 0]
        frame_mask = torch.arange(self.cfg.max_frames)[None, :] < count[:, None]
        slots = frame_mask.flatten().nonzero().flatten()  # found here: a mask index on the device would wait for it
        padded = frames.new_zeros(len(count) * self.cfg.max_frames, *shapes["frames"][0, 1:].tolist())
        padded.index_copy_(0, copied(slots, device), frames.view(-1, *padded.shape[1:]))
        out["frames"] = video_fe.normalize(padded.view(len(count), self.cfg.max_frames, *padded.shape[1:]))
        out["frame_mask"] = copied(frame_mask.float(), device)
        keep = None
        if "keep_time" in out:
            keep = list(zip(unpacked(out.pop("keep_time"), shapes["keep_time"]), out.pop("keep_freq"), strict=True))
        out["audio"], out["audio_mask"], augmented = audio_fe.model_segments(
            pcm, self.cfg.max_audio_segments, self.cfg.stft_pad_mode, keep)
        if augmented is not None:
            out["audio_aug"] = augmented
        return out


def copied(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A tensor made in this process, on `device` without waiting: pinned first on CUDA (a copy from pageable
    memory waits for the queued kernels, every micro-batch)."""
    if device.type == "cuda":
        tensor = tensor.pin_memory()
    return tensor.to(device, non_blocking=True)


def unpacked(flat: torch.Tensor, shapes: torch.Tensor) -> list[torch.Tensor]:
    """`ClipBatches.collate`'s flat concatenation -> each clip's tensor, as views."""
    sizes = shapes.prod(dim=1).tolist()
    return [part.view(shape) for part, shape in zip(flat.split(sizes), shapes.tolist(), strict=True)]


def loader_workers(cfg: DataConfig) -> int:
    """data.workers, or by default one process per CPU core but one (the training loop's), at most 8: each
    reading process decodes JPEG frames and FLAC audio, and one cannot keep an accelerator fed."""
    return cfg.workers if cfg.workers is not None else min(8, max(0, (os.cpu_count() or 1) - 1))


class CaptionPairs(Dataset):
    """Every (caption, clip) pair of a split, as the authors' sentence expansion (spec §9.2)."""

    def __init__(
        self, split: PreparedSplit, tensors: ClipTensors, tokens: CaptionTokens | torch.Tensor, augment: bool, seed: int
    ) -> None:
        self.clips = StoredClips(split.clips)  # what the reading processes read: columns, not the Clips
        # pair j: caption j of split.captions and its clip
        self.caption_clip = np.repeat(np.arange(len(split.clips)), [len(c.captions) for c in split.clips])
        self.tensors = tensors
        self.tokens = tokens  # row j belongs to pair j; CaptionTokens tokenizes it here, in the reading worker
        self.augment = augment
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.caption_clip)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        clip_index = int(self.caption_clip[index])
        generator = None
        if self.augment:  # the SpecAugment draw depends only on (seed, epoch, index): resumable, worker-proof
            generator = torch.Generator().manual_seed(hash((self.seed, self.epoch, index)) & 0x7FFFFFFF)
        item = self.tensors(self.clips[clip_index], generator)
        item["tokens"] = self.tokens[index]
        item["clip_index"] = torch.tensor(clip_index)
        return item


class ClipItems(Dataset):
    """One item per clip (evaluation encodes each clip once)."""

    def __init__(self, split: PreparedSplit, tensors: ClipTensors) -> None:
        self.clips = StoredClips(split.clips)
        self.tensors = tensors

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return self.tensors(self.clips[index])


class EpochItems(Dataset):
    """A dataset read by (epoch, index) keys: the reading process's copy is set to the item's epoch first, so
    DataLoader workers that persist across epochs (forked once per training, before any later `set_epoch` in the
    main process) read every epoch as the main process would: the SpecAugment view and the pre-training mix
    depend on the epoch."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset
        self.epoch: int | None = None

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> dict[str, torch.Tensor]:
        epoch, index = key
        if epoch != self.epoch and hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)
        self.epoch = epoch
        return self.dataset[index]


class EpochReads(torch.utils.data.Sampler):
    """The (epoch, index) keys one rank reads this epoch, replaced before each epoch (`EpochItems`)."""

    def __init__(self) -> None:
        self.keys: list[tuple[int, int]] = []

    def __iter__(self):
        return iter(self.keys)

    def __len__(self) -> int:
        return len(self.keys)


def epoch_permutation(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The dataset order of one epoch: a permutation that depends only on (seed, epoch), so it survives resume."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1000 + epoch))


def epoch_indices(n: int, seed: int, epoch: int) -> list[int]:
    return epoch_permutation(n, seed, epoch).tolist()


class MixedCorpus(Dataset):
    """The pre-training corpora as one dataset whose epochs differ (spec §7.1).

    Without weights, every item of every corpus once per epoch. With weights (spec §7.1 [R]: explicit ratio
    sampling), each epoch has `length` items, a share weight_k / sum(weights) from corpus k, read in a
    per-epoch permutation of that corpus, cycled when it is shorter than its share. Either way `set_epoch`
    reaches every corpus, so the SpecAugment view of the intra-modal loss changes every epoch and is the same
    again on resume. Deterministic for (seed, epoch). The released code's mix is weights [1, 1] with length
    twice the first corpus (spec §7.1).
    """

    def __init__(self, parts: list[Dataset], weights: list[float] | None = None, length: int | None = None,
                 seed: int = 0) -> None:
        self.parts, self.weights, self.seed = parts, weights, seed
        everything = sum(len(p) for p in parts)
        self.length = (length or everything) if weights else everything
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        # the epoch's items as (corpus, item) columns: every DataLoader worker builds them for its epoch
        # (EpochItems), so they are numpy arrays, not a list of a million tuples
        if self.weights is None:
            self.corpus = np.repeat(np.arange(len(self.parts)), [len(p) for p in self.parts])
            self.item = np.concatenate([np.arange(len(p)) for p in self.parts]) if self.parts else np.zeros(0, int)
        else:
            shares = [round(self.length * w / sum(self.weights)) for w in self.weights]
            shares[-1] = self.length - sum(shares[:-1])
            self.corpus = np.repeat(np.arange(len(self.parts)), shares)
            self.item = np.concatenate([  # corpus k's own order, by (seed, epoch), cycled to its share
                epoch_permutation(len(part), self.seed * 100 + k, epoch).numpy()[np.arange(share) % len(part)]
                for k, (part, share) in enumerate(zip(self.parts, shares, strict=True))])
        for part in self.parts:
            if hasattr(part, "set_epoch"):
                part.set_epoch(epoch)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return self.parts[int(self.corpus[index])][int(self.item[index])]
