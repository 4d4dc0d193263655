"""Inverse-problem baselines: backprojection, Tikhonov by CG, ADMM-TV, the TV prox."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg

from physnet.operators import MatrixOperator, NearFieldMIMO
from physnet.solvers.inverse import (
    _divergence,
    _gradient,
    admm_tv,
    backprojection,
    operator_norm,
    tikhonov,
    tv_denoise,
)

GRID = (5, 5, 7)


@pytest.fixture(scope="module")
def operator():
    return NearFieldMIMO(n_frequencies=3, grid_shape=GRID, dtype=np.complex128)


def complex_normal(rng, shape):
    return rng.standard_normal(shape) + 1j * rng.standard_normal(shape)


def test_operator_norm_matches_svd(operator):
    expected = scipy.linalg.svdvals(operator.dense())[0]
    assert operator_norm(operator) == pytest.approx(expected, rel=1e-7)


def test_backprojection_is_the_adjoint(operator, rng):
    y = complex_normal(rng, (2, *operator.measurement_shape))
    expected = y.reshape(2, -1) @ operator.dense().conj()
    np.testing.assert_allclose(backprojection(operator, y), expected, rtol=1e-12)
    normalised = backprojection(operator, y, normalize=True)
    np.testing.assert_allclose(normalised.max(axis=-1), 1.0)
    np.testing.assert_allclose(
        normalised, np.abs(expected) / np.abs(expected).max(-1, keepdims=True)
    )


def test_tikhonov_matches_dense_normal_equations(operator, rng):
    y = complex_normal(rng, (2, *operator.measurement_shape))
    dense = operator.dense()
    scale = scipy.linalg.svdvals(dense)[0]
    lam = 1e-2
    expected = np.linalg.solve(
        dense.conj().T @ dense / scale**2 + lam * np.eye(dense.shape[1]),
        (y.reshape(2, -1) @ dense.conj()).T / scale**2,
    ).T
    x = tikhonov(operator, y, regularization=lam, rtol=1e-10, maxiter=2000, norm=scale)
    assert x.shape == (2, operator.shape[1])
    np.testing.assert_allclose(x, expected, rtol=1e-6, atol=1e-8 * np.abs(expected).max())


def test_tikhonov_on_a_matrix_operator(rng):
    matrix = complex_normal(rng, (30, 12))
    y = complex_normal(rng, 30)
    x = tikhonov(MatrixOperator(matrix), y, regularization=0.0, rtol=1e-12, maxiter=500)
    expected = np.linalg.lstsq(matrix, y, rcond=None)[0]
    np.testing.assert_allclose(x, expected, rtol=1e-7)


def test_gradient_and_divergence_are_negative_adjoints(rng):
    u = rng.standard_normal((4, 5, 6))
    p = rng.standard_normal((3, 4, 5, 6))
    assert np.vdot(_gradient(u), p) == pytest.approx(-np.vdot(u, _divergence(p)), rel=1e-12)


def test_tv_denoise_is_the_prox(rng):
    """The prox's optimality: u minimises 1/2||u - v||^2 + w TV(u); check against perturbations."""
    v = np.zeros((6, 6, 6))
    v[1:4, 2:5, 1:5] = 1.0
    v += 0.2 * rng.standard_normal(v.shape)
    weight = 0.1

    def objective(u):
        g = _gradient(u)
        return 0.5 * np.sum((u - v) ** 2) + weight * np.sum(np.sqrt(np.sum(g**2, axis=0)))

    u, _ = tv_denoise(v, weight, iterations=2000, nonnegative=False)
    best = objective(u)
    for _ in range(20):
        assert objective(u + 1e-2 * rng.standard_normal(u.shape)) >= best - 1e-9
    assert objective(u) < objective(v)
    nonnegative, _ = tv_denoise(v, weight, iterations=50)
    assert nonnegative.min() >= 0
    zero_weight, _ = tv_denoise(v, 0.0, nonnegative=False)
    np.testing.assert_array_equal(zero_weight, v)


def test_admm_tv_recovers_a_block_better_than_backprojection(rng):
    grid = (8, 8, 12)
    A = NearFieldMIMO(n_frequencies=8, grid_shape=grid, dtype=np.complex128)
    truth = np.zeros(grid)
    truth[3:6, 2:6, 4:9] = 1.0
    x = truth.reshape(-1) * np.exp(2j * np.pi * rng.uniform(size=truth.size))
    y = A @ x
    estimate = np.abs(admm_tv(A, y, tv_weight=1e-3, penalty=1e-2, iterations=30))
    bp = np.abs(backprojection(A, y))
    bp /= bp.max()

    def error(e):
        return np.linalg.norm(e - truth.reshape(-1)) / np.linalg.norm(truth)

    assert estimate.shape == (A.shape[1],)
    assert error(estimate) < 0.7 * error(bp)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda A, y: tikhonov(A, y, regularization=-1.0), "regularization"),
        (lambda A, y: tikhonov(A, y[..., :5]), "measurements have shape"),
        (lambda A, y: admm_tv(A, y, grid_shape=(2, 2, 2)), "grid_shape"),
        (lambda A, y: admm_tv(A, y, iterations=0), "iterations"),
        (lambda A, y: backprojection(A, y * np.nan), "NaN"),
    ],
)
def test_bad_arguments(operator, call, message):
    y = np.ones(operator.measurement_shape, dtype=complex)
    with pytest.raises(ValueError, match=message):
        call(operator, y)
