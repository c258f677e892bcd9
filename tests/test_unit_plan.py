"""The automatic unit split (`pipeline.unit_plan`): its arithmetic on PIE-Bench's size, what the config fixes,
and that planning imports neither torch nor diffusers."""
import math
import subprocess
import sys

import pytest

from pipeline.config import UnitsConfig, expand_run, parse_config
from pipeline.unit_plan import PAIRING_BUDGET, edit_weight, needs_records, plan_units


def _pie_grid(configurations=20, resolutions=(1024,)):
    """`dropedit simulate --configurations 20`'s grid: full + random arms at keep ratios 0.1-0.95."""
    ratios = [round(0.1 + 0.85 * i / max(configurations - 2, 1), 4) for i in range(configurations - 1)]
    cfg = parse_config({"input": "m.jsonl", "output": "/tmp/o", "models": [{"name": "flux-kontext"}],
                        "policies": ["full", {"name": "random", "ratio": ratios}], "resolutions": list(resolutions),
                        "steps": 28, "metrics": {"compute": []}})
    return expand_run(cfg).configurations


@pytest.mark.parametrize("actors,parts,tail,units", [(128, 4, 128, 700 - 128 + 128 * 4),
                                                      (256, 3, 256, 700 - 256 + 256 * 3)])
def test_pie_bench_on_many_actors_splits_its_last_round_within_the_pairing_budget(actors, parts, tail, units):
    configs = _pie_grid()
    plan = plan_units(configs, UnitsConfig(pairing="rerun"), actors, 700)
    assert (plan.parts, plan.tail, plan.units, plan.pairing_edits) == (parts, tail, units, tail * (parts - 1))
    full = next(c for c in configs if c.is_reference)
    share = plan.pairing_edits * edit_weight(full) / (700 * sum(edit_weight(c) for c in configs))
    assert plan.pairing_share == pytest.approx(share, abs=1e-4) and share <= PAIRING_BUDGET
    assert 0.067 < edit_weight(full) / sum(edit_weight(c) for c in configs) < 0.068   # full: 6.8 % of a record
    more = plan_units(configs, UnitsConfig(pairing="rerun"), actors, 700, weigh=lambda c: 1.0)   # share of edits
    assert more.parts >= plan.parts


def test_no_split_where_actors_have_enough_records_or_the_budget_allows_none():
    configs, rerun = _pie_grid(), UnitsConfig(pairing="rerun")
    assert plan_units(configs, UnitsConfig(), 32, 700).parts == 1              # 21.9 records per actor
    assert plan_units(configs, UnitsConfig(), 1, None).parts == 1              # one actor: no tail
    assert not needs_records(UnitsConfig(), 1) and needs_records(UnitsConfig(), 2)
    assert plan_units(configs, rerun, 1024, 700).parts == 1            # every record split: 6.8 % > 5 %
    two_sizes = _pie_grid(resolutions=(512, 1024))   # two groups: splitting them apart is free, the 1024² one
    plan = plan_units(two_sizes, rerun, 1024, 700)   # once more costs its full (1.2 % of the work)
    assert (plan.parts, plan.tail, plan.pairing_edits) == (3, None, 700) and plan.pairing_share <= PAIRING_BUDGET


@pytest.mark.parametrize("actors,parts", [(64, 2), (128, 4), (256, 8)])
def test_reading_full_back_plans_no_rerun_when_every_actor_times_a_full_before_the_tail(actors, parts):
    """700 - actors whole records come first: every actor's first unit runs `full`, so no part re-runs it and
    the split goes to the 20-units-per-actor target, ceil(20 A / R)."""
    plan = plan_units(_pie_grid(), UnitsConfig(), actors, 700)
    assert (plan.parts, plan.tail, plan.pairing_edits, plan.pairing_share) == (parts, actors, 0, 0.0)
    assert plan.parts == math.ceil(20 * actors / 700) and "read back" in plan.why


def test_reading_full_back_plans_the_first_rounds_reruns_where_actors_outnumber_whole_records():
    """1,024 actors, 700 records, all split: the first round is 1,024 parts, (k - 1) / k of them on an actor
    with no `full` timed yet; the rule keeps those re-runs within the budget (k = 2: 512, 4.95 %)."""
    plan = plan_units(_pie_grid(), UnitsConfig(), 1024, 700)
    assert (plan.parts, plan.tail, plan.pairing_edits) == (2, None, 512)
    assert plan.pairing_share <= PAIRING_BUDGET


def test_the_config_fixes_the_split():
    configs = _pie_grid()
    assert plan_units(configs, UnitsConfig(split="none"), 128, None).parts == 1
    fixed = plan_units(configs, UnitsConfig(split=5), 128, None, files=3)
    assert (fixed.parts, fixed.tail) == (5, math.ceil(128 / 3))
    assert plan_units(configs, UnitsConfig(split=2, records="all"), 8, None).tail is None
    assert plan_units(configs, UnitsConfig(split=2, records=10), 8, None).tail == 10


def test_planning_a_run_imports_neither_torch_nor_diffusers():
    code = ("import sys, jobs.ablate\n"
            "from pipeline.config import load_config, expand_run, UnitsConfig\n"
            "from pipeline.unit_plan import plan_units\n"
            "run = expand_run(load_config('configs/demo.yaml', ['models.0.name=flux-kontext', 'resolutions=[1024]', 'steps=null', 'guidance_scale=null']))\n"
            "plan = plan_units(run.configurations, UnitsConfig(), 128, 700)\n"
            "assert run.configurations[0].steps == 28 and plan.parts > 1, plan\n"
            "print(sorted(m for m in ('torch', 'diffusers', 'torchvision', 'transformers') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"
