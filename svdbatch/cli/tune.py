"""``svdbatch tune JOB --sample N --try KEY=V1,V2``: what cheaper settings do to your own images, before a big run.

The sample is the N manifest rows with the smallest SHA-256 of their key: the same rows whatever the manifest's
order or partitioning, and (seeds being a function of the key) the same seeds, every time. It is rendered under the
job's settings (the reference) and under each alternative, each as a job of its own through ``ray.driver.run`` on the
cluster the job would use, into a scratch folder (``{output}/_tune/{id}/`` unless ``--dir``): the sample manifest,
one output per setting (``s0`` is the reference), lossless MP4s so frames compare exactly, ``tune.json`` and the
page ``index.html`` (tune_page.py). Nothing is written to the job's videos, table or lease: each setting's run holds
the lease of its own folder. One actor per setting, variant 0 of each row: seconds per video are one GPU's, warm (the
slowest video, an actor's first call, is left out as in ``learned``).
"""

from __future__ import annotations

import itertools
import json
import time
from pathlib import Path
from typing import Any

from svdbatch import storage
from svdbatch.cli.tune_page import REFERENCE, Sample, Setting, input_path, page, preview_path, table_lines
from svdbatch.estimate.learned import TUNE
from svdbatch.spec.config import TINY_MODELS, JobSpec, SpecError
from svdbatch.spec.load import load_spec

# What tune decides for every setting's run: where it reads and writes, and that each video is compared bit-exactly.
FIXED_SECTIONS = ("manifest.", "output.", "storage_options", "seeds.variants", "video.lossless", "compute.actors")
SAMPLE_SALT = b"svdbatch-tune-v1\0"


def parse_tries(tries: list[str]) -> list[Setting]:
    """The reference and one setting per value of each ``--try``; a --try of several space-separated
    ``KEY=V1,V2`` pairs adds every combination of their values (``"model.scheduler=lcm render.num_inference_steps=4"``
    is one setting)."""
    found = [Setting(REFERENCE, [], "s0")]
    for text in tries:
        pairs = []
        for pair in text.split():
            key, sep, values = pair.partition("=")
            if not sep or not key or not values:
                raise SpecError(f"--try {text!r}: expected KEY=V1,V2 (e.g. render.num_inference_steps=25,4)")
            if key.startswith(FIXED_SECTIONS):
                raise SpecError(f"--try {key}: tune sets it itself (compare render, model, compute or quality keys)")
            pairs.append([f"{key}={value}" for value in values.split(",")])
        for combination in itertools.product(*pairs):
            found.append(Setting(" ".join(combination), list(combination), f"s{len(found)}"))
    return found


def sample_keys(keys: list[str], count: int) -> list[str]:
    """The ``count`` keys with the smallest salted SHA-256: a sample fixed by the keys alone."""
    import hashlib

    return sorted(set(keys), key=lambda key: hashlib.sha256(SAMPLE_SALT + key.encode()).digest())[:count]


def write_sample(spec: JobSpec, count: int, url: str) -> int:
    """The sampled rows, variant 0 each (the ``variants`` column is dropped), as one Parquet file at ``url``."""
    import io

    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from svdbatch.items.manifest import find_files

    fs, _ = storage.filesystem(spec.manifest.path, spec.storage_options)
    column = spec.manifest.key_column
    files = find_files(spec)

    def read(name: str, columns: list[str] | None = None) -> pa.Table:
        with fs.open(name, "rb") as handle:
            return pq.read_table(handle, columns=columns)

    keys = [pc.cast(read(name, [column])[column], pa.string()).drop_null() for name in files]
    chosen = pa.array(sample_keys(pa.chunked_array(keys, pa.string()).to_pylist(), count), pa.string())
    picked = []
    for name in files:  # one file in memory at a time
        table = read(name)
        picked.append(table.filter(pc.is_in(pc.cast(table[column], pa.string()), value_set=chosen)))
    rows = pa.concat_tables(picked, promote_options="permissive")
    if "variants" in rows.column_names:
        rows = rows.drop_columns(["variants"])
    buffer = io.BytesIO()
    pq.write_table(rows, buffer)
    storage.write_bytes(url, buffer.getvalue(), spec.storage_options)
    return rows.num_rows


def setting_specs(spec_path: str, sets: list[str], settings: list[Setting], folder: str) -> list[JobSpec]:
    """Each setting's job: the job spec with ``--set``, the setting's overrides, and tune's own scratch run."""
    specs = []
    for setting in settings:
        scratch = [
            f"manifest.path={storage.join(folder, 'sample.parquet')}",
            f"output.url={storage.join(folder, setting.folder)}",
            "output.prune=false",
            "output.shards.enabled=false",
            "seeds.variants=1",
            "video.lossless=true",
            "compute.actors=1",
        ]
        try:
            specs.append(load_spec(spec_path, [*sets, *setting.overrides, *scratch]))
        except SpecError as error:
            raise SpecError(f"--try {setting.name}: {error}") from None
    return specs


def tune_folder(spec: JobSpec, folder: str | None) -> str:
    return folder or storage.join(spec.output.url, TUNE, time.strftime("%Y%m%dT%H%M%S", time.gmtime()))


def ok_rows(spec: JobSpec) -> dict[str, dict[str, Any]]:
    """The setting's rendered rows by key."""
    from svdbatch.items.metadata import OK
    from svdbatch.store import commit

    rows = commit.latest(commit.read_rows(spec.output.url, spec.storage_options)).to_pylist()
    return {row["key"]: row for row in rows if row["status"] == OK}


