"""Issue 12: never a silent wrong number. Bad configs, non-finite media, losses and similarities, and
checkpoints broken at every point of their write, each against the corpus in bad_inputs.py."""

from __future__ import annotations

import errno
import logging
import os
from pathlib import Path

import pytest
import torch
from bad_inputs import BAD_AUDIO, BAD_CONFIGS, CORRUPT_CHECKPOINTS, UNSAFE_CHECKPOINTS
from helpers import ClassPairs, one_line_error, tiny_model, train_config

from benchmark.checkpoint import Checkpointer, load_checkpoint
from benchmark.config import load_config
from benchmark.losses import RetrievalLoss
from benchmark.media.errors import MediaError
from benchmark.metrics import clip_to_text_ranks, text_to_clip_ranks
from benchmark.train import train


@pytest.mark.parametrize(("overrides", "fragments"), BAD_CONFIGS, ids=lambda case: str(case)[:40])
def test_bad_config_values_are_refused_when_the_config_is_built(overrides, fragments):
    one_line_error(lambda: load_config({}, [overrides] if isinstance(overrides, str) else list(overrides)),
                   *fragments)


def test_the_shipped_configs_are_in_range():
    from benchmark.sweep import expand, load_suite
    from configs import path

    for suite in ("smoke.yaml", "paper.yaml", "ablations.yaml"):
        assert expand(load_suite(path(suite)))  # every run's config passes the range checks


# --- non-finite and too-short media are media failures, never audio ------------------------------------------
@pytest.mark.parametrize("name", sorted(BAD_AUDIO))
def test_broken_audio_is_a_recorded_media_failure_and_never_cached_as_audio(tmp_path, name):
    from benchmark.items import Clip
    from benchmark.media.audio import read_waveform
    from benchmark.media.decode import Preprocessing
    from benchmark.media.store import MediaStore

    write, reason = BAD_AUDIO[name]
    wav = tmp_path / f"{name}.wav"
    write(wav)
    with pytest.raises(MediaError) as caught:
        read_waveform(wav)
    assert caught.value.reason == reason
    store = MediaStore(tmp_path / "store", Preprocessing())
    clip = Clip(name, ("a caption",), None, wav)
    store.fill([clip])
    status = store.status(clip)
    assert (status.has_audio, status.audio_error) == (False, reason)


# --- a non-finite loss stops training (or, asked for, skips the step) ----------------------------------------
class NonFiniteAt(torch.nn.Module):
    """`loss` whose `term` is NaN on the given (1-based) calls: a broken batch."""

    def __init__(self, loss: torch.nn.Module, calls: set[int], term: str) -> None:
        super().__init__()
        self.loss, self.calls, self.term, self.objective, self.n = loss, calls, term, loss.objective, 0

    def forward(self, out):
        self.n += 1
        terms = self.loss(out)
        if self.n in self.calls:
            terms[self.term] = terms[self.term] * float("nan")
        return terms


def test_a_non_finite_loss_stops_training_naming_the_step_and_the_term():
    model, cfg = tiny_model(0)
    loss = NonFiniteAt(RetrievalLoss(cfg.loss, "fused"), {3}, "t_fused_loss")
    tc = train_config("finetune.max_steps=4", "finetune.grad_accum=2")
    one_line_error(lambda: train(model, loss, ClassPairs(16), tc, seed=0, log=lambda m, s: None),
                   "non-finite loss at step 2 (epoch 0, micro-batch 1 of 2)", "t_fused_loss = nan", "skip_nonfinite=true")


def test_skip_nonfinite_skips_and_counts_the_step_and_the_weights_stay_finite():
    model, cfg = tiny_model(0)
    loss = NonFiniteAt(RetrievalLoss(cfg.loss, "fused"), {2}, "t_fused_loss")
    logged = {}
    tc = train_config("finetune.max_steps=4", "finetune.skip_nonfinite=true")
    summary = train(model, loss, ClassPairs(16), tc, seed=0, log=lambda m, s: logged.update({s: m}))
    assert summary["skipped_steps"] == 1 and summary["steps"] == 4
    assert logged[4]["train/skipped_steps"] == 1.0 and 2 not in logged  # the skipped step logs nothing
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_the_skip_count_survives_a_resume(tmp_path):
    from test_train import Interrupt

    def run(stop_at=None, resume=False):
        model, cfg = tiny_model(0)
        loss = NonFiniteAt(RetrievalLoss(cfg.loss, "fused"), set() if resume else {2}, "t_fused_loss")
        tc = train_config("finetune.max_steps=5", "finetune.skip_nonfinite=true", "finetune.checkpoint_every=1")

        def log(metrics, step):
            if step == stop_at:
                raise Interrupt

        return train(model, loss, ClassPairs(16), tc, seed=0, log=log, resume=resume,
                     checkpoints=Checkpointer(tmp_path, keep_last=2))

    with pytest.raises(Interrupt):
        run(stop_at=4)  # killed after the checkpoint at step 3, which follows the skipped step 2
    assert run(resume=True)["skipped_steps"] == 1


