"""The linear-operator protocol and adapters for the objects users already hold.

An operator knows its shape, its dtype, how to apply itself and its adjoint, and
nothing about solving. ``A @ x`` accepts a NumPy array, a torch tensor or a CuPy
array of shape ``(n,)`` or ``(n, k)`` and returns the same kind on the same device.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import scipy.sparse
import scipy.sparse.linalg

from physnet import backend

__all__ = [
    "CallableOperator",
    "LinearOperator",
    "MatrixOperator",
    "ScipyOperator",
    "aslinearoperator",
]

_FLOAT_DTYPES = tuple(np.dtype(t) for t in (np.float32, np.float64, np.complex64, np.complex128))


class LinearOperator:
    """Base class of physnet's linear operators.

    Subclasses set ``shape`` and ``dtype`` and implement :meth:`_matvec` (and
    :meth:`_rmatvec`, the adjoint, unless the operator is self-adjoint and says so
    with ``hermitian = True``). Both receive a 1-D array of any supported kind that
    has already been checked against the operator's shape, and return the same kind
    on the same device. :meth:`_matmat` may be overridden for a faster multi-vector
    apply; the default applies the columns one by one.

    Attributes
    ----------
    shape : tuple of int
        ``(m, n)``.
    dtype : numpy.dtype
        The dtype of the operator's entries; ``A @ x`` has dtype
        ``numpy.result_type(A.dtype, x.dtype)``.
    hermitian : bool
        True when ``A.H`` equals ``A``.
    """

    shape: tuple[int, int]
    dtype: np.dtype
    hermitian: bool = False

    # --- to be implemented by subclasses ---------------------------------------------
    def _matvec(self, x: Any) -> Any:
        raise NotImplementedError

    def _rmatvec(self, y: Any) -> Any:
        if self.hermitian:
            return self._matvec(y)
        raise NotImplementedError(f"{type(self).__name__} does not implement its adjoint")

    def _matmat(self, x: Any) -> Any:
        return _columnwise(self._matvec, x)

    def _rmatmat(self, y: Any) -> Any:
        return _columnwise(self._rmatvec, y)

    # --- public interface -----------------------------------------------------------
    def matvec(self, x: Any) -> Any:
        """Return ``A @ x`` for ``x`` of shape ``(n,)`` or ``(n, 1)``."""
        x = _check_operand(self, x, self.shape[1], "matvec")
        if x.ndim == 2:
            return self._matvec(x.reshape(-1)).reshape(-1, 1)
        return self._matvec(x)

    def rmatvec(self, y: Any) -> Any:
        """Return ``A^H @ y`` for ``y`` of shape ``(m,)`` or ``(m, 1)``."""
        y = _check_operand(self, y, self.shape[0], "rmatvec")
        if y.ndim == 2:
            return self._rmatvec(y.reshape(-1)).reshape(-1, 1)
        return self._rmatvec(y)

    def matmat(self, x: Any) -> Any:
        """Return ``A @ X`` for ``X`` of shape ``(n, k)``."""
        x = _check_operand(self, x, self.shape[1], "matmat", ndim=2)
        return self._matmat(x)

    def rmatmat(self, y: Any) -> Any:
        """Return ``A^H @ Y`` for ``Y`` of shape ``(m, k)``."""
        y = _check_operand(self, y, self.shape[0], "rmatmat", ndim=2)
        return self._rmatmat(y)

    def __matmul__(self, x: Any) -> Any:
        if isinstance(x, LinearOperator):
            return NotImplemented
        shape = getattr(x, "shape", None)
        if shape is not None and len(shape) == 2 and shape[1] != 1:
            return self.matmat(x)
        return self.matvec(x)

    def __call__(self, x: Any) -> Any:
        return self @ x

    @property
    def H(self) -> LinearOperator:
        """The adjoint operator ``A^H``."""
        if self.hermitian:
            return self
        return _AdjointOperator(self)

    def adjoint(self) -> LinearOperator:
        """The adjoint operator ``A^H`` (same as :attr:`H`)."""
        return self.H

    def to_scipy(self) -> scipy.sparse.linalg.LinearOperator:
        """A :class:`scipy.sparse.linalg.LinearOperator` applying this operator to NumPy arrays.

        Useful to hand a physnet operator to SciPy's or pyamg's solvers.
        """
        return scipy.sparse.linalg.LinearOperator(
            self.shape,
            matvec=lambda x: self.matvec(np.asarray(x)),
            rmatvec=lambda y: self.rmatvec(np.asarray(y)),
            matmat=lambda x: self.matmat(np.asarray(x)),
            rmatmat=lambda y: self.rmatmat(np.asarray(y)),
            dtype=self.dtype,
        )

    def __repr__(self) -> str:
        m, n = self.shape
        return f"<{m}x{n} {type(self).__name__} with dtype={self.dtype}>"


class _AdjointOperator(LinearOperator):
    def __init__(self, operator: LinearOperator) -> None:
        self.operator = operator
        self.shape = (operator.shape[1], operator.shape[0])
        self.dtype = operator.dtype

    def _matvec(self, x: Any) -> Any:
        return self.operator._rmatvec(x)

    def _rmatvec(self, y: Any) -> Any:
        return self.operator._matvec(y)

    def _matmat(self, x: Any) -> Any:
        return self.operator._rmatmat(x)

    def _rmatmat(self, y: Any) -> Any:
        return self.operator._matmat(y)

    @property
    def H(self) -> LinearOperator:
        return self.operator


def _columnwise(apply: Callable[[Any], Any], x: Any) -> Any:
    be = backend.get_backend(x)
    columns = [apply(x[:, j]) for j in range(x.shape[1])]
    if be.kind == "torch":
        return be.xp.stack(columns, dim=1)
    return be.xp.stack(columns, axis=1)


def _check_operand(operator: LinearOperator, x: Any, n: int, method: str, ndim: int | None = None):
    """Validate an operand at the operator boundary: kind, shape and dtype."""
    name = f"{type(operator).__name__}.{method}"
    if backend.array_kind(x) == "numpy":
        x = np.asarray(x)
    shape = tuple(x.shape)
    if ndim == 2:
        ok = len(shape) == 2 and shape[0] == n
        expected = f"({n}, k)"
    else:
        ok = shape in ((n,), (n, 1))
        expected = f"({n},) or ({n}, 1)"
    if not ok:
        raise ValueError(f"{name}: operand has shape {shape}, expected {expected}")
    dtype = backend.numpy_dtype(x.dtype)
    if dtype.kind not in "iufc":
        raise TypeError(f"{name}: operand has dtype {dtype}, expected a numeric dtype")
    return x


def _result_dtype(*dtypes: Any) -> np.dtype:
    """SciPy's promotion for solver/operator arithmetic: at least float64 for integers."""
    dtype = np.result_type(*[backend.numpy_dtype(d) for d in dtypes])
    if dtype.kind in "iub":
        return np.dtype(np.float64)
    return dtype


