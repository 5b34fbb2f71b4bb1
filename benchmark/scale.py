"""`clip4vla perf scale`: opening a pre-training-sized corpus and store, and delivering its first batch.

For each size N, a generated pre-training corpus of N segments, written by the task that offers it
(`write_scale_corpus`: many segments per video, every video a hard link to one tiny file, so the media identity
checks run on N clips without N files' bytes) and a store holding an entry for each
segment (one small shared entry's media bytes under each segment's own record, written by the store's own
`ShardWriter`, about 1,000 entries per shard as 1 GiB shards of 10-s clips hold). Then, in a fresh process per
size: load the annotations, open the store, prepare the split (stale check and statuses), build the caption pairs
and read batches through a DataLoader with worker processes, timing each step and measuring the resident memory
of the main process and of each worker after 21 batches (RSS; the dirty pages only it holds; the clean
file pages only it maps). Then a whole epoch as a worker reads it but for the media and the tokenizer (each
pair, its clip and its index row), in a process forked from it: the memory that costs the worker, which a list of
Python objects would copy page by page as their reference counts are written (`data.StoredClips`).
"""

from __future__ import annotations

import copy
import dataclasses
import gc
import json
import os
import shutil
import sys
import time
import zlib
from pathlib import Path

import torch

ENTRIES_PER_SHARD = 1000
BATCH = 32
BATCHES = 20  # read after the first one, before memory is measured
MIN_SCALE_CLIPS = BATCH * (BATCHES + 1)  # a corpus holds every batch read


def scale_task():
    """The registered task that writes a generated corpus of any size (`write_scale_corpus(root, clips)`): a
    pre-training corpus whose videos hold many segments, so N clips need N/100 media files, not N."""
    from benchmark.registry import load_tasks

    registry = load_tasks()
    return next(registry.get(name)() for name in sorted(registry)
                if hasattr(registry.get(name), "write_scale_corpus"))


def small_entry_files() -> dict[str, bytes]:
    """The media files of one small entry (a grey 224 x 224 frame, 0.25 s of silence), encoded as the store does:
    about 4 kB an entry with its record and tar headers, 4 GB at 1 M."""
    from benchmark.items import Clip
    from benchmark.media.decode import MediaStatus, Preprocessing
    from benchmark.media.store import encode_entry

    frames = torch.full((1, 3, 224, 224), 128, dtype=torch.uint8)
    pcm = torch.zeros(1, 4000, dtype=torch.int32)
    files = encode_entry(Clip("shared", ("",), None, None), {"frames": frames, "pcm": pcm},
                         MediaStatus("shared", True, True), Preprocessing())
    return {ext: data for ext, data in files.items() if ext != "json"}


def write_store(store, clips: list, media: dict[str, bytes]) -> None:
    """An entry for each clip with the shared media bytes and the clip's own record (key, media key, identity)."""
    from benchmark.media.decode import MediaStatus
    from benchmark.media.store import ShardWriter, clip_source, entry_key

    entry_bytes = sum(len(v) for v in media.values()) + 2048  # with the record and the tar headers
    store.shards.mkdir(parents=True, exist_ok=True)
    (store.dir / "preprocessing.json").write_text(json.dumps(store.wanted, indent=2))
    writer = ShardWriter(store.shards, 0, ENTRIES_PER_SHARD * entry_bytes)
    crc = {ext: zlib.crc32(data) for ext, data in media.items()}
    status = {k: v for k, v in dataclasses.asdict(MediaStatus("", True, True, duration=10.0)).items() if k != "clip_id"}
    for clip in clips:
        record = {"key": entry_key(clip), "media_key": clip.media_key, "source": clip_source(clip), "status": status,
                  "frames": [1, 3, 224, 224], "audio": [1, 4000], "crc32": crc}
        writer.add({"json": json.dumps(record, sort_keys=True).encode(), **media})
    writer.commit()


def memory_mb(pid: int | str = "self") -> dict[str, float]:
    """A process's RSS and its private pages, in MB, from /proc (Linux): `private` the memory only it holds
    (written after the fork: its heap, the batches it assembles), `mapped` the clean pages of files only it maps
    (the shards' memory maps: page cache, which the kernel reclaims under pressure)."""
    fields = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        name, value = line.split(":")
        fields[name] = int(value.split()[0]) / 1024
    return {"rss": fields["Rss"], "private": fields["Private_Dirty"], "mapped": fields["Private_Clean"]}


