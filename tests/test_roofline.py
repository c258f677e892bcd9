"""The roofline cost model (costs/kernels.py, costs/mechanism_kernels.py, costs/roofline.py), the memory model
(costs/memory.py) and the table script (costs/roofline_table.py): hand counts of one layer, compute- vs
memory-bound kernels, speedups against the FLOP model, and torch's CPU profiler on tiny models of the real
classes (bytes allocated per call and the peak of live activations)."""
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import costs
from costs import flops, kernels, mechanism_kernels, memory, roofline, roofline_table
from costs.kernels import ATTENTION, ELEMENTWISE, LINEAR

FLUX, QWEN = costs.real("FLUX.1-Kontext-dev"), costs.real("Qwen-Image-Edit")
SMALL = {family: flops.Arch(family=family, dim=64, dual_layers=1, single_layers=1 if family == "flux" else 0,
                            in_channels=64, out_channels=64, text_dim=32, pooled_dim=32 if family == "flux" else 0,
                            head_dim=16) for family in ("flux", "qwen")}
DOC = Path(__file__).resolve().parents[1] / "docs" / "roofline.md"


def _by_kind(ks, what):
    out = {}
    for k in ks:
        out[k.kind] = out.get(k.kind, 0.0) + getattr(k, what)
    return out


@pytest.mark.parametrize("family", ["flux", "qwen"])
@pytest.mark.parametrize("text, rows", [(3, 10), (5, 0)])
def test_one_dual_layer_by_hand(family, text, rows):
    """One dual block on a small config, class by class (A = 2 bytes, bf16; F = 4, fp32).

    Linear: per stream q, k, v, out and the MLP d -> 4d -> d over its rows, plus the 1-row AdaLN linear d -> 6d;
    bytes (m·k + k·n + m·n)·2. Attention: 4·n²·d FLOPs, q, k, v and the output once. Element-wise, per element
    of a [rows, d] tensor of each stream: LayerNorm 2A twice, modulation 4A twice, gate + residual 5A twice, GELU
    2A over 4d; Flux's fused qk RMSNorm 2A on q and k, Qwen's eager one 34 B (upcast 6, pow 8, mean 4, rsqrt-mul
    6, downcast 6, weight 4); over the joint rows: the q, k, v concatenation 6A and the output .contiguous() 2A;
    RoPE of q and k: Flux 52 B an element plus its cos and sin tables read once per product, Qwen 20 B plus its
    complex table once."""
    arch, d = SMALL[family], 64
    n, D = text + rows, 16
    ks = kernels.block(arch, 0, text, rows, rows)
    got_flops, got_bytes = _by_kind(ks, "flops"), _by_kind(ks, "bytes")
    lin = [(m, k, o) for m in (rows, text) for (k, o) in [(d, d)] * 4 + [(d, 4 * d), (4 * d, d)]] + [(1, d, 6 * d)] * 2
    assert got_flops[LINEAR] == sum(2 * m * k * o for m, k, o in lin)
    assert got_bytes[LINEAR] == sum((m * k + k * o + m * o) * 2 for m, k, o in lin)
    assert got_flops[ATTENTION] == 4 * n * n * d and got_bytes[ATTENTION] == 4 * n * d * 2
    per_stream = (2 + 4 + 5 + 2 + 4 + 5) * 2 + 4 * 2 * 2 + (2 * 2 * 2 if family == "flux" else 2 * 34)
    joint = (6 + 2) * 2 + (2 * 52 if family == "flux" else 2 * 20)
    tables = (2 * 2 if family == "flux" else 2) * n * D * 4
    assert got_bytes[ELEMENTWISE] == pytest.approx(n * d * (per_stream + joint) + tables)
    # the FLOP model counts the same linears and attention matmuls
    assert got_flops[LINEAR] + got_flops[ATTENTION] == flops.layer_flops(arch, 0, n, n).total


