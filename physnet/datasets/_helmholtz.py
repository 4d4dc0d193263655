"""The ``helmholtz`` generator: time-harmonic waves in a random medium (the MgNO benchmark).

Each sample is a wave speed ``c`` on the unit square and the real wave field ``u`` solving

.. math::

    -\\Delta u - \\frac{\\omega^2}{c(x)^2} u = 0 \\text{ in } (0, 1)^2, \\qquad
    \\frac{\\partial u}{\\partial n} = g \\text{ on the top edge } y = 1, \\qquad
    \\frac{\\partial u}{\\partial n} = 0 \\text{ on the other three edges},

with ``c = 20 + tanh(θ)``, ``θ`` a Gaussian random field, ``ω = 10³`` and ``g`` the
indicator of ``|x - 0.5| <= 0.15``: de Hoop, Huang, Qian and Stuart's Helmholtz benchmark
("The cost-accuracy trade-off in operator learning with neural networks", 2022), which MgNO
reports on. Both fields live on one nodal grid, boundary nodes included, axis 0 along ``x``.

Examples
--------
>>> from physnet.datasets.generate import get_generator, sample_of
>>> helmholtz = get_generator("helmholtz")
>>> config = helmholtz.check_config({"size": 33})
>>> sample = sample_of(helmholtz, config, seed=0, index=0)
>>> sample["speed"].shape, sample["solution"].shape
((33, 33), (33, 33))
>>> bool(19 < sample["speed"].min() and sample["speed"].max() < 21)
True
"""

from __future__ import annotations

import functools
from typing import Any, ClassVar

import numpy as np

from physnet.datasets._darcy import check_nodal_grid, gaussian_random_field, stored_size
from physnet.datasets.generate import register_generator

__all__ = ["Helmholtz", "helmholtz_solve", "helmholtz_speed", "top_edge_source"]

_MAX_DRAWS = 100
# ARPACK's default start vector comes from a generator whose state persists between calls,
# so the estimated gap would depend on what the process computed before: fix the start.
_LANCZOS_SEED = 20240101


@functools.lru_cache(maxsize=4)
def _neumann_system(size: int) -> tuple[Any, np.ndarray, np.ndarray]:
    """The 5-point Neumann stiffness matrix, the dual-cell areas and the top edge's dual-cell
    lengths of the ``size``-point grid on the unit square, in row-major ``[i, j]`` order
    (read-only)."""
    import scipy.sparse

    h = 1.0 / (size - 1)
    # One axis: h² times the Neumann second difference -u'' with its end rows halved (h times
    # the P1 stiffness matrix of [0, 1]), and the dual-cell lengths in units of h. In two
    # dimensions the factors h cancel: K = T ⊗ D + D ⊗ T.
    second_difference = scipy.sparse.diags_array(
        [-np.ones(size - 1), np.r_[1.0, np.full(size - 2, 2.0), 1.0], -np.ones(size - 1)],
        offsets=[-1, 0, 1],
    )
    half_ends = np.r_[0.5, np.ones(size - 2), 0.5]
    weights = scipy.sparse.diags_array(half_ends)
    stiffness = (
        scipy.sparse.kron(second_difference, weights)
        + scipy.sparse.kron(weights, second_difference)
    ).tocsr()
    areas = h**2 * np.outer(half_ends, half_ends).ravel()
    top = np.zeros((size, size))
    top[:, -1] = h * half_ends
    top = top.ravel()
    for array in (stiffness.data, areas, top):
        array.setflags(write=False)
    return stiffness, areas, top


def helmholtz_speed(field: Any, *, mean: float = 20.0, amplitude: float = 1.0) -> np.ndarray:
    """The wave speed ``c = mean + amplitude * tanh(field)`` of de Hoop et al.

    Examples
    --------
    >>> import numpy as np
    >>> helmholtz_speed(np.array([-np.inf, 0.0, np.inf]))
    array([19., 20., 21.])
    """
    return float(mean) + float(amplitude) * np.tanh(np.asarray(field, dtype=np.float64))


def top_edge_source(size: int, *, center: float = 0.5, width: float = 0.3) -> np.ndarray:
    """The Neumann data ``g(x) = 1`` for ``|x - center| <= width / 2``, else 0, at the
    ``size`` nodes ``x_i = i / (size - 1)`` of the top edge (a node on an end counts).

    Examples
    --------
    >>> top_edge_source(11)
    array([0., 0., 0., 0., 1., 1., 1., 0., 0., 0., 0.])
    """
    nodes = np.linspace(0.0, 1.0, size)
    # Nodes on the ends of the interval belong to it: without the tolerance 0.35 would drop
    # out because 0.5 - 0.35 rounds to 0.15000000000000002.
    inside = np.abs(nodes - center) <= width / 2 + 1e-9 / max(size - 1, 1)
    return inside.astype(np.float64)


