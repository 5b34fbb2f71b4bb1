"""The training loop: it learns, checkpoints are complete and atomic, and resume equals the uninterrupted run;
what it reads: corpora mixed per epoch, captions tokenized where read."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import ClassPairs, tiny_model, train_config

from benchmark.checkpoint import Checkpointer
from benchmark.losses import PretrainLoss, RetrievalLoss
from benchmark.train import train


def test_loss_falls_on_a_fixed_batch():
    model, cfg = tiny_model(0)
    losses = []
    train(model, PretrainLoss(cfg.loss), ClassPairs(8), train_config("finetune.max_steps=15"), seed=0,
          log=lambda metrics, step: losses.append(metrics["train/loss"]))
    assert len(losses) == 15
    assert losses[-1] < 0.5 * losses[0], losses


class Interrupt(Exception):
    pass


def _run(tmp_path, stop_at=None, resume=False, workers=0):
    model, cfg = tiny_model(0)
    tc = train_config("finetune.max_steps=6", "finetune.checkpoint_every=2")

    def log(metrics, step):
        if step == stop_at:
            raise Interrupt  # the process dies between two checkpoints

    train(model, RetrievalLoss(cfg.loss, "fused"), ClassPairs(24), tc, seed=3, log=log,
          checkpoints=Checkpointer(tmp_path / "ckpt", keep_last=2), resume=resume, workers=workers)
    return model


@pytest.mark.parametrize("workers", [0, 2])  # 2: the persistent DataLoader workers, resumed mid-epoch
def test_resume_after_a_crash_equals_the_uninterrupted_run_bitwise(tmp_path, workers):
    reference = _run(tmp_path / "a")
    with pytest.raises(Interrupt):
        _run(tmp_path / "b", stop_at=5, workers=workers)
    assert Checkpointer(tmp_path / "b" / "ckpt").steps() == [2, 4]
    resumed = _run(tmp_path / "b", resume=True, workers=workers)
    for (name, p), q in zip(reference.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(p, q), name


def test_checkpoints_are_complete_pruned_and_load_with_weights_only(tmp_path):
    _run(tmp_path)
    ckpt = Checkpointer(tmp_path / "ckpt")
    assert ckpt.steps() == [4, 6]  # keep_last=2
    state = ckpt.load(ckpt.latest())  # torch.load(weights_only=True)
    assert {"model", "optimizer", "scheduler", "scaler", "rng", "position", "step"} <= set(state)
    assert state["position"]["step"] == 6 and state["step"] == 6
    assert not list((tmp_path / "ckpt").glob("*.tmp"))


def test_the_best_checkpoint_survives_pruning(tmp_path):
    ckpt = Checkpointer(tmp_path, keep_last=1)
    for step, score in [(1, 0.5), (2, 0.9), (3, 0.1), (4, 0.2)]:
        ckpt.save(step, {"x": torch.tensor(step)}, score=score)
    assert ckpt.steps() == [2, 4] and ckpt.best() == ckpt.path(2)


def test_keep_last_zero_is_refused_rather_than_deleting_the_newest_checkpoint(tmp_path):
    with pytest.raises(ValueError, match="keep_last must be >= 1"):
        Checkpointer(tmp_path, keep_last=0)
    ckpt = Checkpointer(tmp_path, keep_last=1)
    ckpt.save(1, {"x": torch.tensor(1)})
    assert ckpt.steps() == [1]


class ViewOfEpoch:
    """Stands in for ClipTensors: an item's augmented view is the first draw of its generator."""

    def __call__(self, clip, generator):
        return {"view": torch.rand(1, generator=generator)}


