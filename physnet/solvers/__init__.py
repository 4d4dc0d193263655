"""Solvers: anything that turns (operator, right-hand side) into a solution.

- :func:`cg` and :func:`fcg` keep SciPy's Krylov contract, ``(x, info)``;
- :func:`solve` runs any registered method and returns a :class:`SolveResult`;
  :func:`register_method` adds one, :func:`available_methods` lists them;
- :func:`backprojection`, :func:`tikhonov` and :func:`admm_tv` are inverse-problem
  baselines (:mod:`physnet.solvers.inverse`);
- :class:`Jacobi`, :class:`AMG`, :class:`IncompleteCholesky` and
  :class:`AggregationMultigrid` (Galerkin aggregation multigrid on grids) are preconditioners
  (linear operators approximating ``A^{-1}``) for either.

Every method stops on the same rule, ``||b - A x||_2 <= max(rtol ||b||_2, atol)``,
decided on the true residual.
"""

from physnet.solvers._result import SolveResult, Status
from physnet.solvers._solve import Method, available_methods, register_method, solve
from physnet.solvers.cg import cg
from physnet.solvers.dcdm import dcdm
from physnet.solvers.fcg import fcg
from physnet.solvers.inverse import admm_tv, backprojection, operator_norm, tikhonov
from physnet.solvers.multigrid import AggregationMultigrid
from physnet.solvers.preconditioners import AMG, IncompleteCholesky, Jacobi

__all__ = [
    "AMG",
    "AggregationMultigrid",
    "IncompleteCholesky",
    "Jacobi",
    "Method",
    "SolveResult",
    "Status",
    "admm_tv",
    "available_methods",
    "backprojection",
    "cg",
    "dcdm",
    "fcg",
    "operator_norm",
    "register_method",
    "solve",
    "tikhonov",
]
