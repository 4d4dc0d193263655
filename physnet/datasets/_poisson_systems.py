"""The ``poisson-systems`` generator: geometries and coefficients that users solve.

Training data for physnet's coefficient-aware DCDM network (``dcdm-galerkin``): cell flags
with thin walls (1–2 cells), small holes, narrow channels and enclosed air pockets, beside
the smoke-box obstacles of ``dcdm-rhs``, and coefficient fields — piecewise-constant two-phase
densities (ratios 1 to 10⁴, flat and wavy interfaces, drops and bubbles), smooth log-normal
fields and layered media. Every family is a continuous shape in the unit box sampled at the
cells, except for thicknesses and holes, which are counted in cells (that is what makes
them thin at every resolution).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np

from physnet.datasets._dcdm_data import random_geometry
from physnet.datasets.generate import check_grid, register_generator
from physnet.datasets.scenes import (
    _cell_centres,
    _evaluate_field,
    _random_coefficients,
    _squared_distance,
    standard_rhs,
)
from physnet.operators.poisson import AIR, FLUID, SOLID

__all__ = [
    "COEFFICIENT_FAMILIES",
    "GEOMETRY_FAMILIES",
    "PoissonSystems",
    "random_coefficients",
    "random_thin_geometry",
]

#: Geometry families of ``poisson-systems``; ``obstacles`` are ``dcdm-rhs``'s training shapes.
GEOMETRY_FAMILIES = ("obstacles", "walls", "channels", "pockets")
#: Coefficient families of ``poisson-systems``.
COEFFICIENT_FAMILIES = ("unit", "two-phase", "log-normal", "layered")

_OBSTACLE_FAMILIES = ("empty", "sphere", "box", "boxes", "blob")


def _geometry(family: str, size: int, ndim: int, rng: np.random.Generator) -> np.ndarray:
    if family == "obstacles":
        obstacle = _OBSTACLE_FAMILIES[int(rng.integers(len(_OBSTACLE_FAMILIES)))]
        return random_geometry(obstacle, size, ndim=ndim, air="top", rng=rng)
    return random_thin_geometry(family, size, ndim=ndim, rng=rng)


def random_thin_geometry(
    family: str, size: int, *, ndim: int = 3, rng: np.random.Generator
) -> np.ndarray:
    """Cell flags with thin features, an air layer on top.

    Parameters
    ----------
    family : {"walls", "channels", "pockets"}
        ``"walls"``: one to three planar walls across the box, each 1 or 2 cells thick,
        perpendicular to a random axis at a position ``U(0.25, 0.75)``, each with one to
        three square holes of side 2 to ``max(2, size // 8)`` cells. ``"channels"``: a
        solid slab filling heights ``U(0.2, 0.4)`` to ``+U(0.15, 0.3)``, pierced by one to
        four straight channels 1 to 3 cells wide along random axes. ``"pockets"``: two to
        eight air balls of radius 1 to 4 cells enclosed in the fluid (Dirichlet islands),
        and half of the time a solid ball of radius ``U(0.08, 0.2)``.
    size : int
    ndim : {3, 2}, default 3
    rng : numpy.random.Generator

    Returns
    -------
    numpy.ndarray of int8, shape ``(size,) * ndim``

    Examples
    --------
    >>> import numpy as np
    >>> flags = random_thin_geometry("walls", 16, ndim=2, rng=np.random.default_rng(0))
    >>> flags.shape, bool((flags[..., -1] == 2).all()), bool((flags == 1).any())
    ((16, 16), True, True)
    """
    shape = (size,) * ndim
    flags = np.full(shape, FLUID, dtype=np.int8)
    centres = _cell_centres(size, ndim)
    if family == "walls":
        for _ in range(1 + int(rng.integers(3))):
            axis = int(rng.integers(ndim))
            thickness = 1 + int(rng.integers(2))
            position = min(int(rng.uniform(0.25, 0.75) * size), size - 1 - thickness)
            wall = [slice(None)] * ndim
            wall[axis] = slice(position, position + thickness)
            region = np.zeros(shape, dtype=bool)
            region[tuple(wall)] = True
            for _ in range(1 + int(rng.integers(3))):
                side = int(rng.integers(2, max(2, size // 8) + 1))
                hole = list(wall)
                for other in range(ndim):
                    if other != axis:
                        start = int(rng.integers(0, size - side + 1))
                        hole[other] = slice(start, start + side)
                region[tuple(hole)] = False
            flags[region] = SOLID
    elif family == "channels":
        low = rng.uniform(0.2, 0.4)
        high = low + rng.uniform(0.15, 0.3)
        slab = np.broadcast_to((centres[-1] > low) & (centres[-1] < high), shape).copy()
        for _ in range(1 + int(rng.integers(4))):
            axis = int(rng.integers(ndim))
            width = 1 + int(rng.integers(3))
            channel = [slice(None)] * ndim
            for other in range(ndim):
                if other != axis:
                    if other == ndim - 1:
                        lo, hi = (
                            int(low * size) + 1,
                            max(int(high * size) - width, int(low * size) + 2),
                        )
                    else:
                        lo, hi = 1, size - width - 1
                    start = int(rng.integers(lo, max(hi, lo + 1)))
                    channel[other] = slice(start, start + width)
            slab[tuple(channel)] = False
        flags[slab] = SOLID
    elif family == "pockets":
        if rng.random() < 0.5:
            centre = rng.uniform(0.3, 0.7, ndim)
            flags[_squared_distance(centres, centre) <= rng.uniform(0.08, 0.2) ** 2] = SOLID
        for _ in range(2 + int(rng.integers(7))):
            centre = rng.uniform(0.15, 0.85, ndim)
            radius = rng.uniform(1.0, 4.0) / size
            pocket = (_squared_distance(centres, centre) <= radius**2) & (flags == FLUID)
            flags[pocket] = AIR
    else:
        raise ValueError(
            f"random_thin_geometry: unknown family {family!r}, expected 'walls', 'channels' "
            "or 'pockets'"
        )
    flags[..., -1] = AIR
    return flags


def random_coefficients(
    family: str, flags: np.ndarray, *, rng: np.random.Generator, max_ratio: float = 1e4
) -> np.ndarray:
    """Positive cell coefficients of one family (the ``a`` of ``-div(a grad p)``).

    Parameters
    ----------
    family : {"unit", "two-phase", "log-normal", "layered"}
        ``"unit"``: 1. ``"two-phase"``: ``1 / rho`` with ``rho = 1`` in the gas and
        ``rho = 10^U(0, log10 max_ratio)`` in the liquid: a pool below ``U(0.15, 0.6) +
        U(0, 0.08) g(x_h)`` (flat when the amplitude draw is below 0.02), zero to three
        drops (liquid balls of radius ``U(0.04, 0.15)`` above it) and zero to three
        bubbles (gas balls of radius ``U(0.03, 0.12)`` inside it). ``"log-normal"``:
        ``exp(s g(x))``, ``s = U(0.5, 2.5)``, ``g`` a unit-variance smooth random field
        (``k0 = U(1, 3)``, cutoff 6). ``"layered"``: two to six layers along a random
        axis, with boundaries ``U(0, 1)`` and values ``10^U(-2, 2)``.
    flags : numpy.ndarray
        The grid (its shape and dimension).
    rng : numpy.random.Generator
    max_ratio : float, default 1e4
        The largest two-phase density ratio.

    Returns
    -------
    numpy.ndarray of float64, the grid's shape

    Examples
    --------
    >>> import numpy as np
    >>> flags = np.zeros((16, 16), dtype=np.int8)
    >>> a = random_coefficients("two-phase", flags, rng=np.random.default_rng(0))
    >>> a.shape, bool(a.max() == 1.0), bool(a.min() > 0)
    ((16, 16), True, True)
    """
    ndim, size = flags.ndim, flags.shape[0]
    centres = _cell_centres(size, ndim)
    shape = flags.shape
    if family == "unit":
        return np.ones(shape)
    if family == "two-phase":
        ratio = 10.0 ** rng.uniform(0.0, math.log10(max_ratio))
        amplitude = rng.uniform(0.0, 0.08)
        field = (
            _evaluate_field(
                _random_coefficients(rng, ndim - 1, 3, 1.5), [c.ravel() for c in centres[:-1]]
            )
            if ndim > 1
            else 0.0
        )
        surface = rng.uniform(0.15, 0.6) + (amplitude if amplitude >= 0.02 else 0.0) * field
        liquid = centres[-1] < np.expand_dims(surface, -1)
        liquid = np.broadcast_to(liquid, shape).copy()
        for _ in range(int(rng.integers(4))):
            centre = rng.uniform(0.15, 0.85, ndim)
            liquid |= _squared_distance(centres, centre) <= rng.uniform(0.04, 0.15) ** 2
        for _ in range(int(rng.integers(4))):
            centre = rng.uniform(0.15, 0.85, ndim)
            centre[-1] = rng.uniform(0.05, 0.5)
            liquid &= ~(_squared_distance(centres, centre) <= rng.uniform(0.03, 0.12) ** 2)
        return np.where(liquid, 1.0 / ratio, 1.0)
    if family == "log-normal":
        spread = rng.uniform(0.5, 2.5)
        field = _evaluate_field(
            _random_coefficients(rng, ndim, 6, rng.uniform(1.0, 3.0)), [c.ravel() for c in centres]
        )
        return np.exp(spread * field)
    if family == "layered":
        axis = int(rng.integers(ndim))
        count = 2 + int(rng.integers(5))
        bounds = np.sort(rng.uniform(0.0, 1.0, count - 1))
        values = 10.0 ** rng.uniform(-2.0, 2.0, count)
        layer = np.searchsorted(bounds, centres[axis])
        return np.broadcast_to(values[layer], shape).copy()
    raise ValueError(
        f"random_coefficients: unknown family {family!r}, expected one of {COEFFICIENT_FAMILIES}"
    )


@register_generator("poisson-systems")
class PoissonSystems:
    """Flags, coefficients and a right-hand side from the families users solve.

    Options (``[config]``): ``size`` and ``ndim``; ``geometries`` (default
    :data:`GEOMETRY_FAMILIES`) and ``coefficients`` (default :data:`COEFFICIENT_FAMILIES`),
    the families drawn from, uniformly and independently; ``max_ratio`` (default 1e4), the
    largest two-phase density ratio.

    Notes
    -----
    Sample ``i`` uses ``rng.spawn(3)``: the first child draws the geometry family and its
    shape (:func:`random_thin_geometry`, or ``dcdm-rhs``'s training obstacles with an air
    top for ``"obstacles"``), the second the coefficient family and field
    (:func:`random_coefficients`), the third seeds the right-hand side, the smoke scenes'
    divergence of a random velocity field (:func:`~physnet.datasets.standard_rhs`). Fields:
    ``flags`` (int8), ``coefficients`` (float32 cell values, to be read as
    ``GridPoisson(flags, coefficients=...)``), ``rhs`` (float32, unit norm).
    Held out of the defaults for benchmarks: the scenes ``two-phase`` (a liquid ring and an
    ellipsoidal drop, shapes no family draws) and ``thin-walls`` (a hollow cylinder and a
    baffle) of :func:`~physnet.datasets.make_scene`.
    """

    default_config: ClassVar[dict[str, Any]] = {
        "size": 32,
        "ndim": 3,
        "geometries": list(GEOMETRY_FAMILIES),
        "coefficients": list(COEFFICIENT_FAMILIES),
        "max_ratio": 1e4,
    }
    default_samples = 256
    default_splits: ClassVar[dict[str, float]] = {"train": 0.875, "val": 0.0625, "test": 0.0625}
    inputs = ("flags", "coefficients")
    targets = ("rhs",)

    def validate(self, config: dict[str, Any]) -> None:
        check_grid(config, 8)
        for key, known in (
            ("geometries", GEOMETRY_FAMILIES),
            ("coefficients", COEFFICIENT_FAMILIES),
        ):
            chosen = config[key]
            if not isinstance(chosen, list) or not chosen or any(f not in known for f in chosen):
                raise ValueError(
                    f"config.{key}: {chosen!r}, expected a non-empty list of families from {known}"
                )
        ratio = config["max_ratio"]
        if not isinstance(ratio, (int, float)) or isinstance(ratio, bool) or not ratio >= 1:
            raise ValueError(f"config.max_ratio: {ratio!r}, expected a number >= 1")

    def fields(self, config: dict[str, Any]) -> dict[str, tuple[tuple[int, ...], Any]]:
        shape = (config["size"],) * config["ndim"]
        return {
            "flags": (shape, np.int8),
            "coefficients": (shape, np.float32),
            "rhs": (shape, np.float32),
        }

    def sample(
        self, config: dict[str, Any], index: int, rng: np.random.Generator
    ) -> dict[str, np.ndarray]:
        geometry_rng, coefficient_rng, rhs_rng = rng.spawn(3)
        geometries, coefficients = config["geometries"], config["coefficients"]
        geometry = geometries[int(geometry_rng.integers(len(geometries)))]
        flags = _geometry(geometry, config["size"], config["ndim"], geometry_rng)
        family = coefficients[int(coefficient_rng.integers(len(coefficients)))]
        values = random_coefficients(
            family, flags, rng=coefficient_rng, max_ratio=float(config["max_ratio"])
        )
        rhs = standard_rhs(flags, seed=int(rhs_rng.integers(2**31)))
        return {
            "flags": flags,
            "coefficients": values.astype(np.float32),
            "rhs": rhs.astype(np.float32),
        }
