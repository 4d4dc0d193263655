"""The built-in generators of :func:`physnet.datasets.generate`.

``gaussian-fields``
    A Gaussian random field ``f`` on the periodic unit box and the solution ``u`` of the
    discrete screened Poisson equation ``kappa^2 u - lap_h u = f``: cheap (two FFTs per
    sample), for throughput tests and quick operator-learning experiments.
``poisson-scenes``
    Smoke-box pressure systems (:func:`physnet.datasets.make_scene`) with their solution
    by AMG-preconditioned CG to ``rtol = 1e-8``.

Examples
--------
>>> import numpy as np
>>> from physnet.datasets.generate import get_generator, sample_of
>>> fields = get_generator("gaussian-fields")
>>> config = fields.check_config({"size": 8})
>>> sample = sample_of(fields, config, seed=0, index=3)
>>> sorted(sample), sample["forcing"].shape, sample["solution"].dtype
(['forcing', 'solution'], (8, 8), dtype('float32'))
"""

from __future__ import annotations

import functools
from typing import Any, ClassVar

import numpy as np

from physnet.datasets.generate import check_grid, register_generator
from physnet.datasets.scenes import MIN_SIZE, available_scenes, make_scene

__all__ = ["GaussianFields", "PoissonScenes"]


@register_generator("gaussian-fields")
class GaussianFields:
    """Gaussian random fields and their screened-Poisson smoothing, on a periodic grid.

    Options (``[config]``): ``size`` (cells per axis, default 64), ``ndim`` (2 or 3,
    default 2), ``length_scale`` (correlation length ``l`` in box units, default 0.05)
    and ``screening`` (``kappa`` in inverse box units, default 10).

    Notes
    -----
    The grid has ``n = size`` cells per axis on the periodic unit box, spacing
    ``h = 1/n``. The input ``forcing`` is white noise filtered in Fourier space to the
    spectrum ``S(k) = exp(-2 pi^2 l^2 |k|^2)`` (``k`` in cycles per box; the covariance
    is approximately ``exp(-r^2 / (2 l^2))``), scaled to unit pointwise variance. The
    target ``solution`` solves ``kappa^2 u - lap_h u = f`` exactly (to rounding), with
    ``lap_h`` the periodic second-order central difference (5 points in 2-D, 7 in 3-D),
    by dividing by its symbol ``kappa^2 + sum_j (4 / h^2) sin^2(pi k_j h)``. Both are
    computed in float64 and stored as float32.
    """

    default_config: ClassVar[dict[str, Any]] = {
        "size": 64,
        "ndim": 2,
        "length_scale": 0.05,
        "screening": 10.0,
    }
    default_samples = 1024
    default_splits: ClassVar[dict[str, float]] = {"train": 0.8, "val": 0.1, "test": 0.1}
    inputs = ("forcing",)
    targets = ("solution",)

    def validate(self, config: dict[str, Any]) -> None:
        check_grid(config, 4)
        for key in ("length_scale", "screening"):
            if not config[key] > 0:
                raise ValueError(f"config.{key}: {config[key]}, expected a positive number")

    def fields(self, config: dict[str, Any]) -> dict[str, tuple[tuple[int, ...], Any]]:
        shape = (config["size"],) * config["ndim"]
        return {"forcing": (shape, np.float32), "solution": (shape, np.float32)}

    def sample(
        self, config: dict[str, Any], index: int, rng: np.random.Generator
    ) -> dict[str, np.ndarray]:
        shape = (config["size"],) * config["ndim"]
        amplitude, symbol = _gaussian_field_filters(
            config["size"], config["ndim"], config["length_scale"], config["screening"]
        )
        axes = tuple(range(len(shape)))
        forcing_hat = np.fft.rfftn(rng.standard_normal(shape)) * amplitude
        forcing = np.fft.irfftn(forcing_hat, s=shape, axes=axes)
        solution = np.fft.irfftn(forcing_hat / symbol, s=shape, axes=axes)
        return {"forcing": forcing.astype(np.float32), "solution": solution.astype(np.float32)}


