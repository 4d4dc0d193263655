"""Galerkin aggregation multigrid for grid Poisson systems, as a preconditioner of FCG.

:class:`AggregationMultigrid` builds its hierarchy from the operator itself — the cell flags
*and* the face coefficients of a :class:`~physnet.operators.GridPoisson` — so density
jumps of 10⁴, thin walls and small openings are seen on every level. It is the classical
half of physnet's learned Poisson solver: ``method="dcdm"`` runs the same cycle with
smoother dampings predicted per unknown by a trained network
(:class:`physnet.nn.DCDMGalerkinNet`), and ``method="multigrid"`` runs it with a constant
damping, the learned parts reset to their classical values.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.linalg
import scipy.sparse

from physnet import backend
from physnet.operators.base import LinearOperator
from physnet.operators.poisson import GridPoisson
from physnet.solvers import _aggregation
from physnet.solvers._solve import Method, register_method
from physnet.solvers._system import Iteration, KrylovSystem
from physnet.solvers.fcg import check_fcg_options, fcg_iterate

__all__ = ["AggregationMultigrid", "DampingFunction"]

DampingFunction = Callable[[np.ndarray, int], np.ndarray]
"""``damping(features, level) -> (n, smoothing_steps)`` dampings of the pre-smoothing sweeps.

