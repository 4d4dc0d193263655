"""Darcy flow generators ``darcy-smooth``, ``darcy-rough`` and ``darcy-multiscale``: the FNO /
MgNO benchmark recipes.

Each sample is a permeability ``a`` and the pressure ``u`` solving

.. math::

    -\\nabla\\cdot(a \\nabla u) = 1 \\text{ in } (0, 1)^2,
    \\qquad u = 0 \\text{ on the boundary},

both on the same nodal grid, boundary nodes included (the layout of the FNO ``.mat`` files,
so a model trained on one reads the other). In ``darcy-smooth`` and ``darcy-rough`` ``a`` is
piecewise constant (a thresholded Gaussian random field); the two differ only in the default
length scale of the field: ``tau = 3`` (Li et al.'s ``piececonst_r421`` files, "smooth") and
``tau = 5`` (MgNO's "rough" set). In ``darcy-multiscale`` ``a`` is the smooth, high-contrast
product of oscillations at six random scales of the HANO / MgNO "multiscale" set
(:func:`multiscale_coefficient`).

Examples
--------
>>> import numpy as np
>>> from physnet.datasets.generate import get_generator, sample_of
>>> darcy = get_generator("darcy-smooth")
>>> config = darcy.check_config({"size": 33})
>>> sample = sample_of(darcy, config, seed=0, index=0)
>>> sample["coefficient"].shape, sorted(np.unique(sample["coefficient"]).tolist())
((33, 33), [3.0, 12.0])
>>> float(np.abs(sample["solution"][0]).max()), bool(sample["solution"].max() > 0)
(0.0, True)
"""

from __future__ import annotations

import functools
from typing import Any, ClassVar

import numpy as np

from physnet.datasets.generate import register_generator

__all__ = [
    "DarcyFlow",
    "MultiscaleDarcyFlow",
    "check_nodal_grid",
    "darcy_coefficient",
    "darcy_solve",
    "gaussian_random_field",
    "multiscale_coefficient",
    "stored_size",
]

_SOLVERS = ("direct", "amg")


def stored_size(size: int, stride: int) -> int:
    """Points per side after subsampling a ``size``-point grid with ``stride`` (FNO rule).

    Examples
    --------
    >>> stored_size(421, 2), stored_size(421, 5), stored_size(64, 1)
    (211, 85, 64)
    """
    return (size - 1) // stride + 1


def check_nodal_grid(config: dict[str, Any]) -> None:
    """Validate a nodal generator's ``size`` (at least 3) and ``stride`` (1 to ``size - 1``).

    Examples
    --------
    >>> check_nodal_grid({"size": 9, "stride": 9})
    Traceback (most recent call last):
    ...
    ValueError: config.stride: 9, expected 1 <= stride <= size - 1 = 8
    """
    if config["size"] < 3:
        raise ValueError(f"config.size: {config['size']}, expected at least 3")
    if config["stride"] < 1 or config["stride"] > config["size"] - 1:
        raise ValueError(
            f"config.stride: {config['stride']}, expected 1 <= stride <= size - 1 "
            f"= {config['size'] - 1}"
        )


def _check_solver(config: dict[str, Any]) -> None:
    if config["solver"] not in _SOLVERS:
        raise ValueError(f"config.solver: {config['solver']!r}, expected one of {_SOLVERS}")
    if not 0 < config["rtol"] < 1:
        raise ValueError(f"config.rtol: {config['rtol']}, expected a number in (0, 1)")


@functools.lru_cache(maxsize=8)
def _karhunen_loeve_amplitudes(size: int, alpha: float, tau: float) -> np.ndarray:
    """``size * tau^(alpha-1) (pi^2 |k|^2 + tau^2)^(-alpha/2)``, zero for ``k = 0`` (read-only)."""
    k = np.arange(size, dtype=np.float64)
    squared = k[:, None] ** 2 + k[None, :] ** 2
    amplitudes = size * tau ** (alpha - 1.0) * (np.pi**2 * squared + tau**2) ** (-alpha / 2.0)
    amplitudes[0, 0] = 0.0
    amplitudes.setflags(write=False)
    return amplitudes


