"""What follows from an item's key and variant alone: its seed, its identity across runs and where its video lives.

Seed rule (docs/guides/dataset-augmentation.md): ``seed = derive_seed(base_seed, key, variant)`` -- the first 8 bytes of
``sha256("svdbatch-seed-v1" NUL base_seed NUL key NUL variant)`` as a big-endian integer with the top bit cleared
(it fits Parquet's int64 and ``torch.Generator.manual_seed``). A row that gives its own ``seed`` gets ``(seed +
variant) mod 2**63`` instead. Nothing depends on where a row sits in a file, block, batch or actor.
"""

from __future__ import annotations

import hashlib
import re

from svdbatch.spec.config import SEED_MASK

MAX_SLUG = 80
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def derive_seed(base_seed: int, key: str, variant: int) -> int:
    digest = hashlib.sha256(f"svdbatch-seed-v1\0{base_seed}\0{key}\0{variant}".encode()).digest()
    return int.from_bytes(digest[:8], "big") & SEED_MASK


def item_seed(base_seed: int, key: str, variant: int, row_seed: int | None) -> int:
    """An item's seed: derived from the job's, or the row's own ``seed`` plus the variant."""
    return derive_seed(base_seed, key, variant) if row_seed is None else (row_seed + variant) & SEED_MASK


def item_id(key: str, variant: int) -> str:
    """The identity of an item across runs."""
    return f"{key}\0{variant}"


def safe_key(key: str) -> str:
    """A filesystem- and URL-safe name that is unique per key: a readable slug plus a hash of the exact key.

    The slug alone is not injective ("a/b" and "a_b" collide), so the hash suffix carries uniqueness; the slug only
    makes the file findable by eye.
    """
    slug = _UNSAFE.sub("_", key).strip("._-")[:MAX_SLUG] or "key"
    digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return f"{slug}-{digest}"


def video_path(safe: str, variant: int) -> str:
    """The video's key under the output for a key's ``safe_key`` (computed once for all its variants)."""
    return f"videos/{safe}_v{variant:04d}.mp4"


def video_key(key: str, variant: int) -> str:
    return video_path(safe_key(key), variant)


def videos_prefix(output_url: str) -> str:
    """What a video's key is appended to: the output's URL and a slash."""
    return f"{output_url.rstrip('/')}/"


def video_uri(output_url: str, key: str, variant: int) -> str:
    """Where an item's video is written (and deleted, when its key leaves the manifest)."""
    return videos_prefix(output_url) + video_key(key, variant)
