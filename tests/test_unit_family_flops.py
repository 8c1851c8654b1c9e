"""Unit tests: FLOPs of full-size Wan and LTX videos counted on the meta device, checked against an independent
count of one transformer block (its matmuls and attention, written out by hand) times the depth."""

import pytest

from svdbatch.model import ltx, wan


def _attention(queries: int, keys: int, width: int) -> float:
    """Scores and weighted values: two matmuls of queries x keys x width, 2 FLOPs a multiply-add."""
    return 2 * 2 * queries * keys * width


def _linear(tokens: int, inputs: int, outputs: int) -> float:
    return 2 * tokens * inputs * outputs


def wan_block(config: dict, tokens: int, image_tokens: int) -> float:
    """Self-attention, text cross-attention (and image cross-attention for I2V), feed-forward."""
    d = config["num_attention_heads"] * config["attention_head_dim"]
    flops = 4 * _linear(tokens, d, d) + _attention(tokens, tokens, d)
    flops += 2 * _linear(tokens, d, d) + 2 * _linear(wan.TEXT_TOKENS, d, d) + _attention(tokens, wan.TEXT_TOKENS, d)
    if config.get("image_dim"):
        flops += 2 * _linear(image_tokens, d, d) + _attention(tokens, image_tokens, d)
    return flops + _linear(tokens, d, config["ffn_dim"]) + _linear(tokens, config["ffn_dim"], d)


def ltx_block(tokens: int) -> float:
    d = 32 * 64  # LTX-Video 2B: 32 heads of 64
    flops = 4 * _linear(tokens, d, d) + _attention(tokens, tokens, d)
    flops += 2 * _linear(tokens, d, d) + 2 * _linear(ltx.TEXT_TOKENS, d, d) + _attention(tokens, ltx.TEXT_TOKENS, d)
    return flops + _linear(tokens, d, 4 * d) + _linear(tokens, 4 * d, d)


@pytest.mark.parametrize(
    ("config", "spatial", "size", "depth"),
    [
        (wan.WAN21_I2V_14B, 8, (832, 480, 81), 40),
        (wan.WAN22_TI2V_5B, 16, (1280, 704, 121), 30),
    ],
    ids=["wan2.1-i2v-14b-480x832x81", "wan2.2-ti2v-5b-704x1280x121"],
)
def test_wan_transformer_step_is_one_block_times_depth(config, spatial, size, depth):
    width, height, frames = size
    tokens = ((frames - 1) // 4 + 1) * (height // spatial // 2) * (width // spatial // 2)
    counted = wan.transformer_flops(config, width, height, frames, spatial, branches=1)
    by_hand = wan_block(config, tokens, wan.IMAGE_TOKENS) * depth
    assert config["num_layers"] == depth
    assert counted == pytest.approx(by_hand, rel=0.03)  # the rest: patch embedding, timestep and text embedders


def test_ltx_transformer_step_is_one_block_times_depth():
    tokens = ((121 - 1) // 8 + 1) * (512 // 32) * (704 // 32)
    counted = ltx.transformer_flops(ltx.LTX_2B, 704, 512, 121, branches=1)
    assert counted == pytest.approx(ltx_block(tokens) * 28, rel=0.03)


def test_guidance_doubles_the_transformer_and_not_the_decode():
    on = ltx.video_flops(ltx.LTX_2B, ltx.LTX_VAE, 704, 512, 121, steps=50, guidance_scale=3.0)
    off = ltx.video_flops(ltx.LTX_2B, ltx.LTX_VAE, 704, 512, 121, steps=50, guidance_scale=1.0)
    assert on["transformer_step"] == pytest.approx(2 * off["transformer_step"], rel=1e-6)
    assert on["vae_decode"] == off["vae_decode"] > 0
    assert on["total"] == on["transformer_step"] * 50 + on["vae_decode"]
