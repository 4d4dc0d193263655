"""Solvers: anything that turns (operator, right-hand side) into a solution.

- :func:`cg` and :func:`fcg` keep SciPy's Krylov contract, ``(x, info)``;
- :func:`solve` runs any registered method and returns a :class:`SolveResult`;
  :func:`register_method` adds one, :func:`available_methods` lists them;
- :class:`Jacobi`, :class:`AMG` and :class:`IncompleteCholesky` are preconditioners
  (linear operators approximating ``A^{-1}``) for either.

Every method stops on the same rule, ``||b - A x||_2 <= max(rtol ||b||_2, atol)``,
decided on the true residual.
"""

from physnet.solvers._result import SolveResult, Status
from physnet.solvers._solve import Method, available_methods, register_method, solve
from physnet.solvers.cg import cg
from physnet.solvers.dcdm import dcdm
from physnet.solvers.fcg import fcg
from physnet.solvers.preconditioners import AMG, IncompleteCholesky, Jacobi

__all__ = [
    "AMG",
    "IncompleteCholesky",
    "Jacobi",
    "Method",
    "SolveResult",
    "Status",
    "available_methods",
    "cg",
    "dcdm",
    "fcg",
    "register_method",
    "solve",
]
