"""Smoke-box Poisson scenes: cell flags and a right-hand side with a fixed distribution.

A scene is the pressure-projection system of a smoke simulation in the unit box
``[0, 1]^d`` sampled on ``size^d`` cells: the box walls are solid (Neumann), the top cell
layer is air (Dirichlet ``p = 0``), and a solid obstacle sits inside. Every shape is defined
in unit coordinates, so the same scene at ``64^3`` and ``128^3`` is the same geometry, and
all randomness is drawn from ``numpy.random.default_rng(seed)`` in a fixed order on arrays
whose size does not depend on the grid: the random obstacles and the right-hand side are
continuous functions sampled at the cells, the same function at every resolution.

Examples
--------
>>> from physnet.datasets import make_scene
>>> scene = make_scene("sphere", 16, ndim=2, seed=0)
>>> scene.flags.shape, scene.flags.dtype, scene.rhs.dtype
((16, 16), dtype('int8'), dtype('float64'))
>>> b = scene.rhs_vector()
>>> A = scene.operator()
>>> A.shape[0] == b.size
True
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.ndimage

from physnet.operators.poisson import AIR, FLUID, SOLID, GridPoisson

__all__ = ["Scene", "available_scenes", "make_scene", "standard_rhs"]

SCENE_VERSION = 1
MIN_SIZE = 8

# Right-hand side: velocity components are Gaussian random trigonometric fields.
_VELOCITY_SPECTRUM_SCALE = 2.0  # k0 of the Gaussian spectrum exp(-|k|^2 / (2 k0^2))
_VELOCITY_CUTOFF = 6  # wave numbers |k| <= 6 (cycles per box side), k = 0 excluded
_TAPER_WIDTH = 0.1  # velocity goes smoothly to zero within this distance of solids

# Obstacles, in unit-box coordinates (the last axis is "up").
_SPHERE_RADIUS = 1.0 / 6.0
_BOX_HALF_EXTENT_HORIZONTAL = 0.2
_BOX_HALF_EXTENT_VERTICAL = 0.1
_BOXES_COUNT = 6
_TORUS_MAJOR_RADIUS = 0.25
_TORUS_MINOR_RADIUS = 0.08
_BLOB_RADIUS = 0.22
_BLOB_AMPLITUDE = 0.5
_BLOB_SPECTRUM_SCALE = 1.5
_BLOB_CUTOFF = 4
_BLOB_CLIP_RADIUS = 0.4


@dataclass(frozen=True, eq=False)
class Scene:
    """A generated Poisson scene: cell flags, right-hand side and their provenance.

    Attributes
    ----------
    name : str
        The obstacle (one of :func:`available_scenes`).
    size : int
        Cells per axis.
    ndim : int
        2 or 3.
    seed : int
        Seed of the random obstacle and right-hand side.
    flags : numpy.ndarray of int8, shape ``(size,) * ndim``
        ``FLUID`` (0), ``SOLID`` (1) or ``AIR`` (2) per cell, as
        :class:`physnet.operators.GridPoisson` expects. Read-only.
    rhs : numpy.ndarray of float64, shape ``(size,) * ndim``
        The right-hand side on the full grid; zero on solid and air cells, unit 2-norm,
        mean zero on every fluid region that does not touch air. Read-only.
    config : dict
        Generator, version and every parameter needed to reproduce the scene.
    coefficients : numpy.ndarray of float64 or None
        Cell values of the coefficient ``a`` of ``-div(a grad p)`` (``1 / rho`` for a
        two-phase pressure system), or None for the unit coefficient. Read-only.
    """

    name: str
    size: int
    ndim: int
    seed: int
    flags: np.ndarray = field(repr=False)
    rhs: np.ndarray = field(repr=False)
    config: dict = field(repr=False, default_factory=dict)
    coefficients: np.ndarray | None = field(repr=False, default=None)

    @property
    def shape(self) -> tuple[int, ...]:
        """The grid shape, ``(size,) * ndim``."""
        return self.flags.shape

    @property
    def fluid_mask(self) -> np.ndarray:
        """Boolean grid of the unknowns (fluid cells)."""
        return self.flags == FLUID

    def operator(self, dtype: Any = np.float64) -> GridPoisson:
        """The scene's pressure Poisson operator, ``GridPoisson(flags, coefficients=...)``."""
        return GridPoisson(self.flags, coefficients=self.coefficients, dtype=dtype)

    def rhs_vector(self, dtype: Any = np.float64) -> np.ndarray:
        """The right-hand side on the unknowns (fluid cells in C order), as ``gather`` gives it."""
        return np.ascontiguousarray(self.rhs[self.fluid_mask], dtype=dtype)


