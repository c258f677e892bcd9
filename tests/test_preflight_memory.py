"""A configuration whose one edit cannot fit the GPU actors' card is refused before Ray starts, with what it needs
(costs.memory's estimate of the real checkpoint); a larger card, a CPU pool and the tiny models pass."""
import pytest

from jobs.preflight import check_run
from pipeline.config import expand_run, parse_config


def _run(model: str, policy: dict, size: int, options: dict | None = None, **actors):
    raw = {"input": "x.jsonl", "output": "out",
           "models": [{"name": model, "path": "/models/none", "options": options or {}}],
           "resolutions": [size], "policies": [{"name": "full"}, policy], "actors": {"num_gpus": 1, **actors}}
    if model.startswith("tiny-"):
        raw["models"][0].pop("path")
    return expand_run(parse_config(raw))


def test_qwen_with_a_kv_cache_at_2048_does_not_fit_an_80_gb_card():
    with pytest.raises(ValueError, match=r"spotedit.*needs transformer .*caches 48\.3.* = 104\.7 GiB .*card has 80 GiB"):
        check_run(_run("qwen-image-edit", {"name": "spotedit"}, 2048))
    offload = {"text_encoders": "offload"}   # 89.1 GiB: still too much, and the message does not suggest it
    with pytest.raises(ValueError, match=r"max\(encoders 15\.6, caches 48\.3 .*\) = 89\.1 GiB") as err:
        check_run(_run("qwen-image-edit", {"name": "spotedit"}, 2048, offload))
    assert "options.text_encoders" not in str(err.value)
    check_run(_run("qwen-image-edit", {"name": "spotedit"}, 2048, card_gb=141))   # an H200 holds it
    check_run(_run("qwen-image-edit", {"name": "spotedit"}, 1024))                # 67.9 GiB: fits
    check_run(_run("qwen-image-edit", {"name": "spotedit"}, 2048, num_gpus=0))    # a CPU pool: no card


def test_a_cache_adds_its_buffers_and_the_tiny_models_are_never_refused():
    from costs.memory import config_memory, edit_memory

    alone, both = edit_memory("flux-kontext", "spotedit", 2048), config_memory("flux-kontext", "spotedit",
                                                                                "taylorseer", 2048)
    assert both.caches > alone.caches and both.weights == alone.weights
    check_run(_run("tiny-qwen-image-edit", {"name": "spotedit"}, 2048, card_gb=1))


def test_flux2_dev_with_its_text_encoder_resident_needs_more_than_80_gb():
    # 32 B transformer + the 24 B Mistral text encoder in bf16, both resident all edit
    with pytest.raises(ValueError, match=r"model 'flux2-dev' .*needs transformer .* = 10\d\.\d GiB"):
        check_run(_run("flux2-dev", {"name": "random", "ratio": 0.5}, 1024))
    check_run(_run("flux2-dev", {"name": "random", "ratio": 0.5}, 1024, card_gb=141))
    with pytest.raises(ValueError, match=r"max\(encoders 44\.9"):   # the encode phase holds both
        check_run(_run("flux2-dev", {"name": "random", "ratio": 0.5}, 1024, {"text_encoders": "offload"}))


def test_offloading_the_text_encoders_is_suggested_where_it_makes_the_edit_fit():
    # Qwen at 1024² with SpotEdit: 67.9 GiB resident, 53.6 offloaded; a 64 GiB card holds only the latter
    with pytest.raises(ValueError, match="set the model's options.text_encoders: offload"):
        check_run(_run("qwen-image-edit", {"name": "spotedit"}, 1024, card_gb=64))
    check_run(_run("qwen-image-edit", {"name": "spotedit"}, 1024, {"text_encoders": "offload"}, card_gb=64))


def test_model_options_are_validated_before_anything_loads():
    with pytest.raises(Exception, match="text_encoders must be one of resident, offload"):
        _run("qwen-image-edit", {"name": "spotedit"}, 1024, {"text_encoders": "cpu"})
    with pytest.raises(Exception, match="attention_backend must be a backend name"):
        _run("qwen-image-edit", {"name": "spotedit"}, 1024, {"attention_backend": ""})
    from actors.text_encoders import PLACEMENTS
    from pipeline.config import TEXT_ENCODER_PLACEMENTS
    assert PLACEMENTS == TEXT_ENCODER_PLACEMENTS   # the driver's copy, kept free of torch


def test_card_gb_is_validated():
    with pytest.raises(Exception, match="card_gb"):
        _run("qwen-image-edit", {"name": "spotedit"}, 1024, card_gb=0)
