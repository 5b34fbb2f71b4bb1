"""`clip4vla perf gpu`: the GPU check, prepared to run in one go (issue 13 item 5; README "The GPU check").

On one CUDA device, in a few minutes: ViT-B/32 training steps at the paper's shapes, each step as `train.py`
runs it (the batch's copy and its model inputs made on the device: frames normalised, log-mel and segments from
the PCM; forward, loss, backward, gradient clipping, fused AdamW), in bf16 autocast and fp32: samples/s (median
of the timed steps, with their spread) and peak memory; caption decoding per video (beam 5, 16 steps, 12 frames
+ 16 segments); the data path's read rate at the configured workers (`clip4vla perf data`); one DDP step under
a 1-process torchrun on NCCL. Without CUDA it prints one line and exits 0.

The same code runs on CPU with the tiny model (`--device cpu`, tests/test_perf_gpu.py), so the GPU run exercises
nothing that was never run.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time

import torch

# label -> (objective, per-GPU batch, frames, audio segments, fusion). Video-retrieval fine-tuning: the authors'
# 4-GPU run of batch 128 (32 per GPU), loose_seq, 16 segments; pre-training at 10-s-clip shapes (10
# segments), a micro-batch of 256 over 8 GPUs (spec §7.2: 4096 with 16 accumulation steps).
SHAPES = {
    "fine-tune retrieval": ("retrieval", 32, 12, 16, "loose_seq"),
    "pre-train": ("pretrain", 32, 12, 10, "feat_avg"),
}
MAX_WORDS = 32
DDP_TIMEOUT_S = 300


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_memory_gb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 1e9
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6


def inputs(batch: int, frames: int, segments: int, generator: torch.Generator, augment: bool = False):
    """A batch as reading processes hand it on (uint8 frames, 16-bit stereo PCM long enough for `segments` log-mel
    segments, SpecAugment masks with `augment`) and the `ClipBatches` that makes it model inputs on a device."""
    from benchmark.config import DataConfig
    from benchmark.data import ClipBatches
    from benchmark.media import audio as audio_fe

    samples = (audio_fe.SEGMENT_FRAMES * segments - 2) * audio_fe.HOP  # 1 + N // 128 frames: `segments` segments
    items = []
    for _ in range(batch):
        tokens = torch.randint(1, 49000, (MAX_WORDS,), generator=generator)
        tokens[0], tokens[-1] = 49406, 49407
        item = {"tokens": tokens, "frames": torch.randint(0, 256, (frames, 3, 224, 224), dtype=torch.uint8,
                                                          generator=generator),
                "pcm": torch.randint(-2**15, 2**15, (2, samples), dtype=torch.int32, generator=generator) << 16,
                "audio_type": torch.randint(0, 2, (), generator=generator)}
        if augment:
            item["keep_time"], item["keep_freq"] = audio_fe.spec_augment_masks(audio_fe.frames_of(samples), generator)
        items.append(item)
    batches = ClipBatches(DataConfig(max_frames=frames, max_audio_segments=segments))
    return batches.collate(items), batches


def build(clip_name: str, fusion: str, device: torch.device, overrides: tuple[str, ...] = ()):
    from benchmark.config import load_config
    from benchmark.model import build_model

    cfg = load_config({}, [f"model.clip_name={clip_name}", "model.pretrained=null", f"model.fusion={fusion}",
                           *overrides])
    return cfg, build_model(cfg.model).to(device)


def training_steps(clip_name: str, label: str, precision: str, device: torch.device, iters: int,
                   batch: int | None = None, overrides: tuple[str, ...] = ()) -> dict:
    """Time `iters` training steps after two warm-up steps; samples/s from the median step."""
    from benchmark.losses import PretrainLoss, RetrievalLoss
    from benchmark.train import adamw, autocast_for, param_groups

    objective, per_gpu, frames, segments, fusion = SHAPES[label]
    batch = batch or per_gpu
    cfg, model = build(clip_name, fusion, device, overrides)
    loss_fn = PretrainLoss(cfg.loss) if objective == "pretrain" else RetrievalLoss(cfg.loss, "fused")
    optimizer = adamw(param_groups(model, cfg.finetune, objective))
    read, batches = inputs(batch, frames, segments, torch.Generator().manual_seed(0), objective == "pretrain")
    if device.type == "cuda":
        read = {k: v.pin_memory() for k, v in read.items()}  # as the training's DataLoader hands it on
        torch.cuda.reset_peak_memory_stats(device)
    times, making = [], []
    for i in range(2 + iters):
        synchronize(device)
        start = time.perf_counter()
        data = batches.to_device(read, device)  # the copy, frames normalised, log-mel and segments on the device
        synchronize(device)
        made = time.perf_counter()
        with autocast_for(device, precision):
            terms = loss_fn(model(data, objective=objective))
        sum(v for k, v in terms.items() if k.endswith("_loss")).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        synchronize(device)
        if i >= 2:
            times.append(time.perf_counter() - start)
            making.append(made - start)
    median = statistics.median(times)
    return {"label": label, "precision": precision, "batch": batch, "samples_per_s": batch / median,
            "spread_s": (min(times), max(times)), "inputs_s": statistics.median(making),
            "peak_gb": peak_memory_gb(device)}


def front_end_difference(device: torch.device) -> float:
    """Largest difference between the model inputs made on `device` and on the CPU from the same batch (4 clips,
    16 segments, with the SpecAugment view): the device's FFT and log10 round differently in the last bits."""
    read, batches = inputs(4, 2, 16, torch.Generator().manual_seed(0), augment=True)
    here, there = batches.to_device(read, device), batches.to_device(read, torch.device("cpu"))
    return max((here[k].cpu() - there[k]).abs().max().item() for k in ("frames", "audio", "audio_aug"))