def available_scenes() -> tuple[str, ...]:
    """Names accepted by :func:`make_scene`.

    Examples
    --------
    >>> available_scenes()
    ('empty', 'sphere', 'box', 'boxes', 'torus', 'blob', 'two-phase', 'thin-walls')
    """
    return (*_OBSTACLES, *_HARD_SCENES)


def make_scene(name: str, size: int, *, ndim: int = 3, seed: int = 0) -> Scene:
    """Generate a smoke-box scene: flags and a right-hand side from a fixed distribution.

    Parameters
    ----------
    name : str
        The obstacle, one of :func:`available_scenes`: ``"empty"`` (none), ``"sphere"``
        (a circle in 2-D), ``"box"``, ``"boxes"`` (six random boxes), ``"torus"`` (an
        annulus in 2-D) or ``"blob"`` (a smooth random body).
    size : int
        Cells per axis, at least 8 (16 to 256 are the intended range).
    ndim : {3, 2}, default 3
    seed : int, default 0
        Seeds the random obstacles and the right-hand side; a non-negative integer.

    Returns
    -------
    Scene

    Raises
    ------
    ValueError
        For an unknown name, a size below 8, ``ndim`` other than 2 or 3, or a negative seed.
    TypeError
        For a size, ndim or seed that is not an integer.

    Notes
    -----
    Coordinates. The box is ``[0, 1]^d``; cell ``i`` along an axis has its centre at
    ``(i + 1/2) / size``. The last axis is vertical ("up"). Everything outside the array is
    solid wall (the :class:`~physnet.operators.GridPoisson` convention), so no extra wall
    layer is stored; the top cell layer (last index of the last axis) is air.

    Obstacles (solid where the cell centre satisfies the condition, ``c`` the box centre):

    - ``sphere``: ``|x - c| <= 1/6``.
    - ``box``: ``|x_j - 1/2| <= 0.2`` horizontally, ``<= 0.1`` vertically.
    - ``boxes``: six boxes; centres uniform in ``[0.2, 0.8]`` horizontally and
      ``[0.15, 0.7]`` vertically, half-extents uniform in ``[0.04, 0.12]``.
    - ``torus``: a horizontal ring ``(rho - 0.25)^2 + (z - 1/2)^2 <= 0.08^2``, ``rho`` the
      horizontal distance to the axis; in 2-D the annulus ``|rho - 0.25| <= 0.08``.
    - ``blob``: ``1 - (|x - c| / 0.22)^2 + 0.5 g(x) > 0`` and ``|x - c| <= 0.4``, with ``g``
      a unit-variance random field (below, with ``k0 = 1.5``, cutoff 4).

    Two scenes test what smoke boxes do not (both kept out of physnet's training data):

    - ``two-phase``: a two-phase pressure system, coefficient ``1 / rho`` with
      ``rho = 1000`` in the liquid and 1 in the gas: a pool below a height ``0.25 + 0.04
      sin(2 pi 3 x) cos(2 pi 2 y)``, an ellipsoidal drop (semi-axes 0.12, 0.08, 0.06)
      centred at ``(0.55, 0.45, 0.62)`` and a liquid ring (a torus of major radius 0.2 and
      minor radius 0.035 around the vertical axis through ``(0.5, 0.5)`` at height 0.45);
      in 2-D the pool (``0.25 + 0.04 sin(2 pi 3 x)``), the ellipse and two discs. No solid
      obstacle.
    - ``thin-walls``: a hollow cylinder with a wall one cell thick (radius 0.25 around the
      vertical axis, from height 0.15 to 0.45), twelve small balls of radius 2.5 cells
      (centres ``U(0.15, 0.85)^d`` in a fixed order) and a horizontal baffle one cell thick
      at height 0.7 with a square hole of side ``size / 8`` cells in its middle: the part of
      the box below the baffle reaches the air only through the hole.

    Random fields. ``g(x) = sum_k s_k (a_k cos 2 pi k.x + b_k sin 2 pi k.x) / sqrt(sum s_k^2)``
    over integer wave vectors ``0 < |k| <= cutoff``, ``s_k = exp(-|k|^2 / (2 k0^2))`` and
    ``a_k, b_k`` independent standard normal, drawn on the full ``(2 cutoff + 1)^d`` lattice
    (``a`` then ``b``, C order); ``g`` has unit variance at every point.

    Right-hand side (the pressure equation ``-lap p = -div u`` of a projection step):

    1. Each velocity component ``u_j`` is ``w(x) g_j(x)``, ``g_j`` an independent field with
       ``k0 = 2``, cutoff 6, sampled at the MAC faces normal to axis ``j`` (positions
       ``i / size`` along ``j``, cell centres along the other axes).
    2. ``w = t^2 (3 - 2t)``, ``t = min(d / 0.1, 1)``, ``d`` the distance from the face to
       the nearest solid (obstacle or box wall; the open top is not a wall), taken from the
       Euclidean distance transform of the cells. ``u`` is exactly zero on faces touching a
       solid cell and on the box boundary.
    3. ``b = -div u`` on fluid cells with unit spacing, ``b_i = -sum_j (u_j[i + e_j] - u_j[i])``,
       and ``b = 0`` on solid and air cells.
    4. On every face-connected fluid region that touches no air cell (a pure-Neumann,
       singular block) the region's mean is subtracted, so ``A p = b`` is consistent (the
       fluxes through its closed walls vanish, so this only removes rounding).
    5. ``b`` is scaled to unit 2-norm (so the grid spacing does not matter).

    The obstacle draws come from the first and the velocity draws from the second child of
    ``numpy.random.default_rng(seed).spawn(2)``, components in axis order, so the velocity
    field of a seed is the same function for every obstacle and every size.

    Examples
    --------
    >>> import numpy as np
    >>> scene = make_scene("torus", 32, ndim=3, seed=1)
    >>> scene.flags.shape
    (32, 32, 32)
    >>> bool(np.all(scene.flags[..., -1] == 2))  # the air layer on top
    True
    >>> round(float(np.linalg.norm(scene.rhs)), 12)
    1.0
    """
    if not isinstance(name, str) or name not in available_scenes():
        raise ValueError(
            f"make_scene: unknown scene {name!r}, expected one of {available_scenes()}"
        )
    size = _check_integer("size", size)
    ndim = _check_integer("ndim", ndim)
    seed = _check_integer("seed", seed)
    if size < MIN_SIZE:
        raise ValueError(f"make_scene: size={size}, expected at least {MIN_SIZE} cells per axis")
    if ndim not in (2, 3):
        raise ValueError(f"make_scene: ndim={ndim}, expected 2 or 3")
    if seed < 0:
        raise ValueError(f"make_scene: seed={seed}, expected a non-negative integer")

    geometry_rng, velocity_rng = _generators(seed)
    centres = _cell_centres(size, ndim)
    coefficients = None
    if name in _HARD_SCENES:
        flags, coefficients, geometry = _HARD_SCENES[name](centres, geometry_rng)
    else:
        obstacle, geometry = _OBSTACLES[name](centres, geometry_rng)
        flags = np.full((size,) * ndim, FLUID, dtype=np.int8)
        flags[obstacle] = SOLID
    flags[..., -1] = AIR

    rhs = _divergence_rhs(flags, velocity_rng)
    for array in (flags, rhs, coefficients):
        if array is not None:
            array.setflags(write=False)
    config = {
        "generator": "physnet.datasets.make_scene",
        "version": SCENE_VERSION,
        "name": name,
        "size": size,
        "ndim": ndim,
        "seed": seed,
        "geometry": geometry,
        "rhs": {
            "kind": "negative divergence of a tapered Gaussian random velocity field",
            "spectrum": "exp(-|k|^2 / (2 k0^2))",
            "k0": _VELOCITY_SPECTRUM_SCALE,
            "cutoff": _VELOCITY_CUTOFF,
            "taper_width": _TAPER_WIDTH,
            "spacing": 1.0,
            "normalisation": "unit 2-norm",
        },
        "n_unknowns": int(np.count_nonzero(flags == FLUID)),
    }
    return Scene(
        name=name,
        size=size,
        ndim=ndim,
        seed=seed,
        flags=flags,
        rhs=rhs,
        config=config,
        coefficients=coefficients,
    )


