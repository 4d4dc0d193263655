"""Validation at the boundary: one clear message per kind of bad input."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from physnet.solvers import cg, fcg, solve


@pytest.fixture(params=["cg", "fcg", "solve"])
def solver(request):
    """Each public solver, called as (A, b, x0=..., **kwargs)."""
    function = {"cg": cg, "fcg": fcg, "solve": solve}[request.param]
    return request.param, function


@pytest.fixture
def A():
    return sp.diags([-1.0, 2.0, -1.0], [-1, 0, 1], shape=(10, 10), format="csr")


def test_non_square_operator(solver):
    name, function = solver
    with pytest.raises(ValueError, match=rf"{name}: A has shape \(10, 8\), expected a square"):
        function(sp.random(10, 8, density=0.5, random_state=0), np.ones(10))


@pytest.mark.parametrize("shape", [(9,), (10, 2), (1, 10), (10, 1, 1)])
def test_rhs_of_the_wrong_shape(solver, A, shape):
    name, function = solver
    message = rf"{name}: b has shape \({', '.join(map(str, shape))},?\), expected \(10,\)"
    with pytest.raises(ValueError, match=message):
        function(A, np.ones(shape))


def test_x0_of_the_wrong_shape(solver, A):
    name, function = solver
    with pytest.raises(ValueError, match=rf"{name}: x0 has shape \(11,\), expected \(10,\)"):
        function(A, np.ones(10), x0=np.ones(11))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_rhs(solver, A, bad):
    name, function = solver
    b = np.ones(10)
    b[3] = bad
    with pytest.raises(ValueError, match=rf"{name}: b contains NaN or Inf"):
        function(A, b)


def test_non_finite_initial_guess(solver, A):
    name, function = solver
    x0 = np.zeros(10)
    x0[0] = np.nan
    with pytest.raises(ValueError, match=rf"{name}: x0 contains NaN or Inf"):
        function(A, np.ones(10), x0=x0)


@pytest.mark.parametrize(
    "b", [np.ones(10, dtype=bool), np.array(["a"] * 10), np.array([object()] * 10)]
)
def test_non_numeric_rhs(solver, A, b):
    name, function = solver
    with pytest.raises(TypeError, match=rf"{name}: b has dtype .*, expected a float"):
        function(A, b)


def test_boolean_initial_guess(solver, A):
    name, function = solver
    with pytest.raises(TypeError, match=rf"{name}: x0 has dtype bool"):
        function(A, np.ones(10), x0=np.zeros(10, dtype=bool))


def test_complex_initial_guess_for_a_real_system(A):
    with pytest.raises(TypeError, match="cg: x0 has complex dtype"):
        cg(A, np.ones(10), np.zeros(10, dtype=complex))


@pytest.mark.parametrize("dtype", [np.int8, np.int32, np.int64, np.uint16])
def test_integer_rhs_promoted_to_float64(A, dtype):
    b = np.arange(10).astype(dtype)
    x, info = cg(A, b, rtol=1e-10)
    x_float, _ = cg(A, b.astype(np.float64), rtol=1e-10)
    assert info == 0
    assert x.dtype == np.float64
    np.testing.assert_array_equal(x, x_float)


def test_list_rhs_is_accepted(A):
    x, info = cg(A, [1.0] * 10, rtol=1e-10)
    assert info == 0 and isinstance(x, np.ndarray)


@pytest.mark.parametrize(
    ("argument", "value"), [("rtol", -1e-3), ("rtol", np.nan), ("atol", -1.0), ("atol", np.nan)]
)
def test_invalid_tolerances(solver, A, argument, value):
    name, function = solver
    with pytest.raises(ValueError, match=rf"{name}: {argument} must be a non-negative number"):
        function(A, np.ones(10), **{argument: value})


def test_tolerance_of_the_wrong_type(A):
    with pytest.raises(TypeError, match="cg: rtol must be a real number"):
        cg(A, np.ones(10), rtol="1e-5")


@pytest.mark.parametrize("maxiter", [0, -3])
def test_invalid_maxiter(solver, A, maxiter):
    name, function = solver
    with pytest.raises(ValueError, match=rf"{name}: maxiter must be at least 1"):
        function(A, np.ones(10), maxiter=maxiter)


def test_callback_must_be_callable(A):
    with pytest.raises(TypeError, match="cg: callback must be callable"):
        cg(A, np.ones(10), callback=3)


def test_operator_that_is_not_one(solver):
    name, function = solver
    with pytest.raises(TypeError, match=rf"{name}: A is not a linear operator"):
        function("matrix", np.ones(10))


def test_preconditioner_of_the_wrong_shape(A):
    with pytest.raises(ValueError, match=r"cg: M has shape \(9, 9\), expected \(10, 10\)"):
        cg(A, np.ones(10), M=sp.identity(9, format="csr"))


def test_cg_rejects_a_plain_function_as_preconditioner(A):
    with pytest.raises(TypeError, match="cg: M of type function is not a linear operator"):
        cg(A, np.ones(10), M=lambda r: r)


def test_mixed_array_kinds(A):
    torch = pytest.importorskip("torch")
    with pytest.raises(TypeError, match="cg: b and x0 must be arrays of one kind"):
        cg(A, np.ones(10), torch.zeros(10, dtype=torch.float64))


def test_zero_rhs_with_initial_guess_gives_zeros(A):
    x, info = cg(A, np.zeros(10), np.ones(10))
    assert info == 0
    np.testing.assert_array_equal(x, 0.0)


@pytest.mark.parametrize("atol", [None, "legacy"])
def test_removed_atol_values_raise_value_error_as_in_scipy(atol):
    A = np.eye(3)
    with pytest.raises(ValueError, match=r"cg: atol=.* is not supported"):
        cg(A, np.ones(3), atol=atol)


def test_x0_mb_is_for_the_scipy_functions_only():
    A = np.diag([2.0, 4.0])
    x, info = cg(A, np.ones(2), x0="Mb", M=np.diag([0.5, 0.25]))
    assert info == 0 and np.allclose(x, [0.5, 0.25])
    with pytest.raises(ValueError, match="solve: x0='Mb' is not supported; expected an array"):
        solve(A, np.ones(2), x0="Mb")
    with pytest.raises(ValueError, match="cg: x0='M b' is not supported"):
        cg(A, np.ones(2), x0="M b")
