"""`dropedit edit` as a user runs it: a subprocess, an image file in, a PNG and one JSON line out."""
import json
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
    assert line["params"]["omega"] == 0.2
    w, h = (int(v) for v in size.split("x"))
    assert PIL.Image.open(out).size == (w, h)
    assert "3/3" in proc.stderr   # the progress bar ran over the steps


@pytest.mark.parametrize("args,fragment", [
    (["--policy", "tokendrop", "--set", "omega=abc"], "omega"),
    (["--policy", "nope"], "accepted: full, random,"),
    (["--model", "nope"], "unknown model"),
    (["--instruction", ""], "instruction is empty"),
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
