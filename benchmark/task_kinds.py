"""Task kinds: what a kind of task asks of the model and how it is scored (mteb's AbsTask classes, lm-eval's
task-owned metrics). A task names its kind in `TaskSpec.kind`; the pipeline asks the
kind, never tests it: adding a kind is one class here, registered under its name.

Each kind says: the tokens its captions take, whether the model needs the caption decoder, the fine-tuning
loss (spec §6.4), its main score when an ablation leaves only some directions, how a split is scored (the
final evaluation and the model-selection score, scored the same way) and the headline metrics a log line shows.
Which direction is better is per metric (reports.tables.higher_is_better: lower for MdR and MnR).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from benchmark import distributed
from benchmark.config import RunConfig
from benchmark.data import ClipTensors, loader_workers
from benchmark.evaluate import Scored, encode, generate_captions, score_directions
from benchmark.losses import CaptionLoss, RetrievalLoss
from benchmark.metrics import bootstrap_ci, caption_scores, query_clips, rank_metrics
from benchmark.model.decoder import caption_token_length
from benchmark.registry import Registry

TASK_KINDS: Registry = Registry("task kind")


@dataclass(frozen=True)
class Scoring:
    """What scoring a split takes from the run: its config, where clips are read, the tokenizer's decoder, the
    directions its modalities allow, and this process's rank (rank 0 writes files and runs pycocoevalcap)."""

    cfg: RunConfig
    tensors: ClipTensors
    decode: Callable[[list[int]], str]
    directions: tuple[str, ...]
    rank: int


class TaskKind:
    """The defaults: a kind whose tasks are not scored (pre-training corpora)."""

    name: ClassVar[str]
    scored: ClassVar[bool] = True  # False: a pre-training corpus, never a task to fine-tune or evaluate
    needs_decoder: ClassVar[bool] = False

    def token_length(self, max_words: int) -> int:
        """Tokens per caption (data.max_words)."""
        return max_words

    def loss(self, cfg: RunConfig, modalities: tuple[str, ...]) -> nn.Module:
        raise NotImplementedError(f"a {self.name} task is not fine-tuned")

    def main_score(self, spec: Any, directions: tuple[str, ...]) -> str:
        return spec.main_score

    def score(self, run: Scoring, model: nn.Module, data: Any, folder: Path) -> tuple[dict, dict, Path]:
        """(metrics, what the record adds, the artifact written) of scoring `data` (a pipeline.Prepared)."""
        raise NotImplementedError(f"a {self.name} task is not scored")

    def selection_score(self, run: Scoring, model: nn.Module, data: Any, folder: Path, main: str) -> float:
        """The main score on the selection split, scored exactly as the final evaluation scores it."""
        return self.score(run, model, data, folder)[0][main]

    def headline(self, directions: tuple[str, ...]) -> list[str]:
        """The metrics a log line shows."""
        return []


@TASK_KINDS.register("corpus")
class Corpus(TaskKind):
    """A pre-training corpus (spec §7.1): read by pre-training, whose loss is the stage's, never scored."""

    name = "corpus"
    scored = False


def candidate_of(modalities: tuple[str, ...]) -> str:
    """Which clip feature a text is matched to when fine-tuning (spec §6.4)."""
    if "video" in modalities and "audio" in modalities:
        return "fused"
    return "audio" if "audio" in modalities else "video"