def test_one_single_layer_by_hand():
    """Flux's single block over n = text + rows tokens: q, k, v (d -> d), proj_mlp (d -> 4d), proj_out (5d -> d)
    and AdaLN d -> 3d; element-wise: the [text, image] concatenation 2A, LayerNorm 2A, modulation 4A, GELU 2A
    over 4d, qk RMSNorm 2A twice, the [attention, MLP] concatenation 2A over 5d, gate + residual 5A, RoPE 52 B
    twice plus the tables."""
    arch, d, text, rows = SMALL["flux"], 64, 3, 10
    n = text + rows
    ks = kernels.block(arch, 1, text, rows, rows)
    got = _by_kind(ks, "bytes")
    assert _by_kind(ks, "flops")[LINEAR] + _by_kind(ks, "flops")[ATTENTION] == flops.layer_flops(arch, 1, n, n).total
    assert got[ELEMENTWISE] == pytest.approx(n * d * ((2 + 2 + 4 + 8 + 4 + 10 + 5) * 2 + 2 * 52) + 4 * n * 16 * 4)


@pytest.mark.parametrize("priced", [FLUX, QWEN], ids=["flux", "qwen"])
@pytest.mark.parametrize("size", [1024, 2048])
def test_stock_call_has_the_flop_models_flops(priced, size):
    n, text = flops.image_tokens(size), priced.text()[0]
    for kept in (n, n // 2):
        ks = roofline.call_kernels(priced.arch, text, n, n, kept)
        got = sum(k.flops * c for k, c in ks)
        assert got == pytest.approx(flops.call_flops(priced.arch, text, n, n, kept).total, rel=1e-12)


def test_long_linears_are_compute_bound_and_rope_memory_bound():
    h100, d = roofline.device("H100 SXM"), FLUX.arch.dim
    long = kernels.linear("q", 512 + 8192, d, d)
    assert long.flops / h100.bf16_flops > long.bytes / h100.bandwidth
    assert roofline.kernel_seconds(long, h100) == long.flops / h100.bf16_flops
    modulation = kernels.linear("AdaLN", 1, d, 6 * d)   # one row: the weight read is all it does
    assert roofline.kernel_seconds(modulation, h100) == modulation.bytes / h100.bandwidth
    for k in kernels.rope(FLUX.arch, "rope k", 8704) + kernels.rope(QWEN.arch, "rope k", 8704):
        assert k.flops == 0 and roofline.kernel_seconds(k, h100) == k.bytes / h100.bandwidth
    # the H200 moves bytes faster at the same peak FLOP/s: memory-bound work is what it speeds up
    h200 = roofline.device("h200")
    assert roofline.kernel_seconds(long, h200) == roofline.kernel_seconds(long, h100)
    assert roofline.kernel_seconds(modulation, h200) < roofline.kernel_seconds(modulation, h100)


def test_devices_by_name():
    assert roofline.device("h100") is roofline.device("H100 SXM") is roofline.DEVICES["H100 SXM"]
    with pytest.raises(ValueError, match="H200"):
        roofline.device("A100")


def _trace(n, steps=4, kept=None, from_layer=0, active=None, keys=None, full=0):
    """`steps` steps of n noisy and n source tokens; from step `full` on, `active` noisy tokens get queries."""
    return [SimpleNamespace(index=i, noisy=n, total=n, kept=n if kept is None else kept, from_layer=from_layer,
                            active=active if i >= full else None, keys=keys if i >= full else None)
            for i in range(steps)]


@pytest.mark.parametrize("priced", [FLUX, QWEN], ids=["flux", "qwen"])
@pytest.mark.parametrize("size", [1024, 2048])
def test_gather_plan_predicts_no_more_than_flop_ideal(priced, size):
    """Dropped rows save their FLOPs and their bytes; the per-call weight reads of the AdaLN linears do not
    shrink, and element-wise work scales with rows while attention scales with rows × keys."""
    n = flops.image_tokens(size)
    for keep in (0.75, 0.5, 0.1):
        trace = _trace(n, kept=math.ceil(keep * n))
        ideal = flops.predicted_speedup(priced.arch, trace, priced.text())
        for dev in roofline.DEVICES:
            predicted = roofline.roofline_speedup(priced.arch, trace, priced.text(), False, dev)
            assert 1 < predicted <= ideal
    assert roofline.roofline_speedup(priced.arch, _trace(n), priced.text()) == 1.0


def _partial_time(arch, text, n, active, blend=True):
    return roofline.call_time(arch, "H100 SXM", text, n, n, n, active=active, source_cached=True,
                              mechanics=roofline.Mechanics(blend=blend))


@pytest.mark.parametrize("priced", [FLUX, QWEN], ids=["flux", "qwen"])
def test_spotedit_partial_step_moves_only_what_it_computes(priced):
    """The post-RoPE K/V buffers (actors.spot_buffers): RoPE only over the computed rows, no full-size key
    tensor made; what is left beyond a stock block over the computed rows is writing them into the buffers and
    SpotFusion's blend of the noisy K and V rows (read the rows and the source's, write the rows)."""
    arch, text, n = priced.arch, priced.text()[0], flops.image_tokens(1024)
    active, d = math.ceil(0.2 * n), arch.dim
    ideal = flops.call_flops(arch, text, n, n).total / \
        flops.call_flops(arch, text, n, n, n, active=active, source_cached=True).total
    full = roofline.call_time(arch, "H100 SXM", text, n, n)
    ks = roofline.call_kernels(arch, text, n, n, n, active=active, source_cached=True)
    rope_k = sum(k.bytes * c for k, c in ks if k.name.startswith("rope k"))
    assert rope_k == pytest.approx(arch.num_layers * sum(k.bytes for k in kernels.rope(arch, "rope k", text + active)))
    assert not any(k.name.startswith(("cat k", "cat v")) and k.written > (text + active) * d * 2 for k, _ in ks)
    # the static context (focus, RegionE) reaches the FLOP-ideal neighbourhood of a gather plan; the blend,
    # SpotFusion's own traffic, costs a few per cent more
    blended, static = full / _partial_time(arch, text, n, active), full / _partial_time(arch, text, n, active, False)
    assert static > 0.94 * ideal and 0.85 * ideal < blended < static
    # by hand, per layer: text rows and active rows written into the K and V buffers, and the in-place blend of
    # the noisy K and V rows (reads the rows and the aligned source rows, writes the rows)
    spot = mechanism_kernels.spot_layer(arch, text, n, active, 2 * n, n, 0, blend=True)
    assert sum(k.bytes for k in spot) == 2 * 2 * (text + active) * d * 2 + 2 * 3 * n * d * 2
    assert all(k.inplace for k in spot)


def test_spotedit_trace_prices_its_full_steps_cache_writes():
    arch, text, n = FLUX.arch, FLUX.text(), 4096
    trace = _trace(n, steps=6, full=2, active=820, keys=2 * n)
    with_store = roofline.trace_time(arch, trace, text, True)
    without = roofline.trace_time(arch, trace, text, True, kv_cache=False)
    # 2 full steps: K and V of every image row copied into the buffers (read + write), and the source keys'
    # first RoPE axis rotated at the noisy positions (SpotFusion's target)
    stores = 2 * arch.num_layers * 2 * 2 * (n + n) * arch.dim * 2
    target = 2 * arch.num_layers * sum(roofline.kernel_seconds(k, roofline.device("H100 SXM"))
                                       for k in mechanism_kernels._fusion_target(arch, n, "kv store"))
    assert with_store - without == pytest.approx(stores / roofline.device("H100 SXM").bandwidth + target, rel=1e-9)
    assert roofline.roofline_speedup(arch, trace, text, True) < flops.predicted_speedup(arch, trace, text, True)


def test_statistics_and_caches_cost_time():
    arch, text, n = QWEN.arch, QWEN.text(), 4096
    trace = _trace(n, steps=2)
    anchor = roofline.trace_time(arch, trace, text, stats={0: (59,)})
    assert anchor > roofline.trace_time(arch, trace, text)
    skipped = [SimpleNamespace(**vars(s), cache_calls=({"skipped_from": 1}, {"skipped_from": 1})) for s in trace]
    assert roofline.trace_time(arch, skipped, text, cache="first-block") < roofline.trace_time(arch, trace, text)
    with pytest.raises(ValueError, match="unknown cache"):
        roofline.call_time(arch, "H200", 10, 16, 16, mechanics=roofline.Mechanics(cache="nope"))
    with pytest.raises(ValueError, match="FLUX.2"):
        roofline.call_time(costs.real("FLUX.2-klein-4B").arch, "H200", 512, 4096, 4096)


# --- torch's profiler on tiny models of the real classes (CPU, bf16) -----------------------------------------

def _profiled(fn):
    """(bytes allocated, peak live bytes) of the second call of `fn` (the first warms up the allocator)."""
    with torch.inference_mode():
        fn()
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True) as prof:
            fn()
    allocated = sum(e.self_cpu_memory_usage for e in prof.events() if e.self_cpu_memory_usage > 0)
    live = peak = 0
    for e in sorted((e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"),
                    key=lambda e: e.start_ns()):
        live += e.nbytes()
        peak = max(peak, live)
    return allocated, peak


def _cpu_rms_norm_bytes_per_element():
    """What torch.nn.RMSNorm allocates per element on this CPU (it decomposes into fp32 temporaries here; on
    CUDA the model prices one fused kernel writing 2 bytes)."""
    x, norm = torch.randn(1, 512, 4, 32, dtype=torch.bfloat16), torch.nn.RMSNorm(32).to(torch.bfloat16)
    allocated, _ = _profiled(lambda: norm(x))
    return allocated / x.numel()


T, N, SIDE = 64, 256, 16   # text tokens, noisy (= source) tokens on a 16×16 grid


@pytest.fixture(scope="module")
def tiny_flux():
    from actors.tiny_models import build_tiny_flux_kontext
    tr = build_tiny_flux_kontext(num_attention_heads=4, attention_head_dim=32).transformer.eval()
    tr = tr.to(torch.bfloat16)
    ids = torch.zeros(2 * N, 3)
    ids[:, 1], ids[:, 2], ids[N:, 0] = torch.arange(2 * N) // SIDE % SIDE, torch.arange(2 * N) % SIDE, 1
    kw = dict(hidden_states=torch.randn(1, 2 * N, 64, dtype=torch.bfloat16),
              encoder_hidden_states=torch.randn(1, T, tr.config.joint_attention_dim, dtype=torch.bfloat16),
              pooled_projections=torch.randn(1, tr.config.pooled_projection_dim, dtype=torch.bfloat16),
              timestep=torch.tensor([0.5]), guidance=torch.tensor([2.5]), img_ids=ids, txt_ids=torch.zeros(T, 3),
              return_dict=False)
    return tr, kw


def _written(ks, rms_excess=0.0):
    """Predicted bytes allocated: every kernel's output except in-place writes, plus the CPU's RMSNorm
    temporaries over the elements Flux's fused qk-norm covers."""
    normed = sum(k.written / 2 * c for k, c in ks if k.name.endswith(("q norm", "k norm")))
    return sum(k.allocated * c for k, c in ks) + rms_excess * normed


def test_tiny_flux_allocations_match_the_model(tiny_flux):
    """Bytes allocated per call (the profiler's allocations: every new output) against the model's written
    bytes. Allowed: 0.95–1.15×, for what the model leaves out and the CPU adds — the CPU flash attention's
    log-sum-exp and layouts, the index and id tensors a call builds, the RoPE table's fp64 intermediates.
    Flux's qk RMSNorm is one fused kernel on CUDA; the CPU's decomposition is measured and added."""
    tr, kw = tiny_flux
    allocated, _ = _profiled(lambda: tr(**kw))
    excess = _cpu_rms_norm_bytes_per_element() - 2
    predicted = _written(roofline.call_kernels(flops.arch_of(tr), T, N, N), excess)
    assert 0.95 <= allocated / predicted <= 1.15


def _cpu_attention_scratch(queries, keys, heads=4, head_dim=32):
    """What the CPU's flash attention allocates besides its output (per-thread blocks of logits, the
    log-sum-exp): nothing the roofline prices on a GPU, whose attention keeps them on chip. Measured on the
    layout diffusers' dispatcher passes ([B, L, H, D] transposed)."""
    q = torch.randn(1, queries, heads, head_dim, dtype=torch.bfloat16).transpose(1, 2)
    k, v = (torch.randn(1, keys, heads, head_dim, dtype=torch.bfloat16).transpose(1, 2) for _ in range(2))
    allocated, _ = _profiled(lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v))
    return allocated - q.numel() * 2


