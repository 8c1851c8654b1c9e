"""An item's fingerprint: what shapes its video, hashed. A changed fingerprint renders the item again.

The fingerprint is the first 32 hex digits of ``sha256`` of ``json.dumps(shaping, sort_keys=True)``: the model and
its weights, the render parameters (for Wan and LTX also the prompts, guidance and shift), the seed, the image (URI
and version), the encoding, and the step cache and sampler where they differ from the model's own way. Items that
share a spec, parameters and weights differ only in their seed and image, so ``Fingerprint`` writes the JSON of the
rest once and each item adds its three values.
"""

from __future__ import annotations

import hashlib
import json
from json.encoder import encode_basestring_ascii
from typing import Any

from svdbatch.items.metadata import RENDER_COLUMNS
from svdbatch.model.families import prompted
from svdbatch.spec.config import JobSpec
from svdbatch.spec.render import PROMPTED_PARAMS

# The shaping fields each item has its own value of. Their names sort next to each other, so the JSON text is the
# shared fields before them, these three, then the shared fields after them.
PER_ITEM = ("seed", "source", "source_version")


def shared_shaping(spec: JobSpec, params: dict[str, Any], weights: Any) -> dict[str, Any]:
    """The shaping fields items of one spec, render parameters and model weights have in common."""
    shaping = {
        "model": [spec.model.source, spec.model.variant, spec.model.dtype],
        "weights": weights,
        "params": [params[name] for name in RENDER_COLUMNS],
        "video": spec.video.model_dump(mode="json"),
    }
    # Options and families shape it only where used: an SVD item's stays fingerprint 2 (svdbatch/formats.py).
    if prompted(params.get("model_family")):
        shaping["family"] = [params["model_family"], *(params[name] for name in PROMPTED_PARAMS)]
    if spec.model.step_cache.enabled:
        shaping["step_cache"] = spec.model.step_cache.model_dump()
    if not spec.model.scheduler.is_default:
        shaping["scheduler"] = spec.model.scheduler.model_dump()
    return shaping


class Fingerprint:
    """The fingerprints of items sharing a spec, render parameters and model weights.

    ``json.dumps(d, sort_keys=True)`` is ``{`` + ``", "``-joined ``"name": value`` pairs in name order + ``}``,
    each value written as ``json.dumps(value, sort_keys=True)`` writes it alone; the per-item pairs are written
    the same way, without a call to ``json.dumps`` per item.
    """

    def __init__(self, spec: JobSpec, params: dict[str, Any], weights: Any):
        shared = shared_shaping(spec, params, weights)
        names = sorted([*shared, *PER_ITEM])
        at = names.index(PER_ITEM[0])
        assert tuple(names[at : at + len(PER_ITEM)]) == PER_ITEM, names  # the per-item names sort together
        pairs = {name: f"{_json_text(name)}: {json.dumps(value, sort_keys=True)}" for name, value in shared.items()}
        self.head = "{" + "".join(pairs[name] + ", " for name in names[:at])
        self.tail = "".join(", " + pairs[name] for name in names[at + len(PER_ITEM) :]) + "}"

    def __call__(self, seed: int, image: str) -> str:
        """The fingerprint of the item with this seed and this image (``image_json``)."""
        return hashlib.sha256(f'{self.head}"seed": {seed}, {image}{self.tail}'.encode()).hexdigest()[:32]


def image_json(source: str, source_version: str | None) -> str:
    """The image's two per-item pairs as ``Fingerprint`` writes them (once for all the variants of a row)."""
    return f'"source": {_json_text(source)}, "source_version": {_json_text(source_version)}'


def _json_text(value: str | None) -> str:
    """``json.dumps`` of a string or None, without its per-call overhead."""
    return "null" if value is None else encode_basestring_ascii(value)
