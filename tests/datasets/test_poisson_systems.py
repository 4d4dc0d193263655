"""The poisson-systems generator: thin geometry and coefficient families."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage

from physnet.datasets._poisson_systems import (
    COEFFICIENT_FAMILIES,
    PoissonSystems,
    random_coefficients,
    random_thin_geometry,
)
from physnet.datasets.generate import get_generator
from physnet.operators import AIR, FLUID, SOLID, GridPoisson


@pytest.mark.parametrize("ndim", [2, 3])
def test_walls_are_thin_and_have_holes(ndim):
    for seed in range(5):
        flags = random_thin_geometry("walls", 24, ndim=ndim, rng=np.random.default_rng(seed))
        solid = flags == SOLID
        assert solid.any()
        # Each wall is 1 or 2 cells thick: an erosion by a 3-cell cube removes it (two
        # parallel walls drawn one cell apart can overlap into a thicker one: rare).
        structure = np.ones((3,) * ndim, dtype=bool)
        thick = scipy.ndimage.binary_erosion(solid, structure=structure)
        assert np.count_nonzero(thick) <= 0.3 * np.count_nonzero(solid)
        assert (flags[..., -1] == AIR).all()
        _labels, count = scipy.ndimage.label(flags == FLUID)
        assert count >= 1


def test_pockets_are_enclosed_air_and_channels_cut_a_slab():
    flags = random_thin_geometry("pockets", 32, ndim=3, rng=np.random.default_rng(3))
    assert np.count_nonzero(flags[..., :-1] == AIR) > 0
    flags = random_thin_geometry("channels", 32, ndim=3, rng=np.random.default_rng(4))
    assert np.count_nonzero(flags == SOLID) > 0.1 * flags.size
    with pytest.raises(ValueError, match="unknown family"):
        random_thin_geometry("tubes", 16, rng=np.random.default_rng(0))


@pytest.mark.parametrize("family", COEFFICIENT_FAMILIES)
def test_coefficient_families_are_positive_and_finite(family):
    flags = np.zeros((20, 20, 20), dtype=np.int8)
    a = random_coefficients(family, flags, rng=np.random.default_rng(1))
    assert a.shape == flags.shape and np.isfinite(a).all() and (a > 0).all()
    if family == "two-phase":
        assert len(np.unique(a)) == 2 and a.max() == 1.0
    if family == "unit":
        assert (a == 1.0).all()


def test_two_phase_ratios_span_the_range():
    flags = np.zeros((16, 16), dtype=np.int8)
    ratios = [
        1.0 / random_coefficients("two-phase", flags, rng=np.random.default_rng(s)).min()
        for s in range(40)
    ]
    assert min(ratios) < 10 and max(ratios) > 1000 and max(ratios) <= 1e4


def test_generator_samples_are_deterministic_and_solvable():
    generator = get_generator("poisson-systems")
    assert generator.module == PoissonSystems.__module__
    config = {**generator.default_config, "size": 16}
    generator.validate(config)
    first = generator.sample(config, 3, np.random.default_rng(3))
    second = generator.sample(config, 3, np.random.default_rng(3))
    for key, (shape, dtype) in generator.fields(config).items():
        assert first[key].shape == shape and first[key].dtype == dtype
        np.testing.assert_array_equal(first[key], second[key])
    A = GridPoisson(first["flags"], coefficients=first["coefficients"].astype(float))
    assert A.n > 0
    assert abs(np.linalg.norm(first["rhs"]) - 1.0) < 1e-5


def test_bad_configs():
    generator = get_generator("poisson-systems")
    for key, value in (("geometries", ["tubes"]), ("coefficients", []), ("max_ratio", 0.5)):
        with pytest.raises(ValueError, match=key):
            generator.validate({**generator.default_config, key: value})