class MatrixOperator(LinearOperator):
    """A SciPy sparse matrix or a dense NumPy matrix as a physnet operator.

    NumPy input (and CPU torch tensors, through zero-copy views) is multiplied by the
    SciPy matrix; CuPy arrays and CUDA tensors by a copy of the matrix on their device
    (``cupyx.scipy.sparse`` or ``torch.sparse_csr``), made once per device and kept.

    Parameters
    ----------
    matrix : scipy.sparse matrix or array, or 2-D numpy.ndarray
        Must be square or rectangular with finite entries.

    Examples
    --------
    >>> import numpy as np, scipy.sparse as sp
    >>> from physnet.operators import MatrixOperator
    >>> A = MatrixOperator(sp.diags([1.0, 2.0, 3.0]))
    >>> A @ np.ones(3)
    array([1., 2., 3.])
    """

    def __init__(self, matrix: Any) -> None:
        if scipy.sparse.issparse(matrix):
            matrix = scipy.sparse.csr_matrix(matrix)
            matrix.sum_duplicates()
            values = matrix.data
        else:
            matrix = np.asarray(matrix)
            values = matrix
        if matrix.ndim != 2:
            raise ValueError(f"MatrixOperator: matrix has {matrix.ndim} dimensions, expected 2")
        if values.dtype.kind not in "iufc":
            raise TypeError(f"MatrixOperator: matrix has dtype {values.dtype}, expected numeric")
        if values.dtype.kind in "iu":
            matrix = matrix.astype(np.float64)
            values = matrix.data if scipy.sparse.issparse(matrix) else matrix
        if not np.all(np.isfinite(values)):
            raise ValueError("MatrixOperator: matrix has NaN or Inf entries")
        self.matrix = matrix
        self.shape = matrix.shape
        self.dtype = matrix.dtype
        self._device_copies: dict[tuple[str, str], Any] = {}

    def to_csr(self) -> scipy.sparse.csr_matrix:
        """The matrix in SciPy CSR format."""
        return scipy.sparse.csr_matrix(self.matrix)

    def _device_matrix(self, x: Any, adjoint: bool) -> Any:
        key = (backend.array_kind(x), str(x.device), adjoint)
        if key not in self._device_copies:
            matrix = self.matrix.conj().T if adjoint else self.matrix
            if key[0] == "cupy":
                cupy = backend.require_cupy()
                import cupyx.scipy.sparse as cusparse

                with cupy.cuda.Device(x.device.id):
                    if scipy.sparse.issparse(matrix):
                        copy = cusparse.csr_matrix(scipy.sparse.csr_matrix(matrix))
                    else:
                        copy = cupy.asarray(matrix)
            else:
                torch = backend.require_torch()
                if scipy.sparse.issparse(matrix):
                    csr = scipy.sparse.csr_matrix(matrix)
                    copy = torch.sparse_csr_tensor(
                        torch.from_numpy(csr.indptr.astype(np.int64)),
                        torch.from_numpy(csr.indices.astype(np.int64)),
                        torch.from_numpy(csr.data),
                        size=csr.shape,
                    ).to(x.device)
                else:
                    copy = torch.from_numpy(np.ascontiguousarray(matrix)).to(x.device)
            self._device_copies[key] = copy
        return self._device_copies[key]

    def _apply(self, x: Any, adjoint: bool) -> Any:
        kind = backend.array_kind(x)
        on_host = kind == "numpy" or (kind == "torch" and x.device.type == "cpu")
        if on_host:
            matrix = self.matrix.conj().T if adjoint else self.matrix
            y = matrix @ backend.to_numpy(x)
            return y if kind == "numpy" else backend.as_like(np.ascontiguousarray(y), x)
        matrix = self._device_matrix(x, adjoint)
        if kind == "torch":
            dtype = backend.torch_dtype(_result_dtype(self.dtype, x.dtype))
            return matrix.to(dtype) @ x.to(dtype)
        return matrix @ x

    def _matvec(self, x: Any) -> Any:
        return self._apply(x, adjoint=False)

    def _rmatvec(self, y: Any) -> Any:
        return self._apply(y, adjoint=True)

    def _matmat(self, x: Any) -> Any:
        return self._apply(x, adjoint=False)

    def _rmatmat(self, y: Any) -> Any:
        return self._apply(y, adjoint=True)