# --- a non-finite similarity is an error, never a rank ---------------------------------------------------------
@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_a_non_finite_similarity_is_an_error_in_both_directions(value):
    sim = torch.eye(4)
    sim[2, 2] = value
    caption_clip = torch.arange(4)
    one_line_error(lambda: text_to_clip_ranks(sim, caption_clip), "non-finite similarity: 1 of 16 scores")
    one_line_error(lambda: clip_to_text_ranks(sim, caption_clip), "non-finite similarity")


# --- model selection survives a kill at every point of a checkpoint write ------------------------------------
class Killed(BaseException):
    """The process dies here (BaseException: nothing in the suite may catch it)."""


def _selecting_run(folder, target: float | None = None, resume: bool = False, sums: list | None = None):
    """8 steps, scored and saved every 2, keep_last 1. The score is highest where the sum of one weight equals
    `target` (the step-4 value of an uninterrupted run), so the best checkpoint is an older one that pruning
    must keep and a resumed run must still find."""
    model, cfg = tiny_model(0)
    weight = next(p for n, p in model.named_parameters() if n.endswith("proj"))

    def select() -> float:
        value = float(weight.detach().double().sum())
        if sums is not None:
            sums.append(value)
        return 0.0 if target is None else -abs(value - target)

    tc = train_config("finetune.max_steps=8", "finetune.eval_every=2", "finetune.keep_last=1")
    train(model, RetrievalLoss(cfg.loss, "fused"), ClassPairs(24), tc, seed=3, log=lambda m, s: None,
          checkpoints=Checkpointer(folder, keep_last=1), resume=resume, select=select)
    return model


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    sums: list[float] = []
    _selecting_run(tmp_path_factory.mktemp("probe"), sums=sums)
    target = sums[1]  # the score at step 4 is the best
    folder = tmp_path_factory.mktemp("reference")
    return target, _selecting_run(folder, target).state_dict(), Checkpointer(folder)


def _kill_during_step_4_save(monkeypatch, window: str) -> None:
    """Arm one kill inside Checkpointer.save(step=4) at `window`."""
    import benchmark.checkpoint as ckpt

    saving = {"step": None}
    real_save, real_replace, real_torch_save, real_prune = (ckpt.Checkpointer.save, os.replace, torch.save,
                                                            ckpt.Checkpointer._prune)
    replaces = []

    def save(self, step, state, score=None):
        saving["step"] = step
        return real_save(self, step, state, score)

    def replace(src, dst):
        if saving["step"] == 4:
            replaces.append(dst)
            if window == f"before_rename_{len(replaces)}":
                raise Killed
        real_replace(src, dst)

    def torch_save(obj, path, *args, **kwargs):
        if saving["step"] == 4 and window == "mid_write":
            Path(path).write_bytes(b"PK\x03\x04 half a checkpoint")
            raise Killed
        real_torch_save(obj, path, *args, **kwargs)

    def prune(self):
        if saving["step"] == 4 and window == "before_prune":
            raise Killed
        real_prune(self)
        if saving["step"] == 4 and window == "after_prune":
            raise Killed

    monkeypatch.setattr(ckpt.Checkpointer, "save", save)
    monkeypatch.setattr(ckpt.os, "replace", replace)
    monkeypatch.setattr(ckpt.torch, "save", torch_save)
    monkeypatch.setattr(ckpt.Checkpointer, "_prune", prune)


# before_rename_1: scores.json written to .tmp, not renamed; before_rename_2: scores.json renamed, the
# checkpoint written to .tmp, not renamed; the rest as named
KILL_WINDOWS = ("before_rename_1", "mid_write", "before_rename_2", "before_prune", "after_prune")


