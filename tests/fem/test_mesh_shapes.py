"""Meshes with elliptical and rotated rectangular holes: area, boundary nodes, the wave solver."""

from __future__ import annotations

import math

import numpy as np
import pytest

from physnet.fem import WaveSimulator, rectangle_mesh
from physnet.fem.mesh import Circle, Ellipse, Rectangle

H = 0.04
ELLIPSE = Ellipse(0.55, 0.5, 0.3, 0.15, angle=0.4)
SQUARE = Rectangle(1.45, 0.5, 0.2, 0.2, angle=math.pi / 6)


def local(shape, points):
    """Coordinates in the shape's own frame (centre at 0, first axis along ``angle``)."""
    cos, sin = math.cos(shape.angle), math.sin(shape.angle)
    dx, dy = points[:, 0] - shape.x, points[:, 1] - shape.y
    return cos * dx + sin * dy, -sin * dx + cos * dy


def ellipse_level(points, ellipse=ELLIPSE):
    u, v = local(ellipse, points)
    return (u / ellipse.a) ** 2 + (v / ellipse.b) ** 2


def square_level(points, square=SQUARE):
    u, v = local(square, points)
    return np.maximum(np.abs(u) / square.half_width, np.abs(v) / square.half_height)


def dense_outline(shape, n):
    """Points on the exact boundary of an ellipse or rectangle, ``n`` of them."""
    if isinstance(shape, Ellipse):
        t = 2 * math.pi * np.arange(n) / n
        u, v = shape.a * np.cos(t), shape.b * np.sin(t)
    else:
        s = np.linspace(-1, 1, n // 4, endpoint=False)
        w, h = shape.half_width, shape.half_height
        u = np.concatenate([w * s, np.full_like(s, w), -w * s, np.full_like(s, -w)])
        v = np.concatenate([np.full_like(s, -h), h * s, np.full_like(s, h), -h * s])
    cos, sin = math.cos(shape.angle), math.sin(shape.angle)
    return np.column_stack([shape.x + cos * u - sin * v, shape.y + sin * u + cos * v])


@pytest.fixture(scope="module")
def mesh():
    return rectangle_mesh((2.0, 1.0), H, holes=[ELLIPSE, SQUARE], seed=4)


def test_mesh_area_is_the_rectangle_minus_the_shapes(mesh):
    assert np.all(mesh.areas > 0.1 * H * H)  # counter-clockwise and well shaped
    assert mesh.mesh_size < 2 * H
    exact = 2.0 - math.pi * ELLIPSE.a * ELLIPSE.b - 4 * SQUARE.half_width * SQUARE.half_height
    # Exactly the rectangle minus the polygons of the hole nodes (the square's is the square;
    # the ellipse's is inscribed, short of it by about h^2 pi / 6 for nodes every h).
    edges = mesh.boundary_edges[mesh.boundary_tags == mesh.boundary_names.index("holes")]
    start, end = mesh.points[edges[:, 0]], mesh.points[edges[:, 1]]
    enclosed = -0.5 * np.sum(start[:, 0] * end[:, 1] - end[:, 0] * start[:, 1])
    assert mesh.areas.sum() == pytest.approx(2.0 - enclosed, rel=1e-12)
    assert 0 <= mesh.areas.sum() - exact < H * H


def test_hole_nodes_lie_on_the_shapes_every_mesh_size_with_the_corners(mesh):
    edges = mesh.boundary_edges[mesh.boundary_tags == mesh.boundary_names.index("holes")]
    nodes = mesh.points[np.unique(edges)]
    on_ellipse = np.abs(ellipse_level(nodes) - 1) < 1e-9
    on_square = np.abs(square_level(nodes) - 1) < 1e-9
    assert np.all(on_ellipse ^ on_square)
    lengths = np.linalg.norm(np.diff(mesh.points[edges], axis=1), axis=2).ravel()
    assert lengths.max() <= H * (1 + 1e-9) and lengths.min() > 0.5 * H
    # Every node of the shapes is used: the hole boundaries are the closed node polygons.
    assert len(edges) == len(nodes)
    perimeter = 8 * SQUARE.half_width
    square_edges = edges[np.abs(square_level(mesh.points[edges[:, 0]]) - 1) < 1e-9]
    square_lengths = np.linalg.norm(np.diff(mesh.points[square_edges], axis=1), axis=2)
    assert square_lengths.sum() == pytest.approx(perimeter, rel=1e-12)
    for corner in dense_outline(SQUARE, 4):
        assert np.min(np.hypot(*(nodes - corner).T)) < 1e-12


def test_no_triangle_inside_a_hole_and_interior_nodes_keep_half_a_mesh_size(mesh):
    centroids = mesh.centroids
    assert np.all(ellipse_level(centroids) > 1) and np.all(square_level(centroids) > 1)
    others = mesh.points[np.setdiff1d(np.arange(mesh.n_nodes), mesh.boundary_nodes())]
    for shape in (ELLIPSE, SQUARE):
        near = others[np.hypot(others[:, 0] - shape.x, others[:, 1] - shape.y) < 0.5]
        outline = dense_outline(shape, 4000)
        gap = near[:, None, :] - outline[None]
        distance = np.hypot(gap[..., 0], gap[..., 1]).min(axis=1)
        assert len(near) > 50 and distance.min() >= 0.5 * H * 0.99


def test_circles_as_tuples_or_circle_shapes_give_the_same_mesh():
    plain = rectangle_mesh((1.0, 1.0), 0.05, holes=[(0.3, 0.3, 0.1), (0.7, 0.7, 0.15)])
    shapes = rectangle_mesh(
        (1.0, 1.0), 0.05, holes=[Circle(0.3, 0.3, 0.1), (0.7, 0.7, 0.15)], seed=0
    )
    np.testing.assert_array_equal(plain.points, shapes.points)
    np.testing.assert_array_equal(plain.triangles, shapes.triangles)
    np.testing.assert_array_equal(plain.boundary_tags, shapes.boundary_tags)


def discrete_energy(simulator, previous, current, dt):
    """The leapfrog-conserved energy of undamped steps, at the half step."""
    velocity = (current - previous) / dt
    K = simulator.stiffness
    return 0.5 * velocity @ (simulator.mass * velocity) + 0.5 * previous @ (K @ current)


@pytest.mark.parametrize("outer", ["neumann", "dirichlet"])
def test_energy_is_conserved_around_ellipse_and_square_holes(outer):
    holes = [Ellipse(0.3, 0.65, 0.18, 0.09, angle=-0.6), Rectangle(0.7, 0.35, 0.1, 0.1, 0.3)]
    mesh = rectangle_mesh((1.0, 1.0), 1 / 24, holes=holes, seed=1)
    x, y = mesh.points.T
    pulse = np.exp(-((x - 0.6) ** 2 + (y - 0.7) ** 2) / 0.005)
    boundary = dict.fromkeys(("bottom", "right", "top", "left"), outer)
    simulator = WaveSimulator(mesh, speed=1.0, boundary={**boundary, "holes": "neumann"})
    dt = 0.5 * simulator.critical_time_step()
    m = round(0.8 / dt)
    times = np.array([0.0, dt, m * dt, (m + 1) * dt])
    values = simulator.run(times, dt=dt, initial_displacement=pulse).values
    assert np.all(np.isfinite(values))
    # The pulse has reached both holes by the end.
    nodes = mesh.boundary_nodes("holes")
    near_ellipse = np.hypot(*(mesh.points[nodes] - [0.3, 0.65]).T) < 0.2
    for part in (near_ellipse, ~near_ellipse):
        assert part.any() and np.abs(values[-1][nodes[part]]).max() > 1e-3
    start = discrete_energy(simulator, values[0], values[1], dt)
    end = discrete_energy(simulator, values[2], values[3], dt)
    assert end == pytest.approx(start, rel=1e-6)  # leapfrog conserves its discrete energy


def test_bad_hole_shapes_are_rejected():
    with pytest.raises(ValueError, match=r"hole Ellipse\(.*\) must lie inside the"):
        rectangle_mesh((1.0, 1.0), 0.05, holes=[Ellipse(0.5, 0.5, 0.48, 0.1)])
    # Upright it fits; turned by 45 degrees its corners come within a mesh size of the side.
    rectangle_mesh((1.0, 1.0), 0.05, holes=[Rectangle(0.16, 0.5, 0.1, 0.1)])
    with pytest.raises(ValueError, match=r"hole Rectangle\(.*\) must lie inside the"):
        rectangle_mesh((1.0, 1.0), 0.05, holes=[Rectangle(0.16, 0.5, 0.1, 0.1, math.pi / 4)])
    with pytest.raises(ValueError, match="has a semi-axis <= 0"):
        rectangle_mesh((1.0, 1.0), 0.05, holes=[Ellipse(0.5, 0.5, 0.2, 0.0)])
    with pytest.raises(ValueError, match="has a side <= 0"):
        rectangle_mesh((1.0, 1.0), 0.05, holes=[Rectangle(0.5, 0.5, -0.1, 0.1)])
    with pytest.raises(ValueError, match="non-finite"):
        rectangle_mesh((1.0, 1.0), 0.05, holes=[Ellipse(0.5, math.nan, 0.2, 0.1)])
    with pytest.raises(ValueError, match="must not overlap"):
        rectangle_mesh((1.0, 1.0), 0.05, holes=[Ellipse(0.35, 0.5, 0.2, 0.05), (0.65, 0.5, 0.1)])
    with pytest.raises(ValueError, match=r"expected a Circle, Ellipse, Rectangle or \(x, y"):
        rectangle_mesh((1.0, 1.0), 0.05, holes=[Ellipse(0.3, 0.5, 0.1, 0.05), (0.7, 0.5)])