def helmholtz_solve(
    speed: Any, flux: Any, *, omega: float = 1000.0, return_gap: bool = False
) -> np.ndarray | tuple[np.ndarray, float]:
    """Solve ``-Δu - (ω/c)² u = 0`` on the unit square with Neumann data on the top edge.

    Parameters
    ----------
    speed : array, shape (s, s)
        Positive wave speed ``c`` at the nodes of a uniform ``s × s`` grid (``s >= 3``),
        ``speed[i, j] = c(x_i, y_j)``, boundary nodes included; spacing ``h = 1 / (s - 1)``.
    flux : array, shape (s,)
        The outward normal derivative ``g = ∂u/∂n`` at the nodes ``x_i`` of the top edge
        ``y = 1``; the other three edges have ``∂u/∂n = 0``.
    omega : float, default 1000.0
        The angular frequency ``ω``.
    return_gap : bool, default False
        Also return the distance of the discrete problem to resonance (see Notes).

    Returns
    -------
    solution : numpy.ndarray of float64, shape (s, s)
        ``u`` at the nodes, ``solution[i, j] = u(x_i, y_j)``.
    gap : float
        Only with ``return_gap``: ``min_k |μ_k - 1|`` over the eigenvalues ``μ_k`` of
        ``K v = μ M_ω v`` (below).

    Raises
    ------
    ValueError
        For a speed that is not a square array of at least 3×3 positive finite values, a
        flux of another length, a non-positive ``omega``, or a singular system.
    RuntimeError
        With ``return_gap``, if the Lanczos iteration for the gap does not converge.

    Notes
    -----
    The 5-point scheme with ghost-point Neumann conditions (``u`` beyond an edge is the
    mirror image plus ``2h ∂u/∂n``), second order, each node's row multiplied by the area
    of its dual cell (``h²``; ``h²/2`` on an edge, ``h²/4`` at a corner) so that the matrix
    is symmetric: ``(K - M_ω) u = B g`` with ``K`` the Neumann Laplacian (the P1 stiffness
    matrix of the grid cut into triangles), ``M_ω`` diagonal with the dual-cell areas times
    ``(ω / c_i)²`` and ``B`` diagonal with the dual-cell lengths on the top edge (``h``,
    ``h/2`` at its ends). For a constant speed the eigenvectors of ``K v = λ M v`` are
    ``cos(mπx_i) cos(nπy_j)`` with ``λ = (4/h²)(sin²(mπh/2) + sin²(nπh/2))``. The matrix
    is factorised by SuperLU.

    The problem is uniquely solvable unless ``(ω/c)²`` meets the spectrum: ``K - M_ω`` is
    singular exactly when ``K v = μ M_ω v`` has the eigenvalue ``μ = 1``. The gap
    ``min |μ_k - 1|`` (``2 |Δω| / ω`` to first order for the closest resonant frequency
    ``ω + Δω``) bounds the solution: ``||u||_{M_ω} <= ||M_ω^{-1/2} B g|| / gap``. It is
    computed by Lanczos iteration on ``M_ω^{1/2} (K - M_ω)^{-1} M_ω^{1/2}``, whose
    eigenvalues are ``1 / (μ_k - 1)``, with the factorisation of the solve.

    Examples
    --------
    A constant speed and a flux ``cos(πx)``: the continuous solution is
    ``u = -cos(πx) cos(βy) / (β sin β)``, ``β² = (ω/c)² - π²``.

    >>> import numpy as np
    >>> s, omega = 65, 8.0
    >>> x = np.linspace(0, 1, s)
    >>> u = helmholtz_solve(np.ones((s, s)), np.cos(np.pi * x), omega=omega)
    >>> beta = np.sqrt(omega**2 - np.pi**2)
    >>> exact = -np.outer(np.cos(np.pi * x), np.cos(beta * x)) / (beta * np.sin(beta))
    >>> bool(np.abs(u - exact).max() < 5e-3 * np.abs(exact).max())
    True
    """
    import scipy.sparse
    from scipy.sparse.linalg import splu

    speed = np.asarray(speed, dtype=np.float64)
    if speed.ndim != 2 or speed.shape[0] != speed.shape[1] or speed.shape[0] < 3:
        raise ValueError(
            f"helmholtz_solve: speed has shape {speed.shape}, expected a square (s, s) grid "
            "of nodal values with s >= 3"
        )
    if not (np.isfinite(speed).all() and (speed > 0).all()):
        raise ValueError("helmholtz_solve: speed must be positive and finite everywhere")
    size = speed.shape[0]
    flux = np.asarray(flux, dtype=np.float64)
    if flux.shape != (size,) or not np.isfinite(flux).all():
        raise ValueError(
            f"helmholtz_solve: flux has shape {flux.shape}, expected ({size},) finite values "
            "at the nodes of the top edge"
        )
    if not (np.isfinite(omega) and omega > 0):
        raise ValueError(f"helmholtz_solve: omega={omega!r}, expected a positive number")
    stiffness, areas, top = _neumann_system(size)
    weighted_mass = areas * (omega / speed.ravel()) ** 2
    matrix = (stiffness - scipy.sparse.diags_array(weighted_mass)).tocsc()
    try:
        factor = splu(matrix)
    except RuntimeError as error:  # SuperLU: "Factor is exactly singular"
        raise ValueError(
            f"helmholtz_solve: the system is singular ({error}); (omega / c)^2 is an "
            "eigenvalue of the discrete Neumann Laplacian"
        ) from None
    # ``top`` is zero but on the top edge's nodes (x_i, 1), i.e. [i, size - 1].
    rhs = top * np.repeat(flux, size)
    solution = factor.solve(rhs).reshape(size, size)
    if not return_gap:
        return solution
    return solution, _resonance_gap(factor, weighted_mass)


