"""The radar-mimo generator: targets, noise, consistency with the operator, the store."""

from __future__ import annotations

import numpy as np
import pytest

from physnet.datasets._radar import add_noise, radar_operator, synthesize_targets
from physnet.datasets.generate import generate, get_generator, sample_of
from physnet.datasets.store import StoreDataset
from physnet.operators import voxel_grid

SMALL = {"n_frequencies": 3, "grid_shape": [8, 8, 12]}


def check(config):
    return get_generator("radar-mimo").check_config(config)


def test_fields_and_consistency_with_the_operator():
    config = check({**SMALL, "reflectivity": True, "complex_backprojection": True})
    sample = sample_of(get_generator("radar-mimo"), config, seed=3, index=5)
    assert sample["measurements"].shape == (3, 12, 13)
    assert sample["measurements"].dtype == np.complex64
    assert sample["target"].shape == (8, 8, 12) and sample["target"].dtype == np.float32
    x = sample["reflectivity"]
    np.testing.assert_allclose(np.abs(x), sample["target"], rtol=1e-6, atol=1e-7)
    assert 0 < sample["target"].max() <= 1 and sample["target"].min() >= 0
    A = radar_operator(3, (8, 8, 12))
    back = A.H @ sample["measurements"]
    np.testing.assert_allclose(
        sample["backprojection"].reshape(-1),
        np.abs(back),
        rtol=1e-5,
        atol=1e-6 * np.abs(back).max(),
    )
    pair = sample["backprojection_complex"].reshape(2, -1)
    np.testing.assert_allclose(
        pair[0] + 1j * pair[1], back, rtol=1e-5, atol=1e-6 * np.abs(back).max()
    )
    noise = sample["measurements"] - A @ x.reshape(-1)
    snr = 10 * np.log10(np.mean(np.abs(A @ x.reshape(-1)) ** 2) / np.mean(np.abs(noise) ** 2))
    assert snr == pytest.approx(float(sample["snr_db"]), abs=1.0)  # 468 noise samples


def test_per_sample_snr_in_range_and_determinism():
    generator = get_generator("radar-mimo")
    config = check({**SMALL, "snr_db": [10.0, 40.0]})
    snrs = [float(sample_of(generator, config, 0, i)["snr_db"]) for i in range(6)]
    assert all(10 <= s <= 40 for s in snrs) and len(set(snrs)) == 6
    a = sample_of(generator, config, 0, 2)
    b = sample_of(generator, config, 0, 2)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])
    assert not np.array_equal(a["target"], sample_of(generator, config, 0, 3)["target"])


@pytest.mark.parametrize(
    ("shape", "volume"),
    [
        ("ellipsoid", 4 / 3 * np.pi * 0.05**3),
        ("box", 0.1**3),
        ("cylinder", None),
        ("pipe", None),
    ],
)
def test_shapes_have_their_analytic_volume(shape, volume, rng):
    points = voxel_grid((41, 41, 41), [(-0.1, 0.1)] * 3)
    config = check(
        {
            "shapes": [shape],
            "min_targets": 1,
            "max_targets": 1,
            "min_size": 0.05,
            "max_size": 0.05,
            "min_magnitude": 1.0,
            "margin": 0.095,
        }
    )
    magnitude = synthesize_targets(points, config, rng)
    assert set(np.unique(magnitude)) == {0.0, 1.0}
    measured = np.count_nonzero(magnitude) * 0.005**3
    if volume is None:  # the draws after the shape's: half-length and wall thickness
        radius, length = 0.05, 0.05  # half-length in [1, 2] x the third semi-axis
        solid = [np.pi * radius**2 * 2 * length * f for f in (1.0, 2.0)]
        if shape == "cylinder":
            assert solid[0] * 0.93 <= measured <= solid[1] * 1.07
        else:  # a wall of 30-50 % of the radius: 51-75 % of the solid's cross-section
            assert solid[0] * 0.51 * 0.9 <= measured <= solid[1] * 0.75 * 1.1
        return
    assert measured == pytest.approx(volume, rel=0.05)


def test_clusters_are_small_balls(rng):
    points = voxel_grid((41, 41, 41), [(-0.1, 0.1)] * 3)
    config = check(
        {
            "shapes": ["cluster"],
            "min_targets": 1,
            "max_targets": 1,
            "min_size": 0.02,
            "max_size": 0.05,
            "min_magnitude": 1.0,
            "margin": 0.05,
        }
    )
    magnitude = synthesize_targets(points, config, rng)
    # 3-8 balls of radius 16-24 mm: between one small ball and eight large ones
    ball = 4 / 3 * np.pi
    assert ball * 0.016**3 * 0.8 <= np.count_nonzero(magnitude) * 0.005**3 <= 8 * ball * 0.024**3


def test_frequency_choices_draw_per_sample():
    generator = get_generator("radar-mimo")
    config = check({"frequency_choices": [2, 3], "grid_shape": [6, 6, 8]})
    assert "measurements" not in generator.fields(config)
    counts = set()
    for index in range(8):
        sample = sample_of(generator, config, 0, index)
        counts.add(int(sample["n_frequencies"]))
        A = radar_operator(int(sample["n_frequencies"]), (6, 6, 8))
        assert sample["backprojection"].shape == (6, 6, 8) and A.measurement_shape[0] in (2, 3)
    assert counts == {2, 3}
    single = sample_of(generator, check({"n_frequencies": 3, "grid_shape": [6, 6, 8]}), 0, 0)
    assert single["measurements"].shape == (3, 12, 13) and single["n_frequencies"] == 3


def test_blobs_are_smooth_and_bounded(rng):
    points = voxel_grid((25, 25, 49))
    config = check({"shapes": ["blob"], "max_targets": 1})
    magnitude = synthesize_targets(points, config, rng)
    assert 0 < magnitude.max() <= 1
    assert len(np.unique(magnitude)) > 10  # not flat


def test_add_noise_reaches_the_snr(rng):
    y = rng.standard_normal(200_000) + 1j * rng.standard_normal(200_000)
    noisy = add_noise(y, 20.0, rng)
    noise = noisy - y
    assert 10 * np.log10(np.mean(np.abs(y) ** 2) / np.mean(np.abs(noise) ** 2)) == pytest.approx(
        20.0, abs=0.05
    )
    assert np.var(noise.real) == pytest.approx(np.var(noise.imag), rel=0.02)


def test_generate_through_the_framework(tmp_path):
    path = generate("radar-mimo", tmp_path / "radar.h5", samples=4, progress=False, overrides=SMALL)
    train = StoreDataset(path, split="train")
    assert train.inputs == ("backprojection",) and train.targets == ("target",)
    sample = train[0]
    assert sample["measurements"].dtype == np.complex64
    assert sample["backprojection"].shape == (8, 8, 12)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"snr_db": [30.0, 10.0]}, "snr_db"),
        ({"shapes": ["torus"]}, "shapes"),
        ({"min_targets": 3, "max_targets": 2}, "min_targets"),
        ({"min_size": 0.1, "max_size": 0.05}, "min_size"),
        ({"grid_shape": [4, 4]}, "grid_shape"),
        ({"n_frequencies": 0}, "n_frequencies"),
        ({"frequency_choices": [5, 0]}, "frequency_choices"),
        ({"frequency_choices": [5.5]}, "frequency_choices"),
    ],
)
def test_bad_config(config, message):
    with pytest.raises(ValueError, match=message):
        check(config)
