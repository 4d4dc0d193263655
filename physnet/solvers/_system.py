"""The boundary of every solver: validation of the system, and the one stopping rule.

Every public solver (:func:`~physnet.solvers.cg`, :func:`~physnet.solvers.fcg`,
:func:`~physnet.solvers.solve`) calls :func:`make_system` once, before iterating, and
then trusts what it returns. The iteration cores never validate again.

The stopping rule is the same for every method:

.. math:: \\|b - A x\\|_2 \\le \\max(\\mathrm{rtol}\\,\\|b\\|_2,\\ \\mathrm{atol}),

tested with :func:`meets_tolerance` on the *true* residual (:func:`true_residual`) before
a solver reports convergence. :class:`Monitor` ends an iteration that can no longer meet
it (the precision's accuracy floor, or a plateau) instead of letting it run to ``maxiter``.
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
    "Monitor",
    "as_preconditioner",
    "conclude",
    "device_norm",
    "info_code",
    "make_system",
    "meets_tolerance",
    "research_maxiter",
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
    x0_is_mb : bool
        True when ``x0="Mb"`` was given: the core starts from ``M b`` (see
        :func:`start_from_mb`).
    progress : callable or None
        ``progress(iterations, residual_norm)``, called by the cores after each iteration
        with host numbers they already hold (no extra synchronisation).
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
    x0_is_mb: bool = False
    progress: Callable[[int, float], None] | None = None


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
    info: dict = field(default_factory=dict)


def info_code(iteration: Iteration) -> int:
    """SciPy's ``info``: 0 converged, -1 breakdown, else the number of iterations done.

    An iteration that ended without convergence but without a breakdown (``maxiter`` ran
    out, the accuracy floor or a plateau was reached) reports its iteration count, at
    least 1, as SciPy does when ``maxiter`` runs out.
    """
    if iteration.status.stalled:
        return max(iteration.iterations, 1)
    return iteration.status.info


def research_maxiter(n: int) -> int:
    """The default ``maxiter`` of :func:`~physnet.solvers.solve`: ``min(10 n, max(1000, 20 √n))``.

    SciPy's ``10 n`` is the finite-termination bound of exact arithmetic with a margin;
    for a grid of ``64^3`` cells it is 2.6 million iterations, hours of a stalled solve.
    CG needs about ``sqrt(cond(A))`` iterations, and a second-order operator on a grid of
    ``N^d`` cells has ``cond ~ N^2``, so ``sqrt(cond) ~ N = n^(1/d) <= sqrt(n)`` for
    ``d >= 2``: ``20 sqrt(n)`` leaves a factor of several over what an unpreconditioned
    CG needs for ``rtol = 1e-10`` on a 2-D grid.

    Examples
    --------
    >>> research_maxiter(50), research_maxiter(64**3), research_maxiter(128**2)
    (500, 10240, 2560)
    """
    return int(min(10 * n, max(1000, 20 * math.ceil(math.sqrt(n)))))


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
    if value is None or (isinstance(value, str) and value == "legacy"):
        # SciPy removed atol=None and atol="legacy" in 1.14 and raises ValueError for them.
        raise ValueError(
            f"{name}: {argument}={value!r} is not supported (SciPy removed it); "
            f"expected a non-negative number, e.g. {argument}=0.0"
        )
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
    default_maxiter: Callable[[int], int] | None = None,
    allow_mb: bool = False,
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
    x0 : array or "Mb", optional
        Initial guess, same shape rules and the same array kind and device as ``b``;
        with ``allow_mb``, the string ``"Mb"`` (SciPy's "start from ``M @ b``"), which
        the core resolves with :func:`start_from_mb` once it knows ``M``.
    rtol, atol : float
        Non-negative tolerances of the stopping rule (``atol=None`` and
        ``atol="legacy"``, removed from SciPy, raise ValueError as there).
    maxiter : int, optional
        Positive; ``default_maxiter(n)`` by default, else ``10 n`` as in SciPy.
    callback : callable, optional
        Only checked to be callable.
    default_maxiter : callable, optional
        ``n -> maxiter`` when ``maxiter`` is None (e.g. :func:`research_maxiter`).
    allow_mb : bool, default False
        Accept ``x0="Mb"``.

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
    x0_is_mb = isinstance(x0, str)
    if x0_is_mb:
        if not allow_mb or x0 != "Mb":
            expected = "an array or the string 'Mb'" if allow_mb else "an array"
            raise ValueError(f"{name}: x0={x0!r} is not supported; expected {expected}")
        x0 = None
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
        maxiter = 10 * n if default_maxiter is None else default_maxiter(n)
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
        x0_is_mb=x0_is_mb,
    )


def start_from_mb(system: KrylovSystem, preconditioner: Callable[[Any], Any] | None) -> None:
    """Resolve ``x0="Mb"``: the initial guess becomes ``M b`` (``b`` without ``M``), as in SciPy."""
    if not system.x0_is_mb:
        return
    be = system.backend
    start = system.b if preconditioner is None else preconditioner(system.b)
    system.x = be.copy(be.asarray(start, dtype=system.dtype).reshape(-1))
    system.x0_is_zero = False
    system.x0_is_mb = False


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
    info: dict | None = None,
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
        x=x,
        status=status,
        iterations=iterations,
        residuals=residuals,
        residual=residual,
        info=dict(info or {}),
    )


class Monitor:
    """Ends an iteration that can no longer meet the stopping rule; reports progress.

    The Krylov cores call :meth:`true_residual` whenever they compute ``||b - A x||``
    where they held the recursively updated residual (a convergence check, a refresh),
    and :meth:`iteration` after every iteration. Neither rule fires on an iteration that
    converges in exact arithmetic, so a healthy solve is never cut short.

    Parameters
    ----------
    system : KrylovSystem
    initial_residual : float
        ``||r_0||``.
    plateau : bool, default False
        Apply the plateau rule too (for nonlinear preconditioners, which carry no
        convergence guarantee; CG with a fixed preconditioner converges in exact
        arithmetic, and its residual norm may rise for many iterations before it falls).

    Notes
    -----
    **Accuracy floor** (status ``ACCURACY_LIMIT``). The recursion
    ``r_{k+1} = r_k - alpha_k A p_k`` is exact up to rounding, so where the true residual
    disagrees with it, the difference is the rounding error accumulated in ``x``: about
    ``eps ||A|| ||x||`` times a modest factor, about ``1e-4 ||b||`` for a float32 Poisson
    grid of ``64^3`` cells. The recursive residual keeps falling past that floor, the
    true one cannot. A *drift event* is a true residual that fails the rule at a
    convergence check (the recursion had met it), or that exceeds
    ``drift_factor = 2`` times the recursive one at a refresh. After ``patience = 3``
    drift events in a row whose true residual did not halve, the iteration stops and
    returns the iterate with the smallest true residual seen at them; the relative
    residual reached is ``info["accuracy_floor"]``.

    **Plateau** (status ``PLATEAU``, only with ``plateau=True``). With ``best(k)`` the
    smallest residual norm of the first ``k`` iterations, the iteration stops at
    ``k >= plateau_start = 200`` if ``best(k) > 0.9 best(k // 2)``: the second half of
    the iterations did not improve on the first by 10%.
    """

    drift_factor = 2.0
    patience = 3
    plateau_start = 200
    plateau_improvement = 0.9

    def __init__(self, system: KrylovSystem, initial_residual: float, *, plateau: bool = False):
        self.system = system
        self.plateau = plateau
        self._anchor = math.inf  # the true residual that opened the current streak
        self._streak = 0
        self._best_true = math.inf
        self._best_x: Any = None
        self._prefix_min = [initial_residual]

    def true_residual(
        self, x: Any, true_norm: float, recursive_norm: float, *, check: bool
    ) -> Status | None:
        """Record a true residual; ``ACCURACY_LIMIT`` if the floor is reached."""
        if not (check or true_norm > self.drift_factor * recursive_norm):
            return None
        if true_norm < self._best_true:
            self._best_true = true_norm
            self._best_x = self.system.backend.copy(x)
        if true_norm < 0.5 * self._anchor:
            self._anchor, self._streak = true_norm, 1
        else:
            self._streak += 1
        return Status.ACCURACY_LIMIT if self._streak >= self.patience else None

    def iteration(self, iterations: int, residual_norm: float) -> Status | None:
        """Record iteration ``iterations``'s residual norm; ``PLATEAU`` if enabled and met."""
        if self.system.progress is not None:
            self.system.progress(iterations, residual_norm)
        if not self.plateau:
            return None
        best = min(self._prefix_min[-1], residual_norm)
        self._prefix_min.append(best)
        if (
            iterations >= self.plateau_start
            and best > self.plateau_improvement * self._prefix_min[iterations // 2]
        ):
            return Status.PLATEAU
        return None

    def solution(self, x: Any, status: Status) -> Any:
        """The iterate to return: the best one seen at a drift event after ``ACCURACY_LIMIT``."""
        if status is Status.ACCURACY_LIMIT and self._best_x is not None:
            return self._best_x
        return x

    def info(self) -> dict:
        """``{"accuracy_floor": ||b - A x|| / ||b||}`` at the best drift event, if any."""
        if math.isinf(self._best_true) or self.system.rhs_norm == 0:
            return {}
        return {"accuracy_floor": self._best_true / self.system.rhs_norm}
