"""Preconditioners for the Krylov solvers: Jacobi, smoothed-aggregation AMG, IC(0).

Each is a physnet :class:`~physnet.operators.LinearOperator` approximating ``A^{-1}``:
pass it as ``M`` to :func:`~physnet.solvers.cg` or :func:`~physnet.solvers.fcg`, or,
through :meth:`~physnet.operators.LinearOperator.to_scipy`, to SciPy's solvers. The
setup (inverse diagonal, AMG hierarchy, factorisation) is done once, in the
constructor, and its duration kept in ``setup_time`` (seconds).
"""

from __future__ import annotations

import contextlib
import inspect
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import scipy.sparse

from physnet import backend
from physnet.operators.base import LinearOperator, MatrixOperator
from physnet.solvers import _incomplete_cholesky

__all__ = ["AMG", "IncompleteCholesky", "Jacobi"]


def _csr_of(A: Any, name: str) -> scipy.sparse.csr_matrix:
    """The CSR matrix of ``A``: a SciPy sparse matrix, a dense array, or ``A.to_csr()``."""
    if scipy.sparse.issparse(A) or isinstance(A, np.ndarray):
        matrix = scipy.sparse.csr_matrix(A)
    elif callable(getattr(A, "to_csr", None)):
        matrix = A.to_csr()
    else:
        raise TypeError(
            f"{name}: needs the matrix of A, but an object of type {type(A).__name__} has no "
            "CSR form; pass a SciPy sparse matrix, a dense NumPy array, a "
            "physnet.operators.MatrixOperator or an operator with a to_csr() method "
            "(e.g. physnet.operators.GridPoisson)"
        )
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
        raise ValueError(f"{name}: A has shape {matrix.shape}, expected a square matrix (n, n)")
    if matrix.dtype.kind not in "fiu":
        raise TypeError(f"{name}: A has dtype {matrix.dtype}, expected a real floating dtype")
    return matrix


def _host_apply(apply, x: Any) -> Any:
    """Apply a NumPy function to an array of any kind; the result comes back in its kind."""
    y = apply(backend.to_numpy(x))
    if backend.array_kind(x) == "numpy":
        return y
    return backend.as_like(np.ascontiguousarray(y), x)


