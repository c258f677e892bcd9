"""LPIPS's torch model, built from local weights only; metrics.lpips.Lpips is the metric around it.

The trunk is built randomly initialised (``pnet_rand=True``: torchvision never downloads) and then
overwritten from a local torchvision state dict (the configured path, or the torch hub cache where
torchvision itself would have put it); the linear layers ship inside the ``lpips`` package.  When any of
that is missing or unreadable, ``LpipsUnavailable`` says why: a random trunk's distance is not LPIPS.

LPIPS trunk: PIE-Bench used SqueezeNet (torchmetrics ``net_type='squeeze'``), the default here
(``metrics.lpips_net``); ``alex`` (lpips' own default) and ``vgg`` stay selectable.  Why the lpips package and
not torchmetrics' ``LearnedPerceptualImagePatchSimilarity``: that class builds its trunk with torchvision's
pretrained weights (a download unless the torch hub cache has them) and takes no local file.  The two are
the same network: torchmetrics' LPIPS is a port of this package, and with the same trunk weights they give
the same distance (tests/test_metrics.py checks it for SqueezeNet).
"""
from __future__ import annotations

import os
import warnings
from typing import Any

import numpy as np

# torchvision's file name for each LPIPS trunk (the name torch.hub caches it under).
BACKBONE_FILES = {
    "alex": "alexnet-owt-7be5be79.pth",
    "squeeze": "squeezenet1_1-b8a52dc0.pth",
    "vgg": "vgg16-397923af.pth",
}


class LpipsUnavailable(RuntimeError):
    """Why there is no LPIPS model; the message ("unavailable: ...") is the rows' ``lpips_status``."""


def backbone_candidates(net: str, weights_path: str | None) -> list[str]:
    """Files that may hold the trunk weights, in the order they are tried."""
    filename = BACKBONE_FILES[net]
    out = []
    if weights_path:
        p = os.path.expanduser(weights_path)
        out.append(os.path.join(p, filename) if os.path.isdir(p) else p)
    import torch.hub  # the hub dir honours TORCH_HOME / torch.hub.set_dir

    out.append(os.path.join(torch.hub.get_dir(), "checkpoints", filename))
    return out


def load_lpips(net: str, weights_path: str | None = None, device: str = "cpu") -> Any:
    """An ``lpips.LPIPS`` model with the trunk read from a local file, in eval mode on ``device``."""
    candidates = backbone_candidates(net, weights_path)
    path = next((c for c in candidates if os.path.isfile(c)), None)
    if path is None:
        raise LpipsUnavailable(
            f"unavailable: no {net} backbone weights (looked for " + ", ".join(candidates)
            + "); set metrics.lpips_weights to a local torchvision state dict"
        )
    try:
        import lpips
        import torch

        lin_file = os.path.join(os.path.dirname(lpips.__file__), "weights", "v0.1", f"{net}.pth")
        if not os.path.isfile(lin_file):
            raise LpipsUnavailable(f"unavailable: lpips linear-layer weights missing at {lin_file}")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torchvision's 'pretrained' deprecation
            # pnet_rand=True: the trunk is built WITHOUT torchvision's download;
            # pretrained=True: linear layers from the lpips package's own files.
            model = lpips.LPIPS(net=net, pretrained=True, pnet_rand=True, verbose=False)
        state = torch.load(path, map_location="cpu", weights_only=True)
        model.net.load_state_dict(_trunk_state(model.net, state), strict=True)
        return model.to(device).eval()
    except LpipsUnavailable:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure means "no LPIPS", said clearly
        raise LpipsUnavailable(
            f"unavailable: cannot load {net} backbone from {path}: {type(exc).__name__}: {exc}") from None


def lpips_distance(model: Any, x: np.ndarray, y: np.ndarray, device: str = "cpu") -> float:
    """LPIPS of two ``H x W x 3`` float images in [0, 1] (mapped to [-1, 1], as LPIPS takes them)."""
    import torch

    def tensor(arr: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(arr.astype(np.float32)).permute(2, 0, 1)[None]
        return (t * 2 - 1).to(device)

    with torch.no_grad():
        return float(model(tensor(x), tensor(y)).item())


def _trunk_state(trunk: Any, state: dict[str, Any]) -> dict[str, Any]:
    """Trunk weights under lpips' ``slice<k>.<i>.*`` names.

    Accepts a torchvision state dict (``features.<i>.*``, the hub-cache file) or a
    saved ``lpips.LPIPS`` state dict (``net.slice<k>.<i>.*``).
    """
    out = {}
    for name in trunk.state_dict():
        _slice, idx, rest = name.split(".", 2)  # e.g. slice2.3.weight
        for src in (f"features.{idx}.{rest}", f"net.{name}"):
            if src in state:
                out[name] = state[src]
                break
        else:
            raise KeyError(f"backbone state dict has no 'features.{idx}.{rest}' (is it a torchvision {type(trunk).__name__}?)")
    return out
