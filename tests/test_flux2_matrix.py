"""Every policy × every temporal cache on the FLUX.2 models (klein, klein KV): it runs, or it is refused before
the first step with its reason. The expected outcome of each cell is written here, so that a mechanism that
starts (or stops) running on the family fails this test until the table says so."""
import pytest

import actors
import policies
from actors.adapter import EditInputError
from actors.caches import CacheError, names, parse
from core.registry import PluginError

STEPS = 2
# FLUX.2 has no paper value for TokenDrop: the parameters are given (Kontext's ω, a share-of-trajectory warm-up)
PARAMS = {"tokendrop": {"omega": 0.4, "full_steps": "25%"}}
# why a cell is refused: a fragment of its message
QUERY_SKIP = "needs query_skip, which model family 'flux2' does not run"
ROUTING = "needs layer_routing, which model family 'flux2' does not run"
BLOCKS = "returns them as one sequence"          # first-block, magcache: FLUX.2's single-stream blocks
FITTED = "no fitted gamma for model family 'flux2'"   # velocity-decay: RegionE's tables are Kontext's and Qwen's
ONE_CACHE = "one cache per edit"                 # a policy that declares its own cache (focus, RegionE)
REFUSED_POLICIES = {"spotedit": QUERY_SKIP, "focus": QUERY_SKIP, "regione": QUERY_SKIP, "topi": ROUTING}
REFUSED_CACHES = {"first-block": BLOCKS, "magcache": BLOCKS, "velocity-decay": FITTED}


@pytest.fixture(scope="module")
def pipes():
    return {name: actors.load_pipeline(name, device="cpu") for name in ("tiny-flux2-klein", "tiny-flux2-klein-kv")}


def _expected(policy: str, cache: str | None) -> str | None:
    """The edit checks its cache first (one per edit), then the family's mechanisms, then the cache's own."""
    declared = parse(policies.make(policy, **PARAMS.get(policy, {})).needs.cache)
    if cache is not None and declared is not None and declared != parse(cache):
        return ONE_CACHE
    return REFUSED_POLICIES.get(policy) or REFUSED_CACHES.get(cache or "")


@pytest.mark.parametrize("cache", [None, *names()])
@pytest.mark.parametrize("policy", sorted(policies.REGISTRY))
@pytest.mark.parametrize("model", ["tiny-flux2-klein", "tiny-flux2-klein-kv"])
def test_every_policy_and_cache_runs_or_is_refused_with_its_reason(model, policy, cache, pipes, image_factory):
    image, refs = image_factory(64, 64, seed=1), [image_factory(64, 64, seed=2)]
    editor = actors.Editor(pipes[model], policies.make(policy, **PARAMS.get(policy, {})))
    reason = _expected(policy, cache)
    if reason is None:
        result = editor.edit(image, "make it red", steps=STEPS, references=refs, cache=cache)
        assert len(result.trace) == STEPS
        if model.endswith("-kv"):
            assert result.source_cached   # every policy here reuses the reference K/V
        return
    steps_seen = []
    with pytest.raises((EditInputError, CacheError, PluginError), match=reason):
        editor.edit(image, "make it red", steps=STEPS, references=refs, cache=cache,
                    on_step=steps_seen.append)
    assert steps_seen == []   # refused before the first step
