"""The operator protocol and its adapters, in every backend."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from physnet.operators import (
    CallableOperator,
    LinearOperator,
    MatrixOperator,
    ScipyOperator,
    aslinearoperator,
)
from physnet.testing import dot_product_test


def _dense(shape, dtype, rng):
    matrix = rng.standard_normal(shape)
    if np.dtype(dtype).kind == "c":
        matrix = matrix + 1j * rng.standard_normal(shape)
    return matrix.astype(dtype)


def _operators(matrix):
    """The same matrix behind each adapter."""
    return {
        "sparse": MatrixOperator(sp.csr_matrix(matrix)),
        "dense": MatrixOperator(matrix),
        "scipy": ScipyOperator(spla.aslinearoperator(matrix)),
        "callable": CallableOperator(
            lambda x: _matmul(matrix, x),
            shape=matrix.shape,
            dtype=matrix.dtype,
            rmatvec=lambda y: _matmul(matrix.conj().T, y),
        ),
    }


def _matmul(matrix, x):
    """``matrix @ x`` for a NumPy matrix and an array of any kind (the callable's own job)."""
    from physnet import backend

    return backend.as_like(matrix @ backend.to_numpy(x), x)


ADAPTERS = ["sparse", "dense", "scipy", "callable"]


@pytest.mark.parametrize("dtype", [np.float64, np.complex128])
@pytest.mark.parametrize("adapter", ADAPTERS)
def test_apply_and_adjoint_match_the_matrix(xp, adapter, dtype, rng):
    matrix = _dense((7, 5), dtype, rng)
    A = _operators(matrix)[adapter]
    assert A.shape == (7, 5) and A.dtype == dtype
    x, y = _dense((5,), dtype, rng), _dense((7,), dtype, rng)
    X, Y = _dense((5, 3), dtype, rng), _dense((7, 3), dtype, rng)
    for result, expected, shape in [
        (A @ xp.asarray(x), matrix @ x, (7,)),
        (A.matvec(xp.asarray(x[:, None])), matrix @ x[:, None], (7, 1)),
        (A.H @ xp.asarray(y), matrix.conj().T @ y, (5,)),
        (A.rmatvec(xp.asarray(y)), matrix.conj().T @ y, (5,)),
        (A @ xp.asarray(X), matrix @ X, (7, 3)),
        (A.H @ xp.asarray(Y), matrix.conj().T @ Y, (5, 3)),
        (A.rmatmat(xp.asarray(Y)), matrix.conj().T @ Y, (5, 3)),
        (A(xp.asarray(x)), matrix @ x, (7,)),
    ]:
        assert xp.is_own(result)
        assert tuple(result.shape) == shape
        np.testing.assert_allclose(xp.to_numpy(result), expected, rtol=1e-12, atol=1e-12)
    dot_product_test(A, like=xp.asarray(np.zeros(1)))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_matrix_operator_dot_product_per_dtype(xp, dtype):
    A = MatrixOperator(sp.random(30, 20, density=0.3, random_state=0, dtype=dtype))
    dot_product_test(A, like=xp.asarray(np.zeros(1, dtype=dtype)))


def test_adjoint_of_adjoint_and_shapes(rng):
    A = MatrixOperator(_dense((4, 6), np.float64, rng))
    assert A.H.shape == (6, 4) and A.H.dtype == A.dtype
    assert A.H.H is A
    assert A.adjoint().shape == (6, 4)
    symmetric = CallableOperator(lambda x: 2.0 * x, shape=(3, 3), hermitian=True)
    assert symmetric.H is symmetric
    np.testing.assert_array_equal(symmetric.rmatvec(np.ones(3)), 2.0 * np.ones(3))


def test_missing_adjoint_raises():
    A = CallableOperator(lambda x: 2.0 * x, shape=(3, 3))
    with pytest.raises(
        NotImplementedError, match="CallableOperator does not implement its adjoint"
    ):
        A.H @ np.ones(3)


def test_to_scipy(rng):
    matrix = _dense((6, 4), np.float64, rng)
    A = MatrixOperator(matrix).to_scipy()
    assert isinstance(A, spla.LinearOperator) and A.shape == (6, 4)
    x, y = rng.standard_normal(4), rng.standard_normal(6)
    np.testing.assert_allclose(A @ x, matrix @ x)
    np.testing.assert_allclose(A.rmatvec(y), matrix.T @ y)
    np.testing.assert_allclose(A.matmat(np.eye(4)), matrix)
    spd = MatrixOperator(matrix.T @ matrix + np.eye(4)).to_scipy()
    solution, info = spla.cg(spd, x, rtol=1e-12)
    assert info == 0
    np.testing.assert_allclose(spd @ solution, x, rtol=1e-8)


def test_aslinearoperator_dispatch(rng):
    matrix = _dense((3, 3), np.float64, rng)
    A = MatrixOperator(matrix)
    assert aslinearoperator(A) is A
    assert isinstance(aslinearoperator(matrix), MatrixOperator)
    assert isinstance(aslinearoperator(sp.csr_matrix(matrix)), MatrixOperator)
    assert isinstance(aslinearoperator(sp.csr_array(matrix)), MatrixOperator)
    assert isinstance(aslinearoperator(spla.aslinearoperator(matrix)), ScipyOperator)
    assert isinstance(aslinearoperator(A), LinearOperator)
    with pytest.raises(TypeError, match="an object of type list as a linear operator"):
        aslinearoperator([[1.0, 0.0], [0.0, 1.0]])


def test_matrix_operator_validation():
    with pytest.raises(ValueError, match="matrix has 3 dimensions, expected 2"):
        MatrixOperator(np.ones((2, 2, 2)))
    with pytest.raises(TypeError, match="matrix has dtype object"):
        MatrixOperator(np.array([[None]]))
    with pytest.raises(ValueError, match="matrix has NaN or Inf entries"):
        MatrixOperator(sp.csr_matrix(np.array([[1.0, np.inf]])))
    integer = MatrixOperator(np.eye(2, dtype=np.int64))
    assert integer.dtype == np.float64
    np.testing.assert_array_equal(integer.to_csr().toarray(), np.eye(2))


def test_callable_operator_validation():
    with pytest.raises(TypeError, match="matvec and rmatvec must be callables"):
        CallableOperator("not callable", shape=(2, 2))
    with pytest.raises(ValueError, match=r"shape \(2, -1\) is not a 2-D shape"):
        CallableOperator(lambda x: x, shape=(2, -1))


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_operand_checks(xp, adapter, rng):
    A = _operators(_dense((4, 3), np.float64, rng))[adapter]
    name = type(A).__name__
    with pytest.raises(ValueError, match=rf"{name}.matvec: operand has shape \(4,\), expected"):
        A @ xp.asarray(np.ones(4))
    with pytest.raises(ValueError, match=rf"{name}.rmatvec: operand has shape \(3,\)"):
        A.rmatvec(xp.asarray(np.ones(3)))
    with pytest.raises(ValueError, match=rf"{name}.matmat: operand has shape \(3,\), expected"):
        A.matmat(xp.asarray(np.ones(3)))
    with pytest.raises(ValueError, match=rf"{name}.matmat: operand has shape \(2, 2\)"):
        A @ xp.asarray(np.ones((2, 2)))
    with pytest.raises(TypeError, match=rf"{name}.matvec: operand has dtype bool"):
        A @ xp.asarray(np.ones(3, dtype=bool))


def test_operator_times_operator_is_not_defined(rng):
    A = MatrixOperator(_dense((3, 3), np.float64, rng))
    with pytest.raises(TypeError):
        A @ A


def test_repr(rng):
    A = MatrixOperator(_dense((3, 2), np.float32, rng))
    assert repr(A) == "<3x2 MatrixOperator with dtype=float32>"
