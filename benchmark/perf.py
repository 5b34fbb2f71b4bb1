"""Benchmarks that print a table (results are recorded in README's performance section).

`clip4vla perf model`: forward+backward time per sample and peak memory of a fine-tune step (CPU). Each
(model, attention) case runs in its own process so that its peak resident memory is its own. Inputs are
like 10-30 s web videos: batch 4, max 12 frames and 16 audio segments, with real lengths shorter than that so padding
exists (10/12/11/8 frames, 16/9/12/6 segments); the loss is the retrieval fine-tuning loss on t->(v+a).

`clip4vla perf train`: whole training steps (forward, backward, AdamW) per precision (fp32, bf16 autocast),
attention (SDPA, math) and gradient checkpointing (off, on), same inputs.

`clip4vla perf data --task TASK`: decode throughput (media -> cache) and cached-read throughput (cache -> model
inputs), in clips per second, in this process and with 2 worker processes, on the task's generated dataset.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

import torch

CASES = {"tiny": "tiny-clip4vla", "vit-b-32": "ViT-B-32-quickgelu"}
FRAMES, SEGMENTS = (10, 12, 11, 8), (16, 9, 12, 6)


def _batch(max_frames: int = 12, max_segments: int = 16, encode_padding: bool = False) -> dict[str, torch.Tensor]:
    """Video-retrieval-like inputs; `encode_padding` marks padding as real, the work the authors' code does."""
    torch.manual_seed(0)
    n = len(FRAMES)
    frame_mask = (torch.arange(max_frames)[None] < torch.tensor(FRAMES)[:, None]).float()
    audio_mask = (torch.arange(max_segments)[None] < torch.tensor(SEGMENTS)[:, None]).float()
    if encode_padding:
        frame_mask, audio_mask = torch.ones_like(frame_mask), torch.ones_like(audio_mask)
    return {
        "tokens": torch.randint(1, 49000, (n, 32)).index_fill_(1, torch.tensor([31]), 49407),
        "frames": torch.randn(n, max_frames, 3, 224, 224), "frame_mask": frame_mask,
        "audio": torch.randn(n, max_segments, 3, 224, 224), "audio_mask": audio_mask,
        "audio_type": torch.ones(n, dtype=torch.long),
    }


def run_case(case: str, attention: str, iters: int, precision: str = "fp32", checkpointing: bool = False,
             optimizer_step: bool = False, encode_padding: bool = False) -> dict[str, float]:
    """Time `iters` fine-tune steps after one warm-up step, in this process: forward + backward, and with
    `optimizer_step` the AdamW step too (the training loop's fused AdamW, spec §8)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from benchmark.config import load_config
    from benchmark.losses import RetrievalLoss
    from benchmark.model import build_model
    from benchmark.train import adamw, param_groups

    cfg = load_config({}, [f"model.clip_name={CASES[case]}", "model.pretrained=null"])
    model = build_model(cfg.model)
    model.set_grad_checkpointing(checkpointing)
    optimizer = adamw(param_groups(model, cfg.finetune))
    loss_fn = RetrievalLoss(cfg.loss, "fused")
    batch = _batch(encode_padding=encode_padding)
    backends = [SDPBackend.MATH] if attention == "math" else [SDPBackend.FLASH_ATTENTION, SDPBackend.MATH]
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")
    times = []
    with sdpa_kernel(backends):
        for i in range(iters + 1):
            start = time.perf_counter()
            with autocast:
                loss = sum(loss_fn(model(batch)).values())
            loss.backward()
            if optimizer_step:
                optimizer.step()
            model.zero_grad(set_to_none=True)
            if i:  # the first step warms up allocators and kernels
                times.append(time.perf_counter() - start)
    return {
        "seconds_per_sample": statistics.median(times) / len(FRAMES),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "parameters_m": sum(p.numel() for p in model.parameters()) / 1e6,
    }


def _child(case: str, attention: str, iters: int, precision: str, checkpointing: bool, step: bool,
           encode_padding: bool = False) -> dict:
    args = [case, attention, str(iters), precision, str(int(checkpointing)), str(int(step)), str(int(encode_padding))]
    proc = subprocess.run([sys.executable, "-m", "benchmark.perf", *args], capture_output=True, text=True,
                          check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"perf case {' '.join(args)} failed: {proc.stderr.strip().splitlines()[-1:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def perf_model(cases: list[str], iters: int) -> list[dict]:
    """Forward + backward per (model, attention), each in a fresh process; prints a Markdown table."""
    rows = []
    print("| model | params (M) | attention | fwd+bwd s/sample | peak RSS (MB) |")
    print("|---|---|---|---|---|")
    for case in cases:
        for attention in ("sdpa", "math"):
            row = {"model": case, "attention": attention, **_child(case, attention, iters, "fp32", False, False)}
            rows.append(row)
            print(f"| {case} | {row['parameters_m']:.1f} | {attention} | {row['seconds_per_sample']:.3f} | "
                  f"{row['peak_rss_mb']:.0f} |", flush=True)
    return rows


def perf_train(cases: list[str], iters: int, precisions: tuple[str, ...] = ("fp32", "bf16")) -> list[dict]:
    """Whole training steps (forward, backward, AdamW) per (model, precision, attention, checkpointing), and
    a last row per model that also encodes the padding: the same numerics doing the authors' amount of work."""
    rows = []
    print("| model | precision | attention | grad checkpointing | train step s/sample | peak RSS (MB) |")
    print("|---|---|---|---|---|---|")
    for case in cases:
        baseline = _child(case, "sdpa", iters, "fp32", False, True, encode_padding=True)
        rows.append({"model": case, "padding_encoded": True, **baseline})
        print(f"| {case} | fp32 | sdpa | off, **padding encoded** (the authors' work) | "
              f"{baseline['seconds_per_sample']:.3f} | {baseline['peak_rss_mb']:.0f} |", flush=True)
        for precision in precisions:
            for attention in ("sdpa", "math"):
                for checkpointing in (False, True):
                    row = {"model": case, "precision": precision, "attention": attention,
                           "checkpointing": checkpointing,
                           **_child(case, attention, iters, precision, checkpointing, True)}
                    rows.append(row)
                    print(f"| {case} | {precision} | {attention} | {'on' if checkpointing else 'off'} | "
                          f"{row['seconds_per_sample']:.3f} | {row['peak_rss_mb']:.0f} |", flush=True)
    return rows


