"""The FLOP model (costs/flops.py): hand counts of one layer of each real architecture, torch's own FLOP
counter on tiny transformers of the real classes, and the properties a speedup needs."""
import dataclasses
import inspect
import math
from types import SimpleNamespace

import pytest
import torch
from diffusers import FluxTransformer2DModel, QwenImageTransformer2DModel
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

import costs
from actors.families.flux_kontext.architecture import FLUX_KONTEXT_DEV_CONFIG
from actors.families.qwen_image_edit.architecture import QWEN_IMAGE_EDIT_CONFIG, edit_plus_text_tokens
from costs import flops

FLUX, FLUX_TEXT = costs.real("FLUX.1-Kontext-dev").arch, costs.real("FLUX.1-Kontext-dev").text()
QWEN, QWEN_TEXT = costs.real("Qwen-Image-Edit").arch, costs.real("Qwen-Image-Edit").text()


def test_real_configs_match_the_published_shapes():
    assert (FLUX.dim, FLUX.dual_layers, FLUX.single_layers, FLUX.text_dim) == (3072, 19, 38, 4096)
    assert (QWEN.dim, QWEN.dual_layers, QWEN.single_layers, QWEN.text_dim) == (3072, 60, 0, 3584)
    assert FLUX_TEXT == (512,) and len(QWEN_TEXT) == 2   # Qwen: true CFG, two calls per step
    # diffusers' defaults are the real checkpoints' configs
    for cls, cfg in ((FluxTransformer2DModel, FLUX_KONTEXT_DEV_CONFIG),
                     (QwenImageTransformer2DModel, QWEN_IMAGE_EDIT_CONFIG)):
        params = inspect.signature(cls.__init__).parameters
        for key in ("num_layers", "attention_head_dim", "num_attention_heads", "joint_attention_dim", "in_channels"):
            assert params[key].default == cfg[key], (cls.__name__, key)


def _dual_layer_by_hand(d: int, text: int, image: int) -> int:
    """One dual-stream layer (Flux `FluxTransformerBlock`, Qwen `QwenImageTransformerBlock`), in FLOPs.

    Counted: per stream, q, k, v and output projections (d×d each) and the MLP d→4d→d; attention Q·Kᵀ and
    A·V over the joint sequence (all heads together: heads × head_dim = d); the two AdaLN modulation linears
    d→6d on the one conditioning vector. Not counted: norms, qk-norm, RoPE, GELU, softmax, bias adds.
    1 multiply-add = 2 FLOPs.
    """
    n = text + image
    projections = 4 * d * d * image + 4 * d * d * text
    mlp = (d * 4 * d + 4 * d * d) * image + (d * 4 * d + 4 * d * d) * text
    attention = n * n * d + n * n * d
    modulation = 2 * (d * 6 * d)
    return 2 * (projections + mlp + attention + modulation)


def _single_layer_by_hand(d: int, text: int, image: int) -> int:
    """One Flux single-stream layer (`FluxSingleTransformerBlock`) over the concatenated sequence, in FLOPs:
    q, k, v (d×d each), proj_mlp d→4d, proj_out over [attention out, MLP] (5d→d), Q·Kᵀ and A·V, and the
    AdaLN-single modulation linear d→3d."""
    n = text + image
    return 2 * (3 * d * d * n + d * 4 * d * n + 5 * d * d * n + 2 * n * n * d + d * 3 * d)


@pytest.mark.parametrize("image", [8192, 32768])   # 1024² and 2048² Kontext: noisy + source tokens
def test_one_flux_layer_of_each_kind_by_hand(image):
    assert flops.layer_flops(FLUX, 0, 512 + image, 512 + image).total == _dual_layer_by_hand(3072, 512, image)
    assert flops.layer_flops(FLUX, 19, 512 + image, 512 + image).total == _single_layer_by_hand(3072, 512, image)


def test_one_qwen_layer_by_hand():
    text, image = QWEN_TEXT[0], 8192
    assert flops.layer_flops(QWEN, 0, text + image, text + image).total == _dual_layer_by_hand(3072, text, image)
    assert flops.layer_flops(QWEN, 59, text + image, text + image).total == _dual_layer_by_hand(3072, text, image)


def _tiny_flux():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return FluxTransformer2DModel(patch_size=1, in_channels=64, num_layers=2, num_single_layers=2,
                                      attention_head_dim=16, num_attention_heads=2, joint_attention_dim=32,
                                      pooled_projection_dim=32, guidance_embeds=True, axes_dims_rope=(4, 6, 6)).eval()


