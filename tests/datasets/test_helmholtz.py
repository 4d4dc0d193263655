"""Helmholtz generator: the solve against an independent ghost-point finite-difference assembly
and against the exact solution for a constant speed (second-order convergence), linearity in
the boundary data, the resonance gap against the discrete Neumann spectrum and the rejection
of resonant draws, the sample layout and its random stream, stride, determinism, errors."""

from __future__ import annotations

import os

import numpy as np
import pytest
import scipy.sparse
import scipy.sparse.linalg

from physnet.datasets import open as open_dataset
from physnet.datasets._darcy import gaussian_random_field
from physnet.datasets._helmholtz import helmholtz_solve, helmholtz_speed, top_edge_source
from physnet.datasets.generate import generate, get_generator, sample_of


def _ghost_point_helmholtz(speed, flux, omega):
    """Independent assembly: ``-Δ_h u - (ω/c)² u = 0`` at every node, the 5-point Laplacian
    with each missing neighbour replaced by its ghost ``u_ghost = u_mirror + 2 h ∂u/∂n``."""
    s = speed.shape[0]
    h = 1.0 / (s - 1)
    number = np.arange(s * s).reshape(s, s)
    matrix = scipy.sparse.lil_matrix((s * s, s * s))
    rhs = np.zeros(s * s)
    for i in range(s):
        for j in range(s):
            row = number[i, j]
            matrix[row, row] += 4.0 / h**2 - (omega / speed[i, j]) ** 2
            for di, dj in ((1, 0), (-1, 0), (0, 1), (0, -1)):
                ni, nj = i + di, j + dj
                if 0 <= ni < s and 0 <= nj < s:
                    matrix[row, number[ni, nj]] -= 1.0 / h**2
                else:  # a ghost node beyond the edge: mirror it, add the flux
                    matrix[row, number[i - di, j - dj]] -= 1.0 / h**2
                    if dj == 1:  # beyond the top edge y = 1
                        rhs[row] += 2.0 * flux[i] / h
    return scipy.sparse.linalg.spsolve(matrix.tocsr(), rhs).reshape(s, s)


def _exact_cosine_mode(size, omega, speed):
    """``u = -cos(πx) cos(βy) / (β sin β)``, ``β² = (ω/c)² - π²``: the flux ``cos(πx)``."""
    x = np.linspace(0.0, 1.0, size)
    beta = np.sqrt((omega / speed) ** 2 - np.pi**2)
    return -np.outer(np.cos(np.pi * x), np.cos(beta * x)) / (beta * np.sin(beta))


def test_solve_matches_an_independent_ghost_point_assembly():
    s = 13
    rng = np.random.default_rng(2)
    speed = 1.0 + 0.3 * rng.random((s, s))  # every node its own value
    flux = rng.standard_normal(s)
    expected = _ghost_point_helmholtz(speed, flux, omega=9.0)
    np.testing.assert_allclose(
        helmholtz_solve(speed, flux, omega=9.0), expected, rtol=1e-9, atol=1e-12
    )


@pytest.mark.parametrize(("omega", "speed"), [(8.0, 1.0), (40.0, 5.0)])
def test_constant_speed_converges_at_second_order_to_the_exact_solution(omega, speed):
    errors = []
    for size in (17, 33, 65):
        x = np.linspace(0.0, 1.0, size)
        solution = helmholtz_solve(np.full((size, size), speed), np.cos(np.pi * x), omega=omega)
        exact = _exact_cosine_mode(size, omega, speed)
        errors.append(np.abs(solution - exact).max() / np.abs(exact).max())
    assert errors[-1] < 5e-3
    ratios = [errors[0] / errors[1], errors[1] / errors[2]]
    assert all(3.6 < ratio < 4.4 for ratio in ratios), ratios


def test_solution_is_linear_in_the_boundary_data():
    s = 21
    rng = np.random.default_rng(0)
    speed = helmholtz_speed(gaussian_random_field(s, rng) / 3.0)
    first, second = rng.standard_normal(s), top_edge_source(s)
    combined = helmholtz_solve(speed, first - 2.5 * second)
    parts = helmholtz_solve(speed, first) - 2.5 * helmholtz_solve(speed, second)
    np.testing.assert_allclose(combined, parts, rtol=1e-9, atol=1e-12 * np.abs(parts).max())
    np.testing.assert_array_equal(helmholtz_solve(speed, np.zeros(s)), 0.0)


@pytest.mark.parametrize("omega", [7.0, 23.0, 60.0])
def test_gap_is_the_distance_to_the_discrete_neumann_spectrum(omega):
    # For a constant speed the eigenvectors are cos(mπx) cos(nπy) at the nodes, with
    # eigenvalues (4/h²)(sin²(mπh/2) + sin²(nπh/2)), m, n = 0 .. s-1.
    s, speed = 25, 2.0
    h = 1.0 / (s - 1)
    one_dimensional = (4 / h**2) * np.sin(np.arange(s) * np.pi * h / 2) ** 2
    eigenvalues = one_dimensional[:, None] + one_dimensional[None, :]
    expected = np.min(np.abs(eigenvalues / (omega / speed) ** 2 - 1))
    _, gap = helmholtz_solve(np.full((s, s), speed), np.ones(s), omega=omega, return_gap=True)
    assert gap == pytest.approx(expected, rel=1e-6)