def gaussian_random_field(
    size: int, rng: np.random.Generator, *, alpha: float = 2.0, tau: float = 3.0
) -> np.ndarray:
    """A zero-mean Gaussian random field with covariance ``∝ (-Δ + τ² I)^(-α)`` on a square grid.

    Parameters
    ----------
    size : int
        Points per side (at least 2).
    rng : numpy.random.Generator
        Source of the ``size**2`` standard normal coefficients.
    alpha, tau : float, default 2.0 and 3.0
        Smoothness exponent and inverse length scale (positive).

    Returns
    -------
    numpy.ndarray of float64, shape (size, size)

    Notes
    -----
    The Karhunen–Loève expansion in the eigenfunctions of the Neumann Laplacian on the unit
    square, truncated to ``size`` cosines per axis (Li et al.'s ``GRF.m``):
    ``L(k) = size · τ^(α−1) (π²|k|² + τ²)^(−α/2) ξ_k`` with ``ξ_k`` iid standard normal,
    ``L(0, 0) = 0``, and ``g = idctn(L, type=2, norm="ortho")`` (MATLAB's ``idct2``). The
    field is evaluated at the DCT-II sample points; physnet takes them as the nodes of the
    grid (the grid spacing enters only through the spectrum, which does not depend on it).
    Because the transform is orthonormal, the mean of ``g²`` over the grid has the
    expectation ``Σ_{k≠0} τ^(2α−2) (π²|k|² + τ²)^(−α)``.

    Examples
    --------
    >>> import numpy as np
    >>> g = gaussian_random_field(16, np.random.default_rng(0))
    >>> g.shape, abs(float(g.mean())) < 1e-12
    ((16, 16), True)
    """
    from scipy.fft import idctn

    if not isinstance(size, (int, np.integer)) or isinstance(size, bool) or size < 2:
        raise ValueError(f"gaussian_random_field: size={size!r}, expected an integer >= 2")
    if not (alpha > 0 and tau > 0):
        raise ValueError(
            f"gaussian_random_field: alpha={alpha!r} and tau={tau!r}, expected positive numbers"
        )
    amplitudes = _karhunen_loeve_amplitudes(int(size), float(alpha), float(tau))
    coefficients = amplitudes * rng.standard_normal((size, size))
    return idctn(coefficients, type=2, norm="ortho")


def darcy_coefficient(
    field: np.ndarray, *, high: float = 12.0, low: float = 3.0, threshold: float = 0.0
) -> np.ndarray:
    """The two-valued permeability ``a = high`` where ``field >= threshold``, else ``low``.

    Examples
    --------
    >>> import numpy as np
    >>> darcy_coefficient(np.array([-1.0, 0.0, 2.0]))
    array([ 3., 12., 12.])
    """
    return np.where(np.asarray(field) >= threshold, float(high), float(low))


def multiscale_coefficient(frequencies: Any, size: int, *, amplitude: float = 0.5) -> np.ndarray:
    """The multiscale trigonometric permeability of the HANO / MgNO benchmark on a nodal grid.

    Parameters
    ----------
    frequencies : array_like, shape (K,)
        The scales ``a_1, ..., a_K`` (``K >= 1``, finite).
    size : int
        Nodes per side of the grid on the unit square, boundary included (at least 2).
    amplitude : float, default 0.5
        The oscillation amplitude ``b``, in ``[0, 1)`` so that ``a > 0``.

    Returns
    -------
    numpy.ndarray of float64, shape (size, size)
        ``a[i, j] = a(x_i, y_j)`` at ``x_i = i / (size - 1)``, ``y_j = j / (size - 1)``
        (axis 0 is ``x``).

    Notes
    -----
    .. math::

        a(x, y) = \\prod_{k=1}^{K} \\bigl(1 + b \\cos(a_k \\pi (x + y))\\bigr)
        \\bigl(1 + b \\sin(a_k \\pi (y - 3x))\\bigr),

    with ``b = 1/2`` and ``a_k ~ U[2^(k-1), 2^k]``, ``K = 6`` in Liu et al.'s HANO
    paper (the "multiscale" Darcy set MgNO trains on). Each factor lies in
    ``[1 - b, 1 + b]``, so ``(1 - b)^(2K) <= a <= (1 + b)^(2K)`` (``2.4e-4`` to ``130`` for the
    defaults; a typical field spans about 4 decades).

    Examples
    --------
    >>> a = multiscale_coefficient([1.0, 2.0], 5)
    >>> a.shape, float(a[0, 0])
    ((5, 5), 2.25)
    """
    frequencies = np.asarray(frequencies, dtype=np.float64)
    if frequencies.ndim != 1 or frequencies.size == 0 or not np.isfinite(frequencies).all():
        raise ValueError(
            f"multiscale_coefficient: frequencies of shape {frequencies.shape}, expected a "
            "non-empty 1-D array of finite numbers"
        )
    if not isinstance(size, (int, np.integer)) or isinstance(size, bool) or size < 2:
        raise ValueError(f"multiscale_coefficient: size={size!r}, expected an integer >= 2")
    if not 0 <= amplitude < 1:
        raise ValueError(f"multiscale_coefficient: amplitude={amplitude!r}, expected [0, 1)")
    nodes = np.linspace(0.0, 1.0, size)
    x, y = nodes[:, None], nodes[None, :]
    coefficient = np.ones((size, size))
    for frequency in frequencies:
        coefficient *= 1.0 + amplitude * np.cos(frequency * np.pi * (x + y))
        coefficient *= 1.0 + amplitude * np.sin(frequency * np.pi * (y - 3.0 * x))
    return coefficient