def test_tiny_flux_spotedit_calls_allocate_what_the_model_says(tiny_flux):
    """A full call that fills SpotEdit's K/V buffers, then a partial call at 20 % active with the source K/V
    cached, through the real processors and routing (same allowance as above). The partial call rotates and
    writes only the rows it computes, so the CPU attention's scratch, left out above, is measured and added
    (it would be a fifth of the rest)."""
    from actors.routing import Routing, routed_blocks
    from actors.spot_attention import SpotCall, SpotKV, spot_attention
    tr, kw = tiny_flux
    kv = SpotKV(num_noisy=N, num_source=N, key_rotary=tr.pos_embed(kw["img_ids"]), fusion=True)
    routing, active = Routing(family="flux", num_noisy=N), torch.arange(0, N, 5)
    arch, excess = flops.arch_of(tr), _cpu_rms_norm_bytes_per_element() - 2

    def partial():
        routing.set(active, from_layer=0)
        kv.call = SpotCall(active=active, source_queries=False, noisy_context=True, alpha=0.3)
        tr(**kw)

    with routed_blocks(tr, routing), spot_attention(tr, "flux", kv):
        kv.call = SpotCall()
        full, _ = _profiled(lambda: tr(**kw))
        part, _ = _profiled(partial)
    layers = arch.num_layers
    stored = roofline.call_kernels(arch, T, N, N, mechanics=roofline.Mechanics(stores_kv=True))
    scratch = layers * _cpu_attention_scratch(T + 2 * N, T + 2 * N)
    assert 0.95 <= full / (_written(stored, excess) + scratch) <= 1.15
    cached = roofline.call_kernels(arch, T, N, N, N, active=len(active), source_cached=True)
    scratch = layers * _cpu_attention_scratch(T + len(active), T + 2 * N)
    assert 0.95 <= part / (_written(cached, excess) + scratch) <= 1.15