@functools.lru_cache(maxsize=8)
def _gaussian_field_filters(
    size: int, ndim: int, length_scale: float, screening: float
) -> tuple[np.ndarray, np.ndarray]:
    """Filter amplitude and screened-Laplacian symbol on the ``rfftn`` grid (read-only)."""
    h = 1.0 / size
    full = np.fft.fftfreq(size, d=h)
    half = np.fft.rfftfreq(size, d=h)
    axes = [full] * (ndim - 1) + [half]
    grids = np.meshgrid(*axes, indexing="ij", sparse=True)
    squared = sum(k**2 for k in grids)
    spectrum = np.exp(-2.0 * np.pi**2 * length_scale**2 * squared)
    # Unit variance: Var f = (1/N) sum over the full spectrum of N S(k) / sum S.
    full_squared = sum(k**2 for k in np.meshgrid(*([full] * ndim), indexing="ij", sparse=True))
    total = np.sum(np.exp(-2.0 * np.pi**2 * length_scale**2 * full_squared))
    amplitude = np.sqrt(size**ndim * spectrum / total)
    symbol = screening**2 + sum((4.0 / h**2) * np.sin(np.pi * k * h) ** 2 for k in grids)
    amplitude.setflags(write=False)
    symbol.setflags(write=False)
    return amplitude, symbol


@register_generator("poisson-scenes")
class PoissonScenes:
    """Smoke-box Poisson scenes with their pressure solution.

    Options (``[config]``): ``names`` (obstacles, default all of
    :func:`~physnet.datasets.available_scenes`), ``size`` (cells per axis, default 32),
    ``ndim`` (2 or 3, default 2) and ``rtol`` (of the reference solve, default 1e-8).

    Notes
    -----
    Sample ``i`` is the scene ``names[i % len(names)]`` (so the obstacles are balanced)
    with the scene seed ``rng.integers(2**63 - 1)``, the first draw of the sample's random
    stream: ``make_scene(name, size, ndim=ndim, seed=scene_seed)``. Its fields are the
    cell ``flags`` (int8), the right-hand side ``rhs`` (float32, unit 2-norm, zero off the
    fluid cells) and the ``solution`` of ``A p = b`` (float32 on the grid, zero off the
    fluid cells) computed in float64 by ``physnet.solvers.solve(A, b, method="amg",
    rtol=rtol)``, ``A`` the scene's :class:`~physnet.operators.GridPoisson`.

    pyamg starts its spectral-radius estimate (the prolongation smoother's weight) from a
    random vector of NumPy's legacy global generator, so the solve runs with that
    generator seeded by the sample's second draw (and restored afterwards): without it
    the solution would change in the last bits from run to run.
    """

    default_config: ClassVar[dict[str, Any]] = {
        "names": list(available_scenes()),
        "size": 32,
        "ndim": 2,
        "rtol": 1e-8,
    }
    default_samples = 64
    default_splits: ClassVar[dict[str, float]] = {"train": 0.75, "val": 0.125, "test": 0.125}
    inputs = ("rhs",)
    targets = ("solution",)

    def validate(self, config: dict[str, Any]) -> None:
        names = config["names"]
        unknown = [name for name in names if name not in available_scenes()]
        if not names or unknown:
            raise ValueError(
                f"config.names: {names}, expected a non-empty list among {list(available_scenes())}"
            )
        check_grid(config, MIN_SIZE)
        if not 0 < config["rtol"] < 1:
            raise ValueError(f"config.rtol: {config['rtol']}, expected a number in (0, 1)")

    def fields(self, config: dict[str, Any]) -> dict[str, tuple[tuple[int, ...], Any]]:
        shape = (config["size"],) * config["ndim"]
        return {
            "flags": (shape, np.int8),
            "rhs": (shape, np.float32),
            "solution": (shape, np.float32),
        }

    def sample(
        self, config: dict[str, Any], index: int, rng: np.random.Generator
    ) -> dict[str, np.ndarray]:
        from physnet.solvers import solve

        name = config["names"][index % len(config["names"])]
        scene_seed = int(rng.integers(2**63 - 1))
        scene = make_scene(name, config["size"], ndim=config["ndim"], seed=scene_seed)
        A = scene.operator()
        result = solve(A, scene.rhs_vector(), method="amg", rtol=config["rtol"])
        if not result.converged:
            raise RuntimeError(
                f"poisson-scenes: sample {index} ({name}, scene seed {scene_seed}) did not "
                f"converge: {result.status}"
            )
        return {
            "flags": np.array(scene.flags, dtype=np.int8),
            "rhs": scene.rhs.astype(np.float32),
            "solution": A.scatter(result.x).astype(np.float32),
        }
