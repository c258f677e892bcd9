"""Pieces of TokenDrop checked against references nobody here wrote: scikit-image and the paper's formulas."""
import numpy as np
import pytest
import torch
from skimage.exposure import histogram as sk_histogram
from skimage.filters import threshold_triangle

from actors.models import family
from actors.sampler import clean_estimate, consistency_correction, regularized_step
from policies.tokendrop import adaptive_keep
from policies.triangle import threshold_from_histogram, triangle_threshold


def _samples():
    rng = np.random.default_rng(0)
    yield rng.exponential(1.0, 4096)                      # skewed, long right tail
    yield -rng.exponential(1.0, 4096)                     # long left tail: skimage flips
    yield np.concatenate([rng.normal(0, 1, 3000), rng.normal(6, 0.5, 200)])
    yield rng.uniform(0, 1, (64, 64))


@pytest.mark.parametrize("values", list(_samples()))
def test_triangle_equals_skimage_on_same_histogram(values):
    counts, centers = sk_histogram(values.reshape(-1), 256, source_range="image")
    ours = threshold_from_histogram(torch.tensor(counts), torch.tensor(centers))
    assert ours == pytest.approx(float(threshold_triangle(values)), abs=1e-12)


@pytest.mark.parametrize("values", list(_samples()))
def test_triangle_from_data_within_one_bin_of_skimage(values):
    ours = triangle_threshold(torch.tensor(values))
    bin_width = (values.max() - values.min()) / 256
    assert abs(ours - float(threshold_triangle(values))) <= bin_width + 1e-12


def test_triangle_constant_data():
    assert triangle_threshold(torch.full((10,), 0.3, dtype=torch.float64)) == pytest.approx(0.3)


def test_closed_form_is_eq10_at_dropped_positions_only():
    g = torch.Generator().manual_seed(0)
    x0, src = torch.randn(6, 4, generator=g), torch.randn(6, 4, generator=g)
    dropped = torch.tensor([True, False, True, False, False, True])
    eta = 0.7
    x_tilde = x0 + consistency_correction(x0, src, dropped, eta)
    expected = torch.where(dropped[:, None], x0 / (1 + eta) + eta / (1 + eta) * src, x0)
    torch.testing.assert_close(x_tilde, expected)


def test_regularized_step_matches_eq12_and_is_euler_without_drop():
    g = torch.Generator().manual_seed(1)
    z, v, src = (torch.randn(1, 8, 4, generator=g) for _ in range(3))
    sigma, sigma_next = 0.8, 0.6
    euler = z + (sigma_next - sigma) * v
    x0 = clean_estimate(z, v, sigma)
    x1 = z + (1 - sigma) * v
    dropped = torch.tensor([True] * 3 + [False] * 5)
    ours = regularized_step(euler, x0, src, dropped, sigma, sigma_next, regularize=True)
    x_tilde = torch.where(dropped[None, :, None], (x0 + sigma * src) / (1 + sigma), x0)   # η_t = σ_t
    torch.testing.assert_close(ours, (1 - sigma_next) * x_tilde + sigma_next * x1)
    # Nothing dropped, or reg off: exactly diffusers' Euler step, bit for bit.
    assert torch.equal(regularized_step(euler, x0, src, None, sigma, sigma_next, True), euler)
    assert torch.equal(regularized_step(euler, x0, src, dropped, sigma, sigma_next, False), euler)


def test_adaptive_keep_finds_the_changed_region():
    diff = torch.rand(32, 32, generator=torch.Generator().manual_seed(0)) * 0.05
    diff[8:16, 10:20] += 1.0
    keep = adaptive_keep(diff, omega=0.0)
    assert keep[8:16, 10:20].all()
    assert 0.05 < keep.float().mean() < 0.5
    # ω lowers the threshold by ω·std: more tokens kept, here all of them (std ≈ 0.23, triangle ≈ 0.03).
    assert adaptive_keep(diff, omega=0.4).all()
    assert adaptive_keep(torch.zeros(8, 8), omega=0.4).all()


def test_grid_scaled_blur_covers_the_same_share_of_the_image():
    """`blur: grid`: the paper's k=11, σ=1 at 64x64 become k=3, σ=0.25 at 16x16; a 4x4-token change on a 16x16
    grid keeps a mask close to its area, where the paper's kernel (clipped to the grid) spreads it far wider."""
    from policies import make
    from policies.base import RunInfo
    from policies.tokendrop import grid_scaled_blur

    assert grid_scaled_blur(11, 1.0, (64, 64)) == (11, 1.0)
    assert grid_scaled_blur(11, 1.0, (16, 16)) == (3, 0.25)
    assert grid_scaled_blur(11, 1.0, (8, 8)) == (1, 0.125)
    diff = torch.rand(16, 16, generator=torch.Generator().manual_seed(0)) * 0.05
    diff[6:10, 6:10] += 1.0
    paper, grid = adaptive_keep(diff, 0.0, 11, 1.0), adaptive_keep(diff, 0.0, 3, 0.25)
    assert grid[6:10, 6:10].all() and int(grid.sum()) < int(paper.sum())
    run = RunInfo(family="flux", noisy_grid=(16, 16), source_grids=((16, 16),), steps=4,
                  sigmas=torch.linspace(1, 0, 5), seed=0, device=torch.device("cpu"), paper=family("flux").paper)
    applied = make("tokendrop", blur="grid").start(run).applied()
    assert (applied["kernel"], applied["blur_sigma"], applied["blur"]) == (3, 0.25, "grid")
