"""``WaveLeapfrog``: a wave surrogate that is stable for any weights, by construction.

The frame map of the surrogate is the damped leapfrog

.. math::

    (1 + \\Gamma)\\, u_{n+1} = A\\, u_n - (1 - \\Gamma)\\, u_{n-1},
    \\qquad A = 2\\, T_m\\!\\left(I - \\tfrac{1}{2} (\\tau / m)^2 M\\right),

with ``T_m`` the Chebyshev polynomial of degree ``m`` (``A`` is exactly ``m`` leapfrog
sub-steps of length ``τ / m`` per frame), ``M = Σ_k D_kᵀ W_k D_k`` a learned, symmetric
positive semi-definite operator (``D_k`` the difference along one of six edge directions,
``W_k ≥ 0`` per edge) and ``Γ ≥ 0`` a learned damping. ``m`` is the smallest number of
sub-steps whose length meets the Gershgorin bound of ``M``, so the spectrum of ``A`` lies
in ``[-2, 2]``, and then the discrete energy

.. math::

    E_n = \\|u_{n+1}\\|^2 + \\|u_n\\|^2 - u_{n+1}^\\top A\\, u_n \\;\\ge\\; 0

never grows: ``E_n - E_{n-1} = -(u_{n+1} - u_{n-1})ᵀ Γ (u_{n+1} - u_{n-1})``. Whatever the
network writes, a rollout cannot blow up.

A hypernetwork (the encoder of :class:`~physnet.nn.WaveStencil`) reads the speed map once
per scene and writes the six edge weights and the damping inside the domain; at
initialisation (zero projection) ``M`` is the conservative five-point discretisation of
``-div(c² grad)`` (face coefficient the mean of ``c²`` of the two cells, no flux through
hole walls: rigid, Neumann) and ``Γ`` is zero inside the domain. Outside it, a band of
``pad`` cells continues the medium with a damping rising quadratically to its outer edge
(its strength is learned), so waves leave the domain as through the simulator's absorbing
sides. ``solvers/wave-stencil/card.md`` measures this initial, purely physical map.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from physnet.nn._checks import is_int
from physnet.nn.wave import _WaveSurrogate
from physnet.nn.wave_stencil import _MediumEncoder

__all__ = ["WaveLeapfrog"]

EDGES = ((0, 1), (1, 0), (1, 1), (1, -1), (0, 2), (2, 0))
"""The edge directions ``(dy, dx)`` of ``M``: the five-point faces, the diagonals, and the
neighbours two cells away."""
_INVERSE_SOFTPLUS_OF_ONE = math.log(math.e - 1)
_OFF = -6.0  # softplus(-6) = 0.0025: the learned terms that start (almost) switched off


class WaveLeapfrog(_WaveSurrogate, _MediumEncoder, name="wave-leapfrog"):
    """Forecast a wave field with a learned leapfrog whose energy cannot grow.

    The interface is :class:`~physnet.nn.WaveCNN`'s with ``history = 2``: :meth:`forward`
    rolls a clip ``(batch, 1 + n, H, W)`` (speed, then frames) out from its first two
    frames, :meth:`step` is one step, :meth:`rollout` continues for any number of frames.
    The grid holds cell centres of a square of side ``length``; the speed map is ``0`` in
    holes (the ``wave2d`` convention).

    Parameters
    ----------
    frame_interval : float, default 0.02
        Time between frames (``datasets/wave2d``'s ``frame_interval``).
    length : float, default 1.0
        Side of the square domain (the grid spacing is ``length / W``).
    pad : int, default 16
        Cells of the damping band outside the domain (0: reflecting sides).
    damping : float, default 20.0
        Initial damping rate at the band's outer edge (learned; in 1 / time).
    hidden_channels : int, default 32
    n_layers : int, default 4
        Residual layers of the hypernetwork.
    activation : {"gelu", "relu", "silu", "tanh"}, default "gelu"
    input_noise : float, default 0.0
        As for :class:`~physnet.nn.WaveCNN` (noise on the given frames in training).
    safety : float, default 0.95
        Fraction of the stability limit a sub-step uses.

    Raises
    ------
    ValueError
        For an invalid argument, or inputs of the wrong shape.

    Examples
    --------
    >>> import torch
    >>> from physnet.nn import WaveLeapfrog
    >>> model = WaveLeapfrog(hidden_channels=8, n_layers=1, pad=4)
    >>> clip = torch.cat([torch.ones(2, 1, 16, 16), torch.randn(2, 5, 16, 16)], 1)
    >>> model(clip).shape                      # 2 given + 3 predicted frames
    torch.Size([2, 5, 16, 16])
    """

    def __init__(
        self,
        frame_interval: float = 0.02,
        length: float = 1.0,
        pad: int = 16,
        damping: float = 20.0,
        hidden_channels: int = 32,
        n_layers: int = 4,
        activation: str = "gelu",
        input_noise: float = 0.0,
        safety: float = 0.95,
    ) -> None:
        super().__init__()
        self._setup(
            history=2,
            horizon=1,
            integers={"pad": (pad, 0), "hidden_channels": (hidden_channels, 1)},
            odd={},
            choices={},
            input_noise=input_noise,
        )
        for key, value, upper in (
            ("frame_interval", frame_interval, math.inf),
            ("length", length, math.inf),
            ("damping", damping, math.inf),
            ("safety", safety, 1.0),
        ):
            if not (
                isinstance(value, (int, float))
                and not isinstance(value, bool)
                and 0 < value <= upper
            ):
                raise ValueError(
                    f"WaveLeapfrog: {key}={value!r}, expected a number in (0, {upper}]"
                )
        self.frame_interval, self.length = float(frame_interval), float(length)
        self.pad, self.safety = pad, float(safety)
        self._build_encoder(hidden_channels, n_layers, activation, "WaveLeapfrog")
        # Outputs: one raw weight per edge direction, then the interior damping.
        self.projection = torch.nn.Conv2d(hidden_channels, len(EDGES) + 1, 1)
        self._init_encoder()
        torch.nn.init.zeros_(self.projection.weight)
        torch.nn.init.zeros_(self.projection.bias)
        offsets = [_INVERSE_SOFTPLUS_OF_ONE] * 2 + [_OFF] * (len(EDGES) - 2) + [_OFF - 2.0]
        self.register_buffer("offsets", torch.tensor(offsets), persistent=False)
        # softplus(band) = damping at the start
        self.band = torch.nn.Parameter(torch.tensor(math.log(math.expm1(float(damping)))))

    # --- the operator ---------------------------------------------------------------------

    def operator(self, speed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Edge weights ``(batch, 6, H', W')`` of ``M`` and the damping ``Γ``
        ``(batch, H', W')`` on the grid padded by the band (``H' = H + 2 pad``): weight
        ``k`` at cell ``x`` belongs to the edge from ``x`` to ``x + EDGES[k]``."""
        raw = self.projection(self.activation(self._encode(speed)))
        raw = raw + self.offsets.to(raw.dtype).view(1, -1, 1, 1)
        pad = self.pad
        spacing = self.length / speed.shape[-1]
        if pad:
            raw = F.pad(raw, (pad,) * 4, mode="replicate")
        speed = self._padded_speed(speed)
        weights = _edge_weights(raw[:, : len(EDGES)], speed, spacing)
        depth = _depth(speed.shape[-2:], pad, speed)
        damping = F.softplus(raw[:, -1]) * (depth == 0).to(speed.dtype)
        return weights, damping + self._band(depth)

    def _band(self, depth: torch.Tensor) -> torch.Tensor:
        """The damping of the band outside the domain, rising quadratically with ``depth``."""
        return F.softplus(self.band) * depth**2 * self.frame_interval / 2

    def _padded_speed(self, speed: torch.Tensor) -> torch.Tensor:
        if not self.pad:
            return speed
        return F.pad(speed[:, None], (self.pad,) * 4, mode="replicate")[:, 0]

    def _substeps(self, weights: torch.Tensor) -> int:
        # Gershgorin: the spectrum of M lies in [0, 2 max diagonal]
        return self._substeps_for(2 * float(_diagonal(weights).detach().max()))

    def _substeps_for(self, bound: float) -> int:
        """The fewest leapfrog sub-steps per frame that are stable for an operator whose
        spectrum lies in ``[0, bound]``."""
        return max(1, math.ceil(self.frame_interval * math.sqrt(bound) / 2 / self.safety))

    @staticmethod
    def apply_operator(weights: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """``M u = Σ_k D_kᵀ (W_k D_k u)`` for fields ``u`` ``(..., H', W')`` and edge weights
        ``(..., 6, H', W')`` (e.g. ``(batch, 6, H', W')`` for ``(batch, H', W')``)."""
        result = torch.zeros_like(u)
        for k, (dy, dx) in enumerate(EDGES):
            flux = weights[..., k, :, :] * (_move(u, -dy, -dx) - u)  # W_k (u(x + d) - u(x))
            result = result - flux + _move(flux, dy, dx)
        return result

    def _propagator(self, speed: torch.Tensor):
        """``u ↦ T_m(I - (τ/m)² M / 2) u`` (so ``A u`` is twice it), ``Γ``, the solid cells
        of the padded grid and ``m``."""
        weights, damping = self.operator(speed)
        substeps = self._substeps(weights)
        chebyshev = self._chebyshev(lambda u: self.apply_operator(weights, u), substeps)
        return chebyshev, damping, self._padded_speed(speed) == 0, substeps

    def _chebyshev(self, operator, substeps: int):
        """``u ↦ T_m(I - (τ/m)² K / 2) u`` for ``m = substeps`` and ``K`` the map
        ``operator``: ``m`` leapfrog sub-steps of length ``τ / m`` in one polynomial."""
        dt2 = (self.frame_interval / substeps) ** 2

        def half(u):
            return u - 0.5 * dt2 * operator(u)

        def chebyshev(u):
            t0, t1 = u, half(u)
            for _ in range(substeps - 1):
                t0, t1 = t1, 2 * half(t1) - t0
            return t1

        return chebyshev

    def _stepper(self, speed: torch.Tensor):
        chebyshev, damping, solid, _ = self._propagator(speed)
        return _leapfrog(chebyshev, damping, solid)

    def _start(self, speed: torch.Tensor, frames: torch.Tensor):
        """The frame map and the states at the last two given frames, on the padded grid."""
        pad = self.pad
        widen = (lambda u: F.pad(u, (pad,) * 4)) if pad else (lambda u: u)
        return self._stepper(speed), widen(frames[:, -2]), widen(frames[:, -1])

    def _observe(self, state: torch.Tensor) -> torch.Tensor:
        """The wave field on the grid ``(batch, H, W)`` of a padded state."""
        height, width = state.shape[-2:]
        return state[..., self.pad : height - self.pad, self.pad : width - self.pad]

    # --- the surrogate interface ----------------------------------------------------------

    def step(self, speed: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
        """The next frame ``(batch, 1, H, W)`` after the last two of ``frames``."""
        return self.rollout(speed, frames, 1)

    def rollout(self, speed: torch.Tensor, frames: torch.Tensor, steps: int) -> torch.Tensor:
        """``steps`` frames ``(batch, steps, H, W)`` following ``frames``."""
        self._check(speed, frames, "rollout")
        if not is_int(steps) or steps < 0:
            raise ValueError(
                f"{type(self).__name__}.rollout: steps={steps!r}, expected an integer >= 0"
            )
        if steps == 0:
            return frames.new_zeros(frames.shape[0], 0, *frames.shape[2:])
        step, previous, current = self._start(speed, frames)
        predicted = []
        for _ in range(steps):
            previous, current = current, step(previous, current)
            predicted.append(self._observe(current))
        return torch.stack(predicted, 1)

    def energy(self, speed: torch.Tensor, previous: torch.Tensor, current: torch.Tensor):
        """The discrete energy ``E = |u_{n+1}|² + |u_n|² - u_{n+1}ᵀ A u_n`` per sample, for
        fields on the padded grid (``(batch, H', W')``); it never grows along a rollout."""
        chebyshev = self._propagator(speed)[0]
        t1 = chebyshev(previous)
        cross = (current * 2 * t1).sum((-2, -1))  # u_{n+1}ᵀ A u_n, A u_n = 2 T_m(B) u_n
        return current.square().sum((-2, -1)) + previous.square().sum((-2, -1)) - cross


def _edge_weights(raw: torch.Tensor, speed: torch.Tensor, spacing: float) -> torch.Tensor:
    """Edge weights ``(batch, ..., 6, H', W')`` from raw outputs of that shape and the padded
    speed map ``(batch, H', W')``: ``softplus(raw)`` times the mean ``c²`` of the edge's ends
    over ``h²``, zero across hole walls (rigid), zero past the grid's last row / column."""
    solid, squared = speed == 0, speed.square()
    middle = (1,) * (raw.ndim - 4)  # the dimensions between batch and the edge axis
    weights = []
    for k, (dy, dx) in enumerate(EDGES):
        start, end = _edge_ends(squared, dy, dx)
        solid_start, solid_end = _edge_ends(solid, dy, dx)
        face = torch.where(solid_start | solid_end, 0, (start + end) / 2)  # rigid walls
        face = face.reshape(face.shape[0], *middle, *face.shape[1:])
        weight = F.softplus(_edge_ends(raw[..., k, :, :], dy, dx)[0]) * face / spacing**2
        weights.append(F.pad(weight, (max(-dx, 0), max(dx, 0), 0, dy)))
    return torch.stack(weights, -3)


def _diagonal(weights: torch.Tensor) -> torch.Tensor:
    """The diagonal ``(..., H', W')`` of ``Σ_k D_kᵀ W_k D_k`` for edge weights
    ``(..., 6, H', W')``; each row's absolute sum is twice it."""
    diagonal = weights.sum(-3)
    for k, (dy, dx) in enumerate(EDGES):  # the edge's other end
        diagonal = diagonal + _move(weights[..., k, :, :], dy, dx)
    return diagonal


def _leapfrog(chebyshev, damping: torch.Tensor, solid: torch.Tensor):
    """The damped frame map ``(u_{n-1}, u_n) ↦ u_{n+1}``, zero on ``solid`` cells."""

    def step(previous, current):
        following = (2 * chebyshev(current) - (1 - damping) * previous) / (1 + damping)
        return torch.where(solid, 0, following)

    return step


def _edge_ends(x: torch.Tensor, dy: int, dx: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``x`` at the two ends of every edge ``(i, j) → (i + dy, j + dx)`` inside the grid
    (``dy >= 0``), over the edges' starts: rows ``0 .. H - 1 - dy``, the columns ``dx``
    allows."""
    height, width = x.shape[-2:]
    first, last = max(-dx, 0), width - max(dx, 0)
    start = x[..., : height - dy, first:last]
    end = x[..., dy:height, first + dx : last + dx]
    return start, end


def _move(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """``y(i, j) = x(i - dy, j - dx)`` with zeros shifted in (``dy, dx`` of either sign)."""
    height, width = x.shape[-2:]
    padded = F.pad(x, (max(dx, 0), max(-dx, 0), max(dy, 0), max(-dy, 0)))
    top, left = max(-dy, 0), max(-dx, 0)
    return padded[..., top : top + height, left : left + width]


def _depth(shape, pad: int, like: torch.Tensor) -> torch.Tensor:
    """Per cell of the padded grid, how far into the band it lies: 0 in the domain, rising
    linearly to 1 at the outer edge."""
    profiles = []
    for n in shape:
        depth = torch.zeros(n, dtype=like.dtype, device=like.device)
        if pad:
            r = torch.arange(pad, dtype=like.dtype, device=like.device)
            depth[:pad], depth[n - pad :] = (pad - r) / pad, (r + 1) / pad
        profiles.append(depth)
    return torch.maximum(profiles[0][:, None], profiles[1][None, :])
