"""metrics: PIE-Bench background metrics, fidelity vs full, local-only LPIPS, CLIP, DINO structure."""

from __future__ import annotations

import math
import socket

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from metrics.base import METRIC_OK as LPIPS_OK
from metrics.images import align_to, to_float01
from metrics.lpips import Lpips
from metrics.pixel import background_metrics, fidelity_metrics


def images(seed=0, shape=(48, 64)):
    rng = np.random.default_rng(seed)
    src = (rng.random((*shape, 3)) * 255).astype(np.uint8)
    noise = rng.integers(-25, 26, src.shape)
    edited = np.clip(src.astype(int) + noise, 0, 255).astype(np.uint8)
    mask = np.zeros(shape, bool)
    mask[8:24, 16:40] = True
    return edited, src, mask


def tm_background(edited, src, mask):
    """torchmetrics' classes called directly on PIE-Bench's masked images (both times 1 - mask)."""
    from torchmetrics import MeanSquaredError
    from torchmetrics.image import PeakSignalNoiseRatio, StructuralSimilarityIndexMeasure

    bg = (~mask)[..., None]
    x, y = (torch.from_numpy(np.ascontiguousarray((a / 255.0 * bg).transpose(2, 0, 1)))[None]
            for a in (edited, src))
    def run(metric, a, b):   # float64 states: the classes keep float32 ones by default
        return float(metric.set_dtype(torch.float64)(a, b))

    return {"psnr_bg": run(PeakSignalNoiseRatio(data_range=1.0), x, y),
            "ssim_bg": run(StructuralSimilarityIndexMeasure(data_range=1.0), x, y),
            "mse_bg": run(MeanSquaredError(), x.flatten(), y.flatten())}


def tm_ssim(a, b):
    from torchmetrics.image import StructuralSimilarityIndexMeasure

    x, y = (torch.from_numpy(np.ascontiguousarray(v.transpose(2, 0, 1)))[None] for v in (a, b))
    return float(StructuralSimilarityIndexMeasure(data_range=1.0).set_dtype(torch.float64)(x, y))


# ------------------------------------------------------------ background / PIE


def test_background_metrics_match_hand_computation():
    edited, src, mask = images()
    m = background_metrics(edited, src, mask)
    bg = (~mask)[..., None]
    x, y = edited / 255.0 * bg, src / 255.0 * bg  # PIE-Bench: both images times (1 - mask)
    mse = np.mean((x - y) ** 2)  # over ALL pixels and channels, zeroed ones included
    assert m["mse_bg"] == pytest.approx(mse, rel=1e-12)
    # torchmetrics' PSNR carries a float32 constant (data_range): equal to ~1e-7, not to the last bit
    assert m["psnr_bg"] == pytest.approx(10 * math.log10(1.0 / mse), rel=1e-6)
    assert m["ssim_bg"] == pytest.approx(tm_ssim(x, y), abs=1e-9)
    assert 0 < m["ssim_bg"] < 1
    tm = tm_background(edited, src, mask)
    assert m == pytest.approx(tm, rel=1e-9)


def test_background_metrics_tiny_example_by_hand():
    # 12 x 12 image (SSIM's 11-tap window needs that much), a 2 x 2 edited block (masked out), one
    # background value off by 0.5: the squared error 0.25 is averaged over all 432 values, masked included
    src = np.zeros((12, 12, 3))
    edited = src.copy()
    edited[:2, :2] = 1.0          # inside the mask: ignored
    edited[11, 11, 2] = 0.5
    mask = np.zeros((12, 12), bool)
    mask[:2, :2] = True
    m = background_metrics(edited, src, mask)
    assert m["mse_bg"] == pytest.approx(0.25 / 432, rel=1e-12)
    assert m["psnr_bg"] == pytest.approx(10 * math.log10(432 / 0.25), rel=1e-6)


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
    assert m["psnr_bg"] == pytest.approx(20 * math.log10(255 / 10), rel=1e-6)


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
    assert f["ssim_vs_full"] == pytest.approx(tm_ssim(x, y), abs=1e-9)
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
    lp = Lpips(weights_path=None, net="alex")
    value, status = lp(edited, src, mask)
    assert value is None
    assert status.startswith("unavailable") and "alexnet-owt-7be5be79.pth" in status
    assert "metrics.lpips_weights" in status and str(empty_hub) in status
    assert not lp.available
    value, status = Lpips(weights_path="/nonexistent/alexnet.pth", net="alex")(edited, src)
    assert "squeezenet1_1-b8a52dc0.pth" in Lpips().status   # PIE-Bench's trunk is the default
    assert value is None and "/nonexistent/alexnet.pth" in status


