"""Inverse-problem baselines: backprojection, Tikhonov by CG, ADMM-TV, the TV prox."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg

from physnet.operators import CallableOperator, MatrixOperator, NearFieldMIMO
from physnet.solvers import cg
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


@pytest.fixture(scope="module")
def matrix(operator):
    """The same operator as a dense matrix: cheap applies for the long iterations, and the
    column protocol of a generic operator."""
    return MatrixOperator(operator.dense())


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


def normal_operator(A, scale, shift):
    """``Â^H Â + shift I`` on single vectors (the per-volume path)."""
    n = A.shape[1]

    def apply(x):
        return (A.H @ (A @ x)).reshape(-1) / scale**2 + shift * x

    return CallableOperator(apply, shape=(n, n), dtype=A.dtype, hermitian=True)


def scaled_measurements(operator, rng, count):
    """Measurements of random scenes whose sizes differ by decades (so CG converges at
    different iterations per volume), one of them zero."""
    x = complex_normal(rng, (count, operator.shape[1]))
    x *= np.logspace(-2, 1, count)[:, None]
    y = np.stack([operator @ row for row in x])
    y[1] = 0
    return y


@pytest.mark.parametrize(
    ("kind", "rtol", "maxiter"), [("matrix", 1e-10, 2000), ("operator", 1e-12, 7)]
)
def test_batched_tikhonov_is_cg_per_volume(request, kind, rng, rtol, maxiter):
    """Each volume's iterates are cg's: the same to rounding after a fixed number of
    steps; after convergence, both meet the stopping rule and agree to its accuracy (CG
    amplifies rounding differences over ~200 iterations)."""
    operator = request.getfixturevalue(kind)
    y = scaled_measurements(operator, rng, 5)
    scale = operator_norm(operator)
    lam = 1e-3
    normal = normal_operator(operator, scale, lam)
    right_hand_sides = [(operator.H @ row) / scale**2 for row in y.reshape(5, -1)]
    expected = np.array([cg(normal, b, rtol=rtol, maxiter=maxiter)[0] for b in right_hand_sides])
    for batch_size in (2, 5):  # 2: batches of 2, 2 and 1
        x = tikhonov(
            operator,
            y,
            regularization=lam,
            rtol=rtol,
            maxiter=maxiter,
            norm=scale,
            batch_size=batch_size,
        )
        assert np.all(x[1] == 0)
        if maxiter == 7:
            np.testing.assert_allclose(x, expected, rtol=1e-10, atol=1e-13 * np.abs(expected).max())
            continue
        for volume, reference, b in zip(x, expected, right_hand_sides, strict=True):
            assert np.linalg.norm(b - normal @ volume) <= rtol * np.linalg.norm(b)
            difference = np.linalg.norm(volume - reference)
            assert difference <= 100 * rtol * max(np.linalg.norm(reference), 1e-300)


def test_tikhonov_callback_sees_every_iterate(operator, rng):
    y = scaled_measurements(operator, rng, 3)
    snapshots = {}
    final = tikhonov(
        operator,
        y,
        rtol=1e-12,
        maxiter=6,
        batch_size=3,
        callback=lambda iteration, x: snapshots.__setitem__(iteration, x.copy()),
    )
    assert sorted(snapshots) == list(range(1, 7))
    np.testing.assert_array_equal(snapshots[6], final)
    shorter = tikhonov(operator, y, rtol=1e-12, maxiter=3, batch_size=3)
    np.testing.assert_array_equal(snapshots[3], shorter)


def admm_per_volume(A, y, scale, tv_weight, penalty, iterations, l1_weight=0.0):
    """ADMM-TV one volume at a time, with physnet.solvers.cg: the unbatched reference."""
    grid = GRID
    normal = normal_operator(A, scale, penalty)
    out = []
    for row in y.reshape(-1, A.shape[0]):
        data = (A.H @ row) / scale**2
        x = np.zeros(A.shape[1], dtype=complex)
        z = np.zeros_like(x)
        u = np.zeros_like(x)
        dual = None
        for _ in range(iterations):
            x, _ = cg(normal, data + penalty * (z - u), x0=x, rtol=1e-12, maxiter=5)
            v = x + u
            magnitude = np.abs(v)
            denoised, dual = tv_denoise(
                (magnitude - l1_weight / penalty).reshape(grid),
                tv_weight / penalty,
                iterations=10,
                dual=dual,
            )
            phase = np.where(magnitude > 0, v / np.where(magnitude > 0, magnitude, 1), 1)
            z = denoised.reshape(-1) * phase
            u = u + x - z
        out.append(z)
    return np.array(out)


@pytest.mark.parametrize(("tv_weight", "l1_weight"), [(1e-3, 0.0), (0.0, 1e-3), (1e-3, 1e-4)])
def test_batched_admm_tv_is_admm_per_volume(matrix, rng, tv_weight, l1_weight):
    y = scaled_measurements(matrix, rng, 3)
    y[1] = matrix @ complex_normal(rng, matrix.shape[1])
    scale = operator_norm(matrix)
    options = {"tv_weight": tv_weight, "penalty": 1e-2, "l1_weight": l1_weight}
    expected = admm_per_volume(matrix, y, scale, iterations=8, **options)
    for batch_size in (2, 3):  # 2: batches of 2 and 1
        x = admm_tv(
            matrix, y, grid_shape=GRID, iterations=8, norm=scale, batch_size=batch_size, **options
        )
        np.testing.assert_allclose(x, expected, rtol=1e-8, atol=1e-10 * np.abs(expected).max())


def test_admm_tv_callback_gives_every_shorter_run(operator, rng):
    y = scaled_measurements(operator, rng, 2)
    snapshots = {}
    admm_tv(
        operator,
        y,
        iterations=6,
        callback=lambda iteration, z: snapshots.__setitem__(iteration, z.copy()),
    )
    assert sorted(snapshots) == list(range(1, 7))
    np.testing.assert_array_equal(snapshots[4], admm_tv(operator, y, iterations=4))


def test_tv_denoise_acts_on_each_volume_of_a_batch(rng):
    volumes = rng.uniform(size=(3, 5, 6, 7))
    batch, dual = tv_denoise(volumes, 0.1, iterations=15)
    assert dual.shape == (3, 3, 5, 6, 7)
    for index, volume in enumerate(volumes):
        single, single_dual = tv_denoise(volume, 0.1, iterations=15)
        np.testing.assert_array_equal(batch[index], single)
        np.testing.assert_array_equal(dual[:, index], single_dual)


def test_shifted_tv_prox_is_the_prox_of_tv_plus_l1(rng):
    """On u >= 0, ||u||_1 = sum(u): prox of w TV + mu ||.||_1 + [u >= 0] at v is the
    non-negative TV prox at v - mu (the shift admm_tv's l1_weight applies)."""
    v = np.zeros((6, 6, 6))
    v[1:4, 2:5, 1:5] = 1.0
    v += 0.3 * rng.standard_normal(v.shape)
    weight, mu = 0.1, 0.2

    def objective(u):
        g = _gradient(u)
        tv = np.sum(np.sqrt(np.sum(g**2, axis=0)))
        return 0.5 * np.sum((u - v) ** 2) + weight * tv + mu * np.sum(np.abs(u))

    u, _ = tv_denoise(v - mu, weight, iterations=3000)
    assert u.min() >= 0 and np.count_nonzero(u == 0) > 0
    best = objective(u)
    for _ in range(20):
        assert objective(np.maximum(u + 1e-2 * rng.standard_normal(u.shape), 0)) >= best - 1e-9


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda A, y: tikhonov(A, y, regularization=-1.0), "regularization"),
        (lambda A, y: tikhonov(A, y[..., :5]), "measurements have shape"),
        (lambda A, y: admm_tv(A, y, grid_shape=(2, 2, 2)), "grid_shape"),
        (lambda A, y: admm_tv(A, y, iterations=0), "iterations"),
        (lambda A, y: admm_tv(A, y, l1_weight=-1.0), "l1_weight"),
        (lambda A, y: admm_tv(A, y, batch_size=0), "batch_size"),
        (lambda A, y: tikhonov(A, y, batch_size=2.0), "batch_size"),
        (lambda A, y: backprojection(A, y * np.nan), "NaN"),
    ],
)
def test_bad_arguments(operator, call, message):
    y = np.ones(operator.measurement_shape, dtype=complex)
    with pytest.raises(ValueError, match=message):
        call(operator, y)
