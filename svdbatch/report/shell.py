"""The HTML shell of the pages svdbatch writes (``svdbatch report``'s gallery and ``svdbatch tune``'s comparison): the
page skeleton, the style they share, the note over the tiny model's videos, and the script that counts loaded media
into a ``data-`` attribute of the body (what the browser tests wait on). Static pages: no network, no framework."""

from __future__ import annotations

import html

STYLE = """body { font-family: system-ui, sans-serif; margin: 1.5rem; background: #fafafa; color: #222; }
.note { background: #fff4d6; border: 1px solid #e8c66a; border-radius: 6px; padding: .5rem .8rem; }"""
# countLoaded(selector, key, ready, event): how many selected elements have loaded, in document.body.dataset[key].
COUNT_LOADED = """function countLoaded(selector, key, ready, event) {
  let loaded = 0;
  document.querySelectorAll(selector).forEach((element) => {
    const count = () => { if (ready(element)) document.body.dataset[key] = ++loaded; };
    if (ready(element)) count(); else element.addEventListener(event, count, { once: true });
  });
}"""


def page(title: str, style: str, body: str, script: str, data: dict[str, int]) -> str:
    """A whole page: ``title`` as its title and heading, the shared style then ``style``, ``body``, and the shared
    script then ``script``; ``data`` are the body's ``data-`` attributes (counts the scripts update)."""
    attributes = " ".join(f'data-{name}="{value}"' for name, value in data.items())
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
{STYLE}
{style}
</style></head>
<body {attributes}>
<h1>{html.escape(title)}</h1>
{body}
<script>
{COUNT_LOADED}
{script}
</script></body></html>
"""


def tiny_note(models: str, what: str) -> str:
    """The line at the top when the videos come from embedded tiny models (``models``, their names): random weights
    make noise, by design. ``what`` says what they are and what to do instead."""
    return f'<p id="model-note" class="note">These videos come from <b>{html.escape(models)}</b>, {what}</p>'
