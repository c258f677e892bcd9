"""`dropedit edit`: one edit from the command line, with a progress bar and one JSON line of results.

Everything that can be checked without the model (output path, image, size, policy parameters) is checked
before the model loads, so a typo costs seconds, not an edit."""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from tqdm import tqdm

from core.assignments import parse_assignments

# Kept here as text so that `--help` needs no torch import; tests/test_cli_edit.py checks them against
# actors.MODELS and policies.REGISTRY.
MODEL_NAMES = ("toy-flux-kontext-v2", "toy-flux-kontext-v3", "toy-flux-kontext-v4", "toy-flux-kontext", "flux-kontext",
               "qwen-image-edit", "qwen-image-edit-plus", "flux2-klein", "flux2-klein-9b", "flux2-klein-kv", "flux2-dev",
               "tiny-flux-kontext", "tiny-qwen-image-edit", "tiny-qwen-image-edit-plus", "tiny-flux2-klein",
               "tiny-flux2-klein-kv", "tiny-flux2-dev")
POLICY_NAMES = ("full", "random", "tokendrop", "topi", "sparse_context", "spotedit", "focus", "regione")
CACHE_NAMES = ("first-block", "magcache", "taylorseer", "velocity-decay")   # checked against actors.caches.names()


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, metavar="NAME",
                   help="toy-flux-kontext-v2 (trained toy model shipped in models/, 256x256), toy-flux-kontext-v3 "
                        "(its order-aware continuation, 256x256), toy-flux-kontext-v4 (v3 trained nearer noise, "
                        "256x256), toy-flux-kontext (v1, 128x128); flux-kontext, "
                        "qwen-image-edit, qwen-image-edit-plus, flux2-klein, flux2-klein-9b, flux2-klein-kv, flux2-dev "
                        "(need --model-path); tiny-flux-kontext, tiny-qwen-image-edit, tiny-qwen-image-edit-plus, "
                        "tiny-flux2-klein, tiny-flux2-klein-kv, tiny-flux2-dev (random weights, for tests: noise "
                        "out)")
    p.add_argument("--model-path", default=None, help="local folder of a diffusers checkpoint (save_pretrained)")
    p.add_argument("--policy", default="full", metavar="NAME",
                   help=f"pruning policy: {', '.join(POLICY_NAMES)} (README: Policies)")
    p.add_argument("--set", dest="assignments", action="append", default=[], metavar="KEY=VALUE",
                   help="policy parameter, e.g. --set omega=0.4 (repeatable); unset ones take the paper's "
                        "default for the model, reported in the JSON line")
    p.add_argument("--cache", default=None, metavar="NAME[:k=v,...]",
                   help=f"temporal cache composed with the policy: {', '.join(CACHE_NAMES)}, e.g. "
                        "first-block:threshold=0.08 or taylorseer:interval=4,warmup=2 (README: Temporal caches); "
                        "threshold=0 (taylorseer: interval=1) never skips")
    p.add_argument("--image", required=True, help="source image file")
    p.add_argument("--reference", action="append", default=[], help="extra reference image (Qwen Edit-Plus)")
    p.add_argument("--instruction", required=True, help="the edit instruction")
    p.add_argument("--out", required=True, help="output image file (.png, .jpg, ...); its folder must exist")
    p.add_argument("--steps", type=int, default=None,
                   help="denoising steps; default: the model's (Kontext 28, Qwen-Image-Edit 50)")
    p.add_argument("--seed", type=int, default=0, help="noise seed")
    p.add_argument("--guidance-scale", type=float, default=None,
                   help="guidance; default: the model's (Kontext 3.5, Qwen true CFG 4.0)")
    p.add_argument("--resize-filter", default=None, choices=("bicubic", "lanczos", "bilinear", "nearest"),
                   help="filter resizing the source to the edit size; default: the model's (Kontext bicubic, as "
                        "TokenDrop; Qwen Lanczos, as diffusers)")
    p.add_argument("--size", default=None, metavar="WxH",
                   help="output size; default: the size the model was trained at, else Kontext's preferred "
                        "resolution of the image's aspect (Qwen: ~1024x1024 area)")
    p.add_argument("--max-sequence-length", type=int, default=None,
                   help="text tokens; default: the model's saved default, else diffusers' 512")
    p.add_argument("--any-size", action="store_true",
                   help="edit at --size even where the model was not trained at it (out of distribution)")


def _size(text: str | None) -> tuple[int | None, int | None]:
    if text is None:
        return None, None
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"--size must look like 1024x768, got {text!r}") from None
    return h, w


