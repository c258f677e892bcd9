"""Every preset of configs/papers/ (and configs/flux2/) runs end to end on the tiny models (slow: `pytest -m slow`).

Each preset is read with the overrides that put it on the tiny model of its family (two demo records, 2 steps
at 64², a CPU-only actor: the presets ask for a GPU, and without `actors.num_gpus=0` Ray waits for one
forever). Presets that share the tiny model and the seeds run as one `dropedit run` (`jobs.ablate.main`:
preflight, the Ray Data plan on the session's Ray, the report) of the union of their policies; each preset's
own grid is then checked in the rows: every (record, configuration) pair exactly once, `ok`, every column of
the output schema, the metrics whose weights are absent here (CLIP, DINO, LPIPS, the judge) null with a
status saying why, and the matched-budget arms (`budget_from`) with exactly their reference row's kept
counts."""
import json
from pathlib import Path

import pytest
import yaml

import policies
from jobs.ablate import main as ablate
from pipeline.config import BUDGET_FROM, apply_overrides, expand_grid, load_config
from metrics.clip import NO_CLIP_MODEL
from metrics.judge.metric import NO_JUDGE
from metrics.structure import NO_DINO_MODEL
from pipeline.records import STATUS_OK, output_schema
from pipeline.resume import read_results

ROOT = Path(__file__).resolve().parents[1]
PRESETS = sorted([*(ROOT / "configs" / "papers").glob("*.yaml"), *(ROOT / "configs" / "flux2").glob("*.yaml")])
DEMO = ROOT / "configs" / "demo_manifest.jsonl"
N_RECORDS = 2

pytestmark = pytest.mark.slow


def _tiny_model(name: str, multi_reference: bool) -> str:
    if name.startswith("qwen-image-edit"):
        return "tiny-qwen-image-edit-plus" if multi_reference else "tiny-qwen-image-edit"
    if name.startswith("flux2-klein"):
        return "tiny-flux2-klein-kv" if name.endswith("-kv") else "tiny-flux2-klein"
    assert name.startswith("flux-kontext"), f"no tiny model for {name!r}"
    return "tiny-flux-kontext"


def _manifest(tmp_path: Path, multi_reference: bool) -> Path:
    """The first demo records (paths made absolute); for a multi-reference preset each record also gets the
    next demo image as a second reference."""
    rows = [json.loads(line) for line in DEMO.read_text().splitlines() if line.strip()]
    for row in rows:
        for key in ("image", "mask", "target"):
            if row.get(key):
                row[key] = str(DEMO.parent / row[key])
    picked = rows[:N_RECORDS]
    if multi_reference:
        for i, row in enumerate(picked):
            row["references"] = [rows[(i + 1) % len(rows)]["image"]]
    path = tmp_path / "manifest.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in picked) + "\n")
    return path


def _overrides(preset: Path, tmp_path: Path) -> list[str]:
    """The `--set` overrides that put a preset on the tiny model of its family, two records, 2 steps at 64²,
    a CPU-only actor. ToPi's `exempt_layers` (10 by default, for FLUX's 57 and Qwen's 60 blocks) leaves no
    layer to prune on a 2-4 layer tiny transformer: it becomes 1."""
    raw = load_config(str(preset), known_policies=set(policies.REGISTRY))
    multi = "multi" in preset.stem   # Qwen-Image-Edit-Plus with several references
    out = [f"input={_manifest(tmp_path, multi)}", "steps=2", "resolutions=[64]", f"output={tmp_path / 'out'}",
           "actors.num_gpus=0", "actors.num_cpus=1", "actors.min_size=1", "actors.max_size=1",
           "actors.batch_size=1"]
    for i, model in enumerate(raw.models):
        out += [f"models.{i}.name={_tiny_model(model.name, multi)}", f"models.{i}.path=null"]
    out += [f"policies.{i}.exempt_layers=1" for i, p in enumerate(raw.policies) if p.name == "topi"]
    return out


def _group(preset: Path) -> str:
    """Presets that share the tiny model and the seeds run as one grid (one Ray run, one actor per stage):
    a run per preset would spend most of its time starting actors."""
    cfg = load_config(str(preset), known_policies=set(policies.REGISTRY))
    models = "+".join(_tiny_model(m.name, "multi" in preset.stem) for m in cfg.models)
    return f"{models}-seeds{'-'.join(map(str, cfg.seeds))}"


GROUPS = {p: _group(p) for p in PRESETS}
_RUNS: dict[str, dict] = {}


def _raw(preset: Path, overrides: list[str]) -> dict:
    return apply_overrides(yaml.safe_load(preset.read_text()), overrides)


