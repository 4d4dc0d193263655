"""Finite elements for the wave equation: triangle meshes, P1 assembly, an explicit wave
simulator, XDMF output and interpolation onto regular grids.

Everything here needs only NumPy and SciPy (meshio for reading meshes and writing XDMF).

Examples
--------
>>> import numpy as np
>>> from physnet.fem import GridInterpolator, RickerSource, WaveSimulator, rectangle_mesh
>>> mesh = rectangle_mesh((1.0, 1.0), 0.05, holes=[(0.7, 0.7, 0.1)])
>>> simulator = WaveSimulator(mesh, speed=1.0, boundary={"holes": "neumann",
...     "bottom": "absorbing", "right": "absorbing", "top": "absorbing", "left": "absorbing"})
>>> solution = simulator.run([0.3, 0.4], sources=[RickerSource((0.3, 0.3), 8.0)])
>>> GridInterpolator(mesh, (16, 16))(solution.values).shape
(2, 16, 16)
"""

from physnet.fem.io import GridInterpolator, write_xdmf
from physnet.fem.mesh import TriangleMesh, read_mesh, rectangle_mesh, structured_rectangle_mesh
from physnet.fem.p1 import (
    barycentric_gradients,
    boundary_mass,
    locate_points,
    lumped_mass,
    point_load,
    stiffness_matrix,
)
from physnet.fem.wave import (
    BOUNDARY_CONDITIONS,
    RickerSource,
    WaveSimulator,
    WaveSolution,
    ricker,
)

__all__ = [
    "BOUNDARY_CONDITIONS",
    "GridInterpolator",
    "RickerSource",
    "TriangleMesh",
    "WaveSimulator",
    "WaveSolution",
    "barycentric_gradients",
    "boundary_mass",
    "locate_points",
    "lumped_mass",
    "point_load",
    "read_mesh",
    "rectangle_mesh",
    "ricker",
    "stiffness_matrix",
    "structured_rectangle_mesh",
    "write_xdmf",
]
