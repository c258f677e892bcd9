"""studies.toy.cfg_probe on the fast v1 toy (128 px), one record, two steps: plain sampling and true CFG give a
gain and a background PSNR per category, and guidance changes the edit (the negative branch is really run)."""
from studies.toy.cfg_probe import probe


def test_true_cfg_probe_scores_each_scale_and_guidance_changes_the_edit():
    out = probe("toy-flux-kontext", [1.0, 3.0], n=1, steps=2)
    assert set(out) == {"1.0", "3.0"}
    (category, plain), = out["1.0"].items()
    guided = out["3.0"][category]
    assert isinstance(plain["gain"], float) and plain["gain"] != guided["gain"]


def test_copy_dropout_turns_dropped_records_into_copies_and_leaves_the_rest():
    import torch

    from studies.toy.recipe_pilot import drop_to_copy

    z_src, z_tgt = torch.zeros(64, 4, 3), torch.ones(64, 4, 3)
    text = [f"edit {i}" for i in range(64)]
    tgt, prompts = drop_to_copy(z_src, z_tgt, text, 0.25, seed=7)
    dropped = [i for i, t in enumerate(prompts) if t == ""]
    assert 4 < len(dropped) < 32 and (z_tgt == 1).all()                 # about a quarter; the input untouched
    assert all((tgt[i] == 0).all() for i in dropped)                    # a dropped record's target is its source
    assert all((tgt[i] == 1).all() and prompts[i] == text[i] for i in range(64) if i not in dropped)
    assert drop_to_copy(z_src, z_tgt, text, 0.25, seed=7)[1] == prompts   # the same draw again