def standard_rhs(flags: Any, *, seed: int = 0) -> np.ndarray:
    """The scenes' right-hand side distribution on any flag grid.

    Parameters
    ----------
    flags : array of int, 2-D or 3-D
        ``FLUID`` (0), ``SOLID`` (1) or ``AIR`` (2) per cell, at least one fluid cell.
    seed : int, default 0
        The same seed gives the same velocity field as :func:`make_scene` with that seed,
        so ``standard_rhs(make_scene(name, n, seed=s).flags, seed=s)`` is the scene's ``rhs``.

    Returns
    -------
    numpy.ndarray of float64, the shape of ``flags``
        Zero off the fluid cells, unit 2-norm, mean zero on every fluid region that does
        not touch air (so ``A p = b`` is consistent).

    Raises
    ------
    TypeError
        If ``flags`` is not an integer array or ``seed`` not an integer.
    ValueError
        If ``flags`` is not 2-D or 3-D, holds other values than 0, 1, 2, has no fluid
        cell, or ``seed`` is negative.

    Notes
    -----
    The construction is the one described in :func:`make_scene`, with the unit length
    being the longest axis of the grid, ``L = max(flags.shape)`` cells: cell centres at
    ``(i + 1/2) / L``, faces at ``i / L`` and the taper width ``0.1 L`` cells. Outside the
    grid is solid wall, except next to air cells of the boundary layer, where the box is
    open (the taper ignores that wall).

    Examples
    --------
    >>> import numpy as np
    >>> flags = np.zeros((12, 20), dtype=np.int8)
    >>> flags[:, -1] = 2
    >>> b = standard_rhs(flags, seed=3)
    >>> b.shape, round(float(np.linalg.norm(b)), 12), float(b[:, -1].max())
    ((12, 20), 1.0, 0.0)
    """
    seed = _check_integer("seed", seed, "standard_rhs")
    if seed < 0:
        raise ValueError(f"standard_rhs: seed={seed}, expected a non-negative integer")
    flags = np.asarray(flags)
    if flags.dtype.kind not in "iu":
        raise TypeError(f"standard_rhs: flags has dtype {flags.dtype}, expected integers")
    if flags.ndim not in (2, 3):
        raise ValueError(f"standard_rhs: flags has shape {flags.shape}, expected a 2-D or 3-D grid")
    if np.any((flags < FLUID) | (flags > AIR)):
        raise ValueError(
            f"standard_rhs: flags holds values other than FLUID={FLUID}, SOLID={SOLID}, AIR={AIR}"
        )
    if not np.any(flags == FLUID):
        raise ValueError(f"standard_rhs: flags of shape {flags.shape} has no fluid cell")
    return _divergence_rhs(flags, _generators(seed)[1])


