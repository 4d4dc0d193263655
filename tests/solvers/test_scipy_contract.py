"""SciPy's own tests of ``scipy.sparse.linalg.cg``, run against physnet's ``cg`` and ``fcg``.

The test functions of SciPy's ``_isolve/tests/test_iterative.py`` are called directly
with physnet's solver in place of SciPy's: for the tests parametrised by ``case``, on
every case SciPy runs its ``cg`` on (those that do not list ``cg`` under ``skip``), and
for those parametrised by ``solver``, with physnet's function as the solver.
``test_precond_inverse`` loops over the module's ``_SOLVERS``, which is patched to hold
physnet's function alone.
"""

from __future__ import annotations

import functools
import warnings

import pytest
import scipy.sparse.linalg

from physnet.solvers import cg, fcg

try:
    with warnings.catch_warnings():
        # SciPy marks a test with the pytest-fail-slow plugin's marker, unknown here.
        warnings.simplefilter("ignore", pytest.PytestUnknownMarkWarning)
        from scipy.sparse.linalg._isolve.tests import test_iterative as scipy_tests
except ImportError as error:  # pragma: no cover - SciPy installed without its tests
    pytest.skip(
        f"SciPy's test module scipy.sparse.linalg._isolve.tests.test_iterative is not "
        f"installed ({error}); it ships with SciPy's wheels",
        allow_module_level=True,
    )

SCIPY_CG = scipy.sparse.linalg.cg


def _fcg(A, b, x0=None, *, rtol=1e-5, atol=0.0, maxiter=None, M=None, callback=None):
    """``fcg`` with ``cg``'s signature (its own options ``m`` and ``refresh`` at default)."""
    return fcg(A, b, x0, rtol=rtol, atol=atol, maxiter=maxiter, M=M, callback=callback)


_fcg.__name__ = "fcg"
SOLVERS = {"cg": cg, "fcg": _fcg}


def _cg_cases() -> list:
    """SciPy's cases its own cg runs on: symmetric (Hermitian) positive definite ones."""
    return [case for case in scipy_tests.IterativeParams().cases if SCIPY_CG not in case.skip]


CASES = _cg_cases()


def _single(case, solver):
    return scipy_tests.SingleTest(
        case.A,
        case.b,
        solver,
        case.name,
        convergence=SCIPY_CG not in case.nonconvergence,
    )


CASE_TESTS = ["test_maxiter", "test_convergence", "test_precond_dummy", "test_x0_equals_Mb"]
SOLVER_TESTS = ["test_atol", "test_zero_rhs", "test_x0_working", "test_positional_error"]


def test_the_cases_are_scipys_cg_cases():
    names = {case.name for case in CASES}
    assert {"poisson1d", "poisson2d-F", "rand-sym-pd", "rand-cmplx-sym-pd-F"} <= names
    assert "nonsymposdef" not in names and "rand-diag" not in names


@pytest.mark.parametrize("solver_name", sorted(SOLVERS))
@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
@pytest.mark.parametrize("test_name", CASE_TESTS)
def test_scipy_case_tests(test_name, case, solver_name):
    getattr(scipy_tests, test_name)(_single(case, SOLVERS[solver_name]))


@pytest.mark.parametrize("solver_name", sorted(SOLVERS))
@pytest.mark.parametrize("test_name", SOLVER_TESTS)
def test_scipy_solver_tests(test_name, solver_name):
    getattr(scipy_tests, test_name)(SOLVERS[solver_name])


@pytest.mark.parametrize("solver_name", sorted(SOLVERS))
def test_scipy_x0_solves_problem_exactly(solver_name):
    # Parametrised over SciPy's solvers in SciPy; unwrapped to take ours.
    inner = scipy_tests.test_x0_solves_problem_exactly
    inner = getattr(inner, "__wrapped__", inner)
    inner(SOLVERS[solver_name])


@pytest.mark.parametrize("solver_name", sorted(SOLVERS))
@pytest.mark.parametrize("atol", ["legacy", None, -1])
def test_scipy_invalid_atol(solver_name, atol):
    scipy_tests.test_invalid_atol(SOLVERS[solver_name], atol)


@pytest.mark.parametrize("solver_name", sorted(SOLVERS))
@pytest.mark.parametrize("name", ["poisson1d", "poisson2d"])
def test_scipy_precond_inverse(monkeypatch, solver_name, name):
    monkeypatch.setattr(scipy_tests, "_SOLVERS", [SOLVERS[solver_name]])
    (case,) = [case for case in CASES if case.name == name]
    inner = scipy_tests.test_precond_inverse
    functools.partial(getattr(inner, "__wrapped__", inner), case)()