def check_output(path: str) -> None:
    """Refuse an output the edit could not be saved to, before any model work."""
    from PIL import Image

    out = Path(path)
    if out.suffix.lower() not in Image.registered_extensions():
        raise ValueError(f"--out {path!r}: unknown image extension {out.suffix!r}; use .png")
    folder = out.parent if str(out.parent) else Path(".")
    if not folder.is_dir():
        raise ValueError(f"--out {path!r}: folder {str(folder)!r} does not exist; create it first")
    if not os.access(folder, os.W_OK):
        raise ValueError(f"--out {path!r}: folder {str(folder)!r} is not writable")


def check_image(path: str) -> None:
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.verify()
    except (OSError, ValueError) as err:
        raise ValueError(f"--image {path!r} cannot be read as an image: {err}") from None


def check_size(model_folder: Path | str | None, height: int | None, width: int | None, any_size: bool) -> None:
    from actors.model_defaults import read_defaults

    if height is None or any_size:
        return
    problem = read_defaults(model_folder).size_problem(height, width)
    if problem:
        sizes = read_defaults(model_folder).sizes
        raise ValueError(f"--size {width}x{height}: {problem}. Use --size {sizes[0][1]}x{sizes[0][0]} "
                         "(or leave it out), or pass --any-size to edit anyway")


def summary(args: argparse.Namespace, result: Any, device: str) -> dict[str, Any]:
    """The JSON line: every parameter as applied, and what was computed (shares of tokens and queries)."""
    return {
        "out": args.out, "model": args.model, "policy": args.policy, "params": result.policy_params,
        "width": result.width, "height": result.height, "steps": len(result.trace),
        "runtime_s": round(result.seconds, 4), "loop_s": round(sum(s.seconds for s in result.trace), 4),
        "keep_ratio_mean": round(result.keep_ratio_mean, 4),     # source tokens that entered the transformer
        "query_ratio_mean": round(result.query_ratio_mean, 4),   # noisy tokens whose queries were computed
        "policy_summary": result.policy_summary, "device": device, "notes": result.notes,
        "cache": result.cache_params, "cache_skipped_calls": result.cache_skipped_calls,
        "cache_skipped_blocks": result.cache_skipped_blocks, "cache_summary": result.cache_summary,
    }


def check_caches(args: argparse.Namespace, specs: list[Any]) -> None:
    """The edit's cache and its policy's can run this model's family at these steps (before any model work)."""
    from actors.loading import protocol_of

    from .preflight import cache_refusal

    protocol = protocol_of(args.model, args.model_path)
    if protocol is None:
        return   # an unregistered model: loading says so
    refusal = cache_refusal(specs, args.model, args.steps or protocol["steps"])
    if refusal:
        raise ValueError(refusal)


def run(args: argparse.Namespace) -> int:
    height, width = _size(args.size)
    if not args.instruction.strip():
        raise ValueError("the instruction is empty")
    if args.steps is not None and args.steps < 1:
        raise ValueError(f"--steps must be >= 1, got {args.steps}")
    check_output(args.out)
    for image in [args.image, *args.reference]:
        check_image(image)
    import actors
    import policies
    from actors.models import shipped_folders

    from actors.caches import parse as parse_cache
    from costs.ideal_speedup import ideal_columns

    policy = policies.make(args.policy, **parse_assignments(args.assignments))
    cache = parse_cache(args.cache)   # a bad spec is refused here, before any model work
    check_caches(args, [cache, parse_cache(policy.needs.cache)])
    check_size(args.model_path or shipped_folders().get(args.model), height, width, args.any_size)
    pipe = actors.load_pipeline(args.model, path=args.model_path)
    editor = actors.Editor(pipe, policy)
    steps = editor.default_steps if args.steps is None else args.steps
    with tqdm(total=steps, desc=f"{args.model}/{args.policy}", unit="step", file=sys.stderr) as bar:
        result = editor.edit(args.image, args.instruction, seed=args.seed, steps=steps,
                             guidance_scale=args.guidance_scale, height=height, width=width,
                             references=args.reference, max_sequence_length=args.max_sequence_length,
                             resize_filter=args.resize_filter, cache=cache,
                             on_step=lambda _: bar.update())
    result.image.save(args.out)
    for note in result.notes:
        print(f"note: {note}", file=sys.stderr)
    line = summary(args, result, str(pipe.device))
    line.update(ideal_columns(result, pipe.transformer, args.model))
    line["guidance_scale"] = editor.default_guidance if args.guidance_scale is None else args.guidance_scale
    print(json.dumps(line, default=str))
    return 0