def darcy_solve(
    coefficient: Any, *, forcing: float = 1.0, solver: str = "direct", rtol: float = 1e-10
) -> np.ndarray:
    """Solve ``-∇·(a∇u) = forcing`` on the unit square with ``u = 0`` on the boundary.

    Parameters
    ----------
    coefficient : array, shape (s, s)
        Positive values of ``a`` at the nodes of a uniform ``s × s`` grid (``s >= 3``), the
        boundary nodes included; spacing ``h = 1 / (s - 1)``.
    forcing : float, default 1.0
        The constant right-hand side.
    solver : {"direct", "amg"}, default "direct"
        A sparse LU factorisation (SciPy's SuperLU) of the assembled matrix, or physnet's
        AMG-preconditioned CG (``physnet.solvers.solve(..., method="amg")``) to ``rtol``.
    rtol : float, default 1e-10
        Relative residual tolerance of ``"amg"`` (unused by ``"direct"``).

    Returns
    -------
    numpy.ndarray of float64, shape (s, s)
        ``u`` on the nodes, zero on the boundary.

    Raises
    ------
    ValueError
        For a coefficient that is not a square 2-D array of at least 3×3 positive finite
        values, an unknown solver, or an AMG solve that does not converge.

    Notes
    -----
    The 5-point finite-difference scheme of Li et al.'s ``solve_gwf.m``: on the
    ``(s − 2)²`` interior nodes,
    ``(1/h²) Σ_{nb} a_{face} (u_c − u_{nb}) = forcing``, with face coefficients the
    arithmetic means ``(a_c + a_nb) / 2`` and ``u_nb = 0`` on boundary nodes. The matrix is
    :class:`physnet.operators.GridPoisson` on a grid whose boundary nodes are Dirichlet
    (``AIR``) cells and whose coefficient is ``a`` at every node.

    Examples
    --------
    Constant ``a = 1`` on a 5×5 grid (``h = 1/4``); the 3×3 system has ``u = 9/128`` at the
    centre:

    >>> import numpy as np
    >>> u = darcy_solve(np.ones((5, 5)))
    >>> bool(np.isclose(u[2, 2], 9 / 128)), float(u[0].max())
    (True, 0.0)
    """
    from physnet.operators import AIR, GridPoisson

    coefficient = np.asarray(coefficient, dtype=np.float64)
    if coefficient.ndim != 2 or coefficient.shape[0] != coefficient.shape[1]:
        raise ValueError(
            f"darcy_solve: coefficient has shape {coefficient.shape}, expected a square "
            "(s, s) grid of nodal values"
        )
    size = coefficient.shape[0]
    if size < 3:
        raise ValueError(f"darcy_solve: a {size}x{size} grid has no interior node; need s >= 3")
    if not (np.isfinite(coefficient).all() and (coefficient > 0).all()):
        raise ValueError("darcy_solve: coefficient must be positive and finite everywhere")
    if solver not in _SOLVERS:
        raise ValueError(f"darcy_solve: solver={solver!r}, expected one of {_SOLVERS}")
    flags = np.full((size, size), AIR, dtype=np.int8)
    flags[1:-1, 1:-1] = 0
    operator = GridPoisson(flags, h=1.0 / (size - 1), coefficients=coefficient)
    rhs = np.full(operator.n, float(forcing))
    if solver == "direct":
        from scipy.sparse.linalg import splu

        solution = splu(operator.to_csr().tocsc()).solve(rhs)
    else:
        from physnet.solvers import solve

        result = solve(operator, rhs, method="amg", rtol=rtol)
        if not result.converged:
            raise ValueError(f"darcy_solve: the AMG solve did not converge: {result.status}")
        solution = result.x
    return operator.scatter(solution)