def forked_read_mb(dataset, warm_up: int = 20_000) -> float:
    """The memory (MB) a process forked from this one, as a DataLoader worker is, copies while it reads the items
    of `dataset` once: its Private_Dirty growth over the first N - w items, after reading the last w first (w =
    `warm_up`, at most half: the allocators' own start, about 8 MB whatever is read, on items not measured).
    Measure in a fresh process: where objects were freed before the fork, the child's new ones are written into
    the holes, copying those pages too, which is not what reading costs."""
    gc.collect()
    gc.freeze()  # as `train` does before its workers fork
    out, into = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: read, report, leave without running anything of the parent's
        try:
            measured = len(dataset) - min(warm_up, len(dataset) // 2)
            for index in range(measured, len(dataset)):
                dataset[index]
            before = memory_mb()["private"]
            for index in range(measured):
                dataset[index]
            os.write(into, json.dumps(memory_mb()["private"] - before).encode())
        finally:
            os._exit(0)
    os.close(into)
    with os.fdopen(out) as reply:
        grown = reply.read()
    os.waitpid(pid, 0)
    gc.unfreeze()
    return json.loads(grown)


def measure(corpus: Path, store_dir: Path, workers: int) -> dict[str, float]:
    """What a training run does before and at its first batch, timed (in this process, fresh)."""
    from torch.utils.data import DataLoader

    from benchmark.config import load_config
    from benchmark.data import CaptionPairs, ClipTensors, epoch_indices, prepare_split
    from benchmark.media.decode import Preprocessing
    from benchmark.media.store import MediaStore
    from benchmark.media.text import CaptionTokens, Tokenizer

    cfg = load_config({}, ["model.clip_name=tiny-clip4vla", "model.pretrained=null"])
    tokenizer = Tokenizer(cfg.model.clip_name, cfg.data.max_words)
    out, start = {}, time.perf_counter()
    task = scale_task()
    clips = task.load(corpus, task.spec.train_split)
    out["annotations_s"] = time.perf_counter() - start
    store = MediaStore(store_dir, Preprocessing.of(cfg.data))
    out["store_open_s"] = time.perf_counter() - start - out["annotations_s"]
    split = prepare_split(clips, store, "zero")
    tokens = CaptionTokens([text for _, text in split.captions], tokenizer, cfg.data.max_words)
    pairs = CaptionPairs(split, ClipTensors(store, cfg.data), tokens, augment=True, seed=0)
    out["prepare_s"] = time.perf_counter() - start - out["annotations_s"] - out["store_open_s"]
    order = epoch_indices(len(pairs), 0, 0)[: BATCH * (BATCHES + 1)]
    if workers:  # as `train` does before its workers fork
        gc.collect()
        gc.freeze()
    batches = pairs.tensors.batches
    loader = iter(DataLoader(pairs, batch_size=BATCH, sampler=order, num_workers=workers,
                             collate_fn=batches.collate))
    first = next(loader)
    out["first_batch_s"] = time.perf_counter() - start
    batches.to_device(first, torch.device("cpu"))  # the model inputs, on the device (here the CPU)
    out["model_inputs_s"] = time.perf_counter() - start - out["first_batch_s"]
    for _ in range(BATCHES):
        next(loader)
    out["main_rss_mb"] = memory_mb()["rss"]
    per_worker = [memory_mb(w.pid) for w in loader._workers] if workers else []
    for key in ("rss", "private", "mapped"):
        out[f"worker_{key}_mb"] = max((m[key] for m in per_worker), default=0.0)
    out["index_mb"] = store._index.rows.nbytes / 1e6
    # a whole epoch read by a worker, but for the media and the tokenizer: what it copies of what it shares
    epoch = copy.copy(pairs)
    epoch.tensors = lambda clip, generator: {"row": torch.tensor(store._row(clip))}
    epoch.tokens = copy.copy(pairs.tokens)
    epoch.tokens.tokenizer = lambda texts, length: torch.zeros(len(texts), length, dtype=torch.long)
    out["epoch_private_mb"] = forked_read_mb(epoch)
    return out


def perf_scale(sizes: list[int], workers: int = 2, folder: Path | None = None) -> list[dict]:
    """Generate each size's corpus and store under `folder` (a temporary one by default), measure each in a fresh
    process, print the table."""
    import subprocess
    import tempfile

    from benchmark.config import load_config
    from benchmark.media.decode import Preprocessing
    from benchmark.media.store import MediaStore

    task, rows = scale_task(), []
    print("| clips | write corpus + store (s) | annotations (s) | store open (s) | prepare split (s) | first batch "
          "delivered (s, from start) | its model inputs on this CPU (s) | main RSS (MB) | worker RSS (MB) | "
          "worker private (MB) | worker mapped files (MB) | worker private, one epoch (MB) | store index (MB) | "
          "store (GB) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        media = small_entry_files()
        for n in sizes:
            root = Path(tmp) / str(n)
            start = time.perf_counter()
            corpus = task.write_scale_corpus(root, n)
            store = MediaStore(root / "store", Preprocessing.of(load_config({}, []).data))
            write_store(store, task.load(corpus, task.spec.train_split), media)
            written = time.perf_counter() - start
            run = subprocess.run([sys.executable, "-m", "benchmark.scale", str(corpus), str(store.dir), str(workers)],
                                 capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
            if run.returncode:
                raise RuntimeError(f"perf scale at {n} clips failed:\n{run.stderr[-3000:]}")
            row = {"clips": n, "write_s": written, **json.loads(run.stdout.splitlines()[-1]),
                   "store_gb": sum(p.stat().st_size for p in store.shards.iterdir()) / 1e9}
            rows.append(row)
            print(f"| {n:,} | {written:.0f} | {row['annotations_s']:.1f} | {row['store_open_s']:.1f} | "
                  f"{row['prepare_s']:.1f} | {row['first_batch_s']:.1f} | {row['model_inputs_s']:.1f} | "
                  f"{row['main_rss_mb']:.0f} | "
                  f"{row['worker_rss_mb']:.0f} | {row['worker_private_mb']:.0f} | {row['worker_mapped_mb']:.0f} | "
                  f"{row['epoch_private_mb']:.0f} | "
                  f"{row['index_mb']:.0f} | "
                  f"{row['store_gb']:.1f} |", flush=True)
            shutil.rmtree(root)
    return rows


if __name__ == "__main__":  # one size, in a fresh process of perf_scale
    print(json.dumps(measure(Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]))))
