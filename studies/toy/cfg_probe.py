"""`python -m studies.toy.cfg_probe --scales 1,2 --n 32 --out F.json`: does true classifier-free guidance at
sampling time (an empty negative prompt, diffusers' own `FluxKontextPipeline.__call__` with `true_cfg_scale`)
make the toy edit more where it should? An inference-time probe for issue 29, not a recipe: per category, edit
PSNR over the no-op inside the mask and background PSNR against the source, on the held-out seed's first `n`
records (the card's measures; 1 is plain sampling, each scale > 1 doubles the transformer calls)."""
from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

import numpy as np


def probe(model: str, scales: list[float], n: int, steps: int = 28, path: str | None = None) -> dict[str, Any]:
    """scale -> category -> mean edit gain (dB) and mean background PSNR (dB, where the record has a mask),
    from the model card's own held-out evaluation (`toy.card.evaluate`) with diffusers' call as the sampler."""
    import torch

    import actors
    from toy.card import by_category, evaluate

    pipe = actors.load_pipeline(model, path=path, device="cpu", dtype=torch.float32)
    out = {}
    for scale in scales:
        rows = evaluate(pipe, n, steps=steps, sample=diffusers_sampler(pipe, scale, steps))
        table = by_category(rows, ("psnr_edit", "source_psnr_edit", "psnr_bg"))
        out[str(scale)] = {c: {"gain": round(t["psnr_edit"] - t["source_psnr_edit"], 2),
                               "psnr_bg": None if t["psnr_bg"] is None else round(t["psnr_bg"], 2)}
                           for c, t in sorted(table.items()) if c != "all"}
    return out


def diffusers_sampler(pipe: Any, scale: float, steps: int) -> Any:
    """`toy.card.Sampler` calling `FluxKontextPipeline.__call__`, with true CFG (empty negative prompt) above 1."""
    import torch

    extra = dict(true_cfg_scale=scale, negative_prompt="") if scale > 1 else {}

    def sample(source: Any, instruction: str, size: int) -> tuple[np.ndarray, None, float]:
        started = time.perf_counter()
        image = pipe(image=source, prompt=instruction, height=size, width=size, max_area=size * size,
                     _auto_resize=False, num_inference_steps=steps,
                     max_sequence_length=int(pipe.tokenizer_2.model_max_length),
                     generator=torch.Generator().manual_seed(0), **extra).images[0]
        return np.asarray(image), None, time.perf_counter() - started
    return sample


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m studies.toy.cfg_probe", description=__doc__.splitlines()[0])
    p.add_argument("--model", default="toy-flux-kontext-v2")
    p.add_argument("--path", default=None, help="a saved folder of that model (e.g. a pilot's --save)")
    p.add_argument("--scales", default="1,2", help="true CFG scales, comma-separated (1: none)")
    p.add_argument("--n", type=int, default=32, help="held-out records (8 categories in turn)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    import torch

    from studies.toy.probe_output import write_probe

    torch.set_num_threads(args.threads)
    scales = [float(s) for s in args.scales.split(",")]
    result = write_probe(args.out, {"model": args.model, "path": args.path, "n": args.n},
                         lambda: {"by_scale": probe(args.model, scales, args.n, path=args.path)})
    print(json.dumps(result["by_scale"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