class ScipyOperator(LinearOperator):
    """A SciPy LinearOperator (or a pyamg preconditioner) as a physnet operator.

    SciPy operators compute on the host: torch and CuPy operands are copied to NumPy
    (zero-copy for CPU tensors) and the result is returned in the caller's kind.
    """

    def __init__(self, operator: scipy.sparse.linalg.LinearOperator) -> None:
        self.operator = operator
        self.shape = tuple(operator.shape)
        self.dtype = np.dtype(operator.dtype) if operator.dtype is not None else np.dtype(float)

    def _host(self, apply: Callable[[np.ndarray], np.ndarray], x: Any) -> Any:
        y = np.asarray(apply(backend.to_numpy(x)))
        if backend.array_kind(x) == "numpy":
            return y
        return backend.as_like(np.ascontiguousarray(y), x)

    def _matvec(self, x: Any) -> Any:
        return self._host(self.operator.matvec, x).reshape(-1)

    def _rmatvec(self, y: Any) -> Any:
        return self._host(self.operator.rmatvec, y).reshape(-1)

    def _matmat(self, x: Any) -> Any:
        return self._host(self.operator.matmat, x)

    def _rmatmat(self, y: Any) -> Any:
        return self._host(self.operator.rmatmat, y)


class CallableOperator(LinearOperator):
    """An operator from Python functions, applied to the caller's arrays as they are.

    Parameters
    ----------
    matvec : callable
        ``matvec(x) -> A @ x`` for a 1-D array ``x`` of any kind the function supports.
    shape : tuple of int
    dtype : dtype, default float64
    rmatvec : callable, optional
        ``rmatvec(y) -> A^H @ y``. Omit it for a self-adjoint operator and pass
        ``hermitian=True``.
    hermitian : bool, default False

    Examples
    --------
    >>> import numpy as np
    >>> from physnet.operators import CallableOperator
    >>> A = CallableOperator(lambda x: 2.0 * x, shape=(3, 3), hermitian=True)
    >>> A @ np.arange(3.0)
    array([0., 2., 4.])
    """

    def __init__(
        self,
        matvec: Callable[[Any], Any],
        shape: tuple[int, int],
        dtype: Any = np.float64,
        *,
        rmatvec: Callable[[Any], Any] | None = None,
        hermitian: bool = False,
    ) -> None:
        if not callable(matvec) or (rmatvec is not None and not callable(rmatvec)):
            raise TypeError("CallableOperator: matvec and rmatvec must be callables")
        if len(shape) != 2 or min(shape) < 0:
            raise ValueError(f"CallableOperator: shape {shape} is not a 2-D shape")
        self._matvec_fn = matvec
        self._rmatvec_fn = rmatvec
        self.shape = (int(shape[0]), int(shape[1]))
        self.dtype = np.dtype(dtype)
        self.hermitian = hermitian

    def _matvec(self, x: Any) -> Any:
        return self._matvec_fn(x)

    def _rmatvec(self, y: Any) -> Any:
        if self._rmatvec_fn is not None:
            return self._rmatvec_fn(y)
        return super()._rmatvec(y)


def aslinearoperator(A: Any) -> LinearOperator:
    """Wrap ``A`` as a physnet :class:`LinearOperator`.

    Accepts physnet operators (returned as they are), SciPy sparse matrices and arrays,
    dense 2-D NumPy arrays and :class:`scipy.sparse.linalg.LinearOperator` objects
    (including pyamg's ``aspreconditioner()``).

    Raises
    ------
    TypeError
        For anything else, naming what was given.
    """
    if isinstance(A, LinearOperator):
        return A
    if scipy.sparse.issparse(A) or isinstance(A, np.ndarray):
        return MatrixOperator(A)
    if isinstance(A, scipy.sparse.linalg.LinearOperator):
        return ScipyOperator(A)
    raise TypeError(
        f"cannot use an object of type {type(A).__name__} as a linear operator; expected a "
        "physnet LinearOperator, a SciPy sparse matrix, a 2-D NumPy array or a "
        "scipy.sparse.linalg.LinearOperator (wrap a function in physnet.operators.CallableOperator)"
    )
