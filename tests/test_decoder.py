from __future__ import annotations

import torch

from benchmark.config import load_config
from benchmark.model import build_model
from benchmark.model.cross import block_step
from benchmark.model.decoder import EOT, SOT, Context, caption_inputs, generate, teacher_forced_logits


def _model(**model_overrides):
    overrides = ["model.clip_name=tiny-clip4vla", "model.pretrained=null", "model.cross_layers=2",
                 "model.decoder=true"]
    overrides += [f"model.{k}={v}" for k, v in model_overrides.items()]
    torch.manual_seed(0)
    model = build_model(load_config({}, overrides).model).eval()
    with torch.no_grad():  # a random LM head is nearly flat; sharpen it so decoding paths differ
        model.lm_head.dense.weight.mul_(50)
    return model


def _context(batch=2, frames=3, segments=2, dim=64):
    torch.manual_seed(1)
    frame_mask = torch.tensor([[1, 1, 0], [1, 1, 1]], dtype=torch.float)[:batch]
    audio_mask = torch.tensor([[1, 0], [0, 0]], dtype=torch.float)[:batch]
    return Context.of(torch.randn(batch, frames, dim), frame_mask, torch.randn(batch, segments, dim), audio_mask)


def test_incremental_block_equals_the_full_causal_forward():
    model = _model()
    block = model.clip.transformer.resblocks[0]
    x = torch.randn(2, 6, 64)
    full = block(x, attn_mask=model.clip.attn_mask[:6, :6])
    cache: dict = {}
    steps = [block_step(block, x[:, t : t + 1], cache) for t in range(6)]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-5)


def test_decoder_cannot_see_the_future():
    model = _model()
    tokens = torch.tensor([[SOT, 320, 1125, 539, 2368, EOT, 0, 0]])
    inputs, valid, _, _ = caption_inputs(tokens)
    context = _context(batch=1)
    before = teacher_forced_logits(model, model.text_token_states(inputs), valid, context)
    changed = inputs.clone()
    changed[0, 3] = 999
    after = teacher_forced_logits(model, model.text_token_states(changed), valid, context)
    torch.testing.assert_close(after[0, :3], before[0, :3], rtol=0, atol=0)
    assert not torch.allclose(after[0, 3], before[0, 3])


def _greedy_by_re_encoding(model, context, max_words):
    """Reference greedy decoding that re-encodes the whole prefix at every step (the authors' way)."""
    out = []
    for b in range(context.features.shape[0]):
        single = Context(context.features[b : b + 1], context.mask[b : b + 1], context.type_ids)
        tokens = [SOT]
        for _ in range(max_words - 1):
            padded = torch.tensor([tokens + [0] * (max_words - 1 - len(tokens))])
            valid = torch.arange(max_words - 1)[None] < len(tokens)
            logits = teacher_forced_logits(model, model.text_token_states(padded), valid, single)
            tokens.append(int(logits[0, len(tokens) - 1].argmax()))
            if tokens[-1] == EOT:
                break
        out.append([t for t in tokens[1:] if t != EOT])
    return out


def test_beam_one_is_greedy_and_the_kv_cache_matches_re_encoding():
    model = _model()
    context = _context()
    with torch.no_grad():
        reference = _greedy_by_re_encoding(model, context, max_words=8)
    assert generate(model, context, max_words=8, beam=1) == reference
    assert any(len(r) > 0 for r in reference)


def test_beam_search_scores_at_least_greedy():
    model = _model()
    context = _context()
    greedy = generate(model, context, max_words=8, beam=1)
    beamed = generate(model, context, max_words=8, beam=5)

    def score(tokens, b):
        seq = [SOT, *tokens, EOT][:7]
        padded = torch.tensor([seq + [0] * (7 - len(seq))])
        single = Context(context.features[b : b + 1], context.mask[b : b + 1], context.type_ids)
        logits = teacher_forced_logits(model, model.text_token_states(padded), torch.ones(1, 7), single)
        log_probs = logits.log_softmax(-1)[0]
        return sum(float(log_probs[i, seq[i + 1]]) for i in range(len(seq) - 1))

    with torch.no_grad():
        for b in range(2):
            assert score(beamed[b], b) >= score(greedy[b], b) - 1e-4


def test_loose_seq_ignores_padding_and_keeps_video_alone_without_audio():
    model = _model(fusion="loose_seq")
    batch = {
        "frames": torch.randn(2, 3, 3, 224, 224), "frame_mask": torch.tensor([[1.0, 1, 0], [1, 1, 1]]),
        "audio": torch.randn(2, 2, 3, 224, 224), "audio_mask": torch.tensor([[1.0, 0], [0, 0]]),
        "audio_type": torch.tensor([1, 1]),
    }
    before = model(batch)
    batch["frames"][0, 2] = 5.0
    batch["audio"][0, 1] = 5.0
    batch["audio"][1] = -3.0
    after = model(batch)
    for key in ("video", "audio", "fused"):
        torch.testing.assert_close(before[key], after[key], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(after["fused"][1], after["video"][1])


def test_caption_loss_ignores_or_supervises_padding_by_protocol():
    from benchmark.losses import CaptionLoss

    tokens = torch.tensor([[SOT, 320, 1125, EOT, 0, 0]])
    _, _, targets, valid = caption_inputs(tokens)
    assert targets.tolist() == [[320, 1125, EOT, 0, 0]] and valid.tolist() == [[True, True, True, False, False]]
    logits = torch.randn(1, 5, 49408)
    words = torch.nn.functional.cross_entropy(logits[0, :3], targets[0, :3])
    everything = torch.nn.functional.cross_entropy(logits[0], targets[0])
    out = {"caption_logits": logits, "caption_targets": targets, "caption_valid": valid}
    torch.testing.assert_close(CaptionLoss(supervise_pad=False)(out)["caption_loss"], words)
    torch.testing.assert_close(CaptionLoss(supervise_pad=True)(out)["caption_loss"], everything)
