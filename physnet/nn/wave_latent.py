"""``WaveLatentLeapfrog``: the stable learned leapfrog with hidden fields beside the wave.

The grid field ``u`` is a projection of a richer state: the finite-element simulator that
made the data moves every mesh node, and two frames of ``u`` cannot tell what the nodes
between the cell centres are doing (a least-squares fit of any two-frame linear stencil stops
at a one-step error of 0.04–0.10 on the wave data, four frames reach 0.014–0.076). This model
therefore carries ``k`` latent fields ``z_1 .. z_k`` beside ``u`` and advances the joint state
``q = (u, z)`` with the damped leapfrog of :class:`~physnet.nn.WaveLeapfrog`,

.. math::

    (1 + \\Gamma)\\, q_{n+1} = A\\, q_n - (1 - \\Gamma)\\, q_{n-1},
    \\qquad A = 2\\, T_m\\!\\left(I - \\tfrac{1}{2} (\\tau / m)^2 K\\right),

where ``K`` is symmetric positive semi-definite on the joint state by construction:

- every channel has its own learned edge operator ``Σ_e D_eᵀ W_{c,e} D_e`` (``W ≥ 0``, zero
  across hole walls), as ``u`` has in :class:`~physnet.nn.WaveLeapfrog`;
- springs ``s_j ≥ 0`` per cell couple ``u`` to ``z_j`` (energy ``s_j (u − z_j)²``), and an
  on-site stiffness ``r_j ≥ 0`` lets ``z_j`` oscillate in place (energy ``r_j z_j²``);
- ``Γ ≥ 0`` is a learned damping per channel and cell, with the absorbing band outside the
  domain.

``m`` meets the Gershgorin bound of the whole ``K``, so the energy
``|q_{n+1}|² + |q_n|² − q_{n+1}ᵀ A q_n`` of the joint state never grows, whatever the
weights: the hidden fields cannot pump energy into ``u``. They start each rollout from the
``history`` given frames: a small CNN on the medium features and the frames (scaled to unit
root-mean-square, so the model stays equivariant to the field's amplitude) writes ``z`` at the
last two of them. Its last layer starts at zero and the springs almost off, so the untrained
model is :class:`~physnet.nn.WaveLeapfrog`'s untrained model, the five-point physics prior.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from physnet.nn._checks import is_int
from physnet.nn.wave_leapfrog import (
    _INVERSE_SOFTPLUS_OF_ONE,
    _OFF,
    EDGES,
    WaveLeapfrog,
    _depth,
    _diagonal,
    _edge_weights,
    _leapfrog,
)

__all__ = ["WaveLatentLeapfrog"]


class WaveLatentLeapfrog(WaveLeapfrog, name="wave-latent-leapfrog"):
    """Forecast a wave field with a learned leapfrog over the field and ``k`` hidden fields,
    whose joint energy cannot grow.

    The interface is :class:`~physnet.nn.WaveLeapfrog`'s with ``history`` frames per step:
    :meth:`forward` rolls a clip ``(batch, 1 + n, H, W)`` (speed, then frames) out from its
    first ``history`` frames, :meth:`step` is one step, :meth:`rollout` continues for any
    number of frames (the hidden fields are set once, from the given frames, and then carried).

    Parameters
    ----------
    latent_channels : int, default 2
        Hidden fields ``k`` carried beside the wave field (at least 1).
    history : int, default 4
        Given frames that set the hidden fields (at least 2; the last two also start ``u``).
    coupling : float, default 0.0025
        The springs and the on-site stiffness at initialisation, in units of the local
        ``c² / h²`` (the five-point operator's face weight): small, so the untrained model is
        almost the untrained :class:`~physnet.nn.WaveLeapfrog`; larger lets the hidden fields
        act within the first step.
    frame_interval, length, pad, damping, hidden_channels, n_layers, activation, input_noise, safety
        As for :class:`~physnet.nn.WaveLeapfrog`.

    Raises
    ------
    ValueError
        For an invalid argument, or inputs of the wrong shape.

    Examples
    --------
    >>> import torch
    >>> from physnet.nn import WaveLatentLeapfrog
    >>> model = WaveLatentLeapfrog(latent_channels=2, history=3, hidden_channels=8, n_layers=1,
    ...                            pad=4)
    >>> clip = torch.cat([torch.ones(2, 1, 16, 16), torch.randn(2, 5, 16, 16)], 1)
    >>> model(clip).shape                      # 3 given + 2 predicted frames
    torch.Size([2, 5, 16, 16])
    """

    def __init__(
        self,
        latent_channels: int = 2,
        history: int = 4,
        coupling: float = 0.0025,
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
        super().__init__(
            frame_interval=frame_interval,
            length=length,
            pad=pad,
            damping=damping,
            hidden_channels=hidden_channels,
            n_layers=n_layers,
            activation=activation,
            input_noise=input_noise,
            safety=safety,
        )
        for key, value, minimum in (
            ("latent_channels", latent_channels, 1),
            ("history", history, 2),
        ):
            if not is_int(value) or value < minimum:
                raise ValueError(
                    f"WaveLatentLeapfrog: {key}={value!r}, expected an integer >= {minimum}"
                )
        if not (
            isinstance(coupling, (int, float)) and not isinstance(coupling, bool) and coupling > 0
        ):
            raise ValueError(f"WaveLatentLeapfrog: coupling={coupling!r}, expected a number > 0")
        self.latent_channels, self.history = latent_channels, history
        channels = 1 + latent_channels
        # Outputs: per channel the six edge weights; per channel the damping; per hidden
        # field its spring to u and its on-site stiffness.
        self.projection = torch.nn.Conv2d(hidden_channels, 7 * channels + 2 * latent_channels, 1)
        torch.nn.init.zeros_(self.projection.weight)
        torch.nn.init.zeros_(self.projection.bias)
        edges = [_INVERSE_SOFTPLUS_OF_ONE] * 2 + [_OFF] * (len(EDGES) - 2)
        local = math.log(math.expm1(float(coupling)))  # softplus(local) = coupling
        offsets = edges * channels + [_OFF - 2.0] * channels + [local] * (2 * latent_channels)
        self.register_buffer("offsets", torch.tensor(offsets), persistent=False)
        self.initial = torch.nn.Sequential(
            torch.nn.Conv2d(hidden_channels + history, hidden_channels, 3, padding=1),
            type(self.activation)(),
            torch.nn.Conv2d(hidden_channels, 2 * latent_channels, 3, padding=1),
        )
        torch.nn.init.kaiming_normal_(self.initial[0].weight, nonlinearity="relu")
        torch.nn.init.zeros_(self.initial[2].weight)
        torch.nn.init.zeros_(self.initial[2].bias)

    # --- the operator ---------------------------------------------------------------------

    def operator(self, speed: torch.Tensor) -> dict:
        """The terms of ``K`` and ``Γ`` for speed maps ``(batch, H, W)``, on the grid padded
        by the band (see :meth:`joint_operator`)."""
        return self.joint_operator(self._encode(speed), speed)

    def joint_operator(self, features: torch.Tensor, speed: torch.Tensor) -> dict:
        """The terms of ``K`` and ``Γ`` on the grid padded by the band, from the medium
        ``features`` (``_encode(speed)``) of speed maps ``(batch, H, W)``: ``"edges"``
        ``(batch, 1 + k, 6, H', W')`` (weight ``e`` at cell ``x`` belongs to the edge from
        ``x`` to ``x + EDGES[e]``), ``"damping"`` ``(batch, 1 + k, H', W')``, ``"springs"``
        and ``"stiffness"`` ``(batch, k, H', W')``."""
        k, channels = self.latent_channels, 1 + self.latent_channels
        raw = self.projection(self.activation(features))
        raw = raw + self.offsets.to(raw.dtype).view(1, -1, 1, 1)
        pad = self.pad
        spacing = self.length / speed.shape[-1]
        if pad:
            raw = F.pad(raw, (pad,) * 4, mode="replicate")
        speed = self._padded_speed(speed)
        edges = raw[:, : 6 * channels].unflatten(1, (channels, len(EDGES)))
        depth = _depth(speed.shape[-2:], pad, speed)
        damping = F.softplus(raw[:, 6 * channels : 7 * channels]) * (depth == 0).to(speed.dtype)
        local = F.softplus(raw[:, 7 * channels :]) * (speed.square() / spacing**2)[:, None]
        local = torch.where((speed == 0)[:, None], 0, local)
        return {
            "edges": _edge_weights(edges, speed, spacing),
            "damping": damping + self._band(depth),
            "springs": local[:, :k],
            "stiffness": local[:, k:],
        }

    def apply_joint(self, terms: dict, q: torch.Tensor) -> torch.Tensor:
        """``K q`` for joint states ``q`` ``(batch, 1 + k, H', W')``."""
        u, z = q[:, :1], q[:, 1:]
        pull = terms["springs"] * (u - z)  # s_j (u - z_j)
        coupling = torch.cat([pull.sum(1, keepdim=True), terms["stiffness"] * z - pull], 1)
        return self.apply_operator(terms["edges"], q) + coupling

    def _substeps(self, terms: dict) -> int:
        springs = terms["springs"]  # the coupling's Gershgorin row sums, u's and the z_j's
        local = torch.cat([2 * springs.sum(1, keepdim=True), 2 * springs + terms["stiffness"]], 1)
        rows = 2 * _diagonal(terms["edges"]) + local
        return self._substeps_for(float(rows.detach().max()))  # spectrum of K in [0, bound]

    def _propagator(self, terms: dict):
        """``q ↦ T_m(I - (τ/m)² K / 2) q`` (so ``A q`` is twice it) and ``m``."""
        substeps = self._substeps(terms)
        return self._chebyshev(lambda q: self.apply_joint(terms, q), substeps), substeps

    def _stepper(self, speed: torch.Tensor, features: torch.Tensor | None = None):
        """The frame map ``(q_{n-1}, q_n) ↦ q_{n+1}`` of joint states on the padded grid."""
        features = self._encode(speed) if features is None else features
        terms = self.joint_operator(features, speed)
        chebyshev, _ = self._propagator(terms)
        return _leapfrog(chebyshev, terms["damping"], (self._padded_speed(speed) == 0)[:, None])

    def initial_state(
        self, speed: torch.Tensor, frames: torch.Tensor, features: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The joint states ``(batch, 1 + k, H', W')`` at the last two of ``frames``, on the
        padded grid: ``u`` as given, ``z`` written by the initial-state network from the last
        ``history`` frames."""
        features = self._encode(speed) if features is None else features
        frames = frames[:, -self.history :]
        scale = frames.square().mean(dim=(1, 2, 3), keepdim=True).sqrt()
        # an all-zero input gives zero hidden fields (the clamp only avoids 0 / 0)
        hidden = scale * self.initial(torch.cat([features, frames / scale.clamp_min(1e-30)], 1))
        k, pad = self.latent_channels, self.pad
        previous = torch.cat([frames[:, -2:-1], hidden[:, :k]], 1)
        current = torch.cat([frames[:, -1:], hidden[:, k:]], 1)
        if pad:
            previous, current = F.pad(previous, (pad,) * 4), F.pad(current, (pad,) * 4)
        solid = (self._padded_speed(speed) == 0)[:, None]
        return torch.where(solid, 0, previous), torch.where(solid, 0, current)

    # --- the surrogate interface ----------------------------------------------------------

    def _start(self, speed: torch.Tensor, frames: torch.Tensor):
        features = self._encode(speed)  # once, for the operator and the hidden start
        return self._stepper(speed, features), *self.initial_state(speed, frames, features)

    def _observe(self, state: torch.Tensor) -> torch.Tensor:
        return super()._observe(state[:, 0])

    def energy(
        self, speed: torch.Tensor, previous: torch.Tensor, current: torch.Tensor
    ) -> torch.Tensor:
        """The discrete energy ``|q_{n+1}|² + |q_n|² − q_{n+1}ᵀ A q_n`` per sample, for joint
        states on the padded grid (``(batch, 1 + k, H', W')``); it never grows along a
        rollout."""
        chebyshev, _ = self._propagator(self.operator(speed))
        cross = (current * 2 * chebyshev(previous)).sum((1, 2, 3))
        return current.square().sum((1, 2, 3)) + previous.square().sum((1, 2, 3)) - cross
