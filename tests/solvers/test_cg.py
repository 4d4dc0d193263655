"""physnet.solvers.cg against scipy.sparse.linalg.cg: same iterates, same counts, safer exits."""

from __future__ import annotations

import inspect

import numpy as np
import pytest
import scipy.sparse as sp
import scipy.sparse.linalg as sla

from physnet.solvers import AMG, Jacobi, Status, cg, solve


def _run_both(A, b, **kwargs):
    """Run physnet's and SciPy's cg, recording every iterate."""
    ours, theirs = [], []
    x, info = cg(A, b, callback=lambda xk: ours.append(xk.copy()), **kwargs)
    x_ref, info_ref = sla.cg(A, b, callback=lambda xk: theirs.append(xk.copy()), **kwargs)
    return (x, info, ours), (x_ref, info_ref, theirs)


def _assert_same_iterates(ours, theirs, rtol=1e-12):
    assert len(ours) == len(theirs)
    for k, (xk, xk_ref) in enumerate(zip(ours, theirs, strict=True)):
        gap = np.linalg.norm(xk - xk_ref) / np.linalg.norm(xk_ref)
        assert gap <= rtol, f"iterate {k} differs by {gap:.2e}"


def _preconditioner(kind: str, A):
    """The same preconditioner handed to both solvers (None: no preconditioning)."""
    if kind == "none":
        return None
    if kind == "jacobi-matrix":
        return sp.diags(1.0 / A.diagonal(), format="csr")
    if kind == "jacobi":
        return Jacobi(A).to_scipy()
    if kind == "pyamg":
        import pyamg

        return pyamg.smoothed_aggregation_solver(A, max_coarse=50).aspreconditioner()
    if kind == "scipy-operator":
        d = A.diagonal()
        return sla.LinearOperator(A.shape, matvec=lambda r: r / d, dtype=A.dtype)
    raise AssertionError(kind)


@pytest.mark.parametrize(
    "preconditioner", ["none", "jacobi-matrix", "jacobi", "pyamg", "scipy-operator"]
)
def test_same_iterates_and_count_as_scipy(variable_poisson2d, rhs, preconditioner):
    A = variable_poisson2d
    b = rhs(A.shape[0])
    M = _preconditioner(preconditioner, A)
    (x, info, ours), (x_ref, info_ref, theirs) = _run_both(A, b, rtol=1e-8, M=M)
    assert info == info_ref == 0
    assert len(ours) > 1
    _assert_same_iterates(ours, theirs)
    np.testing.assert_allclose(x, x_ref, rtol=1e-12, atol=0)


@pytest.mark.parametrize("preconditioner", ["none", "pyamg"])
def test_same_as_scipy_with_x0_and_atol(poisson3d, rhs, rng, preconditioner):
    A = poisson3d
    b = rhs(A.shape[0])
    x0 = rng.standard_normal(A.shape[0])
    M = _preconditioner(preconditioner, A)
    atol = 1e-6 * np.linalg.norm(b)
    (x, info, ours), (_x_ref, info_ref, theirs) = _run_both(A, b, x0=x0, rtol=0.0, atol=atol, M=M)
    assert info == info_ref == 0
    _assert_same_iterates(ours, theirs)
    assert np.linalg.norm(b - A @ x) <= atol


def test_same_as_scipy_when_maxiter_runs_out(poisson2d, rhs):
    A = poisson2d
    b = rhs(A.shape[0])
    (_x, info, ours), (_x_ref, info_ref, theirs) = _run_both(A, b, rtol=1e-12, maxiter=17)
    assert info == info_ref == 17
    _assert_same_iterates(ours, theirs)


def test_signature_is_scipys():
    ours = inspect.signature(cg).parameters
    theirs = inspect.signature(sla.cg).parameters
    assert [(p.name, p.kind, p.default) for p in ours.values()] == [
        (p.name, p.kind, p.default) for p in theirs.values()
    ]


def test_options_are_keyword_only(poisson2d):
    b = np.ones(poisson2d.shape[0])
    with pytest.raises(TypeError):
        cg(poisson2d, b, None, 1e-5)


def test_x0_is_not_modified(poisson2d, rng):
    b = rng.standard_normal(poisson2d.shape[0])
    x0 = rng.standard_normal(poisson2d.shape[0])
    saved = x0.copy()
    cg(poisson2d, b, x0, rtol=1e-8)
    np.testing.assert_array_equal(x0, saved)