def _generators(seed: int) -> tuple[np.random.Generator, np.random.Generator]:
    """Independent streams for the obstacle and the velocity field of one seed."""
    geometry_rng, velocity_rng = np.random.default_rng(seed).spawn(2)
    return geometry_rng, velocity_rng


def _check_integer(argument: str, value: Any, function: str = "make_scene") -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{function}: {argument}={value!r}, expected an integer")
    return int(value)


# --- geometry ---------------------------------------------------------------------------


def _cell_centres(size: int, ndim: int) -> list[np.ndarray]:
    """Cell-centre coordinates per axis, shaped to broadcast against the grid."""
    line = (np.arange(size) + 0.5) / size
    centres = []
    for axis in range(ndim):
        shape = [1] * ndim
        shape[axis] = size
        centres.append(line.reshape(shape))
    return centres


def _squared_distance(centres: Sequence[np.ndarray], centre: Sequence[float]) -> np.ndarray:
    return sum((x - c) ** 2 for x, c in zip(centres, centre, strict=True))


def _empty(centres, rng):
    return np.zeros(np.broadcast_shapes(*(x.shape for x in centres)), dtype=bool), {}


def _sphere(centres, rng):
    centre = [0.5] * len(centres)
    mask = _squared_distance(centres, centre) <= _SPHERE_RADIUS**2
    return mask, {"centre": centre, "radius": _SPHERE_RADIUS}


