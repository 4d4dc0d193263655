"""Meshes (generated and read through meshio), P1 assembly, grid interpolation, XDMF output."""

from __future__ import annotations

import math
import os

import meshio
import numpy as np
import pytest

from physnet._io import FileFormatError
from physnet.fem import (
    GridInterpolator,
    TriangleMesh,
    boundary_mass,
    locate_points,
    lumped_mass,
    point_load,
    read_mesh,
    rectangle_mesh,
    stiffness_matrix,
    structured_rectangle_mesh,
    write_xdmf,
)


def polygon_area(n, radius):
    return 0.5 * n * radius**2 * math.sin(2 * math.pi / n)


def test_rectangle_with_holes_and_inclusions_is_a_valid_mesh():
    h = 0.04
    holes = [(0.5, 0.3, 0.12), (1.5, 0.6, 0.1)]
    inclusions = [(1.0, 0.55, 0.2)]
    mesh = rectangle_mesh((2.0, 1.0), h, holes=holes, inclusions=inclusions, seed=4)
    assert np.all(mesh.areas > 0.1 * h * h)  # counter-clockwise and well shaped
    assert mesh.mesh_size < 2 * h
    # Area: the rectangle minus the inscribed polygons of the holes (nodes every ~h).
    expected = 2.0 - sum(polygon_area(math.ceil(2 * math.pi * r / h), r) for *_, r in holes)
    assert mesh.areas.sum() == pytest.approx(expected, rel=1e-12)
    lengths = {}
    for index, name in enumerate(mesh.boundary_names):
        edges = mesh.boundary_edges[mesh.boundary_tags == index]
        lengths[name] = np.linalg.norm(np.diff(mesh.points[edges], axis=1), axis=2).sum()
    assert lengths["bottom"] == pytest.approx(2.0) and lengths["left"] == pytest.approx(1.0)
    hole_perimeter = sum(
        2 * math.ceil(2 * math.pi * r / h) * r * math.sin(math.pi / math.ceil(2 * math.pi * r / h))
        for *_, r in holes
    )
    assert lengths["holes"] == pytest.approx(hole_perimeter)
    inclusion_area = mesh.areas[mesh.regions == 1].sum()
    assert inclusion_area == pytest.approx(math.pi * 0.2**2, rel=0.03)


def test_overlapping_or_escaping_circles_are_rejected():
    with pytest.raises(ValueError, match="must not overlap"):
        rectangle_mesh((1.0, 1.0), 0.05, holes=[(0.4, 0.5, 0.15)], inclusions=[(0.6, 0.5, 0.1)])
    with pytest.raises(ValueError, match="inside the"):
        rectangle_mesh((1.0, 1.0), 0.05, holes=[(0.1, 0.5, 0.1)])
    with pytest.raises(ValueError, match="mesh_size"):
        rectangle_mesh((1.0, 1.0), -1.0)


def test_p1_matrices_integrate_exactly():
    mesh = rectangle_mesh((1.5, 1.0), 0.1, seed=2)
    x, y = mesh.points.T
    K = stiffness_matrix(mesh, 2.0)
    # a(u, v) = 2 * integral grad u . grad v is exact for linear u, v: grad x . grad y = 0.
    assert x @ (K @ x) == pytest.approx(2.0 * 1.5)
    assert abs(x @ (K @ y)) < 1e-12
    assert (K - K.T).count_nonzero() == 0 or abs(K - K.T).max() < 1e-12
    assert lumped_mass(mesh).sum() == pytest.approx(1.5)
    assert boundary_mass(mesh, names=["top", "left"]).sum() == pytest.approx(2.5)


def test_point_location_and_loads_reproduce_linear_functions():
    mesh = rectangle_mesh((1.0, 1.0), 0.1, holes=[(0.5, 0.5, 0.2)], seed=0)
    queries = np.random.default_rng(1).uniform(0, 1, (500, 2))
    triangles, weights = locate_points(mesh, queries)
    inside_hole = np.hypot(*(queries - 0.5).T) < 0.2 * math.cos(math.pi / 13)
    assert np.all(triangles[inside_hole] == -1)
    found = triangles >= 0
    corners = mesh.points[mesh.triangles[triangles[found]]]
    np.testing.assert_allclose(np.einsum("pi,pid->pd", weights[found], corners), queries[found])
    load = point_load(mesh, (0.13, 0.71))
    assert load.sum() == pytest.approx(1.0)
    assert load @ (3 * mesh.points[:, 0] - mesh.points[:, 1]) == pytest.approx(0.39 - 0.71)