def test_pretraining_corpora_change_the_augmented_view_every_epoch_and_on_resume_repeat_it():
    """The pipeline serves pre-training corpora (with or without weights) through MixedCorpus, whose set_epoch
    reaches each corpus: the SpecAugment view of L_AA differs between epochs and is the same after a resume."""
    from benchmark.data import CaptionPairs, MixedCorpus, PreparedSplit
    from benchmark.items import Clip

    def corpora():
        parts = [CaptionPairs(PreparedSplit([Clip(f"{k}{i}", ("a caption",), None, None) for i in range(3)]),
                              ViewOfEpoch(), torch.zeros(3, 8, dtype=torch.long), augment=True, seed=7)
                 for k in "ab"]
        return MixedCorpus(parts, None, None, seed=7)

    data = corpora()
    first = [float(data[i]["view"]) for i in range(len(data))]
    assert len(data) == 6
    data.set_epoch(1)
    second = [float(data[i]["view"]) for i in range(len(data))]
    assert all(a != b for a, b in zip(first, second, strict=True))
    resumed = corpora()
    resumed.set_epoch(1)  # what a reading process does first for an item of epoch 1 after a resume (EpochItems)
    assert [float(resumed[i]["view"]) for i in range(len(resumed))] == second


class CountingTokenizer:
    """Stands in for the run's Tokenizer: tokenizes as it does and records how many captions each call reads."""

    def __init__(self, tokenizer):
        self.tokenizer, self.calls = tokenizer, []

    def __call__(self, captions, length=None):
        self.calls.append(len(captions))
        return self.tokenizer(captions, length)


@pytest.mark.slow
def test_captions_are_tokenized_where_read_to_the_tokens_of_the_whole_split(msrvtt_small, tiny_config, tmp_path):
    """Preparing a split tokenizes nothing (a 1M-caption corpus would wait 33 s for its first batch): a training
    pair tokenizes its caption alone and an evaluation batch its captions at once, to the same tokens as the whole
    split in one call; so does the copy a spawned DataLoader worker unpickles, and an empty batch is [0, L]."""
    import pickle

    import yaml

    from benchmark.config import load_config
    from benchmark.data import CaptionPairs
    from benchmark.pipeline import open_session
    from benchmark.progress import Progress
    from benchmark.stages import StageInputs, prepare

    root, _ = msrvtt_small
    cfg = load_config(yaml.safe_load(tiny_config.read_text()), ["task=msrvtt_retrieval", f"data.root={root.parent}"])
    inputs = StageInputs.of(cfg, open_session(cfg, tmp_path / "out", None, None, Progress()))
    counting = inputs.tokenizer = CountingTokenizer(inputs.tokenizer)
    data = prepare(inputs, inputs.task, inputs.task.spec.test_split)
    assert counting.calls == []
    whole_split = counting.tokenizer([text for _, text in data.split.captions], cfg.data.max_words)
    pairs = CaptionPairs(data.split, lambda clip, generator: {}, data.tokens, augment=False, seed=0)
    assert len(pairs) == whole_split.shape[0] > 3
    assert all(torch.equal(pairs[j]["tokens"], whole_split[j]) for j in range(len(pairs)))
    assert counting.calls == [1] * len(pairs)
    assert torch.equal(data.tokens[1:4], whole_split[1:4]) and counting.calls[-1] == 3
    assert torch.equal(pickle.loads(pickle.dumps(data.tokens))[:], whole_split)
    assert data.tokens[2:2].shape == (0, cfg.data.max_words)


def test_pretraining_mix_follows_the_weights_and_is_deterministic():
    from benchmark.data import MixedCorpus

    audioset, howto = list(range(10)), list(range(100, 103))
    mixed = MixedCorpus([audioset, howto], [1.0, 1.0], length=20, seed=0)  # the released 1:1, 2 x |AudioSet|
    items = [mixed[i] for i in range(len(mixed))]
    assert sum(i < 100 for i in items) == 10 and sum(i >= 100 for i in items) == 10  # HowTo cycled
    assert sorted(i for i in items if i < 100) == audioset  # every AudioSet item once per epoch
    again = MixedCorpus([audioset, howto], [1.0, 1.0], length=20, seed=0)
    assert [again[i] for i in range(20)] == items
    mixed.set_epoch(1)
    assert [mixed[i] for i in range(20)] != items


def _group_of(model, cfg, name):
    from benchmark.train import param_groups

    param = dict(model.named_parameters())[name]
    return next(g for g in param_groups(model, cfg) if any(p is param for p in g["params"]))


