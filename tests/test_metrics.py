"""PSNR, slice-averaged SSIM, 3-D SSIM and the support-aware figures against independent
references and hand-computed numbers."""

from __future__ import annotations

import numpy as np
import pytest

from physnet.metrics import (
    false_alarm_energy,
    false_alarm_fraction,
    gaussian_window,
    psnr,
    ssim,
    ssim3d,
    support,
    support_psnr,
)


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


def two_voxel_scene():
    """A 5^3 volume with targets at (1, 1, 1) (0.5) and (3, 3, 3) (1.0); the estimate
    misses the first by 0.1, hits the second, and puts 0.3 at (1, 2, 1) (a neighbour of
    the first target) and 0.2 at (0, 4, 4) (far from both)."""
    reference = np.zeros((5, 5, 5))
    reference[1, 1, 1], reference[3, 3, 3] = 0.5, 1.0
    estimate = np.zeros((5, 5, 5))
    estimate[1, 1, 1], estimate[3, 3, 3] = 0.4, 1.0
    estimate[1, 2, 1], estimate[0, 4, 4] = 0.3, 0.2
    return estimate, reference


def test_support_and_its_dilation():
    _, reference = two_voxel_scene()
    assert support(reference).sum() == 2
    dilated = support(reference, dilation=1)
    assert dilated.sum() == 2 * 27 - 1  # two 3x3x3 cubes sharing the voxel (2, 2, 2)
    assert dilated[0, 0, 0] and dilated[2, 2, 2] and dilated[4, 4, 4] and not dilated[0, 4, 4]
    assert support(reference, dilation=2).sum() == 2 * 4**3 - 3**3  # clipped at the faces
    batch = support(np.stack([reference, np.zeros_like(reference)]), dilation=1)
    assert batch[0].sum() == 53 and batch[1].sum() == 0  # no dilation across volumes


def test_support_psnr_by_hand():
    estimate, reference = two_voxel_scene()
    # support {(1,1,1), (3,3,3)}: errors 0.1 and 0 -> mse 0.005
    assert support_psnr(estimate, reference) == pytest.approx(10 * np.log10(1 / 0.005))
    # dilated: 53 voxels, squared errors 0.01 + 0.09 (the neighbour at (1,2,1))
    assert support_psnr(estimate, reference, dilation=1) == pytest.approx(10 * np.log10(53 / 0.1))
    assert support_psnr(reference, reference) == np.inf
    batch = support_psnr(np.stack([estimate, estimate]), np.stack([reference, 0 * reference]))
    assert batch[0] == pytest.approx(10 * np.log10(200)) and np.isnan(batch[1])


def test_false_alarm_energy_and_fraction_by_hand():
    estimate, reference = two_voxel_scene()
    energy = 0.5**2 + 1.0**2  # 1.25
    # off the support: 0.3 and 0.2
    assert false_alarm_energy(estimate, reference) == pytest.approx((0.09 + 0.04) / energy)
    assert false_alarm_energy(estimate, reference, dilation=1) == pytest.approx(0.04 / energy)
    assert false_alarm_fraction(estimate, reference) == pytest.approx(2 / 123)
    assert false_alarm_fraction(estimate, reference, threshold=0.25) == pytest.approx(1 / 123)
    assert false_alarm_fraction(estimate, reference, dilation=1) == pytest.approx(1 / 72)
    batch = false_alarm_energy(np.stack([estimate, reference]), np.stack([reference, reference]))
    np.testing.assert_allclose(batch, [0.104, 0.0])


@pytest.mark.parametrize("metric", [psnr, ssim, ssim3d, support_psnr, false_alarm_energy])
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


def test_bad_dilation():
    with pytest.raises(ValueError, match="dilation"):
        support(np.zeros((3, 3, 3)), dilation=-1)
    with pytest.raises(ValueError, match="dilation"):
        false_alarm_energy(np.zeros((3, 3, 3)), np.zeros((3, 3, 3)), dilation=1.5)
