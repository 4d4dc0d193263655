"""The P1 leapfrog wave solver against analytic solutions, the CFL bound and energy balance."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg

from physnet.fem import (
    RickerSource,
    WaveSimulator,
    rectangle_mesh,
    ricker,
    structured_rectangle_mesh,
)


def standing_wave_error(mesh, t_end=0.5, courant=0.5):
    """Max nodal error of u = sin(pi x) sin(pi y) cos(sqrt(2) pi t) at t_end (c = 1)."""
    x, y = mesh.points.T
    simulator = WaveSimulator(mesh, speed=1.0, boundary="dirichlet")
    h = mesh.mesh_size
    n_steps = math.ceil(t_end / (courant * simulator.critical_time_step()))
    solution = simulator.run(
        [t_end], dt=t_end / n_steps, initial_displacement=np.sin(np.pi * x) * np.sin(np.pi * y)
    )
    exact = np.sin(np.pi * x) * np.sin(np.pi * y) * math.cos(math.sqrt(2) * math.pi * t_end)
    return float(np.abs(solution.values[-1] - exact).max()), h


def convergence_orders(meshes):
    errors, sizes = zip(*(standing_wave_error(mesh) for mesh in meshes), strict=True)
    orders = [
        math.log(errors[i] / errors[i + 1]) / math.log(sizes[i] / sizes[i + 1])
        for i in range(len(errors) - 1)
    ]
    return errors, sizes, orders


def test_standing_wave_converges_second_order_in_h():
    errors, sizes, orders = convergence_orders([structured_rectangle_mesh(n) for n in (8, 16, 32)])
    for h, error in zip(sizes, errors, strict=True):
        print(f"h = {h:.4f}  max error = {error:.3e}")
    print(f"measured convergence orders (structured P1, leapfrog, dt ~ h): {orders}")
    assert errors[-1] < 5e-3
    assert min(orders) >= 1.8


def test_standing_wave_converges_second_order_on_unstructured_meshes():
    meshes = [
        rectangle_mesh((1.0, 1.0), h, jitter=0.15, seed=0) for h in (1 / 8, 1 / 16, 1 / 32, 1 / 64)
    ]
    errors, sizes, orders = convergence_orders(meshes)
    fitted = np.polyfit(np.log(sizes), np.log(errors), 1)[0]
    print(f"measured convergence orders (unstructured P1): {orders}, fitted {fitted:.3f}")
    assert fitted >= 1.8


def test_critical_time_step_matches_dense_generalised_eigenvalues():
    mesh = rectangle_mesh((1.0, 0.8), 0.1, holes=[(0.5, 0.4, 0.15)], seed=3)
    speed = np.where(mesh.centroids[:, 0] > 0.5, 2.0, 1.0)
    simulator = WaveSimulator(mesh, speed=speed, boundary={"left": "dirichlet"})
    free = simulator.free
    K = simulator.stiffness.toarray()[np.ix_(free, free)]
    largest = scipy.linalg.eigh(K, np.diag(simulator.mass[free]), eigvals_only=True)[-1]
    assert simulator.critical_time_step() == pytest.approx(2 / math.sqrt(largest), rel=1e-6)


def test_time_step_above_the_cfl_bound_is_an_error_and_would_blow_up():
    mesh = structured_rectangle_mesh(10)
    simulator = WaveSimulator(mesh, speed=1.0)
    critical = simulator.critical_time_step()
    with pytest.raises(ValueError, match="violates the CFL condition"):
        simulator.run([1.0], dt=1.02 * critical)
    noise = np.random.default_rng(0).standard_normal(mesh.n_nodes)
    stable = simulator._leapfrog(
        np.array([4.0]), 0.98 * critical, round(4.0 / (0.98 * critical)), (), noise, None, False
    )
    unstable = simulator._leapfrog(
        np.array([4.0]), 1.02 * critical, round(4.0 / (1.02 * critical)), (), noise, None, False
    )
    assert np.abs(stable.values).max() < 10 * np.abs(noise).max()
    assert np.abs(unstable.values).max() > 1e3 * np.abs(noise).max()


def discrete_energy(simulator, previous, current, dt):
    """The leapfrog-conserved energy of undamped steps, at the half step."""
    velocity = (current - previous) / dt
    K = simulator.stiffness
    return 0.5 * velocity @ (simulator.mass * velocity) + 0.5 * previous @ (K @ current)


def test_energy_is_conserved_with_neumann_and_leaves_through_absorbing_boundaries():
    mesh = rectangle_mesh((1.0, 1.0), 1 / 24, seed=1)
    x, y = mesh.points.T
    pulse = np.exp(-((x - 0.5) ** 2 + (y - 0.5) ** 2) / 0.005)
    energies = {}
    for kind in ("neumann", "absorbing"):
        simulator = WaveSimulator(mesh, speed=1.0, boundary=kind)
        dt = 0.5 * simulator.critical_time_step()
        m = round(1.5 / dt)
        times = np.array([0.0, dt, m * dt, (m + 1) * dt])
        values = simulator.run(times, dt=dt, initial_displacement=pulse).values
        energies[kind] = (
            discrete_energy(simulator, values[0], values[1], dt),
            discrete_energy(simulator, values[2], values[3], dt),
        )
    start, end = energies["neumann"]
    assert end == pytest.approx(start, rel=1e-6)  # leapfrog conserves its discrete energy
    start, end = energies["absorbing"]
    assert end < 0.05 * start  # the pulse has left through the absorbing walls


def test_ricker_point_source_reaches_a_receiver_at_the_wave_speed():
    mesh = rectangle_mesh((2.0, 1.0), 0.025, seed=0)
    speed = 1.5
    source = RickerSource((0.4, 0.5), peak_frequency=6.0)
    simulator = WaveSimulator(mesh, speed=speed, boundary="absorbing")
    receiver = np.argmin(np.hypot(*(mesh.points - [1.6, 0.5]).T))
    distance = np.hypot(*(mesh.points[receiver] - [0.4, 0.5]))
    times = np.linspace(0.0, 1.5, 601)
    trace = simulator.run(times, sources=[source]).values[:, receiver]
    # The 2-D Green's function peaks just after the arrival; the delay of the wavelet's peak.
    arrival = times[np.argmax(np.abs(trace))] - 1.2 / 6.0
    assert arrival == pytest.approx(distance / speed, abs=0.06)
    assert ricker(0.0, 6.0) == pytest.approx(0.0, abs=1e-4)


def test_bad_inputs_name_the_argument():
    mesh = structured_rectangle_mesh(4)
    with pytest.raises(ValueError, match="speed must be positive"):
        WaveSimulator(mesh, speed=-1.0)
    with pytest.raises(ValueError, match="boundary\\['left'\\] = 'sticky'"):
        WaveSimulator(mesh, boundary={"left": "sticky"})
    with pytest.raises(ValueError, match="boundary names \\['outer'\\]"):
        WaveSimulator(mesh, boundary={"outer": "dirichlet"})
    with pytest.raises(ValueError, match="non-decreasing"):
        WaveSimulator(mesh).run([0.2, 0.1])
    with pytest.raises(ValueError, match="outside the mesh"):
        WaveSimulator(mesh).run([0.1], sources=[RickerSource((2.0, 0.5), 5.0)])


@pytest.mark.slow
def test_standing_wave_convergence_order_on_finer_meshes():
    *_, orders = convergence_orders([structured_rectangle_mesh(n) for n in (32, 64, 128)])
    print(f"measured convergence orders (structured, h = 1/32 ... 1/128): {orders}")
    assert min(orders) >= 1.9


def test_solution_writes_its_xdmf_time_series(tmp_path):
    import meshio

    mesh = structured_rectangle_mesh(6)
    solution = WaveSimulator(mesh, speed=2.0).run(
        [0.0, 0.1], initial_displacement=lambda x, y: np.sin(np.pi * x) * np.sin(np.pi * y)
    )
    solution.write_xdmf(tmp_path / "run.xdmf")
    with meshio.xdmf.TimeSeriesReader(tmp_path / "run.xdmf") as reader:
        reader.read_points_cells()
        _, point_data, cell_data = reader.read_data(1)
    np.testing.assert_allclose(point_data["u"], solution.values[1])
    np.testing.assert_allclose(cell_data["speed"][0], 2.0)
