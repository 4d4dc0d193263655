"""The boundary of every solver: validation of the system, and the one stopping rule.

Every public solver (:func:`~physnet.solvers.cg`, :func:`~physnet.solvers.fcg`,
:func:`~physnet.solvers.solve`) calls :func:`make_system` once, before iterating, and
then trusts what it returns. The iteration cores never validate again.

The stopping rule is the same for every method:

.. math:: \\|b - A x\\|_2 \\le \\max(\\mathrm{rtol}\\,\\|b\\|_2,\\ \\mathrm{atol}),

tested with :func:`meets_tolerance` on the *true* residual (:func:`true_residual`) before
a solver reports convergence.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse
import scipy.sparse.linalg

from physnet import backend
from physnet.operators.base import LinearOperator, aslinearoperator
from physnet.solvers._result import Status

__all__ = [
    "Iteration",
    "KrylovSystem",
    "as_preconditioner",
    "conclude",
    "device_norm",
    "info_code",
    "make_system",
    "meets_tolerance",
    "to_host",
    "true_residual",
    "zero_solution",
]


@dataclass
class KrylovSystem:
    """A validated linear system, ready for an iteration core.

    Attributes
    ----------
    name : str
        The public function that was called, for messages.
    A : LinearOperator
        The square operator.
    b : array
        The right-hand side, 1-D, of the solver dtype and the caller's kind and device.
    x : array
        The initial guess: a fresh array the core may update in place (zeros without
        ``x0``), so the caller's ``x0`` is never modified.
    x0_is_zero : bool
        True when no ``x0`` was given: the initial residual is ``b`` itself.
    backend : physnet.backend.Backend
    dtype : numpy.dtype
        The solver dtype (SciPy's promotion of ``A.dtype`` and ``b.dtype``).
    rhs_norm : float
        ``||b||_2``.
    threshold : float
        ``max(rtol * ||b||_2, atol)``.
    maxiter : int
    """

    name: str
    A: LinearOperator
    b: Any
    x: Any
    x0_is_zero: bool
    backend: backend.Backend
    dtype: np.dtype
    rhs_norm: float
    threshold: float
    maxiter: int


@dataclass
class Iteration:
    """What an iteration core returns: the iterate and why it stopped.

    ``residuals`` holds ``||r_0||`` followed by one norm per completed iteration (the
    recursively updated residual, replaced by the true one where it was recomputed);
    ``residual`` is the true residual norm ``||b - A x||_2`` at exit.
    """

    x: Any
    status: Status
    iterations: int
    residuals: list[float] = field(default_factory=list)
    residual: float = float("nan")


def info_code(iteration: Iteration) -> int:
    """SciPy's ``info``: 0 converged, the iteration count if ``maxiter`` ran out, -1 breakdown."""
    if iteration.status is Status.MAX_ITERATIONS:
        return iteration.iterations
    return iteration.status.info


def meets_tolerance(residual_norm: float, threshold: float) -> bool:
    """The one stopping rule: ``||b - A x|| <= max(rtol ||b||, atol)`` (False for NaN)."""
    return residual_norm <= threshold


def true_residual(system: KrylovSystem, x: Any) -> tuple[Any, float]:
    """``r = b - A x`` as a new array and its Euclidean norm (one synchronisation)."""
    r = system.b - system.A.matvec(x)
    return r, system.backend.norm(r)


def _shape(x: Any) -> tuple[int, ...]:
    return tuple(int(s) for s in x.shape)


def _check_dtype(name: str, argument: str, x: Any) -> np.dtype:
    try:
        dtype = backend.numpy_dtype(x.dtype)
    except TypeError as exc:  # e.g. torch.bfloat16 has no NumPy counterpart
        raise TypeError(
            f"{name}: {argument} has dtype {x.dtype}, expected a float, complex or integer dtype"
        ) from exc
    if dtype.kind not in "iufc":
        raise TypeError(
            f"{name}: {argument} has dtype {dtype}, expected a float, complex or integer dtype"
        )
    return dtype


def _solver_dtype(*dtypes: np.dtype) -> np.dtype:
    """SciPy's ``make_system`` promotion: non-(single/double) types become float64."""
    promoted = []
    for dtype in dtypes:
        dtype = np.dtype(dtype)
        if dtype.char not in "fdFD":
            dtype = np.dtype(np.complex128 if dtype.kind == "c" else np.float64)
        promoted.append(dtype)
    return np.result_type(*promoted)


def _as_vector(name: str, argument: str, x: Any, n: int) -> Any:
    """``x`` as an array of its own kind, checked to have shape ``(n,)`` or ``(n, 1)``."""
    if backend.array_kind(x) == "numpy":
        x = np.asarray(x)
    elif backend.array_kind(x) == "torch":
        x = x.detach()
    shape = _shape(x)
    if shape not in ((n,), (n, 1)):
        raise ValueError(
            f"{name}: {argument} has shape {shape}, expected ({n},) or ({n}, 1) "
            f"to match A of shape ({n}, {n})"
        )
    return x


def _check_tolerance(name: str, argument: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name}: {argument} must be a real number, got {value!r}")
    value = float(value)
    if math.isnan(value) or value < 0:
        raise ValueError(f"{name}: {argument} must be a non-negative number, got {value}")
    return value


def make_system(
    name: str,
    A: Any,
    b: Any,
    x0: Any = None,
    *,
    rtol: Any = 1e-5,
    atol: Any = 0.0,
    maxiter: Any = None,
    callback: Any = None,
) -> KrylovSystem:
    """Validate a linear system at the boundary of the public function ``name``.

    Parameters
    ----------
    name : str
        The public function, named in every error message (``"cg"``, ``"solve"``...).
    A : operator
        Anything :func:`physnet.operators.aslinearoperator` accepts; must be square.
    b : array, shape (n,) or (n, 1)
        NumPy array (or array-like), torch tensor or CuPy array.
    x0 : array, optional
        Initial guess, same shape rules and the same array kind and device as ``b``.
    rtol, atol : float
        Non-negative tolerances of the stopping rule.
    maxiter : int, optional
        Positive; ``10 n`` by default, as in SciPy.
    callback : callable, optional
        Only checked to be callable.

    Returns
    -------
    KrylovSystem

    Raises
    ------
    ValueError
        Non-square ``A``; ``b`` or ``x0`` of the wrong shape; NaN or Inf in ``b`` or
        ``x0``; negative or NaN tolerances; ``maxiter < 1``; arrays on different devices.
    TypeError
        ``b`` or ``x0`` of a non-numeric or boolean dtype; arrays of different kinds; an
        ``A`` that is not an operator; a ``callback`` that is not callable.

    Notes
    -----
    The solver dtype follows SciPy's ``make_system``: integer (and half-precision)
    inputs are promoted to float64, then ``A.dtype`` and ``b.dtype`` are combined with
    :func:`numpy.result_type`. ``x0`` is cast to that dtype.
    """
    try:
        A = aslinearoperator(A)
    except TypeError as exc:
        raise TypeError(f"{name}: A is not a linear operator: {exc}") from None
    m, n = (int(s) for s in A.shape)
    if m != n:
        raise ValueError(f"{name}: A has shape ({m}, {n}), expected a square operator (n, n)")

    b = _as_vector(name, "b", b, n)
    if x0 is not None:
        x0 = _as_vector(name, "x0", x0, n)
    try:
        be = backend.get_backend(b, x0)
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"{name}: b and x0 must be arrays of one kind and device: {exc}") from None

    b_dtype = _check_dtype(name, "b", b)
    dtype = _solver_dtype(backend.numpy_dtype(A.dtype), b_dtype)
    if x0 is not None:
        x0_dtype = _check_dtype(name, "x0", x0)
        if x0_dtype.kind == "c" and dtype.kind != "c":
            raise TypeError(
                f"{name}: x0 has complex dtype {x0_dtype} but the system is real ({dtype})"
            )

    b = be.asarray(b, dtype=dtype).reshape(-1)
    if not be.all_finite(b):
        raise ValueError(f"{name}: b contains NaN or Inf values; expected finite values")
    if x0 is None:
        x = be.zeros(n, dtype)
    else:
        x = be.copy(be.asarray(x0, dtype=dtype).reshape(-1))
        if not be.all_finite(x):
            raise ValueError(f"{name}: x0 contains NaN or Inf values; expected finite values")

    rtol = _check_tolerance(name, "rtol", rtol)
    atol = _check_tolerance(name, "atol", atol)
    if maxiter is None:
        maxiter = 10 * n
    elif isinstance(maxiter, bool) or not isinstance(maxiter, numbers.Integral):
        raise TypeError(f"{name}: maxiter must be an integer, got {maxiter!r}")
    elif maxiter < 1:
        raise ValueError(f"{name}: maxiter must be at least 1, got {maxiter}")
    if callback is not None and not callable(callback):
        raise TypeError(f"{name}: callback must be callable, got {type(callback).__name__}")

    rhs_norm = be.norm(b)
    return KrylovSystem(
        name=name,
        A=A,
        b=b,
        x=x,
        x0_is_zero=x0 is None,
        backend=be,
        dtype=dtype,
        rhs_norm=rhs_norm,
        threshold=max(rtol * rhs_norm, atol),
        maxiter=int(maxiter),
    )


