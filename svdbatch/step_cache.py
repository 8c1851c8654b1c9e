"""DeepCache-style step caching for SVD's UNet: on cached steps only the outermost level of the UNet runs.

Neighbouring denoising steps produce nearly the same deep (low-resolution) UNet features (DeepCache, Ma et al.
2023). A full step keeps the input of the last up block; the cached steps after it recompute only the
high-resolution skip branch from the current latents (conv_in, the first down block, the last up block, the output
head) and take the deep part from that kept tensor. The SVD pipeline calls the UNet once per step on its whole batch
(both CFG halves of every item), so one kept tensor per pipeline call serves every item, row by row, and the
per-item generators are untouched: a video still depends only on its own seed and parameters.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from svdbatch.config import StepCacheSpec


class _Cache:
    """The state of one pipeline call: which step comes next and the deep features of the last full step."""

    def __init__(self, unet, full_forward, cache: StepCacheSpec):
        self.unet = unet
        self.full_forward = full_forward
        self.cache = cache
        self.step = 0
        self.deep: torch.Tensor | None = None

    def keep(self, _module, _inputs, output) -> None:
        self.deep = output

    def forward(self, sample, timestep, encoder_hidden_states, added_time_ids, return_dict: bool = True):
        step, self.step = self.step, self.step + 1
        if self.cache.is_full_step(step):
            return self.full_forward(sample, timestep, encoder_hidden_states, added_time_ids, return_dict=return_dict)
        return self.shallow(sample, timestep, encoder_hidden_states, added_time_ids, return_dict)

    def shallow(self, sample, timestep, encoder_hidden_states, added_time_ids, return_dict: bool):
        """The outermost level of diffusers' UNetSpatioTemporalConditionModel.forward, deep features from the cache."""
        from diffusers.models.unets.unet_spatio_temporal_condition import UNetSpatioTemporalConditionOutput

        unet = self.unet
        batch, frames = sample.shape[:2]
        timesteps = torch.as_tensor(timestep, device=sample.device).reshape(-1).expand(batch)
        emb = unet.time_embedding(unet.time_proj(timesteps).to(dtype=sample.dtype))
        time_embeds = unet.add_time_proj(added_time_ids.flatten()).reshape((batch, -1)).to(emb.dtype)
        emb = (emb + unet.add_embedding(time_embeds)).repeat_interleave(frames, dim=0)
        context = encoder_hidden_states.repeat_interleave(frames, dim=0)
        indicator = torch.zeros(batch, frames, dtype=sample.dtype, device=sample.device)
        hidden = unet.conv_in(sample.flatten(0, 1))
        down, up = unet.down_blocks[0], unet.up_blocks[-1]
        down_args = {"temb": emb, "image_only_indicator": indicator}
        if getattr(down, "has_cross_attention", False):
            down_args["encoder_hidden_states"] = context
        _, skips = down(hidden_states=hidden, **down_args)
        # The last up block takes the first skip tensors: conv_in's output and the first down block's resnets.
        skips = ((hidden,) + tuple(skips))[: len(up.resnets)]
        up_args = {"temb": emb, "res_hidden_states_tuple": skips, "image_only_indicator": indicator}
        if getattr(up, "has_cross_attention", False):
            up_args["encoder_hidden_states"] = context
        hidden = up(hidden_states=self.deep, **up_args)
        hidden = unet.conv_out(unet.conv_act(unet.conv_norm_out(hidden)))
        out = hidden.reshape(batch, frames, *hidden.shape[1:])
        return UNetSpatioTemporalConditionOutput(sample=out) if return_dict else (out,)


@contextlib.contextmanager
def cached_steps(unet, cache: StepCacheSpec) -> Iterator[None]:
    """Cache deep features within one pipeline call; outside it (and with the cache off) the UNet is untouched.

    ``unet`` is the pipeline's UNet, possibly wrapped by torch.compile (its full steps then stay compiled).
    """
    if not cache.enabled:
        yield
        return
    model = getattr(unet, "_orig_mod", unet)
    own_forward = unet.__dict__.get("forward")  # torch.compile and CPU offload set an instance forward
    state = _Cache(model, unet.forward, cache)
    hook = model.up_blocks[-2].register_forward_hook(state.keep)
    unet.forward = state.forward
    try:
        yield
    finally:
        hook.remove()
        if own_forward is None:
            del unet.forward
        else:
            unet.forward = own_forward
