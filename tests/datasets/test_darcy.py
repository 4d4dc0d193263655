"""Darcy generators: the Karhunen–Loève field against its formula and its variance, the solve
against an independent SciPy assembly, an exact sine-transform solve and its second-order
convergence, the multiscale coefficient against a direct evaluation of its formula, the sample
layout, stride subsampling, determinism, the store and the FNO ``.mat`` round trip."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
import scipy.fft
import scipy.io
import scipy.sparse
import scipy.sparse.linalg

from physnet.datasets import open as open_dataset
from physnet.datasets._darcy import (
    darcy_coefficient,
    darcy_solve,
    gaussian_random_field,
    multiscale_coefficient,
    stored_size,
)
from physnet.datasets.generate import generate, get_generator, sample_of
from physnet.datasets.readers import FNODarcyDataset


def _amplitudes(size, alpha, tau):
    k1, k2 = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    coef = tau ** (alpha - 1) * (np.pi**2 * (k1**2 + k2**2) + tau**2) ** (-alpha / 2)
    coef[0, 0] = 0.0
    return coef


@pytest.mark.parametrize(("alpha", "tau"), [(2.0, 3.0), (2.0, 5.0), (1.5, 4.0)])
def test_field_is_the_cosine_expansion_of_li_et_al(alpha, tau):
    size = 24
    field = gaussian_random_field(size, np.random.default_rng(7), alpha=alpha, tau=tau)
    xi = np.random.default_rng(7).standard_normal((size, size))
    # GRF.m: L = s * coef * xi, L(1,1) = 0, field = idct2(L); its DCT-II gives L back.
    coefficients = scipy.fft.dctn(field, type=2, norm="ortho")
    np.testing.assert_allclose(coefficients, size * _amplitudes(size, alpha, tau) * xi, atol=1e-12)


def test_field_variance_matches_the_spectrum():
    size, samples, tau = 32, 200, 3.0
    rng = np.random.default_rng(0)
    mean_square = np.mean(
        [np.mean(gaussian_random_field(size, rng, tau=tau) ** 2) for _ in range(samples)]
    )
    expected = np.sum(_amplitudes(size, 2.0, tau) ** 2)
    # Mean of 200 independent estimates, each a weighted chi-square dominated by few modes.
    assert abs(mean_square / expected - 1) < 0.1


def _scipy_darcy(coefficient, forcing=1.0):
    """Independent assembly: the 5-point scheme of solve_gwf.m, one row per interior node."""
    s = coefficient.shape[0]
    n = s - 2
    h2 = 1.0 / (s - 1) ** 2
    number = -np.ones((s, s), dtype=int)
    number[1:-1, 1:-1] = np.arange(n * n).reshape(n, n)
    matrix = scipy.sparse.lil_matrix((n * n, n * n))
    for i in range(1, s - 1):
        for j in range(1, s - 1):
            row = number[i, j]
            for di, dj in ((1, 0), (-1, 0), (0, 1), (0, -1)):
                face = 0.5 * (coefficient[i, j] + coefficient[i + di, j + dj]) / h2
                matrix[row, row] += face
                if number[i + di, j + dj] >= 0:
                    matrix[row, number[i + di, j + dj]] -= face
    interior = scipy.sparse.linalg.spsolve(matrix.tocsr(), np.full(n * n, forcing))
    solution = np.zeros((s, s))
    solution[1:-1, 1:-1] = interior.reshape(n, n)
    return solution


@pytest.mark.parametrize("solver", ["direct", "amg"])
def test_solve_matches_an_independent_scipy_assembly(solver):
    rng = np.random.default_rng(3)
    coefficient = darcy_coefficient(rng.standard_normal((13, 13)))
    coefficient[4, 5] = 0.7  # not only two values: every face mean must be right
    expected = _scipy_darcy(coefficient, forcing=2.0)
    solution = darcy_solve(coefficient, forcing=2.0, solver=solver, rtol=1e-12)
    np.testing.assert_allclose(solution, expected, rtol=1e-9, atol=1e-12 * expected.max())


def test_constant_coefficient_solve_is_the_exact_sine_transform_solution():
    s, a = 33, 3.0
    n, h = s - 2, 1.0 / (s - 1)
    k = np.arange(1, n + 1)
    eigenvalues = (4 / h**2) * np.sin(np.pi * k / (2 * (n + 1))) ** 2
    forcing = np.ones((n, n))
    transformed = scipy.fft.dstn(forcing, type=1)
    exact = scipy.fft.idstn(
        transformed / (a * (eigenvalues[:, None] + eigenvalues[None, :])), type=1
    )
    solution = darcy_solve(np.full((s, s), a))
    np.testing.assert_allclose(solution[1:-1, 1:-1], exact, rtol=1e-10)
    # and close to the continuous centre value 0.0736713532814 / a of -Δu = 1
    assert abs(solution[16, 16] * a - 0.0736713532814) < 1e-3


@pytest.mark.parametrize(("name", "tau"), [("darcy-smooth", 3.0), ("darcy-rough", 5.0)])
def test_sample_layout(name, tau):
    generator = get_generator(name)
    config = generator.check_config({"size": 21})
    assert config["tau"] == tau and config["alpha"] == 2.0
    sample = sample_of(generator, config, seed=0, index=2)
    coefficient, solution = sample["coefficient"], sample["solution"]
    assert coefficient.dtype == solution.dtype == np.float32
    assert coefficient.shape == solution.shape == (21, 21)
    assert set(np.unique(coefficient)) <= {3.0, 12.0}
    boundary = np.concatenate([solution[0], solution[-1], solution[:, 0], solution[:, -1]])
    assert np.all(boundary == 0) and solution[1:-1, 1:-1].min() > 0
    # The sample is the solve of its own coefficient.
    expected = _scipy_darcy(coefficient.astype(np.float64))
    np.testing.assert_allclose(solution, expected, rtol=1e-6, atol=1e-9)


def test_stride_subsamples_the_full_resolution_sample():
    generator = get_generator("darcy-smooth")
    full = sample_of(generator, generator.check_config({"size": 29}), seed=4, index=1)
    strided = sample_of(generator, generator.check_config({"size": 29, "stride": 2}), 4, 1)
    assert strided["solution"].shape == (stored_size(29, 2),) * 2 == (15, 15)
    for name in ("coefficient", "solution"):
        np.testing.assert_array_equal(strided[name], full[name][::2, ::2])


def test_rough_fields_have_more_interfaces_than_smooth_ones():
    def interfaces(name):
        generator = get_generator(name)
        config = generator.check_config({"size": 33})
        total = 0
        for index in range(8):
            a = sample_of(generator, config, seed=0, index=index)["coefficient"]
            total += np.count_nonzero(np.diff(a, axis=0)) + np.count_nonzero(np.diff(a, axis=1))
        return total

    assert interfaces("darcy-rough") > 1.2 * interfaces("darcy-smooth")


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"size": 2}, ValueError, r"config.size: 2, expected at least 3"),
        ({"size": 9, "stride": 9}, ValueError, r"config.stride: 9, expected 1 <= stride"),
        ({"tau": -1.0}, ValueError, r"config.tau: -1.0, expected a positive number"),
        ({"solver": "lu"}, ValueError, r"config.solver: 'lu', expected one of"),
        ({"size": "64"}, TypeError, r"config.size: expected an integer"),
    ],
)
def test_invalid_configs(options, error, match):
    with pytest.raises(error, match=match):
        get_generator("darcy-smooth").check_config(options)


def test_invalid_solve_inputs():
    with pytest.raises(ValueError, match=r"darcy_solve: coefficient has shape \(4, 5\)"):
        darcy_solve(np.ones((4, 5)))
    with pytest.raises(ValueError, match="positive and finite"):
        darcy_solve(-np.ones((5, 5)))
    with pytest.raises(ValueError, match="no interior node"):
        darcy_solve(np.ones((2, 2)))
    with pytest.raises(ValueError, match="gaussian_random_field: size=1"):
        gaussian_random_field(1, np.random.default_rng(0))


# --- darcy-multiscale ---------------------------------------------------------------------


def test_multiscale_coefficient_is_the_hano_formula():
    frequencies = np.random.default_rng(5).uniform(2.0 ** np.arange(6), 2.0 ** np.arange(1, 7))
    size = 11
    expected = np.empty((size, size))
    for i in range(size):
        for j in range(size):
            x, y = i / (size - 1), j / (size - 1)
            expected[i, j] = math.prod(
                (1 + 0.5 * math.cos(a * math.pi * (x + y)))
                * (1 + 0.5 * math.sin(a * math.pi * (y - 3 * x)))
                for a in frequencies
            )
    np.testing.assert_allclose(multiscale_coefficient(frequencies, size), expected, rtol=1e-12)
    # amplitude b: each factor in [1 - b, 1 + b]
    a = multiscale_coefficient(frequencies, 65, amplitude=0.3)
    assert a.min() >= 0.7**12 and a.max() <= 1.3**12


def test_multiscale_sample_is_the_solve_of_its_drawn_scales():
    generator = get_generator("darcy-multiscale")
    config = generator.check_config({"size": 33, "stride": 2})
    assert (config["n_scales"], config["amplitude"]) == (6, 0.5)
    sample = sample_of(generator, config, seed=3, index=4)
    # The scales are the first draws of the sample's stream, a_k ~ U[2^(k-1), 2^k].
    rng = np.random.default_rng(np.random.SeedSequence(3, spawn_key=(4,)))
    frequencies = rng.uniform(2.0 ** np.arange(6), 2.0 ** np.arange(1, 7))
    assert np.all((2.0 ** np.arange(6) <= frequencies) & (frequencies <= 2.0 ** np.arange(1, 7)))
    coefficient = multiscale_coefficient(frequencies, 33)
    expected = _scipy_darcy(coefficient)
    assert sample["coefficient"].dtype == sample["solution"].dtype == np.float32
    assert sample["coefficient"].shape == sample["solution"].shape == (17, 17)
    np.testing.assert_allclose(sample["coefficient"], coefficient[::2, ::2], rtol=1e-7)
    np.testing.assert_allclose(sample["solution"], expected[::2, ::2], rtol=1e-6, atol=1e-9)
    # At stride 1 the stored solution solves the stored coefficient.
    full = sample_of(generator, generator.check_config({"size": 17, "stride": 1}), 3, 4)
    np.testing.assert_allclose(
        full["solution"], _scipy_darcy(full["coefficient"].astype(np.float64)), rtol=1e-5
    )


def test_solve_converges_at_second_order_for_a_smooth_multiscale_coefficient():
    frequencies = [1.3, 2.6]  # resolved on every grid; a spans 0.15 to 4.6
    reference = darcy_solve(multiscale_coefficient(frequencies, 257))
    errors = []
    for size in (33, 65):
        solution = darcy_solve(multiscale_coefficient(frequencies, size))
        on_grid = reference[:: 256 // (size - 1), :: 256 // (size - 1)]
        errors.append(np.abs(solution - on_grid).max() / np.abs(on_grid).max())
    assert errors[1] < 5e-3
    assert 3.6 < errors[0] / errors[1] < 4.4


def test_multiscale_samples_are_determined_by_seed_and_index():
    generator = get_generator("darcy-multiscale")
    config = generator.check_config({"size": 17, "stride": 1})
    first = sample_of(generator, config, seed=0, index=1)
    again = sample_of(generator, config, seed=0, index=1)
    for name in ("coefficient", "solution"):
        np.testing.assert_array_equal(first[name], again[name])
    for seed, index in ((1, 1), (0, 2)):
        other = sample_of(generator, config, seed=seed, index=index)
        assert not np.array_equal(first["coefficient"], other["coefficient"])


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"size": 2}, ValueError, r"config.size: 2, expected at least 3"),
        ({"size": 9, "stride": 9}, ValueError, r"config.stride: 9, expected 1 <= stride"),
        ({"n_scales": 0}, ValueError, r"config.n_scales: 0, expected 1 to 30"),
        ({"amplitude": 1.0}, ValueError, r"config.amplitude: 1.0, expected a number in \[0, 1\)"),
        ({"solver": "lu"}, ValueError, r"config.solver: 'lu', expected one of"),
        ({"n_scales": 6.5}, TypeError, r"config.n_scales: expected an integer"),
        ({"tau": 3.0}, ValueError, r"unknown key\(s\) \['tau'\]"),
    ],
)
def test_invalid_multiscale_configs(options, error, match):
    with pytest.raises(error, match=match):
        get_generator("darcy-multiscale").check_config(options)


def test_invalid_multiscale_coefficient_inputs():
    with pytest.raises(ValueError, match=r"multiscale_coefficient: frequencies of shape \(0,\)"):
        multiscale_coefficient([], 5)
    with pytest.raises(ValueError, match="multiscale_coefficient: size=1"):
        multiscale_coefficient([1.0], 1)
    with pytest.raises(ValueError, match=r"multiscale_coefficient: amplitude=1\.5"):
        multiscale_coefficient([1.0], 5, amplitude=1.5)


def test_multiscale_store_has_the_mgno_splits(tmp_path):
    out = os.path.join(tmp_path, "multiscale.h5")
    generate(
        "darcy-multiscale", out, samples=12, progress=False, overrides={"size": 13, "stride": 3}
    )
    lengths = [len(open_dataset(out, split=split)) for split in ("train", "val", "test")]
    assert lengths == [10, 1, 1]
    everything = open_dataset(out)
    assert everything.inputs == ("coefficient",) and everything.targets == ("solution",)
    assert everything[0]["coefficient"].shape == (5, 5)


def test_store_and_fno_mat_round_trip(tmp_path):
    out = os.path.join(tmp_path, "darcy.h5")
    generate("darcy-rough", out, samples=12, progress=False, overrides={"size": 13})
    # The default splits are MgNO's 1000 / 100 / 100 proportions.
    lengths = [len(open_dataset(out, split=split)) for split in ("train", "val", "test")]
    assert lengths == [10, 1, 1]
    everything = open_dataset(out)
    assert everything.inputs == ("coefficient",) and everything.targets == ("solution",)
    coefficient = np.stack([everything[i]["coefficient"] for i in range(6)])
    solution = np.stack([everything[i]["solution"] for i in range(6)])
    # The FNO layout (coeff, sol) of the same samples reads back identically.
    path = os.path.join(tmp_path, "darcy.mat")
    scipy.io.savemat(path, {"coeff": coefficient.astype(np.float64), "sol": solution})
    fno = FNODarcyDataset(path)
    for i in range(6):
        np.testing.assert_array_equal(fno[i]["coefficient"], coefficient[i])
        np.testing.assert_array_equal(fno[i]["solution"], solution[i])


def test_a_model_evaluates_the_same_on_the_store_and_the_fno_mat_file(tmp_path):
    import torch

    from physnet.nn import MgNO
    from physnet.training import evaluate

    out = os.path.join(tmp_path, "darcy.h5")
    generate("darcy-smooth", out, samples=12, progress=False, overrides={"size": 17})
    store = open_dataset(out)
    path = os.path.join(tmp_path, "darcy.mat")
    scipy.io.savemat(
        path,
        {
            "coeff": np.stack([store[i]["coefficient"] for i in range(12)]).astype(np.float64),
            "sol": np.stack([store[i]["solution"] for i in range(12)]).astype(np.float64),
        },
    )
    torch.manual_seed(0)
    model = MgNO(hidden_channels=4, n_layers=1, smoothing=[[1, 0], [2, 0]], exact_boundary=True)
    on_store = evaluate(model, out)
    on_mat = evaluate(model, path)
    assert on_store["n_samples"] == on_mat["n_samples"] == 12
    for metric in ("relative_l2", "relative_h1"):
        assert on_store[metric] == pytest.approx(on_mat[metric], rel=1e-6)


@pytest.mark.slow
def test_fno_grid_421_at_stride_2_gives_mgno_smooth_grid():
    generator = get_generator("darcy-smooth")
    config = generator.check_config({"size": 421, "stride": 2})
    sample = sample_of(generator, config, seed=0, index=0)
    assert sample["coefficient"].shape == sample["solution"].shape == (211, 211)
    assert set(np.unique(sample["coefficient"])) == {3.0, 12.0}
    assert sample["solution"][0].max() == 0 and 0.005 < sample["solution"].max() < 0.05
