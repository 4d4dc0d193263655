"""Triangle meshes for P1 finite elements: generation for rectangles with holes (circles,
ellipses, rotated rectangles) and circular inclusions, and reading any triangle mesh meshio
understands.

Examples
--------
>>> from physnet.fem import rectangle_mesh
>>> from physnet.fem.mesh import Ellipse
>>> mesh = rectangle_mesh((1.0, 1.0), 0.1, holes=[(0.5, 0.5, 0.15)], seed=0)
>>> mesh.boundary_names
('bottom', 'right', 'top', 'left', 'holes')
>>> bool(abs(mesh.areas.sum() - (1 - 3.14159 * 0.15**2)) < 0.01)
True
>>> mesh = rectangle_mesh((1.0, 1.0), 0.05, holes=[Ellipse(0.5, 0.5, 0.3, 0.1, angle=0.5)])
>>> bool(abs(mesh.areas.sum() - (1 - 3.14159 * 0.3 * 0.1)) < 0.01)
True
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import math
import numbers
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = [
    "Circle",
    "Ellipse",
    "Rectangle",
    "TriangleMesh",
    "read_mesh",
    "rectangle_mesh",
    "structured_rectangle_mesh",
]

RECTANGLE_SIDES = ("bottom", "right", "top", "left")


@dataclasses.dataclass(frozen=True, eq=False)
class TriangleMesh:
    """A conforming mesh of straight triangles in the plane, with tagged boundary edges.

    Build one with :func:`rectangle_mesh`, :func:`structured_rectangle_mesh`,
    :func:`read_mesh` or :meth:`from_arrays`; the constructor checks the arrays.

    Attributes
    ----------
    points : ndarray, shape (n_nodes, 2)
        Node coordinates (float64).
    triangles : ndarray, shape (n_triangles, 3)
        Node indices of each triangle, counter-clockwise (int64).
    boundary_edges : ndarray, shape (n_boundary_edges, 2)
        Node pairs of the edges that belong to one triangle only.
    boundary_tags : ndarray, shape (n_boundary_edges,)
        Index into ``boundary_names`` of each boundary edge.
    boundary_names : tuple of str
        Names of the boundary parts (``"bottom", "right", "top", "left", "holes"`` for
        generated rectangles; ``"boundary"`` or the file's physical names for read meshes).
    regions : ndarray, shape (n_triangles,)
        Material region of each triangle: 0 for the background, ``k`` for the ``k``-th
        inclusion (1-based) of a generated mesh, the cell tag of a read mesh.
    """

    points: np.ndarray
    triangles: np.ndarray
    boundary_edges: np.ndarray
    boundary_tags: np.ndarray
    boundary_names: tuple[str, ...]
    regions: np.ndarray

    @classmethod
    def from_arrays(
        cls,
        points: Any,
        triangles: Any,
        *,
        regions: Any = None,
        boundary_tagger: Any = None,
        boundary_names: Sequence[str] = ("boundary",),
    ) -> TriangleMesh:
        """A mesh from node coordinates and triangles; the boundary is found from topology.

        Parameters
        ----------
        points : array_like, shape (n_nodes, 2)
        triangles : array_like, shape (n_triangles, 3)
            Node indices; clockwise triangles are reoriented.
        regions : array_like, shape (n_triangles,), optional
            Material region per triangle (default all 0).
        boundary_tagger : callable, optional
            ``boundary_tagger(midpoints) -> indices into boundary_names`` for the boundary
            edges' midpoints, shape (n_edges, 2); default every edge gets tag 0.
        boundary_names : sequence of str, default ("boundary",)

        Raises
        ------
        ValueError
            For arrays of the wrong shape, indices out of range or triangles of zero area.
        """
        points = np.asarray(points, dtype=np.float64)
        triangles = np.asarray(triangles)
        if points.ndim != 2 or points.shape[1] != 2 or len(points) < 3:
            raise ValueError(
                f"TriangleMesh: points of shape {points.shape}, expected (n_nodes >= 3, 2)"
            )
        if not np.all(np.isfinite(points)):
            raise ValueError("TriangleMesh: points contain NaN or infinite coordinates")
        if (
            triangles.ndim != 2
            or triangles.shape[1] != 3
            or len(triangles) == 0
            or not np.issubdtype(triangles.dtype, np.integer)
        ):
            raise ValueError(
                f"TriangleMesh: triangles of shape {triangles.shape} and dtype "
                f"{triangles.dtype}, expected integer node indices of shape (n_triangles, 3)"
            )
        triangles = triangles.astype(np.int64)
        if triangles.min() < 0 or triangles.max() >= len(points):
            raise ValueError(
                f"TriangleMesh: triangle node indices in [{triangles.min()}, "
                f"{triangles.max()}], expected indices in [0, {len(points) - 1}]"
            )
        doubled_area = _doubled_areas(points, triangles)
        scale = np.ptp(points, axis=0).max() ** 2
        degenerate = np.abs(doubled_area) <= 1e-12 * scale
        if degenerate.any():
            raise ValueError(
                f"TriangleMesh: {int(degenerate.sum())} triangle(s) of zero area (first: "
                f"triangle {int(np.flatnonzero(degenerate)[0])})"
            )
        clockwise = doubled_area < 0
        triangles[clockwise] = triangles[clockwise][:, [0, 2, 1]]
        if regions is None:
            regions = np.zeros(len(triangles), dtype=np.int64)
        regions = np.asarray(regions, dtype=np.int64)
        if regions.shape != (len(triangles),):
            raise ValueError(
                f"TriangleMesh: regions of shape {regions.shape}, expected ({len(triangles)},)"
            )
        edges = _boundary_edges(triangles)
        if boundary_tagger is None:
            tags = np.zeros(len(edges), dtype=np.int64)
        else:
            tags = np.asarray(boundary_tagger(points[edges].mean(axis=1)), dtype=np.int64)
        boundary_names = tuple(boundary_names)
        if tags.size and (tags.min() < 0 or tags.max() >= len(boundary_names)):
            raise ValueError(
                f"TriangleMesh: boundary tags in [{tags.min()}, {tags.max()}], expected "
                f"indices into boundary_names {boundary_names}"
            )
        for array in (points, triangles, edges, tags, regions):
            array.setflags(write=False)
        return cls(points, triangles, edges, tags, boundary_names, regions)

    @property
    def n_nodes(self) -> int:
        return len(self.points)

    @property
    def n_triangles(self) -> int:
        return len(self.triangles)

    @property
    def areas(self) -> np.ndarray:
        """Area of each triangle."""
        return 0.5 * _doubled_areas(self.points, self.triangles)

    @property
    def centroids(self) -> np.ndarray:
        """Centroid of each triangle, shape (n_triangles, 2)."""
        return self.points[self.triangles].mean(axis=1)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """``(x_min, y_min, x_max, y_max)`` of the nodes."""
        low, high = self.points.min(axis=0), self.points.max(axis=0)
        return float(low[0]), float(low[1]), float(high[0]), float(high[1])

    @property
    def mesh_size(self) -> float:
        """The longest edge of the mesh (the ``h`` of error estimates)."""
        corners = self.points[self.triangles]
        lengths = np.linalg.norm(corners - np.roll(corners, 1, axis=1), axis=2)
        return float(lengths.max())

    def boundary_nodes(self, names: str | Sequence[str] | None = None) -> np.ndarray:
        """Sorted indices of the nodes on the boundary parts ``names`` (default all)."""
        edges = self.boundary_edges[self._tag_mask(names)]
        return np.unique(edges)

    def _tag_mask(self, names: str | Sequence[str] | None) -> np.ndarray:
        if names is None:
            return np.ones(len(self.boundary_edges), dtype=bool)
        names = [names] if isinstance(names, str) else list(names)
        unknown = [name for name in names if name not in self.boundary_names]
        if unknown:
            raise ValueError(
                f"TriangleMesh: unknown boundary name(s) {unknown}; this mesh has "
                f"{list(self.boundary_names)}"
            )
        codes = [self.boundary_names.index(name) for name in names]
        return np.isin(self.boundary_tags, codes)

    def __repr__(self) -> str:
        return (
            f"TriangleMesh(n_nodes={self.n_nodes}, n_triangles={self.n_triangles}, "
            f"boundary_names={self.boundary_names})"
        )


def _doubled_areas(points: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    a, b, c = (points[triangles[:, i]] for i in range(3))
    return (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (c[:, 0] - a[:, 0]) * (b[:, 1] - a[:, 1])


def _boundary_edges(triangles: np.ndarray) -> np.ndarray:
    """Edges used by exactly one triangle, oriented as in that (counter-clockwise) triangle."""
    edges = np.concatenate([triangles[:, [0, 1]], triangles[:, [1, 2]], triangles[:, [2, 0]]])
    keys = np.sort(edges, axis=1)
    _, inverse, counts = np.unique(keys, axis=0, return_inverse=True, return_counts=True)
    if counts.max() > 2:
        raise ValueError(
            "TriangleMesh: an edge is shared by more than two triangles; the mesh is not a "
            "conforming 2-D triangulation"
        )
    return edges[counts[inverse.ravel()] == 1]


def _check_size(size: Any) -> tuple[float, float]:
    try:
        width, height = (float(value) for value in size)
    except (TypeError, ValueError):
        raise ValueError(f"rectangle_mesh: size={size!r}, expected (width, height)") from None
    if not (width > 0 and height > 0 and math.isfinite(width * height)):
        raise ValueError(f"rectangle_mesh: size={size!r}, expected positive finite lengths")
    return width, height


def _check_circles(
    circles: Any, what: str, width: float, height: float, margin: float
) -> np.ndarray:
    array = np.asarray(circles, dtype=np.float64).reshape(-1, 3) if len(circles) else None
    if array is None:
        return np.zeros((0, 3))
    for x, y, radius in array:
        if not radius > 0:
            raise ValueError(f"rectangle_mesh: {what} ({x}, {y}, {radius}) has radius <= 0")
        if min(x - radius, y - radius, width - x - radius, height - y - radius) < margin:
            raise ValueError(
                f"rectangle_mesh: {what} ({x}, {y}, {radius}) must lie inside the "
                f"{width} x {height} rectangle at least one mesh size ({margin}) from its edges"
            )
    return array


@dataclasses.dataclass(frozen=True)
class Circle:
    """A circular hole of :func:`rectangle_mesh`; a plain ``(x, y, radius)`` tuple means the same.

    Attributes
    ----------
    x, y : float
        Centre.
    radius : float
    """

    x: float
    y: float
    radius: float

    def _check(self) -> str | None:
        return None if self.radius > 0 else "has radius <= 0"

    def _describe(self) -> str:
        return f"({self.x}, {self.y}, {self.radius})"

    @property
    def bounding_radius(self) -> float:
        """Radius of the smallest circle about ``(x, y)`` holding the shape."""
        return self.radius

    def _half_extents(self) -> tuple[float, float]:
        return self.radius, self.radius

    def _boundary(self, h: float) -> np.ndarray:
        n = max(8, math.ceil(2 * math.pi * self.radius / h))
        angles = 2 * math.pi * np.arange(n) / n
        return np.column_stack(
            [self.x + self.radius * np.cos(angles), self.y + self.radius * np.sin(angles)]
        )

    def _far_outside(self, points: np.ndarray, h: float) -> np.ndarray:
        distance = np.hypot(points[:, 0] - self.x, points[:, 1] - self.y)
        return (np.abs(distance - self.radius) > 0.5 * h) & (distance > self.radius)

    def _contains(self, points: np.ndarray, h: float) -> np.ndarray:
        return np.hypot(points[:, 0] - self.x, points[:, 1] - self.y) < self.radius


class _ConvexShape:
    """Shared meshing of the convex shapes given by their boundary polygon (in local
    coordinates, counter-clockwise; placed at ``(x, y)`` and turned by ``angle``)."""

    x: float
    y: float
    angle: float

    def _local_outline(self, spacing: float) -> np.ndarray:
        raise NotImplementedError

    def _place(self, local: np.ndarray) -> np.ndarray:
        cos, sin = math.cos(self.angle), math.sin(self.angle)
        return np.column_stack(
            [
                self.x + cos * local[:, 0] - sin * local[:, 1],
                self.y + sin * local[:, 0] + cos * local[:, 1],
            ]
        )

    def _boundary(self, h: float) -> np.ndarray:
        return self._place(self._local_outline(h))

    def _candidates(self, points: np.ndarray, h: float) -> np.ndarray:
        reach = self.bounding_radius + h  # type: ignore[attr-defined]
        return np.flatnonzero(np.hypot(points[:, 0] - self.x, points[:, 1] - self.y) < reach)

    def _far_outside(self, points: np.ndarray, h: float) -> np.ndarray:
        """Points outside the shape at least ``h / 2`` from its (finely sampled) boundary."""
        keep = np.ones(len(points), dtype=bool)
        near = self._candidates(points, h)
        if near.size:
            outline = self._boundary(h / 8)
            start, end = outline, np.roll(outline, -1, axis=0)
            edge = end - start
            offset = points[near, None, :] - start[None]
            along = np.clip((offset * edge).sum(axis=2) / (edge * edge).sum(axis=1), 0.0, 1.0)
            gap = offset - along[..., None] * edge
            distance = np.hypot(gap[..., 0], gap[..., 1]).min(axis=1)
            keep[near] = (distance > 0.5 * h) & ~_inside_convex(points[near], outline)
        return keep

    def _contains(self, points: np.ndarray, h: float) -> np.ndarray:
        """Points strictly inside the polygon of the boundary nodes."""
        inside = np.zeros(len(points), dtype=bool)
        near = self._candidates(points, h)
        inside[near] = _inside_convex(points[near], self._boundary(h))
        return inside


def _inside_convex(points: np.ndarray, polygon: np.ndarray) -> np.ndarray:
    """Points strictly inside a convex counter-clockwise polygon."""
    edge = np.roll(polygon, -1, axis=0) - polygon
    offset = points[:, None, :] - polygon[None]
    cross = edge[None, :, 0] * offset[..., 1] - edge[None, :, 1] * offset[..., 0]
    return np.all(cross > 0, axis=1)


@dataclasses.dataclass(frozen=True)
class Ellipse(_ConvexShape):
    """An elliptical hole of :func:`rectangle_mesh`.

    Attributes
    ----------
    x, y : float
        Centre.
    a, b : float
        Semi-axes: ``a`` along the direction ``angle``, ``b`` across it.
    angle : float, default 0.0
        Counter-clockwise angle of the ``a`` axis from the x axis, in radians.
    """

    x: float
    y: float
    a: float
    b: float
    angle: float = 0.0

    def _check(self) -> str | None:
        return None if self.a > 0 and self.b > 0 else "has a semi-axis <= 0"

    def _describe(self) -> str:
        return repr(self)

    @property
    def bounding_radius(self) -> float:
        """Radius of the smallest circle about ``(x, y)`` holding the shape."""
        return max(self.a, self.b)

    def _half_extents(self) -> tuple[float, float]:
        cos, sin = math.cos(self.angle), math.sin(self.angle)
        return (
            math.sqrt((self.a * cos) ** 2 + (self.b * sin) ** 2),
            math.sqrt((self.a * sin) ** 2 + (self.b * cos) ** 2),
        )

    def _local_outline(self, spacing: float) -> np.ndarray:
        """Nodes at equal arc lengths (at most ``spacing``, at least 8), from ``(a, 0)``."""
        t = np.linspace(0.0, 2 * math.pi, 4097)
        fine = np.column_stack([self.a * np.cos(t), self.b * np.sin(t)])
        arc = np.concatenate([[0.0], np.cumsum(np.hypot(*np.diff(fine, axis=0).T))])
        n = max(8, math.ceil(arc[-1] / spacing))
        s = np.interp(arc[-1] * np.arange(n) / n, arc, t)
        return np.column_stack([self.a * np.cos(s), self.b * np.sin(s)])


@dataclasses.dataclass(frozen=True)
class Rectangle(_ConvexShape):
    """A (rotated) rectangular hole of :func:`rectangle_mesh`; a square when
    ``half_width == half_height``. Its corners are mesh nodes.

    Attributes
    ----------
    x, y : float
        Centre.
    half_width, half_height : float
        Half side lengths along the rectangle's own axes.
    angle : float, default 0.0
        Counter-clockwise rotation, in radians.
    """

    x: float
    y: float
    half_width: float
    half_height: float
    angle: float = 0.0

    def _check(self) -> str | None:
        return None if self.half_width > 0 and self.half_height > 0 else "has a side <= 0"

    def _describe(self) -> str:
        return repr(self)

    @property
    def bounding_radius(self) -> float:
        """Radius of the smallest circle about ``(x, y)`` holding the shape."""
        return math.hypot(self.half_width, self.half_height)

    def _half_extents(self) -> tuple[float, float]:
        cos, sin = abs(math.cos(self.angle)), abs(math.sin(self.angle))
        return (
            self.half_width * cos + self.half_height * sin,
            self.half_width * sin + self.half_height * cos,
        )

    def _local_outline(self, spacing: float) -> np.ndarray:
        """The corners and equally spaced nodes (at most ``spacing`` apart) on each side."""
        w, v = self.half_width, self.half_height
        corners = np.array([[-w, -v], [w, -v], [w, v], [-w, v]])
        sides = []
        for k in range(4):
            start, end = corners[k], corners[(k + 1) % 4]
            n = max(1, math.ceil(np.hypot(*(end - start)) / spacing))
            sides.append(start + (np.arange(n) / n)[:, None] * (end - start))
        return np.concatenate(sides)


# What `rectangle_mesh` takes for a hole, besides a plain (x, y, radius) sequence.
HoleShape = Circle | Ellipse | Rectangle


def _check_holes(holes: Any, width: float, height: float, margin: float) -> list[Any]:
    """Holes as shapes: :class:`Circle`, :class:`Ellipse`, :class:`Rectangle` or
    ``(x, y, radius)`` sequences (all plain sequences keep the checks of circles)."""
    shapes = (Circle, Ellipse, Rectangle)
    if not any(isinstance(hole, shapes) for hole in holes):
        return [
            Circle(*map(float, c)) for c in _check_circles(holes, "hole", width, height, margin)
        ]
    checked = []
    for hole in holes:
        if not isinstance(hole, shapes):
            try:
                (circle,) = _check_circles([hole], "hole", width, height, margin)
            except (TypeError, ValueError) as error:
                if "rectangle_mesh" in str(error):
                    raise
                raise ValueError(
                    f"rectangle_mesh: hole {hole!r}, expected a Circle, Ellipse, Rectangle "
                    "or (x, y, radius)"
                ) from None
            checked.append(Circle(*map(float, circle)))
            continue
        values = dataclasses.astuple(hole)
        if not all(isinstance(v, numbers.Real) and math.isfinite(v) for v in values):
            raise ValueError(f"rectangle_mesh: hole {hole!r} has non-finite or non-numeric fields")
        problem = hole._check()
        if problem is not None:
            raise ValueError(f"rectangle_mesh: hole {hole._describe()} {problem}")
        half_x, half_y = hole._half_extents()
        gaps = (hole.x - half_x, hole.y - half_y, width - hole.x - half_x, height - hole.y - half_y)
        if min(gaps) < margin:
            raise ValueError(
                f"rectangle_mesh: hole {hole._describe()} must lie inside the {width} x "
                f"{height} rectangle at least one mesh size ({margin}) from its edges"
            )
        checked.append(hole)
    return checked


def structured_rectangle_mesh(
    n_x: int, n_y: int | None = None, size: Sequence[float] = (1.0, 1.0)
) -> TriangleMesh:
    """A structured mesh of the rectangle ``[0, width] x [0, height]``: each of the
    ``n_x * n_y`` cells is cut into two triangles along its diagonal.

    Examples
    --------
    >>> mesh = structured_rectangle_mesh(4)
    >>> mesh.n_nodes, mesh.n_triangles, len(mesh.boundary_edges)
    (25, 32, 16)
    """
    n_y = n_x if n_y is None else n_y
    for name, value in (("n_x", n_x), ("n_y", n_y)):
        if not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"structured_rectangle_mesh: {name}={value!r}, expected an int >= 1")
    width, height = _check_size(size)
    x, y = np.meshgrid(np.linspace(0, width, n_x + 1), np.linspace(0, height, n_y + 1))
    points = np.column_stack([x.ravel(), y.ravel()])
    node = np.arange((n_x + 1) * (n_y + 1)).reshape(n_y + 1, n_x + 1)
    a, b = node[:-1, :-1].ravel(), node[:-1, 1:].ravel()
    c, d = node[1:, 1:].ravel(), node[1:, :-1].ravel()
    triangles = np.concatenate([np.column_stack([a, b, c]), np.column_stack([a, c, d])])
    return TriangleMesh.from_arrays(
        points,
        triangles,
        boundary_tagger=_rectangle_tagger(width, height, np.zeros((0, 3))),
        boundary_names=(*RECTANGLE_SIDES, "holes"),
    )


def _rectangle_tagger(width: float, height: float, holes: Any) -> Any:
    def tag(midpoints: np.ndarray) -> np.ndarray:
        x, y = midpoints[:, 0], midpoints[:, 1]
        distance = np.stack([y, width - x, height - y, x])  # bottom, right, top, left
        side = distance.argmin(axis=0)
        tolerance = 1e-9 * max(width, height)
        return np.where(distance.min(axis=0) <= tolerance, side, len(RECTANGLE_SIDES))

    return tag


def rectangle_mesh(
    size: Sequence[float] = (1.0, 1.0),
    mesh_size: float = 0.05,
    *,
    holes: Sequence[Sequence[float] | HoleShape] = (),
    inclusions: Sequence[Sequence[float]] = (),
    jitter: float = 0.15,
    seed: int | None = 0,
) -> TriangleMesh:
    """An unstructured triangle mesh of a rectangle minus holes (circles, ellipses, rotated
    rectangles), resolving circular inclusions.

    Nodes are placed every ``mesh_size`` along the rectangle's sides and, by arc length, on
    the boundaries of the holes and inclusions (the corners of rectangular holes are
    nodes); the interior is filled with a jittered equilateral lattice of spacing
    ``mesh_size`` kept at least half a mesh size from every boundary. The points are
    triangulated by :class:`scipy.spatial.Delaunay`, and triangles whose centroid lies
    inside a hole (inside the polygon of its boundary nodes) are dropped. Triangles whose
    centroid lies inside the ``k``-th inclusion get ``regions == k`` (1-based): their edges
    follow the inclusion's circle, so a material jump is resolved by the mesh.

    Parameters
    ----------
    size : (float, float), default (1.0, 1.0)
        Width and height of the rectangle ``[0, width] x [0, height]``.
    mesh_size : float, default 0.05
        Target edge length ``h``.
    holes : sequence of (x, y, radius), Circle, Ellipse or Rectangle
        Shapes removed from the domain (their boundary is tagged ``"holes"``): a plain
        ``(x, y, radius)`` sequence is a circle (as :class:`Circle`);
        ``Ellipse(x, y, a, b, angle)`` has semi-axes ``a`` along the direction ``angle``
        (radians, counter-clockwise) and ``b`` across it; ``Rectangle(x, y, half_width,
        half_height, angle)`` is a rectangle turned by ``angle`` about its centre (a square
        when the half sides are equal). Each must lie at least ``mesh_size`` inside the
        rectangle (by its axis-aligned bounding box).
    inclusions : sequence of (x, y, radius)
        Circles of another material; each must lie at least ``mesh_size`` inside the
        rectangle.
    jitter : float, default 0.15
        Random displacement of the interior lattice nodes, as a fraction of ``mesh_size``
        (0 gives a regular lattice); must be below 0.25 so the mesh stays well shaped.
    seed : int or None, default 0
        Seed of the jitter.

    Returns
    -------
    TriangleMesh
        Boundary names ``("bottom", "right", "top", "left", "holes")``.

    Raises
    ------
    ValueError
        For a non-positive size or mesh size, a hole or circle not inside the rectangle,
        a shape with a non-positive radius, semi-axis or side, or holes and inclusions
        closer than one mesh size (checked on their bounding circles, of radius
        ``bounding_radius`` about the centre).

    Examples
    --------
    >>> mesh = rectangle_mesh((2.0, 1.0), 0.2, inclusions=[(1.0, 0.5, 0.25)])
    >>> sorted(set(mesh.regions.tolist()))
    [0, 1]
    >>> import math
    >>> from physnet.fem.mesh import Ellipse, Rectangle
    >>> holes = [(0.5, 0.5, 0.2), Ellipse(1.2, 0.5, 0.2, 0.1, angle=0.3),
    ...          Rectangle(1.7, 0.5, 0.1, 0.1, angle=math.pi / 6)]
    >>> mesh = rectangle_mesh((2.0, 1.0), 0.05, holes=holes)
    >>> round(float(mesh.areas.sum()), 2), round(2 - math.pi * (0.04 + 0.02) - 0.04, 2)
    (1.77, 1.77)
    """
    width, height = _check_size(size)
    h = float(mesh_size)
    if not (h > 0 and h <= min(width, height)):
        raise ValueError(
            f"rectangle_mesh: mesh_size={mesh_size!r}, expected a number in (0, "
            f"{min(width, height)}]"
        )
    if not 0 <= jitter < 0.25:
        raise ValueError(f"rectangle_mesh: jitter={jitter!r}, expected a number in [0, 0.25)")
    holes = _check_holes(holes, width, height, h)
    inclusions = _check_circles(inclusions, "inclusion", width, height, h)
    bounds = [(hole.x, hole.y, hole.bounding_radius) for hole in holes]
    circles = np.concatenate([np.asarray(bounds, dtype=np.float64).reshape(-1, 3), inclusions])
    names = [hole._describe() for hole in holes]
    names += [str(tuple(circle)) for circle in inclusions]
    for i in range(len(circles)):
        for j in range(i):
            gap = np.hypot(*(circles[i, :2] - circles[j, :2])) - circles[i, 2] - circles[j, 2]
            if gap < h:
                raise ValueError(
                    f"rectangle_mesh: shapes {names[j]} and {names[i]} are closer than one "
                    f"mesh size ({h}) (by their bounding circles); holes and inclusions "
                    "must not overlap"
                )

    n_x, n_y = max(1, math.ceil(width / h)), max(1, math.ceil(height / h))
    xs, ys = np.linspace(0, width, n_x + 1), np.linspace(0, height, n_y + 1)
    outer = [
        np.column_stack([xs, np.zeros_like(xs)]),
        np.column_stack([xs, np.full_like(xs, height)]),
        np.column_stack([np.zeros(n_y - 1), ys[1:-1]]),
        np.column_stack([np.full(n_y - 1, width), ys[1:-1]]),
    ]
    on_shapes = [hole._boundary(h) for hole in holes]
    for x, y, radius in inclusions:
        on_shapes.append(Circle(x, y, radius)._boundary(h))

    row_height = h * math.sqrt(3) / 2
    rows = np.arange(0, height + row_height, row_height)
    columns = np.arange(-h, width + h, h)
    lattice_x = columns[None, :] + 0.5 * h * (np.arange(len(rows)) % 2)[:, None]
    lattice_y = np.broadcast_to(rows[:, None], lattice_x.shape)
    interior = np.column_stack([lattice_x.ravel(), lattice_y.ravel()])
    if jitter > 0:
        rng = np.random.default_rng(seed)
        interior = interior + rng.uniform(-jitter * h, jitter * h, interior.shape)
    keep = (
        (interior[:, 0] > 0.5 * h)
        & (interior[:, 0] < width - 0.5 * h)
        & (interior[:, 1] > 0.5 * h)
        & (interior[:, 1] < height - 0.5 * h)
    )
    for hole in holes:
        keep &= hole._far_outside(interior, h)
    for x, y, radius in inclusions:
        distance = np.hypot(interior[:, 0] - x, interior[:, 1] - y)
        keep &= np.abs(distance - radius) > 0.5 * h
    points = np.concatenate([*outer, *on_shapes, interior[keep]])

    from scipy.spatial import Delaunay

    triangles = Delaunay(points).simplices
    centroids = points[triangles].mean(axis=1)
    inside_hole = np.zeros(len(triangles), dtype=bool)
    for hole in holes:
        inside_hole |= hole._contains(centroids, h)
    triangles, centroids = triangles[~inside_hole], centroids[~inside_hole]
    regions = np.zeros(len(triangles), dtype=np.int64)
    for index, (x, y, radius) in enumerate(inclusions, start=1):
        regions[np.hypot(centroids[:, 0] - x, centroids[:, 1] - y) < radius] = index
    # Qhull may leave nearly flat triangles between collinear nodes of the rectangle's sides.
    scale = h * h
    flat = np.abs(_doubled_areas(points, triangles)) <= 1e-10 * scale
    triangles, regions = triangles[~flat], regions[~flat]
    used, triangles = np.unique(triangles, return_inverse=True)
    return TriangleMesh.from_arrays(
        points[used],
        triangles.reshape(-1, 3),
        regions=regions,
        boundary_tagger=_rectangle_tagger(width, height, holes),
        boundary_names=(*RECTANGLE_SIDES, "holes"),
    )


def read_mesh(path: str | os.PathLike) -> TriangleMesh:
    """Read a triangle mesh from any file meshio reads (Gmsh, VTK/VTU, XDMF, Medit, ...).

    The ``triangle`` cells form the mesh (other cell types are ignored); a third coordinate
    is dropped when it is constant. Boundary edges are tagged by the file's ``line`` cells
    where it has them with a cell tag (``gmsh:physical`` or ``medit:ref``), named by
    the file's field data (Gmsh physical names) or ``"tag_<k>"``; edges without a tag are
    ``"boundary"``. Triangle tags of the same kind become :attr:`TriangleMesh.regions`.

    Parameters
    ----------
    path : str or os.PathLike

    Returns
    -------
    TriangleMesh

    Raises
    ------
    physnet._io.FileFormatError
        If meshio cannot read the file, or it holds no triangles or non-planar ones.

    Examples
    --------
    >>> import os, tempfile
    >>> import meshio
    >>> from physnet.fem import read_mesh, rectangle_mesh
    >>> mesh = rectangle_mesh((1.0, 1.0), 0.25)
    >>> path = os.path.join(tempfile.mkdtemp(), "square.vtu")
    >>> meshio.write(path, meshio.Mesh(mesh.points, [("triangle", mesh.triangles)]))
    >>> read_mesh(path).n_triangles == mesh.n_triangles
    True
    """
    import meshio

    from physnet._io import FileFormatError, check_readable

    check_readable(path)
    messages = io.StringIO()
    try:
        # meshio prints its complaints and calls sys.exit when no reader accepts the file.
        with contextlib.redirect_stdout(messages), contextlib.redirect_stderr(messages):
            data = meshio.read(path)
    except (Exception, SystemExit) as error:  # meshio raises many types for unreadable files
        reason = " ".join(messages.getvalue().split()) or str(error)
        raise FileFormatError(path, f"meshio cannot read it as a mesh ({reason})") from None
    points = np.asarray(data.points, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] not in (2, 3):
        raise FileFormatError(path, f"points of shape {points.shape}, expected (n, 2) or (n, 3)")
    if points.shape[1] == 3:
        if np.ptp(points[:, 2]) > 1e-12 * max(np.ptp(points[:, :2]), 1.0):
            raise FileFormatError(path, "the mesh is not planar (its z coordinates vary)")
        points = points[:, :2]
    tag_keys = ("gmsh:physical", "medit:ref")
    triangles, regions, lines, line_tags = [], [], [], []
    for block_index, block in enumerate(data.cells):
        tags = None
        for key in tag_keys:
            if key in data.cell_data:
                tags = np.asarray(data.cell_data[key][block_index], dtype=np.int64)
                break
        if block.type == "triangle":
            triangles.append(block.data)
            regions.append(tags if tags is not None else np.zeros(len(block.data), np.int64))
        elif block.type == "line" and tags is not None:
            lines.append(block.data)
            line_tags.append(tags)
    if not triangles:
        raise FileFormatError(path, "no 'triangle' cells (P1 meshes need linear triangles)")
    triangles = np.concatenate(triangles)
    used, triangles = np.unique(triangles, return_inverse=True)
    renumber = np.full(len(points), -1, dtype=np.int64)
    renumber[used] = np.arange(len(used))
    points = points[used]
    names = ["boundary"]
    edge_tag: dict[tuple[int, int], int] = {}
    if lines:
        physical_names = {int(value[0]): name for name, value in (data.field_data or {}).items()}
        for edges, tags in zip(lines, line_tags, strict=True):
            for (a, b), tag in zip(renumber[edges], tags, strict=True):
                name = physical_names.get(int(tag), f"tag_{int(tag)}")
                if name not in names:
                    names.append(name)
                edge_tag[(min(a, b), max(a, b))] = names.index(name)
    try:
        mesh = TriangleMesh.from_arrays(
            points,
            triangles.reshape(-1, 3),
            regions=np.concatenate(regions),
            boundary_names=names,
        )
    except ValueError as error:
        raise FileFormatError(path, str(error)) from None
    if edge_tag:
        tags = np.array(
            [edge_tag.get((min(a, b), max(a, b)), 0) for a, b in mesh.boundary_edges],
            dtype=np.int64,
        )
        tags.setflags(write=False)
        mesh = dataclasses.replace(mesh, boundary_tags=tags)
    return mesh
