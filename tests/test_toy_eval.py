"""The toy model's evaluation helpers: scores against exact targets, per-category means, the loss plot."""
import math

import numpy as np
import pytest

from jobs import toy_card, toy_results
from pipeline.toy_data import make_record


def test_score_of_the_exact_target_and_of_the_source():
    rec = make_record(1, 0, category="recolor")
    perfect = toy_results.score(rec.target, rec.source, rec.target, rec.mask)
    assert perfect["psnr_edit"] is None and perfect["psnr_target"] is None   # infinite: identical images
    assert perfect["psnr_bg"] == math.inf          # outside the mask the target equals the source
    noop = toy_results.score(rec.source, rec.source, rec.target, rec.mask)
    assert noop["psnr_mask_vs_source"] is None and 0 < noop["psnr_edit"] < 40


def test_by_category_means_and_skips_undefined_values():
    rows = [{"category": "a", "x": 10.0}, {"category": "a", "x": 20.0}, {"category": "b", "x": None},
            {"category": "b", "x": math.inf}]
    table = toy_card.by_category(rows, ["x"])
    assert table["a"] == {"n": 2, "x": 15.0}
    assert table["b"] == {"n": 2, "x": None}
    assert table["all"] == {"n": 4, "x": 15.0}


def test_labels_and_correlation():
    assert toy_results.label("random", {"ratio": 0.5, "reg": True}) == "random 0.50, with reg"
    assert toy_results.label("random", {"budget": [1, 2], "reg": False}) == "random, matched budget, no reg"
    assert toy_results.label("tokendrop", {"omega": 0.4, "reg": False}) == "TokenDrop ω=0.4, no reg"
    x = np.array([0.1, 0.2, 0.3, 0.4])
    assert toy_results.correlation(x, x ** 2) == pytest.approx((0.984, 1.0), abs=1e-3)


def test_loss_plot(tmp_path):
    log = [{"phase": "vae", "step": s, "loss": 0.5 / s, "val": 15 + s} for s in (1, 2)]
    log += [{"phase": "transformer", "step": s, "loss": 1.0 / s, "val": 1.1 / s} for s in (1, 2, 3)]
    toy_card.plot_loss(log, tmp_path / "loss.png")
    assert (tmp_path / "loss.png").stat().st_size > 1000