def _box(centres, rng):
    ndim = len(centres)
    half = [_BOX_HALF_EXTENT_HORIZONTAL] * (ndim - 1) + [_BOX_HALF_EXTENT_VERTICAL]
    centre = [0.5] * ndim
    mask = _inside_box(centres, centre, half)
    return mask, {"centre": centre, "half_extents": half}


def _inside_box(centres, centre, half_extents) -> np.ndarray:
    mask = True
    for x, c, h in zip(centres, centre, half_extents, strict=True):
        mask = mask & (np.abs(x - c) <= h)
    return mask


def _boxes(centres, rng):
    ndim = len(centres)
    low = np.array([0.2] * (ndim - 1) + [0.15])
    high = np.array([0.8] * (ndim - 1) + [0.7])
    box_centres = rng.uniform(low, high, size=(_BOXES_COUNT, ndim))
    half_extents = rng.uniform(0.04, 0.12, size=(_BOXES_COUNT, ndim))
    mask = np.zeros(np.broadcast_shapes(*(x.shape for x in centres)), dtype=bool)
    for centre, half in zip(box_centres, half_extents, strict=True):
        mask |= _inside_box(centres, centre, half)
    return mask, {"centres": box_centres.tolist(), "half_extents": half_extents.tolist()}


def _torus(centres, rng):
    horizontal = np.sqrt(_squared_distance(centres[:-1], [0.5] * (len(centres) - 1)))
    if len(centres) == 2:
        # In 2-D the ring's cross-section is the annulus around the centre.
        radial = np.sqrt(_squared_distance(centres, [0.5, 0.5]))
        mask = np.abs(radial - _TORUS_MAJOR_RADIUS) <= _TORUS_MINOR_RADIUS
    else:
        mask = (horizontal - _TORUS_MAJOR_RADIUS) ** 2 + (centres[-1] - 0.5) ** 2 <= (
            _TORUS_MINOR_RADIUS**2
        )
    return mask, {
        "centre": [0.5] * len(centres),
        "major_radius": _TORUS_MAJOR_RADIUS,
        "minor_radius": _TORUS_MINOR_RADIUS,
    }


def _blob(centres, rng):
    ndim = len(centres)
    coefficients = _random_coefficients(rng, ndim, _BLOB_CUTOFF, _BLOB_SPECTRUM_SCALE)
    field_values = _evaluate_field(coefficients, [x.ravel() for x in centres])
    radius2 = _squared_distance(centres, [0.5] * ndim)
    level = 1.0 - radius2 / _BLOB_RADIUS**2 + _BLOB_AMPLITUDE * field_values
    mask = (level > 0) & (radius2 <= _BLOB_CLIP_RADIUS**2)
    return mask, {
        "centre": [0.5] * ndim,
        "radius": _BLOB_RADIUS,
        "amplitude": _BLOB_AMPLITUDE,
        "k0": _BLOB_SPECTRUM_SCALE,
        "cutoff": _BLOB_CUTOFF,
        "clip_radius": _BLOB_CLIP_RADIUS,
    }


_OBSTACLES: dict[str, Callable[..., tuple[np.ndarray, dict]]] = {
    "empty": _empty,
    "sphere": _sphere,
    "box": _box,
    "boxes": _boxes,
    "torus": _torus,
    "blob": _blob,
}


