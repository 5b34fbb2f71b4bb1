"""`clip4vla import-checkpoint`: the authors' state dict in each layout, synthesised from a tiny random model
through the inverse key map (keys and shapes from the map and that model, plus the authors' 3 extra vocabulary
rows, the type token's positional row, `similarity_dense` and the tied LM decoder), imports back to that model
(features equal bit for bit) and maps back to itself bit for bit."""

from __future__ import annotations

import logging

import pytest
import torch
from bad_inputs import BAD_ORIGINAL_STATE_DICTS, CORRUPT_CHECKPOINTS, UNSAFE_CHECKPOINTS
from helpers import class_batch, one_line_stderr, tiny_model

from benchmark.checkpoint import load_checkpoint
from benchmark.cli import main
from benchmark.config import load_config
from benchmark.model import build_model
from benchmark.model.keymap import KEYMAP_TSV, keymap, layer_pattern

TINY = "model.clip_name=tiny-clip4vla"
# layout -> (what the authors' model was built with, as this suite's overrides; the layout import detects)
LAYOUTS = {
    "retrieval": ((), "retrieval"),
    "retrieval_no_type_token": (("model.type_token=off",), "retrieval"),
    "retrieval_loose_seq": (("model.fusion=loose_seq", "model.cross_layers=2"), "retrieval"),
    "captioning": (("model.decoder=true", "model.cross_layers=2"), "captioning"),
    "pre-training": (("model.decoder=true", "model.cross_layers=2"), "pre-training"),
}


def original_state(case: str) -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
    """A tiny model whose weights are fp16 values, and its state dict in the authors' layout `case`, matrices
    fp16 as the authors' convert_weights leaves them (spec §2.9)."""
    model, _ = tiny_model(0, *LAYOUTS[case][0])
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for tensor in model.state_dict().values():
            tensor.copy_(tensor.half().float())
        if case == "captioning":  # a trained LM head (the pre-training one keeps its zero-bias init)
            model.lm_head.bias.copy_(torch.randn(model.lm_head.bias.shape, generator=g).half())
    state = model.state_dict()
    width = state["clip.token_embedding.weight"].shape[1]
    dropped = {"clip.token_embedding.weight": torch.randn(3, width, generator=g)}  # MASK/UNK/PAD rows
    if model.lm_head is not None:
        dropped["cls.predictions.bias"] = torch.zeros(3) if case == "pre-training" else torch.randn(3, generator=g)
    no_home = {"similarity_dense.weight": torch.randn(1, model.embed_dim, generator=g),
               "similarity_dense.bias": torch.randn(1, generator=g)} if case == "retrieval_loose_seq" else {}
    original = keymap().to_original(state, dropped, no_home)
    return model.eval(), {k: v.half() if v.dim() >= 2 else v.clone() for k, v in original.items()}


@pytest.fixture(scope="module")
def batch() -> dict[str, torch.Tensor]:
    return class_batch(2)


