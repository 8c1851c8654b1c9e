"""DeepCache-style step caching for SVD's UNet: on cached steps only the outermost level of the UNet runs.

Neighbouring denoising steps produce nearly the same deep (low-resolution) UNet features (DeepCache, Ma et al.
2023). A full step keeps the input of the last up block; the cached steps after it recompute only the
high-resolution skip branch from the current latents (conv_in, the first down block, the last up block, the output
head) and take the deep part from that kept tensor (``internals.unet_outer_level``: a copy of that part of diffusers'
forward, checked against the installed diffusers by a test). The SVD pipeline calls the UNet once per step on its
whole batch (both CFG halves of every item), so one kept tensor per pipeline call serves every item, row by row, and
the per-item generators are untouched: a video still depends only on its own seed and parameters.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Iterator

import torch

from svdbatch.model import internals
from svdbatch.spec.config import StepCacheSpec


class _Cache:
    """One per UNet, its hook registered once (so a compiled UNet keeps its graph); reset by every pipeline call."""

    def __init__(self, unet):
        self.unet = None  # set only during a call, so the registry below never keeps a UNet alive
        self.active = False
        self.full_forward = None
        self.cache = StepCacheSpec()
        self.step = 0
        self.deep: torch.Tensor | None = None
        internals.deep_block(unet).register_forward_hook(self.keep)

    def start(self, unet, full_forward, cache: StepCacheSpec) -> None:
        self.unet, self.full_forward, self.cache, self.step, self.active = unet, full_forward, cache, 0, True

    def stop(self) -> None:
        self.unet, self.full_forward, self.deep, self.active = None, None, None, False  # frees the kept tensor

    def keep(self, _module, _inputs, output) -> None:
        if self.active:
            self.deep = output

    def forward(self, sample, timestep, encoder_hidden_states, added_time_ids, return_dict: bool = True):
        step, self.step = self.step, self.step + 1
        if self.cache.is_full_step(step):
            return self.full_forward(sample, timestep, encoder_hidden_states, added_time_ids, return_dict=return_dict)
        return internals.unet_outer_level(
            self.unet, self.deep, sample, timestep, encoder_hidden_states, added_time_ids, return_dict
        )


_CACHES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


@contextlib.contextmanager
def cached_steps(unet, cache: StepCacheSpec) -> Iterator[None]:
    """Cache deep features within one pipeline call; outside it (and with the cache off) the UNet is untouched.

    ``unet`` is the pipeline's UNet, possibly wrapped by torch.compile: its full steps then run compiled, the cached
    steps eagerly.
    """
    if not cache.enabled:
        yield
        return
    model = internals.uncompiled(unet)
    own_forward = unet.__dict__.get("forward")  # torch.compile and CPU offload set an instance forward
    state = _CACHES.get(model)
    if state is None:
        state = _CACHES[model] = _Cache(model)
    state.start(model, unet.forward, cache)
    unet.forward = state.forward
    try:
        yield
    finally:
        state.stop()
        if own_forward is None:
            del unet.forward
        else:
            unet.forward = own_forward
