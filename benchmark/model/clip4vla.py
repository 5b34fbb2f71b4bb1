"""CLIP4VLA (spec §2): open_clip's text and image towers, plus an audio tower with the audio type token.

Composed through open_clip's public API (`create_model`, `.visual`, the text attributes of `CLIP`); nothing is
forked. Features are unit-norm; pooling is the masked mean of unit per-frame / per-segment features (CLIP4Clip
meanP), and padded frames and segments are never run through a tower (the authors' code encodes them, spec
§12 item 21d).
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from benchmark.config import ModelConfig
from benchmark.errors import UserError
from benchmark.model.cross import AUDIO, VIDEO, CrossTransformer
from benchmark.model.decoder import Context, LMHead, caption_inputs, teacher_forced_logits

CONFIG_DIR = Path(__file__).parent / "configs"
MAX_LOGIT_SCALE = 100.0  # spec §2.4: similarities are 100 x cosine
# What a loss asks of forward() (spec §6): "pretrain" (unit features, no fusion module, spec §2.5; the type token
# picked by corpus, §2.3), "retrieval" (fine-tuning and evaluation: features fused by model.fusion), "caption"
# (teacher-forced caption logits, §2.7).
OBJECTIVES = ("pretrain", "retrieval", "caption")


class AudioTower(nn.Module):
    """A copy of CLIP's image tower fed [3, 224, 224] log-mel segments, with the audio type token (spec §2.3).

    Token sequence: [CLS, 49 patches] + the type token(s) appended after the patches with one new positional
    row (mode "both" appends two tokens that share that row, as the authors' mode 3). The segment embedding is
    the CLS output after ln_post and proj; with type_token "off" the tower is exactly the image tower.
    """

    def __init__(self, visual: nn.Module, cfg: ModelConfig) -> None:
        super().__init__()
        self.visual = visual
        self.mode = cfg.type_token
        self.mix = cfg.type_mix
        width = visual.class_embedding.shape[-1]
        if self.mode != "off":
            # rows: 0 = verbal (instructional speech), 1 = non-verbal (sound events) (spec §2.3, trust the data code)
            self.type_embedding = nn.Parameter(torch.randn(2, width) * width**-0.5)
            self.type_position = nn.Parameter(torch.randn(width) * cfg.type_pos_init_std)

    def type_tokens(self, audio_type: torch.Tensor, mode: str | None = None) -> torch.Tensor | None:
        """[N] type ids (0 verbal, 1 non-verbal) -> [N, k, width] tokens to append, or None for mode "off".
        `mode` overrides the configured mode (pre-training picks rows by index whatever the fine-tuning mode)."""
        mode = mode or self.mode
        if mode == "off":
            return None
        n = audio_type.shape[0]
        if mode == "index":
            tokens = self.type_embedding[audio_type].unsqueeze(1)
        elif mode == "mix":
            mixed = (1 - self.mix) * self.type_embedding[0] + self.mix * self.type_embedding[1]
            tokens = mixed.expand(n, 1, -1)
        else:  # "both"
            tokens = self.type_embedding.unsqueeze(0).expand(n, -1, -1)
        return tokens + self.type_position

    def forward(self, segments: torch.Tensor, audio_type: torch.Tensor, mode: str | None = None) -> torch.Tensor:
        """segments [N, 3, 224, 224], audio_type [N] -> segment embeddings [N, embed_dim] (not normalised)."""
        v = self.visual
        x = v.conv1(segments)  # [N, width, 7, 7]
        x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)
        cls = v.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + v.positional_embedding.to(x.dtype)
        x = v.patch_dropout(x)
        extra = self.type_tokens(audio_type, mode)
        if extra is not None:
            x = torch.cat([x, extra.to(x.dtype)], dim=1)
        x = v.ln_pre(x)
        x = v.transformer(x)
        x = v.ln_post(x)[:, 0]  # the CLS output is the segment embedding; the TYPE output is unused
        return x @ v.proj


def pool(features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """meanP (spec §2.2, §2.3): [B, K, D] features, [B, K] mask -> normalise each, masked mean, normalise.

    The result is unit-norm, or zero when nothing is valid.
    """
    mask = mask.to(features.dtype).unsqueeze(-1)
    pooled = (F.normalize(features, dim=-1) * mask).sum(1) / (mask.sum(1) + 1e-10)
    return F.normalize(pooled, dim=-1)


class CLIP4VLA(nn.Module):
    """Text, video and audio encoders with unit-norm outputs and the feat_avg fusion (spec §2.5)."""

    def __init__(self, clip: nn.Module, audio: AudioTower, cfg: ModelConfig) -> None:
        super().__init__()
        self.clip = clip
        self.audio = audio
        self.cfg = cfg
        # Built only when used (the authors always build it, untrained, spec §12 item 21c).
        self.cross = CrossTransformer(clip, cfg.cross_layers) if cfg.fusion == "loose_seq" or cfg.decoder else None
        width, vocab = clip.token_embedding.weight.shape[1], clip.token_embedding.weight.shape[0]
        self.lm_head = LMHead(width, vocab) if cfg.decoder else None
        # CLIP's own logit_scale is never used (spec §2.4); freezing it keeps DDP from waiting on its gradient.
        self.clip.logit_scale.requires_grad_(False)
        if not 0 < cfg.logit_scale_init <= MAX_LOGIT_SCALE:
            raise UserError(f"model.logit_scale_init must be in (0, {MAX_LOGIT_SCALE:g}], got {cfg.logit_scale_init}")
        scale = torch.tensor(math.log(cfg.logit_scale_init))
        if cfg.learnable_logit_scale:
            self.logit_scale = nn.Parameter(scale)
        else:
            self.register_buffer("logit_scale", scale)

    @property
    def embed_dim(self) -> int:
        return self.clip.text_projection.shape[-1]

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute the three towers' activations in backward (open_clip's switch, on both image towers)."""
        self.clip.set_grad_checkpointing(enable)
        self.audio.visual.set_grad_checkpointing(enable)

    def text_token_states(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens [B, L] -> per-token states [B, L, D]: CLIP's causal text path cut to L positions (spec §2.1)."""
        clip = self.clip
        length = tokens.shape[1]
        x = clip.token_embedding(tokens) + clip.positional_embedding[:length]
        x = clip.transformer(x, attn_mask=clip.attn_mask[:length, :length])
        return clip.ln_final(x) @ clip.text_projection

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens [B, L] -> unit [B, D] at the EOT position (the highest token id, as open_clip's argmax pool)."""
        states = self.text_token_states(tokens)
        eot = tokens.argmax(dim=-1)
        return F.normalize(states[torch.arange(tokens.shape[0]), eot], dim=-1)

    def encode_frames(self, frames: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """frames [B, T, 3, H, W], mask [B, T] -> per-frame features [B, T, D], zeros at padding."""
        valid = mask.bool()
        out = frames.new_zeros(*mask.shape, self.embed_dim)
        if valid.any():
            out[valid] = self.clip.visual(frames[valid]).to(out.dtype)
        return out

    def encode_segments(self, segments: torch.Tensor, mask: torch.Tensor, audio_type: torch.Tensor,
                        mode: str | None = None) -> torch.Tensor:
        """segments [B, S, 3, 224, 224], mask [B, S], audio_type [B] -> [B, S, D], zeros at padding; `mode`
        overrides the type-token mode."""
        valid = mask.bool()
        out = segments.new_zeros(*mask.shape, self.embed_dim)
        if valid.any():
            types = audio_type.unsqueeze(1).expand_as(mask)[valid]
            out[valid] = self.audio(segments[valid], types, mode).to(out.dtype)
        return out

    def encode_video(self, frames: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return pool(self.encode_frames(frames, mask), mask)

    def encode_audio(self, segments: torch.Tensor, mask: torch.Tensor, audio_type: torch.Tensor,
                     mode: str | None = None) -> torch.Tensor:
        return pool(self.encode_segments(segments, mask, audio_type, mode), mask)

    def loose_seq(self, frames: torch.Tensor, frame_mask: torch.Tensor, segments: torch.Tensor,
                  audio_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`loose_seq` (spec §2.5): the cross transformer over [frames; segments] (types 1/2, positions 0..,
        key-padding mask), split back into frame and segment tokens; no text is involved."""
        n_frames = frames.shape[1]
        types = torch.tensor([VIDEO] * n_frames + [AUDIO] * segments.shape[1], device=frames.device)
        out = self.cross(torch.cat([frames, segments], dim=1), types, torch.cat([frame_mask, audio_mask], dim=1))
        return out[:, :n_frames], out[:, n_frames:]

    @staticmethod
    def fuse(video: torch.Tensor, audio: torch.Tensor, audio_mask: torch.Tensor) -> torch.Tensor:
        """feat_avg: (v + a) / 2, not re-normalised (spec §2.5); an item without audio is its video alone."""
        has_audio = audio_mask.bool().any(dim=1, keepdim=True)
        return torch.where(has_audio, (video + audio) / 2, video)

    def scale(self) -> torch.Tensor:
        """Similarity scale exp(logit_scale). Not clamped here: exp(ln 100) is 100.0000076 in fp32, so a clamp
        at 100 in the forward pass would give the learnable scale a zero gradient from the first step on; the
        cap is applied to the parameter after each optimizer step instead (`clamp_logit_scale`, open_clip's way)."""
        return self.logit_scale.exp()

    @torch.no_grad()
    def clamp_logit_scale(self) -> None:
        """Keep the scale in (0, 100] (spec §2.4); called by the training loop after every optimizer step."""
        self.logit_scale.clamp_(max=math.log(MAX_LOGIT_SCALE))

    def type_mode(self, objective: str) -> str:
        """The audio type-token mode an objective uses: pre-training picks the row by corpus, 0 verbal,
        1 non-verbal (spec §2.3), whatever mode fine-tuning uses; "off" stays off."""
        return "index" if objective == "pretrain" and self.cfg.type_token != "off" else self.cfg.type_token

    def uses_cross(self, objective: str) -> bool:
        """Whether `objective` runs the cross transformer: captioning, and retrieval with loose_seq (never
        pre-training, spec §2.5). The released-code parameter groups depend on it (spec §8)."""
        return self.cross is not None and (
            objective == "caption" or (objective == "retrieval" and self.cfg.fusion == "loose_seq"))

    def context(self, batch: dict[str, torch.Tensor]) -> Context:
        """The caption decoder's conditioning: raw frame and segment features with their masks (spec §2.7)."""
        frames = self.encode_frames(batch["frames"], batch["frame_mask"])
        segments = self.encode_segments(batch["audio"], batch["audio_mask"], batch["audio_type"])
        return Context.of(frames, batch["frame_mask"], segments, batch["audio_mask"])

    def caption_forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Teacher forcing on batch["tokens"]: logits, targets and target validity for CaptionLoss."""
        if self.lm_head is None:
            raise UserError("captioning needs the caption decoder: set model.decoder=true")
        inputs, valid, targets, target_valid = caption_inputs(batch["tokens"])
        logits = teacher_forced_logits(self, self.text_token_states(inputs), valid, self.context(batch))
        return {"caption_logits": logits, "caption_targets": targets, "caption_valid": target_valid}

    def forward(self, batch: dict[str, torch.Tensor], objective: str = "retrieval") -> dict[str, torch.Tensor]:
        """Encode what the batch holds: keys tokens / frames+frame_mask / audio+audio_mask(+audio_aug), audio_type.

        Returns unit features text, video, audio, fused, audio_aug (those that apply), audio_mask and scale;
        with objective "caption", the caption_forward outputs instead (OBJECTIVES says what each one means).
        """
        if objective not in OBJECTIVES:
            raise ValueError(f"unknown objective '{objective}' (one of {', '.join(OBJECTIVES)})")
        if objective == "caption":
            return self.caption_forward(batch)
        mode = self.type_mode(objective)
        out: dict[str, torch.Tensor] = {"scale": self.scale()}
        if "tokens" in batch:
            out["text"] = self.encode_text(batch["tokens"])
        frames = segments = None
        if "frames" in batch:
            frames = self.encode_frames(batch["frames"], batch["frame_mask"])
        if "audio" in batch:
            segments = self.encode_segments(batch["audio"], batch["audio_mask"], batch["audio_type"], mode)
            out["audio_mask"] = batch["audio_mask"]
        if frames is not None and segments is not None and self.uses_cross(objective):
            frames, segments = self.loose_seq(frames, batch["frame_mask"], segments, batch["audio_mask"])
        if frames is not None:
            out["video"] = pool(frames, batch["frame_mask"])
        if segments is not None:
            out["audio"] = pool(segments, batch["audio_mask"])
        if frames is not None and segments is not None:
            out["fused"] = self.fuse(out["video"], out["audio"], batch["audio_mask"])
        if "audio_aug" in batch:  # the intra-modal view never goes through fusion (pre-training, spec §6.2)
            out["audio_aug"] = self.encode_audio(batch["audio_aug"], batch["audio_mask"], batch["audio_type"], mode)
        return out


def register_configs() -> None:
    import open_clip

    if "tiny-clip4vla" not in open_clip.list_models():
        open_clip.add_model_config(CONFIG_DIR)


class _RandomInitNotice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if record.getMessage().startswith("No pretrained weights loaded"):
            logging.getLogger("clip4vla").debug("open_clip: %s", record.getMessage())
            return False
        return True


@contextlib.contextmanager
def random_init_asked():
    """open_clip warns "No pretrained weights loaded ... initialized randomly" on the root logger; where the
    config asked for random weights (model.pretrained null, the random audio-init ablation) it is no news, and it
    came just before "initialised from <checkpoint>" in every run that loads one (issue 15)."""
    notice, root = _RandomInitNotice(), logging.getLogger()
    root.addFilter(notice)
    try:
        yield
    finally:
        root.removeFilter(notice)


def build_model(cfg: ModelConfig) -> CLIP4VLA:
    """Build CLIP4VLA from an open_clip config name and weights (tag such as "openai", a local path, or None)."""
    import open_clip

    register_configs()
    if cfg.clip_name not in open_clip.list_models():
        from benchmark.registry import closest

        raise UserError(f"unknown open_clip model '{cfg.clip_name}'{closest(cfg.clip_name, open_clip.list_models())}")
    pretrained = cfg.pretrained
    if pretrained and not Path(pretrained).is_file():
        tags = open_clip.list_pretrained_tags_by_model(cfg.clip_name)
        if pretrained not in tags:
            raise UserError(
                f"model.pretrained '{pretrained}' is neither a file nor an open_clip tag of {cfg.clip_name} "
                f"(tags: {', '.join(tags) or 'none'})"
            )
    try:
        with random_init_asked() if pretrained is None else contextlib.nullcontext():
            clip = open_clip.create_model(cfg.clip_name, pretrained=pretrained)
    except RuntimeError as exc:  # open_clip reports unreachable hubs and bad checkpoints this way
        raise UserError(f"could not load CLIP weights '{pretrained}' for {cfg.clip_name}: {exc}") from exc
    if cfg.audio_init == "visual":
        visual = copy.deepcopy(clip.visual)  # spec §2.3: every audio parameter starts as its vision twin
    else:
        with random_init_asked():  # the "without_initial" ablation
            visual = open_clip.create_model(cfg.clip_name, pretrained=None).visual
    return CLIP4VLA(clip, AudioTower(visual, cfg), cfg)
