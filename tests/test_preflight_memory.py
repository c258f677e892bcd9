"""A configuration whose one edit cannot fit the GPU actors' card is refused before Ray starts, with what it needs
(costs.memory's estimate of the real checkpoint); a larger card, a CPU pool and the tiny models pass."""
import pytest

from jobs.preflight import check_run
from pipeline.config import expand_run, parse_config


def _run(model: str, policy: dict, size: int, **actors):
    raw = {"input": "x.jsonl", "output": "out", "models": [{"name": model, "path": "/models/none"}],
           "resolutions": [size], "policies": [{"name": "full"}, policy], "actors": {"num_gpus": 1, **actors}}
    if model.startswith("tiny-"):
        raw["models"][0].pop("path")
    return expand_run(parse_config(raw))


def test_qwen_with_a_kv_cache_at_2048_does_not_fit_an_80_gb_card():
    with pytest.raises(ValueError, match=r"spotedit.*needs 101\.4 GiB .*caches 45\.0.*card has 80 GiB"):
        check_run(_run("qwen-image-edit", {"name": "spotedit"}, 2048))
    check_run(_run("qwen-image-edit", {"name": "spotedit"}, 2048, card_gb=141))   # an H200 holds it
    check_run(_run("qwen-image-edit", {"name": "spotedit"}, 1024))                # 65.7 GiB: fits
    check_run(_run("qwen-image-edit", {"name": "spotedit"}, 2048, num_gpus=0))    # a CPU pool: no card


def test_a_cache_adds_its_buffers_and_the_tiny_models_are_never_refused():
    from costs.memory import config_memory, edit_memory

    alone, both = edit_memory("flux-kontext", "spotedit", 2048), config_memory("flux-kontext", "spotedit",
                                                                                "taylorseer", 2048)
    assert both.caches > alone.caches and both.weights == alone.weights
    check_run(_run("tiny-qwen-image-edit", {"name": "spotedit"}, 2048, card_gb=1))


def test_flux2_dev_with_its_text_encoder_resident_needs_more_than_80_gb():
    # 32 B transformer + the 24 B Mistral text encoder in bf16, both resident all edit
    with pytest.raises(ValueError, match=r"model 'flux2-dev' .*needs 10\d\.\d GiB"):
        check_run(_run("flux2-dev", {"name": "random", "ratio": 0.5}, 1024))
    check_run(_run("flux2-dev", {"name": "random", "ratio": 0.5}, 1024, card_gb=141))


def test_card_gb_is_validated():
    with pytest.raises(Exception, match="card_gb"):
        _run("qwen-image-edit", {"name": "spotedit"}, 1024, card_gb=0)