def as_preconditioner(
    name: str, M: Any, shape: tuple[int, int], *, allow_callable: bool = False
) -> Callable[[Any], Any] | None:
    """The apply function ``r -> M r`` of a preconditioner, checked against ``A``'s shape.

    Parameters
    ----------
    name : str
        The public function, for messages.
    M : operator or callable or None
        Anything :func:`physnet.operators.aslinearoperator` accepts (a physnet operator,
        a SciPy sparse matrix, a :class:`scipy.sparse.linalg.LinearOperator` such as
        pyamg's ``aspreconditioner()``) or, with ``allow_callable``, any callable
        ``r -> z`` (possibly nonlinear).
    shape : tuple of int
        ``A.shape``.

    Returns
    -------
    callable or None
        None when ``M`` is None (no preconditioning).
    """
    if M is None:
        return None
    is_operator = isinstance(
        M, (LinearOperator, np.ndarray, scipy.sparse.linalg.LinearOperator)
    ) or scipy.sparse.issparse(M)
    if not is_operator:
        if allow_callable and callable(M):
            return M
        expected = "a linear operator" + (" or a callable r -> z" if allow_callable else "")
        raise TypeError(f"{name}: M of type {type(M).__name__} is not {expected}")
    M = aslinearoperator(M)
    if tuple(M.shape) != tuple(shape):
        raise ValueError(f"{name}: M has shape {tuple(M.shape)}, expected {tuple(shape)} like A")
    return M.matvec


