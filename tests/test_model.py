from __future__ import annotations

import logging

import pytest
import torch
from helpers import tiny_model

from benchmark.config import load_config
from benchmark.model import build_model


def _model(**model_overrides):
    overrides = ["model.clip_name=tiny-clip4vla", "model.pretrained=null"]
    overrides += [f"model.{k}={v}" for k, v in model_overrides.items()]
    torch.manual_seed(0)
    return build_model(load_config({}, overrides).model).eval()


def test_audio_tower_without_type_token_is_the_image_tower():
    model = _model(type_token="off")
    x = torch.randn(3, 3, 224, 224)
    expected = model.clip.visual(x)
    torch.testing.assert_close(model.audio(x, torch.ones(3, dtype=torch.long)), expected, rtol=0, atol=0)


@pytest.mark.parametrize(("mode", "extra_tokens"), [("off", 0), ("index", 1), ("mix", 1), ("both", 2)])
def test_type_token_modes_set_the_sequence_length(mode, extra_tokens):
    model = _model(type_token=mode)
    seen = {}
    hook = model.audio.visual.transformer.register_forward_pre_hook(lambda m, args: seen.update(n=args[0].shape[1]))
    model.audio(torch.randn(2, 3, 224, 224), torch.tensor([0, 1]))
    hook.remove()
    assert seen["n"] == 50 + extra_tokens  # CLS + 49 patches + type token(s)


def test_type_token_mix_interpolates_the_two_rows():
    model = _model(type_token="mix", type_mix=0.25)
    tower = model.audio
    tokens = tower.type_tokens(torch.tensor([0, 1]))
    expected = 0.75 * tower.type_embedding[0] + 0.25 * tower.type_embedding[1] + tower.type_position
    torch.testing.assert_close(tokens[:, 0], expected.expand(2, -1))
    tower.mode = "index"
    torch.testing.assert_close(tower.type_tokens(torch.tensor([1]))[0, 0],
                               tower.type_embedding[1] + tower.type_position)


def test_padding_is_neither_encoded_nor_pooled():
    model = _model()
    frames = torch.randn(2, 4, 3, 224, 224)
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 0]], dtype=torch.float)
    calls = []
    hook = model.clip.visual.register_forward_hook(lambda m, args, out: calls.append(args[0].shape[0]))
    before = model.encode_video(frames, mask)
    frames[0, 2:] = torch.randn(2, 3, 224, 224)  # change only padded frames
    frames[1, 3] = 7.0
    after = model.encode_video(frames, mask)
    hook.remove()
    torch.testing.assert_close(before, after, rtol=0, atol=0)
    assert calls == [5, 5]  # only the valid frames went through the image tower
    torch.testing.assert_close(before.norm(dim=-1), torch.ones(2))


def test_item_without_audio_is_represented_by_its_video():
    model = _model()
    video = torch.nn.functional.normalize(torch.randn(2, 32), dim=-1)
    audio = torch.nn.functional.normalize(torch.randn(2, 32), dim=-1)
    audio_mask = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    fused = model.fuse(video, audio, audio_mask)
    torch.testing.assert_close(fused[0], (video[0] + audio[0]) / 2)
    torch.testing.assert_close(fused[1], video[1])


def test_text_feature_equals_open_clip_eot_pooling():
    model = _model()
    tokens = torch.zeros(2, 77, dtype=torch.long)
    tokens[0, :4] = torch.tensor([49406, 320, 1125, 49407])
    tokens[1, :3] = torch.tensor([49406, 550, 49407])
    expected = torch.nn.functional.normalize(model.clip.encode_text(tokens), dim=-1)
    short = model.encode_text(tokens[:, :32])  # max_words 32: positions sliced, causal mask cut
    torch.testing.assert_close(short, expected, atol=1e-5, rtol=1e-5)


def test_padded_audio_segments_are_neither_encoded_nor_pooled():
    model = _model()
    segments = torch.randn(2, 3, 3, 224, 224)
    mask = torch.tensor([[1, 0, 0], [1, 1, 0]], dtype=torch.float)
    types = torch.tensor([0, 1])
    calls = []
    hook = model.audio.register_forward_hook(lambda m, args, out: calls.append(args[0].shape[0]))
    before = model.encode_audio(segments, mask, types)
    segments[0, 1:] = 3.0
    segments[1, 2] = -3.0
    after = model.encode_audio(segments, mask, types)
    hook.remove()
    torch.testing.assert_close(before, after, rtol=0, atol=0)
    assert calls == [3, 3]


def test_no_random_init_notice_where_random_weights_were_asked_for(caplog):
    """open_clip's "No pretrained weights loaded" warning is no news under model.pretrained=null (issue 15)."""
    with caplog.at_level(logging.WARNING):
        tiny_model(0)
        tiny_model(0, "model.audio_init=random")
    assert not [r for r in caplog.records if "No pretrained weights loaded" in r.getMessage()]