def _counted(fn) -> int:
    """FLOPs as torch counts the ops that really run. Attention goes through SDPA's math backend, which
    torch decomposes into the two batched matmuls Q·Kᵀ and A·V: the counter then sees plain matmuls, so the
    check does not depend on whether this torch has a FLOP formula for the fused CPU kernel (torch 2.14
    counts none for it)."""
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


@pytest.mark.parametrize("kept", [20, 9, 0])
def test_whole_flux_call_equals_torch_flop_counter(kept):
    """Embedders, every layer and the output head, as torch counts them (addmm + SDPA), with dropped tokens."""
    model, text, noisy = _tiny_flux(), 7, 20
    image = noisy + kept
    counted = _counted(lambda: model(
        hidden_states=torch.randn(1, image, 64), encoder_hidden_states=torch.randn(1, text, 32),
        pooled_projections=torch.randn(1, 32), timestep=torch.tensor([0.5]), img_ids=torch.zeros(image, 3),
        txt_ids=torch.zeros(text, 3), guidance=torch.tensor([3.5])))
    assert flops.call_flops(flops.arch_of(model), text, noisy, 20, kept).total == counted


def test_whole_qwen_call_equals_torch_flop_counter():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = QwenImageTransformer2DModel(patch_size=2, in_channels=64, out_channels=16, num_layers=2,
                                            attention_head_dim=16, num_attention_heads=2, joint_attention_dim=32,
                                            axes_dims_rope=(4, 6, 6)).eval()
    text = 7
    counted = _counted(lambda: model(
        hidden_states=torch.randn(1, 40, 64), encoder_hidden_states=torch.randn(1, text, 32),
        encoder_hidden_states_mask=torch.ones(1, text), timestep=torch.tensor([0.5]),
        img_shapes=[[(1, 4, 5), (1, 4, 5)]], return_dict=False))
    assert flops.call_flops(flops.arch_of(model), text, 20, 20).total == counted


def test_from_layer_matches_the_routed_transformer():
    """ToPi's exempt layers: the model's own routing hooks gather the kept tokens at block K."""
    from actors.routing import Routing, routed_blocks

    model, text, noisy, kept = _tiny_flux(), 7, 20, torch.tensor([1, 4, 5, 11, 19])
    routing = Routing(family="flux", num_noisy=noisy)
    routing.set(torch.cat([torch.arange(noisy), kept + noisy]), from_layer=2)
    with routed_blocks(model, routing):
        counted = _counted(lambda: model(
            hidden_states=torch.randn(1, noisy + 20, 64), encoder_hidden_states=torch.randn(1, text, 32),
            pooled_projections=torch.randn(1, 32), timestep=torch.tensor([0.5]),
            img_ids=torch.zeros(noisy + 20, 3), txt_ids=torch.zeros(text, 3), guidance=torch.tensor([3.5])))
    assert flops.call_flops(flops.arch_of(model), text, noisy, 20, len(kept), from_layer=2).total == counted


def _trace(noisy: int, keeps: list[int], **extra) -> list[SimpleNamespace]:
    return [SimpleNamespace(noisy=noisy, total=noisy, kept=k, from_layer=extra.get("from_layer", 0),
                            active=extra.get("active")) for k in keeps]


def test_no_drop_is_ratio_one_and_more_drop_is_faster():
    for arch, text in ((FLUX, FLUX_TEXT), (QWEN, QWEN_TEXT)):
        assert flops.predicted_speedup(arch, _trace(4096, [4096] * 4), text) == 1.0
        ratios = [flops.predicted_speedup(arch, _trace(4096, [k] * 4), text) for k in (4096, 3000, 2048, 0)]
        assert ratios == sorted(ratios) and ratios[-1] > ratios[0]
        # from_layer past the last layer: every layer saw every token; only proj_out ran on fewer rows
        assert flops.predicted_speedup(arch, _trace(4096, [0] * 4, from_layer=arch.num_layers), text) \
            == pytest.approx(1.0, abs=1e-4)
        # exempting layers costs speed
        assert flops.predicted_speedup(arch, _trace(4096, [0] * 4, from_layer=10), text) < ratios[-1]


def test_larger_images_gain_more_from_the_same_keep_ratio():
    # attention grows with the square of the sequence: the paper's "gains grow with resolution"
    small = flops.predicted_speedup(FLUX, _trace(4096, [1024] * 4), FLUX_TEXT)
    large = flops.predicted_speedup(FLUX, _trace(16384, [4096] * 4), FLUX_TEXT)
    assert large > small > 1