def _two_phase(centres, rng):
    """The held-out two-phase scene: pool, ellipsoidal drop and liquid ring, rho 1000 : 1."""
    ndim = len(centres)
    shape = _grid_shape_of(centres)
    grids = centres
    up = grids[-1]
    horizontal = grids[:-1]
    wave = np.sin(2 * np.pi * 3 * horizontal[0])
    if ndim == 3:
        wave = wave * np.cos(2 * np.pi * 2 * horizontal[1])
    surface = 0.25 + 0.04 * wave
    liquid = np.broadcast_to(up < surface, shape).copy()
    drop_centre = (0.55, 0.45, 0.62)[-ndim:] if ndim == 3 else (0.55, 0.62)
    axes = (0.12, 0.08, 0.06) if ndim == 3 else (0.12, 0.06)
    liquid |= sum(((g - c) / a) ** 2 for g, c, a in zip(grids, drop_centre, axes, strict=True)) <= 1
    if ndim == 3:
        rho = np.sqrt((grids[0] - 0.5) ** 2 + (grids[1] - 0.5) ** 2)
        liquid |= (rho - 0.2) ** 2 + (up - 0.45) ** 2 <= 0.035**2
    else:
        for x in (0.3, 0.7):
            liquid |= (grids[0] - x) ** 2 + (up - 0.45) ** 2 <= 0.035**2
    density = np.where(liquid, 1000.0, 1.0)
    flags = np.full(shape, FLUID, dtype=np.int8)
    return flags, 1.0 / density, {"density_ratio": 1000.0, "liquid_fraction": float(liquid.mean())}


