"""Finite-element fields out: XDMF time series (ParaView) and interpolation onto regular grids.

Examples
--------
>>> import numpy as np
>>> from physnet.fem import GridInterpolator, structured_rectangle_mesh
>>> mesh = structured_rectangle_mesh(4)
>>> to_grid = GridInterpolator(mesh, (2, 2))
>>> to_grid(mesh.points[:, 0] + 2 * mesh.points[:, 1])      # linear: reproduced exactly
array([[0.75, 1.25],
       [1.75, 2.25]])
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse

from physnet.fem.mesh import TriangleMesh
from physnet.fem.p1 import locate_points

__all__ = ["GridInterpolator", "write_xdmf"]


class GridInterpolator:
    """P1 interpolation of nodal values onto the cell centres of a regular grid.

    The grid covers ``bounds = (x_min, y_min, x_max, y_max)`` (default the mesh's bounding
    box) with ``shape = (n_y, n_x)`` cells; entry ``[i, j]`` is the value at
    ``(x_min + (j + 1/2) dx, y_min + (i + 1/2) dy)``, so rows run along ``y``. Grid points
    outside the mesh (in holes) get ``fill_value``; :attr:`mask` marks those inside.

    Parameters
    ----------
    mesh : TriangleMesh
    shape : (int, int)
        ``(n_y, n_x)``.
    bounds : (float, float, float, float), optional
    fill_value : float, default 0.0

    Attributes
    ----------
    matrix : scipy.sparse.csr_array, shape (n_y * n_x, n_nodes)
        The interpolation weights (barycentric coordinates; rows of outside points are 0).
    mask : ndarray of bool, shape (n_y, n_x)
        True where the grid point lies in the mesh.
    triangles : ndarray of int64, shape (n_y, n_x)
        The triangle containing each grid point (-1 outside).
    points : ndarray, shape (n_y, n_x, 2)
        The grid points.
    """

    def __init__(
        self,
        mesh: TriangleMesh,
        shape: Sequence[int],
        bounds: Sequence[float] | None = None,
        fill_value: float = 0.0,
    ) -> None:
        shape = tuple(int(n) for n in shape)
        if len(shape) != 2 or min(shape) < 1:
            raise ValueError(f"GridInterpolator: shape={shape}, expected (n_y >= 1, n_x >= 1)")
        x_min, y_min, x_max, y_max = mesh.bounds if bounds is None else map(float, bounds)
        if not (x_max > x_min and y_max > y_min):
            raise ValueError(
                f"GridInterpolator: bounds={bounds}, expected (x_min, y_min, x_max, y_max) "
                "with x_max > x_min and y_max > y_min"
            )
        n_y, n_x = shape
        x = x_min + (np.arange(n_x) + 0.5) * (x_max - x_min) / n_x
        y = y_min + (np.arange(n_y) + 0.5) * (y_max - y_min) / n_y
        grid_x, grid_y = np.meshgrid(x, y)
        self.points = np.stack([grid_x, grid_y], axis=-1)
        triangles, weights = locate_points(mesh, self.points.reshape(-1, 2))
        inside = triangles >= 0
        rows = np.repeat(np.flatnonzero(inside), 3)
        columns = mesh.triangles[triangles[inside]].ravel()
        self.matrix = scipy.sparse.csr_array(
            (weights[inside].ravel(), (rows, columns)), shape=(n_y * n_x, mesh.n_nodes)
        )
        self.mask = inside.reshape(shape)
        self.triangles = triangles.reshape(shape)
        self.shape = shape
        self.fill_value = float(fill_value)
        self.mesh = mesh

    def __call__(self, values: Any) -> np.ndarray:
        """Interpolate nodal values ``(..., n_nodes)`` to ``(..., n_y, n_x)``."""
        values = np.asarray(values, dtype=np.float64)
        if values.shape[-1:] != (self.mesh.n_nodes,):
            raise ValueError(
                f"GridInterpolator: values of shape {values.shape}, expected (..., "
                f"{self.mesh.n_nodes}) nodal values"
            )
        leading = values.shape[:-1]
        flat = values.reshape(-1, self.mesh.n_nodes)
        gridded = (self.matrix @ flat.T).T.reshape(*leading, *self.shape)
        if self.fill_value != 0.0:
            gridded[..., ~self.mask] = self.fill_value
        return gridded

    def cell_values(self, values: Any) -> np.ndarray:
        """Sample a per-triangle field (e.g. the wave speed) at the grid points."""
        values = np.asarray(values, dtype=np.float64)
        if values.shape != (self.mesh.n_triangles,):
            raise ValueError(
                f"GridInterpolator.cell_values: values of shape {values.shape}, expected "
                f"({self.mesh.n_triangles},)"
            )
        gridded = np.full(self.shape, self.fill_value)
        gridded[self.mask] = values[self.triangles[self.mask]]
        return gridded


def write_xdmf(
    path: str | os.PathLike,
    mesh: TriangleMesh,
    times: Sequence[float],
    values: Any,
    *,
    name: str = "u",
    cell_data: Mapping[str, Any] | None = None,
) -> Path:
    """Write nodal snapshots as an XDMF time series through meshio (opens in ParaView).

    Writes ``path`` (``.xdmf``, the XML) and the HDF5 file beside it with the same stem
    (``.h5``, the arrays). Both are written in a temporary folder next to ``path`` and
    renamed into place (the ``.h5`` first), so an interrupted run never leaves a partial
    pair.

    Parameters
    ----------
    path : str or os.PathLike
        Ends in ``.xdmf``.
    mesh : TriangleMesh
    times : sequence of float, length n_times
    values : array_like, shape (n_times, n_nodes)
    name : str, default "u"
        The point field's name.
    cell_data : mapping, optional
        Per-triangle fields written with every step (e.g. ``{"speed": c}``).

    Returns
    -------
    pathlib.Path
        ``path``.

    Examples
    --------
    >>> import os, tempfile
    >>> import meshio
    >>> from physnet.fem import structured_rectangle_mesh, write_xdmf
    >>> mesh = structured_rectangle_mesh(2)
    >>> path = write_xdmf(os.path.join(tempfile.mkdtemp(), "wave.xdmf"), mesh, [0.0, 0.1],
    ...                   np.zeros((2, mesh.n_nodes)))
    >>> with meshio.xdmf.TimeSeriesReader(path) as reader:
    ...     _ = reader.read_points_cells()
    ...     reader.num_steps
    2
    """
    import meshio

    from physnet._io import publish

    path = Path(path)
    if path.suffix != ".xdmf":
        raise ValueError(f"write_xdmf: path {os.fspath(path)!r} must end in '.xdmf'")
    values = np.asarray(values, dtype=np.float64)
    times = np.asarray(times, dtype=np.float64).ravel()
    if values.shape != (len(times), mesh.n_nodes):
        raise ValueError(
            f"write_xdmf: values of shape {values.shape}, expected (n_times={len(times)}, "
            f"n_nodes={mesh.n_nodes})"
        )
    cells = {}
    for key, value in (cell_data or {}).items():
        array = np.asarray(value, dtype=np.float64)
        if array.shape != (mesh.n_triangles,):
            raise ValueError(
                f"write_xdmf: cell_data[{key!r}] of shape {array.shape}, expected "
                f"({mesh.n_triangles},)"
            )
        cells[key] = [array]
    path.parent.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.stem}."))
    try:
        # meshio opens the .h5 relative to the working directory (it keeps only the
        # stem), so the pair is written from inside the temporary folder.
        working_directory = os.getcwd()
        os.chdir(folder)
        try:
            with meshio.xdmf.TimeSeriesWriter(path.name) as writer:
                writer.write_points_cells(mesh.points, [("triangle", mesh.triangles)])
                for time, snapshot in zip(times, values, strict=True):
                    writer.write_data(float(time), point_data={name: snapshot}, cell_data=cells)
        finally:
            os.chdir(working_directory)
        heavy = path.with_suffix(".h5")
        publish(folder / heavy.name, heavy)
        publish(folder / path.name, path)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return path
