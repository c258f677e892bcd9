"""pipeline.metrics: PIE-Bench background metrics, fidelity vs full, local-only LPIPS."""

from __future__ import annotations

import math
import socket

import numpy as np
import pytest
import torch
import torchvision
from numpy.lib.stride_tricks import sliding_window_view
from PIL import Image

from pipeline.metrics import (
    LPIPS_OK,
    Lpips,
    align_to,
    background_metrics,
    fidelity_metrics,
    to_float01,
)


def images(seed=0, shape=(48, 64)):
    rng = np.random.default_rng(seed)
    src = (rng.random((*shape, 3)) * 255).astype(np.uint8)
    noise = rng.integers(-25, 26, src.shape)
    edited = np.clip(src.astype(int) + noise, 0, 255).astype(np.uint8)
    mask = np.zeros(shape, bool)
    mask[8:24, 16:40] = True
    return edited, src, mask


def reference_ssim(x: np.ndarray, y: np.ndarray) -> float:
    """Independent SSIM: 11x11 Gaussian (sigma 1.5), valid windows only, C1/C2 for range 1."""
    r = np.arange(-5, 6)
    g = np.exp(-(r**2) / (2 * 1.5**2))
    g /= g.sum()
    k = np.outer(g, g)
    c1, c2 = 0.01**2, 0.03**2
    vals = []
    for c in range(x.shape[2]):
        def filt(a):
            return (sliding_window_view(a, (11, 11)) * k).sum(axis=(-1, -2))
        a, b = x[..., c], y[..., c]
        mx, my = filt(a), filt(b)
        vx, vy, cxy = filt(a * a) - mx**2, filt(b * b) - my**2, filt(a * b) - mx * my
        s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
        vals.append(s.mean())
    return float(np.mean(vals))


# ------------------------------------------------------------ background / PIE


def test_background_metrics_match_hand_computation():
    edited, src, mask = images()
    m = background_metrics(edited, src, mask)
    bg = (~mask)[..., None]
    x, y = edited / 255.0 * bg, src / 255.0 * bg  # PIE-Bench: both images times (1 - mask)
    mse = np.mean((x - y) ** 2)  # over ALL pixels and channels, zeroed ones included
    assert m["mse_bg"] == pytest.approx(mse, rel=1e-12)
    assert m["psnr_bg"] == pytest.approx(10 * math.log10(1.0 / mse), rel=1e-12)
    assert m["ssim_bg"] == pytest.approx(reference_ssim(x, y), abs=1e-9)
    assert 0 < m["ssim_bg"] < 1


def test_background_metrics_ignore_changes_inside_the_mask():
    _, src, mask = images()
    edited = src.copy()
    edited[mask] = 255 - edited[mask]  # change only the edited region
    m = background_metrics(edited, src, mask)
    assert m["mse_bg"] == 0.0 and m["psnr_bg"] == math.inf and m["ssim_bg"] == pytest.approx(1.0)
    outside = edited.copy()
    outside[0, 0] = 255 - outside[0, 0]
    assert background_metrics(outside, src, mask)["mse_bg"] > 0


def test_background_metrics_scale_convention_is_0_1():
    src = np.full((32, 32, 3), 100, np.uint8)
    edited = src + 10  # every pixel off by 10/255
    m = background_metrics(edited, src, np.zeros((32, 32), bool))
    assert m["mse_bg"] == pytest.approx((10 / 255) ** 2)
    assert m["psnr_bg"] == pytest.approx(20 * math.log10(255 / 10))


def test_background_metrics_undefined_when_mask_is_everything():
    edited, src, _ = images()
    assert background_metrics(edited, src, np.ones(src.shape[:2], bool)) == {
        "psnr_bg": None, "ssim_bg": None, "mse_bg": None
    }
    with pytest.raises(ValueError, match="mask shape"):
        background_metrics(edited, src, np.zeros((3, 3), bool))


def test_fidelity_metrics():
    edited, src, _ = images(1)
    f = fidelity_metrics(edited, src)
    x, y = edited / 255.0, src / 255.0
    assert f["psnr_vs_full"] == pytest.approx(10 * math.log10(1 / np.mean((x - y) ** 2)))
    assert f["ssim_vs_full"] == pytest.approx(reference_ssim(x, y), abs=1e-9)
    same = fidelity_metrics(src, src)
    assert same["psnr_vs_full"] == math.inf and same["ssim_vs_full"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="shapes differ"):
        fidelity_metrics(src, src[:10])