class Jacobi(LinearOperator):
    """Jacobi (diagonal) preconditioner ``M = D^{-1}``, ``D = diag(A)``.

    Applies on every backend: the inverse diagonal is copied once to each device it
    meets (torch tensors, CuPy arrays) and kept.

    Parameters
    ----------
    A : operator or matrix
        A SciPy sparse matrix, a dense NumPy array, a
        :class:`~physnet.operators.MatrixOperator`, or any operator with a
        ``diagonal()`` method (e.g. :class:`~physnet.operators.GridPoisson`) or a
        ``to_csr()`` method.

    Attributes
    ----------
    inverse_diagonal : numpy.ndarray
        ``1 / diag(A)``.
    setup_time : float
        Seconds spent in the constructor.

    Raises
    ------
    ValueError
        If a diagonal entry is zero, negative or not finite (``M`` would not be positive
        definite), naming the first such row.
    TypeError
        If the diagonal of ``A`` cannot be obtained.

    Notes
    -----
    ``M r = D^{-1} r`` is Hermitian positive definite when every ``A_ii > 0``, as for
    any symmetric positive definite ``A``. It equalises the diagonal; on a Poisson
    matrix with constant coefficients it only rescales, and it pays off with varying
    coefficients or cell sizes (Saad, §10.2).

    References
    ----------
    .. [1] Y. Saad, *Iterative Methods for Sparse Linear Systems*, 2nd ed., SIAM, 2003,
       §10.2.

    Examples
    --------
    >>> import numpy as np
    >>> import scipy.sparse as sp
    >>> from physnet.solvers import Jacobi
    >>> M = Jacobi(sp.diags([2.0, 4.0, 8.0]))
    >>> M @ np.ones(3)
    array([0.5  , 0.25 , 0.125])
    """

    hermitian = True

    def __init__(self, A: Any) -> None:
        start = time.perf_counter()
        diagonal = self._diagonal_of(A)
        bad = ~(np.isfinite(diagonal) & (diagonal > 0))
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise ValueError(
                f"Jacobi: diagonal entry {row} of A is {diagonal[row]}, expected every diagonal "
                "entry positive and finite (the preconditioner would not be positive definite)"
            )
        self.inverse_diagonal = 1.0 / diagonal
        self.shape = (diagonal.shape[0], diagonal.shape[0])
        self.dtype = self.inverse_diagonal.dtype
        self._device_copies: dict[tuple[str, str], Any] = {}
        self.setup_time = time.perf_counter() - start

    @staticmethod
    def _diagonal_of(A: Any) -> np.ndarray:
        if isinstance(A, MatrixOperator):
            matrix = A.matrix
            diagonal = matrix.diagonal() if scipy.sparse.issparse(matrix) else np.diag(matrix)
        elif isinstance(A, np.ndarray):
            diagonal = np.diag(A) if A.ndim == 2 else None
        elif callable(getattr(A, "diagonal", None)):
            diagonal = A.diagonal()
        else:
            diagonal = _csr_of(A, "Jacobi").diagonal()
        shape = getattr(A, "shape", None)
        if diagonal is None or shape is None or len(shape) != 2 or shape[0] != shape[1]:
            raise ValueError(f"Jacobi: A has shape {shape}, expected a square matrix (n, n)")
        diagonal = np.asarray(backend.to_numpy(diagonal))
        if diagonal.dtype.kind == "c":
            if np.any(diagonal.imag != 0):
                raise ValueError("Jacobi: A has a complex diagonal, so it is not Hermitian")
            diagonal = diagonal.real
        if diagonal.dtype.kind not in "f":
            diagonal = diagonal.astype(np.float64)
        return diagonal

    def _on_device(self, x: Any) -> Any:
        key = (backend.array_kind(x), str(x.device))
        if key not in self._device_copies:
            self._device_copies[key] = backend.as_like(self.inverse_diagonal, x)
        return self._device_copies[key]

    def _matvec(self, x: Any) -> Any:
        if backend.array_kind(x) == "numpy":
            return self.inverse_diagonal * x
        return self._on_device(x) * x

    def _matmat(self, x: Any) -> Any:
        if backend.array_kind(x) == "numpy":
            return self.inverse_diagonal[:, None] * x
        return self._on_device(x)[:, None] * x


