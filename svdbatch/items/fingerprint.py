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
    if prompted(params.get("model_family")):  # absent for SVD, whose fingerprints predate the other families
        shaping["family"] = [params["model_family"], *(params[name] for name in PROMPTED_PARAMS)]
    if spec.model.step_cache.enabled:  # absent when off: a spec that does not use it shapes what it always did
        shaping["step_cache"] = spec.model.step_cache.model_dump()
    if not spec.model.scheduler.is_default:  # likewise: the model's own sampler is the default way
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


def legacy_fingerprint(item: dict[str, Any], spec: JobSpec) -> str:
    """The fingerprint of versions before identities (0.1.0 up to 9a19628): model name, params, seed, encoding and
    image URI. Rows they committed carry it and no model or source identity; an item that still matches it is done,
    so an upgrade renders nothing again (their weights and images can no longer be checked, only new rows are)."""
    shaping = {
        "model": [spec.model.source, spec.model.variant, spec.model.dtype],
        "params": [item[name] for name in RENDER_COLUMNS],
        "seed": item["seed"],
        "video": spec.video.model_dump(mode="json"),
        "source": item["source_uri"],
    }
    return hashlib.sha256(json.dumps(shaping, sort_keys=True).encode()).hexdigest()[:32]
