"""examples/smoke_plume.py: the MAC-grid projection, the dumped systems and the outputs."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse.linalg

import physnet
from physnet.operators import AIR, FLUID, SOLID

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "smoke_plume.py"
RTOL = 1e-6
FRAMES = 3


@pytest.fixture(scope="module")
def smoke():
    spec = importlib.util.spec_from_file_location("smoke_plume_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while being built
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)


@pytest.fixture(scope="module")
def simulation(smoke, tmp_path_factory):
    dump = tmp_path_factory.mktemp("systems")
    result = smoke.simulate(
        24, FRAMES, methods=("amg", "ic"), rtol=RTOL, dump_systems=dump, progress=False
    )
    return result, dump


def test_flags_have_obstacles_walls_and_an_open_top(smoke):
    flags = smoke.build_flags(32)
    assert flags.dtype == np.int8
    assert (flags[:, -1] == AIR).all()
    assert (flags[:, :-1] != AIR).all()
    assert (flags == SOLID).sum() > 0
    assert not (flags[smoke.source_mask(32)] != FLUID).any()
    flags3 = smoke.build_flags(16, ndim=3)
    assert flags3.shape == (16, 16, 16)
    assert (flags3[:, -1, :] == AIR).all()


@pytest.mark.parametrize("ndim", [2, 3])
def test_projection_with_the_exact_pressure_is_divergence_free(smoke, ndim):
    """The MAC divergence and gradient match GridPoisson: an exact solve leaves div u = 0."""
    size, dt = 12, 0.05
    h = 1.0 / size
    flags = smoke.build_flags(size, ndim)
    walls = smoke.solid_faces(flags)
    rng = np.random.default_rng(0)
    velocity = [
        rng.standard_normal(tuple(n + (d == axis) for d, n in enumerate(flags.shape)))
        for axis in range(ndim)
    ]
    smoke.enforce_walls(velocity, walls)
    fluid = flags == FLUID
    before = smoke.divergence(velocity, h)[fluid]

    A = physnet.GridPoisson(flags, h=h)
    pressure = scipy.sparse.linalg.spsolve(A.to_csr().tocsc(), -before / dt)
    smoke.subtract_pressure_gradient(velocity, A.scatter(pressure), walls, dt, h)
    after = smoke.divergence(velocity, h)[fluid]

    assert np.linalg.norm(after) <= 1e-10 * np.linalg.norm(before)
    for component, wall in zip(velocity, walls, strict=True):
        assert not component[wall].any()  # no flow through solid faces


def test_simulation_projects_to_the_solver_tolerance(simulation):
    result, _ = simulation
    before = np.asarray(result.divergence_before)
    after = np.asarray(result.divergence_after)
    assert (before > 0).all()
    ratio = after / before
    # div(u_new) = -dt (b - A p) on the fluid cells: the ratio is the relative residual.
    np.testing.assert_allclose(ratio, result.stats["amg"].relative_residual, rtol=1e-6)
    assert (ratio <= RTOL * (1 + 1e-6)).all()
    max_before = np.asarray(result.max_divergence_before)
    max_after = np.asarray(result.max_divergence_after)
    assert (max_after <= 10 * RTOL * max_before).all()
    for record in result.stats.values():
        assert all(record.converged) and len(record.iterations) == FRAMES
    assert len(result.frames) == FRAMES
    assert result.frames[-1].max() > 0
    assert not result.frames[-1][result.flags == SOLID].any()


def test_dumped_systems_are_the_solved_systems(simulation):
    result, dump = simulation
    paths = sorted(dump.glob("frame_*.npz"))
    assert [p.name for p in paths] == [f"frame_{k:04d}.npz" for k in range(FRAMES)]
    reference = result.operator.to_csr()
    solutions = []
    systems = []
    for path in paths:
        with np.load(path) as data:
            assert set(data.files) == {"flags", "rhs", "x0", "h"}
            flags, rhs, x0, h = data["flags"], data["rhs"], data["x0"], float(data["h"])
        assert flags.dtype == np.int8 and rhs.dtype == np.float64 and x0.dtype == np.float64
        assert rhs.shape == x0.shape == flags.shape
        np.testing.assert_array_equal(flags, result.flags)
        assert not rhs[flags != FLUID].any() and not x0[flags != FLUID].any()
        A = physnet.GridPoisson(flags, h=h)
        assert (A.to_csr() != reference).nnz == 0
        systems.append((A, A.gather(rhs)))
        solutions.append(A.gather(x0))
    assert not solutions[0].any()  # the first frame starts cold
    # Each frame is warm-started from the previous frame's pressure, which solved it.
    solutions = [*solutions[1:], result.operator.gather(result.pressure)]
    for (A, b), x in zip(systems, solutions, strict=True):
        assert np.linalg.norm(b - A @ x) <= RTOL * (1 + 1e-6) * np.linalg.norm(b)


def test_main_writes_the_animation_and_the_plot(smoke, tmp_path, monkeypatch, capsys):
    from PIL import Image

    out = tmp_path / "smoke"
    argv = ["smoke_plume.py", "--size", "16", "--frames", "2", "--methods", "amg,ic"]
    monkeypatch.setattr(sys, "argv", [*argv, "--out", str(out)])
    smoke.main()
    with Image.open(out / "smoke.gif") as gif:
        assert gif.n_frames == 2
    with Image.open(out / "solvers.png") as png:
        assert png.format == "PNG"
    table = capsys.readouterr().out
    assert "median it" in table and "\namg " in table and "\nic " in table
