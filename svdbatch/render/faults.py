"""Which generation errors heal and how: out of memory shrinks the work, a poisoned CUDA context ends the actor.

After a CUDA error such as an illegal memory access or a device-side assert, every later call in the same process
fails too; only a fresh process (Ray restarts the actor and retries its items) recovers. Out of memory is local to
one call: the batch is split first, then fewer frames are decoded at once, and only then the item is an error row.
"""

from __future__ import annotations

from dataclasses import dataclass

from svdbatch.items.params import effective_decode_chunk

MAX_ACTORS_LOST = 3  # fresh actors one batch may kill before its items become error rows


def is_out_of_memory(error: BaseException) -> bool:
    return type(error).__name__ == "OutOfMemoryError" or "out of memory" in str(error).lower()


def is_device_lost(error: BaseException) -> bool:
    """A CUDA error that poisons the context (out of memory is not one: the next call can succeed)."""
    text = str(error)
    return not is_out_of_memory(error) and (
        "CUDA error" in text
        or "illegal memory access" in text
        or "device-side assert" in text
        or type(error).__name__ == "AcceleratorError"
    )


@dataclass(frozen=True)
class Retry:
    """The next attempt after out of memory: split the batch in two, or decode ``decode_chunk_size`` frames at once."""

    split: bool
    decode_chunk_size: int


def after_out_of_memory(batch: int, decode_chunk_size: int, num_frames: int) -> Retry | None:
    """Split the batch first, then halve decode_chunk_size (kept a divisor of num_frames); None: nothing left."""
    if batch > 1:
        return Retry(split=True, decode_chunk_size=decode_chunk_size)
    if decode_chunk_size > 1:
        return Retry(split=False, decode_chunk_size=effective_decode_chunk(num_frames, decode_chunk_size // 2))
    return None
