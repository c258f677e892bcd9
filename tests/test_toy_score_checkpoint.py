"""A background toy run's checkpoint is scored mid-run (studies.toy.score_checkpoint): the pipeline it rebuilds
carries the checkpoint's transformer and VAE, not the starting model's, and the run state's step."""
import torch

from studies.toy.score_checkpoint import load_checkpoint


def test_a_checkpoint_loads_its_own_weights_over_the_starting_model(tmp_path):
    import actors

    pipe = actors.load_pipeline("tiny-flux-kontext", device="cpu", dtype=torch.float32)
    weights = {k: v + 0.5 for k, v in pipe.transformer.state_dict().items()}
    vae = {k: v * 0.5 for k, v in pipe.vae.state_dict().items()}
    torch.save({"step": 300, "phase": "transformer", "log": [{"step": 300, "val": 0.147}], "weights": weights,
                "vae": vae}, tmp_path / "state.pt")
    loaded, state = load_checkpoint(str(tmp_path), "tiny-flux-kontext")
    assert state == {"step": 300, "phase": "transformer", "last_log": {"step": 300, "val": 0.147}}
    name, tensor = next(iter(weights.items()))
    assert torch.equal(loaded.transformer.state_dict()[name], tensor)
    assert not torch.equal(pipe.transformer.state_dict()[name], tensor)
    assert all(torch.equal(loaded.vae.state_dict()[k], v) for k, v in vae.items())
    from actors.reference_residual import is_reference_residual

    assert not is_reference_residual(loaded.transformer)
    prior, _ = load_checkpoint(str(tmp_path), "tiny-flux-kontext", "reference_residual")
    assert is_reference_residual(prior.transformer)   # a copy-prior run's checkpoint is scored as it predicts
    from toy.text_order import text_order_of

    assert text_order_of(loaded.text_encoder_2) is None
    ordered, _ = load_checkpoint(str(tmp_path), "tiny-flux-kontext", text_order=2.0)
    assert text_order_of(ordered.text_encoder_2) == 2.0   # a text_order run's checkpoint reads as it trained
