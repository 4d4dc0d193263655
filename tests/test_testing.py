"""The public checks in physnet.testing must pass correct operators and fail wrong ones."""

import numpy as np
import pytest
import scipy.sparse as sp

from physnet.operators import CallableOperator, MatrixOperator
from physnet.testing import default_tolerance, dot_product_test, symmetry_test


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.complex64, np.complex128])
def test_dot_product_test_passes_a_true_adjoint(xp, dtype):
    matrix = sp.random(40, 25, density=0.3, random_state=1, dtype=np.float64)
    if np.dtype(dtype).kind == "c":
        matrix = matrix + 1j * sp.random(40, 25, density=0.3, random_state=2)
    A = MatrixOperator(matrix.astype(dtype))
    gap = dot_product_test(A, like=xp.asarray(np.zeros(1)))
    assert gap <= default_tolerance(dtype)


def test_dot_product_test_catches_a_wrong_adjoint():
    M = np.random.default_rng(0).standard_normal((6, 6))
    wrong = CallableOperator(lambda x: M @ x, shape=(6, 6), rmatvec=lambda y: M @ y)
    with pytest.raises(AssertionError, match="dot-product test failed"):
        dot_product_test(wrong)


def test_symmetry_test():
    M = np.random.default_rng(0).standard_normal((6, 6))
    symmetry_test(MatrixOperator(M + M.T))
    with pytest.raises(AssertionError, match="symmetry test failed"):
        symmetry_test(MatrixOperator(M))
