"""studies.toy.cfg_probe on the fast v1 toy (128 px), one record, two steps: plain sampling and true CFG give a
gain and a background PSNR per category, and guidance changes the edit (the negative branch is really run)."""
from studies.toy.cfg_probe import probe


def test_true_cfg_probe_scores_each_scale_and_guidance_changes_the_edit():
    out = probe("toy-flux-kontext", [1.0, 3.0], n=1, steps=2)
    assert set(out) == {"1.0", "3.0"}
    (category, plain), = out["1.0"].items()
    guided = out["3.0"][category]
    assert isinstance(plain["gain"], float) and plain["gain"] != guided["gain"]
