"""The ``radar-mimo`` generator: 3D extended targets and their near-field MIMO measurements.

Each sample is a scene of a few extended targets (ellipsoids, boxes, smooth blobs) on the
reference voxel grid, its complex reflectivity (magnitude in [0, 1], uniformly random
phase per voxel), the noisy measurements ``y = A x + n`` of the near-field MIMO operator
(:class:`physnet.operators.NearFieldMIMO`) at a per-sample SNR, and the magnitude of the
backprojection ``|A^H y|`` — the input of the two-stage reconstruction network, stored so
that training is a plain input -> target map.

Examples
--------
>>> from physnet.datasets.generate import get_generator, sample_of
>>> generator = get_generator("radar-mimo")
>>> config = generator.check_config({"n_frequencies": 3, "grid_shape": [8, 8, 10]})
>>> sample = sample_of(generator, config, seed=0, index=0)
>>> sample["measurements"].shape, sample["target"].shape, sample["backprojection"].dtype
((3, 12, 13), (8, 8, 10), dtype('float32'))
>>> bool(0 < sample["target"].max() <= 1)
True
"""

from __future__ import annotations

import functools
from typing import Any, ClassVar

import numpy as np

from physnet.datasets.generate import register_generator

__all__ = ["RadarTargets", "add_noise", "radar_operator", "synthesize_targets"]

SHAPES = ("ellipsoid", "box", "blob", "cylinder", "pipe", "cluster")
TRAINING_SHAPES = ("ellipsoid", "box", "blob")
"""The scene family of the shipped models' training data; the rest are held out."""


@functools.lru_cache(maxsize=8)
def radar_operator(n_frequencies: int, grid_shape: tuple[int, int, int]) -> Any:
    """The reference-geometry operator of a generation (cached per process)."""
    from physnet.operators.radar import NearFieldMIMO

    return NearFieldMIMO(n_frequencies=n_frequencies, grid_shape=grid_shape, dtype=np.complex64)


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((3, 3)))
    return q * np.sign(np.diag(r))


def synthesize_targets(
    points: np.ndarray, config: dict[str, Any], rng: np.random.Generator
) -> np.ndarray:
    """The magnitude ``|x|`` of a random scene at the voxel centres ``points`` ``(N, 3)``.

    ``n`` targets (``n`` uniform in ``[min_targets, max_targets]``), each of a shape drawn
    from ``config["shapes"]``, a random orientation, semi-axes uniform in
    ``[min_size, max_size]`` metres, a centre uniform in the volume shrunk by ``margin``,
    and a peak magnitude uniform in ``[min_magnitude, 1]``. Ellipsoids and boxes have a
    flat magnitude; blobs are a sum of 2-4 anisotropic Gaussians normalised to their peak,
    cut below 10 % of it. The held-out family (:data:`SHAPES` beyond
    :data:`TRAINING_SHAPES`): cylinders (solid, radius the first semi-axis, half-length
    up to twice the third), pipes (the same with a hollow core: a wall of 30-50 % of the
    radius, at least 8 mm) and clusters of 3-8 small balls (radii 0.4-0.8 of
    ``min_size`` plus 8 mm) scattered within the semi-axes. Overlapping targets take the
    larger magnitude.
    """
    low, high = points.min(axis=0), points.max(axis=0)
    margin = np.minimum(config["margin"], 0.45 * (high - low))
    n_targets = int(rng.integers(config["min_targets"], config["max_targets"] + 1))
    magnitude = np.zeros(points.shape[0])
    for _ in range(n_targets):
        shape = config["shapes"][int(rng.integers(len(config["shapes"])))]
        centre = rng.uniform(low + margin, high - margin)
        semi_axes = rng.uniform(config["min_size"], config["max_size"], size=3)
        peak = rng.uniform(config["min_magnitude"], 1.0)
        local = (points - centre) @ _random_rotation(rng)
        if shape == "ellipsoid":
            values = peak * (np.sum((local / semi_axes) ** 2, axis=1) <= 1.0)
        elif shape == "box":
            values = peak * np.all(np.abs(local) <= semi_axes, axis=1)
        elif shape in ("cylinder", "pipe"):
            radius, half_length = semi_axes[0], semi_axes[2] * rng.uniform(1.0, 2.0)
            radial = np.hypot(local[:, 0], local[:, 1])
            inside = (radial <= radius) & (np.abs(local[:, 2]) <= half_length)
            if shape == "pipe":
                wall = max(rng.uniform(0.3, 0.5) * radius, 0.008)
                inside &= radial >= radius - wall
            values = peak * inside
        elif shape == "cluster":
            values = np.zeros(points.shape[0])
            for _ in range(int(rng.integers(3, 9))):
                ball = rng.uniform(-1.0, 1.0, size=3) * semi_axes
                radius = rng.uniform(0.4, 0.8) * config["min_size"] + 0.008
                values[np.sum((local - ball) ** 2, axis=1) <= radius**2] = peak
        else:
            values = np.zeros(points.shape[0])
            for _ in range(int(rng.integers(2, 5))):
                offset = rng.uniform(-0.5, 0.5, size=3) * semi_axes
                widths = rng.uniform(0.3, 0.7, size=3) * semi_axes
                values += np.exp(-0.5 * np.sum(((local - offset) / widths) ** 2, axis=1))
            values = peak * values / values.max() if values.max() > 0 else values
            values[values < 0.1 * peak] = 0.0
        if not np.any(values > 0):  # a target thinner than the grid pitch: its nearest voxel
            values[np.argmin(np.sum((points - centre) ** 2, axis=1))] = peak
        magnitude = np.maximum(magnitude, values)
    return np.clip(magnitude, 0.0, 1.0)