def test_lpips_with_local_alexnet_weights(no_network, empty_hub, tmp_path):
    torch.manual_seed(0)
    state = save_features(torchvision.models.alexnet(weights=None), tmp_path / "alex.pth")
    lp = Lpips(weights_path=str(tmp_path / "alex.pth"), net="alex")
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
    assert Lpips(weights_path=str(folder), net="alex").status == LPIPS_OK
    # a state dict saved from an lpips.LPIPS model (``net.slice*`` keys) works too
    import lpips

    trained = lpips.LPIPS(net="alex", pnet_rand=True, verbose=False)
    torch.save(trained.state_dict(), tmp_path / "lpips_alex_full.pth")
    lp = Lpips(weights_path=str(tmp_path / "lpips_alex_full.pth"), net="alex")
    assert lp.status == LPIPS_OK
    assert torch.equal(getattr(lp._model.net.slice2, "3").weight, getattr(trained.net.slice2, "3").weight)


def test_lpips_wrong_weights_file_gives_status_not_number(no_network, empty_hub, tmp_path):
    torch.save({"features.0.weight": torch.zeros(1)}, tmp_path / "bad.pth")
    value, status = Lpips(weights_path=str(tmp_path / "bad.pth"), net="alex")(*images()[:2])
    assert value is None and status.startswith("unavailable: cannot load alex backbone")
    (tmp_path / "junk.pth").write_bytes(b"not a torch file")
    value, status = Lpips(weights_path=str(tmp_path / "junk.pth"), net="alex")(*images()[:2])
    assert value is None and "cannot load" in status
    with pytest.raises(ValueError, match="lpips net must be one of"):
        Lpips(net="resnet")


@pytest.mark.filterwarnings("ignore:.*deprecated since 0.13:UserWarning")
def test_lpips_squeeze_equals_torchmetrics_lpips(no_network, empty_hub, tmp_path):
    """PIE-Bench's LearnedPerceptualImagePatchSimilarity(net_type="squeeze"), given the same trunk weights,
    on the masked images in [-1, 1]: the same number as ours."""
    from torchmetrics.functional.image.lpips import _LPIPS

    torch.manual_seed(1)
    state = save_features(torchvision.models.squeezenet1_1(weights=None), tmp_path / "squeeze.pth")
    lp = Lpips(weights_path=str(tmp_path / "squeeze.pth"))
    edited, src, mask = images(2)
    ours, status = lp(edited, src, mask)
    assert status == LPIPS_OK and ours > 0
    # torchmetrics' copy of LPIPS: trunk under net.slices.<k-1>.<i>, linear layers from its own files
    tm = _LPIPS(pretrained=True, net="squeeze", pnet_rand=True).eval()
    trunk = {name: state[f"features.{name.split('.', 3)[3]}"] for name in tm.state_dict()
             if name.startswith("net.slices.")}
    tm.load_state_dict(trunk, strict=False)
    bg = (~mask)[..., None]
    x, y = (torch.from_numpy((a / 255.0 * bg).transpose(2, 0, 1).copy()).float()[None] * 2 - 1 for a in (edited, src))
    with torch.no_grad():
        assert ours == pytest.approx(float(tm(x, y)), rel=1e-5)


# ------------------------------------------------------------------ CLIP similarity