def test_tiny_qwen_allocations_and_peak_match_the_model():
    """Qwen's qk RMSNorm is diffusers' eager one, priced kernel by kernel: no CPU correction. Peak: the live
    set of the fullest block (`costs.memory.block_peak_units`) plus the inputs and RoPE table, within
    0.8–1.25× of the profiler's peak (the model leaves out per-row norm statistics, modulation vectors and
    the attention's log-sum-exp)."""
    from actors.tiny_models import build_tiny_qwen_image_edit
    tr = build_tiny_qwen_image_edit(num_attention_heads=4, attention_head_dim=32).transformer.eval()
    tr = tr.to(torch.bfloat16)
    kw = dict(hidden_states=torch.randn(1, 2 * N, 64, dtype=torch.bfloat16),
              encoder_hidden_states=torch.randn(1, T, tr.config.joint_attention_dim, dtype=torch.bfloat16),
              encoder_hidden_states_mask=None, timestep=torch.tensor([0.5]),
              img_shapes=[[(1, SIDE, SIDE), (1, SIDE, SIDE)]], return_dict=False)
    allocated, peak = _profiled(lambda: tr(**kw))
    arch = flops.arch_of(tr)
    assert 0.95 <= allocated / _written(roofline.call_kernels(arch, T, N, N)) <= 1.15
    assert 0.8 <= peak / memory.activation_bytes(arch, T, 2 * N, 2 * N, 2 * N) <= 1.25