def zero_solution(system: KrylovSystem) -> Iteration:
    """The exact answer to ``A x = 0``: zeros, at once, whatever ``x0`` was."""
    x = system.backend.zeros(system.b.shape[0], system.dtype)
    return Iteration(x=x, status=Status.CONVERGED, iterations=0, residuals=[0.0], residual=0.0)


def device_norm(be: backend.Backend, x: Any) -> Any:
    """``||x||_2`` left on the device (a 0-d array), to be read with :func:`to_host`."""
    if be.kind == "torch":
        return be.xp.linalg.vector_norm(x)
    return be.xp.linalg.norm(x)


def to_host(be: backend.Backend, *scalars: Any) -> list[float]:
    """Real parts of device scalars as Python floats, in one transfer (one synchronisation)."""
    if be.kind == "numpy":
        return [float(np.real(s)) for s in scalars]
    xp = be.xp
    if be.kind == "torch":
        stacked = xp.stack([xp.real(s).to(xp.float64) for s in scalars])
    else:
        stacked = xp.stack([xp.real(s).astype(xp.float64) for s in scalars])
    return [float(v) for v in stacked.tolist()]


def conclude(
    system: KrylovSystem,
    x: Any,
    status: Status,
    iterations: int,
    residuals: list[float],
    residual: float | None = None,
) -> Iteration:
    """Decide the exit status on the true residual and package an :class:`Iteration`.

    ``residual`` is the true residual norm of ``x`` when the core has just computed it.
    Whatever the core's reason to stop, an ``x`` that meets the stopping rule is reported
    as converged, and a core's ``CONVERGED`` is only ever based on a true residual.
    """
    if residual is None:
        _, residual = true_residual(system, x)
    if meets_tolerance(residual, system.threshold):
        status = Status.CONVERGED
    elif status is Status.CONVERGED:
        status = Status.MAX_ITERATIONS
    return Iteration(
        x=x, status=status, iterations=iterations, residuals=residuals, residual=residual
    )
