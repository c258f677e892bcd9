"""SpotEdit's K/V buffers in int8 (actors.kv_int8, `kv_store: int8`): rows round-trip within half a scale step,
whole edits stay close to the compute-dtype store and keep their buffers in int8, the option is validated and
the memory model and preflight count it."""
import numpy as np
import pytest
import torch

import actors
import policies
from actors.adapter import EditInputError
from actors.kv_int8 import Packed, pack, unpack

PROMPT = "make the circle red"


def test_rows_round_trip_within_half_a_scale_step():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 50, 4, 64, generator=g) * torch.rand(2, 50, 4, 1, generator=g) * 10
    x[0, 3] = 0.0   # an all-zero row keeps a usable scale
    packed, out_k, out_v = Packed.like(x.shape, x.device), torch.empty_like(x), torch.empty_like(x)
    pack(packed, x, -x)
    unpack(packed, out_k, out_v)
    step = x.abs().amax(-1, keepdim=True) / 127
    assert packed.qk.dtype == torch.int8 and (out_k - x).abs().le(step * 0.501 + 1e-6).all()
    assert torch.equal(out_v, -out_k) and torch.equal(out_k[0, 3], torch.zeros(4, 64))
    part = x.clone()
    part[:, 10:20] += 1
    pack(packed, part, part, slice(10, 20))   # only those rows are stored again
    unpack(packed, out_k, out_v)
    part_step = part.abs().amax(-1, keepdim=True) / 127
    assert (out_k[:, 10:20] - part[:, 10:20]).abs().le(part_step[:, 10:20] * 0.501 + 1e-6).all()
    assert (out_k[:, :10] - x[:, :10]).abs().le(step[:, :10] * 0.501 + 1e-6).all()


@pytest.mark.parametrize("fixture", ["flux_pipe", "qwen_pipe"])
def test_int8_edits_stay_close_to_the_compute_store(fixture, request, image_factory, monkeypatch):
    from actors import spot_buffers

    made = []   # every layer's buffers the edits allocate
    allocate = spot_buffers._allocate
    monkeypatch.setattr(spot_buffers, "_allocate", lambda *a, **k: made.append(allocate(*a, **k)) or made[-1])
    pipe, image = request.getfixturevalue(fixture), image_factory(128, 128, seed=1)
    policy = policies.make("spotedit", tau=0.0, initial_steps=2, reset_steps=[4], dilate=0)   # every token active
    close = policies.make("spotedit", tau=1e9, initial_steps=2, reset_steps=[4], dilate=0)   # none: all cached
    for p in (policy, close):
        r = {}
        for store in ("compute", "int8"):
            made.clear()
            r[store] = actors.Editor(pipe, p, kv_store=store).edit(image, PROMPT, seed=1, steps=6, height=128,
                                                                   width=128)
            assert made and all((b.packed is not None) == (store == "int8") for b in made)
            if store == "int8":
                assert all(b.packed.qk.dtype == torch.int8 for b in made) and r[store].kv_store == "int8"
                assert len({b.k.data_ptr() for b in made}) < len(made)   # the layers share one scratch
        diff = np.abs(r["int8"].pixels.astype(float) - r["compute"].pixels.astype(float))
        assert diff.max() < 0.05, (fixture, diff.max())
    with pytest.raises(EditInputError, match="kv_store must be one of compute, int8"):
        actors.Editor(pipe, policy, kv_store="fp8")


def test_the_memory_model_and_the_preflight_count_the_int8_store():
    from costs import memory
    from jobs.preflight import check_run
    from pipeline.config import expand_run, parse_config

    bf16, int8 = (memory.edit_memory("qwen-image-edit", "spotedit", 2048, True, q) for q in (False, True))
    assert 0.5 < int8.caches / bf16.caches < 0.6   # one byte per value, a scale per row and head, one scratch
    assert not memory.fits("qwen-image-edit", "spotedit", 2048, 80, True)[0]
    assert memory.fits("qwen-image-edit", "spotedit", 2048, 80, True, True)[0]

    def run(options):
        return expand_run(parse_config({"input": "x.jsonl", "output": "out", "resolutions": [2048],
                                        "models": [{"name": "qwen-image-edit", "path": "/m", "options": options}],
                                        "policies": [{"name": "spotedit"}], "actors": {"num_gpus": 1}}))

    with pytest.raises(ValueError, match="options.text_encoders: offload and options.kv_store: int8"):
        check_run(run({}))
    check_run(run({"text_encoders": "offload", "kv_store": "int8"}))
    with pytest.raises(Exception, match="kv_store must be one of compute, int8"):
        run({"kv_store": "fp8"})
    from actors.spot_attention import STORES
    from pipeline.model_spec import KV_STORES
    assert KV_STORES == STORES   # the driver's copy, kept free of torch
