"""The run's driver stays small: the model registry's data (protocols, pipelines by name, what a family refuses)
reads without torch or diffusers and says what the adapters run, the checks that import torch run in a child
process whose errors come back as they were, and the accounting reads files one at a time."""
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from actors import models
from core.lazy import Lazy, resolve


def test_every_model_s_protocol_is_its_adapter_s_without_importing_it():
    for name, spec in models.MODELS.items():
        adapter = spec.family.adapter_class(resolve(spec.pipeline))
        assert models.protocol_of(name)["steps"] in (adapter.default_steps, 8)   # toy v2 saves 8 steps
        proto = spec.family.protocol_for(spec.pipeline.__name__)
        assert (proto.steps, proto.guidance, proto.resize_filter) == (
            adapter.default_steps, adapter.default_guidance, adapter.resize_filter), name


def test_a_lazy_reference_is_the_object_when_used_and_names_it_without_importing():
    ref = Lazy("collections:OrderedDict")
    assert ref.__name__ == "OrderedDict" and ref == Lazy("collections:OrderedDict") and resolve(ref) is ref.resolve()
    assert ref(a=1) == {"a": 1} and ref.fromkeys("ab") == {"a": None, "b": None}
    import pickle
    assert pickle.loads(pickle.dumps(ref)) == ref
    with pytest.raises(ValueError, match="module:attribute"):
        Lazy("collections.OrderedDict")


def test_the_registry_imports_neither_torch_nor_diffusers_until_a_pipeline_is_built():
    code = ("import sys\nfrom actors import models\nimport costs\n"
            "spec = models.model('flux-kontext')\n"
            "assert spec.pipeline.__name__ == 'FluxKontextPipeline' and spec.family.refusal('x', None) is None\n"
            "assert costs.edit_cost('qwen-image-edit', 1024, 1024, 50, 4.0).calls_per_step == 2\n"
            "print(sorted(m for m in ('torch', 'diffusers') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stderr[-2000:]


def test_the_checks_run_in_a_child_and_their_error_comes_back(tmp_path):
    from jobs.ablate import main

    config = tmp_path / "c.yaml"
    config.write_text("input: configs/demo_manifest.jsonl\noutput: %s\nmodels: [{name: tiny-flux-kontext}]\n"
                      "policies: [{name: full}, {name: tokendrop, omega: 7}]\nresolutions: [64]\n" % tmp_path)
    import jobs.ablate
    before = "torch" in sys.modules
    with pytest.raises(ValueError, match="omega"):
        jobs.ablate.preflight_in_child(str(config), [])
    assert ("torch" in sys.modules) == before   # imported by the child only
    assert main([str(config), "--set", "policies=[{name: nope}]"]) == 2   # refused before Ray starts


def test_the_accounting_counts_file_by_file(tmp_path):
    from pipeline.accounting import new_row_counts

    for i in range(3):
        pq.write_table(pa.table({"record_id": [f"r{i}", f"r{i + 1}"], "status": ["ok", "error"],
                                 "pairing_rerun_s": [1.5, None]}), tmp_path / f"{i}.parquet")
    pq.write_table(pa.table({"record_id": ["r0"], "status": ["ok"]}), tmp_path / "old.parquet")   # older schema
    pq.write_table(pa.table({"record_id": ["r3"], "status": ["ok"], "pairing_rerun_s": pa.array([None], pa.float64()),
                             "pairing_wait_s": [0.25]}), tmp_path / "read_back.parquet")   # waited, read `full` back
    counts = new_row_counts([str(p) for p in tmp_path.iterdir()], pa.fs.LocalFileSystem())
    assert counts == {"records": 4, "edited": 8, "ok": 5, "errors": 3, "pairing_reruns": 3,
                      "extra_gpu_s_for_pairing": 4.75}


def test_ray_data_s_per_block_stats_are_trimmed_as_the_run_goes():
    from types import SimpleNamespace

    from ray.data import DataContext

    from pipeline.block_stats import KEEP, DropBlockStats, drop_block_stats

    op, other = SimpleNamespace(_output_blocks_stats=list(range(5 * KEEP))), SimpleNamespace()
    DropBlockStats().on_execution_step(SimpleNamespace(_topology=[op, other]))   # iterated as the topology's keys
    assert op._output_blocks_stats == list(range(4 * KEEP, 5 * KEEP))
    DropBlockStats().on_execution_step(SimpleNamespace())   # a Ray without the attributes: nothing to do
    context = DataContext.get_current()
    drop_block_stats(context)
    drop_block_stats(context)
    assert context.custom_execution_callback_classes.count(DropBlockStats) == 1