``features`` is ``(n, 6)`` float32, the scale-free row features of the level's operator
(:func:`AggregationMultigrid.features`); ``level`` is 0 on the given grid.
"""

_CYCLES = ("K", "V")


@dataclass
class _Level:
    indptr: np.ndarray
    indices: np.ndarray
    data: np.ndarray  # float32 entries, the diagonal included
    scales: list[np.ndarray]  # omega_k / a_ii for each sweep, pre-smoothing then post
    labels: np.ndarray | None = None  # aggregate of every unknown, on the next level
    start: np.ndarray | None = None  # CSR-like unknowns of every aggregate
    member: np.ndarray | None = None

    @property
    def n(self) -> int:
        return self.indptr.shape[0] - 1


class AggregationMultigrid(LinearOperator):
    r"""Galerkin aggregation multigrid (K-cycle) for :class:`~physnet.operators.GridPoisson`.

    A preconditioner ``M ≈ A^{-1}`` for :func:`~physnet.solvers.fcg` (pass it as ``M``), or
    through ``physnet.solve(A, b, method="multigrid")``. The hierarchy is built once, in
    the constructor (``setup_time``), from the operator's flags and face coefficients.

    Parameters
    ----------
    A : GridPoisson
        The operator; its coefficients (cell or face values) enter every level.
    damping : float or callable, default 0.8
        The damping :math:`\omega` of the Jacobi sweeps: one number for every unknown and
        sweep (the classical smoother; ``0 < damping < 2``), or a
        :data:`DampingFunction` that predicts one damping per unknown and pre-smoothing
        sweep from the level's row features (a trained network does this).
    smoothing_steps : int, default 2
        Jacobi sweeps before and after each coarse-grid correction (the post-sweeps
        repeat the pre-sweeps' dampings in reverse order).
    cycle : {"K", "V"}, default "K"
        ``"K"``: every coarse problem but the coarsest is solved by two steps of flexible
        CG preconditioned by the next cycle (Notay's K-cycle), which makes the iteration
        count independent of the number of levels for piecewise-constant prolongation;
        ``"V"``: a plain V-cycle (a symmetric linear operator).
    max_coarse : int, default 256
        Coarsening stops at this many unknowns; the coarsest system is solved with a
        dense pseudo-inverse.

    Attributes
    ----------
    setup_time : float
        Seconds spent building the hierarchy.
    level_sizes : list of int
        Unknowns per level, finest first.
    operator_complexity : float
        Nonzeros of all levels over the nonzeros of ``A``.

    Raises
    ------
    TypeError
        If ``A`` is not a :class:`~physnet.operators.GridPoisson`.
    ValueError
        For a damping outside ``(0, 2)`` (or a damping function returning values
        outside it, of the wrong shape, or not finite), or an invalid option.

    Notes
    -----
    *Coarsening.* On every level the unknowns are grouped into aggregates: the connected
    sets (through nonzero couplings) of the unknowns inside one :math:`2^d` block of that
    level's grid. A block cut by a wall one cell thick, or containing cells on both sides
    of one, gives one aggregate per side, so thin walls and small openings survive every
    level; a geometric coarsening that merges whole blocks loses them (33 iterations
    instead of 11 on a baffle with a small hole). With the piecewise-constant
    prolongation :math:`P` of the aggregates the coarse operator is the Galerkin product
    :math:`A_c = P^T A P`, which on a grid is again a (slightly irregular) nearest-
    neighbour operator whose couplings are the sums of the fine face weights between two
    aggregates, and whose Dirichlet terms are the sums of the fine ones: jumps in the
    coefficient carry down exactly (Galerkin is the variational, energy-minimising
    coarse operator), with no rediscretisation to get wrong.

    *Cycle.* ``s`` damped Jacobi sweeps :math:`z \leftarrow z + \omega D^{-1}(r - A z)`,
    the Galerkin coarse correction, ``s`` sweeps with the dampings in reverse order.
    Piecewise-constant aggregation needs either an over-correction or a Krylov-
    accelerated coarse solve to converge independently of the depth; the K-cycle [1]_
    runs two flexible-CG steps on each coarse level, preconditioned by the cycle below,
    at a cost of about :math:`\sum_\ell (2/8)^\ell ≈ 4/3` V-cycles in 3-D.

    *Cost* per application in 3-D, with :math:`s = 2` and the 7-point operator (a
    multiply-add counts 2): the fine level does one scaling, ``2s - 1`` sweeps and one
    residual at 15 FLOP per unknown each, a restriction and a prolongation (1 each):
    about 64 FLOP per unknown, and the K-cycle's coarse levels add a third: about 85
    FLOP per unknown (:meth:`flops_per_unknown` counts it from the actual levels). All
    vectors and matrices of the cycle are float32 (the outer flexible CG keeps the
    solver's precision), and the kernels are numba loops over CSR rows on all cores.

    References
    ----------
    .. [1] Y. Notay and P. S. Vassilevski, "Recursive Krylov-based multigrid cycles",
       Numer. Linear Algebra Appl. 15, 473–487 (2008).
    .. [2] Y. Notay, "An aggregation-based algebraic multigrid method", Electron. Trans.
       Numer. Anal. 37, 123–146 (2010).

    Examples
    --------
    A two-phase system, density ratio 1000 (coefficients ``1 / rho``), with an air top:

    >>> import numpy as np
    >>> from physnet.operators import AIR, GridPoisson
    >>> from physnet.solvers import AggregationMultigrid, fcg
    >>> flags = np.zeros((32, 32, 32), dtype=np.int8)
    >>> flags[..., -1] = AIR
    >>> rho = np.ones((32, 32, 32))
    >>> rho[..., :10] = 1000.0
    >>> A = GridPoisson(flags, coefficients=1.0 / rho)
    >>> M = AggregationMultigrid(A)
    >>> M.level_sizes
    [31744, 4096, 512, 64]
    >>> b = np.random.default_rng(0).standard_normal(A.n)
    >>> x, info = fcg(A, b, rtol=1e-6, M=M)
    >>> info, bool(np.linalg.norm(b - A @ x) <= 1e-6 * np.linalg.norm(b))
    (0, True)
    """

    hermitian = False

    def __init__(
        self,
        A: Any,
        *,
        damping: float | DampingFunction = 0.8,
        smoothing_steps: int = 2,
        cycle: str = "K",
        max_coarse: int = 256,
    ) -> None:
        start = time.perf_counter()
        name = "AggregationMultigrid"
        if not isinstance(A, GridPoisson):
            raise TypeError(
                f"{name}: A must be a physnet.operators.GridPoisson (the hierarchy is built "
                f"from its grid), got {type(A).__name__}"
            )
        _check_damping(damping)
        for key, value, low in (
            ("smoothing_steps", smoothing_steps, 1),
            ("max_coarse", max_coarse, 1),
        ):
            if not _is_integer(value) or value < low:
                raise ValueError(f"{name}: {key} must be an integer >= {low}, got {value!r}")
        if cycle not in _CYCLES:
            raise ValueError(f"{name}: cycle must be one of {_CYCLES}, got {cycle!r}")
        self.shape = A.shape
        self.dtype = np.dtype(np.float64)
        self.cycle = cycle
        self.smoothing_steps = int(smoothing_steps)
        self.grid_shape = A.grid_shape
        matrix = _aggregation.grid_csr(A.fluid_mask, A.face_weights(), A._diagonal64)
        coordinates = np.argwhere(A.fluid_mask)
        self._levels: list[_Level] = []
        self._matrices: list[scipy.sparse.csr_matrix] = []
        self._features: dict[int, np.ndarray] = {}
        self.level_sizes: list[int] = []
        nonzeros = []
        level = 0
        while True:
            self.level_sizes.append(matrix.shape[0])
            self._matrices.append(matrix)
            nonzeros.append(matrix.nnz)
            scales = self._scales(matrix, damping, level)
            current = _Level(
                np.ascontiguousarray(matrix.indptr, dtype=np.int64),
                np.ascontiguousarray(matrix.indices, dtype=np.int64),
                matrix.data.astype(np.float32),
                scales,
            )
            self._levels.append(current)
            if matrix.shape[0] <= max_coarse:
                break
            labels, count, coarse_coordinates = _aggregation.aggregate(matrix, coordinates)
            if count > 0.9 * matrix.shape[0]:  # coarsening stalled (isolated cells)
                break
            current.labels = labels
            current.start, current.member = _aggregation.members(labels, count)
            matrix = _aggregation.galerkin(matrix, labels, count)
            coordinates = coarse_coordinates
            level += 1
        self._coarsest = self._coarsest_solver(matrix)
        self.operator_complexity = sum(nonzeros) / nonzeros[0]
        self.setup_time = time.perf_counter() - start

    def with_damping(self, damping: float | DampingFunction) -> AggregationMultigrid:
        """The same hierarchy with another smoother damping (only the scales are recomputed).

        Training a damping network evaluates many dampings on one geometry; this skips
        the aggregation and the Galerkin products, which do not depend on the damping.
        """
        _check_damping(damping)
        other = copy.copy(self)
        other._levels = [
            dataclasses.replace(level, scales=self._scales(matrix, damping, index))
            for index, (level, matrix) in enumerate(zip(self._levels, self._matrices, strict=True))
        ]
        return other

    # --- setup ---------------------------------------------------------------------------
    @staticmethod
    def features(matrix: scipy.sparse.csr_matrix, level: int) -> np.ndarray:
        """The ``(n, 6)`` float32 row features a :data:`DampingFunction` receives."""
        out = np.empty((matrix.shape[0], _aggregation.N_FEATURES), dtype=np.float32)
        _aggregation.row_features(matrix.indptr, matrix.indices, matrix.data, level, out)
        return out

    def _scales(
        self, matrix: scipy.sparse.csr_matrix, damping: Any, level: int
    ) -> list[np.ndarray]:
        steps = self.smoothing_steps
        diagonal = matrix.diagonal()
        # A zero row is an unknown walled in on every side (a one-cell pure-Neumann
        # region): it is in the null space and the smoother leaves it alone.
        inverse_diagonal = np.divide(1.0, diagonal, out=np.zeros_like(diagonal), where=diagonal > 0)
        if not callable(damping):
            scale = (float(damping) * inverse_diagonal).astype(np.float32)
            return [scale] * (2 * steps)
        if level not in self._features:  # kept: with_damping re-evaluates only the network
            self._features[level] = self.features(matrix, level)
        omega = np.asarray(damping(self._features[level], level), dtype=np.float64)
        if omega.shape != (matrix.shape[0], steps):
            raise ValueError(
                f"AggregationMultigrid: the damping function returned shape {omega.shape} on "
                f"level {level}, expected {(matrix.shape[0], steps)} (one damping per unknown "
                "and pre-smoothing sweep)"
            )
        if not (np.isfinite(omega).all() and (omega > 0).all() and (omega < 2).all()):
            raise ValueError(
                f"AggregationMultigrid: the damping function returned values outside (0, 2) "
                f"on level {level}"
            )
        pre = [(omega[:, k] * inverse_diagonal).astype(np.float32) for k in range(steps)]
        return pre + pre[::-1]

    @staticmethod
    def _coarsest_solver(matrix: scipy.sparse.csr_matrix) -> np.ndarray | None:
        if matrix.shape[0] > 4096:
            return None  # coarsening stalled on a large level: smooth it instead
        dense = matrix.toarray()
        try:
            factor = scipy.linalg.cho_factor(dense, lower=True)
            pivots = np.diag(factor[0]) ** 2
            singular = not pivots.min() > 1e-10 * pivots.max()
        except np.linalg.LinAlgError:
            singular = True
        if singular:  # a region without air (pure Neumann): the pseudo-inverse
            return np.linalg.pinv(dense, hermitian=True).astype(np.float32)
        return scipy.linalg.cho_solve(factor, np.eye(dense.shape[0])).astype(np.float32)

    # --- application -----------------------------------------------------------------
    def _matvec(self, x: Any) -> Any:
        host = np.asarray(backend.to_numpy(x), dtype=np.float64)
        r = host.reshape(-1)
        norm = float(np.linalg.norm(r))
        if norm == 0.0 or not math.isfinite(norm):
            z = np.zeros_like(r) if norm == 0.0 else np.full_like(r, np.nan)
        else:
            z = self._cycle((r / norm).astype(np.float32), 0).astype(np.float64) * norm
        z = z.reshape(host.shape)
        return z if backend.array_kind(x) == "numpy" else backend.as_like(z, x)

    def _cycle(self, r: np.ndarray, index: int) -> np.ndarray:
        level = self._levels[index]
        if index == len(self._levels) - 1:
            return self._solve_coarsest(r, level)
        steps = self.smoothing_steps
        z = level.scales[0] * r
        scratch = np.empty_like(r)
        for k in range(1, steps):
            z, scratch = self._sweep(level, k, r, z, scratch), z
        _aggregation.residual(level.indptr, level.indices, level.data, r, z, scratch)
        coarse_rhs = np.empty(self._levels[index + 1].n, dtype=np.float32)
        _aggregation.restrict(level.start, level.member, scratch, coarse_rhs)
        if self.cycle == "K" and index + 1 < len(self._levels) - 1:
            correction = self._krylov(coarse_rhs, index + 1)
        else:
            correction = self._cycle(coarse_rhs, index + 1)
        _aggregation.prolong_add(level.labels, correction, z)
        for k in range(steps, 2 * steps):
            z, scratch = self._sweep(level, k, r, z, scratch), z
        return z

    @staticmethod
    def _sweep(level: _Level, k: int, r: np.ndarray, z: np.ndarray, out: np.ndarray):
        _aggregation.jacobi_sweep(
            level.indptr, level.indices, level.data, level.scales[k], r, z, out
        )
        return out

    def _solve_coarsest(self, r: np.ndarray, level: _Level) -> np.ndarray:
        if self._coarsest is not None:
            return self._coarsest @ r
        z = level.scales[0] * r
        scratch = np.empty_like(r)
        for sweep in range(1, 8 * self.smoothing_steps):
            z, scratch = self._sweep(level, sweep % len(level.scales), r, z, scratch), z
        return z

    def _krylov(self, r: np.ndarray, index: int) -> np.ndarray:
        """Two steps of flexible CG on level ``index``, preconditioned by its cycle."""
        level = self._levels[index]
        product = np.empty_like(r)
        z = self._cycle(r, index)
        _aggregation.matvec(level.indptr, level.indices, level.data, z, product)
        curvature = float(np.dot(z, product))
        if not curvature > 0.0:
            return z
        alpha = float(np.dot(z, r)) / curvature
        x = alpha * z
        residual = r - alpha * product
        # Notay's test: one step is enough when it reduced the residual fourfold.
        if np.linalg.norm(residual) <= 0.25 * np.linalg.norm(r):
            return x
        second = self._cycle(residual, index)
        second -= (float(np.dot(product, second)) / curvature) * z
        _aggregation.matvec(level.indptr, level.indices, level.data, second, product)
        curvature = float(np.dot(second, product))
        if curvature > 0.0:
            x += (float(np.dot(second, residual)) / curvature) * second
        return x

    # --- descriptions --------------------------------------------------------------------
    def flops_per_unknown(self) -> float:
        """FLOP of one application per fine unknown, every level and K-cycle visit counted.

        A row of ``nnz_i`` entries costs ``2 nnz_i + 1`` per sweep, residual and
        product; a level is visited twice per visit of its parent in a K-cycle (at most;
        Notay's test may stop after one), and its two Krylov steps add one product and
        four inner products each.
        """
        total = 0.0
        visits = 1.0
        steps = self.smoothing_steps
        for index, level in enumerate(self._levels):
            nonzeros = float(level.indptr[-1])
            if index == len(self._levels) - 1:
                cost = 2.0 * level.n**2 if self._coarsest is not None else 0.0
                total += visits * cost
                break
            sweeps = (2 * steps - 1) * (2 * nonzeros + level.n) + level.n
            transfers = 2.0 * level.n
            cost = sweeps + (2 * nonzeros + level.n) + transfers
            krylov = 0.0
            if self.cycle == "K" and index > 0:
                krylov = 2.0 * (2 * nonzeros + 8 * level.n)
            total += visits * (cost + krylov)
            if self.cycle == "K" and index + 1 < len(self._levels) - 1:
                visits *= 2.0
        return total / self.shape[0]

    def __repr__(self) -> str:
        return (
            f"AggregationMultigrid(levels={self.level_sizes}, cycle={self.cycle!r}, "
            f"operator_complexity={self.operator_complexity:.2f})"
        )


def _check_damping(damping: Any) -> None:
    name = "AggregationMultigrid"
    if not callable(damping) and not _is_number(damping):
        raise ValueError(
            f"{name}: damping must be a number in (0, 2) or a function "
            f"damping(features, level), got {damping!r}"
        )
    if _is_number(damping) and not 0.0 < float(damping) < 2.0:
        raise ValueError(f"{name}: damping must lie in (0, 2), got {damping!r}")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.floating, np.integer)) and not isinstance(value, bool)


def _is_integer(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


@register_method("multigrid")
def _setup_multigrid(A, *, damping=0.8, smoothing_steps=2, cycle="K", m=2, refresh=50) -> Method:
    preconditioner = AggregationMultigrid(
        A, damping=damping, smoothing_steps=smoothing_steps, cycle=cycle
    )
    m, refresh = check_fcg_options("solve", m, refresh)

    def iterate(system: KrylovSystem, callback) -> Iteration:
        return fcg_iterate(system, preconditioner, m=m, refresh=refresh, callback=callback)

    return Method(
        iterate,
        {
            "levels": preconditioner.level_sizes,
            "operator_complexity": round(preconditioner.operator_complexity, 3),
            "cycle": cycle,
        },
    )
