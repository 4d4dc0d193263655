"""The ``wave2d`` generator: finite-element wave simulations gridded for learning.

Each sample is one simulation of ``u_tt = div(c^2 grad u) + s`` on the square
``[0, L]^2`` with random holes (rigid walls; circles, or ellipses and squares with
``hole_shapes``) and circular inclusions (other wave speeds),
a smoothly varying background speed and Ricker point sources, solved by
:class:`physnet.fem.WaveSimulator` (P1, lumped mass, leapfrog) on an unstructured mesh and
interpolated onto a ``size x size`` grid of cell centres.

Examples
--------
>>> from physnet.datasets.generate import get_generator, sample_of
>>> generator = get_generator("wave2d")
>>> config = generator.check_config({"size": 16, "mesh_size": 0.05, "n_frames": 3})
>>> sample = sample_of(generator, config, seed=0, index=0)
>>> sample["speed"].shape, sample["frames"].shape
((16, 16), (3, 16, 16))
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np

from physnet.datasets.generate import register_generator

__all__ = ["HOLE_SHAPES", "Wave2D", "draw_wave_scene", "simulate_wave_scene"]

HOLE_SHAPES = ("circle", "ellipse", "square")
"""The values of the ``hole_shapes`` option."""


def _check_range(config: dict[str, Any], key: str, low: float, high: float | None = None) -> None:
    value = config[key]
    ok = len(value) == 2 and low <= value[0] <= value[1] and (high is None or value[1] <= high)
    if not ok:
        bound = f"in [{low}, {high}]" if high is not None else f">= {low}"
        raise ValueError(f"config.{key}: {value}, expected [min, max] with min <= max, {bound}")


def _draw_hole_shape(
    shapes: list[str], x: float, y: float, radius: float, rng: np.random.Generator
) -> Any:
    """A hole of a shape drawn from ``shapes`` with bounding circle ``(x, y, radius)``."""
    from physnet.fem.mesh import Ellipse, Rectangle

    kind = shapes[int(rng.integers(len(shapes)))]
    if kind == "ellipse":
        ratio, angle = float(rng.uniform(0.5, 1.0)), float(rng.uniform(0, math.pi))
        return Ellipse(x, y, radius, ratio * radius, angle)
    if kind == "square":
        half_side, angle = radius / math.sqrt(2), float(rng.uniform(0, math.pi / 2))
        return Rectangle(x, y, half_side, half_side, angle)
    return (x, y, radius)


def draw_wave_scene(config: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
    """Draw a scene's geometry, speeds and sources from ``rng`` (see :class:`Wave2D`).

    Circular holes and inclusions are ``(x, y, radius)`` tuples; holes of other shapes
    (``hole_shapes``) are :class:`physnet.fem.mesh.Ellipse` and
    :class:`physnet.fem.mesh.Rectangle` with the same centre, inside the circle of the
    drawn radius.
    """
    length, h = config["length"], config["mesh_size"]
    # Configs written before the option have circles only.
    shapes = list(config.get("hole_shapes", ["circle"]))
    circles: list[tuple[float, float, float]] = []  # the bounding circles
    kinds: list[str] = []
    hole_shapes: list[Any] = []
    wanted = [("hole", int(rng.integers(config["holes"][0], config["holes"][1] + 1)))]
    wanted.append(
        ("inclusion", int(rng.integers(config["inclusions"][0], config["inclusions"][1] + 1)))
    )
    for kind, count in wanted:
        radii = config["hole_radius"] if kind == "hole" else config["inclusion_radius"]
        for _ in range(count):
            for _attempt in range(100):
                radius = rng.uniform(*radii)
                margin = radius + 2 * h
                if 2 * margin >= length:
                    break
                x, y = rng.uniform(margin, length - margin, 2)
                if all(math.hypot(x - a, y - b) > radius + r + 2 * h for a, b, r in circles):
                    circles.append((float(x), float(y), float(radius)))
                    kinds.append(kind)
                    if kind == "hole":
                        # The default draws nothing more: its scenes stay as they were.
                        hole_shapes.append(
                            circles[-1]
                            if shapes == ["circle"]
                            else _draw_hole_shape(shapes, *circles[-1], rng)
                        )
                    break
    holes = [c for c, k in zip(circles, kinds, strict=True) if k == "hole"]
    inclusions = [c for c, k in zip(circles, kinds, strict=True) if k == "inclusion"]
    background = float(rng.uniform(*config["background_speed"]))
    angle = float(rng.uniform(0, 2 * math.pi))
    gradient = float(rng.uniform(-1, 1) * config["speed_gradient"])
    inclusion_speeds = [float(rng.uniform(*config["inclusion_speed"])) for _ in inclusions]
    sources = []
    n_sources = int(rng.integers(config["sources"][0], config["sources"][1] + 1))
    while len(sources) < n_sources:
        x, y = rng.uniform(2 * h, length - 2 * h, 2)
        if all(math.hypot(x - a, y - b) > r + 2 * h for a, b, r in holes):
            frequency = float(rng.uniform(*config["peak_frequency"]))
            amplitude = float(rng.uniform(0.5, 1.5) * rng.choice([-1.0, 1.0]))
            sources.append(((float(x), float(y)), frequency, amplitude))
    start = max(2.4 / f for _, f, _ in sources) + float(rng.uniform(*config["start_delay"]))
    return {
        "holes": hole_shapes,
        "inclusions": inclusions,
        "background": background,
        "angle": angle,
        "gradient": gradient,
        "inclusion_speeds": inclusion_speeds,
        "sources": sources,
        "start": start,
        "mesh_seed": int(rng.integers(2**31)),
    }


def simulate_wave_scene(
    config: dict[str, Any], scene: dict[str, Any], n_frames: int | None = None
) -> tuple[Any, Any, np.ndarray]:
    """Mesh, simulate and return ``(solution, interpolator, frame_times)`` for a scene."""
    from physnet.fem import GridInterpolator, RickerSource, WaveSimulator, rectangle_mesh

    length = config["length"]
    mesh = rectangle_mesh(
        (length, length),
        config["mesh_size"],
        holes=scene["holes"],
        inclusions=scene["inclusions"],
        seed=scene["mesh_seed"],
    )
    centroids = mesh.centroids
    direction = np.array([math.cos(scene["angle"]), math.sin(scene["angle"])])
    trend = (centroids - length / 2) @ direction / length
    speed = scene["background"] * (1.0 + scene["gradient"] * trend)
    for region, value in enumerate(scene["inclusion_speeds"], start=1):
        speed[mesh.regions == region] = value
    outer = config["outer_boundary"]
    boundary = {"bottom": outer, "right": outer, "top": outer, "left": outer}
    boundary["holes"] = config["hole_boundary"]
    simulator = WaveSimulator(mesh, speed=speed, boundary=boundary)
    interval = config["frame_interval"]
    substeps = math.ceil(interval / (config["safety"] * simulator.critical_time_step()))
    dt = interval / substeps
    first = round(scene["start"] / dt) * dt
    n_frames = config["n_frames"] if n_frames is None else n_frames
    times = first + interval * np.arange(n_frames)
    sources = [
        RickerSource(position, peak_frequency=frequency, amplitude=amplitude)
        for position, frequency, amplitude in scene["sources"]
    ]
    solution = simulator.run(times, dt=dt, sources=sources)
    size = config["size"]
    interpolator = GridInterpolator(mesh, (size, size), bounds=(0.0, 0.0, length, length))
    return solution, interpolator, times


@register_generator("wave2d")
class Wave2D:
    """Finite-element wave simulations on a square with holes and inclusions, gridded.

    Options (``[config]``; ranges are ``[min, max]``, drawn uniformly per sample):
    ``size`` (grid cells per axis, 64), ``length`` (side ``L`` of the square, 1.0),
    ``mesh_size`` (finite-element ``h``, 0.0125), ``n_frames`` (32),
    ``frame_interval`` (time between frames, 0.02), ``start_delay`` (time after the
    sources have fired before the first frame, [0.0, 0.3]), ``background_speed``
    ([0.8, 1.2]), ``speed_gradient`` (largest relative change of the background across
    the square, 0.3), ``inclusions`` (count, [0, 3]), ``inclusion_radius``
    ([0.06, 0.15]), ``inclusion_speed`` ([0.5, 2.0]), ``holes`` (count, [0, 2]),
    ``hole_radius`` ([0.05, 0.12]), ``hole_shapes`` (the shapes each hole is drawn from,
    uniformly: ``"circle"``, ``"ellipse"``, ``"square"``; ``["circle"]``), ``sources``
    (count, [1, 2]), ``peak_frequency`` (Ricker, Hz, [5.0, 8.0]), ``outer_boundary``
    (``"absorbing"``, ``"dirichlet"`` or ``"neumann"``; ``"absorbing"``), ``hole_boundary``
    (``"neumann"``) and ``safety`` (fraction of the CFL bound for the time step, 0.9).

    Fields: ``speed`` (``size x size``, the wave speed at the grid points, 0 inside holes)
    and ``frames`` (``n_frames x size x size``, ``u`` at ``t_0 + j frame_interval``), both
    float32. Inputs ``speed`` and ``frames``, target ``frames`` (what
    :class:`physnet.nn.WaveCNN` trains on: roll the clip out from its first frames).

    Notes
    -----
    Sample ``i`` draws, in order, from its random stream: the number and placement of holes
    then inclusions (circles at least ``2 h`` apart and from the sides, by rejection; unless
    ``hole_shapes == ["circle"]``, each placed hole then draws its shape: an ellipse with
    semi-axes ``r`` and ``U(0.5, 1) r`` turned by ``U(0, pi)``, or a square of half side
    ``r / sqrt(2)`` turned by ``U(0, pi / 2)``, inside the hole's circle of radius ``r``), the
    background speed ``c_0``, the direction and strength ``g`` of its linear trend
    ``c = c_0 (1 + g (x - x_c) . d / L)``, one speed per inclusion, the sources (position
    outside the holes, peak frequency ``f``, amplitude ``+-U(0.5, 1.5)``), the start delay
    and the mesh seed. The sources fire at ``t = 1.2 / f`` (Ricker delay); the first frame
    is at ``t_0 = max(2.4 / f) + delay``, when every wavelet has decayed, so the clip is
    free propagation (reflections, refraction, absorption). The time step is the largest
    ``dt <= safety * 2 / sqrt(lambda_max(M^-1 K))`` dividing ``frame_interval``, and
    ``t_0`` is rounded to a multiple of it, so frames fall on time steps. The grid values
    are P1 interpolation of the nodal values at the cell centres
    (:class:`physnet.fem.GridInterpolator`), and ``speed`` is the speed of the triangle
    holding each centre. Computed in float64.
    """

    default_config: ClassVar[dict[str, Any]] = {
        "size": 64,
        "length": 1.0,
        "mesh_size": 0.0125,
        "n_frames": 32,
        "frame_interval": 0.02,
        "start_delay": [0.0, 0.3],
        "background_speed": [0.8, 1.2],
        "speed_gradient": 0.3,
        "inclusions": [0, 3],
        "inclusion_radius": [0.06, 0.15],
        "inclusion_speed": [0.5, 2.0],
        "holes": [0, 2],
        "hole_radius": [0.05, 0.12],
        "hole_shapes": ["circle"],
        "sources": [1, 2],
        "peak_frequency": [5.0, 8.0],
        "outer_boundary": "absorbing",
        "hole_boundary": "neumann",
        "safety": 0.9,
    }
    default_samples = 256
    default_splits: ClassVar[dict[str, float]] = {"train": 0.8, "val": 0.1, "test": 0.1}
    inputs = ("speed", "frames")
    targets = ("frames",)

    def validate(self, config: dict[str, Any]) -> None:
        from physnet.fem import BOUNDARY_CONDITIONS

        if config["size"] < 4:
            raise ValueError(f"config.size: {config['size']}, expected at least 4")
        if config["n_frames"] < 1:
            raise ValueError(f"config.n_frames: {config['n_frames']}, expected at least 1")
        for key in ("length", "mesh_size", "frame_interval"):
            if not config[key] > 0:
                raise ValueError(f"config.{key}: {config[key]}, expected a positive number")
        if config["mesh_size"] > config["length"] / 4:
            raise ValueError(
                f"config.mesh_size: {config['mesh_size']}, expected at most length / 4"
            )
        if not 0 < config["safety"] <= 1:
            raise ValueError(f"config.safety: {config['safety']}, expected a number in (0, 1]")
        if not 0 <= config["speed_gradient"] < 1:
            raise ValueError(
                f"config.speed_gradient: {config['speed_gradient']}, expected a number in [0, 1)"
            )
        for key in ("start_delay", "inclusions", "holes", "hole_radius", "inclusion_radius"):
            _check_range(config, key, 0)
        for key in ("background_speed", "inclusion_speed", "peak_frequency"):
            _check_range(config, key, 1e-6)
        _check_range(config, "sources", 1)
        shapes = config["hole_shapes"]
        if not shapes or any(shape not in HOLE_SHAPES for shape in shapes):
            raise ValueError(
                f"config.hole_shapes: {shapes}, expected a non-empty list of "
                f"{', '.join(map(repr, HOLE_SHAPES))}"
            )
        for key in ("outer_boundary", "hole_boundary"):
            if config[key] not in BOUNDARY_CONDITIONS:
                raise ValueError(
                    f"config.{key}: {config[key]!r}, expected one of {BOUNDARY_CONDITIONS}"
                )

    def fields(self, config: dict[str, Any]) -> dict[str, tuple[tuple[int, ...], Any]]:
        grid = (config["size"], config["size"])
        return {"speed": (grid, np.float32), "frames": ((config["n_frames"], *grid), np.float32)}

    def sample(
        self, config: dict[str, Any], index: int, rng: np.random.Generator
    ) -> dict[str, np.ndarray]:
        scene = draw_wave_scene(config, rng)
        solution, interpolator, _ = simulate_wave_scene(config, scene)
        return {
            "speed": interpolator.cell_values(solution.speed).astype(np.float32),
            "frames": interpolator(solution.values).astype(np.float32),
        }