def test_tiny_flux_peak_matches_the_activation_estimate(tiny_flux):
    """As for Qwen; on the CPU Flux's decomposed RMSNorm adds fp32 temporaries at the peak, inside 1.25×."""
    tr, kw = tiny_flux
    _, peak = _profiled(lambda: tr(**kw))
    assert 0.8 <= peak / memory.activation_bytes(flops.arch_of(tr), T, 2 * N, 2 * N, 2 * N) <= 1.25


# --- memory ----------------------------------------------------------------------------------------------------

def test_spotedit_kv_cache_is_the_post_rope_buffers_per_layer_and_branch():
    """actors.spot_buffers: K and V of [text, noisy, source] rows per layer and CFG branch (the issue's 5.3 GiB
    FLUX / 11.25 GiB Qwen at 1024² counted the image rows only), plus SpotFusion's source keys rotated at the
    noisy positions on the first RoPE axis (16 of 128 head dims); focus keeps no fusion target."""
    n, layer_bytes = 4096, 3072 * 2
    flux = 57 * (2 * (512 + 2 * n) + n * 16 // 128) * layer_bytes / memory.GiB
    assert memory.edit_memory("flux-kontext", "spotedit", 1024).caches == pytest.approx(flux)
    taylor = 2 * n * 64 * 4 / memory.GiB   # focus' two fp32 TaylorSeer factors [noisy, out_channels]
    assert memory.edit_memory("flux-kontext", "focus", 1024).caches == pytest.approx(
        57 * 2 * (512 + 2 * n) * layer_bytes / memory.GiB + taylor)
    qwen = 60 * sum(2 * (t + 2 * n) + n * 16 // 128 for t in (1389, 1377)) * layer_bytes / memory.GiB
    assert memory.edit_memory("qwen-image-edit", "spotedit", 1024).caches == pytest.approx(qwen)
    assert 11.25 < qwen < 13.6   # the image rows alone were the 11.25


def test_offloaded_text_encoders_count_once_beside_the_larger_phase():
    resident, offload = (memory.edit_memory("qwen-image-edit", "spotedit", 1024, o) for o in (False, True))
    assert resident.total == pytest.approx(resident.weights + resident.encoders + resident.caches + resident.activations)
    assert offload.total == pytest.approx(offload.weights + max(offload.encoders, offload.caches + offload.activations))
    assert offload.total < resident.total
    dev = memory.edit_memory("flux2-dev", "full", 1024, True)   # the encode phase alone holds 60 + 45 GiB
    assert dev.total == pytest.approx(dev.weights + dev.encoders) and not memory.fits("flux2-dev", "full", 1024, 80, True)[0]
    assert "max(encoders" in memory.fits("qwen-image-edit", "full", 1024, 80, True)[2]


def test_what_fits_an_80_and_a_141_gib_card():
    ok, gib, reason = memory.fits("qwen-image-edit", "spotedit", 2048, 80)
    assert not ok and gib > 78 and "exceeds" in reason and "caches 48.3" in reason
    assert memory.fits("qwen-image-edit", "spotedit", 2048, 141)[0]
    for model in ("flux-kontext", "qwen-image-edit"):
        for policy in memory.POLICIES:
            assert memory.fits(model, policy, 1024, 80)[0], (model, policy)
    ok, _, reason = memory.fits("flux2-klein", "spotedit", 1024, 141)
    assert not ok and "query_skip" in reason
    assert memory.fits("flux2-klein", "full", 2048, 80)[0]
    with pytest.raises(ValueError, match="unknown policy"):
        memory.fits("flux-kontext", "nope", 1024, 80)


def test_topi_statistics_temporaries():
    """One recorded layer holds each query's fp32 log-sum-exp and one chunk's fp32 products with the source keys
    [heads, 1024, source] (the second attention's [heads, 1024, all keys] logits and softmax, 1.7 GB at 1024², are
    gone); they now fit under the block's own peak (the MLP's hidden), so an anchor call peaks as a full call."""
    arch = FLUX.arch
    heads = arch.dim // arch.head_dim
    for size in (1024, 2048):
        n = flops.image_tokens(size)
        rows = 512 + 2 * n
        chunk = heads * 1024 * n * 4
        assert memory.stats_bytes(arch, rows, n, n) == pytest.approx(
            heads * rows * 4 + (n + 1024) * arch.dim * 2 + chunk)
        assert memory.edit_memory("flux-kontext", "topi", size).activations == \
            memory.edit_memory("flux-kontext", "full", size).activations


def test_the_document_holds_the_scripts_output():
    """docs/roofline.md carries `python -m costs.roofline_table` verbatim (regenerate it after a change)."""
    assert roofline_table.markdown() in DOC.read_text()
