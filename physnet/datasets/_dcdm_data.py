"""Training right-hand sides for learned Poisson solvers (DCDM-style search-direction networks).

A network ``f`` that proposes search directions inside flexible CG is trained on
right-hand sides ``b`` with the loss ``||b - (b^T f / f^T A f) A f||^2``; what it sees at
solve time are normalised residuals of later iterations, dominated by smooth, low-frequency
error with sharp features next to obstacles and air. Two generators provide such ``b``:

``dcdm-rhs``
    The fast one: per sample a random geometry (a family of obstacles with random
    placements and sizes, and a random air region) and a right-hand side drawn from a
    configurable mixture of smooth random fields, residuals of short Krylov runs (a
    smoothing Chebyshev iteration, and CG), ``A`` applied to a smooth field, and the
    scenes' standard right-hand side. About 180 samples per second at ``32^3`` on one
    core.
``dcdm-ritz``
    The DCDM paper's recipe at small size, for comparison: one fixed matrix (the empty box
    with an air layer on top), ``m`` Lanczos steps with full reorthogonalisation, and
    ``b = sum_j c_j q_j`` over the Ritz vectors with 9 times larger weights on the lowest
    ``m / 2 + theta`` of them (Kaneda et al. 2023, §4 of ``references/dcdm.md``).

Both write the cell ``flags`` (int8) and ``rhs`` (float32, unit 2-norm, zero off the fluid
cells, mean zero on every fluid region that touches no air) and name both fields as
inputs and as targets: the loss reads ``b`` and the geometry (hence ``A``) from the target.

Examples
--------
>>> import numpy as np
>>> from physnet.datasets.generate import get_generator, sample_of
>>> rhs = get_generator("dcdm-rhs")
>>> config = rhs.check_config({"size": 16, "ndim": 2})
>>> sample = sample_of(rhs, config, seed=0, index=5)
>>> sample["flags"].dtype, sample["rhs"].dtype, sample["rhs"].shape
(dtype('int8'), dtype('float32'), (16, 16))
>>> round(float(np.linalg.norm(sample["rhs"])), 5)
1.0
>>> sample_choice(config, 5).component in MIXTURE_COMPONENTS
True
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, NamedTuple

import numpy as np
import scipy.linalg

from physnet.datasets.generate import check_grid, register_generator
from physnet.datasets.scenes import (
    MIN_SIZE,
    _cell_centres,
    _evaluate_field,
    _inside_box,
    _random_coefficients,
    _remove_neumann_means,
    _squared_distance,
    make_scene,
    standard_rhs,
)
from physnet.operators.poisson import AIR, FLUID, SOLID, GridPoisson

__all__ = [
    "AIR_MODES",
    "ERROR_SCALES",
    "HELD_OUT_FAMILIES",
    "MIXTURE_COMPONENTS",
    "TRAINING_FAMILIES",
    "DcdmErrors",
    "DcdmRhs",
    "DcdmRitz",
    "SampleChoice",
    "chebyshev_steps",
    "lanczos_ritz",
    "multiscale_error",
    "random_geometry",
    "sample_choice",
]

DCDM_DATA_VERSION = 1

#: Obstacle families of the default training mix.
TRAINING_FAMILIES = ("empty", "sphere", "box", "boxes", "blob")
#: Families kept out of the default mix, so that benchmarks can test unseen geometries.
HELD_OUT_FAMILIES = ("torus", "pillars")
#: The right-hand-side kinds of the ``dcdm-rhs`` mixture.
MIXTURE_COMPONENTS = ("smooth", "krylov", "cg", "operator", "standard")
#: Where the air (Dirichlet) cells are.
AIR_MODES = ("top", "surface", "closed")

# Weyl-sequence increments for the per-index choices: 1 and these are linearly
# independent over the rationals, so the three choices are jointly equidistributed.
_FAMILY_STEP = (math.sqrt(5.0) - 1.0) / 2.0
_COMPONENT_STEP = math.sqrt(2.0) - 1.0
_AIR_STEP = math.sqrt(3.0) - 1.0

# The Chebyshev residual polynomial is at most this on the interval it damps.
_CHEBYSHEV_DAMPING = 1e-3
# A Krylov residual below this fraction of the start is rounding, not a training signal.
_KRYLOV_FLOOR = 1e-6
# Ritz values below this are dropped (the paper's rule; none for an SPD matrix).
_MIN_RITZ_VALUE = 1e-8
# A second Gram-Schmidt pass when the first left less than this fraction of the norm (DGKS).
_DGKS_RATIO = 1.0 / math.sqrt(2.0)
# Column block of the in-place Ritz-vector product (a temporary of this many bytes).
_RITZ_BLOCK_BYTES = 64 * 2**20
# A Lanczos run of at least this many steps x unknowns shows a progress bar (64^3, m = 2000: 5e8).
_PROGRESS_WORK = 10**8
# Retries for a geometry with too few fluid cells (a surface below most obstacles).
_MIN_FLUID_FRACTION = 0.1
_GEOMETRY_ATTEMPTS = 20


# --- per-index choices --------------------------------------------------------------------


class SampleChoice(NamedTuple):
    """What sample ``index`` of a ``dcdm-rhs`` generation is made of."""

    family: str
    component: str
    air: str


def _weyl_choice(weights: Sequence[float], index: int, step: float) -> int:
    """Category of ``index`` under a low-discrepancy (Weyl) sequence ``(index + 1) step mod 1``.

    Every contiguous block of indices (so every split) holds each category in proportion
    to its weight up to ``O(log n / n)``, deterministically.
    """
    cumulative = np.cumsum(np.asarray(weights, dtype=float))
    position = math.fmod((index + 1) * step, 1.0) * cumulative[-1]
    return int(min(np.searchsorted(cumulative, position, side="right"), len(weights) - 1))


def sample_choice(config: Mapping[str, Any], index: int) -> SampleChoice:
    """The obstacle family, right-hand-side component and air mode of sample ``index``.

    Parameters
    ----------
    config : dict
        A checked ``dcdm-rhs`` configuration (``get_generator("dcdm-rhs").check_config``).
    index : int
        The sample index.

    Returns
    -------
    SampleChoice

    Notes
    -----
    The choices are a deterministic function of the index, not random draws: the
    component of sample ``i`` is the category whose cumulative-weight interval holds
    ``frac((i + 1) (sqrt 2 - 1))``, the family (equal weights over ``config["families"]``,
    so listing one twice doubles it) uses ``(sqrt 5 - 1) / 2`` and the air mode
    ``sqrt 3 - 1``. These Weyl sequences make every contiguous block of samples (every
    split) follow the configured proportions closely, with the three choices jointly
    equidistributed.

    Examples
    --------
    >>> from physnet.datasets.generate import get_generator
    >>> config = get_generator("dcdm-rhs").check_config({})
    >>> sample_choice(config, 0)
    SampleChoice(family='boxes', component='krylov', air='surface')
    """
    families = config["families"]
    components = [config["mixture"][name] for name in MIXTURE_COMPONENTS]
    air = [config["air"][name] for name in AIR_MODES]
    return SampleChoice(
        family=families[_weyl_choice([1.0] * len(families), index, _FAMILY_STEP)],
        component=MIXTURE_COMPONENTS[_weyl_choice(components, index, _COMPONENT_STEP)],
        air=AIR_MODES[_weyl_choice(air, index, _AIR_STEP)],
    )


# --- geometry -----------------------------------------------------------------------------


def random_geometry(
    family: str,
    size: int,
    *,
    ndim: int = 3,
    air: str = "top",
    rng: np.random.Generator,
) -> np.ndarray:
    """Cell flags of a random obstacle of one family in the unit box, with an air region.

    Parameters
    ----------
    family : str
        One of :data:`TRAINING_FAMILIES` or :data:`HELD_OUT_FAMILIES` (below).
    size : int
        Cells per axis.
    ndim : {3, 2}, default 3
    air : {"top", "surface", "closed"}, default "top"
        ``"top"``: the top cell layer is air (the smoke box of
        :func:`~physnet.datasets.make_scene`). ``"surface"``: the fluid cells above a wavy
        free surface are air (a liquid pool). ``"closed"``: no air; every fluid region is
        a pure-Neumann (singular) block.
    rng : numpy.random.Generator
        The only source of randomness.

    Returns
    -------
    numpy.ndarray of int8, shape ``(size,) * ndim``
        ``FLUID`` (0), ``SOLID`` (1) or ``AIR`` (2); at least 10% of the cells are fluid.

    Notes
    -----
    Coordinates as in :func:`~physnet.datasets.make_scene` (unit box, cell centres at
    ``(i + 1/2) / size``, the last axis up, solid walls outside the array), so a geometry
    drawn with the same generator state is the same shape at every resolution. ``U(a, b)``
    is a uniform draw, in this order:

    - ``empty``: no obstacle.
    - ``sphere``: ``1 + integers(3)`` balls, each a centre ``U(0.2, 0.8)^d`` and a radius
      ``U(0.06, 0.22)``.
    - ``box``: one box, centre ``U(0.3, 0.7)^d``, half-extents ``U(0.05, 0.25)^d``, turned by
      ``U(0, pi/2)`` in the plane of the first two axes.
    - ``boxes``: ``2 + integers(7)`` axis-aligned boxes, centres ``U(0.1, 0.9)^d``,
      half-extents ``U(0.03, 0.15)^d``.
    - ``blob``: ``1 - (r / R)^2 + a g(x) > 0`` and ``r <= 1.8 R``, ``r`` the distance to a
      centre ``U(0.35, 0.65)^d``, ``R = U(0.12, 0.28)``, ``a = U(0.3, 0.7)``, ``g`` a
      unit-variance random field (the scenes' trigonometric field, ``k0 = 1.5``, cutoff 4).
    - ``torus`` (held out): a horizontal ring around a vertical axis at ``U(0.4, 0.6)``
      horizontally, height ``U(0.3, 0.6)``, major radius ``U(0.15, 0.3)``, minor radius
      ``U(0.04, 0.1)``; in 2-D the annulus around that point.
    - ``pillars`` (held out): ``2 + integers(5)`` vertical cylinders (bars in 2-D) standing
      on the floor, axis ``U(0.1, 0.9)`` horizontally, radius ``U(0.03, 0.08)``, top
      ``U(0.3, 0.85)``.

    The air region is drawn after the obstacle. ``surface``: air where the fluid cell's
    height exceeds ``h0 + a g(x_h)``, ``h0 = U(0.35, 0.85)``, ``a = U(0, 0.1)`` and ``g`` a
    unit-variance field of the horizontal coordinates (``k0 = 1.5``, cutoff 3). A draw
    leaving fewer than 10% fluid cells is redrawn.

    Examples
    --------
    >>> import numpy as np
    >>> flags = random_geometry("pillars", 16, ndim=2, rng=np.random.default_rng(0))
    >>> flags.shape, bool((flags[:, -1] == 2).all()), bool((flags == 1).any())
    ((16, 16), True, True)
    """
    if family not in _FAMILIES:
        raise ValueError(
            f"random_geometry: unknown family {family!r}, expected one of {tuple(_FAMILIES)}"
        )
    if air not in AIR_MODES:
        raise ValueError(f"random_geometry: air={air!r}, expected one of {AIR_MODES}")
    centres = _cell_centres(size, ndim)
    shape = (size,) * ndim
    for _ in range(_GEOMETRY_ATTEMPTS):
        flags = np.full(shape, FLUID, dtype=np.int8)
        flags[_FAMILIES[family](centres, rng)] = SOLID
        if air == "top":
            flags[..., -1] = AIR
        elif air == "surface":
            flags[(flags == FLUID) & _above_surface(centres, rng)] = AIR
        if np.count_nonzero(flags == FLUID) >= _MIN_FLUID_FRACTION * flags.size:
            return flags
    raise RuntimeError(
        f"random_geometry: no {family!r} geometry with {_MIN_FLUID_FRACTION:.0%} fluid cells "
        f"in {_GEOMETRY_ATTEMPTS} draws"
    )


def _grid_shape(centres) -> tuple[int, ...]:
    return np.broadcast_shapes(*(x.shape for x in centres))


def _no_obstacle(centres, rng):
    return np.zeros(_grid_shape(centres), dtype=bool)


def _balls(centres, rng):
    ndim = len(centres)
    count = 1 + int(rng.integers(3))
    mask = _no_obstacle(centres, rng)
    for _ in range(count):
        centre = rng.uniform(0.2, 0.8, size=ndim)
        radius = rng.uniform(0.06, 0.22)
        mask |= _squared_distance(centres, centre) <= radius**2
    return mask


def _turned_box(centres, rng):
    ndim = len(centres)
    centre = rng.uniform(0.3, 0.7, size=ndim)
    half_extents = rng.uniform(0.05, 0.25, size=ndim)
    angle = rng.uniform(0.0, np.pi / 2)
    cos, sin = np.cos(angle), np.sin(angle)
    offsets = [x - c for x, c in zip(centres, centre, strict=True)]
    turned = [cos * offsets[0] + sin * offsets[1], -sin * offsets[0] + cos * offsets[1]]
    return _inside_box([*turned, *offsets[2:]], [0.0] * ndim, half_extents)


def _random_boxes(centres, rng):
    ndim = len(centres)
    count = 2 + int(rng.integers(7))
    box_centres = rng.uniform(0.1, 0.9, size=(count, ndim))
    half_extents = rng.uniform(0.03, 0.15, size=(count, ndim))
    mask = _no_obstacle(centres, rng)
    for centre, half in zip(box_centres, half_extents, strict=True):
        mask |= _inside_box(centres, centre, half)
    return mask


def _random_blob(centres, rng):
    ndim = len(centres)
    centre = rng.uniform(0.35, 0.65, size=ndim)
    radius = rng.uniform(0.12, 0.28)
    amplitude = rng.uniform(0.3, 0.7)
    coefficients = _random_coefficients(rng, ndim, 4, 1.5)
    field = _evaluate_field(coefficients, [x.ravel() for x in centres])
    radius2 = _squared_distance(centres, centre)
    return (1.0 - radius2 / radius**2 + amplitude * field > 0) & (radius2 <= (1.8 * radius) ** 2)


def _random_torus(centres, rng):
    ndim = len(centres)
    axis = rng.uniform(0.4, 0.6, size=ndim - 1)
    height = rng.uniform(0.3, 0.6)
    major, minor = rng.uniform(0.15, 0.3), rng.uniform(0.04, 0.1)
    if ndim == 2:
        radial = np.sqrt(_squared_distance(centres, [axis[0], height]))
        return np.abs(radial - major) <= minor
    horizontal = np.sqrt(_squared_distance(centres[:-1], axis))
    return (horizontal - major) ** 2 + (centres[-1] - height) ** 2 <= minor**2


def _random_pillars(centres, rng):
    ndim = len(centres)
    count = 2 + int(rng.integers(5))
    mask = _no_obstacle(centres, rng)
    for _ in range(count):
        axis = rng.uniform(0.1, 0.9, size=ndim - 1)
        radius = rng.uniform(0.03, 0.08)
        top = rng.uniform(0.3, 0.85)
        mask |= (_squared_distance(centres[:-1], axis) <= radius**2) & (centres[-1] <= top)
    return mask


def _above_surface(centres, rng) -> np.ndarray:
    level = rng.uniform(0.35, 0.85)
    amplitude = rng.uniform(0.0, 0.1)
    coefficients = _random_coefficients(rng, len(centres) - 1, 3, 1.5)
    wave = _evaluate_field(coefficients, [x.ravel() for x in centres[:-1]])
    return centres[-1] > level + amplitude * wave[..., np.newaxis]


_FAMILIES: dict[str, Callable[[list, np.random.Generator], np.ndarray]] = {
    "empty": _no_obstacle,
    "sphere": _balls,
    "box": _turned_box,
    "boxes": _random_boxes,
    "blob": _random_blob,
    "torus": _random_torus,
    "pillars": _random_pillars,
}


# --- right-hand sides ---------------------------------------------------------------------


def _log_uniform(rng: np.random.Generator, low: float, high: float) -> float:
    return float(np.exp(rng.uniform(np.log(low), np.log(high))))


def _smooth_field(shape: tuple[int, ...], length_scale: float, rng) -> np.ndarray:
    """White noise filtered to the Gaussian spectrum ``exp(-2 pi^2 l^2 |k|^2)`` (periodic).

    ``k`` in cycles per unit length, the unit being the longest axis; the covariance is
    about ``exp(-r^2 / (2 l^2))``. The field is periodic over the grid, which only
    correlates opposite walls a little.
    """
    length = max(shape)
    axes = tuple(range(len(shape)))
    frequencies = [np.fft.fftfreq(n, d=1.0 / length) for n in shape[:-1]]
    frequencies.append(np.fft.rfftfreq(shape[-1], d=1.0 / length))
    squared = sum(k**2 for k in np.meshgrid(*frequencies, indexing="ij", sparse=True))
    spectrum = np.exp(-(np.pi**2) * length_scale**2 * squared)  # the amplitude, sqrt(S)
    noise = np.fft.rfftn(rng.standard_normal(shape), axes=axes)
    return np.fft.irfftn(noise * spectrum, s=shape, axes=axes)


def _smooth_component(flags, config, rng) -> np.ndarray:
    return _smooth_field(flags.shape, _log_uniform(rng, *config["length_scales"]), rng)


def _krylov_start(flags, config, rng, white: bool) -> tuple[GridPoisson, np.ndarray]:
    """The operator and a consistent start ``b0`` on the unknowns (white or smooth)."""
    start = rng.standard_normal(flags.shape) if white else _smooth_component(flags, config, rng)
    A = GridPoisson(flags)
    return A, A.gather(_consistent(start, flags))


def _krylov_component(flags, config, rng) -> np.ndarray:
    white = bool(rng.random() < config["krylov_white_fraction"])
    wavelength = _log_uniform(rng, *config["krylov_wavelengths"]) * max(flags.shape)
    # The eigenvalue of a mode of that wavelength (in cells) along one axis.
    lower = 4.0 * math.sin(math.pi / max(wavelength, 2.0)) ** 2
    A, b = _krylov_start(flags, config, rng, white)
    return A.scatter(_chebyshev_residual(A, b, lower))


def _cg_component(flags, config, rng) -> np.ndarray:
    white = bool(rng.random() < config["krylov_white_fraction"])
    most = config["cg_max_iterations"]
    iterations = int(min(max(np.exp(rng.uniform(0.0, np.log(most + 1))), 1), most))
    A, b = _krylov_start(flags, config, rng, white)
    return A.scatter(_cg_residual(A, b, iterations))


def _operator_component(flags, config, rng) -> np.ndarray:
    A = GridPoisson(flags)
    field = _smooth_component(flags, config, rng)
    return A.scatter(A @ A.gather(field))


def _standard_component(flags, config, rng) -> np.ndarray:
    return standard_rhs(flags, seed=int(rng.integers(2**63 - 1)))


_COMPONENTS: dict[str, Callable[[np.ndarray, dict, np.random.Generator], np.ndarray]] = {
    "smooth": _smooth_component,
    "krylov": _krylov_component,
    "cg": _cg_component,
    "operator": _operator_component,
    "standard": _standard_component,
}


def chebyshev_steps(cutoff: float) -> int:
    """Chebyshev steps that damp the spectrum above ``cutoff`` (a fraction of it) by 1000.

    The smallest ``k`` with ``T_k((1 + c) / (1 - c)) >= 1000``: 12 for ``c = 0.1``, 121
    for ``c = 1e-3``.

    Examples
    --------
    >>> chebyshev_steps(0.1), chebyshev_steps(1e-3)
    (12, 121)
    """
    growth = (1.0 + cutoff) / (1.0 - cutoff)
    return max(1, math.ceil(math.acosh(1.0 / _CHEBYSHEV_DAMPING) / math.acosh(growth)))


def _chebyshev_residual(A: GridPoisson, b: np.ndarray, lower: float) -> np.ndarray:
    """The residual of a Chebyshev iteration on ``A x = b`` from ``x = 0`` that keeps ``b``'s
    eigencomponents below ``lower`` and damps the rest by 1000.

    The residual after ``k =`` :func:`chebyshev_steps` ``(lower / u)`` steps is ``p_k(A) b``,
    ``p_k(lambda) = T_k((u + l - 2 lambda) / (u - l)) / T_k((u + l) / (u - l))``,
    ``l = lower``: ``p_k(0) = 1``, ``p_k`` falls monotonically on ``[0, l]`` and
    ``|p_k| <= 1e-3`` on ``[l, u]``, where ``u = 4 ndim`` bounds the spectrum of the
    unit-spacing operator (Gershgorin). Saad, *Iterative Methods for Sparse Linear
    Systems*, 2nd ed., Algorithm 12.1.
    """
    upper = 4.0 * len(A.grid_shape)
    iterations = chebyshev_steps(lower / upper)
    centre, half_width = (upper + lower) / 2, (upper - lower) / 2
    sigma = centre / half_width
    rho = 1.0 / sigma
    residual = b.copy()
    step = residual / centre
    for _ in range(iterations):
        residual -= A @ step
        rho_next = 1.0 / (2.0 * sigma - rho)
        step = (rho_next * rho) * step + (2.0 * rho_next / half_width) * residual
        rho = rho_next
    return residual


def _cg_residual(A: GridPoisson, b: np.ndarray, iterations: int) -> np.ndarray:
    """The residual of ``iterations`` CG steps on ``A x = b`` from ``x = 0`` (recurrence).

    It stops early, keeping the last residual, once the next one would fall below
    ``1e-6 ||b||``: a residual at rounding level carries no structure to learn.
    """
    residual = b.copy()
    direction = residual.copy()
    rho = float(residual @ residual)
    floor = (_KRYLOV_FLOOR**2) * rho
    for _ in range(iterations):
        image = A @ direction
        curvature = float(direction @ image)
        if not curvature > 0:
            break
        following = residual - (rho / curvature) * image
        rho_following = float(following @ following)
        if rho_following <= floor:
            break
        direction = following + (rho_following / rho) * direction
        residual, rho = following, rho_following
    return residual


def _consistent(rhs: np.ndarray, flags: np.ndarray) -> np.ndarray:
    """``rhs`` zero off the fluid cells, mean-free on every pure-Neumann region, unit norm."""
    rhs = np.where(flags == FLUID, rhs, 0.0)
    _remove_neumann_means(rhs, flags)
    norm = float(np.linalg.norm(rhs))
    if not norm > 0:
        raise RuntimeError("dcdm-rhs: a right-hand side vanished on every fluid cell")
    return rhs / norm


def _positive_weights(config: Mapping[str, Any], key: str, names: Sequence[str]) -> None:
    weights = [config[key][name] for name in names]
    if any(not (math.isfinite(w) and w >= 0) for w in weights) or not sum(weights) > 0:
        raise ValueError(
            f"config.{key}: {dict(config[key])}, expected finite non-negative weights with a "
            "positive sum"
        )


def _check_geometry_options(config: Mapping[str, Any]) -> None:
    """The grid, obstacle families and air modes shared by the random-geometry generators."""
    check_grid(config, MIN_SIZE)
    families = config["families"]
    if not families or any(name not in _FAMILIES for name in families):
        raise ValueError(
            f"config.families: {families}, expected a non-empty list among {list(_FAMILIES)}"
        )
    _positive_weights(config, "air", AIR_MODES)


@register_generator("dcdm-rhs")
class DcdmRhs:
    """Random geometries with right-hand sides of the low-frequency kind DCDM must handle.

    Options (``[config]``):

    ``size`` (default 32), ``ndim`` (3 or 2, default 3)
        The grid, ``(size,) * ndim`` cells.
    ``families`` (default :data:`TRAINING_FAMILIES`)
        Obstacle families (:func:`random_geometry`), equally weighted; the held-out
        :data:`HELD_OUT_FAMILIES` are accepted, for test sets of unseen geometries.
    ``mixture`` (table; default ``smooth = 0.2, krylov = 0.4, cg = 0.1,``
    ``operator = 0.15, standard = 0.15``)
        Weights of the right-hand-side components (normalised; a table given in a
        configuration is merged into the defaults, so set the others to 0 to drop them).
    ``air`` (table; default ``top = 0.6, surface = 0.3, closed = 0.1``)
        Weights of the air modes of :func:`random_geometry`.
    ``length_scales`` (default ``[0.02, 0.3]``)
        Range of the smooth fields' correlation length ``l`` (unit box), drawn
        log-uniformly.
    ``krylov_wavelengths`` (default ``[0.1, 1.0]``)
        Range of the ``krylov`` component's shortest kept wavelength ``w`` (unit box),
        drawn log-uniformly.
    ``cg_max_iterations`` (default 64)
        ``K``, the most CG steps of the ``cg`` component.
    ``krylov_white_fraction`` (default 0.5)
        The share of white-noise starts of the ``krylov`` and ``cg`` components.

    Notes
    -----
    Sample ``i`` takes its family, component and air mode from :func:`sample_choice`
    (deterministic per index, proportions exact up to ``O(log n / n)`` in every split).
    Its random stream splits into ``geometry_rng, rhs_rng = rng.spawn(2)``; the flags are
    :func:`random_geometry` ``(family, size, ndim=ndim, air=air, rng=geometry_rng)`` and the
    right-hand side, from ``rhs_rng``, is one of

    ``smooth``
        A Gaussian random field ``g`` with correlation length ``l`` (log-uniform in
        ``length_scales``), white noise filtered by ``exp(-pi^2 l^2 |k|^2)`` in Fourier
        space, on the fluid cells.
    ``krylov``
        The residual ``r = p_k(A) b0`` of the Chebyshev iteration from ``x_0 = 0`` that
        damps ``[l, 4 ndim]`` (up to the spectrum's Gershgorin bound) by 1000, with
        ``l = 4 sin^2(pi / max(w size, 2))`` the eigenvalue of a mode of wavelength ``w``
        (``w`` log-uniform in ``krylov_wavelengths``), in ``k =`` :func:`chebyshev_steps`
        steps (8 to 68 at ``32^3``; a damping of 1000 keeps the ripple of a white start
        below the few kept modes). ``p_k(0) = 1``, so the eigencomponents below ``l``, the
        smooth ones, survive with the structure next to obstacles and air that the
        operator's low modes carry, as in the residuals a good but local preconditioner
        leaves. ``b0`` is white noise (probability ``krylov_white_fraction``) or a
        ``smooth`` field, made consistent.
    ``cg``
        The residual of ``k`` CG steps from ``x_0 = 0``, ``b0`` drawn as for ``krylov`` and
        ``k = min(max(floor(exp(U(0, log(K + 1)))), 1), K)`` (log-uniform in ``[1, K]``),
        stopping early at ``1e-6 ||b0||``. CG converges at both ends of the spectrum
        first, so these residuals have lost their lowest modes but are *not* smoother than
        white noise (measured at ``32^3``: ``||grad r|| / ||r||`` about that of white
        noise); they stand for the rough residuals of early iterations.
    ``operator``
        ``A g`` for a ``smooth`` field ``g``: the system's solution is smooth, and ``b``
        concentrates at walls (a missing flux) and next to air (the Dirichlet jump).
    ``standard``
        :func:`~physnet.datasets.standard_rhs` ``(flags, seed)``, seed the stream's first
        integer draw: the divergence of a random tapered velocity, as in the scenes.

    Draw order: ``krylov`` and ``cg`` draw the white/smooth coin, then ``w`` or ``k``, then the
    start;
    ``smooth`` and ``operator`` draw ``l`` then the noise. Every right-hand side is set to
    zero off the fluid cells, its mean is removed on every fluid region that touches no
    air (so ``A x = b`` is consistent), it is scaled to unit 2-norm in float64 and stored as
    float32.

    References
    ----------
    .. [1] A. Kaneda et al., "A Deep Conjugate Direction Method for Iteratively Solving
       Linear Systems", ICML 2023.
    """

    default_config: ClassVar[dict[str, Any]] = {
        "size": 32,
        "ndim": 3,
        "families": list(TRAINING_FAMILIES),
        "mixture": {
            "smooth": 0.2,
            "krylov": 0.4,
            "cg": 0.1,
            "operator": 0.15,
            "standard": 0.15,
        },
        "air": {"top": 0.6, "surface": 0.3, "closed": 0.1},
        "length_scales": [0.02, 0.3],
        "krylov_wavelengths": [0.1, 1.0],
        "cg_max_iterations": 64,
        "krylov_white_fraction": 0.5,
    }
    default_samples = 4096
    default_splits: ClassVar[dict[str, float]] = {"train": 0.9, "val": 0.05, "test": 0.05}
    inputs = ("rhs", "flags")
    targets = ("rhs", "flags")

    def validate(self, config: dict[str, Any]) -> None:
        _check_geometry_options(config)
        _positive_weights(config, "mixture", MIXTURE_COMPONENTS)
        scales = config["length_scales"]
        if len(scales) != 2 or not 0 < scales[0] <= scales[1]:
            raise ValueError(
                f"config.length_scales: {scales}, expected [low, high] with 0 < low <= high"
            )
        wavelengths = config["krylov_wavelengths"]
        if len(wavelengths) != 2 or not 0 < wavelengths[0] <= wavelengths[1]:
            raise ValueError(
                f"config.krylov_wavelengths: {wavelengths}, expected [low, high] with "
                "0 < low <= high"
            )
        if config["cg_max_iterations"] < 1:
            raise ValueError(
                f"config.cg_max_iterations: {config['cg_max_iterations']}, expected >= 1"
            )
        if not 0.0 <= config["krylov_white_fraction"] <= 1.0:
            raise ValueError(
                f"config.krylov_white_fraction: {config['krylov_white_fraction']}, "
                "expected a fraction in [0, 1]"
            )

    def fields(self, config: dict[str, Any]) -> dict[str, tuple[tuple[int, ...], Any]]:
        shape = (config["size"],) * config["ndim"]
        return {"flags": (shape, np.int8), "rhs": (shape, np.float32)}

    def sample(
        self, config: dict[str, Any], index: int, rng: np.random.Generator
    ) -> dict[str, np.ndarray]:
        choice = sample_choice(config, index)
        geometry_rng, rhs_rng = rng.spawn(2)
        flags = random_geometry(
            choice.family, config["size"], ndim=config["ndim"], air=choice.air, rng=geometry_rng
        )
        rhs = _consistent(_COMPONENTS[choice.component](flags, config, rhs_rng), flags)
        return {"flags": flags, "rhs": rhs.astype(np.float32)}


#: Length scales (cells) of the ``dcdm-errors`` error components.
ERROR_SCALES = (1, 2, 4, 8, 16)


def multiscale_error(
    flags: np.ndarray, scales: Sequence[float], rng: np.random.Generator
) -> np.ndarray:
    """An error on the fluid cells whose ``A``-energy is spread at random over ``scales``.

    Component ``k`` is white noise smoothed by a Gaussian of standard deviation
    ``scales[k] / 2`` cells (unsmoothed for a scale of 1), set to zero off the fluid and
    normalised to unit ``A``-norm; the error is ``sum_k sqrt(w_k) e_k`` with weights
    ``w`` uniform on the simplex. Returned on the full grid, zero off the fluid cells.
    """
    import scipy.ndimage

    A = GridPoisson(flags)
    fluid = flags == FLUID
    weights = rng.random(len(scales))
    weights /= weights.sum()
    error = np.zeros(flags.shape)
    for weight, scale in zip(weights, scales, strict=True):
        noise = rng.standard_normal(flags.shape)
        if scale > 1:
            noise = scipy.ndimage.gaussian_filter(noise, sigma=0.5 * scale, mode="reflect")
        noise = np.where(fluid, noise, 0.0)
        values = A.gather(noise)
        energy = float(values @ (A @ values))
        if energy > 0.0:
            error += math.sqrt(weight / energy) * noise
    return error


@register_generator("dcdm-errors")
class DcdmErrors:
    """Random geometries with errors spread over every scale, for the unrolled DCDM loss.

    Options (``[config]``): ``size``, ``ndim``, ``families`` and ``air`` as for
    ``dcdm-rhs``; ``scales`` (default :data:`ERROR_SCALES`), the length scales in cells of
    the error's components (:func:`multiscale_error`).

    Notes
    -----
    Sample ``i`` takes its family and air mode from :func:`sample_choice` (the same Weyl
    sequences as ``dcdm-rhs``), its geometry from :func:`random_geometry` with the first
    of ``rng.spawn(2)`` and its error ``e`` from :func:`multiscale_error` with the second.
    The right-hand side is ``b = A e``; both are scaled so that ``||b||_2 = 1`` (in
    float64) and stored as float32. A conjugate-direction solver reduces the ``A``-norm of
    the error, and every scale of it costs iterations: a loss that sees ``e``
    (:func:`~physnet.training.dcdm_loss.dcdm_unrolled_loss`) weighs them all, where the
    residual ``b`` is dominated by the roughest part.
    """

    default_config: ClassVar[dict[str, Any]] = {
        "size": 32,
        "ndim": 3,
        "families": list(TRAINING_FAMILIES),
        "air": {"top": 0.6, "surface": 0.3, "closed": 0.1},
        "scales": list(ERROR_SCALES),
    }
    default_samples = 2048
    default_splits: ClassVar[dict[str, float]] = {"train": 0.9, "val": 0.05, "test": 0.05}
    inputs = ("rhs", "flags")
    targets = ("error", "flags")

    def validate(self, config: dict[str, Any]) -> None:
        _check_geometry_options(config)
        scales = config["scales"]
        if not scales or any(not scale >= 1 for scale in scales):
            raise ValueError(
                f"config.scales: {scales}, expected a non-empty list of length scales in "
                "cells, each >= 1"
            )

    def fields(self, config: dict[str, Any]) -> dict[str, tuple[tuple[int, ...], Any]]:
        shape = (config["size"],) * config["ndim"]
        return {"flags": (shape, np.int8), "rhs": (shape, np.float32), "error": (shape, np.float32)}

    def sample(
        self, config: dict[str, Any], index: int, rng: np.random.Generator
    ) -> dict[str, np.ndarray]:
        choice = sample_choice({**config, "mixture": DcdmRhs.default_config["mixture"]}, index)
        geometry_rng, error_rng = rng.spawn(2)
        flags = random_geometry(
            choice.family, config["size"], ndim=config["ndim"], air=choice.air, rng=geometry_rng
        )
        error = multiscale_error(flags, config["scales"], error_rng)
        A = GridPoisson(flags)
        rhs = A.scatter(A @ A.gather(error))
        scale = 1.0 / max(float(np.linalg.norm(rhs)), np.finfo(float).tiny)
        return {
            "flags": flags,
            "rhs": (rhs * scale).astype(np.float32),
            "error": (error * scale).astype(np.float32),
        }


# --- the paper's Ritz-vector recipe -------------------------------------------------------


def lanczos_ritz(
    A: Any,
    steps: int,
    start: np.ndarray,
    *,
    min_value: float = _MIN_RITZ_VALUE,
    progress: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Ritz pairs of a symmetric operator from Lanczos with full reorthogonalisation.

    Parameters
    ----------
    A : operator or matrix, shape (n, n)
        Symmetric; only ``A @ v`` on float64 vectors is used.
    steps : int
        Lanczos steps ``m`` (at most ``n`` are taken; fewer if an invariant subspace is
        found).
    start : numpy.ndarray, shape (n,)
        The start vector (normalised here).
    min_value : float, default 1e-8
        Ritz values at or below it are dropped, with their vectors.
    progress : bool, default False
        Show a tqdm progress bar over the steps (for large runs).

    Returns
    -------
    values : numpy.ndarray, shape (k,)
        Ritz values in ascending order.
    vectors : numpy.ndarray, shape (n, k)
        The Ritz vectors ``Q = V W`` as columns, orthonormal to rounding (float64, a
        Fortran-ordered view of the basis' storage).

    Notes
    -----
    Step ``j`` computes ``w = A v_j - alpha_j v_j - beta_{j-1} v_{j-1}`` and orthogonalises
    ``w`` against all previous ``v`` by classical Gram–Schmidt: ``w -= V^T (V w)``, two
    BLAS matrix–vector products over the basis stored as contiguous float64 rows. A second
    pass is made only when the first removed a noticeable part of ``w``
    (``||w'|| < ||w|| / sqrt 2``, the Daniel–Gragg–Kaufman–Stewart criterion); in Lanczos
    ``w`` is already orthogonal up to rounding growth, so one pass restores orthogonality
    to rounding and the second is rarely taken. The tridiagonal
    ``T = tridiag(beta, alpha, beta)`` is diagonalised (``T W = W Theta``) and the Ritz
    vectors ``Q^T = W^T V`` overwrite the basis in column blocks, so the peak memory is the
    basis itself, ``m n`` doubles. Cost: ``O(m^2 n)`` memory-bound flops (``4 m^2 n`` bytes
    read per pass) plus ``2 m^2 n`` for the Ritz vectors — the reason the paper's
    ``m = 10,000`` at ``64^3`` (about 21 GB) is expensive.

    Examples
    --------
    >>> import numpy as np
    >>> A = np.diag(np.arange(1.0, 11.0))
    >>> values, vectors = lanczos_ritz(A, 10, np.ones(10))
    >>> np.allclose(values, np.arange(1.0, 11.0)), np.allclose(vectors.T @ vectors, np.eye(10))
    (True, True)
    """
    start = np.asarray(start, dtype=np.float64)
    n = start.shape[0]
    steps = min(int(steps), n)
    basis = np.empty((steps, n))
    alpha = np.zeros(steps)
    beta = np.zeros(steps)
    basis[0] = start / np.linalg.norm(start)
    taken = steps
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=steps, desc="lanczos", unit="step", mininterval=5.0)
    for j in range(steps):
        w = np.asarray(A @ basis[j], dtype=np.float64)
        alpha[j] = basis[j] @ w
        w -= alpha[j] * basis[j]
        if j > 0:
            w -= beta[j - 1] * basis[j - 1]
        previous = basis[: j + 1]
        for _ in range(2):
            before = np.linalg.norm(w)
            w -= previous.T @ (previous @ w)
            if np.linalg.norm(w) >= _DGKS_RATIO * before:
                break
        if bar is not None:
            bar.update()
        if j + 1 == steps:
            break
        beta[j] = np.linalg.norm(w)
        if beta[j] <= 1e-12 * max(np.max(np.abs(alpha[: j + 1])), beta[: j + 1].max()):
            taken = j + 1  # an invariant subspace: its Ritz values are exact eigenvalues
            break
        basis[j + 1] = w / beta[j]
    if bar is not None:
        bar.close()
    values, weights = scipy.linalg.eigh_tridiagonal(alpha[:taken], beta[: taken - 1])
    keep = values > min_value
    weights = np.ascontiguousarray(weights[:, keep].T)  # (k, taken)
    count = weights.shape[0]
    basis = basis[:taken]
    block = max(1, _RITZ_BLOCK_BYTES // (8 * max(taken, 1)))
    for first in range(0, n, block):
        columns = slice(first, min(first + block, n))
        basis[:count, columns] = weights @ basis[:, columns]
    return values[keep], basis[:count].T


@functools.lru_cache(maxsize=2)
def _ritz_basis(size: int, ndim: int, steps: int, basis_seed: int):
    """The fixed scene's flags and Ritz pairs; computed once per process and configuration.

    BLAS runs on one thread here, so every process (workers included) gets the same bits.
    """
    from threadpoolctl import threadpool_limits

    flags = np.array(make_scene("empty", size, ndim=ndim).flags)
    A = GridPoisson(flags)
    xi = np.random.default_rng(basis_seed).standard_normal(A.shape[0])
    with threadpool_limits(limits=1, user_api="blas"):
        values, vectors = lanczos_ritz(
            A, steps, A @ xi, progress=steps * A.shape[0] >= _PROGRESS_WORK
        )
    for array in (flags, values, vectors):
        array.setflags(write=False)
    return flags, values, vectors


@register_generator("dcdm-ritz")
class DcdmRitz:
    """The DCDM paper's training right-hand sides, on one fixed small matrix (for comparison).

    Options (``[config]``): ``size`` (default 16), ``ndim`` (default 3), ``steps`` (Lanczos
    steps ``m``, default 800), ``theta`` (default 40), ``low_weight`` (default 9.0) and
    ``basis_seed`` (the start vector's seed, default 0).

    Notes
    -----
    The matrix is the empty box with an air (Dirichlet) top layer,
    ``make_scene("empty", size, ndim=ndim)``, ``n = size^(ndim - 1) (size - 1)`` unknowns.
    Lanczos (:func:`lanczos_ritz`) with full reorthogonalisation runs ``m`` steps from
    ``A xi``, ``xi ~ N(0, I)`` drawn from ``default_rng(basis_seed)``; Ritz values at or below
    ``1e-8`` are dropped. The basis is computed once per process and configuration (an
    LRU cache) and shared by every sample, whose right-hand side is

    ``b = sum_j c_j q_j``, ``c_j ~ low_weight N(0, 1)`` for the lowest ``m / 2 + theta``
    Ritz vectors and ``N(0, 1)`` for the others, scaled to unit 2-norm,

    all ``c`` from the sample's stream. The paper uses ``m = 10,000``, ``theta = 500``
    (so ``m / 2 + theta = 5,500``) at ``64^3`` and ``128^3``; the defaults keep its
    proportions (``theta = m / 20``) at a size where the basis takes seconds: ``O(m^2 n)``
    flops and ``m n`` doubles (``16^3``, ``m = 800``: 25 MB, a few seconds on one core).
    One fixed geometry means no geometric variety: this generator exists to compare the
    paper's recipe with ``dcdm-rhs``, not to train general solvers.

    References
    ----------
    .. [1] A. Kaneda et al., "A Deep Conjugate Direction Method for Iteratively Solving
       Linear Systems", ICML 2023, §4 of ``references/dcdm.md``.
    """

    default_config: ClassVar[dict[str, Any]] = {
        "size": 16,
        "ndim": 3,
        "steps": 800,
        "theta": 40,
        "low_weight": 9.0,
        "basis_seed": 0,
    }
    default_samples = 1024
    default_splits: ClassVar[dict[str, float]] = {"train": 0.9, "val": 0.05, "test": 0.05}
    inputs = ("rhs", "flags")
    targets = ("rhs", "flags")

    def validate(self, config: dict[str, Any]) -> None:
        check_grid(config, MIN_SIZE)
        if config["steps"] < 2:
            raise ValueError(f"config.steps: {config['steps']}, expected at least 2")
        if config["theta"] < 0:
            raise ValueError(f"config.theta: {config['theta']}, expected >= 0")
        if not (math.isfinite(config["low_weight"]) and config["low_weight"] > 0):
            raise ValueError(f"config.low_weight: {config['low_weight']}, expected > 0")
        if config["basis_seed"] < 0:
            raise ValueError(f"config.basis_seed: {config['basis_seed']}, expected >= 0")

    def fields(self, config: dict[str, Any]) -> dict[str, tuple[tuple[int, ...], Any]]:
        shape = (config["size"],) * config["ndim"]
        return {"flags": (shape, np.int8), "rhs": (shape, np.float32)}

    def sample(
        self, config: dict[str, Any], index: int, rng: np.random.Generator
    ) -> dict[str, np.ndarray]:
        flags, _, vectors = _ritz_basis(
            config["size"], config["ndim"], config["steps"], config["basis_seed"]
        )
        count = vectors.shape[1]
        coefficients = rng.standard_normal(count)
        coefficients[: min(count, config["steps"] // 2 + config["theta"])] *= config["low_weight"]
        b = vectors @ coefficients
        rhs = np.zeros(flags.shape)
        rhs[flags == FLUID] = b / np.linalg.norm(b)
        return {"flags": np.array(flags), "rhs": rhs.astype(np.float32)}
