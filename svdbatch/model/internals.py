"""Every use of a diffusers or torch internal in svdbatch, one function each: the scheduler's step counter (the
consistency sampler), torch.compile's wrapped module, the copy of the outermost level of SVD's UNet forward pass (the
step cache), and the private keys of diffusers' configs (the pipeline class a model folder names).

Neither library promises these across releases. Each was checked on diffusers 0.42.1 and torch 2.13.0
(``DIFFUSERS_CHECKED``, ``TORCH_CHECKED``, written again on each function), pyproject.toml accepts only the diffusers
minor release tested, and tests/test_unit_model_internals.py inspects every attribute and source they rely on, so an
upgrade that moves one fails that test by name instead of quietly changing the frames (a step index that no longer
advances repeats a noise level; a UNet forward that changed makes the cached steps compute something else).
"""

from __future__ import annotations

DIFFUSERS_CHECKED = "0.42.1"
TORCH_CHECKED = "2.13.0"
# sha256 of inspect.getsource(UNetSpatioTemporalConditionModel.forward) on diffusers 0.42.1: the function that
# ``unet_outer_level`` copies part of.
PIPELINE_CLASS_KEY = "_class_name"  # model_index.json's key for its pipeline class (pipeline_class_name)
UNET_FORWARD_SHA256 = "968edca6b909fb4555bb8a8570ff96ef665910b79f3d8f376096c333a328eda1"


def init_step_index(scheduler, timestep) -> None:
    """Set a scheduler's step counter from the timestep of the first ``step`` call, as diffusers' own ``step`` does.

    Checked on diffusers 0.42.1: EDMEulerScheduler (and every Karras-sigma scheduler) has ``_init_step_index(
    timestep)``, which sets ``_step_index`` (read by the public ``step_index``) from ``begin_index`` or the timestep's
    position in ``timesteps``."""
    scheduler._init_step_index(timestep)


def advance_step(scheduler) -> None:
    """Count one step done, as the end of diffusers' own ``step`` does. Checked on diffusers 0.42.1:
    ``_step_index``, the counter behind the public ``step_index`` property."""
    scheduler._step_index += 1


def uncompiled(module):
    """The module itself under a ``torch.compile`` wrapper (the module when it is not compiled), where the hooks and
    caches keyed by module belong. Checked on torch 2.13.0: ``torch.compile(module)`` returns an
    ``torch._dynamo.eval_frame.OptimizedModule`` that holds the module as ``_orig_mod``."""
    return getattr(module, "_orig_mod", module)


def deep_block(unet):
    """The block whose output is the deep features a cached step reuses: the input of the UNet's last up block.
    Checked on diffusers 0.42.1: UNetSpatioTemporalConditionModel.forward runs ``up_blocks`` in order, each one's
    output the next one's ``hidden_states``."""
    return unet.up_blocks[-2]


def unet_outer_level(unet, deep, sample, timestep, encoder_hidden_states, added_time_ids, return_dict: bool):
    """UNetSpatioTemporalConditionModel.forward at its outermost, full-resolution level only (conv_in, the first
    down block, the last up block, the output head), with ``deep`` (``deep_block``'s output of an earlier step) in
    place of everything below it.

    Checked on diffusers 0.42.1: a copy of that forward's time embedding (time_proj, time_embedding, add_time_proj,
    add_embedding), its frame flattening and image_only_indicator, and the calls of ``down_blocks[0]`` and
    ``up_blocks[-1]`` (``has_cross_attention`` blocks take encoder_hidden_states); the output as
    ``UNetSpatioTemporalConditionOutput``. The test compares the forward's source with the one copied here
    (``UNET_FORWARD_SHA256``)."""
    import torch
    from diffusers.models.unets.unet_spatio_temporal_condition import UNetSpatioTemporalConditionOutput

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
    hidden = up(hidden_states=deep, **up_args)
    hidden = unet.conv_out(unet.conv_act(unet.conv_norm_out(hidden)))
    out = hidden.reshape(batch, frames, *hidden.shape[1:])
    return UNetSpatioTemporalConditionOutput(sample=out) if return_dict else (out,)


def pipeline_class_name(index: dict) -> str | None:
    """The pipeline class a diffusers folder's model_index.json names (None when it names none). Checked on diffusers
    0.42.1: ConfigMixin writes the class under ``_class_name`` (``to_json_string``), and
    DiffusionPipeline.from_pretrained reads it there."""
    return index.get(PIPELINE_CLASS_KEY)


def constructor_config(module) -> dict:
    """A diffusers model's config as its constructor's arguments: without the private keys diffusers keeps beside them.
    Checked on diffusers 0.42.1: ``_class_name``, ``_diffusers_version``, ``_name_or_path``, ``_use_default_values``
    and the like all start with an underscore; no constructor argument does."""
    return {name: value for name, value in dict(module.config).items() if not name.startswith("_")}
