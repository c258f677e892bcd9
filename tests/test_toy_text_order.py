"""Word order for the toy's T5 (`toy.text_order`): the seeded encoder barely tells "make the blue
diamond orange" from "make the orange diamond blue" token by token; after `order_text_encoder` each colour's
vector depends on where it stands, and the heads read exactly their neighbour."""
from __future__ import annotations

import pytest
import torch

from toy.text_order import order_text_encoder
from toy.data import vocabulary
from toy.model import T5_LENGTH, ToyModelConfig, build_toy_flux_kontext

A, B = "make the blue diamond orange", "make the orange diamond blue"   # blue: slot 2 / 4, orange: 4 / 2


@pytest.fixture()
def pipe():
    return build_toy_flux_kontext(ToyModelConfig(image_size=64, num_layers=1, num_single_layers=1,
                                                 num_attention_heads=2, attention_head_dim=32,
                                                 vae_channels=(8, 8, 8, 8), vae_groups=4,
                                                 words=tuple(vocabulary())))


def _tokens(pipe, text: str) -> torch.Tensor:
    embeds, _, _ = pipe.encode_prompt(prompt=[text], prompt_2=None, device="cpu", num_images_per_prompt=1,
                                      max_sequence_length=T5_LENGTH)
    return embeds[0]


def _order_shift(pipe) -> float:
    """How far swapping the two colours moves each colour's own vector (relative, the larger of the two)."""
    a, b = _tokens(pipe, A), _tokens(pipe, B)
    return max(float((a[i] - b[j]).norm() / a[i].norm()) for i, j in ((2, 4), (4, 2)))


def test_the_ordered_encoder_tells_the_two_colours_apart(pipe):
    before = _order_shift(pipe)
    order_text_encoder(pipe.text_encoder_2, strength=2.0)
    after = _order_shift(pipe)
    assert before < 0.1            # the seeded encoder: word order is a few % of a token's vector
    assert after > 3 * before and after > 0.2


def test_each_head_reads_its_neighbour(pipe):
    order_text_encoder(pipe.text_encoder_2, strength=8.0)
    attention = pipe.text_encoder_2.encoder.block[0].layer[0].SelfAttention
    bias = attention.compute_bias(6, 6)[0]          # heads x query x key, the additive logits
    for head, offset in ((0, -1), (1, +1)):
        for q in range(1, 5):
            logits = bias[head, q]
            assert int(logits.argmax()) == q + offset
            assert float(logits[q + offset] - logits[q]) == pytest.approx(8.0)


def test_a_toy_run_with_text_order_starts_with_the_ordered_encoder():
    from finetune.toy_config import ToyTrainConfig
    from finetune.toy_init import start

    model = dict(image_size=64, num_layers=1, num_single_layers=1, num_attention_heads=2, attention_head_dim=32,
                 vae_channels=[8, 8, 8, 8], vae_groups=4, words=list(vocabulary()))

    def bias(text_order):
        cfg = ToyTrainConfig.model_validate({"model": model, "text_order": text_order})
        pipe = start(cfg, ToyModelConfig(**model), None)[0]
        return pipe.text_encoder_2.encoder.block[0].layer[0].SelfAttention.relative_attention_bias.weight

    assert float(bias(2.0).max()) == pytest.approx(2.0) and float(bias(2.0).min()) == 0.0
    assert float(bias(None).abs().max()) < 1.0        # the seeded encoder as the toy builds it
    with pytest.raises(ValueError, match="text_order"):
        ToyTrainConfig.model_validate({"model": model, "text_order": 0})


def test_the_order_is_read_back_from_the_encoder_and_named_on_the_card(pipe):
    from toy.card import _order_note
    from toy.text_order import text_order_of

    assert text_order_of(pipe.text_encoder_2) is None and _order_note(pipe) == ""
    order_text_encoder(pipe.text_encoder_2, strength=2.0)
    assert text_order_of(pipe.text_encoder_2) == pytest.approx(2.0)
    assert "previous word" in _order_note(pipe) and "bias 2" in _order_note(pipe)


def test_v3_ships_with_its_ordered_encoder_and_reads_as_v2_otherwise():
    import actors
    from toy.text_order import text_order_of

    v3 = actors.load_pipeline("toy-flux-kontext-v3")
    assert text_order_of(v3.text_encoder_2) == pytest.approx(2.0)
    assert text_order_of(actors.load_pipeline("toy-flux-kontext-v2").text_encoder_2) is None
    assert int(v3.vae.config.sample_size) == 256


def test_v4_is_v3_trained_nearer_noise_with_the_same_encoder():
    """v4 (issue 29): v3's ordered T5, its own transformer, and the recipe its card names (σ at m = 1, lr 3e-4)."""
    import json

    import actors
    import torch
    from toy.text_order import text_order_of

    v3, v4 = actors.load_pipeline("toy-flux-kontext-v3"), actors.load_pipeline("toy-flux-kontext-v4")
    assert text_order_of(v4.text_encoder_2) == pytest.approx(2.0)
    assert int(v4.vae.config.sample_size) == 256
    w3, w4 = v3.transformer.state_dict(), v4.transformer.state_dict()
    assert w3.keys() == w4.keys() and not all(torch.equal(w3[k], w4[k]) for k in w3)
    from actors.models import model

    recipe = json.loads((model("toy-flux-kontext-v4").shipped / "loss.json").read_text())["train_config"]
    assert recipe["transformer"]["sigma_logit_mean"] == 1.0 and recipe["transformer"]["lr"] == pytest.approx(3e-4)
    assert recipe["init_from"].endswith("toy-flux-kontext-v3")
