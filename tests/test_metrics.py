"""PSNR, slice-averaged SSIM and 3-D SSIM against independent references."""

from __future__ import annotations

import numpy as np
import pytest

from physnet.metrics import gaussian_window, psnr, ssim, ssim3d


def volumes(rng, shape=(25, 25, 49)):
    reference = np.clip(rng.uniform(size=shape) ** 4, 0, 1)
    estimate = np.clip(reference + 0.1 * rng.standard_normal(shape), 0, 1)
    return estimate, reference


def brute_force_ssim_2d(x, y, size=11, sigma=1.5, peak=1.0):
    """SSIM of one image by explicit windows at every valid position (TF's definition)."""
    offsets = np.arange(size) - (size - 1) / 2
    g = np.exp(-(offsets**2) / (2 * sigma**2))
    w = np.outer(g, g) / np.outer(g, g).sum()
    c1, c2 = (0.01 * peak) ** 2, (0.03 * peak) ** 2
    values = []
    for i in range(x.shape[0] - size + 1):
        for j in range(x.shape[1] - size + 1):
            a, b = x[i : i + size, j : j + size], y[i : i + size, j : j + size]
            mx, my = np.sum(w * a), np.sum(w * b)
            vx, vy = np.sum(w * a * a) - mx**2, np.sum(w * b * b) - my**2
            cov = np.sum(w * a * b) - mx * my
            values.append(
                (2 * mx * my + c1) * (2 * cov + c2) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
            )
    return np.mean(values)


def test_psnr_definition(rng):
    estimate, reference = volumes(rng)
    mse = np.mean((estimate - reference) ** 2)
    assert psnr(estimate, reference) == pytest.approx(10 * np.log10(1 / mse), rel=1e-12)
    assert psnr(estimate, reference, peak=2.0) == pytest.approx(10 * np.log10(4 / mse), rel=1e-12)
    assert psnr(reference, reference) == np.inf
    batch = psnr(np.stack([estimate, reference]), np.stack([reference, reference]))
    assert batch.shape == (2,) and batch[1] == np.inf


def test_ssim_is_slice_ssim_averaged_over_z(rng):
    estimate, reference = volumes(rng, (13, 12, 3))
    expected = np.mean([brute_force_ssim_2d(estimate[..., z], reference[..., z]) for z in range(3)])
    assert ssim(estimate, reference) == pytest.approx(expected, rel=1e-10)


def test_ssim_matches_scikit_image(rng):
    metrics = pytest.importorskip("skimage.metrics")
    estimate, reference = volumes(rng)
    options = {"gaussian_weights": True, "sigma": 1.5, "use_sample_covariance": False}
    expected_2d = metrics.structural_similarity(
        estimate, reference, data_range=1.0, channel_axis=-1, **options
    )
    expected_3d = metrics.structural_similarity(estimate, reference, data_range=1.0, **options)
    assert ssim(estimate, reference) == pytest.approx(expected_2d, rel=1e-10)
    assert ssim3d(estimate, reference) == pytest.approx(expected_3d, rel=1e-10)
    assert ssim(reference, reference) == pytest.approx(1.0)
    assert ssim3d(reference, reference) == pytest.approx(1.0)


def test_batches_and_window():
    w = gaussian_window()
    assert w.shape == (11,) and w.sum() == pytest.approx(1.0)
    assert w[5] / w[4] == pytest.approx(np.exp(1 / (2 * 1.5**2)))
    a = np.zeros((2, 11, 11, 11))
    assert ssim(a, a).shape == (2,) and ssim3d(a, a).shape == (2,)


@pytest.mark.parametrize("metric", [psnr, ssim, ssim3d])
def test_bad_inputs(metric):
    with pytest.raises(ValueError, match="equal shapes"):
        metric(np.zeros((11, 11, 11)), np.zeros((11, 11, 12)))
    with pytest.raises(ValueError, match="real and finite"):
        metric(np.full((11, 11, 11), np.nan), np.zeros((11, 11, 11)))
    with pytest.raises(ValueError, match="volumes"):
        metric(np.zeros((11, 11)), np.zeros((11, 11)))


def test_window_larger_than_volume():
    with pytest.raises(ValueError, match="smaller than the 11-point window"):
        ssim3d(np.zeros((25, 25, 5)), np.zeros((25, 25, 5)))
