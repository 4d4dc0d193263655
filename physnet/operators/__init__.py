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
from physnet.operators.radar import NearFieldMIMO, cross_array, linear_frequencies, voxel_grid

__all__ = [
    "AIR",
    "FLUID",
    "SOLID",
    "CallableOperator",
    "GridPoisson",
    "LinearOperator",
    "MatrixOperator",
    "NearFieldMIMO",
    "ScipyOperator",
    "aslinearoperator",
    "cross_array",
    "linear_frequencies",
    "masked_poisson",
    "voxel_grid",
]
