"""P1 (piecewise-linear) finite elements on triangle meshes: stiffness, lumped mass, boundary
mass, point location and point loads, assembled with :mod:`scipy.sparse`.

Examples
--------
>>> import numpy as np
>>> from physnet.fem import lumped_mass, stiffness_matrix, structured_rectangle_mesh
>>> mesh = structured_rectangle_mesh(4)
>>> bool(np.isclose(lumped_mass(mesh).sum(), 1.0))        # the area of the unit square
True
>>> K = stiffness_matrix(mesh)
>>> bool(np.allclose(K @ np.ones(mesh.n_nodes), 0.0))     # constants have no energy
True
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse

from physnet.fem.mesh import TriangleMesh

__all__ = [
    "barycentric_gradients",
    "boundary_mass",
    "locate_points",
    "lumped_mass",
    "point_load",
    "stiffness_matrix",
]


def barycentric_gradients(mesh: TriangleMesh) -> np.ndarray:
    """Gradients of the three P1 basis functions of every triangle, shape (n_triangles, 3, 2).

    For the corners ``x_0, x_1, x_2`` (counter-clockwise) and the doubled area ``2A``, the
    gradient of the basis function of corner ``i`` is the inward normal of the opposite
    edge: ``grad phi_i = rot(x_{i+2} - x_{i+1}) / (2A)`` with ``rot(a, b) = (-b, a)``.
    """
    corners = mesh.points[mesh.triangles]
    opposite = np.roll(corners, -1, axis=1) - np.roll(corners, 1, axis=1)  # x_{i+1} - x_{i-1}
    doubled_area = 2.0 * mesh.areas
    return np.stack([-opposite[..., 1], opposite[..., 0]], axis=-1) / doubled_area[:, None, None]


def _per_triangle(mesh: TriangleMesh, coefficient: Any, name: str) -> np.ndarray:
    if coefficient is None:
        return np.ones(mesh.n_triangles)
    values = np.asarray(coefficient, dtype=np.float64)
    if values.ndim == 0:
        values = np.full(mesh.n_triangles, float(values))
    if values.shape != (mesh.n_triangles,):
        raise ValueError(
            f"{name}: coefficient of shape {values.shape}, expected a number or one value per "
            f"triangle ({mesh.n_triangles},)"
        )
    if not np.all(np.isfinite(values)):
        raise ValueError(f"{name}: the coefficient has NaN or infinite values")
    return values


def stiffness_matrix(mesh: TriangleMesh, coefficient: Any = None) -> scipy.sparse.csr_array:
    """The P1 stiffness matrix ``K_ij = integral of a grad(phi_i) · grad(phi_j)``.

    Parameters
    ----------
    mesh : TriangleMesh
    coefficient : float or array_like of shape (n_triangles,), optional
        The piecewise-constant ``a`` (default 1); ``c^2`` for the wave equation.

    Returns
    -------
    scipy.sparse.csr_array, shape (n_nodes, n_nodes)
        Symmetric positive semi-definite (for ``a >= 0``).
    """
    a = _per_triangle(mesh, coefficient, "stiffness_matrix")
    gradients = barycentric_gradients(mesh)
    local = np.einsum("tid,tjd->tij", gradients, gradients) * (a * mesh.areas)[:, None, None]
    rows = np.repeat(mesh.triangles, 3, axis=1).ravel()
    columns = np.tile(mesh.triangles, (1, 3)).ravel()
    matrix = scipy.sparse.coo_array(
        (local.ravel(), (rows, columns)), shape=(mesh.n_nodes, mesh.n_nodes)
    ).tocsr()
    matrix.sum_duplicates()
    return matrix


def lumped_mass(mesh: TriangleMesh, coefficient: Any = None) -> np.ndarray:
    """The row-sum lumped P1 mass matrix (its diagonal): ``M_i = sum over triangles at
    node i of a |T| / 3``.

    Returns
    -------
    ndarray, shape (n_nodes,)
    """
    a = _per_triangle(mesh, coefficient, "lumped_mass")
    return np.bincount(
        mesh.triangles.ravel(),
        weights=np.repeat(a * mesh.areas / 3.0, 3),
        minlength=mesh.n_nodes,
    )


def boundary_mass(mesh: TriangleMesh, edge_weights: Any = None, names: Any = None) -> np.ndarray:
    """The lumped boundary mass ``B_i = sum over boundary edges at node i of w_e |e| / 2``.

    Parameters
    ----------
    mesh : TriangleMesh
    edge_weights : float or array_like of shape (n_boundary_edges,), optional
        ``w_e`` (default 1).
    names : str or sequence of str, optional
        Restrict to these boundary parts (default every boundary edge).

    Returns
    -------
    ndarray, shape (n_nodes,)

    Examples
    --------
    >>> from physnet.fem import structured_rectangle_mesh
    >>> mesh = structured_rectangle_mesh(3)
    >>> float(boundary_mass(mesh).sum()), float(boundary_mass(mesh, names="left").sum())
    (4.0, 1.0)
    """
    edges = mesh.boundary_edges
    weights = np.ones(len(edges)) if edge_weights is None else edge_weights
    weights = np.broadcast_to(np.asarray(weights, dtype=np.float64), (len(edges),))
    lengths = np.linalg.norm(mesh.points[edges[:, 1]] - mesh.points[edges[:, 0]], axis=1)
    selected = mesh._tag_mask(names)
    values = (weights * lengths / 2.0)[selected]
    return np.bincount(
        edges[selected].ravel(), weights=np.repeat(values, 2), minlength=mesh.n_nodes
    )


def locate_points(
    mesh: TriangleMesh, points: Any, *, tolerance: float = 1e-9
) -> tuple[np.ndarray, np.ndarray]:
    """The triangle containing each point and the point's barycentric coordinates in it.

    Candidates are the triangles with the nearest centroids (a k-d tree); a point inside
    none of them (within ``tolerance``, relative) lies outside the mesh.

    Parameters
    ----------
    mesh : TriangleMesh
    points : array_like, shape (n_points, 2)
    tolerance : float, default 1e-9
        How far below 0 a barycentric coordinate may be (points on edges count as inside).

    Returns
    -------
    triangles : ndarray of int64, shape (n_points,)
        Index of the containing triangle, -1 outside the mesh.
    barycentric : ndarray, shape (n_points, 3)
        Weights of the triangle's corners (zeros outside the mesh); they sum to 1 and
        reproduce linear functions exactly.

    Examples
    --------
    >>> from physnet.fem import structured_rectangle_mesh
    >>> mesh = structured_rectangle_mesh(2)
    >>> triangles, weights = locate_points(mesh, [[0.25, 0.1], [2.0, 2.0]])
    >>> triangles[1], weights.sum(axis=1).round(12).tolist()
    (np.int64(-1), [1.0, 0.0])
    """
    from scipy.spatial import cKDTree

    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 2:
        raise ValueError(f"locate_points: points of shape {points.shape}, expected (n, 2)")
    found = np.full(len(points), -1, dtype=np.int64)
    weights = np.zeros((len(points), 3))
    tree = cKDTree(mesh.centroids)
    corners = mesh.points[mesh.triangles]
    todo = np.arange(len(points))
    for k in (8, 32, 128):
        if len(todo) == 0:
            break
        k = min(k, mesh.n_triangles)
        _, candidates = tree.query(points[todo], k=k)
        candidates = candidates.reshape(len(todo), k)
        coordinates = _barycentric(corners[candidates], points[todo][:, None, :])
        inside = coordinates.min(axis=2) >= -tolerance
        hit = inside.any(axis=1)
        first = inside.argmax(axis=1)
        rows = np.flatnonzero(hit)
        found[todo[rows]] = candidates[rows, first[rows]]
        weights[todo[rows]] = coordinates[rows, first[rows]]
        todo = todo[~hit]
        if k == mesh.n_triangles:
            break
    return found, weights


def _barycentric(corners: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Barycentric coordinates of ``points`` (..., 2) in triangles ``corners`` (..., 3, 2)."""
    a, b, c = corners[..., 0, :], corners[..., 1, :], corners[..., 2, :]
    v0, v1, v2 = b - a, c - a, points - a
    denominator = v0[..., 0] * v1[..., 1] - v1[..., 0] * v0[..., 1]
    second = (v2[..., 0] * v1[..., 1] - v1[..., 0] * v2[..., 1]) / denominator
    third = (v0[..., 0] * v2[..., 1] - v2[..., 0] * v0[..., 1]) / denominator
    return np.stack([1.0 - second - third, second, third], axis=-1)


def point_load(mesh: TriangleMesh, point: Any) -> np.ndarray:
    """The load vector of a unit point source: ``f_i = phi_i(x_0)``.

    Raises
    ------
    ValueError
        If the point lies outside the mesh.

    Examples
    --------
    >>> from physnet.fem import structured_rectangle_mesh
    >>> load = point_load(structured_rectangle_mesh(4), (0.3, 0.6))
    >>> float(load.sum()), int((load > 0).sum())
    (1.0, 3)
    """
    location = np.asarray(point, dtype=np.float64).reshape(1, 2)
    triangle, weights = locate_points(mesh, location)
    if triangle[0] < 0:
        raise ValueError(
            f"point_load: the point {tuple(location[0])} lies outside the mesh "
            f"(bounds {mesh.bounds}, or inside a hole)"
        )
    load = np.zeros(mesh.n_nodes)
    np.add.at(load, mesh.triangles[triangle[0]], weights[0])
    return load