def test_grid_interpolation_is_exact_for_linear_fields_and_masks_holes():
    mesh = rectangle_mesh((1.0, 1.0), 0.08, holes=[(0.5, 0.5, 0.2)], seed=0)
    to_grid = GridInterpolator(mesh, (32, 32), bounds=(0, 0, 1, 1), fill_value=np.nan)
    x, y = mesh.points.T
    gridded = to_grid(np.stack([1 + 2 * x - y, x * 0]))
    grid_x, grid_y = to_grid.points[..., 0], to_grid.points[..., 1]
    np.testing.assert_allclose(gridded[0][to_grid.mask], (1 + 2 * grid_x - grid_y)[to_grid.mask])
    assert np.all(np.isnan(gridded[0][~to_grid.mask]))
    centre = np.hypot(grid_x - 0.5, grid_y - 0.5)
    assert np.all(~to_grid.mask[centre < 0.18]) and np.all(to_grid.mask[centre > 0.21])
    speed = to_grid.cell_values(np.arange(mesh.n_triangles, dtype=float))
    assert np.all(speed[to_grid.mask] == to_grid.triangles[to_grid.mask])


def test_xdmf_time_series_round_trips_through_meshio(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    os.mkdir("out")
    mesh = rectangle_mesh((1.0, 1.0), 0.2, seed=0)
    values = np.random.default_rng(0).standard_normal((3, mesh.n_nodes))
    write_xdmf(
        tmp_path / "out" / "wave.xdmf",
        mesh,
        [0.0, 0.5, 1.0],
        values,
        cell_data={"speed": np.ones(mesh.n_triangles)},
    )
    assert sorted(os.listdir(tmp_path / "out")) == ["wave.h5", "wave.xdmf"]
    assert os.listdir(tmp_path) == ["out"] and os.getcwd() == os.fspath(tmp_path)
    with meshio.xdmf.TimeSeriesReader(tmp_path / "out" / "wave.xdmf") as reader:
        _, cells = reader.read_points_cells()
        np.testing.assert_array_equal(cells[0].data, mesh.triangles)
        for step in range(reader.num_steps):
            time, point_data, _ = reader.read_data(step)
            assert time == [0.0, 0.5, 1.0][step]
            np.testing.assert_array_equal(point_data["u"], values[step])
    with pytest.raises(ValueError, match="expected \\(n_times=2"):
        write_xdmf(tmp_path / "bad.xdmf", mesh, [0.0, 1.0], values)


def test_read_mesh_takes_gmsh_physical_names(tmp_path):
    mesh = structured_rectangle_mesh(2)
    bottom = mesh.boundary_edges[mesh.boundary_tags == 0]
    data = meshio.Mesh(
        np.column_stack([mesh.points, np.zeros(mesh.n_nodes)]),
        [("triangle", mesh.triangles), ("line", bottom)],
        cell_data={
            "gmsh:physical": [np.full(mesh.n_triangles, 7), np.full(len(bottom), 3)],
            "gmsh:geometrical": [np.zeros(mesh.n_triangles, int), np.zeros(len(bottom), int)],
        },
        field_data={"inlet": np.array([3, 1]), "body": np.array([7, 2])},
    )
    path = tmp_path / "square.msh"
    meshio.write(path, data, file_format="gmsh22", binary=False)
    read = read_mesh(path)
    assert isinstance(read, TriangleMesh) and read.boundary_names == ("boundary", "inlet")
    assert np.all(read.regions == 7)
    inlet = read.boundary_edges[read.boundary_tags == 1]
    assert len(inlet) == 2 and np.all(read.points[inlet][..., 1] == 0)
    (tmp_path / "junk.msh").write_text("not a mesh")
    with pytest.raises(FileFormatError, match=r"junk\.msh"):
        read_mesh(tmp_path / "junk.msh")
