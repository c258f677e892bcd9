"""The toy model's evaluation helpers: scores against exact targets, per-category means, the loss plot."""
import math

import numpy as np
import pytest

from toy import card
from toy.data import make_record
from studies.toy import labels as toy_labels
from studies.toy import scoring as toy_scoring


def test_score_of_the_exact_target_and_of_the_source():
    rec = make_record(1, 0, category="recolor")
    perfect = toy_scoring.score(rec.target, rec.source, rec.target, rec.mask)
    assert perfect["psnr_edit"] is None and perfect["psnr_target"] is None   # infinite: identical images
    assert perfect["psnr_bg"] == math.inf          # outside the mask the target equals the source
    noop = toy_scoring.score(rec.source, rec.source, rec.target, rec.mask)
    assert noop["psnr_mask_vs_source"] is None and 0 < noop["psnr_edit"] < 40


def test_by_category_means_and_skips_undefined_values():
    rows = [{"category": "a", "x": 10.0}, {"category": "a", "x": 20.0}, {"category": "b", "x": None},
            {"category": "b", "x": math.inf}]
    table = card.by_category(rows, ["x"])
    assert table["a"] == {"n": 2, "x": 15.0}
    assert table["b"] == {"n": 2, "x": None}
    assert table["all"] == {"n": 4, "x": 15.0}


def test_labels_and_correlation():
    assert toy_labels.label("random", {"ratio": 0.5, "reg": True}) == "random 0.50, with reg"
    assert toy_labels.label("random", {"budget": [1, 2], "reg": False, "matched_omega": 0.4}) == \
        "random, budget of TokenDrop ω=0.4, no reg"
    assert toy_labels.label("tokendrop", {"omega": 0.4, "reg": False}) == "TokenDrop ω=0.4, no reg"
    x = np.array([0.1, 0.2, 0.3, 0.4])
    assert toy_scoring.correlation(x, x ** 2) == pytest.approx((0.984, 1.0), abs=1e-3)


def test_loss_plot(tmp_path):
    log = [{"phase": "vae", "step": s, "loss": 0.5 / s, "val": 15 + s} for s in (1, 2)]
    log += [{"phase": "transformer", "step": s, "loss": 1.0 / s, "val": 1.1 / s} for s in (1, 2, 3)]
    card.plot_loss(log, tmp_path / "loss.png")
    assert (tmp_path / "loss.png").stat().st_size > 1000


def test_labels_of_other_methods_and_active_fraction():
    import pandas as pd

    assert toy_labels.label("topi", {"tau": 0.85, "mode": "merge"}) == "ToPi τ=0.85, merge"
    assert toy_labels.label("spotedit", {"tau": 0.2, "fusion": "spotfusion"}) == "SpotEdit τ=0.2, spotfusion"
    # rows hold the configured parameters only: defaults are named
    assert toy_labels.label("topi", {"tau": 0.5}) == "ToPi τ=0.5, prune"
    assert toy_labels.label("spotedit", {"tau": 0.5}) == "SpotEdit τ=0.5, spotfusion"
    df = pd.DataFrame({"height": [128, 128, 256, 128], "width": [128, 128, 128, 128],
                       "active_per_step": [[64, 64, 32, 16], None, [128, 64], float("nan")]})
    frac = toy_scoring.active_fraction(df)
    assert frac[0] == pytest.approx(44 / 64) and math.isnan(frac[1]) and frac[2] == pytest.approx(96 / 128)
    assert math.isnan(frac[3])


def test_findings_follow_the_numbers():
    import pandas as pd

    from studies.toy import findings

    def rows(bgs):
        out = [{"policy": "full", "label": "full", "ratio": None, "psnr_bg": bgs[0]}]
        for ratio, bg in zip((0.25, 0.5), bgs[1:]):
            out.append({"policy": "random", "ratio": ratio, "psnr_bg": bg,
                        "label": toy_labels.label("random", {"ratio": ratio, "reg": False})})
        return pd.DataFrame(out)

    assert "**reproduces** (30.0 → 25.0 → 20.0 dB" in findings.random_drop(rows([30, 25, 20]), toy_labels.label)
    assert "**does not reproduce**" in findings.random_drop(rows([30, 25, 26]), toy_labels.label)
    assert "**does not reproduce**" in findings.keep_vs_area(0.4, 0.5, -0.1)
    assert "**reproduces**" in findings.keep_vs_area(0.4, 0.5, 0.1)