def _resonance_gap(factor: Any, weighted_mass: np.ndarray) -> float:
    """``min |μ - 1|`` from the factorised ``K - M_ω`` (see :func:`helmholtz_solve`)."""
    from scipy.sparse.linalg import ArpackNoConvergence, LinearOperator, eigsh

    root = np.sqrt(weighted_mass)
    n = root.size
    operator = LinearOperator(
        (n, n), matvec=lambda v: root * factor.solve(root * np.ravel(v)), dtype=np.float64
    )
    start = np.random.default_rng(_LANCZOS_SEED).standard_normal(n)
    try:
        (largest,) = eigsh(
            operator,
            k=1,
            which="LM",
            v0=start,
            ncv=min(n - 1, 20),
            tol=1e-6,
            return_eigenvectors=False,
        )
    except ArpackNoConvergence:
        raise RuntimeError(
            "helmholtz_solve: the Lanczos iteration for the resonance gap did not converge"
        ) from None
    return float(1.0 / abs(largest))


class Helmholtz:
    """Random wave speeds and the Helmholtz wave field they scatter (de Hoop et al.).

    Options (``[config]``):

    ``size`` (default 64) and ``stride`` (default 1)
        Nodes per side of the grid the equation is solved on, boundary included (de Hoop
        et al.: 101), and the subsampling of the stored fields:
        ``(size - 1) // stride + 1`` points per side.
    ``alpha``, ``tau`` (default 2 and 3)
        The covariance ``(-Δ + τ²)^(-α)`` of the Gaussian field ``θ`` (below).
    ``speed_mean``, ``speed_amplitude`` (default 20 and 1)
        ``c = speed_mean + speed_amplitude * tanh(θ)``; ``0 <= speed_amplitude <
        speed_mean``.
    ``omega`` (default 1000)
        The angular frequency ``ω``; the wave number ``ω / c`` is about 50, a wavelength
        of about 8 grid spacings at ``size = 64``.
    ``source_center``, ``source_width`` (default 0.5 and 0.3)
        The Neumann data ``g = 1`` on ``|x - source_center| <= source_width / 2`` of the
        top edge (:func:`top_edge_source`).
    ``min_gap`` (default 1e-3)
        The smallest accepted distance to resonance of the discrete problem (the ``gap``
        of :func:`helmholtz_solve`); a draw below it is replaced (Notes).

    Fields ``speed`` (input) and ``solution`` (target), float32, ``(s, s)`` with ``s`` the
    stored size, ``[i, j]`` at ``(x_i, y_j)``: axis 0 along ``x``, the source on
    ``[:, -1]``.

    Notes
    -----
    Sample ``i`` draws ``θ`` from its own random stream with
    :func:`~physnet.datasets._darcy.gaussian_random_field` divided by ``τ^(α-1)``, so that
    its Karhunen–Loève coefficients have the variances ``(π²|k|² + τ²)^(-α)`` of de Hoop et
    al.'s field (FNO's Darcy fields carry the extra factor ``τ^(α-1)``; de Hoop et al. keep
    the first 100 cosine modes, physnet ``size²``). It solves with
    :func:`helmholtz_solve` in float64 on the full grid and subsamples both fields.

    *Well-posedness.* With Neumann conditions on every edge nothing absorbs: the problem is
    singular when ``(ω/c)²`` is an eigenvalue, and the solution grows like ``1 / gap`` near
    one. Every draw is checked: if its discrete problem's gap is below ``min_gap``, ``θ``
    is drawn again from the same stream (at most 100 times, then the generation stops with
    an error), so every stored sample is uniquely solvable with
    ``||u||_{M_ω} <= ||M_ω^{-1/2} B g|| / min_gap`` (:func:`helmholtz_solve`). With the
    defaults no draw is replaced: the gaps of the 1200 samples of seed 0 lie between 2.0e-3
    and 6.5e-3 at 64² (the first 200 between 1.4e-3 and 5.9e-3 at 101²), since ``c`` stays
    within a few tenths of 20 and cannot move an eigenvalue across ``(ω/c)²``. A stronger
    field makes replacements common: with ``θ`` three times larger (FNO's scaling), about
    10 % of the draws at 64² have a gap below 1e-3, and the smallest of 200, 4e-5, comes
    with a solution 170 times the median size. The stored distribution is then the field's
    conditioned on ``gap >= min_gap``.

    *Resolution.* At ``ω/c ≈ 50`` the phase error of a second-order scheme accumulates over
    the domain (pollution): against the exact series solution for ``c = 20`` the relative
    L2 error is about 140 % at 64², 250 % at 101², 38 % at 253² and 7 % at 505². The
    dataset is the discrete operator ``c ↦ u`` of the stated grid, not the continuous one;
    de Hoop et al.'s data (bilinear elements on 101², the same 12.6 points per wavelength)
    are a discrete operator in the same sense.
    """

    default_samples = 1200
    default_splits: ClassVar[dict[str, float]] = {
        "train": 1000 / 1200,
        "val": 100 / 1200,
        "test": 100 / 1200,
    }
    inputs = ("speed",)
    targets = ("solution",)
    default_config: ClassVar[dict[str, Any]] = {
        "size": 64,
        "stride": 1,
        "alpha": 2.0,
        "tau": 3.0,
        "speed_mean": 20.0,
        "speed_amplitude": 1.0,
        "omega": 1000.0,
        "source_center": 0.5,
        "source_width": 0.3,
        "min_gap": 1e-3,
    }

    def validate(self, config: dict[str, Any]) -> None:
        check_nodal_grid(config)
        for key in ("alpha", "tau", "speed_mean", "omega", "source_width"):
            if not (np.isfinite(config[key]) and config[key] > 0):
                raise ValueError(f"config.{key}: {config[key]}, expected a positive number")
        if not 0 <= config["speed_amplitude"] < config["speed_mean"]:
            raise ValueError(
                f"config.speed_amplitude: {config['speed_amplitude']}, expected 0 <= "
                f"speed_amplitude < speed_mean = {config['speed_mean']} (the speed must stay "
                "positive)"
            )
        if not top_edge_source(
            config["size"], center=config["source_center"], width=config["source_width"]
        ).any():
            raise ValueError(
                f"config.source_center, source_width: {config['source_center']}, "
                f"{config['source_width']}: the source interval holds no node of the "
                f"{config['size']}-point top edge"
            )
        if not 0 <= config["min_gap"] < 1:
            raise ValueError(f"config.min_gap: {config['min_gap']}, expected a number in [0, 1)")

    def fields(self, config: dict[str, Any]) -> dict[str, tuple[tuple[int, ...], Any]]:
        side = stored_size(config["size"], config["stride"])
        return {"speed": ((side, side), np.float32), "solution": ((side, side), np.float32)}

    def sample(
        self, config: dict[str, Any], index: int, rng: np.random.Generator
    ) -> dict[str, np.ndarray]:
        size, alpha, tau = config["size"], config["alpha"], config["tau"]
        flux = top_edge_source(size, center=config["source_center"], width=config["source_width"])
        gaps = []
        for _ in range(_MAX_DRAWS):
            field = gaussian_random_field(size, rng, alpha=alpha, tau=tau) / tau ** (alpha - 1)
            speed = helmholtz_speed(
                field, mean=config["speed_mean"], amplitude=config["speed_amplitude"]
            )
            solution, gap = helmholtz_solve(speed, flux, omega=config["omega"], return_gap=True)
            if gap >= config["min_gap"]:
                stride = config["stride"]
                return {
                    "speed": speed[::stride, ::stride].astype(np.float32),
                    "solution": solution[::stride, ::stride].astype(np.float32),
                }
            gaps.append(gap)
        raise RuntimeError(
            f"helmholtz: sample {index}: {_MAX_DRAWS} draws of the speed all gave a discrete "
            f"problem closer to resonance than min_gap = {config['min_gap']} (smallest gap "
            f"{min(gaps):.3g}, largest {max(gaps):.3g}); lower min_gap or change omega"
        )


register_generator("helmholtz", Helmholtz)
