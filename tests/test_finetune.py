"""Fine-tuning (`finetune/`, `python -m jobs.train` with a manifest config) on the tiny models of the real
classes: config checks, the plan, the per-step schedule, and 2-worker CPU runs on Ray Train."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from finetune.config import FinetuneConfig, is_finetune_config, load_config
from finetune.schedule import batch_indices, generator, learning_rate


def write_triplets(folder, n=4, size=64, references=0):
    """A manifest of n (source, instruction, target) records: the target is the source inverted."""
    from conftest import make_image

    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        src = make_image(size, size, seed=i)
        src.save(folder / f"s{i}.png")
        Image.fromarray(255 - np.asarray(src)).save(folder / f"t{i}.png")
        row = {"id": f"r{i}", "image": f"s{i}.png", "instruction": "invert the colors", "target": f"t{i}.png"}
        if references:
            refs = [f"ref{i}-{j}.png" for j in range(references)]
            for j, name in enumerate(refs):
                make_image(size, size, seed=100 + i * 10 + j).save(folder / name)
            row["references"] = refs
        rows.append(row)
    (folder / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder / "manifest.jsonl"


def tiny_config(tmp_path, model="tiny-flux-kontext", uri="", **over):
    cfg = {"name": "ft", "storage_path": str(tmp_path / "runs"), "output": str(tmp_path / "out"),
           "model": {"name": model}, "data": {"uri": str(uri), "size": 64, "val_n": 2, "seed": 0},
           "lora": {"rank": 4}, "train": {"steps": 4, "batch_size": 1, "grad_accum": 2, "lr": 5e-3, "warmup": 1,
                                          "reference_drop": [0.0, 0.9], "gradient_checkpointing": True},
           "validation": {"drop_ratios": [0.0, 0.5], "every": 2},
           "scaling": {"num_workers": 2, "use_gpu": False, "threads": 1},
           "checkpoint_every": 2, "report_every": 1}
    for key, value in over.items():
        node = cfg
        *parents, leaf = key.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = value
    return FinetuneConfig.model_validate(cfg)


# ------------------------------------------------------------------ no Ray

def test_config_is_checked_and_presets_load():
    with pytest.raises(ValueError, match="reference_drop"):
        FinetuneConfig.model_validate({"name": "x", "output": "o",
                                       "model": {"name": "tiny-flux-kontext"}, "data": {"uri": "m.jsonl"},
                                       "train": {"steps": 1, "reference_drop": [0.9, 0.1]}})
    with pytest.raises(ValueError, match="needs model.path"):
        FinetuneConfig.model_validate({"name": "x", "output": "o", "model": {"name": "flux-kontext"},
                                       "data": {"uri": "m.jsonl"}, "train": {"steps": 1}})
    with pytest.raises(ValueError, match="unknown model"):
        FinetuneConfig.model_validate({"name": "x", "output": "o", "model": {"name": "sdxl"},
                                       "data": {"uri": "m.jsonl"}, "train": {"steps": 1}})
    import pathlib
    presets = sorted(pathlib.Path("configs/finetune").glob("*.yaml"))
    assert {p.stem for p in presets} >= {"flux-kontext-lora", "qwen-image-edit-lora", "qwen-image-edit-plus-lora"}
    for p in presets:
        cfg = load_config(str(p), ["model.path=/models/x", "data.uri=s3://bucket/triplets/manifest.jsonl"])
        assert cfg.lora is not None or cfg.scaling.strategy == "fsdp"
        assert is_finetune_config({"data": {"uri": "x"}}) and not is_finetune_config(
            {"data": {"seed": 0}})


def test_schedule_is_a_function_of_the_step():
    a = [batch_indices(0, 1, 5, 2, 2, step, m) for step in range(6) for m in range(2)]
    assert a == [batch_indices(0, 1, 5, 2, 2, step, m) for step in range(6) for m in range(2)]
    flat = [i for idx in a for i in idx]
    assert sorted(flat[:5]) == list(range(5)) and sorted(flat[5:10]) == list(range(5))   # epochs: permutations
    assert torch.equal(torch.randn(3, generator=generator(0, 1, 4, 0)), torch.randn(3, generator=generator(0, 1, 4, 0)))
    assert not torch.equal(torch.randn(3, generator=generator(0, 1, 4, 0)),
                           torch.randn(3, generator=generator(0, 0, 4, 0)))
    assert learning_rate(1.0, 10, 2, 0) == 0.5 and learning_rate(1.0, 10, 2, 10) == pytest.approx(0.1)


def test_finetune_imports_no_layer_above_it():
    """finetune/ sits above the toy testbed (its data, model and VAE are a data source and a phase of the one
    training driver) and beside bench/: it may import pipeline, actors, policies and toy.data, toy.model,
    toy.vae, toy.text_order (the model's T5 setting), never the rest of toy, bench, report, jobs."""
    import ast
    import pathlib

    for path in pathlib.Path("finetune").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else []
            testbed = ("toy.data", "toy.model", "toy.vae", "toy.text_order")
            assert not [n for n in names if n.split(".")[0] in ("toy", "bench", "report", "jobs")
                        and n not in testbed], path


def test_dry_run_prints_the_plan(capsys, tmp_path):
    from jobs import train

    uri = write_triplets(tmp_path / "data", n=6)
    assert train.main(["configs/finetune/flux-kontext-lora.yaml", "--dry-run", "--set", "model.path=/models/k",
                       "--set", f"data.uri={uri}", "--set", "scaling.num_workers=3"]) == 0
    out = capsys.readouterr().out
    assert "3 worker(s)" in out and "steps per epoch" in out and "FLOPs per optimizer step" in out
    assert "memory per GPU" in out and "records: 6" in out



@pytest.mark.parametrize("name,references", [("tiny-flux-kontext", 0), ("tiny-qwen-image-edit", 0),
                                             ("tiny-qwen-image-edit-plus", 1), ("toy-flux-kontext", 0)])
def test_objective_encodes_like_inference_and_drops_reference_tokens(name, references):
    """Each family's objective: the reference tokens the adapter encodes at inference (all references for
    Edit-Plus), finite losses, a drop that changes the loss, and fixed validation draws."""
    import actors
    from conftest import make_image
    from finetune.objective import draw, fixed_draws
    from finetune.objectives import objective_for

    pipe = actors.load_pipeline(name, device="cpu")
    objective = objective_for(pipe)
    images = [make_image(64, 64, seed=i) for i in range(1 + references)]
    target = Image.fromarray(255 - np.asarray(images[0]))
    with torch.no_grad():
        sample = objective.encode(images, target, "invert the colors")
    # Edit-Plus encodes further references at ~1024² area (64² tokens), as diffusers and inference do
    assert sample["z_tgt"].shape == (16, 64) and sample["z_src"].shape == (16 + 4096 * references, 64)
    samples = [sample, sample]
    with torch.no_grad():
        full = [float(l) for l, _ in objective.losses(pipe.transformer, samples, fixed_draws(samples, 0.0),
                                                      torch.device("cpu"))]
        half = [float(l) for l, _ in objective.losses(pipe.transformer, samples, fixed_draws(samples, 0.5),
                                                      torch.device("cpu"))]
    assert all(np.isfinite(full)) and full != half
    d = draw(pipe.scheduler.config, samples, torch.Generator().manual_seed(0), (0.5, 0.5))
    assert [int(k.sum()) for k in d.keep] == [sample["z_src"].shape[0] - round(0.5 * sample["z_src"].shape[0])] * 2
    assert ((d.sigmas > 0) & (d.sigmas < 1)).all()



@pytest.mark.parametrize("name", ["tiny-flux-kontext", "tiny-qwen-image-edit"])
def test_full_fine_tune_output_is_a_loadable_pipeline(name, tmp_path):
    """`state.save_pipeline` (the end of a full fine-tune, weights given as gathered): `load_pipeline` reads it
    back with those weights."""
    import actors
    from finetune.state import save_pipeline

    pipe = actors.load_pipeline(name, device="cpu")
    weights = {k: v + 0.01 for k, v in pipe.transformer.state_dict().items()}
    save_pipeline(pipe, tmp_path / "model", weights)
    loaded = actors.load_pipeline(name, path=tmp_path / "model", device="cpu")
    got = loaded.transformer.state_dict()
    assert got.keys() == weights.keys() and all(torch.equal(got[k], weights[k]) for k in weights)


# ------------------------------------------------------------------ Ray Train, 2 CPU workers

def _adapter(out):
    from safetensors.torch import load_file

    return load_file(str(out / "pytorch_lora_weights.safetensors"))


def _batch_loss(pipe, cfg, ratio=0.0):
    """The training records' flow-matching loss at fixed draws (what training lowers)."""
    from finetune.objective import fixed_draws
    from finetune.objectives import objective_for
    from finetune.data import decode, read_triplets
    from pipeline.storage import read_bytes

    objective = objective_for(pipe)
    samples = []
    for row in read_triplets(cfg.data.uri):
        images = [Image.fromarray(decode(read_bytes(u), cfg.data.size)) for u in [row["image"], *row["references"]]]
        target = Image.fromarray(decode(read_bytes(row["target"]), cfg.data.size))
        with torch.no_grad():
            samples.append(objective.encode(images, target, row["instruction"]))
    with torch.no_grad():
        losses = [float(l) * n for l, n in objective.losses(pipe.transformer, samples, fixed_draws(samples, ratio),
                                                            torch.device("cpu"))]
    return sum(losses) / len(samples)


def test_flux_lora_with_drop_resumes_exactly_after_a_failure(ray_session, tmp_path):
    """tiny-flux-kontext, LoRA + drop, 2 workers, grad accumulation, checkpointing: a run whose workers fail after
    step 3 (restored from the step-2 checkpoint) ends with the losses and the adapter of an uninterrupted run; the
    adapter, loaded with `load_pipeline(..., lora=...)`, lowers the loss on the training records."""
    import actors
    from finetune.driver import fit

    uri = write_triplets(tmp_path / "data")
    # both runs share a cache of encoded records: the first writes it, the second (and its restart) reads it;
    # log rows at steps 3 and 4, so the step-2 checkpoint falls inside the first row's window
    over = {"data.cache": str(tmp_path / "encoded"), "report_every": 3}
    plain = tiny_config(tmp_path / "a", uri=uri, **over)
    failing = tiny_config(tmp_path / "b", uri=uri, fail_at_step=3, **over)
    first = fit(plain, max_failures=0)
    assert len(list((tmp_path / "encoded").glob("*.pt"))) == 4      # one per record (validation reuses them)
    live = (tmp_path / "a" / "runs" / "ft" / "loss.jsonl").read_text().splitlines()
    assert [json.loads(r)["step"] for r in live] == [3, 4]
    second = fit(failing, max_failures=1)
    log_a = json.loads((tmp_path / "a" / "out" / "loss.json").read_text())["log"]
    log_b = json.loads((tmp_path / "b" / "out" / "loss.json").read_text())["log"]
    keys = ("step", "loss", "val@0", "val@0.5")
    assert [[r.get(k) for k in keys] for r in log_a] == [[r.get(k) for k in keys] for r in log_b]
    assert first["steps"] == second["steps"] == 4 and len(log_a) == 2
    assert first["resumed_at"] == [] and second["resumed_at"] == [2]   # it did fail, and resumed from step 2
    a, b = _adapter(tmp_path / "a" / "out"), _adapter(tmp_path / "b" / "out")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert log_a[-1]["val@0.5"] != log_a[-1]["val@0"]
    base = actors.load_pipeline("tiny-flux-kontext", device="cpu")
    tuned = actors.load_pipeline("tiny-flux-kontext", device="cpu", lora=tmp_path / "a" / "out")
    losses = {f"{name}@{r:g}": _batch_loss(pipe, plain, r) for name, pipe in (("base", base), ("tuned", tuned))
              for r in (0.0, 0.5)}
    (tmp_path / "batch_losses.json").write_text(json.dumps(losses))   # kept for the record (--basetemp)
    assert losses["tuned@0"] < losses["base@0"] and losses["tuned@0.5"] < losses["base@0.5"]


def _upload(folder, prefix, client):
    bucket, _, key = prefix[len("s3://"):].partition("/")
    for f in sorted(folder.iterdir()):
        client.put_object(Bucket=bucket, Key=f"{key}/{f.name}", Body=f.read_bytes())
    return f"{prefix}/manifest.jsonl"


def test_qwen_lora_with_drop_from_object_storage(ray_session, moto_s3, s3_prefix, tmp_path):
    """tiny-qwen-image-edit, LoRA + drop, 2 workers: manifest and images in (moto) S3, checkpoints to S3; the
    adapter loads onto the base and lowers the loss on the training records."""
    import actors
    from jobs import train
    from pipeline.storage import list_uris

    uri = _upload(write_triplets(tmp_path / "data").parent, f"{s3_prefix}/data", moto_s3.client())
    cfg = tiny_config(tmp_path, model="tiny-qwen-image-edit", uri=uri, storage_path=f"{s3_prefix}/runs",
                      **{"train.steps": 3, "train.grad_accum": 1, "train.batch_size": 2, "checkpoint_every": 3})
    # the documented command: the preset, the model and the data set on the command line (tiny sizes here)
    sets = ["model.name=tiny-qwen-image-edit", "model.path=null", f"data.uri={uri}", "name=ft",
            f"storage_path={s3_prefix}/runs", f"output={tmp_path / 'out'}", "data.size=64", "data.val_n=2",
            "lora.rank=4", "train.steps=3", "train.batch_size=2", "train.grad_accum=1", "train.lr=5e-3",
            "train.warmup=1", "validation.every=2", "validation.drop_ratios=[0.0, 0.5]",
            "scaling.num_workers=2", "scaling.use_gpu=false", "checkpoint_every=3", "report_every=1"]
    args = ["configs/finetune/qwen-image-edit-lora.yaml", "--max-failures", "0"]
    assert train.main(args + [x for s in sets for x in ("--set", s)]) == 0
    summary = json.loads((tmp_path / "out" / "loss.json").read_text())
    assert summary["steps"] == 3 and summary["resumed_at"] == [] and summary["config"]["model"]["max_sequence_length"] == 1024
    assert summary["load"] == {"name": "tiny-qwen-image-edit", "path": None, "lora": str(tmp_path / "out")}
    saved = list_uris(f"{s3_prefix}/runs/ft")
    assert any(u.endswith("lora/pytorch_lora_weights.safetensors") for u in saved)
    assert any(u.endswith("state.pt") for u in saved) and f"{s3_prefix}/runs/ft/loss.jsonl" in saved
    log = json.loads((tmp_path / "out" / "loss.json").read_text())["log"]
    assert [r["step"] for r in log] == [1, 2, 3] and all(np.isfinite(r["loss"]) for r in log)
    base = actors.load_pipeline("tiny-qwen-image-edit", device="cpu")
    tuned = actors.load_pipeline("tiny-qwen-image-edit", device="cpu", lora=tmp_path / "out")
    losses = {"base@0": _batch_loss(base, cfg), "tuned@0": _batch_loss(tuned, cfg)}
    (tmp_path / "batch_losses.json").write_text(json.dumps(losses))
    assert losses["tuned@0"] < losses["base@0"]


@pytest.mark.slow
def test_full_fine_tuning_writes_the_pipeline(ray_session, tmp_path):
    """`lora: null`: every transformer weight trains (DDP on CPU; FSDP is refused without CUDA) and the output is
    the whole pipeline, loadable by path."""
    import actors
    from finetune.driver import fit

    uri = write_triplets(tmp_path / "data")
    cfg = tiny_config(tmp_path, uri=uri, lora=None, **{"train.steps": 2, "train.lr": 1e-3, "train.grad_accum": 1,
                                                       "train.gradient_checkpointing": False})
    fit(cfg, max_failures=0)
    out = tmp_path / "out"
    assert (out / "transformer" / "diffusion_pytorch_model.safetensors").is_file()
    assert json.loads((out / "loss.json").read_text())["load"]["path"] == str(out)
    tuned = actors.load_pipeline("tiny-flux-kontext", path=out, device="cpu")
    base = actors.load_pipeline("tiny-flux-kontext", device="cpu")
    assert _batch_loss(tuned, cfg) < _batch_loss(base, cfg)
    with pytest.raises(ValueError, match="fsdp needs CUDA"):
        from finetune.model import wrap
        wrap(base, tiny_config(tmp_path, uri=uri, lora=None, **{"scaling.strategy": "fsdp"}), torch.device("cpu"))