@pytest.mark.parametrize(
    ("protocol", "fusion", "ln_decay", "audio_lr", "audio_decay"),
    [
        ("paper", "feat_avg", 0.0, 1e-3 * 2e-4, 0.2),
        ("released-code", "feat_avg", 0.2, 1e-3, 0.0),  # prep_optimizer_clip: the audio tower is a "new" module
        ("released-code", "loose_seq", 0.2, 1e-3 * 2e-4, 0.2),  # prep_optimizer_clip_s2
    ],
)
def test_parameter_groups_by_protocol(protocol, fusion, ln_decay, audio_lr, audio_decay):
    from benchmark.config import load_config

    model, _ = tiny_model(0, f"protocol={protocol}", f"model.fusion={fusion}", "model.cross_layers=2")
    cfg = load_config({}, [f"protocol={protocol}", "finetune.lr=1e-3", "finetune.coef_lr=2e-4"]).finetune
    assert _group_of(model, cfg, "clip.ln_final.weight")["weight_decay"] == ln_decay
    audio = _group_of(model, cfg, "audio.visual.transformer.resblocks.0.mlp.c_fc.weight")
    assert audio["lr"] == pytest.approx(audio_lr) and audio["weight_decay"] == audio_decay
    type_group = _group_of(model, cfg, "audio.type_embedding")
    assert type_group["lr"] == pytest.approx(1e-3) and type_group["weight_decay"] == 0.0


def test_bf16_autocast_trains_on_cpu():
    model, cfg = tiny_model(0)
    before = model.clip.visual.conv1.weight.detach().clone()
    losses = []
    train(model, RetrievalLoss(cfg.loss, "fused"), ClassPairs(8),
          train_config("finetune.max_steps=2", "finetune.precision=bf16"), seed=0,
          log=lambda metrics, step: losses.append(metrics["train/loss"]))
    assert all(torch.isfinite(torch.tensor(losses)))
    assert model.clip.visual.conv1.weight.dtype == torch.float32  # fp32 master weights
    assert not torch.equal(model.clip.visual.conv1.weight, before)


def test_loss_terms_are_read_back_once_per_step_not_per_term_and_micro_batch(monkeypatch):
    """Each read-back from the device (`.item()`, `.tolist()`, `float()`) stalls a GPU: the loop reads the step's
    loss terms once (the non-finite guard needs them), and the rest only at log steps."""
    import sys

    import benchmark.train

    model, cfg = tiny_model(0)
    reads = []
    for name in ("item", "tolist", "__float__"):
        real = getattr(torch.Tensor, name)

        def counted(self, *args, _real=real, _name=name, **kwargs):
            if sys._getframe(1).f_code.co_filename == benchmark.train.__file__:  # the loop's own reads
                reads.append(_name)
            return _real(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counted)
    tc = train_config("finetune.max_steps=6", "finetune.grad_accum=2", "finetune.log_every=100")
    train(model, RetrievalLoss(cfg.loss, "fused"), ClassPairs(24), tc, seed=0, log=lambda m, s: None)
    logged_at_the_end = 2  # grad norm and logit scale (before: one read per term and micro-batch, 12 + 2 here)
    assert len(reads) == 6 + logged_at_the_end, reads


class SomeWithoutAudio(ClassPairs):
    """Half the corpus lacks audio (AudioSet / HowTo100M clips without a track)."""

    def __getitem__(self, index):
        item = dict(self.items[index])
        if index % 2:
            item["audio_mask"] = torch.zeros(1)
        return item


def test_micro_batches_with_different_loss_terms_accumulate_by_name():
    """An audio term needs two clips with audio in its micro-batch, so micro-batches of one step can have
    different terms: each is logged under its own name, averaged over the step's micro-batches."""
    model, cfg = tiny_model(0, "loss.released_terms=true")
    logged = {}
    tc = train_config("finetune.max_steps=12", "finetune.grad_accum=2", "finetune.batch_size=4")
    train(model, PretrainLoss(cfg.loss), SomeWithoutAudio(32), tc, seed=0, log=lambda m, s: logged.update({s: m}))
    assert len(logged) == 12 and all(math.isfinite(v) for m in logged.values() for v in m.values())
    assert any("train/ta_loss" not in m for m in logged.values()) and any("train/ta_loss" in m for m in logged.values())


