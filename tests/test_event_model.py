"""The discrete-event model of the ablation's scheduling (`simulation.event_model`) on cases computed by hand,
and its calibration (`simulation.calibrate`) on runs the model itself made with known overheads."""
from dataclasses import replace

import pytest

from simulation.calibrate import errors, fit
from simulation.event_model import Overheads, Scenario, predict, schedule, unit_parts


def test_four_equal_units_on_two_actors():
    # 4 records of 2 configurations x 5 s: 4 units of 10 s
    p = predict(Scenario(gpus=2, records=4, edit_s=[5.0, 5.0], load_s=20.0, noise=0.0), seeds=1)
    assert p.units == 4 and p.ideal_makespan_s == 20.0   # 4 x 10 s over 2 GPUs
    assert p.makespan_s == 20.0 + 20.0                   # load, then 2 units on each actor back to back
    assert p.gpu_busy == 0.5 and p.makespan_over_ideal == 2.0 and p.extra_gpu_s_for_pairing == 0.0


def test_a_unit_queued_behind_a_long_one_waits_while_another_actor_idles():
    # Ray Data hands each actor up to 2 units at once: the 3rd unit goes to actor 0 (tie, lowest id) behind
    # the 10 s one, although actor 1 is idle from t=2; greedy dispatch on completion would end at 10
    assert schedule([10.0, 1.0, 1.0, 1.0], gpus=2, dispatch=0.0, gap=0.0) == 11.0
    assert schedule([10.0, 10.0, 10.0], gpus=4, dispatch=0.0, gap=0.0) == 10.0


def test_an_actor_of_two_gpus_shares_one_queue_between_them():
    # one actor holding 2 GPUs (up to 4 units): units start on whichever of its GPUs frees first, so the short
    # ones pass the 10 s one on the other GPU (two 1-GPU actors end at 11, above)
    assert schedule([10.0, 1.0, 1.0, 1.0], gpus=2, dispatch=0.0, gap=0.0, per_actor=2) == 10.0
    assert schedule([4.0, 4.0], gpus=2, dispatch=0.0, gap=0.0, per_actor=2) == 4.0   # both at once
    # 2 actors of 2 GPUs: 4 in flight each; the 5th unit queues on actor 0 behind its first to end
    assert schedule([3.0, 3.0, 3.0, 3.0, 3.0], gpus=4, dispatch=0.0, gap=0.0, per_actor=2) == 6.0


def test_figures_after_the_load_leave_the_load_out():
    p = predict(Scenario(gpus=2, records=4, edit_s=[5.0, 5.0], load_s=20.0, noise=0.0), seeds=1)
    assert p.makespan_over_ideal == 2.0 and p.makespan_after_load_over_ideal == 1.0   # (40 - 20) / 20
    assert p.gpu_busy == 0.5 and p.gpu_busy_after_load == 1.0


def test_overheads_count_as_wall_seconds_over_the_scale():
    # scale 0.5: 1 wall second is 2 simulated seconds; dispatch 1 s each: units start at 0 and 2
    s = Scenario(gpus=2, records=2, edit_s=[4.0], load_s=0.0, noise=0.0, scale=0.5,
                 overheads=Overheads(dispatch_s=1.0, gap_s=0.5, fixed_s=3.0))
    assert predict(s, seeds=1).makespan_s == 2.0 + 4.0 + 1.0 + 6.0   # last start, edit, gap, end


def test_split_units_rerun_the_reference_once_per_extra_part():
    assert unit_parts([9.0, 1.0, 2.0, 3.0, 4.0], 2) == [([0, 1, 3], 0), ([0, 2, 4], 1)]
    s = Scenario(gpus=4, records=10, edit_s=[9.0, 1.0, 2.0, 3.0, 4.0], load_s=0.0, noise=0.0,
                 split_parts=2, split_records=4)
    p = predict(s, seeds=1)
    assert p.units == 6 + 4 * 2
    assert p.extra_gpu_s_for_pairing == 4 * 9.0   # the last 4 records, one extra `full` each
    assert p.ideal_makespan_s == (10 * 19.0 + 4 * 9.0) / 4
    every = predict(replace(s, split_records=None, split_parts=3), seeds=1)
    assert every.units == 30 and every.extra_gpu_s_for_pairing == 10 * 2 * 9.0


def test_split_units_that_read_the_reference_back_add_no_work():
    assert unit_parts([9.0, 1.0, 2.0, 3.0, 4.0], 2, read_back=True) == [([0, 1, 3], 0), ([2, 4], 0)]
    s = Scenario(gpus=4, records=10, edit_s=[9.0, 1.0, 2.0, 3.0, 4.0], load_s=0.0, noise=0.0,
                 split_parts=2, split_records=4, pairing="read_back")
    p = predict(s, seeds=1)
    assert p.units == 6 + 4 * 2 and p.extra_gpu_s_for_pairing == 0.0
    assert p.ideal_makespan_s == 10 * 19.0 / 4


def test_noise_draws_are_repeatable_and_average_near_the_lognormal_mean():
    s = Scenario(gpus=8, records=400, edit_s=[1.0] * 10, load_s=0.0, noise=0.15)
    a, b = predict(s, seeds=2), predict(s, seeds=2)
    assert a == b
    mean_factor = 2.718281828 ** (0.15 ** 2 / 2) * (1 + 0.02 * 2)   # lognormal mean, 2 % of 3x stragglers
    assert a.ideal_makespan_s * 8 / 4000 == pytest.approx(mean_factor, rel=0.02)


def _synthetic_runs(truth: Overheads) -> dict[str, dict]:
    """Runs as `dropedit simulate` writes them, made by the model itself with known overheads."""
    runs = {}
    for gpus, scale in ((4, 0.05), (8, 0.1), (16, 0.2), (32, 0.4)):
        base = dict(gpus=gpus, records=80, edit_s=[6.0, 3.0, 4.0, 5.0], load_s=30.0, noise=0.15, scale=scale)
        p = predict(Scenario(**base, overheads=truth))
        runs[f"sim_{gpus}"] = {**base, "units": p.units, "makespan_s": p.makespan_s,
                               "ideal_makespan_s": p.ideal_makespan_s, "gpu_busy": p.gpu_busy}
    return runs


def test_calibration_recovers_the_overheads_of_a_synthetic_dataset():
    truth = Overheads(dispatch_s=0.05, gap_s=0.4, fixed_s=4.0)
    runs = _synthetic_runs(truth)
    fitted = fit(runs)
    assert all(abs(e["makespan_error"]) < 0.005 for e in errors(runs, fitted)), (fitted, errors(runs, fitted))
    assert fitted.gap_s == pytest.approx(truth.gap_s, abs=0.1)
    assert fitted.fixed_s == pytest.approx(truth.fixed_s, abs=1.5)
