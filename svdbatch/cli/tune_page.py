"""What ``svdbatch tune`` shows: the settings it compares, the printed table, and the static page (one row per
sampled item: its fitted input, then its video under each setting, each captioned with its distance to the reference),
built on the report's page shell. No network."""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from typing import Any

from svdbatch.report import shell
from svdbatch.spec.config import TINY_MODEL

REFERENCE = "reference"


@dataclass(frozen=True)
class Setting:
    name: str  # "reference", or the overrides as typed: "render.num_inference_steps=4"
    overrides: list[str]
    folder: str  # s0 (the reference), s1, ...


def preview_path(setting: Setting, index: int) -> str:
    return f"previews/{setting.folder}/{index:04d}.mp4"


def input_path(index: int) -> str:
    return f"inputs/{index:04d}.png"


def breakable(key: str) -> str:
    """The key, HTML-escaped, with a line-break opportunity after each separator (_ - . /): a long key wraps as
    "motorcycle_ / right.png", never as "motorcycle_ri / ght.png"."""
    return re.sub(r"([_\-./])", r"\1<wbr>", html.escape(key))


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
    return shell.tiny_note(
        TINY_MODEL,
        "the embedded tiny model with random weights: coloured noise is what it makes, so compare settings on "
        "timings here and on pictures only with a real checkpoint (model.source).",
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
    columns = len(settings) + 1
    heads = "".join(
        f'<div class="head"><b>{html.escape(line["setting"])}</b><br><small>'
        f"{_number(line['seconds_per_video'], '.3g')} s/video · {_number(line['pflop_per_video'], '.3g')} "
        "PFLOP/video</small></div>"
        for line in lines
    )
    rows = [_item(index, key, settings, sample, distance) for index, key in enumerate(sample.keys)]
    style = f"""#items {{ overflow-x: auto; }}
.item, .heads {{ display: grid; grid-template-columns: 8rem repeat({columns}, minmax(12rem, 1fr)); gap: .5rem;
  align-items: start; margin-bottom: .8rem; }}
.key {{ overflow-wrap: break-word; font-weight: bold; }}
.cell {{ margin: 0; }} .cell video, .cell img {{ width: 100%; display: block; image-rendering: pixelated; }}
figcaption, .missing {{ font-size: .8rem; color: #555; }}
pre {{ background: #fff; border: 1px solid #ddd; padding: .5rem; overflow-x: auto; }}"""
    body = f"""{_tiny_note(sample.tiny)}
<pre id="table">{html.escape(chr(10).join(table_lines(lines)))}</pre>
<p><small>s/video: warm generation seconds on one actor (model load and the slowest video left out) · PFLOP/video:
full-size count (SVD-XT; Wan, LTX: the model's configs) · PSNR, SSIM: each frame against the reference's.</small></p>
<section id="items"><div class="heads"><div></div><div><b>input</b></div>{heads}</div>
{"".join(rows)}</section>"""
    script = 'countLoaded("video", "loaded", (video) => video.readyState >= 2, "loadeddata");'
    return shell.page("svdbatch tune", style, body, script, {"videos": len(distance), "loaded": 0})
