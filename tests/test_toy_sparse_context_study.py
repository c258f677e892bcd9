"""The Sparse Context toy study's tables: labels, identical-budget comparison, the kept share of the reference."""
import pandas as pd
from studies.sparse_context import doc as sc_doc
from studies.sparse_context import run as sc_run



def _rows() -> pd.DataFrame:
    rows = []
    for model, bonus in (("toy", 0.0), ("toy-ft-drop", 1.0)):
        rows.append({"model": model, "policy": "full", "strategy": "full", "keep": None, "adaptive": False,
                     "psnr_edit": 20.0, "psnr_bg": 30.0, "psnr_vs_full": None, "record_id": "r"})
        for i, s in enumerate(sc_doc.STRATEGIES):
            for keep in (0.5, 0.25):
                rows.append({"model": model, "policy": "sparse_context", "strategy": s, "keep": keep,
                             "adaptive": False, "psnr_edit": 10.0 + i + bonus * (s == "random") + keep,
                             "psnr_bg": 25.0, "psnr_vs_full": 28.0 + 2 * bonus, "record_id": "r"})
    return pd.DataFrame(rows)


def test_labels_and_reference_kept():
    assert sc_run.sc_label("full", {}) == "full"
    assert sc_run.sc_label("sparse_context", {"strategy": "random", "keep": 0.25}) == "random, keep 0.25"
    assert sc_run.sc_label("sparse_context", {"strategy": "attention", "adaptive": True, "mass": 0.9}) == \
        "attention, adaptive (mass 0.9)"
    df = pd.DataFrame({"keep_ratio_per_step": [[1.0, 1.0, 0.25, 0.25], [], None]})
    kept = sc_run.reference_kept(df)
    assert kept[0] == 0.25 and kept[1:].isna().all()


def test_decoupling_table_compares_the_best_task_aware_rule_with_random_at_each_budget():
    table = sc_doc.decoupling_table(_rows()).splitlines()
    # toy, keep 0.5: random 10.5, best task-aware = saliency (i=3) 13.5 -> gap +3.00, spread 3.00
    assert "| toy | 0.50 | 10.50 | saliency | 13.50 | +3.00 | 3.00 |" in table
    # the fine-tuned copy's random rows are 1 dB better: the gap shrinks to +2.00
    assert "| toy-ft-drop | 0.25 | 11.25 | saliency | 13.25 | +2.00 | 2.00 |" in table


def test_quality_table_has_a_cell_per_model_and_budget():
    lines = sc_doc.quality_table(_rows(), "psnr_edit").splitlines()
    assert lines[0].count("keep") == 4            # 2 models x 2 budgets
    assert lines[2] == "| full (every token) | 20.00 | 20.00 | 20.00 | 20.00 |"
    assert lines[3] == "| random | 10.50 | 10.25 | 11.50 | 11.25 |"
    assert len(lines) == 2 + 1 + len(sc_doc.STRATEGIES)


def test_a_missing_copy_is_left_out_not_invented():
    df = _rows()
    assert "toy-ft-nodrop" not in sc_doc.quality_table(df, "psnr_edit")
    assert sc_doc._fmt(float("nan")) == "–"            # an undefined mean is shown as such, not as a number


def test_loss_line_reports_the_drop_sweep():
    line = sc_doc._loss_line("toy-ft-drop", {"train_config": {"transformer": {"steps": 600}}, "wall_s": 606.2,
                                         "val_sweep": {"0": 0.2153, "0.5": 0.2786}})
    assert line == ("- `toy-ft-drop`: 600 steps in 10 min; validation flow-matching loss with 0 / 0.5 of the "
                    "source tokens dropped: 0.215 / 0.279\n")


def test_findings_need_both_copies_and_follow_the_numbers():
    df = _rows()
    assert "missing" in sc_doc.findings(df)
    nodrop = df[df.model == "toy"].assign(model="toy-ft-nodrop")
    text = sc_doc.findings(pd.concat([df, nodrop], ignore_index=True))
    # toy-ft-drop is toy + 1 dB on random only: random helps, the others do not gain
    assert "`random` selection, edit PSNR vs the target: **helps** (+1.00 dB at keep 0.50, +1.00 dB at keep 0.25)" in text
    assert "`saliency` selection, edit PSNR vs the target: **no consistent effect** (+0.00 dB at keep 0.50" in text
    # robustness is judged apart from the edit: every strategy is 2 dB closer to its own full output
    assert "`saliency` selection, PSNR vs its own `full`: **helps** (+2.00 dB at keep 0.50, +2.00 dB at keep 0.25)" in text
    # the spread shrinks on toy-ft-drop (random moves up toward the others): 3.0 -> 2.0 dB
    assert "Decoupling" in text and "**reproduces**" in text and "`toy-ft-drop` 2.00 dB" in text