def _run_group(group: str, tmp_path: Path) -> dict:
    """One `dropedit run` of the union of the group's presets' policies (each preset with the overrides);
    the presets must agree on everything else."""
    members = [p for p in PRESETS if GROUPS[p] == group]
    overrides = _overrides(members[0], tmp_path)
    base = _raw(members[0], overrides)
    merged = {**base, "run_id": group, "policies": []}
    for preset in members:
        raw = _raw(preset, _overrides(preset, tmp_path))
        rest = {k: v for k, v in raw.items() if k not in ("run_id", "policies", "output")}
        assert rest == {k: v for k, v in base.items() if k not in ("run_id", "policies", "output")}, preset.stem
        merged["policies"] += raw["policies"]
    config = tmp_path / f"{group}.yaml"
    config.write_text(yaml.safe_dump(merged, sort_keys=False))   # key order is label order: budget_from
    rc = ablate([str(config)])
    if rc != 0:
        return {"rc": rc}
    table = read_results(str(tmp_path / "out" / "results"))
    records = [json.loads(line)["id"] for line in (tmp_path / "manifest.jsonl").read_text().splitlines()]
    cfg = load_config(str(config), known_policies=set(policies.REGISTRY))
    return {"rc": rc, "table": table, "records": records, "out": tmp_path / "out",
            "configs": {c.config_id for c in expand_grid(cfg)}}


@pytest.mark.parametrize("preset", sorted(PRESETS, key=lambda p: (GROUPS[p], p.stem)), ids=lambda p: p.stem)
def test_preset_runs_on_the_tiny_models(preset, ray_session, tmp_path_factory, capsys):
    group = GROUPS[preset]
    if group not in _RUNS:
        _RUNS[group] = _run_group(group, tmp_path_factory.mktemp(group))
        captured = capsys.readouterr()
        assert _RUNS[group]["rc"] == 0, captured.err
    run = _RUNS[group]
    assert run["rc"] == 0, f"the run of {group} failed (see its first preset)"
    assert (run["out"] / "report").is_dir()
    # this preset on its own, as `dropedit run PRESET --set ...` would read it
    cfg = load_config(str(preset), _overrides(preset, run["out"].parent), known_policies=set(policies.REGISTRY))
    configs = {c.config_id: c for c in expand_grid(cfg)}

    table = run["table"]
    assert table is not None
    # every column of the output schema, with its type
    assert table.schema.names == output_schema().names
    assert [f.type for f in table.schema] == [f.type for f in output_schema()]
    everything = table.to_pandas()
    # every (record, configuration) pair of the group exactly once, nothing else
    pairs = list(zip(everything["config_id"], everything["record_id"]))
    assert len(pairs) == len(set(pairs))
    assert set(pairs) == {(c, r) for c in run["configs"] for r in run["records"]}
    assert set(configs) <= run["configs"]   # this preset's grid is in the group's
    rows = everything[everything["config_id"].isin(list(configs))]
    assert len(rows) == len(configs) * N_RECORDS

    errors = rows[rows["status"] != STATUS_OK]
    assert errors.empty, errors[["label", "record_id", "error"]].to_string()
    assert rows["error"].isna().all()
    assert (rows["steps"] == 2).all() and (rows["height"] == 64).all() and (rows["width"] == 64).all()
    assert all(len(k) == 2 for k in rows["kept_per_step"])
    assert all(Path(uri).is_file() for uri in rows["output_uri"])

    # metrics that need no weights have numbers (the demo records have masks; non-full rows a full reference)
    assert rows[["psnr_bg", "ssim_bg", "mse_bg"]].notna().all().all()
    pruned = rows[rows["policy"] != "full"]
    assert not pruned.empty and pruned[["psnr_vs_full", "ssim_vs_full"]].notna().all().all()
    # metrics whose weights are absent here: null, and the status says why
    for column in ("lpips_bg", "lpips_vs_full", "clip_whole", "clip_edited", "structure_distance",
                   "judge_sc", "judge_pq", "judge_overall", "judge_imgedit_avg", "judge_raw", "judge_protocol"):
        assert rows[column].isna().all(), column
    assert rows["lpips_status"].str.contains("unavailable").all()
    assert (rows["clip_status"] == NO_CLIP_MODEL).all()
    assert (rows["structure_status"] == NO_DINO_MODEL).all()
    assert (rows["judge_status"] == NO_JUDGE).all()

    # matched budgets: exactly the reference configuration's per-step kept counts, record by record
    kept = {(c, r): list(k) for c, r, k in zip(rows["config_id"], rows["record_id"], rows["kept_per_step"])}
    matched = [c for c in configs.values() if BUDGET_FROM in c.policy_params]
    assert bool(matched) == preset.stem.startswith("tokendrop")
    for conf in matched:
        source = configs[conf.budget_source]
        assert source.label == conf.policy_params[BUDGET_FROM]
        for rec in run["records"]:
            assert kept[(conf.config_id, rec)] == kept[(source.config_id, rec)], (conf.label, rec)

    if "multi" in preset.stem:   # the second reference's tokens are in the context: more than one 64² image's
        full = rows[rows["policy"] == "full"]
        assert all(k[0] > (64 // 16) ** 2 for k in full["kept_per_step"])