def test_active_queries_price_only_what_is_computed():
    """SpotEdit: queries, projections and MLP for text + active noisy tokens (+ source tokens unless the
    condition image is cached); keys over text + every noisy token + the source tokens."""
    d, text, noisy, active = FLUX.dim, 512, 4096, 1000
    cached = flops.call_flops(FLUX, text, noisy, noisy, active=active, source_cached=True)
    assert cached.attention == FLUX.num_layers * 2 * 2 * (text + active) * (text + noisy + noisy) * d
    recomputed = flops.call_flops(FLUX, text, noisy, noisy, active=active)
    assert recomputed.attention == FLUX.num_layers * 2 * 2 * (text + active + noisy) * (text + noisy + noisy) * d
    full = flops.call_flops(FLUX, text, noisy, noisy)
    assert cached.total < recomputed.total < full.total
    with pytest.raises(ValueError, match="later layer"):
        flops.call_flops(FLUX, text, noisy, noisy, active=active, from_layer=3)


def test_active_rows_match_the_routed_transformer():
    """Active noisy tokens and the source tokens routed from block 0 (no K/V cache: the others are absent)."""
    from actors.routing import Routing, routed_blocks

    model, text, noisy, source = _tiny_flux(), 7, 20, 20
    active = torch.tensor([0, 3, 4, 8, 15, 16])
    routing = Routing(family="flux", num_noisy=noisy)
    routing.set(torch.cat([active, torch.arange(source) + noisy]), from_layer=0)
    with routed_blocks(model, routing):
        counted = _counted(lambda: model(
            hidden_states=torch.randn(1, noisy + source, 64), encoder_hidden_states=torch.randn(1, text, 32),
            pooled_projections=torch.randn(1, 32), timestep=torch.tensor([0.5]),
            img_ids=torch.zeros(noisy + source, 3), txt_ids=torch.zeros(text, 3), guidance=torch.tensor([3.5])))
    priced = flops.call_flops(flops.arch_of(model), text, noisy, source, active=len(active),
                              keys=len(active) + source)
    assert priced.total == counted


def test_step_without_noisy_count_is_refused():
    with pytest.raises(ValueError, match="noisy"):
        flops.step_flops(FLUX, SimpleNamespace(noisy=0, total=4, kept=4), FLUX_TEXT)


# --- several reference images (Qwen-Image-Edit-Plus, Sparse Context) ---------------------------------------

def _qwen_call_by_hand(arch: flops.Arch, text: int, image: int) -> int:
    """One whole Qwen-Image call on `text` + `image` tokens, in FLOPs: every layer as above, the image and text
    embedders (in_channels→d, joint_attention_dim→d), the timestep MLP (256→d→d), norm_out's AdaLN (d→2d) and
    proj_out (d→patch²·out) on every image row."""
    d = arch.dim
    layers = arch.num_layers * _dual_layer_by_hand(d, text, image)
    embed = 2 * (image * arch.in_channels * d + text * arch.text_dim * d + 256 * d + d * d)
    head = 2 * (d * 2 * d + image * d * arch.out_channels)
    return layers + embed + head


def test_kept_tokens_follow_the_policy_budget_per_reference():
    assert flops.kept_per_reference([16, 64, 64], 0.25) == [4, 16, 16]
    assert flops.kept_per_reference([10, 10, 10], [0.5, 0.15]) == [5, 2, 2]   # ⌈1.5⌉, last fraction repeated
    trace = flops.reference_trace(20, [16, 64, 64], 0.1, steps=5, warmup=2)
    assert [(s.noisy, s.total, s.kept) for s in trace] == [(20, 144, 144)] * 2 + [(20, 144, 2 + 7 + 7)] * 3
    with pytest.raises(ValueError):
        flops.reference_trace(20, [16], 0.1, steps=2, warmup=3)