class AMG(LinearOperator):
    """Smoothed-aggregation algebraic multigrid (pyamg), one V-cycle per application.

    The multigrid hierarchy is built once, in the constructor, by
    :func:`pyamg.smoothed_aggregation_solver`; every application is one cycle from a zero
    initial guess, which is what pyamg's ``aspreconditioner()`` does. The cycle runs on
    the host: torch tensors and CuPy arrays are copied to NumPy (zero-copy for CPU
    tensors) and the result is returned in the caller's kind and device.

    Parameters
    ----------
    A : operator or matrix
        Symmetric positive definite, with a CSR form: a SciPy sparse matrix, a dense
        NumPy array, a :class:`~physnet.operators.MatrixOperator` or an operator with
        ``to_csr()`` (e.g. :class:`~physnet.operators.GridPoisson`).
    max_coarse : int, default 500
        Largest coarsest-level size (solved directly).
    cycle : {"V", "W", "F", "AMLI"}, default "V"
    seed : int, default 0
        Seed of the random start vector pyamg uses to estimate spectral radii (it draws
        from NumPy's legacy global generator, which is restored afterwards): the same
        matrix always gives the same hierarchy, bit for bit.
    **options
        Further keyword arguments of :func:`pyamg.smoothed_aggregation_solver`
        (``strength``, ``smooth``, ``presmoother``, ``max_levels``...);
        ``symmetry="symmetric"`` unless given.

    Attributes
    ----------
    hierarchy : pyamg.multilevel.MultilevelSolver
    levels : int
        Number of levels of the hierarchy.
    operator_complexity, grid_complexity : float
        pyamg's measures of the hierarchy's cost relative to ``A``.
    setup_time : float
        Seconds spent in the constructor (CSR assembly and hierarchy).

    Raises
    ------
    TypeError
        If ``A`` has no CSR form, or for an option pyamg does not take (naming it).

    Notes
    -----
    A V-cycle with symmetric smoothing (pyamg's default symmetric block Gauss–Seidel,
    pre- and post-) and Galerkin coarse operators ``A_{l+1} = P^T A_l P`` is a symmetric
    positive definite linear operator, so it is a valid CG preconditioner. On Poisson
    problems it makes the number of CG iterations nearly independent of the grid size.

    References
    ----------
    .. [1] P. Vaněk, J. Mandel and M. Brezina, "Algebraic multigrid by smoothed
       aggregation for second and fourth order elliptic problems", Computing 56 (1996).
    .. [2] N. Bell, L. N. Olson and J. Schroder, "PyAMG: Algebraic multigrid solvers in
       Python", J. Open Source Softw. 7(72), 4142 (2022).

    Examples
    --------
    >>> import numpy as np
    >>> import scipy.sparse as sp
    >>> from physnet.solvers import AMG, cg
    >>> T = sp.diags([-1.0, 2.0, -1.0], [-1, 0, 1], shape=(40, 40))
    >>> A = sp.kronsum(T, T, format="csr")
    >>> M = AMG(A, max_coarse=50)
    >>> x, info = cg(A, np.ones(A.shape[0]), M=M, rtol=1e-8)
    >>> info, M.levels >= 2
    (0, True)
    """

    hermitian = True

    def __init__(
        self, A: Any, *, max_coarse: int = 500, cycle: str = "V", seed: int = 0, **options: Any
    ) -> None:
        import pyamg

        start = time.perf_counter()
        csr = _csr_of(A, "AMG")
        accepted = inspect.signature(pyamg.smoothed_aggregation_solver).parameters
        unknown = sorted(set(options) - (set(accepted) - {"A", "kwargs"}))
        if unknown:
            raise TypeError(
                f"AMG: unknown option(s) {', '.join(map(repr, unknown))}; expected max_coarse, "
                "cycle or keyword arguments of pyamg.smoothed_aggregation_solver"
            )
        options.setdefault("symmetry", "symmetric")
        with _legacy_random_state(seed):
            self.hierarchy = pyamg.smoothed_aggregation_solver(
                csr, max_coarse=max_coarse, **options
            )
        self._cycle = self.hierarchy.aspreconditioner(cycle=cycle)
        self.shape = csr.shape
        self.dtype = np.dtype(self._cycle.dtype)
        self.levels = len(self.hierarchy.levels)
        self.operator_complexity = float(self.hierarchy.operator_complexity())
        self.grid_complexity = float(self.hierarchy.grid_complexity())
        self.setup_time = time.perf_counter() - start

    def _matvec(self, x: Any) -> Any:
        return _host_apply(self._cycle.matvec, x)


