"""``svdbatch tune JOB --sample N --try KEY=V1,V2``: what cheaper settings do to your own images, before a big run.

The sample is the N manifest rows with the smallest SHA-256 of their key: the same rows whatever the manifest's
order or partitioning, and (seeds being a function of the key) the same seeds, every time. It is rendered under the
job's settings (the reference) and under each alternative, each as a job of its own through ``ray.driver.run`` on the
cluster the job would use, into a scratch folder (``{output}/_tune/{id}/`` unless ``--dir``): the sample manifest,
one output per setting (``s0`` is the reference), lossless MP4s so frames compare exactly, ``tune.json`` and the
page ``index.html``. Nothing is written to the job's videos, table or lease: each setting's run holds the lease of
its own folder. One actor per setting, variant 0 of each row: seconds per video are one GPU's, warm (the slowest
video, an actor's first call, is left out as in ``learned``).
"""

from __future__ import annotations

import itertools
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from svdbatch import storage
from svdbatch.estimate.learned import TUNE
from svdbatch.spec.config import TINY_MODEL, TINY_MODELS, JobSpec, SpecError
from svdbatch.spec.load import load_spec

REFERENCE = "reference"
# What tune decides for every setting's run: where it reads and writes, and that each video is compared bit-exactly.
FIXED_SECTIONS = ("manifest.", "output.", "storage_options", "seeds.variants", "video.lossless", "compute.actors")
SAMPLE_SALT = b"svdbatch-tune-v1\0"


@dataclass(frozen=True)
class Setting:
    name: str  # "reference", or the overrides as typed: "render.num_inference_steps=4"
    overrides: list[str]
    folder: str  # s0 (the reference), s1, ...


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


def setting_specs(job: str, sets: list[str], settings: list[Setting], folder: str) -> list[JobSpec]:
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
            specs.append(load_spec(job, [*sets, *setting.overrides, *scratch]))
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


def preview_path(setting: Setting, index: int) -> str:
    return f"previews/{setting.folder}/{index:04d}.mp4"


def input_path(index: int) -> str:
    return f"inputs/{index:04d}.png"


def write_inputs(keys: list[str], rendered: list[dict[str, dict]], folder: str, options: dict[str, Any]) -> set[str]:
    """Each sampled image as the reference saw it (fitted to its render size), for the page's first column; returns
    the keys whose input could be read."""
    from svdbatch.report.page import encode_image, fitted_input

    written = set()
    for index, key in enumerate(keys):
        row = next(rows[key] for rows in rendered if key in rows)
        image = fitted_input(row, options)
        if image is not None:
            storage.write_bytes(storage.join(folder, input_path(index)), encode_image(image, "PNG"), options)
            written.add(key)
    return written


def breakable(key: str) -> str:
    """The key, HTML-escaped, with a line-break opportunity after each separator (_ - . /): a long key wraps as
    "motorcycle_ / right.png", never as "motorcycle_ri / ght.png"."""
    import html
    import re

    return re.sub(r"([_\-./])", r"\1<wbr>", html.escape(key))


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


def _number(value: float | None, form: str) -> str:
    return "-" if value is None else format(value, form)


def table_lines(lines: list[dict[str, Any]]) -> list[str]:
    """The printed table: one line per setting, the reference first."""
    head = ["setting", "s/video", "peak GPU", "PFLOP/video", "PSNR dB", "SSIM", "motion", "black", "1st-frame dB"]
    body = []
    for line in lines:
        peak = line["peak_gpu_bytes"]
        reference = line["setting"] == REFERENCE
        body.append(
            [
                line["setting"],
                _number(line["seconds_per_video"], ".3g"),
                "n/a (CPU)" if peak is None else f"{peak / 2**30:.1f} GiB",
                _number(line["pflop_per_video"], ".3g"),
                "(ref)" if reference else _number(line["psnr"], ".1f"),
                "(ref)" if reference else _number(line["ssim"], ".3f"),
                _number(line["motion_mean"], ".1f"),
                _number(line["black_frames"], ".1f"),
                _number(line["first_frame_psnr"], ".1f"),
            ]
        )
    widths = [max(len(row[index]) for row in [head, *body]) for index in range(len(head))]
    cells = (zip(row, widths, strict=True) for row in [head, *body])
    return ["  ".join(cell.ljust(width) for cell, width in row).rstrip() for row in cells]


@dataclass(frozen=True)
class Sample:
    """What the page shows of the sample: its keys in order, the keys whose fitted input was written, and whether
    any setting rendered with the embedded tiny model (random weights: noise, and the page says so)."""

    keys: list[str]
    inputs: set[str]
    tiny: bool