@torch.no_grad()
def caption_decoding(clip_name: str, device: torch.device, videos: int, overrides: tuple[str, ...] = (),
                     precision: str = "bf16", iters: int = 1) -> dict[str, list[float]]:
    """Seconds per video of caption inference as evaluation runs it, for `iters` repetitions after a warm-up:
    "encoders" (model inputs to the context: 12 frames + 16 segments) and "decoding" (beam 5, 16 steps)."""
    from benchmark.model.decoder import generate
    from benchmark.train import autocast_for

    _, model = build(clip_name, "loose_seq", device, ("model.decoder=true", *overrides))
    model.eval()
    read, batches = inputs(videos, 12, 16, torch.Generator().manual_seed(0))
    seconds: dict[str, list[float]] = {"encoders": [], "decoding": []}
    for _ in range(iters + 1):  # the first one warms up
        synchronize(device)
        start = time.perf_counter()
        with autocast_for(device, precision):
            context = model.context(batches.to_device(read, device))
            synchronize(device)
            encoded = time.perf_counter()
            generate(model, context, 16, beam=5)
        synchronize(device)
        seconds["encoders"].append((encoded - start) / videos)
        seconds["decoding"].append((time.perf_counter() - encoded) / videos)
    return {part: times[1:] for part, times in seconds.items()}


def ddp_step(device_name: str) -> None:
    """One DDP training step with the gradient-carrying all-gather, inside torchrun (NCCL on CUDA, else gloo)."""
    from benchmark import distributed
    from benchmark.losses import RetrievalLoss
    from benchmark.train import GATHERED

    device = distributed.setup(torch.device(device_name), even_alone=True)
    cfg, model = build("tiny-clip4vla" if device.type == "cpu" else "ViT-B-32-quickgelu", "feat_avg", device)
    net = distributed.wrap(model)
    read, batches = inputs(4, 2, 2, torch.Generator().manual_seed(0))
    out = net(batches.to_device(read, device), objective="retrieval")
    out = {k: distributed.all_gather(v) if k in GATHERED else v for k, v in out.items()}
    sum(RetrievalLoss(cfg.loss, "fused")(out).values()).backward()
    synchronize(device)
    print(f"ddp step ok: backend {torch.distributed.get_backend()}, world {distributed.world_size()}")
    torch.distributed.destroy_process_group()


def perf_gpu(device_name: str = "cuda", clip_name: str = "ViT-B-32-quickgelu", iters: int = 5,
             data_task: str | None = None, batch: int | None = None, overrides: tuple[str, ...] = ()) -> int:
    """The whole check; prints Markdown tables. Without CUDA (and device cuda): one line, exit 0. `data_task`: the
    task whose generated dataset the data-path row reads (`perf data`); none, no row. `overrides` (config
    KEY=VALUE) fit a smaller model, e.g. the tiny one's model.cross_layers."""
    if device_name == "cuda" and not torch.cuda.is_available():
        print(f"perf gpu: skipped, no CUDA device here (torch {torch.__version__}, CUDA "
              f"{torch.version.cuda or 'not built'}); run it on a GPU machine (README, \"The GPU check\")")
        return 0
    device = torch.device(device_name)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"device: {name}, torch {torch.__version__}, model {clip_name}")
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True  # as training runs
    print("| shape | precision | batch | samples/s | step min-max (s) | of it model inputs (s) | peak memory (GB) |")
    print("|---|---|---|---|---|---|---|")
    for label in SHAPES:
        for precision in ("bf16", "fp32"):
            try:
                row = training_steps(clip_name, label, precision, device, iters, batch, overrides)
            except torch.OutOfMemoryError:
                print(f"| {label} | {precision} | {batch or SHAPES[label][1]} | out of memory | | | |", flush=True)
                torch.cuda.empty_cache()
                continue
            print(f"| {label} | {precision} | {row['batch']} | {row['samples_per_s']:.1f} | "
                  f"{row['spread_s'][0]:.3f}-{row['spread_s'][1]:.3f} | {row['inputs_s']:.3f} | {row['peak_gb']:.1f} |",
                  flush=True)
    print(f"model inputs made on {device.type} vs the CPU: largest difference {front_end_difference(device):.2e} "
          "(z-scored log-mel and normalised frames)")
    per_video = caption_decoding(clip_name, device, 8, overrides)
    print(f"caption inference (beam 5, 16 steps, bf16): encoders {per_video['encoders'][0]:.3f} + decoding "
          f"{per_video['decoding'][0]:.3f} s per video")
    if data_task:
        from benchmark.config import DataConfig
        from benchmark.data import loader_workers
        from benchmark.perf import perf_data

        perf_data(data_task, "small", max(loader_workers(DataConfig()), 1))
    else:
        print("data path: not measured (give --task TASK, as for `clip4vla perf data`)")
    try:
        run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
                              "1", "-m", "benchmark.perf_gpu", device.type], capture_output=True, text=True,
                             env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=DDP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        print(f"ddp step FAILED: no answer in {DDP_TIMEOUT_S} s (a hung NCCL initialisation?)")
        return 1
    if run.returncode == 0:
        print(run.stdout.strip().splitlines()[-1])
    else:
        print(f"ddp step FAILED (exit {run.returncode}):\n" + "\n".join(run.stderr.strip().splitlines()[-8:]))
    return run.returncode


if __name__ == "__main__":  # the 1-process torchrun of perf_gpu
    ddp_step(sys.argv[1])
