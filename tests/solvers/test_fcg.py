"""Flexible CG: PCG's iteration count for linear M, convergence for nonlinear M."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import scipy.sparse as sp

from physnet.solvers import IncompleteCholesky, Jacobi, Status, cg, fcg, solve


def _count(function, A, b, **kwargs):
    calls = []
    x, info = function(A, b, callback=lambda xk: calls.append(xk.copy()), **kwargs)
    return x, info, calls


def _gauss_seidel(A, sweeps=2):
    """Symmetric Gauss–Seidel sweeps from zero, with a nonlinearity: a nonlinear M."""
    lower = sp.tril(A, format="csr")
    upper = sp.triu(A, format="csr")

    def apply(r):
        z = np.zeros_like(r)
        for _ in range(sweeps):
            z = z + sp.linalg.spsolve_triangular(lower, r - A @ z, lower=True)
            z = z + sp.linalg.spsolve_triangular(upper, r - A @ z, lower=False)
        return z + 0.2 * np.tanh(z) * np.abs(r).max()

    return apply


@pytest.mark.parametrize("m", [1, 2, 5])
def test_identity_preconditioner_gives_cg_iteration_count(poisson2d, rhs, m):
    b = rhs(poisson2d.shape[0])
    _, info_cg, cg_iterates = _count(cg, poisson2d, b, rtol=1e-8)
    _, info, iterates = _count(fcg, poisson2d, b, rtol=1e-8, m=m)
    assert info == info_cg == 0
    assert abs(len(iterates) - len(cg_iterates)) <= 1
    # In exact arithmetic the iterates coincide; early ones agree to rounding.
    for k in range(10):
        np.testing.assert_allclose(iterates[k], cg_iterates[k], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("make_preconditioner", [Jacobi, IncompleteCholesky])
def test_fixed_spd_preconditioner_gives_pcg_iteration_count(
    variable_poisson2d, rhs, make_preconditioner
):
    A = variable_poisson2d
    b = rhs(A.shape[0])
    M = make_preconditioner(A)
    _, _, pcg_iterates = _count(cg, A, b, rtol=1e-8, M=M)
    _, info, iterates = _count(fcg, A, b, rtol=1e-8, M=M, m=1)
    assert info == 0
    assert abs(len(iterates) - len(pcg_iterates)) <= 1


def test_nonlinear_preconditioner_converges_on_the_true_residual(poisson2d, rhs):
    A = poisson2d
    b = rhs(A.shape[0])
    M = _gauss_seidel(A)
    for rtol in (1e-6, 1e-10):
        x, info, iterates = _count(fcg, A, b, rtol=rtol, M=M, m=4)
        assert info == 0
        assert np.linalg.norm(b - A @ x) <= rtol * np.linalg.norm(b)
    _, _, cg_iterates = _count(cg, A, b, rtol=1e-10)
    assert len(iterates) < len(cg_iterates) / 2


def test_energy_error_never_increases_with_a_nonlinear_preconditioner(poisson2d, rhs):
    A = poisson2d
    b = rhs(A.shape[0])
    exact = sp.linalg.spsolve(A.tocsc(), b)

    def energy(x):
        e = x - exact
        return float(e @ (A @ e))

    _, info, iterates = _count(fcg, A, b, rtol=1e-10, M=_gauss_seidel(A, sweeps=1), m=2)
    energies = [energy(np.zeros_like(b))] + [energy(x) for x in iterates]
    assert info == 0
    assert all(later <= earlier * (1 + 1e-10) for earlier, later in itertools.pairwise(energies))


def test_periodic_true_residual_refresh(poisson2d, rhs):
    b = rhs(poisson2d.shape[0])
    result = solve(poisson2d, b, method="fcg", rtol=1e-10, refresh=1)
    assert result.converged
    # With refresh=1 every recorded residual is a true one.
    np.testing.assert_allclose(
        result.residuals[-1], np.linalg.norm(b - poisson2d @ result.x), rtol=1e-12
    )
    assert result.info == {"m": 2, "refresh": 1}


def test_preconditioner_returning_zero_is_stagnation(poisson2d):
    b = np.ones(poisson2d.shape[0])
    _x, info = fcg(poisson2d, b, M=np.zeros_like)
    assert info < 0
    result = solve(poisson2d, b, method="fcg", M=np.zeros_like)
    assert result.status is Status.STAGNATION
    np.testing.assert_array_equal(result.x, 0.0)


def test_indefinite_matrix_is_not_positive_definite():
    A = sp.diags([1.0, -3.0, 1.0], format="csr")
    _x, info = fcg(A, np.ones(3))
    assert info < 0
    assert solve(A, np.ones(3), method="fcg").status is Status.NOT_POSITIVE_DEFINITE


def test_every_backend_with_a_callable_preconditioner(xp, poisson2d, rhs):
    b = rhs(poisson2d.shape[0])
    inverse_diagonal = 1.0 / poisson2d.diagonal()

    def jacobi_then_clip(r):  # works on numpy arrays and torch tensors alike
        z = r * xp.asarray(inverse_diagonal)
        return z + 0.01 * abs(z)

    x, info = fcg(poisson2d, xp.asarray(b), M=jacobi_then_clip, rtol=1e-8)
    assert info == 0
    assert xp.is_own(x)
    assert np.linalg.norm(b - poisson2d @ xp.to_numpy(x)) <= 1e-8 * np.linalg.norm(b)


def test_maxiter_reached(poisson2d, rhs):
    _x, info = fcg(poisson2d, rhs(poisson2d.shape[0]), rtol=1e-12, maxiter=4)
    assert info == 4


@pytest.mark.parametrize("m", [0, -1, 1.5, True])
def test_invalid_m(poisson2d, m):
    with pytest.raises(ValueError, match="fcg: m must be an integer >= 1"):
        fcg(poisson2d, np.ones(poisson2d.shape[0]), m=m)


def test_preconditioner_output_of_the_wrong_shape(poisson2d):
    n = poisson2d.shape[0]
    message = rf"fcg: the preconditioner M returned .*shape \({n - 1},\)"
    with pytest.raises(ValueError, match=message):
        fcg(poisson2d, np.ones(n), M=lambda r: r[1:])


def test_preconditioner_output_of_the_wrong_kind(poisson2d):
    torch = pytest.importorskip("torch")
    with pytest.raises(TypeError, match="fcg: the preconditioner M returned a torch array"):
        fcg(poisson2d, np.ones(poisson2d.shape[0]), M=torch.from_numpy)


def test_preconditioner_that_is_not_callable(poisson2d):
    message = "fcg: M of type int is not a linear operator or a callable"
    with pytest.raises(TypeError, match=message):
        fcg(poisson2d, np.ones(poisson2d.shape[0]), M=3)