@pytest.mark.parametrize("references,keep", [(1, 0.25), (3, 0.25), (3, 0.1)])
def test_multi_reference_speedup_by_hand(references, keep):
    """Sequence = text + noisy + Σ reference tokens; warm-up steps full, then ⌈keep·n⌉ per reference."""
    arch = flops.Arch(family="qwen", dim=8, dual_layers=2, single_layers=0, in_channels=64, out_channels=64,
                      text_dim=16)
    texts, noisy, per_ref, steps, warmup = (30, 21), 64, 64, 6, 2
    total = references * per_ref
    kept = references * math.ceil(keep * per_ref)
    full = steps * sum(_qwen_call_by_hand(arch, t, noisy + total) for t in texts)
    mine = sum(warmup * _qwen_call_by_hand(arch, t, noisy + total)
               + (steps - warmup) * _qwen_call_by_hand(arch, t, noisy + kept) for t in texts)
    got = flops.multi_reference_speedup(arch, texts, noisy, [per_ref] * references, keep, steps, warmup)
    assert got == pytest.approx(full / mine, rel=1e-12)


def test_multi_reference_call_equals_torch_flop_counter():
    """A Qwen-Image call with three references of different sizes, a subset of each kept (rows and their RoPE
    positions gathered by the engine's hook), costs what call_flops says for text + noisy + Σ kept."""
    from actors.families.qwen_image_edit.positions import RowSelection, gathered_positions

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = QwenImageTransformer2DModel(patch_size=2, in_channels=64, out_channels=16, num_layers=2,
                                            attention_head_dim=16, num_attention_heads=2, joint_attention_dim=32,
                                            axes_dims_rope=(4, 6, 6)).eval()
    text, noisy, grids = 7, 20, [(4, 5), (4, 4), (3, 6)]
    refs = [h * w for h, w in grids]
    kept = [torch.tensor([0, 3, 9]), torch.tensor([1, 2]), torch.tensor([0, 5, 6, 17])]
    offsets = [noisy + sum(refs[:i]) for i in range(len(refs))]
    rows = torch.cat([torch.arange(noisy)] + [k + o for k, o in zip(kept, offsets)])
    selection = RowSelection(rows=rows)
    with gathered_positions(model, selection):
        counted = _counted(lambda: model(
            hidden_states=torch.randn(1, len(rows), 64), encoder_hidden_states=torch.randn(1, text, 32),
            encoder_hidden_states_mask=torch.ones(1, text), timestep=torch.tensor([0.5]),
            img_shapes=[[(1, 4, 5)] + [(1, h, w) for h, w in grids]], return_dict=False))
    assert flops.call_flops(flops.arch_of(model), text, noisy, sum(refs), sum(len(k) for k in kept)).total == counted


def test_edit_plus_text_tokens_and_the_multi_reference_gain():
    plus, text_of = costs.real("Qwen-Image-Edit-Plus").arch, edit_plus_text_tokens
    assert all(costs.real("Qwen-Image-Edit-Plus").text(n) == text_of(n) for n in (1, 2, 3))   # the cost model's
    assert plus == dataclasses.replace(QWEN, name="Qwen-Image-Edit-Plus")   # Edit-2509 = Edit's transformer
    one, three = text_of(1), text_of(3)
    assert one == (7 + 196 + 13 + 5, 7 + 196 + 1 + 5)
    assert three[0] - one[0] == three[1] - one[1] == 2 * (7 + 196)
    with pytest.raises(ValueError):
        text_of(0)
    # at 1024² every reference is 4096 tokens: the same keep saves more of a longer sequence
    tokens = flops.image_tokens(1024)
    assert tokens == 4096 and flops.image_tokens(512, 1024) == 2048
    for keep in (0.25, 0.1):
        gains = [flops.multi_reference_speedup(plus, text_of(n), tokens, [tokens] * n, keep, 50, 2) for n in (1, 2, 3)]
        assert 1 < gains[0] < gains[1] < gains[2]
        # the 50-step numbers docs/benchmark.md and the closing notes quote (1 and 3 references)
        assert (round(gains[0], 2), round(gains[2], 2)) == {0.25: (1.73, 2.74), 0.1: (1.98, 3.69)}[keep]
        # a step can never gain more than its sequence shrinks, squared (attention); the linears bound it lower
        seq = lambda kept: one[0] + tokens + kept   # noqa: E731
        assert gains[0] < (seq(tokens) / seq(math.ceil(keep * tokens))) ** 2


def test_the_counter_sees_attention_as_two_matmuls():
    """The independent count above includes attention: one SDPA call is Q·Kᵀ plus A·V, 2·(2·n·m·d)."""
    q, k = torch.randn(1, 2, 9, 16), torch.randn(1, 2, 13, 16)
    counted = _counted(lambda: torch.nn.functional.scaled_dot_product_attention(q, k, k))
    assert counted == 2 * (2 * 9 * 13 * 16 * 2)
