"""Linear operators: they know shape, dtype, apply and adjoint, never how to solve.

Grid operators also expose ``to_csr()``, an exact SciPy matrix (for pyamg and SciPy).
"""

from physnet.operators.base import (
    CallableOperator,
    LinearOperator,
    MatrixOperator,
    ScipyOperator,
    aslinearoperator,
)
from physnet.operators.masked import masked_poisson
from physnet.operators.poisson import AIR, FLUID, SOLID, GridPoisson

__all__ = [
    "AIR",
    "FLUID",
    "SOLID",
    "CallableOperator",
    "GridPoisson",
    "LinearOperator",
    "MatrixOperator",
    "ScipyOperator",
    "aslinearoperator",
    "masked_poisson",
]
