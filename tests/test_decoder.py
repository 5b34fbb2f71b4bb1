from __future__ import annotations

import pytest
import torch

from benchmark.config import load_config
from benchmark.errors import UserError
from benchmark.media.text import Tokenizer
from benchmark.model import build_model
from benchmark.model.cross import AUDIO, TEXT, VIDEO, KVCache, additive_mask, block_step
from benchmark.model.decoder import (
    EOT,
    SOT,
    CachedStep,
    Context,
    beam_search,
    caption_inputs,
    caption_token_length,
    generate,
    teacher_forced_logits,
)


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
    cache = KVCache(capacity=6)
    steps = [block_step(block, x[:, t : t + 1], cache) for t in range(6)]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-5)
    several = KVCache(capacity=6)  # new tokens several at a time see each other causally
    steps = [block_step(block, x[:, t : t + 3], several) for t in (0, 3)]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="holds 6 tokens"):
        block_step(block, x[:, :1], several)


# generate()'s ids on this file's model and context, recorded before the KV cache became preallocated buffers
# with the context's keys first (issue 16): the rewrite changed the order of the attention sums only.
GOLDEN_IDS = {
    1: [[35531, 17090, 30270, 7318, 18334, 37568, 9507, 37568], [34158, 9967, 11218, 7912, 21818, 17933, 8840, 45239]],
    3: [[45270, 7124, 1201, 7124, 10755, 37568, 7124, 10755], [38109, 34158, 34014, 17933, 2775, 24204, 39834, 39834]],
    5: [[11218, 27801, 36640, 23685, 9758, 22135, 9758, 23440], [2140, 19413, 19413, 19413, 11502, 34158, 20605, 2299]],
}


@pytest.mark.parametrize("beam", sorted(GOLDEN_IDS))
@torch.no_grad()
def test_generated_ids_are_unchanged(beam):
    assert generate(_model(), _context(), max_words=8, beam=beam) == GOLDEN_IDS[beam]


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
    """Reference greedy decoding that re-encodes the whole prefix at every step, padded to the max_words caption
    block of training (so the context stays at position max_words), for at most max_words steps."""
    out = []
    for b in range(context.features.shape[0]):
        single = Context(context.features[b : b + 1], context.mask[b : b + 1], context.type_ids)
        tokens = [SOT]
        for _ in range(max_words):
            padded = torch.tensor([tokens + [0] * (max_words - len(tokens))])
            valid = torch.arange(max_words)[None] < len(tokens)
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

    def score(tokens, b):  # teacher-forced log-probability of [SOT] tokens [EOT], cut to the 8-position block
        seq = [SOT, *tokens, EOT][:9]
        padded = torch.tensor([seq[:-1] + [0] * (9 - len(seq))])
        single = Context(context.features[b : b + 1], context.mask[b : b + 1], context.type_ids)
        logits = teacher_forced_logits(model, model.text_token_states(padded), torch.ones(1, 8), single)
        log_probs = logits.log_softmax(-1)[0]
        return sum(float(log_probs[i, seq[i + 1]]) for i in range(len(seq) - 1))

    with torch.no_grad():
        for b in range(2):
            assert score(beamed[b], b) >= score(greedy[b], b) - 1e-4


def test_a_caption_of_max_words_minus_one_words_is_kept_whole():
    """As the authors: input [SOT] + caption[:max_words-1], target caption[:max_words-1] + [EOT], both max_words."""
    max_words = 8
    tokenizer = Tokenizer("tiny-clip4vla", max_words)
    seven, nine = "a red square on a blue screen", "a red square on a blue screen hums loudly"
    words = tokenizer([seven], 30)[0, 1:8].tolist()  # 7 = max_words - 1 BPE tokens
    assert tokenizer([seven], 30)[0, 8] == EOT
    inputs, valid, targets, target_valid = caption_inputs(tokenizer([seven, nine], caption_token_length(max_words)))
    assert inputs.shape == targets.shape == (2, max_words)
    for row in range(2):  # the longer caption is cut to the same max_words - 1 words
        assert inputs[row].tolist() == [SOT, *words]
        assert targets[row].tolist() == [*words, EOT]
    assert valid.all() and target_valid.all()


def _reference_logits(model, inputs, text_valid, context):
    """The spec's decoder by hand: model.cross over [caption states (max_words); context] at explicit positions
    0..max_words+K-1, mask caption->caption causal & key padding, caption->context and context->context key
    padding, context->caption never."""
    cross = model.cross
    states = model.text_token_states(inputs)
    batch, length, _ = states.shape
    k = context.features.shape[1]
    total = length + k
    mask = torch.zeros(batch, total, total)
    for b in range(batch):
        for q in range(total):
            for key in range(total):
                if key >= length:
                    mask[b, q, key] = float(context.mask[b, key - length])
                elif q < length:
                    mask[b, q, key] = float(key <= q and text_valid[b, key])
    types = torch.tensor([TEXT] * length + context.type_ids.tolist())
    x = cross.embed(torch.cat([states, context.features], dim=1), types, torch.arange(total))
    for block in cross.blocks:
        x = block(x, attn_mask=additive_mask(mask, cross.heads, x.dtype))
    return model.lm_head(x[:, :length], model.clip.token_embedding.weight)