def features(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Every output the tiny model computes: unit text, video, audio and fused features; caption logits."""
    with torch.no_grad():
        out = model(batch)
        if model.lm_head is not None:
            out["caption_logits"] = model(batch, objective="caption")["caption_logits"]
    return {k: v for k, v in out.items() if k not in ("scale", "audio_mask")}


def test_every_row_of_the_shipped_map_is_one_of_its_rules():
    rows = [line.split("\t") for line in KEYMAP_TSV.read_text().splitlines()[1:]]
    assert len(rows) == 513  # ViT-B/32: retrieval 507 keys, captioning / pre-training 511 (spec §16)
    for original, project, _ in rows:
        pattern, index = layer_pattern(original)
        rule = keymap().by_original[pattern]
        assert ",".join(p.replace("{}", index) for p in rule.project) == ("" if project == "-" else project)


def test_the_synthesised_layout_is_the_authors(tmp_path):
    _, state = original_state("retrieval_loose_seq")
    assert state["clip.token_embedding.weight"].shape == (49411, 64)
    assert state["audio.visual.positional_embedding"].shape == (51, 64)
    assert state["clip.transformer.resblocks.0.attn.in_proj_weight"].dtype == torch.float16
    assert "cross.transformer.resblocks.1.mlp.c_fc.weight" in state and "similarity_dense.weight" in state
    _, captioning = original_state("captioning")
    assert torch.equal(captioning["cls.predictions.decoder.weight"], captioning["clip.token_embedding.weight"])


@pytest.mark.parametrize("case", sorted(LAYOUTS))
def test_import_gives_back_the_model_and_the_inverse_gives_back_the_file(case, batch, tmp_path, capsys):
    source_model, state = original_state(case)
    source, out = tmp_path / "pytorch_model.bin", tmp_path / "imported.pt"
    torch.save(state, source)
    assert main(["import-checkpoint", str(source), "--out", str(out), TINY]) == 0
    printed = capsys.readouterr().out
    assert f"the authors' {LAYOUTS[case][1]} model" in printed and "clip.token_embedding.weight[49408:]" in printed
    imported = load_checkpoint(out)
    overrides = imported["imported_from"]["overrides"]
    assert f"--checkpoint {out} --out DIR {' '.join(overrides)}" in printed
    assert imported["imported_from"]["layout"] == LAYOUTS[case][1]
    assert all(v.dtype == torch.float32 for v in imported["model"].values())

    model = build_model(load_config({}, overrides).model).eval()
    model.load_state_dict(imported["model"])  # strict: exactly this model's keys
    expected = features(source_model, batch)
    if case == "pre-training":  # its never-trained cross and LM head are left out
        expected.pop("caption_logits")
    got = features(model, batch)
    assert expected.keys() == got.keys()
    for name in expected:
        assert torch.equal(got[name], expected[name]), name

    back = keymap().to_original(imported["model"], imported["dropped_rows"], imported["left_out"])
    assert back.keys() == state.keys()
    for key, tensor in state.items():
        assert back[key].dtype == torch.float32 and torch.equal(back[key].to(tensor.dtype), tensor), key


def test_a_loose_seq_checkpoint_records_and_prints_the_fusion_it_needs(tmp_path, capsys):
    _, state = original_state("retrieval_loose_seq")
    torch.save(state, tmp_path / "pytorch_model.bin")
    assert main(["import-checkpoint", str(tmp_path / "pytorch_model.bin"), "--out", str(tmp_path / "x.pt"), TINY]) == 0
    assert "model.fusion=loose_seq model.cross_layers=2" in capsys.readouterr().out
    assert main(["import-checkpoint", str(tmp_path / "pytorch_model.bin"), "--out", str(tmp_path / "y.pt"), TINY,
                 "model.fusion=feat_avg"]) == 2
    assert "needs model.fusion=loose_seq, model.cross_layers=2: drop model.fusion=feat_avg" in one_line_stderr(capsys)


@pytest.mark.parametrize("kind", sorted(BAD_ORIGINAL_STATE_DICTS))
def test_a_state_dict_that_does_not_fit_is_one_line(kind, tmp_path, capsys):
    edit, fragments = BAD_ORIGINAL_STATE_DICTS[kind]
    _, state = original_state("retrieval")
    edit(state)
    torch.save(state, tmp_path / "pytorch_model.bin")
    assert main(["import-checkpoint", str(tmp_path / "pytorch_model.bin"), "--out", str(tmp_path / "x.pt"), TINY]) == 2
    line = one_line_stderr(capsys)
    assert all(f in line for f in fragments), line
    assert not (tmp_path / "x.pt").exists()


@pytest.mark.parametrize("kind", sorted({**CORRUPT_CHECKPOINTS, **UNSAFE_CHECKPOINTS}))
def test_a_file_that_is_not_a_readable_state_dict_is_one_line(kind, tmp_path, capsys):
    source = tmp_path / "pytorch_model.bin"
    torch.save(original_state("retrieval")[1], source)
    {**CORRUPT_CHECKPOINTS, **UNSAFE_CHECKPOINTS}[kind](source)
    assert main(["import-checkpoint", str(source), "--out", str(tmp_path / "x.pt"), TINY]) == 2
    assert str(source) in one_line_stderr(capsys)


def test_out_must_be_a_new_file(tmp_path, capsys):
    source = tmp_path / "pytorch_model.bin"
    torch.save(original_state("retrieval")[1], source)
    for out, reason in ((source, "not the source"), (tmp_path, "not a folder")):
        assert main(["import-checkpoint", str(source), "--out", str(out), TINY]) == 2
        assert reason in one_line_stderr(capsys)


@pytest.mark.slow
def test_evaluate_scores_an_imported_loose_seq_checkpoint(msrvtt_small, tiny_config, tmp_path, capsys, caplog):
    _, state = original_state("retrieval_loose_seq")
    torch.save(state, tmp_path / "pytorch_model.bin")
    out = tmp_path / "imported.pt"
    assert main(["import-checkpoint", str(tmp_path / "pytorch_model.bin"), "--out", str(out), TINY]) == 0
    overrides = load_checkpoint(out)["imported_from"]["overrides"]
    caplog.set_level(logging.INFO, logger="clip4vla")
    assert main(["evaluate", "msrvtt_retrieval", "--config", str(tiny_config), "--checkpoint", str(out),
                 "--out", str(tmp_path / "eval"), f"data.root={msrvtt_small[0].parent}", "eval.bootstrap=0",
                 *overrides]) == 0
    assert f"initialised from {out}" in caplog.text and "kept own init" not in caplog.text


@pytest.mark.slow
@pytest.mark.parametrize(("case", "run_with", "named"), [
    ("retrieval_no_type_token", (), "model.type_token=off (this run: mix)"),
    ("retrieval", ("model.fusion=loose_seq",), "model.fusion=feat_avg (this run: loose_seq)"),
], ids=["type-token-switched-on", "loose_seq-for-a-feat_avg-file"])
def test_an_imported_checkpoint_scored_under_another_model_is_one_line(case, run_with, named, msrvtt_small,
                                                                         tiny_config, tmp_path, capsys):
    """Built otherwise than the authors' model, the modules the file lacks (the type token, the cross
    transformer) would keep their random init and every score would be wrong, with only a log line saying so."""
    _, state = original_state(case)
    torch.save(state, tmp_path / "pytorch_model.bin")
    out = tmp_path / "imported.pt"
    assert main(["import-checkpoint", str(tmp_path / "pytorch_model.bin"), "--out", str(out), TINY]) == 0
    capsys.readouterr()
    assert main(["evaluate", "msrvtt_retrieval", "--config", str(tiny_config), "--checkpoint", str(out),
                 "--out", str(tmp_path / "eval"), f"data.root={msrvtt_small[0].parent}", "eval.bootstrap=0",
                 TINY, "model.pretrained=null", *run_with]) == 2
    line = one_line_stderr(capsys)
    assert named in line and "run with model.clip_name=tiny-clip4vla" in line


def test_a_checkpoint_of_another_model_size_is_one_line_not_a_traceback(tmp_path):
    from helpers import one_line_error

    from benchmark.progress import Progress
    from benchmark.stages import Session, load_init

    model, cfg = tiny_model(0)
    other = {k: torch.zeros(v.shape[0] + 1, *v.shape[1:]) if k == "clip.token_embedding.weight" else v
             for k, v in model.state_dict().items()}
    torch.save({"model": other}, tmp_path / "other.pt")
    session = Session(tmp_path, None, None, Progress(), None, torch.device("cpu"), {}, {})
    one_line_error(lambda: load_init(session, model, cfg.model, tmp_path / "other.pt"),
                   "does not fit this model (tiny-clip4vla): 1 tensors of other shapes",
                   "clip.token_embedding.weight")