class IncompleteCholesky(LinearOperator):
    """Zero fill-in incomplete Cholesky preconditioner IC(0), ``M = (L L^T)^{-1}``.

    ``L`` is lower triangular with the sparsity pattern of the lower triangle of ``A``.
    The factorisation and the two triangular solves are compiled Numba kernels, linear
    in the number of nonzeros. They run on the host: torch tensors and CuPy arrays are
    copied to NumPy (zero-copy for CPU tensors) and back.

    Parameters
    ----------
    A : operator or matrix
        Symmetric positive definite with a CSR form (see :class:`AMG`); only its lower
        triangle is read.
    shift : float, default 0.0
        Factor ``A + shift · diag(A)`` instead of ``A`` (Manteuffel's shift). IC(0)
        exists without a shift for M-matrices (e.g. Poisson matrices); for other SPD
        matrices a pivot may become non-positive, and a small shift (1e-3 to 1e-1)
        restores it.

    Attributes
    ----------
    factor : scipy.sparse.csr_matrix
        ``L``.
    setup_time : float
        Seconds spent in the constructor (including CSR assembly).

    Raises
    ------
    ValueError
        If a pivot is not positive (naming the row and suggesting ``shift``), or a
        diagonal entry is missing.
    TypeError
        If ``A`` has no CSR form or is complex.

    Notes
    -----
    IC(0) computes ``L`` row by row such that ``(L L^T)_{ij} = A_{ij}`` for every
    ``(i, j)`` in the pattern of ``A`` (Saad, Alg. 10.4 transposed):

    .. math::

        L_{ik} = \\Big(A_{ik} - \\sum_{j<k} L_{ij} L_{kj}\\Big) / L_{kk}, \\qquad
        L_{ii} = \\Big(A_{ii} - \\sum_{j<i} L_{ij}^2\\Big)^{1/2},

    the sums running over the pattern. Applying ``M`` is a forward substitution with
    ``L`` followed by a backward substitution with ``L^T``. The kernels are sequential:
    on a 7-point Poisson matrix an application costs about two sparse products.

    References
    ----------
    .. [1] J. A. Meijerink and H. A. van der Vorst, "An iterative solution method for
       linear systems of which the coefficient matrix is a symmetric M-matrix",
       Math. Comp. 31 (1977).
    .. [2] Y. Saad, *Iterative Methods for Sparse Linear Systems*, 2nd ed., SIAM, 2003,
       §10.3.
    .. [3] T. A. Manteuffel, "An incomplete factorization technique for positive definite
       linear systems", Math. Comp. 34 (1980).

    Examples
    --------
    >>> import numpy as np
    >>> import scipy.sparse as sp
    >>> from physnet.solvers import IncompleteCholesky, cg
    >>> T = sp.diags([-1.0, 2.0, -1.0], [-1, 0, 1], shape=(30, 30))
    >>> A = sp.kronsum(T, T, format="csr")
    >>> x, info = cg(A, np.ones(A.shape[0]), M=IncompleteCholesky(A), rtol=1e-8)
    >>> info
    0
    """

    hermitian = True

    def __init__(self, A: Any, *, shift: float = 0.0) -> None:
        start = time.perf_counter()
        shift = float(shift)
        if not shift >= 0:
            raise ValueError(f"IncompleteCholesky: shift must be >= 0, got {shift}")
        csr = _csr_of(A, "IncompleteCholesky")
        indptr, indices, data = _incomplete_cholesky.lower_triangle(csr)
        row = _incomplete_cholesky.factorize(indptr, indices, data, shift)
        if row <= -2:
            raise ValueError(
                f"IncompleteCholesky: row {-row - 2} of A has no diagonal entry; "
                "expected a symmetric positive definite matrix"
            )
        if row >= 0:
            raise ValueError(
                f"IncompleteCholesky: IC(0) breaks down at row {row} (pivot <= 0) with "
                f"shift={shift}; A may not be positive definite, or pass a diagonal shift "
                "such as shift=1e-2"
            )
        self._indptr, self._indices, self._data = indptr, indices, data
        self.shift = shift
        self.shape = csr.shape
        # The factor is kept in float64; results come in the precision of A and the operand.
        self.dtype = csr.dtype if csr.dtype.kind == "f" else np.dtype(np.float64)
        self.setup_time = time.perf_counter() - start

    @property
    def factor(self) -> scipy.sparse.csr_matrix:
        """The incomplete Cholesky factor ``L`` (lower triangular, CSR)."""
        return scipy.sparse.csr_matrix((self._data, self._indices, self._indptr), shape=self.shape)

    def _solve(self, r: np.ndarray) -> np.ndarray:
        if r.dtype.kind == "c":
            raise TypeError("IncompleteCholesky: complex operands are not supported")
        z = np.array(r, dtype=np.float64)  # a fresh copy the kernel overwrites
        _incomplete_cholesky.solve_in_place(self._indptr, self._indices, self._data, z)
        return z.astype(np.result_type(self.dtype, r.dtype), copy=False)

    def _matvec(self, x: Any) -> Any:
        return _host_apply(self._solve, x)


@contextlib.contextmanager
def _legacy_random_state(seed: int) -> Iterator[None]:
    """Seed NumPy's legacy global generator for the block, then restore its state."""
    state = np.random.get_state()  # noqa: NPY002 - pyamg draws from the legacy global state
    np.random.seed(seed)  # noqa: NPY002
    try:
        yield
    finally:
        np.random.set_state(state)  # noqa: NPY002
