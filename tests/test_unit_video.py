"""MP4 writing, checked by decoding the file back. No Ray."""

from __future__ import annotations

import numpy as np
import pytest

from svdbatch.render.video import decode, encode_mp4, probe
from svdbatch.spec.config import VideoSpec


def frames(count=9, height=48, width=80) -> np.ndarray:
    rng = np.random.default_rng(0)
    smooth = np.linspace(0, 255, width, dtype=np.float64)[None, None, :, None]
    base = np.broadcast_to(smooth, (count, height, width, 3)) + rng.integers(0, 8, (count, height, width, 3))
    return np.clip(base, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("fps", [7, 12])
def test_h264_yuv420p_with_requested_frames_size_and_fps(tmp_path, fps):
    path = tmp_path / "v.mp4"
    path.write_bytes(encode_mp4(frames(), fps, VideoSpec()))
    info = probe(str(path))
    assert (info.codec, info.pixel_format) == ("h264", "yuv420p")
    assert (info.width, info.height, info.frames, info.fps) == (80, 48, 9, fps)
    decoded = decode(str(path))
    assert decoded.shape == (9, 48, 80, 3)
    assert np.abs(decoded.astype(int) - frames()).mean() < 4


def test_lossless_is_bit_exact(tmp_path):
    path = tmp_path / "v.mp4"
    path.write_bytes(encode_mp4(frames(), 7, VideoSpec(lossless=True)))
    assert probe(str(path)).codec == "h264"
    assert np.array_equal(decode(str(path)), frames())


def test_odd_size_for_yuv420p_and_wrong_dtype_are_refused():
    with pytest.raises(ValueError, match="even"):
        encode_mp4(frames(width=81), 7, VideoSpec())
    with pytest.raises(ValueError, match="uint8"):
        encode_mp4(frames().astype(np.float32), 7, VideoSpec())
