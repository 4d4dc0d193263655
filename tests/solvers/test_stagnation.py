"""The Krylov cores end an iteration that cannot converge, and never one that can.

``Monitor`` stops at the accuracy floor of the dtype (``Status.ACCURACY_LIMIT``) and, for
nonlinear preconditioners, at a plateau (``Status.PLATEAU``); hard but convergent solves
must run to convergence exactly as before.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from physnet.operators import AIR, GridPoisson
from physnet.solvers import Status, cg, fcg, solve
from physnet.solvers._system import research_maxiter


def _relative_residual(A, x, b):
    return np.linalg.norm(b - A @ x) / np.linalg.norm(b)


def test_cg_on_a_128_squared_poisson_to_1e_10_runs_to_convergence(laplacian, rng):
    A = laplacian(128, 2)
    b = rng.standard_normal(A.shape[0])
    x, info = cg(A, b, rtol=1e-10)
    assert info == 0
    assert _relative_residual(A, x, b) <= 1e-10
    result = solve(A, b, method="cg", rtol=1e-10)
    assert result.converged and result.iterations > 300
    assert "accuracy_floor" not in result.info


@pytest.mark.parametrize("method", ["ic", "amg", "jacobi"])
def test_preconditioned_cg_on_a_hard_problem_runs_to_convergence(laplacian, rng, method):
    A = laplacian(96, 2)
    b = rng.standard_normal(A.shape[0])
    result = solve(A, b, method=method, rtol=1e-12)
    assert result.status is Status.CONVERGED
    assert _relative_residual(A, result.x, b) <= 1e-12


def test_cg_with_jumping_coefficients_runs_to_convergence(rng):
    # Coefficient contrast 1e4 in checkerboard blocks: cond(A) ~ 1e7; CG needs twice n
    # iterations (rounding delays it) but converges, with no failed check on the way.
    flags = np.zeros((32, 32), dtype=np.int8)
    flags[0, :] = AIR
    blocks = np.indices(flags.shape) // 8
    coefficients = np.where(blocks.sum(axis=0) % 2 == 0, 1.0, 1e4)
    A = GridPoisson(flags, coefficients=coefficients).to_csr()
    b = rng.standard_normal(A.shape[0])
    result = solve(A, b, method="cg", rtol=1e-10, maxiter=10 * A.shape[0])
    assert result.status is Status.CONVERGED
    assert result.iterations > A.shape[0]
    assert _relative_residual(A, result.x, b) <= 1e-10


def test_cg_whose_residual_rises_for_long_is_not_stopped():
    # 1-D Laplacian with b = 1: the CG residual norm grows for n/2 iterations before it
    # drops to zero; a rule on the residual norm alone would stop this healthy solve.
    n = 600
    A = sp.diags([-1.0, 2.0, -1.0], [-1, 0, 1], shape=(n, n), format="csr")
    b = np.ones(n)
    residuals = []
    x, info = cg(A, b, rtol=1e-10, callback=lambda xk: residuals.append(np.linalg.norm(b - A @ xk)))
    assert info == 0
    assert max(residuals[: n // 4]) > np.linalg.norm(b)  # it did rise
    assert _relative_residual(A, x, b) <= 1e-10


def _sweeps(A):
    diagonal = A.diagonal()

    def apply(r):
        z = r / diagonal
        for _ in range(2):
            z = z + (2.0 / 3.0) * (r - A @ z) / diagonal
        return z + 0.1 * np.abs(z)  # nonlinear

    return apply


def test_fcg_with_a_nonlinear_preconditioner_runs_to_convergence(laplacian, rng):
    A = laplacian(64, 2)
    b = rng.standard_normal(A.shape[0])
    result = solve(A, b, method="fcg", M=_sweeps(A), m=4, rtol=1e-10)
    assert result.status is Status.CONVERGED
    assert _relative_residual(A, result.x, b) <= 1e-10


def test_fcg_with_useless_directions_stops_on_a_plateau(laplacian, rng):
    # The preconditioner cycles through three fixed vectors: once the error is minimised
    # on their span, no step makes progress.
    A = laplacian(20, 2)
    b = rng.standard_normal(A.shape[0])
    vectors = rng.standard_normal((3, A.shape[0]))
    calls = []

    def cycle(r):
        calls.append(None)
        return vectors[len(calls) % 3].copy()

    result = solve(A, b, method="fcg", M=cycle, m=2, rtol=1e-8, maxiter=5000)
    assert result.status is Status.PLATEAU
    assert not result.converged
    assert result.iterations == 200
    assert "plateau" in str(result.status)
    _, info = fcg(A, b, M=cycle, rtol=1e-8, maxiter=5000)
    assert info == 200  # not converged, not a breakdown


def test_fcg_in_single_precision_stops_at_the_accuracy_floor(laplacian, rng):
    A = laplacian(32, 2).astype(np.float32)
    b = rng.standard_normal(A.shape[0]).astype(np.float32)
    result = solve(A, b, method="fcg", M=_sweeps(A), rtol=1e-9, maxiter=5000)
    assert result.status is Status.ACCURACY_LIMIT
    assert result.iterations < 500
    assert 1e-9 < result.info["accuracy_floor"] < 1e-5
    assert result.relative_residual == pytest.approx(result.info["accuracy_floor"], rel=1e-5)


def test_amg_in_single_precision_stops_at_the_accuracy_floor(laplacian, rng):
    A = laplacian(48, 2).astype(np.float32)
    b = rng.standard_normal(A.shape[0]).astype(np.float32)
    result = solve(A, b, method="amg", rtol=1e-9)
    assert result.status is Status.ACCURACY_LIMIT
    assert result.iterations < 100
    assert result.relative_residual < 1e-5


def test_progress_sees_every_iteration(poisson2d, rhs):
    b = rhs(poisson2d.shape[0])
    seen = []
    result = solve(poisson2d, b, rtol=1e-8, progress=lambda k, norm: seen.append((k, norm)))
    assert [k for k, _ in seen] == list(range(1, result.iterations + 1))
    np.testing.assert_allclose([norm for _, norm in seen], result.residuals[1:])


def test_progress_must_be_callable(poisson2d):
    with pytest.raises(TypeError, match="solve: progress must be callable"):
        solve(poisson2d, np.ones(poisson2d.shape[0]), progress=3)


def test_default_maxiter_of_solve_is_bounded_and_cg_keeps_scipys():
    assert research_maxiter(10) == 100  # 10 n for small systems
    assert research_maxiter(64**3) == 20 * 512  # not 2.6 million
    assert research_maxiter(10**6) == 20_000
    # The research API stops a hopeless solve at its default; cg keeps SciPy's 10 n.
    n = 3000
    A = sp.diags(np.linspace(1.0, 1e12, n), format="csr")
    b = np.ones(n)
    result = solve(A, b, rtol=1e-14)
    assert result.iterations <= research_maxiter(n) < 10 * n
