"""bench/flux2_table.py: the FLOP-model table of FLUX.2 [klein] 4B and klein KV 9B. The plans follow the policies'
rules (hand-counted token numbers), klein KV's cache rule is the adapter's (checked against a real tiny KV
edit), and the speedups are the cost model's ratios (hand-written from `call_flops`)."""
import math

import actors
from bench import flux2_table as table
from costs import real
from costs.flops import call_flops


def test_plans_keep_what_each_policy_keeps_at_real_token_counts():
    refs = table.reference_tokens(2048, 3)
    assert refs == [16384, 4096, 4096]   # the first at the edit size, the others at 1024² area
    total = sum(refs)
    assert [p.kept for p in table.random_plan(refs, 4)] == [total - math.ceil(0.5 * total)] * 4 == [12288] * 4
    # TokenDrop: "25%" of 4 steps = 1 full step, then 3.6% of reference 1 (⌈589.8⌉ = 590), the others whole
    assert [p.kept for p in table.tokendrop_plan(refs, 4)] == [24576, 590 + 8192, 590 + 8192, 590 + 8192]
    # Sparse Context: 1 warm-up step, then ⌈0.25·n⌉ of every reference
    assert [p.kept for p in table.sparse_plan(refs, 4)] == [24576, 4096 + 1024 + 1024, 6144, 6144]


def test_klein_kv_alone_is_one_stock_step_and_three_cached_ones():
    """1024², one reference, 4 steps on klein 9B: stock = 4·F; klein KV = F + 3·C, C a call that computes the
    512 text and 4096 noisy tokens and attends to them and the 4096 cached reference keys."""
    arch = real(table.KLEIN_KV_9B).arch
    full = call_flops(arch, 512, 4096, 4096).total
    cached = call_flops(arch, 512, 4096, 4096, active=4096, keys=8192, source_cached=True).total
    row = table.priced_row(table.KLEIN_KV_9B, 1024, 1, 4, kv=True)
    assert math.isclose(row["speedups"]["full"], 4 * full / (full + 3 * cached), rel_tol=1e-12)
    assert 1.5 < row["speedups"]["full"] < 1.6   # 1.55× in docs/benchmark.md
    # random draws new rows every step: klein KV extracts every time, as klein without the cache would
    stock = table.priced_row(table.KLEIN_KV_9B, 1024, 1, 4, kv=False)
    assert math.isclose(row["speedups"][table.RANDOM], stock["speedups"][table.RANDOM], rel_tol=1e-12)
    assert row["speedups"][table.SPARSE] > row["speedups"]["full"]   # dropping still saves keys


def test_stock_klein_speedups_are_ratios_of_whole_calls():
    """Klein 4B, 1024², 2 references: random keeps 4096 of 8192 reference tokens in each of the 4 steps, so its
    speedup is one call's ratio."""
    arch = real(table.KLEIN_4B).arch
    row = table.priced_row(table.KLEIN_4B, 1024, 2, 4, kv=False)
    expected = call_flops(arch, 512, 4096, 8192).total / call_flops(arch, 512, 4096, 8192, kept=4096).total
    assert math.isclose(row["speedups"][table.RANDOM], expected, rel_tol=1e-12)
    assert row["speedups"]["full"] == 1.0 and row["full_step_tflop"] > 100
    rows = table.rows()
    assert len(rows) == 2 * 2 * 4
    md = table.markdown(rows)
    assert "predicted by the FLOP model, not measured" in md and "no memory estimate" in md
    assert "| 2048² | 4 | 512 + 16384 + 16384+4096+4096+4096 |" in md


def test_the_cache_rule_is_the_kv_adapters(image_factory):
    """The same plans run on the tiny klein KV: every step's kept, active and key counts are the table's."""
    pipe = actors.load_pipeline("tiny-flux2-klein-kv", device="cpu")
    image, refs = image_factory(64, 64, seed=1), [image_factory(64, 64, seed=2)]
    tokens = [16, 16]   # 64² images: 4×4 tokens each
    for label, plan in ((table.SPARSE, table.sparse_plan), (table.RANDOM, table.random_plan),
                        ("full", table.full_plan)):
        policy = table.make_policy(label)
        trace = actors.Editor(pipe, policy).edit(image, "x", steps=4, references=refs).trace
        expected = table.kv_trace(plan(tokens, 4), 16, 32)
        assert [(s.kept, s.total, s.active, s.keys) for s in trace] == \
            [(s.kept, s.total, s.active, s.keys) for s in expected], label