def frames_of(row: dict[str, Any], options: dict[str, Any]):
    """The video's frames, decoded from its MP4 (lossless: the generator's uint8 frames exactly)."""
    import tempfile

    from svdbatch.render.video import decode

    with tempfile.TemporaryDirectory(prefix="svdbatch-tune-") as scratch:
        path = Path(scratch) / "video.mp4"
        path.write_bytes(storage.read_bytes(row["video_uri"], options))
        return decode(str(path))


def compare(settings: list[Setting], rendered: list[dict[str, dict]], folder: str, options: dict[str, Any]):
    """Per (setting folder, key): PSNR and SSIM of each frame against the reference setting's same frame, averaged
    over the video (None where the reference has no such video or another shape). Writes each video's playable
    preview (H.264, yuv420p) for the page on the way: one key's videos are in memory at a time."""
    from svdbatch.render.quality import psnr, ssim
    from svdbatch.render.video import encode_mp4
    from svdbatch.spec.config import VideoSpec

    distance = {}
    for index, key in enumerate(sample_order(rendered)):
        base = None
        for setting, rows in zip(settings, rendered, strict=True):
            if key not in rows:
                continue
            frames = frames_of(rows[key], options)
            preview = encode_mp4(frames, rows[key]["fps"], VideoSpec())
            storage.write_bytes(storage.join(folder, preview_path(setting, index)), preview, options)
            base = frames if setting.name == REFERENCE else base
            if base is None or base.shape != frames.shape:
                distance[setting.folder, key] = {"psnr": None, "ssim": None}
                continue
            pairs = list(zip(base, frames, strict=True))
            distance[setting.folder, key] = {
                "psnr": sum(psnr(a, b) for a, b in pairs) / len(pairs),
                "ssim": sum(ssim(a, b) for a, b in pairs) / len(pairs),
            }
    return distance


def sample_order(rendered: list[dict[str, dict]]) -> list[str]:
    """The sampled keys any setting rendered, in key order: the page's rows."""
    return sorted(set().union(*rendered))


def write_inputs(keys: list[str], rendered: list[dict[str, dict]], folder: str, options: dict[str, Any]) -> set[str]:
    """Each sampled image as the reference saw it (fitted to its render size), for the page's first column; returns
    the keys whose input could be read."""
    from svdbatch.report.images import encode_image, fitted_input

    written = set()
    for index, key in enumerate(keys):
        row = next(rows[key] for rows in rendered if key in rows)
        image = fitted_input(row, options)
        if image is not None:
            storage.write_bytes(storage.join(folder, input_path(index)), encode_image(image, "PNG"), options)
            written.add(key)
    return written


def summarize(setting: Setting, spec: JobSpec, rows: dict[str, dict], distance: dict[tuple, dict]) -> dict[str, Any]:
    """One line of the table: warm seconds per video, peak GPU memory, full-size FLOPs per video, distance to the
    reference and the quality signals, averaged over the sample."""
    from svdbatch.estimate.family_cost import pflop_per_video
    from svdbatch.estimate.learned import warm_seconds
    from svdbatch.report.page import mean

    found = list(rows.values())
    peaks = [row["peak_gpu_bytes"] for row in found if row["peak_gpu_bytes"] is not None]
    return {
        "setting": setting.name,
        "folder": setting.folder,
        "videos": len(found),
        "seconds_per_video": warm_seconds([row["generate_seconds"] for row in found]) if found else None,
        "peak_gpu_bytes": max(peaks) if peaks else None,
        "pflop_per_video": mean(pflop_per_video(spec, found)),
        "psnr": mean([distance[setting.folder, key]["psnr"] for key in rows]),
        "ssim": mean([distance[setting.folder, key]["ssim"] for key in rows]),
        "motion_mean": mean([row["motion_mean"] for row in found]),
        "black_frames": mean([row["black_frames"] for row in found]),
        "first_frame_psnr": mean([row["first_frame_psnr"] for row in found]),
    }


def tune(
    spec_path: str, sets: list[str], tries: list[str], sample: int, folder: str | None, **show
) -> tuple[list, str]:
    """Render the sample under every setting and compare; returns the table's lines and the page's URL.

    ``show``: verbose, progress and cli, passed to each ``ray.driver.run``. Every spec is checked before any work.
    """
    settings = parse_tries(tries)
    spec = load_spec(spec_path, sets)
    folder = tune_folder(spec, folder)
    specs = setting_specs(spec_path, sets, settings, folder)
    from svdbatch.ray import driver  # Ray: only once every setting is known to be valid

    write_sample(spec, sample, storage.join(folder, "sample.parquet"))
    for setting, one in zip(settings, specs, strict=True):
        summary = driver.run(one, **show)
        print(f"tune {setting.name}: {summary.line()}", flush=True)
    rendered = [ok_rows(one) for one in specs]
    options = spec.storage_options
    distance = compare(settings, rendered, folder, options)
    lines = [
        summarize(setting, one, rows, distance) for setting, one, rows in zip(settings, specs, rendered, strict=True)
    ]
    storage.write_bytes(storage.join(folder, "tune.json"), json.dumps(lines, indent=2).encode(), options)
    keys = sample_order(rendered)
    tiny = any(one.model.source in TINY_MODELS for one in specs)
    shown = Sample(keys, write_inputs(keys, rendered, folder, options), tiny)
    index = storage.join(folder, "index.html")
    storage.write_bytes(index, page(settings, lines, shown, distance).encode(), options)
    return table_lines(lines), index
