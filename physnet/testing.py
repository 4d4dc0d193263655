"""Checks users can run on their own operators.

Examples
--------
>>> import scipy.sparse as sp
>>> from physnet.operators import MatrixOperator
>>> from physnet.testing import dot_product_test
>>> error = dot_product_test(MatrixOperator(sp.random(20, 30, density=0.2, random_state=0)))
>>> bool(error < 1e-12)
True
"""

from __future__ import annotations

from typing import Any

import numpy as np

from physnet import backend
from physnet.operators.base import LinearOperator, aslinearoperator

__all__ = ["default_tolerance", "dot_product_test", "random_vector", "symmetry_test"]


def default_tolerance(dtype: Any) -> float:
    """Relative tolerance of the dot-product test for a dtype (1e-4 single, 1e-12 double)."""
    dtype = backend.numpy_dtype(dtype)
    return 1e-4 if dtype in (np.float32, np.complex64) else 1e-12


def random_vector(n: int, dtype: Any, like: Any = None, rng: Any = None) -> Any:
    """A standard-normal random vector of length ``n`` (complex for complex dtypes).

    ``like`` selects the array kind and device of the result (NumPy by default).
    """
    rng = np.random.default_rng(rng)
    dtype = np.dtype(dtype)
    x = rng.standard_normal(n)
    if dtype.kind == "c":
        x = x + 1j * rng.standard_normal(n)
    x = x.astype(dtype)
    return x if like is None else backend.as_like(x, like)


def _relative_gap(lhs: Any, rhs: Any, scale: float) -> float:
    return abs(complex(lhs) - complex(rhs)) / scale if scale > 0 else abs(complex(lhs - rhs))


def dot_product_test(
    A: Any, *, dtype: Any = None, like: Any = None, rtol: float | None = None, rng: Any = 0
) -> float:
    """The relative dot-product (adjoint) test of an operator on random vectors.

    Checks ``|<A x, y> - <x, A^H y>| <= rtol * ||A x|| ||y||`` for standard-normal
    ``x`` and ``y``.

    Parameters
    ----------
    A : operator
        Anything :func:`physnet.operators.aslinearoperator` accepts.
    dtype : dtype, optional
        Dtype of the random vectors; the operator's dtype by default.
    like : array, optional
        The vectors are made of this array's kind and device (NumPy by default), so
        each backend of an operator can be tested.
    rtol : float, optional
        Defaults to :func:`default_tolerance` of the dtype.
    rng : seed or numpy.random.Generator

    Returns
    -------
    float
        The relative gap.

    Raises
    ------
    AssertionError
        If the gap exceeds ``rtol``.
    """
    A = aslinearoperator(A)
    dtype = np.dtype(dtype if dtype is not None else A.dtype)
    rtol = default_tolerance(dtype) if rtol is None else rtol
    rng = np.random.default_rng(rng)
    m, n = A.shape
    x = random_vector(n, dtype, like, rng)
    y = random_vector(m, dtype, like, rng)
    Ax = backend.to_numpy(A @ x).astype(np.complex128)
    AHy = backend.to_numpy(A.H @ y).astype(np.complex128)
    xh, yh = backend.to_numpy(x).astype(np.complex128), backend.to_numpy(y).astype(np.complex128)
    gap = _relative_gap(np.vdot(yh, Ax), np.vdot(AHy, xh), np.linalg.norm(Ax) * np.linalg.norm(yh))
    if not gap <= rtol:
        raise AssertionError(
            f"dot-product test failed for {A!r}: |<Ax,y> - <x,A^H y>| / (||Ax|| ||y||) = "
            f"{gap:.3e} > {rtol:.1e}"
        )
    return gap


def symmetry_test(
    A: LinearOperator | Any,
    *,
    dtype: Any = None,
    like: Any = None,
    rtol: float | None = None,
    rng: Any = 0,
) -> float:
    """Check ``|<A x, y> - <x, A y>| <= rtol * ||A x|| ||y||``: the operator is self-adjoint.

    Same parameters and return value as :func:`dot_product_test`.
    """
    A = aslinearoperator(A)
    dtype = np.dtype(dtype if dtype is not None else A.dtype)
    rtol = default_tolerance(dtype) if rtol is None else rtol
    rng = np.random.default_rng(rng)
    n = A.shape[1]
    if A.shape[0] != n:
        raise ValueError(f"symmetry_test: operator is not square, shape {A.shape}")
    x = random_vector(n, dtype, like, rng)
    y = random_vector(n, dtype, like, rng)
    Ax = backend.to_numpy(A @ x).astype(np.complex128)
    Ay = backend.to_numpy(A @ y).astype(np.complex128)
    xh, yh = backend.to_numpy(x).astype(np.complex128), backend.to_numpy(y).astype(np.complex128)
    gap = _relative_gap(np.vdot(yh, Ax), np.vdot(Ay, xh), np.linalg.norm(Ax) * np.linalg.norm(yh))
    if not gap <= rtol:
        raise AssertionError(f"symmetry test failed for {A!r}: relative gap {gap:.3e} > {rtol:.1e}")
    return gap