class DarcyFlow:
    """Thresholded Gaussian permeabilities and their Darcy pressure (FNO's recipe).

    Options (``[config]``):

    ``size`` (default 64)
        Nodes per side of the grid the field is drawn and the equation solved on, boundary
        included (FNO: 421).
    ``stride`` (default 1)
        Store every ``stride``-th node per axis: ``(size - 1) // stride + 1`` points
        (421 at stride 2 gives 211, MgNO's smooth grid; 5 gives 85).
    ``alpha``, ``tau`` (default 2 and 3 for ``darcy-smooth``, 2 and 5 for ``darcy-rough``)
        The covariance ``(-Δ + τ²)^(-α)`` of the Gaussian field.
    ``high``, ``low``, ``threshold`` (default 12, 3, 0)
        ``a = high`` where the field is ``>= threshold``, else ``low`` (the released
        ``piececonst_r421`` files hold {3, 12}; FNO's ``demo.m`` uses 4 for ``low``).
    ``forcing`` (default 1)
        The constant right-hand side.
    ``solver`` (``"direct"`` or ``"amg"``, default ``"direct"``) and ``rtol`` (default 1e-10)
        See :func:`darcy_solve`.

    Fields ``coefficient`` (input) and ``solution`` (target), float32, ``(s, s)`` with
    ``s`` the stored size; the solution is zero on the boundary nodes.

    Notes
    -----
    Sample ``i`` draws its ``size²`` normal coefficients from its own random stream
    (:func:`physnet.datasets.generate.sample_of`), builds the field with
    :func:`gaussian_random_field`, thresholds it with :func:`darcy_coefficient`, solves with
    :func:`darcy_solve` in float64 on the full grid and subsamples both fields. Li et al.
    draw the field at cell centres and spline-interpolate it to the nodes before solving;
    physnet stays nodal throughout (the thresholded field is piecewise constant, and an
    interpolated step would not be two-valued).
    """

    default_samples = 1200
    default_splits: ClassVar[dict[str, float]] = {
        "train": 1000 / 1200,
        "val": 100 / 1200,
        "test": 100 / 1200,
    }
    inputs = ("coefficient",)
    targets = ("solution",)

    def __init__(self, tau: float = 3.0) -> None:
        self.default_config: dict[str, Any] = {
            "size": 64,
            "stride": 1,
            "alpha": 2.0,
            "tau": float(tau),
            "high": 12.0,
            "low": 3.0,
            "threshold": 0.0,
            "forcing": 1.0,
            "solver": "direct",
            "rtol": 1e-10,
        }

    def validate(self, config: dict[str, Any]) -> None:
        check_nodal_grid(config)
        for key in ("alpha", "tau", "high", "low"):
            if not config[key] > 0:
                raise ValueError(f"config.{key}: {config[key]}, expected a positive number")
        _check_solver(config)

    def fields(self, config: dict[str, Any]) -> dict[str, tuple[tuple[int, ...], Any]]:
        side = stored_size(config["size"], config["stride"])
        return {"coefficient": ((side, side), np.float32), "solution": ((side, side), np.float32)}

    def sample(
        self, config: dict[str, Any], index: int, rng: np.random.Generator
    ) -> dict[str, np.ndarray]:
        field = gaussian_random_field(config["size"], rng, alpha=config["alpha"], tau=config["tau"])
        coefficient = darcy_coefficient(
            field, high=config["high"], low=config["low"], threshold=config["threshold"]
        )
        solution = darcy_solve(
            coefficient, forcing=config["forcing"], solver=config["solver"], rtol=config["rtol"]
        )
        stride = config["stride"]
        return {
            "coefficient": coefficient[::stride, ::stride].astype(np.float32),
            "solution": solution[::stride, ::stride].astype(np.float32),
        }


