"""wave2d's ``hole_shapes``: the default keeps the data bit-identical, ellipses and squares
are holes of speed 0, the option is checked, the held-out-shapes dataset config."""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import numpy as np
import pytest

from physnet.datasets._wave import draw_wave_scene
from physnet.datasets.generate import get_generator, plan_generation, sample_of
from physnet.fem.mesh import Ellipse, Rectangle

DATASETS = Path(__file__).resolve().parents[2] / "datasets" / "wave2d"

REFERENCE = {"size": 16, "mesh_size": 0.05, "n_frames": 2, "holes": [1, 2], "inclusions": [1, 2]}
# sha256 of the speed then frames bytes of sample_of(REFERENCE, seed, index), computed with
# the generator before hole_shapes existed (float64 maths on x86-64 with NumPy/SciPy).
REFERENCE_HASHES = {
    (0, 0): "671260bd9c075512ab7b504fb9a755279a313dfa17f01cf5408fc70b041f54e8",
    (3, 1): "0c3b62204880bf3d84c05f4243216af3abe1adcd6acf86df0c458b4e0e207c79",
    (1, 5): "f0879d80dbdecb3a8d24fc992a1e5ff7a765e983ba62e77dba42d11e92ec9a10",
}
# draw_wave_scene(REFERENCE) for seed 0, index 0 before hole_shapes existed.
REFERENCE_HOLES = [
    (0.645792881066227, 0.2545031513371447, 0.07214360066698486),
    (0.3646062518640063, 0.6049227298092996, 0.10732419254836253),
]
SHAPES = {
    "size": 24,
    "mesh_size": 0.04,
    "n_frames": 3,
    "holes": [2, 2],
    "hole_radius": [0.12, 0.15],
    "inclusions": [0, 1],
    "hole_shapes": ["ellipse", "square"],
}


@pytest.fixture(scope="module")
def generator():
    return get_generator("wave2d")


def scene_of(config, seed, index):
    """The scene of sample ``index`` (its random stream, as in ``sample_of``)."""
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(index,)))
    return draw_wave_scene(config, rng)


def test_default_hole_shapes_keep_the_samples_bit_identical(generator):
    config = generator.check_config(REFERENCE)
    assert config["hole_shapes"] == ["circle"]
    assert scene_of(config, 0, 0)["holes"] == REFERENCE_HOLES
    # A config stored before the option existed draws the same scene.
    old = {key: value for key, value in config.items() if key != "hole_shapes"}
    assert scene_of(old, 3, 1) == scene_of(config, 3, 1)
    for (seed, index), expected in REFERENCE_HASHES.items():
        sample = sample_of(generator, config, seed=seed, index=index)
        digest = hashlib.sha256()
        for name in ("speed", "frames"):
            digest.update(np.ascontiguousarray(sample[name]).tobytes())
        assert digest.hexdigest() == expected, f"sample (seed {seed}, index {index}) changed"


def test_holes_are_drawn_from_hole_shapes_inside_their_bounding_circles(generator):
    config = generator.check_config({**SHAPES, "hole_radius": [0.05, 0.12], "holes": [1, 2]})
    h, kinds = config["mesh_size"], set()
    for index in range(12):
        holes = scene_of(config, 0, index)["holes"]
        for hole in holes:
            assert isinstance(hole, (Ellipse, Rectangle))
            kinds.add(type(hole))
            if isinstance(hole, Ellipse):
                radius = hole.a
                assert 0.5 * radius <= hole.b <= radius and 0 <= hole.angle <= math.pi
            else:
                radius = hole.half_width * math.sqrt(2)
                assert hole.half_height == hole.half_width and 0 <= hole.angle <= math.pi / 2
            assert hole.bounding_radius == pytest.approx(radius)
            assert 0.05 <= radius <= 0.12
            assert min(hole.x, hole.y, 1 - hole.x, 1 - hole.y) - radius >= 2 * h
        for i in range(len(holes)):
            for j in range(i):
                gap = math.hypot(holes[i].x - holes[j].x, holes[i].y - holes[j].y)
                assert gap > holes[i].bounding_radius + holes[j].bounding_radius + 2 * h
    assert kinds == {Ellipse, Rectangle}


def local(shape, x, y):
    cos, sin = math.cos(shape.angle), math.sin(shape.angle)
    dx, dy = x - shape.x, y - shape.y
    return cos * dx + sin * dy, -sin * dx + cos * dy


def level(shape, x, y):
    """< 1 inside the shape, 1 on its boundary, > 1 outside (scales with the distance)."""
    u, v = local(shape, x, y)
    if isinstance(shape, Ellipse):
        return np.sqrt((u / shape.a) ** 2 + (v / shape.b) ** 2)
    return np.maximum(np.abs(u) / shape.half_width, np.abs(v) / shape.half_height)


def test_speed_is_zero_inside_ellipse_and_square_holes_and_positive_elsewhere(generator):
    config = generator.check_config(SHAPES)
    index = next(
        i
        for i in range(20)
        if {type(hole) for hole in scene_of(config, 7, i)["holes"]} == {Ellipse, Rectangle}
    )
    scene = scene_of(config, 7, index)
    sample = sample_of(generator, config, seed=7, index=index)
    speed, frames = sample["speed"], sample["frames"]
    centres = (np.arange(24) + 0.5) / 24
    x, y = np.meshgrid(centres, centres)
    outside = np.ones(speed.shape, dtype=bool)
    for hole in scene["holes"]:
        # Well inside (the mesh's hole is the polygon of nodes on the shape): no medium.
        inside = level(hole, x, y) < 0.8
        assert inside.sum() >= 4
        assert np.all(speed[inside] == 0) and np.all(frames[:, inside] == 0)
        outside &= level(hole, x, y) > 1
    assert np.all(speed[outside] > 0)
    assert np.abs(frames[:, outside]).max() > 0


def test_bad_hole_shapes_are_named(generator):
    allowed = "expected a non-empty list of 'circle', 'ellipse', 'square'"
    with pytest.raises(ValueError, match=rf"config\.hole_shapes: \['triangle'\], {allowed}"):
        generator.check_config({"hole_shapes": ["triangle"]})
    with pytest.raises(ValueError, match=rf"config\.hole_shapes: \[\], {allowed}"):
        generator.check_config({"hole_shapes": []})
    with pytest.raises(TypeError, match=r"config\.hole_shapes: expected a list"):
        generator.check_config({"hole_shapes": "ellipse"})


def test_the_held_out_holes_set_is_the_rollout_set_with_other_holes():
    heldout = plan_generation(DATASETS / "heldout-holes.toml")
    rollout = plan_generation(DATASETS / "rollout.toml")
    assert heldout.generator == "wave2d" and heldout.samples == 64 and heldout.seed == 3
    assert heldout.config["n_frames"] == 208 and heldout.splits == rollout.splits
    changed = {"holes": [1, 2], "hole_shapes": ["ellipse", "square"]}
    assert heldout.config == {**rollout.config, **changed}
    header = (DATASETS / "heldout-holes.toml").read_text()
    assert (
        "physnet generate datasets/wave2d/heldout-holes.toml --out "
        "$PHYSNET_DATA/wave2d-heldout-holes.h5 --workers 2" in header
    )