@pytest.mark.parametrize("window", KILL_WINDOWS)
def test_resume_after_a_kill_inside_a_checkpoint_write_selects_the_same_best(tmp_path, monkeypatch, uninterrupted,
                                                                           window):
    target, reference, reference_ckpt = uninterrupted
    with monkeypatch.context() as patched:
        _kill_during_step_4_save(patched, window)
        with pytest.raises(Killed):
            _selecting_run(tmp_path, target)
    resumed = _selecting_run(tmp_path, target, resume=True)
    assert Checkpointer(tmp_path).best().name == reference_ckpt.best().name == "step-00000004.pt"
    for (name, p), q in zip(reference.items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(p, q), name  # the restored best is the uninterrupted run's


def test_the_selection_score_is_stored_in_the_checkpoint(tmp_path):
    ckpt = Checkpointer(tmp_path)
    ckpt.save(3, {"x": torch.tensor(1)}, score=0.25)
    assert ckpt.load(ckpt.path(3))["score"] == 0.25 and ckpt.scores() == {3: 0.25}


def test_a_folder_from_before_scores_json_still_names_its_best(tmp_path):
    ckpt = Checkpointer(tmp_path)
    for step in (2, 4):
        ckpt.save(step, {"x": torch.tensor(step)})
    (tmp_path / "best.json").write_text('{"step": 2, "score": 0.5}')
    assert ckpt.best() == ckpt.path(2)


# --- corrupt checkpoints on --resume, unsafe pickles anywhere --------------------------------------------------
@pytest.mark.parametrize("kind", sorted(CORRUPT_CHECKPOINTS))
def test_resume_passes_over_a_corrupt_newest_checkpoint_with_one_warning(tmp_path, caplog, kind):
    ckpt = Checkpointer(tmp_path, keep_last=3)
    for step in (2, 4):
        ckpt.save(step, {"x": torch.tensor(step)})
    CORRUPT_CHECKPOINTS[kind](ckpt.path(4))
    with caplog.at_level(logging.WARNING, logger="benchmark.checkpoint"):
        state = ckpt.resume_state()
    assert state["step"] == 2
    (warning,) = [r.getMessage() for r in caplog.records]
    assert "step-00000002.pt" in warning and "step-00000004.pt" in warning and "\n" not in warning


def test_a_corrupt_checkpoint_passed_over_is_set_aside_so_the_next_ones_survive_pruning(tmp_path):
    """Left in place, a corrupt step-4 would count as the newest: the step-3 written after resuming from step 2
    would be pruned at once (keep_last=1), and a second kill would lose it."""
    ckpt = Checkpointer(tmp_path, keep_last=1)
    ckpt.save(2, {"x": torch.tensor(2)}, score=0.9)
    ckpt.save(4, {"x": torch.tensor(4)}, score=0.5)
    CORRUPT_CHECKPOINTS["truncated"](ckpt.path(4))
    assert ckpt.resume_state()["step"] == 2
    ckpt.save(3, {"x": torch.tensor(3)}, score=0.4)
    assert ckpt.steps() == [2, 3] and ckpt.best() == ckpt.path(2)  # step 2 kept as the best, 3 as the newest
    assert (tmp_path / "step-00000004.pt.corrupt").exists()


def test_a_fresh_start_into_a_folder_of_checkpoints_is_refused(tmp_path):
    """Without --resume, the earlier run's higher steps would prune the new run's checkpoints and the final
    model could be theirs."""
    from test_train import _run

    _run(tmp_path)
    one_line_error(lambda: _run(tmp_path), "holds checkpoints of an earlier run (steps 4..6)", "--resume")


def test_resume_with_no_intact_checkpoint_is_one_line_naming_them(tmp_path):
    ckpt = Checkpointer(tmp_path, keep_last=3)
    for step, kind in ((2, "truncated"), (4, "garbage")):
        ckpt.save(step, {"x": torch.randn(64, 64)})
        CORRUPT_CHECKPOINTS[kind](ckpt.path(step))
    one_line_error(ckpt.resume_state, "no intact checkpoint", "step-00000002.pt", "step-00000004.pt")


def test_training_resumes_from_the_older_checkpoint_when_the_newest_is_truncated(tmp_path):
    from test_train import Interrupt, _run

    reference = _run(tmp_path / "a")
    with pytest.raises(Interrupt):
        _run(tmp_path / "b", stop_at=5)
    CORRUPT_CHECKPOINTS["truncated"](Checkpointer(tmp_path / "b" / "ckpt").path(4))
    resumed = _run(tmp_path / "b", resume=True)  # continues from step 2
    for (name, p), q in zip(reference.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(p, q), name


@pytest.mark.parametrize("kind", sorted(UNSAFE_CHECKPOINTS))
def test_a_pickle_that_weights_only_refuses_is_one_line_without_advice_to_load_it_unsafely(tmp_path, kind):
    path = tmp_path / "model.pt"
    UNSAFE_CHECKPOINTS[kind](path)
    message = one_line_error(lambda: load_checkpoint(path), str(path), "Python objects", "never unpickles")
    assert "weights_only" not in message and "False" not in message


# --- a full disk during a checkpoint write ------------------------------------------------------------------------
@pytest.mark.parametrize("failure", [
    RuntimeError("[enforce fail at inline_container.cc:603] . PytorchStreamWriter failed writing file data/3: "
                 "file write failed"),
    OSError(errno.ENOSPC, "No space left on device"),
])
def test_a_full_disk_is_one_line_naming_the_path_and_leaves_no_tmp(tmp_path, monkeypatch, failure):
    import benchmark.checkpoint as ckpt

    def full(obj, path, *args, **kwargs):
        Path(path).write_bytes(b"partial")
        raise failure

    monkeypatch.setattr(ckpt.torch, "save", full)
    one_line_error(lambda: Checkpointer(tmp_path).save(7, {"x": torch.tensor(1)}), "the disk is full",
                   "step-00000007.pt")
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob("step-*"))