class MultiscaleDarcyFlow:
    """Multiscale trigonometric permeabilities and their Darcy pressure (HANO / MgNO).

    Options (``[config]``):

    ``size`` (default 253)
        Nodes per side of the grid the equation is solved on, boundary included.
    ``stride`` (default 4)
        Store every ``stride``-th node per axis: ``(size - 1) // stride + 1`` points
        (253 at stride 4 gives 64; 1021 at stride 4 gives 256, MgNO's grid). With
        ``size - 1`` a multiple of ``stride`` the stored grid keeps both boundaries.
    ``n_scales`` (default 6) and ``amplitude`` (default 0.5)
        ``K`` and ``b`` of :func:`multiscale_coefficient`; ``a_k ~ U[2^(k-1), 2^k]``.
    ``forcing`` (default 1)
        The constant right-hand side.
    ``solver`` (``"direct"`` or ``"amg"``, default ``"direct"``) and ``rtol`` (default 1e-10)
        See :func:`darcy_solve` (AMG is about twice as fast at ``size = 1021``).

    Fields ``coefficient`` (input) and ``solution`` (target), float32, ``(s, s)`` with
    ``s`` the stored size, axis 0 along ``x``; the solution is zero on the boundary nodes.

    Notes
    -----
    Sample ``i`` draws its ``K`` scales from its own random stream
    (``rng.uniform(2^(k-1), 2^k)`` for ``k = 1, ..., K``, one call), evaluates
    :func:`multiscale_coefficient` at the nodes of the ``size``-point grid, solves
    ``-∇·(a∇u) = forcing``, ``u = 0`` on the boundary, with :func:`darcy_solve` in float64
    and subsamples both fields with ``stride``. The finest factor oscillates about
    ``3 a_6 / 2 <= 96`` times per unit length along ``x``, so a 64-point grid aliases it;
    the default solves on 253 points (relative L2 distance of the stored solution to a
    1009-point solve about 5 %, against 18 % for a solve on 64 points). HANO solved with P1
    finite elements on 1023 points and kept every 4th (256, without the last row and column).
    """

    default_samples = 1200
    default_splits: ClassVar[dict[str, float]] = DarcyFlow.default_splits
    inputs = ("coefficient",)
    targets = ("solution",)
    default_config: ClassVar[dict[str, Any]] = {
        "size": 253,
        "stride": 4,
        "n_scales": 6,
        "amplitude": 0.5,
        "forcing": 1.0,
        "solver": "direct",
        "rtol": 1e-10,
    }

    def validate(self, config: dict[str, Any]) -> None:
        check_nodal_grid(config)
        if not 1 <= config["n_scales"] <= 30:
            raise ValueError(f"config.n_scales: {config['n_scales']}, expected 1 to 30")
        if not 0 <= config["amplitude"] < 1:
            raise ValueError(
                f"config.amplitude: {config['amplitude']}, expected a number in [0, 1) "
                "(the permeability must stay positive)"
            )
        _check_solver(config)

    fields = DarcyFlow.fields  # the same coefficient and solution fields

    def sample(
        self, config: dict[str, Any], index: int, rng: np.random.Generator
    ) -> dict[str, np.ndarray]:
        scales = np.arange(config["n_scales"], dtype=np.float64)
        frequencies = rng.uniform(2.0**scales, 2.0 ** (scales + 1.0))
        coefficient = multiscale_coefficient(
            frequencies, config["size"], amplitude=config["amplitude"]
        )
        solution = darcy_solve(
            coefficient, forcing=config["forcing"], solver=config["solver"], rtol=config["rtol"]
        )
        stride = config["stride"]
        return {
            "coefficient": coefficient[::stride, ::stride].astype(np.float32),
            "solution": solution[::stride, ::stride].astype(np.float32),
        }


register_generator("darcy-smooth", DarcyFlow(tau=3.0))
register_generator("darcy-rough", DarcyFlow(tau=5.0))
register_generator("darcy-multiscale", MultiscaleDarcyFlow)
