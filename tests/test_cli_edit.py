"""`dropedit edit` as a user runs it: a subprocess, an image file in, a PNG and one JSON line out."""
import json
import os
import subprocess
import sys

import PIL.Image
import pytest


def _run(*args):
    return subprocess.run([sys.executable, "-m", "jobs.cli", "edit", *args], capture_output=True, text=True,
                          timeout=600)


@pytest.mark.parametrize("model,size", [("tiny-flux-kontext", "96x64"), ("tiny-qwen-image-edit", "64x64")])
def test_edit_writes_image_and_json(tmp_path, image_factory, model, size):
    src, out = tmp_path / "in.png", tmp_path / "out.png"
    image_factory(96, 64).save(src)
    proc = _run("--model", model, "--policy", "tokendrop", "--set", "omega=0.2", "--set", "full_steps=1",
                "--image", str(src), "--instruction", "make it red", "--out", str(out), "--steps", "3",
                "--size", size)
    assert proc.returncode == 0, proc.stderr
    line = json.loads(proc.stdout.strip().splitlines()[-1])
    assert line["steps"] == 3 and 0 < line["keep_ratio_mean"] <= 1 and line["runtime_s"] > 0
    assert line["guidance_scale"] == (3.5 if "flux" in model else 4.0)   # the family's protocol, as run
    assert line["params"]["omega"] == 0.2
    assert line["params"]["kernel"] == 11 and line["params"]["reg"] is True   # defaults, as applied
    w, h = (int(v) for v in size.split("x"))
    assert PIL.Image.open(out).size == (w, h)
    assert "3/3" in proc.stderr   # the progress bar ran over the steps


@pytest.mark.parametrize("args,fragment", [
    (["--policy", "tokendrop", "--set", "omega=abc"], "omega"),
    (["--policy", "nope"], "accepted: focus, full, random,"),
    (["--model", "nope"], "unknown model"),
    (["--instruction", ""], "instruction is empty"),
    (["--out", "/nonexistent-dir/x.png"], "does not exist"),
    (["--out", "x.notanimage"], "unknown image extension"),
    (["--image", "/nonexistent.png"], "cannot be read as an image"),
    (["--policy", "tokendrop", "--set", "omega=5"], "must lie in [-1.0, 1.0]"),
    (["--model", "toy-flux-kontext", "--size", "256x256"], "trained at 128x128 only"),
])
def test_edit_bad_input_is_a_clear_error(tmp_path, image_factory, args, fragment):
    src = tmp_path / "in.png"
    image_factory(64, 64).save(src)
    base = {"--model": "tiny-flux-kontext", "--image": str(src), "--instruction": "make it red",
            "--out": str(tmp_path / "o.png"), "--steps": "1"}
    for key, value in zip(args[::2], args[1::2]):
        base[key] = value
    proc = _run(*[x for kv in base.items() for x in kv])
    assert proc.returncode == 2
    assert fragment in proc.stderr


def test_bad_output_is_refused_before_the_model_loads(tmp_path, image_factory):
    """The refusal comes from the argument checks: no model is loaded, so it takes no model time."""
    src = tmp_path / "in.png"
    image_factory(64, 64).save(src)
    proc = _run("--model", "flux-kontext", "--image", str(src), "--instruction", "x",
                "--out", str(tmp_path / "missing" / "o.png"))
    assert proc.returncode == 2 and "does not exist" in proc.stderr
    assert "needs --model-path" not in proc.stderr   # would have been the model loader's complaint


def test_help_names_every_model_and_policy():
    import actors
    import policies
    from jobs import edit

    assert set(edit.MODEL_NAMES) == set(actors.MODELS)
    assert set(edit.POLICY_NAMES) == set(policies.REGISTRY)
    proc = subprocess.run([sys.executable, "-m", "jobs.cli", "edit", "--help"], capture_output=True, text=True,
                          env={**os.environ, "COLUMNS": "500"})   # no line wrapping inside names
    text = proc.stdout
    for name in (*edit.MODEL_NAMES, *edit.POLICY_NAMES):
        assert name in text, name
    assert "default: the model's (Kontext 28, Qwen-Image-Edit 50)" in text


def test_spotedit_that_skips_reports_its_computed_query_share(tmp_path, image_factory):
    """With a τ that calls every token unchanged, SpotEdit computes queries for none after its full steps."""
    src, out = tmp_path / "in.png", tmp_path / "out.png"
    image_factory(128, 128).save(src)
    proc = _run("--model", "toy-flux-kontext", "--policy", "spotedit", "--set", "tau=1e9", "--set",
                "initial_steps=1", "--set", "reset_steps=[]", "--image", str(src), "--instruction",
                "remove the red circle", "--out", str(out), "--steps", "4")
    assert proc.returncode == 0, proc.stderr
    line = json.loads(proc.stdout.strip().splitlines()[-1])
    assert line["query_ratio_mean"] < 1 and line["keep_ratio_mean"] == 1
    assert line["params"]["dilate"] == 0 and line["params"]["reset_steps"] == []   # resolved for Kontext
    assert (line["width"], line["height"]) == (128, 128)   # the toy model's own size, from its files