def test_column_rhs_gives_a_vector(poisson2d):
    b = np.ones((poisson2d.shape[0], 1))
    x, info = cg(poisson2d, b, rtol=1e-8)
    assert info == 0
    assert x.shape == (poisson2d.shape[0],)


@pytest.mark.parametrize("with_preconditioner", [False, True])
def test_every_backend_returns_its_own_kind(xp, poisson3d, rhs, with_preconditioner):
    A = poisson3d
    b_host = rhs(A.shape[0])
    M = Jacobi(A) if with_preconditioner else None
    x, info = cg(A, xp.asarray(b_host), rtol=1e-10, M=M)
    assert info == 0
    assert xp.is_own(x)
    x_ref, _ = sla.cg(A, b_host, rtol=1e-10, M=None if M is None else M.to_scipy())
    np.testing.assert_allclose(xp.to_numpy(x), x_ref, rtol=1e-8, atol=1e-12)


def test_every_backend_with_host_amg(xp, poisson2d, rhs):
    A = poisson2d
    b = rhs(A.shape[0])
    x, info = cg(A, xp.asarray(b), rtol=1e-10, M=AMG(A, max_coarse=50))
    assert info == 0
    assert xp.is_own(x)
    assert np.linalg.norm(b - A @ xp.to_numpy(x)) <= 1e-10 * np.linalg.norm(b)


def test_zero_rhs_returns_zeros_at_once(xp, poisson2d, rng):
    calls = []
    b = xp.asarray(np.zeros(poisson2d.shape[0]))
    x0 = xp.asarray(rng.standard_normal(poisson2d.shape[0]))
    x, info = cg(poisson2d, b, x0, callback=calls.append)
    assert info == 0
    assert calls == []
    assert xp.is_own(x)
    np.testing.assert_array_equal(xp.to_numpy(x), 0.0)


def test_maxiter_reached(poisson2d, rhs):
    b = rhs(poisson2d.shape[0])
    _x, info = cg(poisson2d, b, rtol=1e-12, maxiter=5)
    assert info == 5
    result = solve(poisson2d, b, rtol=1e-12, maxiter=5)
    assert not result.converged
    assert result.status is Status.MAX_ITERATIONS
    assert result.iterations == 5


def test_default_maxiter_is_ten_n(laplacian, rng):
    A = laplacian(30, 1)
    calls = []
    # rtol = atol = 0 asks for an exactly zero residual, which rounding never gives here.
    _x, info = cg(A, rng.standard_normal(30), rtol=0.0, callback=calls.append)
    assert info == len(calls) == 300


def test_exact_termination_with_zero_tolerance(laplacian):
    # For this symmetric right-hand side CG hits r = 0 exactly after 15 steps. The
    # rule ||r|| <= 0 then holds. (SciPy 1.17 tests ||r|| < 0, divides 0 / 0 and returns
    # NaN with info = maxiter.)
    A = laplacian(30, 1)
    b = np.ones(30)
    result = solve(A, b, rtol=0.0)
    assert result.converged and result.residual == 0.0
    assert result.iterations == 15
    assert np.isfinite(result.x).all()


def test_callback_counts_iterations(poisson2d, rhs):
    b = rhs(poisson2d.shape[0])
    calls = []
    result = solve(poisson2d, b, rtol=1e-6, callback=lambda xk: calls.append(xk.copy()))
    assert len(calls) == result.iterations
    np.testing.assert_array_equal(calls[-1], result.x)


def test_converged_means_true_residual_meets_the_rule(variable_poisson2d, rhs):
    A = variable_poisson2d
    b = rhs(A.shape[0])
    for rtol in (1e-4, 1e-8, 1e-12):
        x, info = cg(A, b, rtol=rtol)
        assert info == 0
        assert np.linalg.norm(b - A @ x) <= rtol * np.linalg.norm(b)


def test_true_residual_decides_in_single_precision(laplacian):
    # In float32 the recursive residual shrinks past what the true residual can reach:
    # SciPy 1.17 then reports convergence (info 0) for an x whose true residual is above
    # the threshold. physnet checks the true residual and restarts CG from it, which
    # reaches rtol=1e-6 here ...
    A = laplacian(40, 2).astype(np.float32)
    b = np.random.default_rng(1).standard_normal(A.shape[0]).astype(np.float32)
    x, info = cg(A, b, rtol=1e-6, maxiter=400)
    assert info == 0
    assert np.linalg.norm(b - A @ x) <= 1e-6 * np.linalg.norm(b)
    _, info_scipy = sla.cg(A, b, rtol=1e-6, maxiter=400)
    assert info_scipy == 0  # SciPy claims it too, on its recursive residual