def _tiny_note(tiny: bool) -> str:
    if not tiny:
        return ""
    return (
        f'<p id="model-note" class="note">These videos come from <b>{TINY_MODEL}</b>, the embedded tiny model with '
        "random weights: coloured noise is what it makes, so compare settings on timings here and on pictures only "
        "with a real checkpoint (model.source).</p>"
    )


def _item(index: int, key: str, settings: list[Setting], sample: Sample, distance: dict[tuple, dict]) -> str:
    """One sampled item's row: its key, its input image, its video under each setting."""
    cells = [
        f'<figure class="cell input"><img src="{input_path(index)}" alt="input"><figcaption>input</figcaption></figure>'
        if key in sample.inputs
        else '<div class="cell missing">input unavailable</div>'
    ]
    for setting in settings:
        found = distance.get((setting.folder, key))
        if found is None:
            cells.append('<div class="cell missing">not rendered</div>')
            continue
        caption = (
            "reference"
            if setting.name == REFERENCE
            else (f"PSNR {_number(found['psnr'], '.1f')} dB · SSIM {_number(found['ssim'], '.3f')}")
        )
        cells.append(
            f'<figure class="cell"><video src="{preview_path(setting, index)}" muted loop autoplay playsinline>'
            f"</video><figcaption>{caption}</figcaption></figure>"
        )
    return f'<div class="item"><div class="key">{breakable(key)}</div>{"".join(cells)}</div>'


def page(settings: list[Setting], lines: list[dict[str, Any]], sample: Sample, distance: dict[tuple, dict]) -> str:
    """The static page: one row per sampled item, its input image (as fitted) and then its video under each setting
    side by side (the reference first), each captioned with its distance to the reference; the table's figures head
    each column. Keys wrap only after a separator (``breakable``). No network."""
    import html

    columns = len(settings) + 1
    heads = "".join(
        f'<div class="head"><b>{html.escape(line["setting"])}</b><br><small>'
        f"{_number(line['seconds_per_video'], '.3g')} s/video · {_number(line['pflop_per_video'], '.3g')} "
        "PFLOP/video</small></div>"
        for line in lines
    )
    rows = [_item(index, key, settings, sample, distance) for index, key in enumerate(sample.keys)]
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>svdbatch tune</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 1.5rem; background: #fafafa; color: #222; }}
#items {{ overflow-x: auto; }}
.item, .heads {{ display: grid; grid-template-columns: 8rem repeat({columns}, minmax(12rem, 1fr)); gap: .5rem;
  align-items: start; margin-bottom: .8rem; }}
.key {{ overflow-wrap: break-word; font-weight: bold; }}
.cell {{ margin: 0; }} .cell video, .cell img {{ width: 100%; display: block; image-rendering: pixelated; }}
.note {{ background: #fff4d6; border: 1px solid #e8c66a; border-radius: 6px; padding: .5rem .8rem; }}
figcaption, .missing {{ font-size: .8rem; color: #555; }}
pre {{ background: #fff; border: 1px solid #ddd; padding: .5rem; overflow-x: auto; }}
</style></head>
<body data-videos="{len(distance)}" data-loaded="0">
<h1>svdbatch tune</h1>
{_tiny_note(sample.tiny)}
<pre id="table">{html.escape(chr(10).join(table_lines(lines)))}</pre>
<p><small>s/video: warm generation seconds on one actor (model load and the slowest video left out) · PFLOP/video:
full-size count (SVD-XT; Wan, LTX: the model's configs) · PSNR, SSIM: each frame against the reference's.</small></p>
<section id="items"><div class="heads"><div></div><div><b>input</b></div>{heads}</div>
{"".join(rows)}</section>
<script>
let loaded = 0;
document.querySelectorAll("video").forEach((video) => {{
  const count = () => {{ document.body.dataset.loaded = ++loaded; }};
  if (video.readyState >= 2) count(); else video.addEventListener("loadeddata", count, {{ once: true }});
}});
</script></body></html>
"""


def tune(job: str, sets: list[str], tries: list[str], sample: int, folder: str | None, **show) -> tuple[list, str]:
    """Render the sample under every setting and compare; returns the table's lines and the page's URL.

    ``show``: verbose, progress and cli, passed to each ``ray.driver.run``. Every spec is checked before any work.
    """
    settings = parse_tries(tries)
    spec = load_spec(job, sets)
    folder = tune_folder(spec, folder)
    specs = setting_specs(job, sets, settings, folder)
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
