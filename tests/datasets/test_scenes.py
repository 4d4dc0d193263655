"""Smoke-box scenes: geometry against analytic volumes, the right-hand side's properties."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import scipy.linalg
import scipy.ndimage
import scipy.sparse.linalg

from physnet.datasets import Scene, available_scenes, make_scene, standard_rhs
from physnet.operators.poisson import AIR, FLUID, SOLID, GridPoisson

SCENES = available_scenes()


def test_available_scenes():
    assert SCENES == ("empty", "sphere", "box", "boxes", "torus", "blob", "two-phase", "thin-walls")


@pytest.mark.parametrize("ndim, size", [(2, 32), (3, 16)])
@pytest.mark.parametrize("name", SCENES)
def test_scene_fields(name, ndim, size):
    scene = make_scene(name, size, ndim=ndim, seed=2)
    assert isinstance(scene, Scene)
    assert (scene.name, scene.size, scene.ndim, scene.seed) == (name, size, ndim, 2)
    assert scene.flags.shape == scene.rhs.shape == (size,) * ndim
    assert scene.flags.dtype == np.int8
    assert scene.rhs.dtype == np.float64
    assert set(np.unique(scene.flags)) <= {FLUID, SOLID, AIR}
    assert (SOLID in scene.flags) == (name not in ("empty", "two-phase"))
    assert not scene.flags.flags.writeable
    assert not scene.rhs.flags.writeable
    json.dumps(scene.config)  # provenance is plain JSON
    assert scene.config["n_unknowns"] == np.count_nonzero(scene.flags == FLUID)


@pytest.mark.parametrize("name", SCENES)
def test_air_layer_on_top_only(name):
    flags = make_scene(name, 24, ndim=3, seed=0).flags
    assert np.all(flags[..., -1] == AIR)
    assert not np.any(flags[..., :-1] == AIR)


def test_operator_and_rhs_vector_match_grid_poisson():
    scene = make_scene("sphere", 20, ndim=3, seed=1)
    A = scene.operator()
    assert isinstance(A, GridPoisson)
    assert A.shape == (scene.config["n_unknowns"],) * 2
    b = scene.rhs_vector()
    np.testing.assert_array_equal(b, A.gather(np.asarray(scene.rhs)))
    np.testing.assert_array_equal(A.scatter(b), scene.rhs)
    assert scene.operator(np.float32).dtype == np.float32
    assert scene.rhs_vector(np.float32).dtype == np.float32


@pytest.mark.parametrize("name", SCENES)
def test_deterministic_per_seed(name):
    first = make_scene(name, 32, ndim=2, seed=7)
    second = make_scene(name, 32, ndim=2, seed=7)
    np.testing.assert_array_equal(first.flags, second.flags)
    np.testing.assert_array_equal(first.rhs, second.rhs)
    other = make_scene(name, 32, ndim=2, seed=8)
    assert not np.allclose(first.rhs, other.rhs)


def test_random_obstacles_depend_on_seed():
    for name in ("boxes", "blob"):
        a = make_scene(name, 32, ndim=3, seed=0).flags
        b = make_scene(name, 32, ndim=3, seed=1).flags
        assert np.any(a != b), name


def test_standard_rhs_reproduces_scene_rhs():
    scene = make_scene("boxes", 24, ndim=3, seed=5)
    np.testing.assert_array_equal(standard_rhs(scene.flags, seed=5), scene.rhs)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"name": "bunny", "size": 16}, ValueError, "unknown scene 'bunny'"),
        ({"name": "sphere", "size": 7}, ValueError, "size=7, expected at least 8"),
        ({"name": "sphere", "size": 16.0}, TypeError, "size=16.0, expected an integer"),
        ({"name": "sphere", "size": True}, TypeError, "size=True"),
        ({"name": "sphere", "size": 16, "ndim": 4}, ValueError, "ndim=4, expected 2 or 3"),
        ({"name": "sphere", "size": 16, "seed": -1}, ValueError, "seed=-1"),
    ],
)
def test_make_scene_validates(kwargs, error, match):
    with pytest.raises(error, match=match):
        make_scene(**kwargs)


def test_smallest_size_works():
    for name in SCENES:
        scene = make_scene(name, 8, ndim=3, seed=0)
        assert np.any(scene.flags == FLUID)
        assert math.isclose(np.linalg.norm(scene.rhs), 1.0)


def test_standard_rhs_validates():
    with pytest.raises(TypeError, match="flags has dtype float64"):
        standard_rhs(np.zeros((8, 8)))
    with pytest.raises(ValueError, match="2-D or 3-D"):
        standard_rhs(np.zeros(8, dtype=np.int8))
    with pytest.raises(ValueError, match="values other than"):
        standard_rhs(np.full((8, 8), 3, dtype=np.int8))
    with pytest.raises(ValueError, match="no fluid cell"):
        standard_rhs(np.full((8, 8), SOLID, dtype=np.int8))


# --- geometry -----------------------------------------------------------------------------


def _solid_fraction(name, size, ndim, seed=0):
    return np.mean(make_scene(name, size, ndim=ndim, seed=seed).flags == SOLID)


@pytest.mark.parametrize(
    "name, ndim, analytic, rel",
    [
        ("sphere", 3, 4.0 / 3.0 * math.pi / 6.0**3, 0.03),
        ("sphere", 2, math.pi / 6.0**2, 0.03),
        ("torus", 3, 2.0 * math.pi**2 * 0.25 * 0.08**2, 0.03),
        ("torus", 2, 4.0 * math.pi * 0.25 * 0.08, 0.03),
        # flat faces between cell centres: up to half a cell per face (5% at 64 cells)
        ("box", 3, 0.4 * 0.4 * 0.2, 0.06),
        ("box", 2, 0.4 * 0.2, 0.06),
    ],
)
def test_obstacle_volume_matches_analytic(name, ndim, analytic, rel):
    size = 64 if ndim == 3 else 128
    assert _solid_fraction(name, size, ndim) == pytest.approx(analytic, rel=rel)


@pytest.mark.parametrize("name", ["sphere", "torus", "boxes", "blob"])
def test_geometry_independent_of_resolution(name):
    coarse = make_scene(name, 32, ndim=3, seed=3).flags == SOLID
    fine = make_scene(name, 64, ndim=3, seed=3).flags == SOLID
    assert fine.mean() == pytest.approx(coarse.mean(), rel=0.08)
    # The fine mask, coarsened by majority vote, is the coarse mask up to the boundary.
    votes = fine.reshape(32, 2, 32, 2, 32, 2).mean(axis=(1, 3, 5))
    disagree = np.count_nonzero((votes > 0.5) != coarse)
    assert disagree <= 0.25 * np.count_nonzero(coarse)


def test_blob_kept_away_from_walls():
    for seed in range(4):
        flags = make_scene("blob", 32, ndim=3, seed=seed).flags
        solid = np.argwhere(flags == SOLID)
        assert solid.size > 0
        assert solid.min() >= 3 and solid.max() <= 28


# --- right-hand side ----------------------------------------------------------------------


@pytest.mark.parametrize("name", SCENES)
def test_rhs_zero_off_fluid_and_unit_norm(name):
    scene = make_scene(name, 32, ndim=2, seed=4)
    assert np.all(scene.rhs[scene.flags != FLUID] == 0.0)
    assert np.linalg.norm(scene.rhs) == pytest.approx(1.0, rel=1e-14)
    assert np.all(np.isfinite(scene.rhs))


def _flags_with_enclosed_pocket(ndim):
    """An air-topped box with a closed solid shell around a fluid pocket."""
    shape = (20,) * ndim
    flags = np.zeros(shape, dtype=np.int8)
    flags[..., -1] = AIR
    shell = (slice(5, 13),) * ndim
    pocket = (slice(7, 11),) * ndim
    flags[shell] = SOLID
    flags[pocket] = FLUID
    return flags, pocket


@pytest.mark.parametrize("ndim", [2, 3])
def test_rhs_mean_zero_on_pure_neumann_regions(ndim):
    flags, pocket = _flags_with_enclosed_pocket(ndim)
    _, count = scipy.ndimage.label(flags == FLUID)
    assert count == 2
    rhs = standard_rhs(flags, seed=0)
    assert abs(rhs[pocket].sum()) < 1e-14
    assert np.any(rhs[pocket] != 0.0)


@pytest.mark.parametrize("ndim", [2, 3])
def test_enclosed_pocket_system_is_consistent_and_solves(ndim):
    flags, _ = _flags_with_enclosed_pocket(ndim)
    A = GridPoisson(flags).to_csr()
    b = GridPoisson(flags).gather(standard_rhs(flags, seed=1))
    x, info = scipy.sparse.linalg.cg(A, b, rtol=1e-10, maxiter=2000)
    assert info == 0
    assert np.linalg.norm(b - A @ x) <= 1e-9 * np.linalg.norm(b)


def test_scene_matrix_is_spd_when_every_region_touches_air():
    for name, ndim, size in [("boxes", 2, 24), ("torus", 3, 10)]:
        scene = make_scene(name, size, ndim=ndim, seed=0)
        labels, count = scipy.ndimage.label(scene.flags == FLUID)
        next_to_air = scipy.ndimage.binary_dilation(scene.flags == AIR) & (labels > 0)
        assert set(np.unique(labels[next_to_air])) == set(range(1, count + 1))
        A = scene.operator().to_csr().toarray()
        np.testing.assert_array_equal(A, A.T)
        assert scipy.linalg.eigvalsh(A, subset_by_index=[0, 0])[0] > 0


def test_rhs_spectrum_is_concentrated_at_low_wave_numbers():
    rhs = make_scene("empty", 64, ndim=2, seed=0).rhs
    energy = np.abs(np.fft.fft2(rhs)) ** 2
    k = np.fft.fftfreq(64, d=1.0 / 64)
    radius = np.hypot(*np.meshgrid(k, k, indexing="ij"))
    assert energy[radius <= 12].sum() > 0.9 * energy.sum()
    # white noise would put about pi * 12^2 / 64^2 ~ 11% there
    white = np.abs(np.fft.fft2(np.random.default_rng(0).standard_normal((64, 64)))) ** 2
    assert white[radius <= 12].sum() < 0.2 * white.sum()


def test_rhs_is_the_same_function_at_every_resolution():
    coarse = make_scene("sphere", 32, ndim=2, seed=6)
    fine = make_scene("sphere", 64, ndim=2, seed=6)
    restricted = fine.rhs.reshape(32, 2, 32, 2).sum(axis=(1, 3))
    interior = scipy.ndimage.binary_erosion(coarse.flags == FLUID, iterations=2)
    correlation = np.corrcoef(restricted[interior], coarse.rhs[interior])[0, 1]
    assert correlation > 0.95


def test_rhs_velocity_field_shared_across_obstacles():
    """The same seed draws the same velocity, so far from the obstacle the rhs agrees."""
    empty = make_scene("empty", 32, ndim=2, seed=9)
    sphere = make_scene("sphere", 32, ndim=2, seed=9)
    far = np.zeros((32, 32), dtype=bool)
    far[:, :6] = True
    ratio = sphere.rhs[far] / empty.rhs[far]
    np.testing.assert_allclose(ratio, ratio[0], rtol=1e-10)


def test_two_phase_scene_is_a_density_ratio_1000_system():
    scene = make_scene("two-phase", 32, ndim=3)
    assert scene.coefficients is not None and not scene.coefficients.flags.writeable
    np.testing.assert_array_equal(np.unique(scene.coefficients), [1e-3, 1.0])
    liquid = scene.coefficients == 1e-3
    assert liquid[..., :6].all() and not liquid[..., -4:].any()  # a pool below, gas above
    assert liquid[..., 16:24].any()  # the drop and the ring above the pool
    A = scene.operator()
    reference = GridPoisson(scene.flags, coefficients=scene.coefficients).to_csr()
    assert abs(A.to_csr() - reference).max() == 0.0


@pytest.mark.parametrize("size", [32, 64])
def test_thin_walls_scene_keeps_its_baffle_hole_and_cylinder(size):
    scene = make_scene("thin-walls", size, ndim=3)
    flags = scene.flags
    baffle = int(0.7 * size)
    hole = size // 8
    assert np.count_nonzero(flags[..., baffle] == FLUID) == hole * hole
    # Below the baffle the fluid reaches the air only through the hole: one region.
    _labels, count = scipy.ndimage.label(flags == FLUID)
    assert count == 1
    # The hollow cylinder is open: the fluid inside it is connected to the outside (one
    # region above), and its wall is there at mid-height.
    plane = flags[:, :, int(0.3 * size)] == SOLID
    assert plane.any() and scene.coefficients is None