def test_unreachable_tolerance_stops_at_the_accuracy_floor(laplacian):
    # ... but not rtol=1e-8, below float32's precision: once three checks in a row fail
    # without the true residual halving, the iteration stops (info > 0: not converged,
    # no breakdown) long before maxiter, with the best iterate seen.
    A = laplacian(40, 2).astype(np.float32)
    b = np.random.default_rng(1).standard_normal(A.shape[0]).astype(np.float32)
    rtol, maxiter = 1e-8, 2000
    threshold = rtol * np.linalg.norm(b)
    _x, info = cg(A, b, rtol=rtol, maxiter=maxiter)
    assert 0 < info < 300
    result = solve(A, b, rtol=rtol, maxiter=maxiter)
    assert result.status is Status.ACCURACY_LIMIT
    assert result.iterations == info
    assert result.residual == pytest.approx(float(np.linalg.norm(b - A @ result.x)), rel=1e-5)
    assert result.residual > threshold
    assert result.info["accuracy_floor"] == pytest.approx(result.relative_residual, rel=1e-6)
    assert 1e-8 < result.relative_residual < 1e-5
    assert "accuracy limit" in str(result.status)


def test_indefinite_matrix_stops_with_status():
    A = sp.diags([1.0, -3.0, 1.0], format="csr")  # b^T A b < 0: the first step breaks down
    b = np.ones(3)
    x, info = cg(A, b)
    assert info < 0
    np.testing.assert_array_equal(x, 0.0)  # the last valid iterate: nothing was done
    result = solve(A, b)
    assert result.status is Status.NOT_POSITIVE_DEFINITE
    assert not result.converged
    assert "not positive definite" in str(result.status)


def test_indefinite_matrix_later_iteration(rng):
    # The first directions are fine, a later one meets the negative eigenvalue.
    eigenvalues = np.concatenate([np.linspace(1.0, 2.0, 49), [-1e-3]])
    Q, _ = np.linalg.qr(rng.standard_normal((50, 50)))
    A = (Q * eigenvalues) @ Q.T
    result = solve(A, rng.standard_normal(50), rtol=1e-12)
    assert result.status is Status.NOT_POSITIVE_DEFINITE
    assert np.all(np.isfinite(result.x))
    assert len(result.residuals) == result.iterations + 1


def test_preconditioner_not_positive_definite(poisson2d, rhs):
    n = poisson2d.shape[0]
    M = -sp.identity(n, format="csr")
    b = rhs(n)
    _x, info = cg(poisson2d, b, M=M)
    assert info < 0
    result = solve(poisson2d, b, M=M)
    assert result.status is Status.PRECONDITIONER_NOT_POSITIVE_DEFINITE


def test_non_finite_operator_output(poisson2d):
    from physnet.operators import CallableOperator

    A = CallableOperator(lambda x: np.full_like(x, np.inf), shape=poisson2d.shape, hermitian=True)
    result = solve(A, np.ones(poisson2d.shape[0]))
    assert result.status is Status.NON_FINITE
    assert result.iterations == 0


def test_integer_rhs_is_promoted_like_scipy(poisson2d):
    b = np.arange(poisson2d.shape[0]) % 7
    x, info = cg(poisson2d, b, rtol=1e-8)
    x_ref, info_ref = sla.cg(poisson2d, b, rtol=1e-8)
    assert x.dtype == np.float64
    assert info == info_ref == 0
    np.testing.assert_allclose(x, x_ref, rtol=1e-12)


def test_single_precision_system_stays_single(xp, poisson2d, rhs):
    A = poisson2d.astype(np.float32)
    b = xp.asarray(rhs(A.shape[0]).astype(np.float32))
    x, info = cg(A, b, rtol=1e-4)
    assert info == 0
    assert xp.to_numpy(x).dtype == np.float32


def test_complex_hermitian_system(rng):
    n = 40
    B = rng.standard_normal((n, n)) + 1j * rng.standard_normal((n, n))
    A = B @ B.conj().T + n * np.eye(n)
    b = rng.standard_normal(n) + 1j * rng.standard_normal(n)
    (_x, info, ours), (_x_ref, info_ref, theirs) = _run_both(A, b, rtol=1e-10)
    assert info == info_ref == 0
    _assert_same_iterates(ours, theirs, rtol=1e-10)