class RecordedReads(ClassPairs):
    """Appends (reading process, the epoch its copy of the dataset is in) to a file for every item read."""

    def __init__(self, path, n: int) -> None:
        super().__init__(n)
        self.path, self.epoch = path, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __getitem__(self, index):
        import os

        with open(self.path, "a") as f:
            f.write(f"{os.getpid()} {self.epoch}\n")
        return super().__getitem__(index)


def test_dataloader_workers_persist_across_epochs_and_read_each_epochs_items():
    """Workers start once per training, not once per epoch, and each item is read by a dataset copy set to the
    epoch it belongs to (SpecAugment views and the pre-training mix depend on it; the main process's set_epoch
    does not reach a worker forked before it)."""
    import tempfile
    from collections import Counter
    from pathlib import Path

    model, cfg = tiny_model(0)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "reads.txt"
        train(model, RetrievalLoss(cfg.loss, "fused"), RecordedReads(path, 16),
              train_config("finetune.epochs=3", "finetune.batch_size=4"), seed=0, log=lambda m, s: None, workers=2)
        reads = [line.split() for line in path.read_text().splitlines()]
    assert len({pid for pid, _ in reads}) == 2, "one set of workers for all epochs"
    assert Counter(epoch for _, epoch in reads) == {"0": 16, "1": 16, "2": 16}


def test_each_log_step_says_where_training_is_in_one_line(caplog):
    """Long jobs without a terminal (issue 15): at every log step one line with step of total, epoch, lr, the loss
    and its terms, the similarity scale, the rate and the time left."""
    from benchmark.train import progress_line

    metrics = {"train/lr": 1e-4, "train/tv_loss": 2.955, "train/ta_loss": 2.957, "train/loss": 5.912,
               "train/logit_scale": 14.29, "train/grad_norm": 1.0}
    assert progress_line(metrics, 40, 400, 1, 51.2, 90.4) == (
        "step 40/400 (epoch 1): lr 1.0e-04, loss 5.912 (tv_loss 2.955, ta_loss 2.957), logit scale 14.3, "
        "51.2 samples/s, ETA 0:01:30")
    model, cfg = tiny_model(0)
    lines = []
    train(model, PretrainLoss(cfg.loss), ClassPairs(8), train_config("finetune.max_steps=3"), seed=0,
          log=lambda metrics, step: None, say=lines.append)
    assert [line.split(" (epoch")[0] for line in lines] == ["step 1/3", "step 2/3", "step 3/3"]
    assert all("samples/s, ETA" in line and "_loss" in line for line in lines)
    assert lines[-1].endswith("ETA 0:00:00")


def test_fused_adamw_gives_the_unfused_update_on_the_cpu():
    """issue 16: the training's AdamW is fused on the CPU too; the same algorithm, so three steps from equal
    weights and gradients land within float rounding of the per-tensor loop's."""
    from benchmark.train import adamw, param_groups

    results = []
    for fused in (True, False):
        model, cfg = tiny_model(0)
        groups = param_groups(model, train_config())
        optimizer = adamw(groups) if fused else torch.optim.AdamW(groups, betas=(0.9, 0.98), eps=1e-6, foreach=False)
        assert optimizer.defaults["fused"] is (True if fused else None)
        for step in range(3):
            g = torch.Generator().manual_seed(step)
            for p in model.parameters():
                p.grad = torch.randn(p.shape, generator=g) if p.requires_grad else None
            optimizer.step()
        results.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    torch.testing.assert_close(results[0], results[1], rtol=1e-6, atol=1e-7)
    assert not torch.allclose(results[0], torch.cat([p.detach().flatten() for p in tiny_model(0)[0].parameters()]))