def save_tiny_clip(folder) -> str:
    """A tiny CLIPModel + CLIPProcessor built from configs (tokenizer made locally), saved to ``folder``."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    from actors.tiny_tokenizers import build_clip_tokenizer

    tok = build_clip_tokenizer()
    text = dict(vocab_size=len(tok), hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
                max_position_embeddings=77, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                pad_token_id=tok.pad_token_id)
    vision = dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4, image_size=32,
                  patch_size=8)
    torch.manual_seed(0)
    CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)).save_pretrained(folder)
    processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    CLIPProcessor(image_processor=processor, tokenizer=tok).save_pretrained(folder)
    return str(folder)


def torchmetrics_clip_scores(folder: str, pictures: list, prompt: str, monkeypatch) -> list[float]:
    """torchmetrics.multimodal.CLIPScore(model_name_or_path=folder) on each of PIE-Bench's uint8 C x H x W tensors.

    torchmetrics 1.9 reads get_*_features' result as the embedding; transformers 5 returns an output object
    holding it as ``pooler_output``: the shim hands torchmetrics that tensor and changes nothing else."""
    from torchmetrics.multimodal import CLIPScore
    from transformers import CLIPModel

    for name in ("get_image_features", "get_text_features"):
        original = getattr(CLIPModel, name)
        monkeypatch.setattr(CLIPModel, name, lambda self, *a, _f=original, **k: _f(self, *a, **k).pooler_output)
    metric = CLIPScore(model_name_or_path=folder)
    with torch.no_grad():
        return [float(metric(torch.tensor(p).permute(2, 0, 1), prompt)) for p in pictures]


def test_clip_score_equals_torchmetrics_clipscore(no_network, tmp_path, monkeypatch):
    from metrics.clip import Clip

    # torchmetrics takes a local folder only when its path says "openai" (its model-name check)
    folder = save_tiny_clip(tmp_path / "openai-clip-tiny")
    edited, _, mask = images(3)
    clip = Clip(folder)
    out = clip(Image.fromarray(edited), "a red cat", mask)
    assert out["clip_status"] == LPIPS_OK
    part = (edited * mask[..., None]).astype(np.uint8)   # PIE-Bench's edited part: image x mask
    whole, edited_part = torchmetrics_clip_scores(folder, [edited, part], "a red cat", monkeypatch)
    assert out["clip_whole"] == pytest.approx(whole, abs=1e-4)
    assert out["clip_edited"] == pytest.approx(edited_part, abs=1e-4)
    assert out["clip_whole"] != out["clip_edited"]
    no_mask = clip(edited, "a red cat", None)
    assert no_mask["clip_whole"] == out["clip_whole"] and no_mask["clip_edited"] is None
    assert "no ground-truth mask" in no_mask["clip_status"]
    assert clip(edited, None, mask)["clip_status"] == "not computed: the record has no target_prompt"


def test_clip_without_model_says_why(no_network, tmp_path):
    from metrics.clip import NO_CLIP_MODEL, Clip

    edited, _, mask = images()
    assert Clip(None)(edited, "a cat", mask) == {"clip_whole": None, "clip_edited": None,
                                                  "clip_status": NO_CLIP_MODEL}
    status = Clip(str(tmp_path / "nowhere"))(edited, "a cat", mask)["clip_status"]
    assert status.startswith("unavailable") and "nowhere" in status
    (tmp_path / "empty").mkdir()
    assert Clip(str(tmp_path / "empty")).status.startswith("unavailable: cannot load CLIP")

    def fail(path: str) -> str:
        raise OSError("no bucket")

    assert Clip("s3://b/clip", localize=fail).status == "unavailable: cannot fetch s3://b/clip: OSError: no bucket"


# ------------------------------------------------------------------ structure distance


def save_tiny_dino(folder) -> str:
    """A tiny ViTModel (12 blocks of width 32, patch 8, 224 px) built from a config, saved to ``folder``."""
    from transformers import ViTConfig, ViTModel

    torch.manual_seed(0)
    config = ViTConfig(hidden_size=32, num_hidden_layers=12, num_attention_heads=4, intermediate_size=64,
                       patch_size=8, image_size=224)
    ViTModel(config, add_pooling_layer=False).save_pretrained(folder)
    return str(folder)


def reference_structure_distance(model, source: np.ndarray, edited: np.ndarray) -> float:
    """Splice/PIE-Bench written out: Resize(224, max_size=480) + ImageNet norm, block 11's keys caught by a
    hook of our own, cosine self-similarity token by token, MSE between the two maps."""
    from torchvision import transforms

    norm = transforms.Compose([transforms.Resize(224, max_size=480, antialias=True),
                               transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])
    maps = []
    for img in (source, edited):
        keys = []
        hook = model.layers[11].attention.k_proj.register_forward_hook(lambda m, i, o: keys.append(o[0]))
        with torch.no_grad():
            model(pixel_values=norm(torch.tensor(img / 255.0, dtype=torch.float32).permute(2, 0, 1)[None]),
                  interpolate_pos_encoding=True)
        hook.remove()
        k = keys[0]
        maps.append(torch.nn.functional.cosine_similarity(k[:, None, :], k[None, :, :], dim=-1).numpy())
    return float(np.mean((maps[0] - maps[1]) ** 2))


def test_structure_distance_matches_hand_computation(no_network, tmp_path):
    from metrics.structure import Structure

    folder = save_tiny_dino(tmp_path / "dino")
    structure = Structure(folder)
    _, src, _ = images(4, shape=(64, 96))   # not square: short side to 224, position embeddings interpolated
    edited = src.copy()
    edited[10:40, 20:70] = 255 - edited[10:40, 20:70]
    value, status = structure(src, edited)
    assert status == LPIPS_OK and value > 0
    assert value == pytest.approx(reference_structure_distance(structure._model, src, edited), rel=1e-4)
    assert structure(edited, src)[0] == pytest.approx(value, rel=1e-6)   # symmetric
    assert structure(src, src) == (0.0, LPIPS_OK)


def test_structure_without_model_says_why(tmp_path):
    from metrics.structure import NO_DINO_MODEL, Structure

    assert Structure(None)(*images()[:2]) == (None, NO_DINO_MODEL)
    value, status = Structure(str(tmp_path / "nowhere"))(*images()[:2])
    assert value is None and status.startswith("unavailable") and "nowhere" in status


# ------------------------------------------------------------------ the edit stage's metric columns


def test_edit_stage_fills_clip_and_structure_columns(no_network, tmp_path, score_edit):
    """EditActor's metrics part with real (tiny) CLIP and DINO folders, no pipeline: the row's columns are
    the metrics' own values on the edit at the source's size."""
    from types import SimpleNamespace

    from pipeline import storage as st
    from pipeline.edit_stage import EditActor
    from metrics.clip import Clip
    from metrics.structure import Structure
    from pipeline.records import new_record, validate_record

    clip_dir, dino_dir = save_tiny_clip(tmp_path / "clip"), save_tiny_dino(tmp_path / "dino")
    actor = object.__new__(EditActor)   # skips loading an editing pipeline
    actor.device, actor.storage = "cpu", st.StorageConfig.from_mapping(None)
    actor._metric_models({"compute": ["background", "clip", "structure"], "clip_model": clip_dir,
                          "dino_model": dino_dir}, str(tmp_path / "cache"))
    edited, src, mask = images(5)
    result = SimpleNamespace(image=Image.fromarray(edited).resize((32, 24)))   # edits run at another size
    record = validate_record(new_record(id="r", image="x.png", instruction="do", target_prompt="a red cat"))
    out = score_edit(actor, result, Image.fromarray(src), mask, {"policy": "full"}, record)
    at_source = result.image.resize((64, 48), Image.BICUBIC)
    assert out["clip_status"] == LPIPS_OK and out["structure_status"] == LPIPS_OK
    expected = Clip(clip_dir)(at_source, "a red cat", mask)
    assert out["clip_whole"] == pytest.approx(expected["clip_whole"])
    assert out["clip_edited"] == pytest.approx(expected["clip_edited"])
    assert out["structure_distance"] == pytest.approx(Structure(dino_dir)(Image.fromarray(src), at_source)[0])
    assert out["mse_bg"] > 0 and out["lpips_status"] == "not computed: lpips not in metrics.compute"
    actor._metric_models({"compute": ["background"]}, str(tmp_path / "cache"))
    out = score_edit(actor, result, Image.fromarray(src), mask, {"policy": "full"}, record)
    assert out["clip_status"] == "not computed: clip not in metrics.compute" and "clip_whole" not in out