@torch.no_grad()
def test_teacher_forced_logits_put_the_context_at_max_words_as_decoding_does():
    max_words = 8
    model = _model()
    context = _context()
    tokens = Tokenizer("tiny-clip4vla", max_words)(["a red square on a blue screen hums", "a low hum"],
                                                  caption_token_length(max_words))
    inputs, valid, _, _ = caption_inputs(tokens)
    assert inputs.shape[1] == max_words
    logits = teacher_forced_logits(model, model.text_token_states(inputs), valid, context)
    torch.testing.assert_close(logits, _reference_logits(model, inputs, valid, context), atol=1e-4, rtol=1e-5)
    step = CachedStep(model, context, max_words)  # what generate() runs, one token at a time
    for t in range(max_words):
        row_valid = valid[:, t]  # past EOT, training masks the padding keys; decoding never gets there
        torch.testing.assert_close(step(inputs[:, : t + 1])[row_valid], logits[row_valid, t], atol=1e-4, rtol=1e-5)


class _ReEncode:
    """A beam_search step that re-encodes every whole prefix, padded to the max_words caption block."""

    def __init__(self, model, context, max_words):
        self.model, self.context, self.max_words = model, context, max_words

    def __call__(self, tokens):
        n, t = tokens.shape
        padded = torch.cat([tokens, tokens.new_zeros(n, self.max_words - t)], dim=1)
        valid = (torch.arange(self.max_words) < t)[None].expand(n, -1)
        logits = teacher_forced_logits(self.model, self.model.text_token_states(padded), valid, self.context)
        return logits[:, t - 1]

    def reorder(self, origin):
        pass


@pytest.mark.parametrize("beam", [1, 5])
@torch.no_grad()
def test_cached_beam_search_equals_re_encoding_the_prefix(beam):
    max_words = 8
    model = _model()
    model.lm_head.norm.weight.mul_(20)  # peaked next-token distributions: beams diverge, scores are well apart
    model.lm_head.bias[EOT] = 11.0  # and some hypotheses end early (instance 0), others run all max_words steps
    context = _context()  # a batch of 2 with different frame and audio masks
    repeated = Context(context.features.repeat_interleave(beam, 0), context.mask.repeat_interleave(beam, 0),
                       context.type_ids)  # one row per hypothesis, for re-encoding
    cached_tokens, cached_scores = beam_search(CachedStep(model, context, max_words, beam), 2, beam, max_words,
                                               torch.device("cpu"))
    tokens, scores = beam_search(_ReEncode(model, repeated, max_words), 2, beam, max_words, torch.device("cpu"))
    assert torch.equal(cached_tokens, tokens)
    torch.testing.assert_close(cached_scores, scores, atol=1e-4, rtol=1e-5)
    assert torch.isfinite(scores).all() and (scores[:, :-1] >= scores[:, 1:]).all()
    assert tokens.shape[2] == max_words + 1  # instance 1 ran the whole caption block, and no further
    assert EOT in tokens[0, 0].tolist() and EOT not in tokens[1, 0].tolist()
    best = [row[: row.index(EOT)] if EOT in row else row for row in tokens[:, 0, 1:].tolist()]
    assert generate(model, context, max_words, beam) == best
    if beam > 1:  # the beam found a better caption than greedy decoding for instance 1
        greedy, greedy_scores = beam_search(CachedStep(model, context, max_words), 2, 1, max_words,
                                            torch.device("cpu"))
        assert scores[1, 0] > greedy_scores[1, 0] + 1e-3 and not torch.equal(tokens[1, 0], greedy[1, 0])


@torch.no_grad()
def test_decoding_runs_max_words_steps():
    model = _model()
    model.lm_head.bias[EOT] = -1e4  # EOT unreachable: every hypothesis runs the whole caption block
    for beam in (1, 5):
        assert [len(c) for c in generate(model, _context(), max_words=8, beam=beam)] == [8, 8]


def test_caption_block_and_context_must_fit_the_positional_table():
    model = _model()
    frames, segments = 12, 16
    context = Context.of(torch.randn(1, frames, 64), torch.ones(1, frames), torch.randn(1, segments, 64),
                         torch.ones(1, segments))
    assert (context.type_ids == VIDEO).sum() == frames and (context.type_ids == AUDIO).sum() == segments
    with pytest.raises(UserError, match=r"50 \+ 12 \+ 16 = 78"):
        generate(model, context, max_words=50, beam=1)
    tokens = torch.tensor([[SOT] + [320] * 49 + [EOT]])
    inputs, valid, _, _ = caption_inputs(tokens)
    with pytest.raises(UserError, match=r"50 \+ 12 \+ 16 = 78"):
        teacher_forced_logits(model, model.text_token_states(inputs), valid, context)
    generate(model, context, max_words=49, beam=1)  # 49 + 12 + 16 = 77 fits (the authors: 48 + 12 + 16)


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
