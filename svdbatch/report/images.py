"""The report's pictures: a video's first frame as a poster, the fitted input image it was rendered from, and the PNG
contact sheet of every poster with its label. svdbatch tune shows the same fitted inputs."""

from __future__ import annotations

import io
import os
import tempfile
from typing import Any

import imageio_ffmpeg
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from svdbatch import storage
from svdbatch.render.images import ImageError, load_image

POSTER_WIDTH = 320
SHEET_COLUMNS = 8
SHEET_MAX = 96
SHEET_GAP = 8  # pixels between the contact sheet's cells
SHEET_LABEL = 24  # pixels of label under each poster


def first_frame(data: bytes) -> Image.Image:
    with tempfile.TemporaryDirectory(prefix="svdbatch-report-") as folder:
        path = os.path.join(folder, "video.mp4")
        with open(path, "wb") as handle:
            handle.write(data)
        reader = imageio_ffmpeg.read_frames(path, pix_fmt="rgb24")
        meta = next(reader)
        width, height = meta["size"]
        frame = np.frombuffer(next(reader), dtype=np.uint8).reshape(height, width, 3)
        reader.close()
    return Image.fromarray(frame)


def poster(frame: Image.Image) -> Image.Image:
    scale = POSTER_WIDTH / frame.width
    return frame.resize((POSTER_WIDTH, max(1, round(frame.height * scale))), Image.Resampling.LANCZOS)


def encode_image(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, quality=85) if fmt == "JPEG" else image.save(buffer, fmt)
    return buffer.getvalue()


def fitted_input(row: dict[str, Any], options: dict[str, Any]) -> Image.Image | None:
    """The input image as the model saw it (fitted to the render size), or None when it can no longer be read."""
    try:
        data = storage.read_bytes(row["source_uri"], options)
        fitted = load_image(data, row["width"], row["height"], row["fit"], 10**9)
    except (OSError, ImageError, storage.StorageError):
        return None
    return Image.fromarray(fitted)


def contact_sheet(posters: list[Image.Image], labels: list[str]) -> Image.Image:
    """The posters in rows of ``SHEET_COLUMNS``, ``SHEET_GAP`` apart, each with its label (key · variant) under it,
    cut short with an ellipsis to the poster's width."""
    shown = posters[:SHEET_MAX]
    cell_height = max(poster.height for poster in shown) + SHEET_LABEL
    rows = (len(shown) + SHEET_COLUMNS - 1) // SHEET_COLUMNS
    step_x, step_y = POSTER_WIDTH + SHEET_GAP, cell_height + SHEET_GAP
    sheet = Image.new("RGB", (SHEET_COLUMNS * step_x + SHEET_GAP, rows * step_y + SHEET_GAP), (20, 20, 20))
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default(size=SHEET_LABEL * 2 // 3)
    for index, (poster, label) in enumerate(zip(shown, labels, strict=False)):
        left, top = SHEET_GAP + (index % SHEET_COLUMNS) * step_x, SHEET_GAP + (index // SHEET_COLUMNS) * step_y
        sheet.paste(poster, (left, top))
        draw.text((left + 4, top + poster.height + 4), _fit(label, draw, font), fill=(235, 235, 235), font=font)
    return sheet


def _fit(label: str, draw: ImageDraw.ImageDraw, font: ImageFont.FreeTypeFont) -> str:
    """The label, cut short with an ellipsis until it fits a poster's width."""
    shown = label
    while draw.textlength(shown, font=font) > POSTER_WIDTH - 8 and len(label) > 1:
        label = label[:-1]
        shown = label + "…"
    return shown
