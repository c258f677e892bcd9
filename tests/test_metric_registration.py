"""A new metric is one module: its columns reach the output row schema, the report's metric list and the stage
that computes it, with no other file touched."""
import pickle
import textwrap

import numpy as np
import PIL.Image
import pyarrow as pa
import pytest

import actors
import metrics
import policies
from pipeline.finish_stage import finish_units
from pipeline.records import base_row, error_row, new_record, output_schema, utcnow
from pipeline.configuration import Configuration
from pipeline.unit_stage import UnitEdit
from report.notes import row_reason
from report.tables import report_metrics, summary_table

MAE = textwrap.dedent('''
    """Mean absolute error of the edit (at the source's size) against the source, on [0, 1]."""
    import numpy as np
    import pyarrow as pa

    from metrics import Column, Metric
    from metrics.images import pair


    class MeanAbsoluteError(Metric, name="mae"):
        stage = "finish"
        columns = (Column("mae_whole", pa.float64(), "mean |edit - source| over every pixel", reported=True),)

        def score(self, scoring):
            x, y = pair(scoring.edited, scoring.source)
            return {"mae_whole": float(np.abs(x - y).mean())}
''')


@pytest.fixture
def mae_metric(plugin_module):
    """Imports the one-file metric from a temporary module; the registry is as before afterwards."""
    return plugin_module("mae_metric", MAE, metrics.REGISTRY)


def _unit_batch(flux_pipe, source: PIL.Image.Image, mask: np.ndarray) -> tuple[pa.Table, np.ndarray]:
    """One unit with one real tiny `full` edit, as the GPU stage hands it to the finish stage."""
    result = actors.Editor(flux_pipe, policies.make("full")).edit(source, "make it red", seed=0, steps=2,
                                                                   height=64, width=64)
    config = Configuration(model="tiny-flux-kontext", model_name="tiny-flux-kontext", model_path=None,
                           model_options={}, policy="full", policy_params={}, height=64, width=64, seed=0, steps=2,
                           guidance_scale=None, resize_filter=None, cache=None, cache_label=None,
                           config_id="c_full", label="full", full_config_id="c_full")
    record = new_record(id="r0", image="x.png", instruction="make it red")
    now = utcnow()
    row = base_row(record, config.to_row(), "run") | {"status": "ok", "device": "cpu", "started_at": now, "finished_at": now}
    image = np.asarray(result.image.convert("RGB"))
    inputs = {"source": np.asarray(source.convert("RGB")), "mask": mask, "references": []}
    edits = [UnitEdit(config, row, emit=True, image=image)]
    batch = pa.table({"inputs": [pickle.dumps(inputs)], "edits": [pickle.dumps(edits)]})
    return batch, image


def test_a_metric_defined_in_one_module_is_in_the_schema_the_report_and_the_finish_stage(
        mae_metric, flux_pipe, image_factory, tmp_path):
    assert output_schema().field("mae_whole").type == pa.float64()
    assert "mae_whole" in report_metrics()
    assert metrics.metric_of("mae_whole") is mae_metric.MeanAbsoluteError
    source = image_factory(80, 72)   # another size than the edit's: metrics score at the source's size
    mask = np.zeros((72, 80), bool)
    mask[10:30, 20:50] = True
    batch, image = _unit_batch(flux_pipe, source, mask)

    table = finish_units(batch, str(tmp_path / "out"), None)   # compute None: every registered metric
    assert table.schema == output_schema()
    row = table.to_pylist()[0]
    at_source = PIL.Image.fromarray(image).resize(source.size, PIL.Image.BICUBIC)
    by_hand = np.abs(np.asarray(at_source, np.float64) - np.asarray(source, np.float64)).mean() / 255
    assert row["status"] == "ok" and row["mae_whole"] == pytest.approx(by_hand, rel=1e-12) and by_hand > 0
    assert row["psnr_bg"] is not None   # the built-in metrics still run beside it

    skipped = finish_units(_unit_batch(flux_pipe, source, mask)[0], str(tmp_path / "out2"), None, ["background"])
    assert skipped.column("mae_whole").to_pylist() == [None]   # not in metrics.compute: not computed
    failed = error_row(new_record(id="r1", instruction="x"), {"config_id": "c"}, RuntimeError("boom"), run_id="r")
    assert "mae_whole" in failed and failed["mae_whole"] is None

    df = table.to_pandas()
    df["label"] = "full"
    summary = summary_table(df)
    assert summary.loc[0, "mae_whole"] == pytest.approx(by_hand)
    assert row_reason(df.iloc[0], "mae_whole") == "not computed"   # no status column: the default reason


def test_a_taken_name_or_column_is_refused(mae_metric):
    with pytest.raises(ValueError, match="metric name 'mae' is taken by mae_metric"):
        class Again(metrics.Metric, name="mae"):
            def score(self, scoring):
                return {}   # never called: defining the class is what is refused
    with pytest.raises(ValueError, match=r"columns \['psnr_bg'\] belong to another metric"):
        class Psnr(metrics.Metric, name="psnr_again"):
            columns = (metrics.Column("psnr_bg", pa.float64(), "a second psnr_bg"),)

            def score(self, scoring):
                return {}   # never called: defining the class is what is refused


def test_registry_is_the_builtin_metrics_again():
    assert list(metrics.REGISTRY) == ["background", "vs_full", "lpips", "clip", "structure", "judge"]
    assert "mae_whole" not in output_schema().names and "mae_whole" not in report_metrics()