def add_noise(y: np.ndarray, snr_db: float, rng: np.random.Generator) -> np.ndarray:
    """``y`` plus circular complex white Gaussian noise at ``snr_db`` (per sample).

    The noise variance is ``mean |y|^2 / 10^(snr_db / 10)``, split equally between the real
    and the imaginary part.
    """
    variance = np.mean(np.abs(y) ** 2) / 10 ** (snr_db / 10)
    scale = np.sqrt(variance / 2)
    noise = scale * (rng.standard_normal(y.shape) + 1j * rng.standard_normal(y.shape))
    return y + noise


@register_generator("radar-mimo")
class RadarTargets:
    """Scenes of 3D extended targets and their near-field MIMO measurements.

    Options (``[config]``): ``n_frequencies`` (default 15, evenly over 4-16 GHz),
    ``frequency_choices`` (default []; a list such as ``[5, 10, 15, 20, 30]`` draws each
    sample's number of frequencies from it instead, for training one model over
    compression levels: the measurements then differ in shape and are not stored),
    ``grid_shape`` (default [25, 25, 49]), ``snr_db`` (``[low, high]``: each sample's SNR
    is uniform in it; default [30, 30]), ``min_targets``/``max_targets`` (1, 3),
    ``shapes`` (any of "ellipsoid", "box", "blob"), ``min_size``/``max_size`` (semi-axes,
    0.02-0.07 m), ``min_magnitude`` (0.3), ``margin`` (m kept free at the volume's faces
    for the centres, 0.03), ``reflectivity`` (also store the complex reflectivity, False),
    ``complex_backprojection`` (also store ``A^H y`` as real/imaginary channels, False).

    Fields: ``measurements`` ``(K, T, R)`` complex64 (without ``frequency_choices``),
    ``backprojection`` ``|A^H y|`` float32 on the grid, ``target`` ``|x|`` float32 on the
    grid, ``snr_db`` and ``n_frequencies`` float32 scalars, and
    optionally ``reflectivity`` (complex64 on the grid) and
    ``backprojection_complex`` ``(2, *grid)`` float32.

    Notes
    -----
    The magnitude comes from :func:`synthesize_targets`; the phase is uniform in
    ``[0, 2 pi)`` per voxel (the Deep2S convention: the network sees ``|A^H y|`` and
    predicts ``|x|``). ``y = A x`` is computed in complex64 by the on-the-fly operator,
    noise is added by :func:`add_noise`, and the backprojection is ``A^H y`` of the noisy
    measurements, unnormalised (the networks normalise each sample by its own maximum).
    """

    default_config: ClassVar[dict[str, Any]] = {
        "n_frequencies": 15,
        "frequency_choices": [],
        "grid_shape": [25, 25, 49],
        "snr_db": [30.0, 30.0],
        "min_targets": 1,
        "max_targets": 3,
        "shapes": list(SHAPES),
        "min_size": 0.02,
        "max_size": 0.07,
        "min_magnitude": 0.3,
        "margin": 0.03,
        "reflectivity": False,
        "complex_backprojection": False,
    }
    default_samples = 1000
    default_splits: ClassVar[dict[str, float]] = {"train": 0.8, "val": 0.1, "test": 0.1}
    inputs = ("backprojection",)
    targets = ("target",)

    def validate(self, config: dict[str, Any]) -> None:
        if config["n_frequencies"] < 1:
            raise ValueError(
                f"config.n_frequencies: {config['n_frequencies']}, expected at least 1"
            )
        choices = config["frequency_choices"]
        if any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in choices):
            raise ValueError(
                f"config.frequency_choices: {config['frequency_choices']}, expected positive "
                "integers (or [] for n_frequencies alone)"
            )
        grid = config["grid_shape"]
        if len(grid) != 3 or any(n < 1 for n in grid):
            raise ValueError(f"config.grid_shape: {grid}, expected three positive integers")
        snr = config["snr_db"]
        if len(snr) != 2 or not snr[0] <= snr[1]:
            raise ValueError(f"config.snr_db: {snr}, expected [low, high] with low <= high")
        if not 1 <= config["min_targets"] <= config["max_targets"]:
            raise ValueError(
                f"config.min_targets/max_targets: {config['min_targets']}/"
                f"{config['max_targets']}, expected 1 <= min_targets <= max_targets"
            )
        unknown = [shape for shape in config["shapes"] if shape not in SHAPES]
        if not config["shapes"] or unknown:
            raise ValueError(
                f"config.shapes: {config['shapes']}, expected a non-empty list among {list(SHAPES)}"
            )
        if not 0 < config["min_size"] <= config["max_size"]:
            raise ValueError(
                f"config.min_size/max_size: {config['min_size']}/{config['max_size']}, "
                "expected 0 < min_size <= max_size (metres)"
            )
        if not 0 <= config["min_magnitude"] <= 1:
            raise ValueError(
                f"config.min_magnitude: {config['min_magnitude']}, expected a number in [0, 1]"
            )
        if config["margin"] < 0:
            raise ValueError(f"config.margin: {config['margin']}, expected a non-negative number")

    def fields(self, config: dict[str, Any]) -> dict[str, tuple[tuple[int, ...], Any]]:
        grid = tuple(config["grid_shape"])
        fields: dict[str, tuple[tuple[int, ...], Any]] = {}
        if not config["frequency_choices"]:
            fields["measurements"] = ((config["n_frequencies"], 12, 13), np.complex64)
        fields.update(
            backprojection=(grid, np.float32),
            target=(grid, np.float32),
            snr_db=((), np.float32),
            n_frequencies=((), np.float32),
        )
        if config["reflectivity"]:
            fields["reflectivity"] = (grid, np.complex64)
        if config["complex_backprojection"]:
            fields["backprojection_complex"] = ((2, *grid), np.float32)
        return fields

    def sample(
        self, config: dict[str, Any], index: int, rng: np.random.Generator
    ) -> dict[str, np.ndarray]:
        grid = tuple(config["grid_shape"])
        n_frequencies, choices = config["n_frequencies"], config["frequency_choices"]
        if choices:
            n_frequencies = int(choices[int(rng.integers(len(choices)))])
        A = radar_operator(n_frequencies, grid)
        magnitude = synthesize_targets(A.points, config, rng)
        phase = rng.uniform(0.0, 2 * np.pi, size=magnitude.shape)
        reflectivity = (magnitude * np.exp(1j * phase)).astype(np.complex64)
        snr_db = float(rng.uniform(*config["snr_db"]))
        clean = A @ reflectivity
        measurements = add_noise(clean.astype(np.complex128), snr_db, rng).astype(np.complex64)
        backprojection = A.H @ measurements
        sample = {
            "backprojection": np.abs(backprojection).reshape(grid).astype(np.float32),
            "target": magnitude.reshape(grid).astype(np.float32),
            "snr_db": np.float32(snr_db),
            "n_frequencies": np.float32(n_frequencies),
        }
        if not choices:
            sample["measurements"] = measurements
        if config["reflectivity"]:
            sample["reflectivity"] = reflectivity.reshape(grid)
        if config["complex_backprojection"]:
            volume = backprojection.reshape(grid)
            sample["backprojection_complex"] = np.stack([volume.real, volume.imag]).astype(
                np.float32
            )
        return sample
