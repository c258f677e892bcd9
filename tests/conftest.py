"""Shared fixtures: tiny real-class pipelines (built once per session) and small test images."""
import contextlib
import importlib
import sys

import numpy as np
import PIL.Image
import pytest

import actors


@pytest.fixture(scope="session")
def flux_pipe():
    return actors.load_pipeline("tiny-flux-kontext", device="cpu")


@pytest.fixture(scope="session")
def qwen_pipe():
    return actors.load_pipeline("tiny-qwen-image-edit", device="cpu")


def make_image(width: int, height: int, seed: int = 0) -> PIL.Image.Image:
    """A smooth image with a few shapes: structure for the VAE, not noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width] / max(width, height)
    img = np.stack([x, y, 0.5 * (x + y)], -1) * 200 + 20
    for _ in range(3):
        cx, cy, r = rng.integers(0, width), rng.integers(0, height), rng.integers(4, max(5, width // 4))
        img[(np.mgrid[0:height, 0:width][0] - cy) ** 2 + (np.mgrid[0:height, 0:width][1] - cx) ** 2 < r * r] = rng.integers(0, 255, 3)
    return PIL.Image.fromarray(img.clip(0, 255).astype(np.uint8))


@pytest.fixture
def image_factory():
    return make_image


from conftest_s3 import moto_s3, s3_prefix  # noqa: E402,F401  (one moto_server per session)


@pytest.fixture(scope="session")
def ray_session(moto_s3):
    """One local Ray cluster for the whole session, started after the S3 variables are set so that
    its workers inherit them (4 logical CPUs: some Ray Data plans stall with 2)."""
    import os

    import ray

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    # address="local": a fresh cluster even when `ray start` left one (or its stale address) on this machine
    ray.init(address="local", num_cpus=4, include_dashboard=False, ignore_reinit_error=True)
    yield ray
    ray.shutdown()


def _score_edit(actor, result, source, mask, config, record) -> dict:
    """The columns the edit stage gives one edit: the GPU actor's model metrics (`score`) and the CPU stage's
    pixel metrics, on `result.image` as the editor made it (the actor's metric models must be built)."""
    import numpy as np

    from pipeline.scoring import StageMetrics, scoring_of
    from pipeline.configuration import Configuration
    from pipeline.unit_stage import UnitEdit

    h, w = result.image.height, result.image.width
    conf = Configuration(**{"model": "m", "model_name": "m", "model_path": None, "model_options": {},
                            "policy": "full", "policy_params": {}, "height": h, "width": w, "seed": 0, "steps": 1,
                            "guidance_scale": None, "resize_filter": None, "cache": None, "cache_label": None,
                            "config_id": "c", "label": "full", "full_config_id": "c", **config})
    edit = UnitEdit(conf, {"status": "ok"}, emit=True, image=np.asarray(result.image.convert("RGB")))
    inputs = {"source": np.asarray(source.convert("RGB")), "mask": mask}
    actor.score([edit], inputs, record.to_dict())
    finish = StageMetrics("finish", actor.metrics.settings)   # the finish stage's metrics, same settings
    edit.row.update(finish.score(scoring_of(edit, inputs, None)))
    return {k: v for k, v in edit.row.items() if k != "status"}


@pytest.fixture
def score_edit():
    return _score_edit


@pytest.fixture
def plugin_module(tmp_path, monkeypatch):
    """`load(name, source, *registries)`: imports the module `name` written from `source` in a temporary folder
    (a plug-in defined outside the project, as a user would); when the test ends the module is forgotten and
    every registry given is as it was before."""
    undo = contextlib.ExitStack()

    def load(name: str, source: str, *registries: dict):
        (tmp_path / f"{name}.py").write_text(source)
        monkeypatch.syspath_prepend(str(tmp_path))
        for registry in registries:
            undo.callback(lambda r=registry, before=dict(registry): (r.clear(), r.update(before)))
        undo.callback(sys.modules.pop, name, None)
        return importlib.import_module(name)

    with undo:
        yield load
