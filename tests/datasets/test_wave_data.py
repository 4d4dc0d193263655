"""The wave2d generator: reproducible samples, speed maps, finite propagation speed, the store."""

from __future__ import annotations

import math

import numpy as np
import pytest

from physnet.datasets import StoreDataset, generate
from physnet.datasets._wave import draw_wave_scene
from physnet.datasets.generate import get_generator, sample_of

SMALL = {"size": 24, "mesh_size": 0.04, "n_frames": 3, "inclusions": [1, 2], "holes": [1, 1]}


@pytest.fixture(scope="module")
def generator():
    return get_generator("wave2d")


def test_samples_are_reproducible_and_differ_between_indices(generator):
    config = generator.check_config(SMALL)
    first = sample_of(generator, config, seed=5, index=2)
    again = sample_of(generator, config, seed=5, index=2)
    other = sample_of(generator, config, seed=5, index=3)
    assert first["frames"].shape == (3, 24, 24) and first["frames"].dtype == np.float32
    np.testing.assert_array_equal(first["frames"], again["frames"])
    assert not np.array_equal(first["frames"], other["frames"])


def test_speed_map_shows_holes_inclusions_and_background(generator):
    config = generator.check_config(SMALL)
    rng = np.random.default_rng(np.random.SeedSequence(7, spawn_key=(0,)))
    scene = draw_wave_scene(config, rng)
    sample = sample_of(generator, config, seed=7, index=0)
    speed, frames = sample["speed"], sample["frames"]
    centres = (np.arange(24) + 0.5) / 24
    x, y = np.meshgrid(centres, centres)
    (hx, hy, hr), *_ = scene["holes"]
    # Strictly inside the hole's inscribed polygon: speed 0 and no wave.
    inside = np.hypot(x - hx, y - hy) < hr * math.cos(math.pi / 8) - 1e-9
    assert inside.any() and np.all(speed[inside] == 0) and np.all(frames[:, inside] == 0)
    for (cx, cy, r), value in zip(scene["inclusions"], scene["inclusion_speeds"], strict=True):
        deep = np.hypot(x - cx, y - cy) < r - 0.05
        np.testing.assert_allclose(speed[deep], value, rtol=1e-6)
    background = speed[(speed > 0) & ~np.isin(speed, np.float32(scene["inclusion_speeds"]))]
    low, high = scene["background"] * (1 - 0.3), scene["background"] * (1 + 0.3)
    assert background.min() >= low and background.max() <= high


def test_the_field_is_zero_beyond_the_fastest_wavefront(generator):
    config = generator.check_config(
        {
            **SMALL,
            "holes": [0, 0],
            "inclusions": [0, 0],
            "sources": [1, 1],
            "start_delay": [0.0, 0.0],
        }
    )
    rng = np.random.default_rng(np.random.SeedSequence(3, spawn_key=(1,)))
    scene = draw_wave_scene(config, rng)
    frames = sample_of(generator, config, seed=3, index=1)["frames"]
    ((position, frequency, _),) = scene["sources"]
    speed_max = scene["background"] * (1 + abs(scene["gradient"]) / math.sqrt(2))
    # The wavelet starts (to 1e-5 of its peak) at t = 0 and the first frame is at ~2.4 / f.
    reach = speed_max * (2.4 / frequency) + 3 * config["mesh_size"]
    centres = (np.arange(24) + 0.5) / 24
    x, y = np.meshgrid(centres, centres)
    far = np.hypot(x - position[0], y - position[1]) > reach + 0.1
    near = ~far
    assert far.sum() > 50
    if far.any():
        assert np.abs(frames[0][far]).max() < 1e-3 * np.abs(frames[0][near]).max()
    assert np.abs(frames[0][near]).max() > 0


def test_generate_writes_a_store_the_trainer_reads(tmp_path):
    path = generate(
        "wave2d",
        tmp_path / "wave.h5",
        samples=2,
        progress=False,
        overrides={"size": 8, "mesh_size": 0.1, "n_frames": 5, "holes": [0, 0]},
    )
    with StoreDataset(path) as store:
        assert store.inputs == ("speed", "frames") and store.targets == ("frames",)
        assert store[1]["frames"].shape == (5, 8, 8)


def test_bad_config_values_are_named(generator):
    with pytest.raises(ValueError, match=r"config.inclusion_speed: \[2.0, 1.0\]"):
        generator.check_config({"inclusion_speed": [2.0, 1.0]})
    with pytest.raises(ValueError, match=r"config\.outer_boundary: 'open'"):
        generator.check_config({"outer_boundary": "open"})
