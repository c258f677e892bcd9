"""Peers as baselines (actors.peers): cache-dit through FluxKontextPipeline.__call__; RegionE says why not here."""
import numpy as np
import pytest
import torch

import actors
import policies
from actors import peers


def test_peers_listed_with_their_reason():
    reasons = peers.available()
    assert set(reasons) == {"cache-dit", "flux2-klein-kv", "regione"}
    assert reasons["flux2-klein-kv"] is None   # diffusers' own pipeline: runs wherever diffusers does
    if not torch.cuda.is_available():
        assert "CUDA only" in reasons["regione"]
        with pytest.raises(peers.PeerError, match="cannot run here: RegionE launches Triton kernels"):
            peers.make("regione").edit(None, None, "x")
    with pytest.raises(peers.PeerError, match="accepted: cache-dit, flux2-klein-kv, regione"):
        peers.make("teacache")
    with pytest.raises(peers.PeerError, match="has no parameter 'Fn'"):
        peers.make("cache-dit", Fn=2)


@pytest.mark.skipif(peers.available()["cache-dit"] is not None, reason="cache-dit not installed (extra: peers)")
def test_cache_dit_through_the_pipeline_matches_our_loop_and_skips(flux_pipe, image_factory):
    image = image_factory(64, 64, seed=2)
    ours = actors.Editor(flux_pipe, policies.make("full")).edit(image, "make it red", seed=0, steps=6, height=64,
                                                               width=64)
    never = peers.make("cache-dit", threshold=0, warmup=1).edit(flux_pipe, image, "make it red", seed=0, steps=6,
                                                                height=64, width=64)
    assert never.skipped_calls == {"cond": 0}
    assert np.abs(never.pixels - ours.pixels).max() < 1e-5   # same edit: diffusers' call and our loop
    cached = peers.make("cache-dit", threshold=10.0, warmup=1).edit(flux_pipe, image, "make it red", seed=0,
                                                                    steps=6, height=64, width=64)
    assert cached.skipped_calls["cond"] > 0 and cached.stats["cached_steps"]
    assert np.isfinite(cached.pixels).all() and cached.image.size == (64, 64)
    seer = peers.make("cache-dit", threshold=10.0, warmup=1, taylorseer=True).edit(
        flux_pipe, image, "make it red", seed=0, steps=6, height=64, width=64)
    assert seer.skipped_calls["cond"] > 0 and seer.params["taylorseer"] is True
    # disabled afterwards: the pipeline is as it was
    again = peers.make("cache-dit", threshold=0, warmup=1).edit(flux_pipe, image, "make it red", seed=0, steps=6,
                                                                height=64, width=64)
    assert np.array_equal(again.pixels, never.pixels)
    plain = flux_pipe(image=image.resize((64, 64)), prompt="make it red", height=64, width=64, num_inference_steps=2,
                      output_type="np", max_area=64 * 64, _auto_resize=False).images[0]
    assert np.isfinite(plain).all()
