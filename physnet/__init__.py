"""physnet: learned physics solvers.

Classical numerical machinery (matrix-free operators, Krylov methods, multigrid)
fused with neural components, over NumPy/SciPy, PyTorch and CuPy arrays.

Examples
--------
>>> import numpy as np
>>> import physnet
>>> flags = np.zeros((8, 8), dtype=np.int8)
>>> A = physnet.GridPoisson(flags)
>>> b = np.ones(A.shape[0])
>>> result = physnet.solve(A, b - b.mean(), method="cg", rtol=1e-8)
>>> result.converged
True
"""

from importlib.metadata import PackageNotFoundError, version

from physnet.operators import GridPoisson, LinearOperator, aslinearoperator
from physnet.solvers import SolveResult, cg, solve

try:
    __version__ = version("physnet")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0+unknown"

__all__ = [
    "GridPoisson",
    "LinearOperator",
    "SolveResult",
    "__version__",
    "aslinearoperator",
    "cg",
    "solve",
]
