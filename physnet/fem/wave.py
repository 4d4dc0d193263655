"""The scalar wave equation ``u_tt = div(c^2 grad u) + s`` on triangle meshes: P1 elements,
mass lumping and explicit leapfrog (central differences) time stepping.

Examples
--------
>>> import numpy as np
>>> from physnet.fem import RickerSource, WaveSimulator, rectangle_mesh
>>> mesh = rectangle_mesh((1.0, 1.0), 0.05)
>>> simulator = WaveSimulator(mesh, speed=1.0, boundary="absorbing")
>>> solution = simulator.run(
...     np.linspace(0.0, 0.5, 6), sources=[RickerSource((0.5, 0.5), peak_frequency=8.0)]
... )
>>> solution.values.shape, bool(solution.dt <= simulator.critical_time_step())
((6, 498), True)
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import scipy.sparse

from physnet.fem.mesh import TriangleMesh
from physnet.fem.p1 import boundary_mass, lumped_mass, point_load, stiffness_matrix

__all__ = ["BOUNDARY_CONDITIONS", "RickerSource", "WaveSimulator", "WaveSolution", "ricker"]

#: Boundary conditions a boundary part can have.
BOUNDARY_CONDITIONS = ("dirichlet", "neumann", "absorbing")


def ricker(
    t: Any, peak_frequency: float, delay: float | None = None, amplitude: float = 1.0
) -> np.ndarray:
    """The Ricker wavelet (Mexican hat): ``A (1 - 2 a) exp(-a)`` with
    ``a = (pi f (t - t0))^2``.

    Parameters
    ----------
    t : array_like
        Times (s).
    peak_frequency : float
        ``f``, the frequency (Hz) where the wavelet's spectrum peaks.
    delay : float, optional
        ``t0``, the time of the peak; default ``1.2 / f``, where the wavelet has decayed to
        below 1e-5 of its peak at ``t = 0`` (a smooth start from rest).
    amplitude : float, default 1.0

    Examples
    --------
    >>> float(ricker(0.25, peak_frequency=4.0, delay=0.25))
    1.0
    """
    if not peak_frequency > 0:
        raise ValueError(f"ricker: peak_frequency={peak_frequency!r}, expected a positive number")
    delay = 1.2 / peak_frequency if delay is None else delay
    a = (math.pi * peak_frequency * (np.asarray(t, dtype=np.float64) - delay)) ** 2
    return amplitude * (1.0 - 2.0 * a) * np.exp(-a)


@dataclasses.dataclass(frozen=True)
class RickerSource:
    """A point source ``s(x, t) = ricker(t) delta(x - position)``.

    Attributes
    ----------
    position : (float, float)
    peak_frequency : float
        Hz.
    amplitude : float, default 1.0
    delay : float, optional
        Time of the peak (default ``1.2 / peak_frequency``).
    """

    position: tuple[float, float]
    peak_frequency: float
    amplitude: float = 1.0
    delay: float | None = None

    def __call__(self, t: Any) -> np.ndarray:
        return ricker(t, self.peak_frequency, self.delay, self.amplitude)


@dataclasses.dataclass(frozen=True, eq=False)
class WaveSolution:
    """Snapshots of a simulation.

    Attributes
    ----------
    mesh : TriangleMesh
    times : ndarray, shape (n_times,)
    values : ndarray, shape (n_times, n_nodes)
        The nodal values of ``u`` at ``times``.
    speed : ndarray, shape (n_triangles,)
        The wave speed of each triangle.
    dt : float
        The time step used.
    n_steps : int
        Leapfrog steps taken.
    """

    mesh: TriangleMesh
    times: np.ndarray
    values: np.ndarray
    speed: np.ndarray
    dt: float
    n_steps: int

    def write_xdmf(self, path: Any, *, name: str = "u") -> None:
        """Write the snapshots as an XDMF time series (see :func:`physnet.fem.write_xdmf`)."""
        from physnet.fem.io import write_xdmf

        write_xdmf(
            path, self.mesh, self.times, self.values, name=name, cell_data={"speed": self.speed}
        )


class WaveSimulator:
    """Explicit P1 finite-element solver of ``u_tt = div(c^2 grad u) + s`` in 2-D.

    Parameters
    ----------
    mesh : TriangleMesh
    speed : float, array_like of shape (n_triangles,), or callable
        The wave speed ``c > 0``: one number, one value per triangle, or a function
        ``speed(x, y)`` evaluated at the triangle centroids (vectorised over arrays).
    boundary : str or mapping, default "dirichlet"
        One of ``"dirichlet"`` (``u = 0``), ``"neumann"`` (``c^2 du/dn = 0``, a rigid
        wall) or ``"absorbing"`` (first-order absorbing ``du/dn = -u_t / c``) for the whole
        boundary, or a mapping from the mesh's boundary names to these (parts left out are
        Neumann).

    Attributes
    ----------
    stiffness : scipy.sparse.csr_array
        ``K``, the stiffness matrix with coefficient ``c^2``.
    mass : ndarray
        ``M``, the lumped mass (its diagonal).
    damping : ndarray
        ``B``, the lumped absorbing-boundary matrix: ``w_e = c`` on absorbing edges.
    free : ndarray of bool
        Nodes that are not on a Dirichlet boundary.

    Notes
    -----
    The weak form with lumped mass ``M``, stiffness ``K`` and the absorbing-boundary
    matrix ``B`` (from ``integral over the boundary of c u_t v``) is

    .. math:: M \\ddot u + B \\dot u + K u = f(t),

    discretised by central differences (leapfrog),

    .. math:: \\Big(\\frac{M}{\\Delta t^2} + \\frac{B}{2\\Delta t}\\Big) u^{n+1}
       = f^n - K u^n + \\frac{M}{\\Delta t^2}(2u^n - u^{n-1}) + \\frac{B}{2\\Delta t} u^{n-1},

    explicit because ``M`` and ``B`` are diagonal, and second-order accurate in time. The
    first step is the Taylor step ``u^1 = u^0 + dt v^0 + dt^2/2 a^0``. Without damping the
    scheme is stable if and only if ``dt < 2 / sqrt(lambda_max(M^-1 K))`` (the CFL bound);
    the damping only adds stability. Point sources load ``f_i = s(t) phi_i(x_0)``.

    Examples
    --------
    >>> from physnet.fem import WaveSimulator, structured_rectangle_mesh
    >>> simulator = WaveSimulator(structured_rectangle_mesh(8), speed=1.0)
    >>> round(simulator.critical_time_step(), 4)  # h/sqrt(2)/sin(7 pi/16): the 5-point stencil's
    0.0901
    """

    def __init__(
        self,
        mesh: TriangleMesh,
        speed: float | Any | Callable[..., Any] = 1.0,
        boundary: str | Mapping[str, str] = "dirichlet",
    ) -> None:
        if not isinstance(mesh, TriangleMesh):
            raise TypeError(
                f"WaveSimulator: mesh must be a TriangleMesh, got {type(mesh).__name__}"
            )
        self.mesh = mesh
        if callable(speed):
            centroids = mesh.centroids
            speed = speed(centroids[:, 0], centroids[:, 1])
        speed = np.asarray(speed, dtype=np.float64)
        if speed.ndim == 0:
            speed = np.full(mesh.n_triangles, float(speed))
        if speed.shape != (mesh.n_triangles,):
            raise ValueError(
                f"WaveSimulator: speed of shape {speed.shape}, expected a number, a function "
                f"of (x, y) or one value per triangle ({mesh.n_triangles},)"
            )
        if not (np.all(np.isfinite(speed)) and speed.min() > 0):
            raise ValueError(
                f"WaveSimulator: the wave speed must be positive and finite, got values in "
                f"[{speed.min()}, {speed.max()}]"
            )
        self.speed = speed
        self.boundary = self._check_boundary(boundary)

        self.stiffness = stiffness_matrix(mesh, speed**2)
        self.mass = lumped_mass(mesh)
        absorbing = [name for name, kind in self.boundary.items() if kind == "absorbing"]
        dirichlet = [name for name, kind in self.boundary.items() if kind == "dirichlet"]
        self.damping = np.zeros(mesh.n_nodes)
        if absorbing:
            # c on a boundary edge: the speed of the triangle the edge belongs to.
            self.damping = boundary_mass(mesh, self._edge_speed(), names=absorbing)
        self.free = np.ones(mesh.n_nodes, dtype=bool)
        if dirichlet:
            self.free[mesh.boundary_nodes(dirichlet)] = False
        self._critical_time_step: float | None = None

    def _check_boundary(self, boundary: str | Mapping[str, str]) -> dict[str, str]:
        names = self.mesh.boundary_names
        if isinstance(boundary, str):
            boundary = dict.fromkeys(names, boundary)
        if not isinstance(boundary, Mapping):
            raise TypeError(
                f"WaveSimulator: boundary must be a string or a mapping from boundary names "
                f"to conditions, got {type(boundary).__name__}"
            )
        unknown = sorted(set(boundary) - set(names))
        if unknown:
            raise ValueError(
                f"WaveSimulator: boundary names {unknown} are not in the mesh; its boundary "
                f"parts are {list(names)}"
            )
        for name, kind in boundary.items():
            if kind not in BOUNDARY_CONDITIONS:
                raise ValueError(
                    f"WaveSimulator: boundary[{name!r}] = {kind!r}, expected one of "
                    f"{BOUNDARY_CONDITIONS}"
                )
        return {name: boundary.get(name, "neumann") for name in names}

    def _edge_speed(self) -> np.ndarray:
        # Boundary edges keep the orientation of their triangle, so directed keys match.
        triangles, n = self.mesh.triangles, self.mesh.n_nodes
        edges = np.concatenate([triangles[:, [0, 1]], triangles[:, [1, 2]], triangles[:, [2, 0]]])
        keys = edges[:, 0] * n + edges[:, 1]
        order = np.argsort(keys)
        boundary = self.mesh.boundary_edges
        position = np.searchsorted(keys[order], boundary[:, 0] * n + boundary[:, 1])
        owner = order[position] % len(triangles)
        return self.speed[owner]

    def critical_time_step(self) -> float:
        """The CFL bound ``2 / sqrt(lambda_max(M^-1 K))`` over the non-Dirichlet nodes.

        ``lambda_max`` is the largest eigenvalue of the symmetric matrix
        ``M^-1/2 K M^-1/2`` (ARPACK, relative tolerance 1e-8, started from a fixed vector so
        the result is reproducible).
        """
        if self._critical_time_step is None:
            from scipy.sparse.linalg import eigsh

            free = self.free
            scale = 1.0 / np.sqrt(self.mass[free])
            K = self.stiffness[free][:, free]
            A = scipy.sparse.diags_array(scale) @ K @ scipy.sparse.diags_array(scale)
            if A.shape[0] <= 64:
                largest = float(np.linalg.eigvalsh(A.toarray())[-1])
            else:
                start = np.cos(np.arange(A.shape[0]) * 1.2345)  # not orthogonal to the top mode
                largest = float(eigsh(A, k=1, which="LA", tol=1e-8, v0=start)[0][0])
            self._critical_time_step = 2.0 / math.sqrt(largest) if largest > 0 else math.inf
        return self._critical_time_step

    def run(
        self,
        times: Sequence[float] | np.ndarray,
        *,
        dt: float | None = None,
        safety: float = 0.9,
        sources: Sequence[RickerSource] = (),
        initial_displacement: Any = None,
        initial_velocity: Any = None,
        progress: bool = False,
    ) -> WaveSolution:
        """Integrate from ``t = 0`` and return the solution at ``times``.

        Parameters
        ----------
        times : sequence of float
            Non-decreasing snapshot times ``>= 0``. A time between two steps is linearly
            interpolated (exact when it falls on a step).
        dt : float, optional
            The time step; default the largest ``dt <= safety * critical_time_step()``
            that divides ``max(times)`` into whole steps.
        safety : float, default 0.9
            Fraction of the CFL bound used for the default ``dt``.
        sources : sequence of RickerSource
        initial_displacement, initial_velocity : array_like or callable, optional
            ``u(x, 0)`` and ``u_t(x, 0)``: nodal values (n_nodes,) or functions ``f(x, y)``;
            default 0.
        progress : bool, default False
            Show a progress bar.

        Returns
        -------
        WaveSolution

        Raises
        ------
        ValueError
            If ``dt`` exceeds the CFL bound ``2 / sqrt(lambda_max(M^-1 K))`` (the scheme
            would blow up), for times that are negative or decreasing, or a source outside
            the mesh.
        """
        times = np.asarray(times, dtype=np.float64).ravel()
        if times.size == 0 or times.min() < 0 or np.any(np.diff(times) < 0):
            raise ValueError(
                "WaveSimulator.run: times must be a non-empty, non-decreasing sequence of "
                f"times >= 0, got {times}"
            )
        if not 0 < safety <= 1:
            raise ValueError(f"WaveSimulator.run: safety={safety!r}, expected 0 < safety <= 1")
        critical = self.critical_time_step()
        t_end = float(times[-1])
        if dt is None:
            n_steps = max(1, math.ceil(t_end / (safety * critical))) if t_end > 0 else 0
            dt = t_end / n_steps if n_steps else safety * critical
        else:
            dt = float(dt)
            if not dt > 0:
                raise ValueError(f"WaveSimulator.run: dt={dt!r}, expected a positive time step")
            if dt >= critical:
                raise ValueError(
                    f"WaveSimulator.run: dt={dt:.6g} violates the CFL condition dt < 2 / "
                    f"sqrt(lambda_max(M^-1 K)) = {critical:.6g} for this mesh and wave speed "
                    "(explicit leapfrog would blow up); use a smaller dt or leave dt=None"
                )
            n_steps = math.ceil(t_end / dt - 1e-9)
        return self._leapfrog(
            times, dt, n_steps, sources, initial_displacement, initial_velocity, progress
        )

    def _nodal(self, value: Any, name: str) -> np.ndarray:
        if value is None:
            return np.zeros(self.mesh.n_nodes)
        if callable(value):
            value = value(self.mesh.points[:, 0], self.mesh.points[:, 1])
        array = np.asarray(value, dtype=np.float64)
        if array.ndim == 0:
            array = np.full(self.mesh.n_nodes, float(array))
        if array.shape != (self.mesh.n_nodes,):
            raise ValueError(
                f"WaveSimulator.run: {name} of shape {array.shape}, expected ({self.mesh.n_nodes},)"
                " nodal values or a function of (x, y)"
            )
        return array

    def _leapfrog(
        self, times, dt, n_steps, sources, initial_displacement, initial_velocity, progress
    ) -> WaveSolution:
        from tqdm.auto import tqdm

        free = self.free
        K = self.stiffness[free][:, free]
        M, B = self.mass[free], self.damping[free]
        loads = np.zeros((int(free.sum()), len(sources)))
        for index, source in enumerate(sources):
            if not isinstance(source, RickerSource):
                raise TypeError(
                    f"WaveSimulator.run: sources[{index}] is a {type(source).__name__}, "
                    "expected a RickerSource"
                )
            loads[:, index] = point_load(self.mesh, source.position)[free]

        def force(t: float) -> np.ndarray:
            if not sources:
                return 0.0
            return loads @ np.array([source(t) for source in sources])

        u0 = self._nodal(initial_displacement, "initial_displacement")
        v0 = self._nodal(initial_velocity, "initial_velocity")
        values = np.zeros((len(times), self.mesh.n_nodes))
        previous = u0[free].copy()
        acceleration = (force(0.0) - K @ previous - B * v0[free]) / M
        current = previous + dt * v0[free] + 0.5 * dt * dt * acceleration
        inverse_lhs = 1.0 / (M / dt**2 + B / (2.0 * dt))
        mass_over_dt2, damping_over_2dt = M / dt**2, B / (2.0 * dt)

        # Snapshot bookkeeping: times[j] lies in [step * dt, (step + 1) * dt].
        snapshot = 0
        snapshot = self._record(values, times, snapshot, 0, dt, previous, current, free)
        bar = tqdm(total=n_steps, disable=not progress, desc="leapfrog", leave=False)
        bar.update(min(1, n_steps))
        for step in range(1, n_steps):
            following = inverse_lhs * (
                force(step * dt)
                - K @ current
                + mass_over_dt2 * (2.0 * current - previous)
                + damping_over_2dt * previous
            )
            previous, current = current, following
            snapshot = self._record(values, times, snapshot, step, dt, previous, current, free)
            bar.update()
        bar.close()
        if n_steps == 0:
            values[:, free] = u0[free]
        return WaveSolution(self.mesh, times, values, self.speed, float(dt), int(n_steps))

    @staticmethod
    def _record(values, times, snapshot, step, dt, previous, current, free) -> int:
        """Fill the snapshots with times in [step dt, (step + 1) dt] from u^step, u^(step+1)."""
        end = (step + 1) * dt
        while snapshot < len(times) and times[snapshot] <= end * (1 + 1e-12):
            weight = min(max((times[snapshot] - step * dt) / dt, 0.0), 1.0)
            values[snapshot, free] = (1.0 - weight) * previous + weight * current
            snapshot += 1
        return snapshot
