"""CLIP4VLA composed from open_clip towers (spec §2)."""

from benchmark.model.clip4vla import CLIP4VLA, AudioTower, build_model

__all__ = ["CLIP4VLA", "AudioTower", "build_model"]
