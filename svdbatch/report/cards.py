"""The report's HTML for its items: a card per video (its poster beside the fitted input it was rendered from, its
parameters and quality signals), and the tables of failed and rejected items. Everything taken from the table is
HTML-escaped: keys and errors come from untrusted manifests."""

from __future__ import annotations

import html
from typing import Any


def relative_video(row: dict[str, Any]) -> str:
    """The link from report/index.html to the video: every video sits directly under {output}/videos/."""
    return "../videos/" + row["video_uri"].rsplit("/", 1)[-1]


def _image(kind: str, image: tuple[str, tuple[int, int]], alt: str) -> str:
    """An <img> with its size, so the grid's layout is final before images load: a ``#play=N`` link scrolls to
    where card N stays."""
    (src, (width, height)) = image
    return f'<img class="{kind}" src="{src}" alt="{alt}" width="{width}" height="{height}" loading="lazy">'


Shown = tuple[str, tuple[int, int]]  # an image's path under report/ and its size


def card(index: int, row: dict[str, Any], poster: Shown, source: Shown | None, video: str) -> str:
    label = html.escape(f"{row['key']} · v{row['variant']}")
    facts = [
        f"seed {row['seed']}",
        f"{row['width']}x{row['height']}",
        f"{row['num_frames']} frames @ {row['fps']} fps",
        f"motion {row['motion_bucket_id']}" if row.get("prompt") is None else f"prompt {row['prompt'][:60]!r}",
        *_quality(row),
    ]
    # Each fact wraps as a whole: "8 frames" or "mean motion 26.1" is never split across lines.
    details = " · ".join(f'<span class="fact">{html.escape(fact)}</span>' for fact in facts)
    missing = '<span class="input missing">input unavailable</span>'
    source_cell = _image("input", source, f"input of {label}") if source else missing
    return (
        f'<figure class="card" id="card-{index}" data-status="ok" data-video="{html.escape(video)}">'
        f'<div class="pair">{_image("poster", poster, label)}{source_cell}</div>'
        f"<figcaption><b>{label}</b><br><small>{details}</small></figcaption></figure>"
    )


def _quality(row: dict[str, Any]) -> list[str]:
    if row["motion_mean"] is None:  # a row without the quality columns (svdbatch/formats.py)
        return ["quality not measured"]
    return [
        f"mean motion {row['motion_mean']:.1f}",
        f"first frame {row['first_frame_psnr']:.1f} dB, SSIM {row['first_frame_ssim']:.2f}",
    ]


def error_rows(failed: list[dict[str, Any]]) -> str:
    """The failed items' table rows: key, variant, source, error."""
    return "".join(
        f"<tr data-status='error'><td>{html.escape(str(row['key']))}</td><td>{row['variant']}</td>"
        f"<td>{html.escape(str(row['source_uri']))}</td><td>{html.escape(str(row['error']))}</td></tr>"
        for row in failed
    )


def rejection_rows(rejected: list[dict[str, Any]]) -> str:
    """The rejected items' table rows: key, variant, a link to the video, the gate's reason."""
    return "".join(
        f"<tr data-status='rejected'><td>{html.escape(str(row['key']))}</td><td>{row['variant']}</td>"
        f'<td><a href="{html.escape(relative_video(row))}">video</a></td>'
        f"<td>{html.escape(str(row['error']))}</td></tr>"
        for row in rejected
    )


def table(head: list[str], body: str) -> str:
    """A table of items, or "none" when there is none: bare headers read like a page still loading."""
    if not body:
        return '<p class="none">none</p>'
    return f"<table><tr>{''.join(f'<th>{name}</th>' for name in head)}</tr>{body}</table>"
