"""Hostile input: a corpus of broken and malicious rows through the real pipeline in one job.

Every case states its expected outcome: an error row naming the input and the cause (all other rows complete) or a
rendered video. The job-level cases and the property tests need no Ray: tests/test_unit_hostile.py.
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import make_spec
from PIL import Image

from svdbatch.ray import driver


def _save(image: Image.Image, fmt: str, **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()


def _picture(width=96, height=80, mode="RGB") -> Image.Image:
    rng = np.random.default_rng(width * height)
    return Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8)).convert(mode)


def _png_claiming(width: int, height: int) -> bytes:
    """A tiny valid PNG whose header claims width x height: a decompression bomb to anyone who decodes it."""
    data = bytearray(_save(Image.new("RGB", (1, 1)), "PNG"))
    ihdr = struct.pack(">II", width, height) + bytes(data[24:29])
    data[16:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return bytes(data)


def _animated(fmt: str) -> bytes:
    frames = [Image.new("RGB", (64, 48), color) for color in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    return _save(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100, loop=0)


def _sixteen_bit() -> Image.Image:
    return Image.fromarray(np.linspace(0, 65535, 64 * 48, dtype=np.uint16).reshape(48, 64))


def _palette_alpha() -> Image.Image:
    image = _picture(64, 48).convert("P")
    image.info["transparency"] = 0
    return image


# name -> (file bytes or None for "no file", overrides, expected): expected is "ok" or a cause the error must name.
IMAGE_CASES = {
    "missing-file": (None, {}, "not found"),
    "empty-file": (b"", {}, "file is empty"),
    "truncated-jpeg": (_save(_picture(), "JPEG")[:300], {}, "image"),
    "truncated-png": (_save(_picture(), "PNG")[:200], {}, "image"),
    "corrupt-webp": (b"RIFF\x10\x00\x00\x00WEBPVP8 " + b"\x00" * 40, {}, "image"),
    "text-as-png": (b"<html>definitely not a picture</html>", {}, "not a readable image"),
    "cmyk-jpeg": (_save(_picture(mode="CMYK"), "JPEG"), {}, "ok"),
    "sixteen-bit-png": (_save(_sixteen_bit(), "PNG"), {}, "ok"),
    "palette-alpha-png": (_save(_palette_alpha(), "PNG"), {}, "ok"),
    "grayscale-png": (_save(_picture(mode="L"), "PNG"), {}, "ok"),
    "animated-gif": (_animated("GIF"), {}, "ok"),
    "animated-webp": (_animated("WEBP"), {}, "ok"),
    "bomb-png": (_png_claiming(30_000, 30_000), {}, "pixel limit"),
    "huge-header-png": (_png_claiming(200_000, 200_000), {}, "pixel limit"),
    "over-configured-limit": (_png_claiming(11_000, 10_000), {}, "pixel limit"),
    "one-pixel": (_save(Image.new("RGB", (1, 1), (9, 9, 9)), "PNG"), {}, "ok"),
    "extreme-aspect": (_save(_picture(2000, 2), "PNG"), {}, "ok"),
    "negative-fps": (_save(_picture(), "PNG"), {"fps": -1}, "column fps"),
    "zero-frames": (_save(_picture(), "PNG"), {"num_frames": 0}, "column num_frames"),
    "nan-noise": (_save(_picture(), "PNG"), {"noise_aug_strength": float("nan")}, "noise_aug_strength"),
    "string-motion": (_save(_picture(), "PNG"), {"motion_bucket_id": "lots"}, "column motion_bucket_id"),
}
KEY_CASES = {  # key -> expected; each gets a good image
    "k" * 5000: "ok",
    "ключ-日本-🙂": "ok",
    "../../escape-attempt": "ok",
    "/absolute/../../etc/passwd": "ok",
    "a\\b\\..\\c": "ok",
    "nul\x00byte": "ok",
    "https://evil.example/?q=1#frag": "ok",
    "": "column key is empty",
}
URI_CASES = {  # key -> (uri, expected)
    "ssrf-metadata": ("http://169.254.169.254/latest/meta-data/", "URI scheme 'http' is not allowed"),
    "ftp-scheme": ("ftp://example.com/a.png", "URI scheme 'ftp' is not allowed"),
    "made-up-scheme": ("gopher://x/y.png", "URI scheme 'gopher' is not allowed"),
    "null-uri": (None, "column image is empty"),
}


@pytest.fixture(scope="module")
def corpus(ray_cluster, tmp_path_factory):
    folder = tmp_path_factory.mktemp("hostile")
    good = folder / "good.png"
    good.write_bytes(_save(_picture(), "PNG"))
    rows = []
    for name, (data, overrides, expected) in IMAGE_CASES.items():
        path = folder / f"{name}.img"
        if data is not None:
            path.write_bytes(data)
        rows.append({"key": name, "image": str(path), **overrides, "_expected": expected})
    for key, expected in KEY_CASES.items():
        rows.append({"key": key, "image": str(good), "_expected": expected})
    for key, (uri, expected) in URI_CASES.items():
        rows.append({"key": key, "image": uri, "_expected": expected})
    rows.append({"key": None, "image": str(good), "_expected": "column key is empty"})
    rows += [{"key": "twice", "image": str(good), "_expected": "key appears 2 times in the manifest"}] * 2
    columns = ["key", "image", "fps", "num_frames", "noise_aug_strength", "motion_bucket_id"]
    table = pa.table(
        {
            "key": pa.array([row["key"] for row in rows], pa.string()),
            "image": pa.array([row["image"] for row in rows], pa.string()),
            "fps": pa.array([row.get("fps") for row in rows], pa.int64()),
            "num_frames": pa.array([row.get("num_frames") for row in rows], pa.int64()),
            "noise_aug_strength": pa.array([row.get("noise_aug_strength") for row in rows], pa.float64()),
            "motion_bucket_id": pa.array([row.get("motion_bucket_id") for row in rows], pa.string()),
        }
    )
    assert table.column_names == columns
    pq.write_table(table, folder / "manifest.parquet")
    output = folder / "out"
    spec = make_spec(
        folder / "manifest.parquet",
        output,
        failures={"max_error_fraction": 1.0},
        images={"max_pixels": 100_000_000},
        compute={"batch_size": 4},
    )
    summary = driver.run(spec, progress=False)
    return {"rows": rows, "summary": summary, "output": output, "folder": folder}


def test_corpus_has_at_least_25_cases_and_loses_no_row(corpus):
    assert len(corpus["rows"]) >= 25
    table = pq.read_table(corpus["output"] / "metadata").to_pylist()
    # Every input row is counted; the table holds one row per item identity, so the two rows of the duplicated
    # key share one error row that says how many rows had it.
    assert corpus["summary"].rendered + corpus["summary"].failed == len(corpus["rows"])
    assert len(table) == len(corpus["rows"]) - 1


def test_every_case_has_its_expected_outcome(corpus):
    table = pq.read_table(corpus["output"] / "metadata").to_pylist()
    by_key: dict = {}
    for row in table:
        by_key.setdefault(row["key"], []).append(row)
    for case in corpus["rows"]:
        found = by_key[case["key"] or None]
        expected = case["_expected"]
        for row in found:
            if expected == "ok":
                assert row["status"] == "ok", (case["key"][:40], row["error"])
            else:
                assert row["status"] == "error", case["key"][:40]
                assert expected in row["error"], (case["key"][:40], row["error"])
                named = case["image"] if not case["key"] else case["key"][:30]
                assert named is None or str(named) in row["error"] or repr(named)[1:-1][:30] in row["error"]


def test_nothing_is_written_outside_the_output_prefix(corpus):
    output = corpus["output"]
    for root, _, files in os.walk(corpus["folder"]):
        for name in files:
            path = Path(root, name)
            assert path.is_relative_to(output) or path.parent == corpus["folder"], path
    for row in pq.read_table(output / "metadata").to_pylist():
        if row["video_uri"]:
            assert Path(row["video_uri"]).resolve().is_relative_to((output / "videos").resolve())
