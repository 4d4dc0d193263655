"""The research-API result of a solve, with statuses that read as messages."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["SolveResult", "Status"]


class Status(enum.Enum):
    """Why a solver stopped. The value of each member is a readable message."""

    CONVERGED = "converged"
    MAX_ITERATIONS = "maximum number of iterations reached without convergence"
    NOT_POSITIVE_DEFINITE = "not positive definite: a search direction p has p^T A p <= 0"
    PRECONDITIONER_NOT_POSITIVE_DEFINITE = "preconditioner not positive definite: r^T M r <= 0"
    NON_FINITE = "breakdown: NaN or Inf appeared in the iteration"
    STAGNATION = "stagnation: the search direction vanished before convergence"
    ACCURACY_LIMIT = (
        "accuracy limit: the true residual stopped decreasing at the floor of the "
        "floating-point precision while the recursively updated one went on; rtol/atol "
        "ask for more than this dtype can reach on this system (see info['accuracy_floor']; "
        "use float64 or a looser rtol)"
    )
    PLATEAU = (
        "plateau: the residual stopped decreasing (no 10% improvement over the last half "
        "of the iterations); the search directions no longer reduce the error"
    )
    INCOMPATIBLE = (
        "incompatible right-hand side: the operator is singular (a fluid region touches "
        "no air cell) and b has a component in its null space (a nonzero sum over such a "
        "region), so A x = b has no solution; x is the least-squares solution"
    )

    @property
    def info(self) -> int:
        """SciPy's ``info`` code for this status when no iteration count applies.

        ``0`` for convergence and ``-1`` for a breakdown. The maximum-iterations,
        accuracy-limit, plateau and incompatible cases are not breakdowns: the solvers
        report them as the iteration count (``> 0``), as SciPy does for an iteration that
        ended without convergence.
        """
        return 0 if self is Status.CONVERGED else -1

    @property
    def stalled(self) -> bool:
        """True for the statuses that mean "ended without convergence", not a breakdown."""
        return self in (
            Status.MAX_ITERATIONS,
            Status.ACCURACY_LIMIT,
            Status.PLATEAU,
            Status.INCOMPATIBLE,
        )

    def __str__(self) -> str:
        return self.value


@dataclass
class SolveResult:
    """Result of :func:`physnet.solvers.solve`.

    Attributes
    ----------
    x : array
        The solution, of the caller's array kind and device.
    status : Status
        Why the solver stopped; ``str(status)`` reads as a message.
    iterations : int
        Number of iterations performed.
    residuals : numpy.ndarray
        Euclidean norms of the residual, starting with the initial residual
        (``iterations + 1`` entries for the solvers that track them every iteration).
    setup_time, solve_time : float
        Seconds spent building the method (preconditioner hierarchy, factorisation,
        network load) and iterating.
    method : str
        The method's name as given to :func:`~physnet.solvers.solve`.
    residual : float
        The true residual norm ``||b - A x||`` at exit.
    rhs_norm : float
        ``||b||``, against which relative residuals are measured.
    info : dict
        Method-specific extras (e.g. AMG levels and operator complexity); also
        ``accuracy_floor`` (the relative residual at which the true residual stopped
        following the recursive one, see ``Status.ACCURACY_LIMIT``) and, for a singular
        grid operator, ``singular``, ``floating_regions`` and ``null_space_component``
        (see :func:`~physnet.solvers.solve`).
    """

    x: Any
    status: Status
    iterations: int
    residuals: np.ndarray
    setup_time: float
    solve_time: float
    method: str = ""
    residual: float = float("nan")
    rhs_norm: float = float("nan")
    info: dict = field(default_factory=dict)

    @property
    def converged(self) -> bool:
        """True when the common stopping rule was met at exit."""
        return self.status is Status.CONVERGED

    @property
    def relative_residual(self) -> float:
        """``||b - A x|| / ||b||`` at exit (0 for a zero right-hand side)."""
        return self.residual / self.rhs_norm if self.rhs_norm > 0 else 0.0

    def summary(self) -> dict:
        """JSON-ready scalars: method, converged, status, iterations, residual, times."""
        return {
            "method": self.method,
            "converged": self.converged,
            "status": str(self.status),
            "iterations": int(self.iterations),
            "residual": float(self.residual),
            "relative_residual": float(self.relative_residual),
            "setup_time": float(self.setup_time),
            "solve_time": float(self.solve_time),
        }

    def __repr__(self) -> str:
        return (
            f"SolveResult(method={self.method!r}, status={self.status.value!r}, "
            f"iterations={self.iterations}, relative_residual={self.relative_residual:.3e}, "
            f"setup_time={self.setup_time:.3g}s, solve_time={self.solve_time:.3g}s)"
        )
