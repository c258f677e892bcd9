"""SpotEdit's selector at 2048² (issue 31): Qwen's causal 3D convolutions on one frame run as exact 2D ones, and
the roofline prices a scored step (the decoder prefix with its quadratic one-head mid-block attention)."""
import pytest
import torch

from actors.families.qwen_image_edit.single_frame import single_frame_convs
from actors.loading import load_pipeline
from costs.kernels import ATTENTION, LINEAR
from costs.selector_kernels import selector_kernels


def _stock_features(pipe, z):
    vae, dec = pipe.vae, pipe.vae.decoder
    mean = torch.tensor(vae.config.latents_mean).view(1, -1, 1, 1, 1)
    std = torch.tensor(vae.config.latents_std).view(1, -1, 1, 1, 1)
    f0 = dec.conv_in(vae.post_quant_conv(z * std + mean))
    f1 = dec.mid_block(f0, None, [0])
    f2 = dec.up_blocks[0](f1, None, [0])
    return [f[:, :, -1] for f in (f0, f1, f2)]


def test_qwen_single_frame_convolutions_are_exact_and_removed_afterwards():
    from actors.families.qwen_image_edit.vae import decoder_features

    pipe = load_pipeline("tiny-qwen-image-edit", device="cpu")
    z = torch.randn(1, pipe.vae.config.z_dim, 1, 24, 32, generator=torch.Generator().manual_seed(0))
    fast, stock = decoder_features(pipe, z), _stock_features(pipe, z)
    for a, b in zip(fast, stock):
        assert a.shape == b.shape
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    assert not any("forward" in m.__dict__ for m in pipe.vae.modules())
    video = torch.randn(1, pipe.vae.config.z_dim, 3, 8, 8)   # more than one frame: the stock forward runs
    with single_frame_convs(pipe.vae):
        out = pipe.vae.decoder.conv_in(video)
    torch.testing.assert_close(out, pipe.vae.decoder.conv_in(video))


def test_the_selector_s_mid_block_attention_is_quadratic_as_the_issue_counts():
    for size, tflop in ((1024, 0.55), (2048, 8.8)):
        attn = sum(k.flops for k in selector_kernels("flux", size) if k.kind == ATTENTION)
        assert attn / 1e12 == pytest.approx(tflop, rel=0.03)
    stock = sum(k.flops for k in selector_kernels("qwen", 2048, exact_2d=False) if k.kind == LINEAR)
    exact = sum(k.flops for k in selector_kernels("qwen", 2048, exact_2d=True) if k.kind == LINEAR)
    # every causal 3×3×3 convolution does 3× its 2D work; the projections and the 2D upsampling conv do not
    assert 2.0 < stock / exact < 3.0
