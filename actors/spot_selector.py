"""SpotSelector (SpotEdit, Algorithm S2): how far each noisy token's clean estimate x̂0 is from the source.

`lpips_vae` (the paper's score, Eq. 5): x̂0 and the source latent go through the first layers of the
model's own VAE decoder (`conv_in`, `mid_block`, first up block); at each layer the features are
normalised over channels, the squared difference is summed over channels, resized (bilinear) to the
latent grid and averaged over the layers; a 2×2 average pool gives one score per token (the latent is
packed 2×2 per token). The score of unit-normalised features lies in [0, 4]; τ = 0.2 is on that scale.
`l2` and `cosine` are the latent-space variants: mean squared difference over a token's channels, and
1 − cosine similarity of the two token vectors (a distance, so that "score ≤ τ" means unchanged for all).

One selector per edit: the source's decoder features are computed once, at the first score.
"""
from __future__ import annotations

import time
from typing import Any

import torch
import torch.nn.functional as F

from .models import family

METRICS = ("lpips_vae", "l2", "cosine")
PATCH = 2   # both families pack 2×2 latent pixels into one token


def channel_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """‖â − b̂‖² over channels (dim 1) of channel-normalised features: [B, C, h, w] -> [B, 1, h, w]."""
    a, b = F.normalize(a.float(), dim=1), F.normalize(b.float(), dim=1)
    return (a - b).pow(2).sum(dim=1, keepdim=True)


def token_map(maps: list[torch.Tensor], latent_hw: tuple[int, int]) -> torch.Tensor:
    """Average per-layer distance maps on the latent grid, then one value per 2×2 token: [tokens]."""
    resized = [m if m.shape[-2:] == latent_hw else
               F.interpolate(m, size=latent_hw, mode="bilinear", align_corners=False) for m in maps]
    mean = torch.stack(resized).mean(dim=0)
    return F.avg_pool2d(mean, kernel_size=PATCH, stride=PATCH).flatten()


def latent_score(x0: torch.Tensor, source: torch.Tensor, metric: str) -> torch.Tensor:
    """Latent-space variants on packed tokens [N, C] -> [N]."""
    x0, source = x0.float(), source.float()
    if metric == "l2":
        return (x0 - source).pow(2).mean(dim=-1)
    if metric == "cosine":
        return 1.0 - F.cosine_similarity(x0, source, dim=-1)
    raise ValueError(f"unknown latent metric {metric!r}; accepted: l2, cosine")


class SpotSelector:
    """Scores packed clean estimates [N, C] of one edit against that edit's first reference."""

    def __init__(self, pipe: Any, family: str, height: int, width: int, source: torch.Tensor) -> None:
        self.pipe, self.family = pipe, family
        self.height, self.width = height, width
        self.source = source            # packed latents of the first reference, [N, C]
        self._source_features: list[torch.Tensor] | None = None

    @torch.no_grad()
    def score(self, x0: torch.Tensor, metric: str = "lpips_vae") -> torch.Tensor:
        """One score per noisy token, float32 [N]; larger = further from the source."""
        if metric != "lpips_vae":
            return latent_score(x0, self.source.to(x0.device), metric)
        if self._source_features is None:
            self._source_features = self.features(self.source)
        feats = self.features(x0)
        maps = [channel_distance(a, b) for a, b in zip(feats, self._source_features)]
        return token_map(maps, self._latent_hw()).to(x0.device)

    def _latent_hw(self) -> tuple[int, int]:
        f = self.pipe.vae_scale_factor
        return 2 * (self.height // (f * 2)), 2 * (self.width // (f * 2))

    @torch.no_grad()
    def features(self, packed: torch.Tensor) -> list[torch.Tensor]:
        """Early decoder activations of packed latents [N, C], each [1, C_l, h_l, w_l]."""
        fam, param = family(self.family), next(self.pipe.vae.decoder.parameters())
        z = fam.unpack(self.pipe, packed[None], self.height, self.width)
        return fam.decoder_features(self.pipe, z.to(device=param.device, dtype=param.dtype))


class TimedScorer:
    """`RunInfo.token_scores` for one edit: a SpotSelector built on first use, timed (device synchronised)."""

    def __init__(self, pipe: Any, family: str, height: int, width: int, source: torch.Tensor) -> None:
        self._args = (pipe, family, height, width, source)
        self._selector: SpotSelector | None = None
        self.seconds = 0.0

    def __call__(self, x0: torch.Tensor, metric: str = "lpips_vae") -> torch.Tensor:
        started = time.perf_counter()
        if self._selector is None:
            self._selector = SpotSelector(*self._args)
        scores = self._selector.score(x0, metric)
        if scores.device.type == "cuda":
            torch.cuda.synchronize(scores.device)
        self.seconds += time.perf_counter() - started
        return scores

    def take(self) -> float:
        """Seconds spent scoring since the last call."""
        seconds, self.seconds = self.seconds, 0.0
        return seconds