def test_draws_closer_to_resonance_than_min_gap_are_rejected():
    s, speed = 9, 20.0
    h = 1.0 / (s - 1)
    resonance = speed * np.sqrt((4 / h**2) * np.sin(np.pi * h / 2) ** 2)  # the mode (1, 0)
    generator = get_generator("helmholtz")
    options = {"size": s, "speed_amplitude": 0.0, "omega": resonance * (1 + 1e-5)}
    with pytest.raises(RuntimeError, match=r"100 draws .* closer to resonance than min_gap"):
        sample_of(generator, generator.check_config(options), seed=0, index=0)
    # Below min_gap the same problem is accepted; its gap is 2e-5 to first order.
    relaxed = generator.check_config({**options, "min_gap": 1e-5})
    assert np.isfinite(sample_of(generator, relaxed, seed=0, index=0)["solution"]).all()


def test_sample_layout_and_random_stream():
    generator = get_generator("helmholtz")
    config = generator.check_config({"size": 33})
    assert (config["alpha"], config["tau"], config["omega"]) == (2.0, 3.0, 1000.0)
    sample = sample_of(generator, config, seed=5, index=7)
    speed, solution = sample["speed"], sample["solution"]
    assert speed.dtype == solution.dtype == np.float32
    assert speed.shape == solution.shape == (33, 33)
    # The speed is 20 + tanh(θ), θ the sample stream's field scaled to de Hoop et al.'s KL
    # variances (π²|k|² + τ²)^(-α): the FNO field divided by τ^(α-1) = 3.
    rng = np.random.default_rng(np.random.SeedSequence(5, spawn_key=(7,)))
    expected_speed = 20.0 + np.tanh(gaussian_random_field(33, rng) / 3.0)
    np.testing.assert_allclose(speed, expected_speed, rtol=1e-7)
    assert speed.min() > 19.0 and speed.max() < 21.0
    # The stored solution is the solve of the stored speed (to float32 rounding).
    expected = helmholtz_solve(speed.astype(np.float64), top_edge_source(33))
    np.testing.assert_allclose(solution, expected, rtol=0, atol=1e-4 * np.abs(expected).max())
    assert np.abs(solution).max() > 0


def test_stride_subsamples_the_full_resolution_sample():
    generator = get_generator("helmholtz")
    full = sample_of(generator, generator.check_config({"size": 41}), seed=1, index=0)
    strided = sample_of(generator, generator.check_config({"size": 41, "stride": 4}), 1, 0)
    assert strided["speed"].shape == (11, 11)
    for name in ("speed", "solution"):
        np.testing.assert_array_equal(strided[name], full[name][::4, ::4])


def test_samples_are_determined_by_seed_and_index():
    generator = get_generator("helmholtz")
    config = generator.check_config({"size": 17})
    first = sample_of(generator, config, seed=0, index=3)
    again = sample_of(generator, config, seed=0, index=3)
    for name in ("speed", "solution"):
        np.testing.assert_array_equal(first[name], again[name])
    for seed, index in ((1, 3), (0, 4)):
        other = sample_of(generator, config, seed=seed, index=index)
        assert not np.array_equal(first["speed"], other["speed"])


def test_top_edge_source_includes_the_interval_ends():
    source = top_edge_source(101)
    assert source.sum() == 31 and source[35] == source[65] == 1 and source[34] == 0


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"size": 2}, ValueError, r"config.size: 2, expected at least 3"),
        ({"size": 9, "stride": 9}, ValueError, r"config.stride: 9, expected 1 <= stride"),
        ({"omega": 0.0}, ValueError, r"config.omega: 0.0, expected a positive number"),
        ({"tau": -3.0}, ValueError, r"config.tau: -3.0, expected a positive number"),
        ({"speed_amplitude": 20.0}, ValueError, r"expected 0 <= speed_amplitude < speed_mean"),
        ({"source_center": 2.0}, ValueError, r"the source interval holds no node"),
        ({"min_gap": 1.0}, ValueError, r"config.min_gap: 1.0, expected a number in \[0, 1\)"),
        ({"omega": "high"}, TypeError, r"config.omega: expected a number"),
    ],
)
def test_invalid_configs(options, error, match):
    with pytest.raises(error, match=match):
        get_generator("helmholtz").check_config(options)


def test_invalid_solve_inputs():
    with pytest.raises(ValueError, match=r"helmholtz_solve: speed has shape \(4, 5\)"):
        helmholtz_solve(np.ones((4, 5)), np.ones(4))
    with pytest.raises(ValueError, match="positive and finite"):
        helmholtz_solve(np.zeros((5, 5)), np.ones(5))
    with pytest.raises(ValueError, match=r"flux has shape \(4,\), expected \(5,\)"):
        helmholtz_solve(np.ones((5, 5)), np.ones(4))
    with pytest.raises(ValueError, match=r"omega=-1\.0, expected a positive number"):
        helmholtz_solve(np.ones((5, 5)), np.ones(5), omega=-1.0)


def test_store_has_the_fields_and_splits(tmp_path):
    out = os.path.join(tmp_path, "helmholtz.h5")
    generate("helmholtz", out, samples=12, progress=False, overrides={"size": 17})
    lengths = [len(open_dataset(out, split=split)) for split in ("train", "val", "test")]
    assert lengths == [10, 1, 1]
    everything = open_dataset(out)
    assert everything.inputs == ("speed",) and everything.targets == ("solution",)
    assert everything[0]["solution"].shape == (17, 17)
