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

import os
from importlib.metadata import PackageNotFoundError, version

# physnet runs several thread pools in one process: numba's (the stencil kernels), torch's
# and OpenBLAS's. Their OpenMP workers busy-wait after each parallel region by default and
# then steal the cores from the next pool: a 64^3 DCDM solve (numba stencil + torch network
# in turn) took 5.2 s instead of 0.36 s on 2 cores. Sleeping workers cost microseconds. The
# setting takes effect for OpenMP runtimes loaded after this import (import physnet before
# torch, or export OMP_WAIT_POLICY yourself); a value the user set is kept.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# numba caches the compiled stencil and factorisation kernels (cache=True) beside their
# sources by default: inside site-packages, which may be read-only or shared between
# environments. They go to the user's cache instead; read when numba is first imported
# (import physnet first, or export NUMBA_CACHE_DIR yourself); a value the user set is kept.
os.environ.setdefault(
    "NUMBA_CACHE_DIR", os.path.join(os.path.expanduser("~"), ".cache", "physnet", "numba")
)


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
