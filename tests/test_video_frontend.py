from __future__ import annotations

import numpy as np
import pytest
import torch

from benchmark.media import video
from benchmark.media.audio import read_waveform
from benchmark.media.errors import MediaError
from benchmark.synthetic import write_mp4

SECOND_COLOURS = [(250, 0, 0), (0, 250, 0), (0, 0, 250), (250, 250, 0), (0, 250, 250)]


@pytest.fixture(scope="module")
def five_second_clip(tmp_path_factory):
    """8 fps, 5 s; every second has its own colour, so a frame tells which second it came from."""
    frames = np.concatenate([np.full((8, 48, 64, 3), c, dtype=np.uint8) for c in SECOND_COLOURS])
    path = tmp_path_factory.mktemp("video") / "clip.mp4"
    write_mp4(path, frames, audio=None)
    return path


def _second_of(frame: torch.Tensor) -> int:
    mean = frame.float().mean(dim=(1, 2))
    return int(np.argmin([((mean - torch.tensor(c, dtype=torch.float)) ** 2).sum() for c in SECOND_COLOURS]))


def test_one_frame_per_second_then_uniform_selection(five_second_clip):
    frames = video.decode_frames(five_second_clip, max_frames=12)
    assert frames.shape == (5, 3, 224, 224) and frames.dtype == torch.uint8
    assert [_second_of(f) for f in frames] == [0, 1, 2, 3, 4]
    picked = video.decode_frames(five_second_clip, max_frames=3)
    assert [_second_of(f) for f in picked] == [0, 2, 4]  # linspace(0, 4, 3)


def test_clip_normalisation():
    white = torch.full((1, 3, 2, 2), 255, dtype=torch.uint8)
    expected = (1 - torch.tensor(video.CLIP_MEAN)) / torch.tensor(video.CLIP_STD)
    torch.testing.assert_close(video.normalize(white)[0, :, 0, 0], expected)


@pytest.mark.parametrize(("content", "reason"), [(None, "missing"), (b"", "empty"), (b"not an mp4 at all", "corrupt")])
def test_broken_files_raise_media_errors_with_a_reason(tmp_path, content, reason):
    path = tmp_path / "broken.mp4"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(MediaError) as err:
        video.decode_frames(path, max_frames=4)
    assert err.value.reason == reason


def test_video_without_audio_track_is_a_no_stream_error(five_second_clip):
    with pytest.raises(MediaError) as err:
        read_waveform(five_second_clip)
    assert err.value.reason == "no_stream"
