"""Solvers: anything that turns (operator, right-hand side) into a solution."""

from physnet.solvers._result import SolveResult, Status

__all__ = ["SolveResult", "Status"]