def perf_data(task_name: str, scale: str = "small", workers: int = 2) -> list[dict]:
    """Time decoding a task's generated training and test splits into a fresh media store, reading them back as
    batches (DataLoader with 0 and `workers` workers), and making model inputs from them on this CPU (what the
    accelerator does in training); prints the store's bytes per clip and per 10 s of media."""
    import tempfile
    from pathlib import Path

    from torch.utils.data import DataLoader

    from benchmark.config import DataConfig
    from benchmark.data import ClipItems, ClipTensors, prepare_split
    from benchmark.media.decode import Preprocessing
    from benchmark.media.store import MediaStore
    from benchmark.registry import load_tasks
    from benchmark.synthetic import synthesize

    task = load_tasks().get(task_name)()
    spec = task.spec
    rows = []
    print("| stage | processes | clips | seconds | clips/s |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        synthesize(Path(tmp), seed=0, scale=scale, only={spec.data_dir})
        root = Path(tmp) / spec.data_dir
        clips = [c for split in (spec.train_split, spec.test_split) if split for c in task.load(root, split)]
        data = DataConfig(max_frames=12, max_audio_segments=16)
        for procs in (0, workers):
            store = MediaStore(Path(tmp) / f"store{procs}", Preprocessing.of(data))
            start = time.perf_counter()
            split = prepare_split(clips, store, "zero", "video" in spec.modalities, workers=procs)
            rows.append({"stage": "decode", "processes": max(procs, 1), "clips": len(clips),
                         "seconds": time.perf_counter() - start})
            tensors = ClipTensors(store, data)
            loader = DataLoader(ClipItems(split, tensors), batch_size=16, num_workers=procs,
                                collate_fn=tensors.batches.collate)
            start = time.perf_counter()
            batches = list(loader)
            rows.append({"stage": "read (store -> batches of frames and PCM)", "processes": max(procs, 1),
                         "clips": len(split.clips), "seconds": time.perf_counter() - start})
        start = time.perf_counter()
        for batch in batches:  # what the accelerator does in training, here on this CPU
            tensors.batches.to_device(batch, torch.device("cpu"))
        rows.append({"stage": "model inputs on the device (log-mel, segments; here the CPU)", "processes": 1,
                     "clips": len(split.clips), "seconds": time.perf_counter() - start})
        stored = sum(p.stat().st_size for p in store.shards.glob("*.tar"))
        seconds = sum(s.duration or 0.0 for s in store.statuses(clips))
    for row in rows:
        row["clips_per_second"] = row["clips"] / row["seconds"]
        print(f"| {row['stage']} | {row['processes']} | {row['clips']} | {row['seconds']:.1f} | "
              f"{row['clips_per_second']:.1f} |")
    print(f"store: {stored / len(clips) / 1e3:.0f} kB per clip, {stored / max(seconds, 1e-9) * 10 / 1e3:.0f} kB per "
          f"10 s of media ({len(clips)} clips, {seconds:.0f} s)")
    real_size_read()
    return rows


def real_size_read(repeats: int = 20) -> dict[str, float]:
    """One core's cost for an entry of real size, which the generated clips (2-4 s, a few frames) are not: 12
    JPEG frames of 224x298 from smooth content, 10 s of stereo tones and noise as 24-bit FLAC. Prints the read
    (checks, JPEG, FLAC, crop) and the model inputs made from it on this CPU (the device's work in training)."""
    import zlib

    from benchmark.items import Clip
    from benchmark.media import audio as audio_fe
    from benchmark.media.decode import MediaStatus, Preprocessing
    from benchmark.media.store import decode_entry, encode_entry, entry_record

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    smooth = torch.nn.functional.interpolate(torch.rand(12, 3, 28, 38, generator=g), size=(224, 298), mode="bilinear")
    t = torch.arange(10 * audio_fe.SAMPLE_RATE) / audio_fe.SAMPLE_RATE
    wave = torch.stack([0.3 * torch.sin(2 * torch.pi * f * t) for f in (220.0, 330.0)])
    wave = wave + 0.05 * torch.randn(wave.shape, generator=g)
    clip, prep = Clip("real size", ("",), None, None), Preprocessing()
    files = encode_entry(clip, {"frames": (smooth * 255).to(torch.uint8), "pcm": audio_fe.pcm(wave.numpy(), 24)},
                         MediaStatus(clip.id, True, True), prep)
    start = time.perf_counter()
    for _ in range(repeats):
        entry = decode_entry(files, entry_record(files, zlib.crc32(files["json"]), clip.media_key, "-"), prep, "-")
    read = (time.perf_counter() - start) / repeats
    start = time.perf_counter()
    for _ in range(repeats // 4):
        audio_fe.model_segments([entry["pcm"]], 16)
    inputs = (time.perf_counter() - start) / (repeats // 4)
    torch.set_num_threads(threads)
    jpeg = sum(len(v) for k, v in files.items() if k.endswith(".jpg"))
    print(f"a real-size entry (12 JPEG frames 224x298: {jpeg / 1e3:.0f} kB; 10 s stereo 24-bit FLAC: "
          f"{len(files['flac']) / 1e3:.0f} kB), one core: read {read * 1e3:.1f} ms ({1 / read:.0f} clips/s), model "
          f"inputs on this CPU {inputs * 1e3:.0f} ms")
    return {"read_s": read, "inputs_s": inputs}


def perf_metrics(resamples: int = 1000) -> list[dict]:
    """Time scoring at each registered retrieval task's released test size (test_clips x captions_per_item
    captions): one similarity matrix in both directions (matrix product, ranks, R@K/MdR/MnR, top-10), the same
    with `resamples` bootstrap resamples per direction, and all six directions (three matrices)."""
    from benchmark.evaluate import DIRECTIONS, Encoded, score_directions
    from benchmark.metrics import bootstrap_ci, query_clips, rank_metrics

    def timed(enc: Encoded, directions: tuple[str, ...], boot: int) -> float:
        start = time.perf_counter()
        for d, sc in score_directions(enc, directions, "average").items():
            rank_metrics(sc.ranks, d)
            if boot:
                bootstrap_ci(sc.ranks, d, boot, clips=query_clips(d, enc.caption_clip))
        return time.perf_counter() - start

    from benchmark.registry import load_tasks

    registry = load_tasks()
    sizes = [(spec.name, spec.test_clips, spec.captions_per_item) for spec in (registry.get(n).spec for n in registry)
             if spec.directions and spec.test_clips]  # the tasks that rank clips
    rows = []
    print(f"| task test size | captions x clips | t2v + v2t (s) | t2v + v2t with {resamples} resamples (s) | "
          "all six directions (s) |")
    print("|---|---|---|---|---|")
    for name, clips, per_clip in sizes:
        g = torch.Generator().manual_seed(0)
        text, video, audio, fused = (torch.nn.functional.normalize(torch.randn(n, 512, generator=g), dim=-1)
                                     for n in (clips * per_clip, clips, clips, clips))
        enc = Encoded(text, torch.arange(clips).repeat_interleave(per_clip),
                      {"video": video, "audio": audio, "fused": fused})
        timed(enc, ("t2v",), 0)  # warm-up
        row = {"split": name, "shape": f"{clips * per_clip} x {clips}", "one_matrix": timed(enc, ("t2v", "v2t"), 0),
               "bootstrap": timed(enc, ("t2v", "v2t"), resamples), "all": timed(enc, tuple(DIRECTIONS), 0)}
        rows.append(row)
        print(f"| {name} | {row['shape']} | {row['one_matrix']:.2f} | {row['bootstrap']:.2f} | {row['all']:.2f} |",
              flush=True)
    return rows


if __name__ == "__main__":  # one case, in a child process of perf_model
    parser = argparse.ArgumentParser()
    parser.add_argument("case", choices=sorted(CASES))
    parser.add_argument("attention", choices=("sdpa", "math"))
    parser.add_argument("iters", type=int)
    parser.add_argument("precision", choices=("fp32", "bf16"))
    parser.add_argument("checkpointing", type=int)
    parser.add_argument("step", type=int)
    parser.add_argument("encode_padding", type=int)
    args = parser.parse_args()
    print(json.dumps(run_case(args.case, args.attention, args.iters, args.precision, bool(args.checkpointing),
                              bool(args.step), bool(args.encode_padding))))
