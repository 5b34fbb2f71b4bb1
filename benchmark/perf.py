"""Benchmarks that print a table (results are recorded in README's performance section).

`clip4vla perf model` and `perf train`: the training recipes of configs/paper.yaml (benchmark/perf_recipes.py):
forward + backward alone per attention (SDPA, math), and whole optimizer steps of train.py's loop per precision
(fp32, bf16 autocast) and gradient checkpointing (off, on); each case in its own process so that its peak
resident memory is its own, at least 3 timed steps after a warm-up, the median and the spread printed.

`clip4vla perf caption`: caption inference per video (encoders, then beam-5 decoding), fp32 on the CPU.

`clip4vla perf data --task TASK`: decode throughput (media -> cache) and cached-read throughput (cache -> model
inputs), in clips per second, in this process and with 2 worker processes, on the task's generated dataset.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import torch


def _child(kind: str, case: str, recipe: str, iters: int, precision: str = "fp32", checkpointing: bool = False,
           attention: str = "sdpa") -> dict:
    """One timed case in a fresh process, so that its peak resident memory is its own."""
    args = [kind, case, recipe, str(iters), precision, str(int(checkpointing)), attention]
    proc = subprocess.run([sys.executable, "-m", "benchmark.perf", *args], capture_output=True, text=True,
                          check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"perf case {' '.join(args)} failed: {proc.stderr.strip().splitlines()[-1:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _spread(row: dict) -> str:
    low, high = row["spread"]
    return f"{row['seconds_per_sample']:.3f} ({low:.3f}-{high:.3f}, {row['steps']} steps)"


def perf_model(cases: list[str], iters: int) -> list[dict]:
    """Forward + loss + backward per (model, paper recipe, attention), each in a fresh process; a Markdown
    table."""
    from benchmark.perf_recipes import paper_recipes

    rows = []
    print("| model | params (M) | recipe | attention | fwd+bwd s/sample: median (min-max, steps) | peak RSS (MB) |")
    print("|---|---|---|---|---|---|")
    for case in cases:
        for recipe in paper_recipes(case):
            for attention in ("sdpa", "math"):
                row = {"model": case, "recipe": recipe.name, "attention": attention,
                       **_child("model", case, recipe.name, iters, attention=attention)}
                rows.append(row)
                print(f"| {case} | {row['parameters_m']:.1f} | {recipe.name} | {attention} | {_spread(row)} | "
                      f"{row['peak_rss_mb']:.0f} |", flush=True)
    return rows


def perf_caption(cases: list[str], iters: int, videos: int = 8) -> list[dict]:
    """Caption inference per video as evaluation runs it (model inputs and encoders to the context of 12 frames +
    16 segments, then beam-5 decoding of 16 steps), fp32 on this machine's CPU, `videos` per batch, `iters` timed
    repetitions after a warm-up; a Markdown table of medians with the spread."""
    import statistics

    from benchmark.perf_gpu import caption_decoding
    from benchmark.perf_recipes import CASES

    def spread(times: list[float]) -> str:
        return f"{statistics.median(times):.3f} ({min(times):.3f}-{max(times):.3f})"

    rows = []
    print(f"| model | videos per batch | encoders s/video | decoding s/video | total s/video: median (min-max, "
          f"{iters} runs) |")
    print("|---|---|---|---|---|")
    for case in cases:
        clip_name, overrides = CASES[case]
        times = caption_decoding(clip_name, torch.device("cpu"), videos, overrides, "fp32", iters)
        total = [e + d for e, d in zip(times["encoders"], times["decoding"], strict=True)]
        rows.append({"model": case, **times, "total": total})
        print(f"| {case} | {videos} | {spread(times['encoders'])} | {spread(times['decoding'])} | {spread(total)} |",
              flush=True)
    return rows


def perf_train(cases: list[str], iters: int, precisions: tuple[str, ...] = ("fp32", "bf16")) -> list[dict]:
    """Whole optimizer steps of train.py's loop per (model, paper recipe, precision, gradient checkpointing),
    each in a fresh process; a Markdown table."""
    from benchmark.perf_recipes import paper_recipes

    rows = []
    print("| model | recipe | precision | grad checkpointing | train step s/sample: median (min-max, steps) | "
          "peak RSS (MB) |")
    print("|---|---|---|---|---|---|")
    for case in cases:
        for recipe in paper_recipes(case):
            for precision in precisions:
                for checkpointing in (False, True):
                    row = {"model": case, "recipe": recipe.name, "precision": precision,
                           "checkpointing": checkpointing,
                           **_child("train", case, recipe.name, iters, precision, checkpointing)}
                    rows.append(row)
                    print(f"| {case} | {recipe.name} | {precision} | {'on' if checkpointing else 'off'} | "
                          f"{_spread(row)} | {row['peak_rss_mb']:.0f} |", flush=True)
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


if __name__ == "__main__":  # one case, in a child process of perf_model / perf_train
    from benchmark.perf_recipes import CASES, paper_recipes, time_forward_backward, time_training_steps

    parser = argparse.ArgumentParser()
    parser.add_argument("kind", choices=("model", "train"))
    parser.add_argument("case", choices=sorted(CASES))
    parser.add_argument("recipe")
    parser.add_argument("iters", type=int)
    parser.add_argument("precision", choices=("fp32", "bf16"))
    parser.add_argument("checkpointing", type=int)
    parser.add_argument("attention", choices=("sdpa", "math"))
    args = parser.parse_args()
    (recipe,) = paper_recipes(args.case, args.precision, bool(args.checkpointing), names=(args.recipe,))
    timed = time_training_steps(recipe, args.iters) if args.kind == "train" else \
        time_forward_backward(recipe, args.iters, args.attention)
    print(json.dumps(timed))
