"""Per-video quality signals from the frames already in memory, and the optional gates that reject bad videos.

SVD can return black or NaN frames (diffusers #7400), frozen clips and clips that drift from the input image.
Every signal is cheap numpy on the uint8 frames the writer encodes anyway; only non-finite frames must be counted
by the generator on its float output, because NaN and inf are gone after the cast to uint8.
"""

from __future__ import annotations

from typing import Any

import numpy as np

BLACK_LEVEL = 16.0  # a frame whose brightest luma is below this (of 255) is black
CONSTANT_STD = 2.0  # a frame whose luma standard deviation is below this is one flat colour
PSNR_CAP = 100.0  # PSNR of identical images is infinite; capped so the column stays finite (and JSON-safe)

# SSIM (Wang et al. 2004) with the usual constants for 8-bit images, on luma, with a uniform 7x7 window
# (as scikit-image's default) instead of the paper's Gaussian: simpler, and the same ordering of images.
SSIM_WINDOW = 7
SSIM_C1 = (0.01 * 255) ** 2
SSIM_C2 = (0.03 * 255) ** 2

QUALITY_COLUMNS = [
    "nonfinite_frames",
    "black_frames",
    "constant_frames",
    "motion_mean",
    "first_frame_psnr",
    "first_frame_ssim",
]


def luma(frame: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> (H, W) BT.601 luma in 0..255.

    Integer arithmetic, (77 R + 150 G + 29 B) >> 8: cheaper than a float conversion and within one level of it.
    """
    wide = frame.astype(np.uint16)
    return (wide[..., 0] * 77 + wide[..., 1] * 150 + wide[..., 2] * 29) >> 8


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB of two uint8 images of one shape, capped at PSNR_CAP."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    if mse == 0:
        return PSNR_CAP
    return min(PSNR_CAP, 10 * np.log10(255.0**2 / mse))


def _box_mean(image: np.ndarray, size: int) -> np.ndarray:
    """Mean over every size x size window fully inside the image ('valid' windows), via a summed-area table."""
    table = np.pad(image, ((1, 0), (1, 0))).cumsum(0).cumsum(1)
    total = table[size:, size:] - table[:-size, size:] - table[size:, :-size] + table[:-size, :-size]
    return total / (size * size)


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Mean structural similarity of two uint8 RGB images of one shape, on luma; 1.0 means identical."""
    x, y = luma(a).astype(np.float64), luma(b).astype(np.float64)
    size = min(SSIM_WINDOW, *x.shape)
    mean_x, mean_y = _box_mean(x, size), _box_mean(y, size)
    var_x = _box_mean(x * x, size) - mean_x**2
    var_y = _box_mean(y * y, size) - mean_y**2
    cov = _box_mean(x * y, size) - mean_x * mean_y
    index = ((2 * mean_x * mean_y + SSIM_C1) * (2 * cov + SSIM_C2)) / (
        (mean_x**2 + mean_y**2 + SSIM_C1) * (var_x + var_y + SSIM_C2)
    )
    return float(index.mean())


def measure(frames: np.ndarray, image: np.ndarray, nonfinite_frames: int) -> dict[str, Any]:
    """The quality columns of one video: (F, H, W, 3) uint8 frames against its (H, W, 3) uint8 input image.

    One frame's luma at a time, so the memory used is a few frames, not a float copy of the video.
    """
    black = constant = 0
    motion = 0.0
    previous = None
    for frame in frames:
        y = luma(frame).astype(np.int16)
        black += int(y.max() < BLACK_LEVEL)
        constant += int(y.std() < CONSTANT_STD)
        if previous is not None:
            motion += float(np.abs(y - previous).mean())
        previous = y
    return {
        "nonfinite_frames": int(nonfinite_frames),
        "black_frames": black,
        "constant_frames": constant,
        "motion_mean": motion / (len(frames) - 1) if len(frames) > 1 else 0.0,
        "first_frame_psnr": psnr(frames[0], image),
        "first_frame_ssim": ssim(frames[0], image),
    }


GATES = [
    ("max_nonfinite_frames", "nonfinite_frames", "non-finite frames", "max"),
    ("max_black_frames", "black_frames", "black frames", "max"),
    ("max_constant_frames", "constant_frames", "constant frames", "max"),
    ("min_motion", "motion_mean", "mean motion", "min"),
    ("min_first_frame_psnr", "first_frame_psnr", "first-frame PSNR", "min"),
    ("min_first_frame_ssim", "first_frame_ssim", "first-frame SSIM", "min"),
]


def _fails(value: Any, limit: Any, kind: str) -> bool:
    return limit is not None and value is not None and (value > limit if kind == "max" else value < limit)


def failed_gates(stats: dict[str, Any], gates: dict[str, Any]) -> list[str]:
    """The gates (``quality`` spec section as a dict; None means off) these quality columns fail, by name."""
    return [gate for gate, column, _, kind in GATES if _fails(stats[column], gates.get(gate), kind)]


def rejection(stats: dict[str, Any], gates: dict[str, Any]) -> str | None:
    """Why the gates reject a video, or None."""
    reasons = []
    for gate, column, label, kind in GATES:
        limit, value = gates.get(gate), stats[column]
        if _fails(value, limit, kind):
            shown = value if isinstance(value, int) else round(value, 3)
            reasons.append(f"{label} {shown} {'>' if kind == 'max' else '<'} quality.{gate}={limit}")
    return "rejected: " + "; ".join(reasons) if reasons else None