@TASK_KINDS.register("retrieval")
class Retrieval(TaskKind):
    """Text <-> clip retrieval: the contrastive fine-tuning loss; every direction ranked, with bootstrap intervals
    and per-query records."""

    name = "retrieval"

    def loss(self, cfg: RunConfig, modalities: tuple[str, ...]) -> nn.Module:
        return RetrievalLoss(cfg.loss, candidate_of(modalities))

    def main_score(self, spec: Any, directions: tuple[str, ...]) -> str:
        """The task's main score, or its first available direction's R@1 when an ablation removes a modality."""
        return spec.main_score if spec.main_score.split("/")[0] in directions else f"{directions[0]}/R1"

    def directions_scored(self, run: Scoring, model: nn.Module, data: Any) -> dict[str, Scored]:
        """Encode `data` once and rank every direction under the configured ties, missing-audio policy and
        post-processing."""
        cfg = run.cfg
        encoded = encode(model, data.split, run.tensors, data.tokens, cfg.eval.batch_size,
                         loader_workers(cfg.data), cfg.finetune.precision)
        audio_valid = None
        if cfg.data.missing_audio == "miss":
            audio_valid = torch.tensor([data.split.has_audio[c.id] for c in data.split.clips])
        return score_directions(encoded, run.directions, cfg.eval.ties, audio_valid, cfg.eval.postprocess,
                                cfg.eval.postprocess_temperature)

    def score(self, run: Scoring, model: nn.Module, data: Any, folder: Path) -> tuple[dict, dict, Path]:
        scored = self.directions_scored(run, model, data)
        metrics = {k: v for d, sc in scored.items() for k, v in rank_metrics(sc.ranks, d).items()}
        intervals, resamples = {}, run.cfg.eval.bootstrap
        if resamples:  # clips resampled with all their captions, in every direction
            caption_clip = torch.tensor([clip for clip, _ in data.split.captions])
            for d, sc in scored.items():
                intervals.update(bootstrap_ci(sc.ranks, d, resamples, run.cfg.seed,
                                              clips=query_clips(d, caption_clip)))
        artifact = write_query_records(scored, data, folder / "queries.csv") if run.rank == 0 else folder
        return metrics, {"ci95": intervals, "bootstrap_resamples": resamples, "bootstrap_unit": "clip"}, artifact

    def selection_score(self, run: Scoring, model: nn.Module, data: Any, folder: Path, main: str) -> float:
        direction = main.split("/")[0]  # only the main score's direction is ranked; no intervals, no records
        return rank_metrics(self.directions_scored(run, model, data)[direction].ranks, direction)[main]

    def headline(self, directions: tuple[str, ...]) -> list[str]:
        return [f"{d}/R1" for d in directions]


def write_query_records(scored: dict[str, Scored], data: Any, path: Path) -> Path:
    """Per query and direction: its rank and top-10 ids, so runs can be compared query by query (CSV)."""
    import pandas as pd

    clip_ids = [c.id for c in data.split.clips]
    captions = data.split.captions
    rows = []
    for direction, sc in scored.items():
        from_text = direction.startswith("t2")
        for q, (rank, top) in enumerate(zip(sc.ranks.tolist(), sc.top10.tolist(), strict=True)):
            target = clip_ids[captions[q][0]] if from_text else clip_ids[q]
            top_ids = [clip_ids[i] for i in top] if from_text else [clip_ids[captions[i][0]] for i in top]
            rows.append({"direction": direction, "query": q, "clip": target, "rank": rank,
                         "caption": captions[q][1] if from_text else "", "top10": " ".join(top_ids)})
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


@TASK_KINDS.register("caption")
class Captioning(TaskKind):
    """Video/audio captioning (spec §2.7, §6.4): the decoder's token cross-entropy; one caption per clip (beam
    eval.beam) scored against all of the clip's references with pycocoevalcap."""

    name = "caption"
    needs_decoder = True

    def token_length(self, max_words: int) -> int:
        return caption_token_length(max_words)  # the decoder keeps max_words - 1 words (spec §6.4)

    def loss(self, cfg: RunConfig, modalities: tuple[str, ...]) -> nn.Module:
        return CaptionLoss(cfg.model.supervise_pad)

    def score(self, run: Scoring, model: nn.Module, data: Any, folder: Path) -> tuple[dict, dict, Path]:
        cfg = run.cfg
        texts = generate_captions(model, data.split, run.tensors, run.decode, cfg.data.max_words, cfg.eval.beam,
                                  cfg.eval.batch_size, cfg.finetune.precision)
        clips = data.split.clips
        metrics = None
        if run.rank == 0:  # pycocoevalcap (and its JVM) once; the other ranks take rank 0's scores
            metrics = caption_scores({c.id: list(c.captions) for c in clips},
                                     {c.id: t for c, t in zip(clips, texts, strict=True)})
        metrics = distributed.gather_objects(metrics)[0]
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "captions.jsonl"
        if run.rank == 0:
            with path.open("w") as f:
                for clip, text in zip(clips, texts, strict=True):
                    f.write(json.dumps({"id": clip.id, "caption": text, "references": list(clip.captions)}) + "\n")
        return metrics, {"beam": cfg.eval.beam}, path

    def headline(self, directions: tuple[str, ...]) -> list[str]:
        return ["Bleu_4", "METEOR", "CIDEr"]


def kind_of(spec: Any) -> TaskKind:
    """The kind of a task (its TaskSpec)."""
    return TASK_KINDS.get(spec.kind)()
