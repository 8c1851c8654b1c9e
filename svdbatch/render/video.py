"""Frames -> MP4 bytes with the ffmpeg that imageio-ffmpeg ships, and the checks that read them back."""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from dataclasses import dataclass

import imageio_ffmpeg
import numpy as np

from svdbatch.spec.config import VideoSpec


def codec_name(spec: VideoSpec) -> str:
    return "libx264rgb" if spec.lossless else "libx264"


def _output_params(spec: VideoSpec) -> list[str]:
    if spec.lossless:
        return ["-qp", "0", "-preset", spec.preset]
    return ["-crf", str(spec.crf), "-preset", spec.preset, "-movflags", "+faststart"]


def encode_mp4(frames: np.ndarray, fps: int, spec: VideoSpec) -> bytes:
    """Encode (frames, height, width, 3) uint8 at ``fps``; H.264 yuv420p unless the spec says otherwise."""
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"expected (frames, height, width, 3) uint8, got {frames.shape} {frames.dtype}")
    count, height, width, _ = frames.shape
    if spec.pixel_format == "yuv420p" and not spec.lossless and (width % 2 or height % 2):
        raise ValueError(f"yuv420p needs an even width and height, got {width}x{height}")
    with tempfile.TemporaryDirectory(prefix="svdbatch-mp4-") as folder:
        path = os.path.join(folder, "video.mp4")
        writer = imageio_ffmpeg.write_frames(
            path,
            (width, height),
            fps=fps,
            codec=codec_name(spec),
            pix_fmt_out="rgb24" if spec.lossless else spec.pixel_format,
            quality=None,
            macro_block_size=1,
            ffmpeg_log_level="error",
            output_params=_output_params(spec),
        )
        writer.send(None)
        for frame in frames:
            writer.send(np.ascontiguousarray(frame))
        writer.close()
        with open(path, "rb") as handle:
            return handle.read()


@dataclass(frozen=True)
class VideoInfo:
    codec: str
    pixel_format: str
    width: int
    height: int
    fps: float
    frames: int


_STREAM = re.compile(r"Video: (\w+).*?, (\w+)(?:\([^)]*\))?, (\d+)x(\d+).*?, ([\d.]+) fps")


def probe(path: str) -> VideoInfo:
    """What ``ffmpeg -i`` reports for the video stream, plus the decoded frame count."""
    result = subprocess.run(
        [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-i", path], capture_output=True, text=True, check=False
    )
    match = _STREAM.search(result.stderr)
    if not match:
        raise ValueError(f"{path}: no video stream found:\n{result.stderr.strip()}")
    codec, pixel_format, width, height, fps = match.groups()
    frames, _ = imageio_ffmpeg.count_frames_and_secs(path)
    return VideoInfo(codec, pixel_format, int(width), int(height), float(fps), frames)


def decode(path: str) -> np.ndarray:
    """All frames as (frames, height, width, 3) uint8 RGB."""
    reader = imageio_ffmpeg.read_frames(path, pix_fmt="rgb24")
    meta = reader.__next__()
    width, height = meta["size"]
    frames = [np.frombuffer(chunk, dtype=np.uint8).reshape(height, width, 3) for chunk in reader]
    return np.stack(frames)
