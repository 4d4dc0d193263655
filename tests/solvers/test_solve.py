"""solve(): the fields of SolveResult, every built-in method, the registry."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import scipy.sparse as sp

from physnet.operators import GridPoisson
from physnet.solvers import (
    Method,
    SolveResult,
    Status,
    available_methods,
    register_method,
    solve,
)
from physnet.solvers import _solve as solve_module
from physnet.solvers.cg import cg_iterate

BUILT_IN = ("amg", "cg", "fcg", "ic", "jacobi")


@pytest.fixture
def registry(monkeypatch):
    """An isolated copy of the method registry, so tests can register freely."""
    monkeypatch.setattr(solve_module, "_METHODS", dict(solve_module._METHODS))


def test_built_in_methods_are_available():
    assert set(BUILT_IN) <= set(available_methods())
    assert list(available_methods()) == sorted(available_methods())


@pytest.mark.parametrize("method", BUILT_IN)
def test_every_method_converges_with_consistent_fields(poisson3d, rhs, method):
    A = poisson3d
    b = rhs(A.shape[0])
    result = solve(A, b, method=method, rtol=1e-8)
    assert isinstance(result, SolveResult)
    assert result.converged and result.status is Status.CONVERGED
    assert result.method == method
    assert len(result.residuals) == result.iterations + 1
    assert result.residuals[0] == pytest.approx(np.linalg.norm(b), rel=1e-14)
    true_norm = np.linalg.norm(b - A @ result.x)
    assert result.residual == pytest.approx(true_norm, rel=1e-10)
    assert result.residual <= 1e-8 * np.linalg.norm(b)
    assert result.rhs_norm == pytest.approx(np.linalg.norm(b))
    assert result.setup_time >= 0 and result.solve_time > 0
    summary = result.summary()
    assert summary["converged"] is True and summary["iterations"] == result.iterations


@pytest.mark.parametrize("method", BUILT_IN)
def test_every_method_on_every_backend(xp, poisson2d, rhs, method):
    b = rhs(poisson2d.shape[0])
    result = solve(poisson2d, xp.asarray(b), method=method, rtol=1e-8)
    assert result.converged
    assert xp.is_own(result.x)
    assert np.linalg.norm(b - poisson2d @ xp.to_numpy(result.x)) <= 1e-8 * np.linalg.norm(b)


def test_preconditioners_cut_iterations(poisson3d, rhs):
    b = rhs(poisson3d.shape[0])
    counts = {m: solve(poisson3d, b, method=m, rtol=1e-8).iterations for m in BUILT_IN}
    assert counts["amg"] < counts["ic"] < counts["cg"]


def test_amg_info_and_options(poisson3d, rhs):
    result = solve(poisson3d, rhs(poisson3d.shape[0]), method="amg", max_coarse=50)
    assert result.info["levels"] >= 2
    assert result.info["operator_complexity"] > 1.0
    assert result.setup_time > 0


def test_grid_poisson_with_every_method(rng):
    flags = np.zeros((16, 16), dtype=np.int8)
    flags[0, :] = 2  # Dirichlet row
    flags[6:9, 6:9] = 1
    A = GridPoisson(flags)
    b = rng.standard_normal(A.shape[0])
    for method in BUILT_IN:
        result = solve(A, b, method=method, rtol=1e-8)
        assert result.converged, method
        assert np.linalg.norm(b - A @ result.x) <= 1e-8 * np.linalg.norm(b)


def test_cg_energy_error_decreases(poisson2d, rhs):
    A = poisson2d
    b = rhs(A.shape[0])
    exact = sp.linalg.spsolve(A.tocsc(), b)
    energies = [float(exact @ (A @ exact))]  # x0 = 0

    def record(x):
        e = x - exact
        energies.append(float(e @ (A @ e)))

    result = solve(A, b, rtol=1e-10, callback=record)
    assert len(energies) == result.iterations + 1
    assert all(later < earlier for earlier, later in itertools.pairwise(energies))


def test_maxiter_reached(poisson2d, rhs):
    result = solve(poisson2d, rhs(poisson2d.shape[0]), rtol=1e-12, maxiter=3)
    assert not result.converged
    assert result.status is Status.MAX_ITERATIONS
    assert result.iterations == 3 and len(result.residuals) == 4
    assert "maximum number of iterations" in str(result.status)


def test_zero_rhs(xp, poisson2d):
    result = solve(poisson2d, xp.asarray(np.zeros(poisson2d.shape[0])), method="amg")
    assert result.converged and result.iterations == 0
    np.testing.assert_array_equal(result.residuals, [0.0])
    assert xp.is_own(result.x)


def test_initial_guess(poisson2d, rhs):
    b = rhs(poisson2d.shape[0])
    x0 = sp.linalg.spsolve(poisson2d.tocsc(), b)
    result = solve(poisson2d, b, x0=x0, rtol=1e-8)
    assert result.iterations == 0 and result.converged
    assert result.residuals[0] == pytest.approx(np.linalg.norm(b - poisson2d @ x0))


def test_unknown_method_lists_the_available_ones(poisson2d):
    with pytest.raises(
        ValueError,
        match=r"solve: unknown method 'no-such-method'; available methods: "
        r"amg, cg, .*jacobi",
    ):
        solve(poisson2d, np.ones(poisson2d.shape[0]), method="no-such-method")


@pytest.mark.parametrize(
    ("method", "message"),
    [
        ("cg", r"solve: unknown option\(s\) 'max_coarse' for method 'cg'; its options are: M"),
        (
            "jacobi",
            r"solve: unknown option\(s\) 'M', 'm' for method 'jacobi'; its options are: none",
        ),
        ("fcg", r"solve: unknown option\(s\) 'shift' for method 'fcg'"),
        ("amg", r"AMG: unknown option\(s\) 'shift'"),
    ],
)
def test_unknown_options_are_named(poisson2d, method, message):
    options = {
        "cg": {"max_coarse": 10},
        "jacobi": {"M": None, "m": 2},
        "fcg": {"shift": 1.0},
        "amg": {"shift": 1.0},
    }[method]
    with pytest.raises(TypeError, match=message):
        solve(poisson2d, np.ones(poisson2d.shape[0]), method=method, **options)


def test_options_reach_the_method(poisson2d, rhs):
    b = rhs(poisson2d.shape[0])
    shifted = solve(poisson2d, b, method="ic", shift=0.1)
    assert shifted.converged and shifted.info["shift"] == 0.1
    result = solve(poisson2d, b, method="fcg", m=3)
    assert result.info["m"] == 3


def test_register_method_as_decorator(registry, poisson2d, rhs):
    @register_method("scaled-cg")
    def setup(A, *, scale=1.0):
        return Method(
            lambda system, callback: cg_iterate(system, lambda r: scale * r, callback),
            info={"scale": scale},
        )

    assert "scaled-cg" in available_methods()
    b = rhs(poisson2d.shape[0])
    result = solve(poisson2d, b, method="scaled-cg", scale=2.0)
    assert result.converged and result.info == {"scale": 2.0}
    # A scaled identity preconditioner does not change CG's iterates.
    assert result.iterations == solve(poisson2d, b).iterations
    with pytest.raises(TypeError, match=r"unknown option\(s\) 'shift' for method 'scaled-cg'"):
        solve(poisson2d, b, method="scaled-cg", shift=1.0)


def test_register_method_refuses_to_overwrite(registry):
    with pytest.raises(ValueError, match="a method named 'cg' is already registered"):
        register_method("cg", lambda A: None)
    replacement = register_method("cg", solve_module._METHODS["cg"], overwrite=True)
    assert replacement is solve_module._METHODS["cg"]


def test_register_method_needs_a_callable(registry):
    with pytest.raises(TypeError, match="register_method: setup for 'broken' must be callable"):
        register_method("broken", 42)


def test_breakdown_is_a_status_not_an_exception():
    A = sp.diags([2.0, -1.0, -1.0], format="csr")
    result = solve(A, np.ones(3))
    assert result.status is Status.NOT_POSITIVE_DEFINITE
    assert not result.converged
    assert np.isfinite(result.residual)