def _thin_walls(centres, rng):
    """The held-out thin-geometry scene: hollow cylinder, small balls, baffle with a hole."""
    ndim = len(centres)
    shape = _grid_shape_of(centres)
    size = shape[0]
    cell = 1.0 / size
    grids = centres
    up = grids[-1]
    flags = np.full(shape, FLUID, dtype=np.int8)
    radial = np.sqrt(sum((g - 0.5) ** 2 for g in grids[:-1]))
    wall = (np.abs(radial - 0.25) < 0.5 * cell) & (up > 0.15) & (up < 0.45)
    flags[np.broadcast_to(wall, shape)] = SOLID
    centres_drawn = rng.uniform(0.15, 0.85, size=(12, ndim))
    for centre in centres_drawn:
        flags[_squared_distance(centres, centre) < (2.5 * cell) ** 2] = SOLID
    baffle = int(0.7 * size)
    hole = max(size // 8, 1)
    start = size // 2 - hole // 2
    flags[..., baffle] = SOLID
    opening = (slice(start, start + hole),) * (ndim - 1) + (baffle,)
    flags[opening] = FLUID
    return flags, None, {"balls": centres_drawn.tolist(), "baffle_height": 0.7, "hole_cells": hole}


def _grid_shape_of(centres) -> tuple[int, ...]:
    return tuple(c.size for c in centres)


_HARD_SCENES = {"two-phase": _two_phase, "thin-walls": _thin_walls}


# --- random fields ----------------------------------------------------------------------


def _random_coefficients(
    rng: np.random.Generator, ndim: int, cutoff: int, scale: float
) -> np.ndarray:
    """Coefficients ``s_k (a_k - i b_k) / sqrt(sum s^2)`` for ``k`` in ``[-cutoff, cutoff]^d``."""
    wave_numbers = np.arange(-cutoff, cutoff + 1)
    squared = sum(k**2 for k in np.meshgrid(*([wave_numbers] * ndim), indexing="ij", sparse=True))
    amplitude = np.exp(-squared / (2.0 * scale**2))
    amplitude[(squared == 0) | (squared > cutoff**2)] = 0.0
    amplitude /= np.sqrt(np.sum(amplitude**2))
    shape = (2 * cutoff + 1,) * ndim
    cosine = rng.standard_normal(shape)
    sine = rng.standard_normal(shape)
    return amplitude * (cosine - 1j * sine)


def _evaluate_field(coefficients: np.ndarray, coordinates: Sequence[np.ndarray]) -> np.ndarray:
    """``Re sum_k c_k exp(2 pi i k.x)`` on the tensor grid of the 1-D ``coordinates``.

    Separable: one axis is contracted at a time, so the cost is ``O(m N^d)`` for ``m``
    wave numbers per axis, and the last contraction is done in real arithmetic.
    """
    cutoff = (coefficients.shape[0] - 1) // 2
    wave_numbers = np.arange(-cutoff, cutoff + 1)
    partial = coefficients
    for x in coordinates[:-1]:
        phase = np.exp(2j * np.pi * np.outer(wave_numbers, x))
        partial = np.tensordot(partial, phase, axes=([0], [0]))
    phase = 2.0 * np.pi * np.outer(wave_numbers, coordinates[-1])
    return np.tensordot(partial.real, np.cos(phase), axes=([0], [0])) - np.tensordot(
        partial.imag, np.sin(phase), axes=([0], [0])
    )


def _smoothstep(t: np.ndarray) -> np.ndarray:
    t = np.clip(t, 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _distance_to_solid(flags: np.ndarray, length: int) -> np.ndarray:
    """Distance (in units of ``length`` cells) from each cell centre to the nearest solid face.

    Outside the grid is solid, except beyond boundary cells that are air (an open side).
    """
    solid = np.pad(flags == SOLID, 1, constant_values=True)
    for axis in range(flags.ndim):
        for boundary, pad in ((0, 0), (-1, -1)):
            index = [slice(1, -1)] * flags.ndim
            index[axis] = pad
            open_side = np.take(flags, boundary, axis=axis) == AIR
            solid[tuple(index)] = ~open_side
    cells = scipy.ndimage.distance_transform_edt(~solid)
    inner = (slice(1, -1),) * flags.ndim
    return np.maximum(cells[inner] - 0.5, 0.0) / length


def _divergence_rhs(flags: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    ndim = flags.ndim
    length = max(flags.shape)
    solid = flags == SOLID
    fluid = flags == FLUID
    distance = _distance_to_solid(flags, length)

    divergence = np.zeros(flags.shape)
    for axis in range(ndim):
        coefficients = _random_coefficients(rng, ndim, _VELOCITY_CUTOFF, _VELOCITY_SPECTRUM_SCALE)
        coordinates = [
            np.arange(n + 1) / length if j == axis else (np.arange(n) + 0.5) / length
            for j, n in enumerate(flags.shape)
        ]
        velocity = _evaluate_field(coefficients, coordinates)

        lower = [slice(None)] * ndim
        upper = [slice(None)] * ndim
        interior = [slice(None)] * ndim
        lower[axis], upper[axis], interior[axis] = slice(None, -1), slice(1, None), slice(1, -1)
        lower, upper, interior = tuple(lower), tuple(upper), tuple(interior)

        face_distance = 0.5 * (distance[lower] + distance[upper])
        taper = _smoothstep(face_distance / _TAPER_WIDTH)
        taper[solid[lower] | solid[upper]] = 0.0
        velocity[interior] *= taper
        boundary = [slice(None)] * ndim
        for index in (0, -1):
            boundary[axis] = index
            velocity[tuple(boundary)] = 0.0
        divergence += velocity[upper] - velocity[lower]

    rhs = np.where(fluid, -divergence, 0.0)
    _remove_neumann_means(rhs, flags)
    norm = np.linalg.norm(rhs)
    if not norm > 0:
        raise ValueError("standard_rhs: the right-hand side is zero on every fluid cell")
    rhs /= norm
    return rhs


def _remove_neumann_means(rhs: np.ndarray, flags: np.ndarray) -> None:
    """Subtract the mean on every fluid region without an air neighbour, in place."""
    fluid = flags == FLUID
    structure = scipy.ndimage.generate_binary_structure(flags.ndim, 1)
    labels, count = scipy.ndimage.label(fluid, structure=structure)
    if count == 0:
        return
    next_to_air = scipy.ndimage.binary_dilation(flags == AIR, structure=structure) & fluid
    touches_air = np.zeros(count + 1, dtype=bool)
    touches_air[np.unique(labels[next_to_air])] = True
    touches_air[0] = True  # label 0: not fluid
    if touches_air.all():
        return
    sums = np.bincount(labels.ravel(), weights=rhs.ravel(), minlength=count + 1)
    counts = np.bincount(labels.ravel(), minlength=count + 1)
    means = np.where(touches_air, 0.0, sums / np.maximum(counts, 1))
    rhs -= means[labels]
