"""The cache axis through the Ray pipeline: every policy with every cache, the never-skipping setting equal to
the policy alone pixel for pixel, skips counted per CFG branch in the rows."""
import math

import numpy as np
import PIL.Image

from jobs.preflight import check_run
from pipeline.config import expand_run, parse_config
from pipeline.graph import run_ablation
from pipeline.resume import latest_rows, read_results


def test_caches_compose_with_policies_in_the_pipeline(ray_session, tmp_path):
    raw = {"input": "configs/demo_manifest.jsonl", "output": str(tmp_path / "out"),
           "models": [{"name": "tiny-flux-kontext"}], "policies": ["full", {"name": "tokendrop", "full_steps": 1}],
           "caches": ["none", {"name": "first-block", "threshold": [0.0, 10.0]}], "resolutions": [64], "steps": 4,
           "actors": {"num_gpus": 0, "num_cpus": 1, "min_size": 1, "max_size": 1, "batch_size": 1},
           "metrics": {"compute": ["background", "vs_full"]}}
    cfg = parse_config(raw)
    run = expand_run(cfg)
    check_run(run)
    run_ablation(run)
    rows = latest_rows(read_results(str(tmp_path / "out" / "results"))).to_pandas()
    assert len(rows) == 5 * 6 and (rows["status"] == "ok").all()
    plain = rows[rows["cache"].isna()]
    assert plain["cache_skipped_calls"].isna().all()
    never = rows[rows["cache"] == "first-block threshold=0.0"]
    always = rows[rows["cache"] == "first-block threshold=10.0"]
    assert (never["cache_skipped_calls"] == 0).all() and (never["cache_calls"] == 4).all()
    assert (always["cache_skipped_calls"] > 0).all()
    assert (always["cache_skipped_calls"] == always["cache_skipped_calls_cond"]).all()   # Kontext: one branch
    assert (always["cache_skipped_blocks_uncond"] == 0).all()
    for policy in ("full", "tokendrop"):   # threshold 0 is the policy alone, pixel for pixel
        for rid in rows["record_id"].unique():
            a = plain[(plain["policy"] == policy) & (plain["record_id"] == rid)]["output_uri"].iloc[0]
            b = never[(never["policy"] == policy) & (never["record_id"] == rid)]["output_uri"].iloc[0]
            assert np.array_equal(np.asarray(PIL.Image.open(a)), np.asarray(PIL.Image.open(b)))
    cached_full = never[never["policy"] == "full"]
    assert all(math.isinf(v) for v in cached_full["psnr_vs_full"])   # compared with the uncached full