def test_pil_inputs_and_alignment():
    edited, src, mask = images()
    from_pil = background_metrics(Image.fromarray(edited), Image.fromarray(src), mask)
    assert from_pil == background_metrics(edited, src, mask)
    big = Image.fromarray(edited).resize((128, 96))
    assert align_to(big, (64, 48)).size == (64, 48)
    assert to_float01(np.zeros((4, 4), np.uint8)).shape == (4, 4, 3)


# ----------------------------------------------------------------------- LPIPS


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to download (hub helpers or raw sockets) fails the test."""
    def refuse(*a, **k):
        raise AssertionError("a download was attempted")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", refuse, raising=False)
    monkeypatch.setattr(socket.socket, "connect", refuse)


@pytest.fixture
def empty_hub(tmp_path, monkeypatch):
    hub = tmp_path / "hub"
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(hub))
    return hub


def save_features(model: torch.nn.Module, path) -> dict:
    # Only the conv trunk is used by LPIPS; the classifier would make the file huge.
    state = {k: v for k, v in model.state_dict().items() if k.startswith("features.")}
    torch.save(state, path)
    return state


def test_lpips_without_weights_reports_why_not_a_number(no_network, empty_hub):
    edited, src, mask = images()
    lp = Lpips(weights_path=None)
    value, status = lp(edited, src, mask)
    assert value is None
    assert status.startswith("unavailable") and "alexnet-owt-7be5be79.pth" in status
    assert "metrics.lpips_weights" in status and str(empty_hub) in status
    assert not lp.available
    value, status = Lpips(weights_path="/nonexistent/alexnet.pth")(edited, src)
    assert value is None and "/nonexistent/alexnet.pth" in status


def test_lpips_with_local_alexnet_weights(no_network, empty_hub, tmp_path):
    torch.manual_seed(0)
    state = save_features(torchvision.models.alexnet(weights=None), tmp_path / "alex.pth")
    lp = Lpips(weights_path=str(tmp_path / "alex.pth"))
    edited, src, mask = images()
    value, status = lp(edited, src)
    assert status == LPIPS_OK and isinstance(value, float) and value > 0
    assert lp(src, src) == (0.0, LPIPS_OK)
    # the trunk really holds the file's weights (not a random init)
    assert torch.equal(lp._model.net.slice1[0].weight, state["features.0.weight"])
    assert torch.equal(getattr(lp._model.net.slice5, "10").weight, state["features.10.weight"])
    # masked: same as LPIPS on the images zeroed inside the mask (PIE-Bench protocol)
    masked_value, _ = lp(edited, src, mask)
    bg = (~mask)[..., None]
    manual, _ = lp((edited / 255.0) * bg, (src / 255.0) * bg)
    assert masked_value == pytest.approx(manual, rel=1e-6)
    assert lp(edited, src, np.ones(mask.shape, bool))[0] is None


@pytest.mark.filterwarnings("ignore:.*deprecated since 0.13:UserWarning")  # lpips.LPIPS built directly
def test_lpips_from_torch_hub_cache_and_folder(no_network, empty_hub, tmp_path):
    (empty_hub / "checkpoints").mkdir(parents=True)
    save_features(torchvision.models.squeezenet1_1(weights=None), empty_hub / "checkpoints" / "squeezenet1_1-b8a52dc0.pth")
    value, status = Lpips(net="squeeze")(*images()[:2])
    assert status == LPIPS_OK and value > 0
    folder = tmp_path / "weights"
    folder.mkdir()
    save_features(torchvision.models.alexnet(weights=None), folder / "alexnet-owt-7be5be79.pth")
    assert Lpips(weights_path=str(folder)).status == LPIPS_OK
    # a state dict saved from an lpips.LPIPS model (``net.slice*`` keys) works too
    import lpips

    trained = lpips.LPIPS(net="alex", pnet_rand=True, verbose=False)
    torch.save(trained.state_dict(), tmp_path / "lpips_alex_full.pth")
    lp = Lpips(weights_path=str(tmp_path / "lpips_alex_full.pth"))
    assert lp.status == LPIPS_OK
    assert torch.equal(getattr(lp._model.net.slice2, "3").weight, getattr(trained.net.slice2, "3").weight)


def test_lpips_wrong_weights_file_gives_status_not_number(no_network, empty_hub, tmp_path):
    torch.save({"features.0.weight": torch.zeros(1)}, tmp_path / "bad.pth")
    value, status = Lpips(weights_path=str(tmp_path / "bad.pth"))(*images()[:2])
    assert value is None and status.startswith("unavailable: cannot load alex backbone")
    (tmp_path / "junk.pth").write_bytes(b"not a torch file")
    value, status = Lpips(weights_path=str(tmp_path / "junk.pth"))(*images()[:2])
    assert value is None and "cannot load" in status
    with pytest.raises(ValueError, match="lpips net must be one of"):
        Lpips(net="resnet")
