"""``WaveStencil``: a wave surrogate that is a learned, spatially varying leapfrog stencil.

For a fixed medium the wave equation is linear, and so is its exact frame-to-frame map:
for a constant speed ``c`` it is ``u_{n+1} = 2 cos(dt c sqrt(-Laplacian)) u_n - u_{n-1}``,
and with inclusions, walls and absorbing sides it stays a linear map of the previous frames
whose coefficients depend only on the medium. :class:`WaveStencil` learns that map: a
small CNN (a hypernetwork) reads the speed map once and writes, at every grid point, one
``stencil x stencil`` stencil per history frame (its taps, or the coefficients of a basis
of difference operators); a step applies them,

.. math::

    u_{n+1}(x) = \\sum_{j=0}^{h-1} \\sum_{|d|_\\infty \\le r} K_j(x, d)\\, u_{n-j}(x + d),

so a rollout is exactly linear in the field (superposition and amplitude equivariance
hold to rounding), costs ``history * stencil**2`` multiply-adds per grid point and frame,
and the network runs once per scene, not once per frame.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from physnet.nn._checks import is_int
from physnet.nn._registry import Model
from physnet.nn.convnet import _ACTIVATIONS
from physnet.nn.wave import _WaveSurrogate

__all__ = ["WaveStencil", "apply_stencils"]


def apply_stencils(frames: torch.Tensor, stencils: torch.Tensor) -> torch.Tensor:
    """Apply per-point stencils: ``sum_j sum_d K[:, o, j, d](x) u_j(x + d)``.

    Parameters
    ----------
    frames : torch.Tensor
        ``(batch, history, H, W)``; zero outside the grid.
    stencils : torch.Tensor
        ``(batch, outputs, history, k, k, H, W)`` with ``k`` odd; tap ``(a, b)`` weighs the
        value at offset ``(a - k // 2, b - k // 2)``.

    Returns
    -------
    torch.Tensor
        ``(batch, outputs, H, W)``.

    Examples
    --------
    >>> import torch
    >>> u = torch.randn(1, 1, 5, 5)
    >>> K = torch.zeros(1, 1, 1, 3, 3, 5, 5)
    >>> K[:, :, :, 1, 2] = 1.0                        # take the right neighbour
    >>> torch.equal(apply_stencils(u, K)[0, 0, :, :-1], u[0, 0, :, 1:])
    True
    """
    if frames.device.type == "cpu" and frames.dtype == stencils.dtype == torch.float32:
        return _CPUStencils.apply(frames, stencils)
    batch, outputs, history, k, _, height, width = stencils.shape
    patches = F.unfold(frames, k, padding=k // 2)  # (batch, history * k * k, H * W)
    weights = stencils.reshape(batch, outputs, history * k * k, height * width)
    return (weights * patches[:, None]).sum(dim=2).reshape(batch, outputs, height, width)


_KERNELS: dict[str, object] = {}


def _cpu_kernels() -> dict[str, object]:
    """Compiled (numba) CPU kernels: one stencil step, its backward, and a whole rollout
    scene by scene (one scene's stencils stay in cache for all of its steps)."""
    if _KERNELS:
        return _KERNELS
    import numba
    import numpy as np

    jit = numba.njit(cache=True, fastmath=True)

    @jit
    def step(stencils, frames):  # pragma: no cover - compiled
        batch, outputs, history, k, _, height, width = stencils.shape
        radius = k // 2
        result = np.zeros((batch, outputs, height, width), dtype=stencils.dtype)
        for b in range(batch):
            for j in range(history):
                source = frames[b, j]
                for a in range(k):
                    for c in range(k):
                        ylo, yhi = max(0, radius - a), min(height, height + radius - a)
                        xlo, xhi = max(0, radius - c), min(width, width + radius - c)
                        for o in range(outputs):
                            weights = stencils[b, o, j, a, c]
                            total = result[b, o]
                            for y in range(ylo, yhi):
                                for x in range(xlo, xhi):
                                    total[y, x] += (
                                        weights[y, x] * source[y + a - radius, x + c - radius]
                                    )
        return result

    @jit
    def step_backward(stencils, frames, grad):  # pragma: no cover - compiled
        batch, outputs, history, k, _, height, width = stencils.shape
        radius = k // 2
        grad_stencils = np.zeros_like(stencils)
        grad_frames = np.zeros_like(frames)
        for b in range(batch):
            for j in range(history):
                source = frames[b, j]
                into = grad_frames[b, j]
                for a in range(k):
                    for c in range(k):
                        ylo, yhi = max(0, radius - a), min(height, height + radius - a)
                        xlo, xhi = max(0, radius - c), min(width, width + radius - c)
                        for o in range(outputs):
                            weights = stencils[b, o, j, a, c]
                            out = grad_stencils[b, o, j, a, c]
                            g = grad[b, o]
                            for y in range(ylo, yhi):
                                for x in range(xlo, xhi):
                                    out[y, x] = g[y, x] * source[y + a - radius, x + c - radius]
                            for y in range(ylo, yhi):
                                row = into[y + a - radius]
                                for x in range(xlo, xhi):
                                    row[x + c - radius] += weights[y, x] * g[y, x]
        return grad_stencils, grad_frames

    @jit
    def rollout(stencils, window, calls):  # pragma: no cover - compiled
        batch, outputs, history, k, _, height, width = stencils.shape
        radius = k // 2
        result = np.zeros((batch, calls * outputs, height, width), dtype=stencils.dtype)
        frames = np.zeros(
            (history + calls * outputs, height + 2 * radius, width + 2 * radius),
            dtype=stencils.dtype,
        )
        total = np.zeros((height, width), dtype=stencils.dtype)
        for b in range(batch):
            frames[:] = 0
            frames[:history, radius : radius + height, radius : radius + width] = window[b]
            for call in range(calls):
                first = call * outputs
                for o in range(outputs):
                    total[:] = 0
                    for j in range(history):
                        source = frames[first + j]
                        for a in range(k):
                            for c in range(k):
                                weights = stencils[b, o, j, a, c]
                                for y in range(height):
                                    for x in range(width):
                                        total[y, x] += weights[y, x] * source[y + a, x + c]
                    frames[
                        first + history + o, radius : radius + height, radius : radius + width
                    ] = total
                result[b, first : first + outputs] = frames[
                    first + history : first + history + outputs,
                    radius : radius + height,
                    radius : radius + width,
                ]
        return result

    _KERNELS.update(step=step, step_backward=step_backward, rollout=rollout)
    return _KERNELS


class _CPUStencils(torch.autograd.Function):
    """:func:`apply_stencils` on the CPU by compiled loops: no ``k * k``-fold temporaries."""

    @staticmethod
    def forward(ctx, frames: torch.Tensor, stencils: torch.Tensor) -> torch.Tensor:
        frames, stencils = frames.detach().contiguous(), stencils.detach().contiguous()
        ctx.save_for_backward(frames, stencils)
        return torch.from_numpy(_cpu_kernels()["step"](stencils.numpy(), frames.numpy()))

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        frames, stencils = ctx.saved_tensors
        kernel = _cpu_kernels()["step_backward"]
        grad_stencils, grad_frames = kernel(
            stencils.numpy(), frames.numpy(), grad.detach().contiguous().numpy()
        )
        return torch.from_numpy(grad_frames), torch.from_numpy(grad_stencils)


BASES = ("taps", "operators")


def tap_basis(stencil: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Every tap of a ``stencil x stencil`` stencil on its own (orders 0)."""
    kernels = torch.eye(stencil * stencil).reshape(-1, stencil, stencil)
    return kernels, torch.zeros(len(kernels))


def operator_basis(stencil: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Difference operators that fit a ``stencil x stencil`` stencil: the powers ``L^m`` of
    the 5-point Laplacian (``m <= r = stencil // 2``), and ``D_x L^m``, ``D_y L^m`` and
    ``D_x D_y L^m`` (central differences, reaching at most ``r`` cells), and the order of
    each (the number of derivatives: ``2m``, ``2m + 1``, ``2m + 2``)."""
    radius = stencil // 2
    delta = torch.zeros(stencil, stencil, dtype=torch.float64)
    delta[radius, radius] = 1.0
    laplacian = torch.tensor(
        [[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]], dtype=torch.float64
    )
    dx = torch.tensor([[0.0, 0.0, 0.0], [-0.5, 0.0, 0.5], [0.0, 0.0, 0.0]], dtype=torch.float64)

    def apply(kernel: torch.Tensor, operator: torch.Tensor) -> torch.Tensor:
        return F.conv2d(kernel[None, None], operator.flip(0, 1)[None, None], padding=1)[0, 0]

    powers = [delta]
    for _ in range(radius):
        powers.append(apply(powers[-1], laplacian))
    kernels = list(powers)
    orders = [2 * m for m in range(radius + 1)]
    for operator, order in ((dx, 1), (dx.T, 1), (apply(dx, dx.T), 2)):
        for m in range(radius):
            if 2 * m + order <= 2 * radius:
                kernels.append(apply(powers[m], operator))
                orders.append(2 * m + order)
    return torch.stack(kernels).float(), torch.tensor(orders, dtype=torch.float32)


class _MediumEncoder(torch.nn.Module):
    """The hypernetwork trunk of the stencil surrogates: the speed map, its hole mask and a
    constant channel (so zero padding marks the sides) through a ``5 x 5`` lifting
    convolution and residual ``3 x 3`` convolutions; a subclass adds its projection."""

    def _build_encoder(
        self, hidden_channels: int, n_layers: int, activation: str, owner: str
    ) -> None:
        if not is_int(n_layers) or n_layers < 0:
            raise ValueError(f"{owner}: n_layers={n_layers!r}, expected an integer >= 0")
        if activation not in _ACTIVATIONS:
            raise ValueError(
                f"{owner}: activation={activation!r}, expected one of {tuple(_ACTIVATIONS)}"
            )
        self.lift = torch.nn.Conv2d(3, hidden_channels, 5, padding=2)
        self.layers = torch.nn.ModuleList(
            torch.nn.Conv2d(hidden_channels, hidden_channels, 3, padding=1) for _ in range(n_layers)
        )
        self.activation = _ACTIVATIONS[activation]()

    def _init_encoder(self) -> None:
        for layer in (self.lift, *self.layers):
            torch.nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")

    def _encode(self, speed: torch.Tensor) -> torch.Tensor:
        """Features ``(batch, hidden_channels, H, W)`` of speed maps ``(batch, H, W)``."""
        inputs = torch.stack([speed, (speed == 0).to(speed.dtype), torch.ones_like(speed)], 1)
        h = self.lift(inputs.contiguous(memory_format=torch.channels_last))
        for layer in self.layers:
            h = h + layer(self.activation(h))
        return h


class WaveStencil(Model, _MediumEncoder, name="wave-stencil"):
    """Forecast a wave field with a spatially varying stencil that a CNN reads off the medium.

    A hypernetwork maps the speed map ``c`` (with its hole mask and a constant channel, so
    zero padding marks the sides) through a ``5 x 5`` lifting convolution and ``n_layers``
    residual ``3 x 3`` convolutions to ``horizon * history`` stencils of width ``stencil``
    per grid point (see ``basis``), added to those of the leapfrog extrapolation
    ``u_{n+j} = u_n + j (u_n - u_{n-1})`` (the learned part starts at zero). One step
    applies them to the last ``history`` frames (:func:`apply_stencils`); the stencils are
    computed once per :meth:`rollout` and reused for every frame.

    The step is linear in the frames, so the surrogate is exactly equivariant to the field's
    amplitude and sign and obeys superposition, as the wave equation does. The interface is
    :class:`~physnet.nn.WaveCNN`'s: :meth:`forward` rolls a clip ``(batch, 1 + n, H, W)``
    (speed, then frames) out from its first ``history`` frames, :meth:`step` is one step,
    :meth:`rollout` continues for any number of frames.

    Parameters
    ----------
    history : int, default 2
        Frames each step reads (at least 2).
    horizon : int, default 1
        Frames each step predicts.
    stencil : int, default 9
        Odd stencil width in grid cells; it should cover the distance a wave travels
        between frames (``c_max * frame_interval / h``) plus a margin.
    hidden_channels : int, default 32
    n_layers : int, default 4
        Residual layers of the hypernetwork.
    activation : {"gelu", "relu", "silu", "tanh"}, default "gelu"
    input_noise : float, default 0.0
        In training mode, :meth:`forward` adds Gaussian noise of this standard deviation,
        relative to each window's root-mean-square, to the true frames each rollout segment
        starts from (see :class:`~physnet.nn.WaveCNN`).
    unroll : int, optional
        In training mode, :meth:`forward` rolls out segments of at most ``unroll`` frames,
        each restarted from the true frames before it (``1`` is teacher forcing); ``None``
        rolls out the whole clip, as in evaluation mode.
    unroll_warmup : int, default 0
        A curriculum on the rollout length: over the first ``unroll_warmup`` training calls
        of :meth:`forward` the segment length grows linearly from 1 to ``unroll`` (the count
        is a buffer of the model, so a resumed run continues the curriculum).
    basis : {"taps", "operators"}, default "taps"
        What the hypernetwork writes per grid point and history frame: every tap of the
        stencil (``stencil**2`` numbers), or the coefficients of the difference operators
        of :func:`operator_basis` (powers of the Laplacian and their x, y and xy
        derivatives; 17 numbers for ``stencil=9``), which fix an isotropic, smooth
        structure and train faster (one-step nRMSE 0.12 against 0.19 for the taps after
        40 identical steps in a trial; see the ``wave-stencil`` card).
    courant : float, default 2.56
        With ``basis="operators"``: the largest ``c * frame_interval / h`` of the data.
        The coefficient of an operator of order ``p`` is the network's output times
        ``courant**p / p!``, the size of its term in the Taylor series of the exact
        propagator, so the outputs are of order one.

    Examples
    --------
    >>> import torch
    >>> from physnet.nn import WaveStencil
    >>> model = WaveStencil(history=2, stencil=5, hidden_channels=8, n_layers=1)
    >>> clip = torch.randn(2, 1 + 6, 16, 16)          # speed + 6 frames
    >>> model(clip).shape                              # 2 given + 4 predicted frames
    torch.Size([2, 6, 16, 16])
    >>> speed, frames = clip[:, 0], clip[:, 1:3]
    >>> torch.allclose(model.rollout(speed, -3 * frames, 4),
    ...                -3 * model.rollout(speed, frames, 4), atol=1e-5)   # linear in u
    True
    """

    def __init__(
        self,
        history: int = 2,
        horizon: int = 1,
        stencil: int = 9,
        hidden_channels: int = 32,
        n_layers: int = 4,
        activation: str = "gelu",
        input_noise: float = 0.0,
        unroll: int | None = None,
        unroll_warmup: int = 0,
        basis: str = "taps",
        courant: float = 2.56,
    ) -> None:
        super().__init__()
        if basis not in BASES:
            raise ValueError(f"WaveStencil: basis={basis!r}, expected one of {BASES}")
        if not (isinstance(courant, (int, float)) and courant > 0):
            raise ValueError(f"WaveStencil: courant={courant!r}, expected a positive number")
        for key, value, minimum in (
            ("unroll", 1 if unroll is None else unroll, 1),
            ("unroll_warmup", unroll_warmup, 0),
            ("history", history, 2),
            ("horizon", horizon, 1),
            ("hidden_channels", hidden_channels, 1),
            ("n_layers", n_layers, 0),
        ):
            if not is_int(value) or value < minimum:
                raise ValueError(f"WaveStencil: {key}={value!r}, expected an integer >= {minimum}")
        if not is_int(stencil) or stencil < 1 or stencil % 2 == 0:
            raise ValueError(f"WaveStencil: stencil={stencil!r}, expected a positive odd int")
        if activation not in _ACTIVATIONS:
            raise ValueError(
                f"WaveStencil: activation={activation!r}, expected one of {tuple(_ACTIVATIONS)}"
            )
        if not (isinstance(input_noise, (int, float)) and 0 <= input_noise < 1):
            raise ValueError(
                f"WaveStencil: input_noise={input_noise!r}, expected a number in [0, 1)"
            )
        self.history, self.horizon, self.stencil = history, horizon, stencil
        self.input_noise = float(input_noise)
        self.unroll, self.unroll_warmup = unroll, unroll_warmup
        self.register_buffer("training_calls", torch.zeros((), dtype=torch.long))
        self._build_encoder(hidden_channels, n_layers, activation, "WaveStencil")
        self.basis, self.courant = basis, float(courant)
        kernels, orders = operator_basis(stencil) if basis == "operators" else tap_basis(stencil)
        # The hypernetwork's outputs are scaled by courant^order / order!, the size of each
        # operator's term in the Taylor series of the propagator.
        scales = torch.tensor([courant**o / math.factorial(int(o)) for o in orders.tolist()])
        self.register_buffer("kernels", kernels, persistent=False)
        self.register_buffer("scales", scales.float(), persistent=False)
        outputs = horizon * history * len(kernels)
        self.projection = torch.nn.Conv2d(hidden_channels, outputs, 1)
        self._init_encoder()
        torch.nn.init.zeros_(self.projection.weight)
        torch.nn.init.zeros_(self.projection.bias)
        base = torch.zeros(horizon, history, stencil, stencil)
        centre = stencil // 2
        for j in range(1, horizon + 1):  # u_n + j (u_n - u_{n-1}); frames run oldest first
            base[j - 1, -1, centre, centre] = 1.0 + j
            base[j - 1, -2, centre, centre] = -float(j)
        self.register_buffer("base", base, persistent=False)

    # The shape checks of the other wave surrogates (messages name this class).
    _check = _WaveSurrogate._check

    def stencils(self, speed: torch.Tensor) -> torch.Tensor:
        """The stencils ``(batch, horizon, history, stencil, stencil, H, W)`` of speed maps
        ``(batch, H, W)`` (frames oldest first)."""
        learned = self.projection(self.activation(self._encode(speed)))
        batch, _, height, width = learned.shape
        k, n = self.stencil, len(self.kernels)
        coefficients = learned.reshape(batch, self.horizon, self.history, n, height, width)
        if self.basis == "operators":
            coefficients = coefficients * self.scales.view(1, 1, 1, n, 1, 1)
            learned = torch.einsum("bojnyx,nac->bojacyx", coefficients, self.kernels)
        else:
            learned = coefficients.reshape(batch, self.horizon, self.history, k, k, height, width)
        # Contiguous once here, not in each of the steps that read them.
        return (learned + self.base[None, ..., None, None]).contiguous()

    def step(
        self, speed: torch.Tensor, frames: torch.Tensor, stencils: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The next ``horizon`` frames ``(batch, horizon, H, W)`` after the last ``history``
        of ``frames`` ``(batch, n >= history, H, W)``; ``stencils`` (from :meth:`stencils`)
        saves recomputing them for the same speed maps."""
        self._check(speed, frames, "step")
        if stencils is None:
            stencils = self.stencils(speed)
        return apply_stencils(frames[:, -self.history :], stencils)

    def rollout(self, speed: torch.Tensor, frames: torch.Tensor, steps: int) -> torch.Tensor:
        """``steps`` frames ``(batch, steps, H, W)`` following ``frames``, each step fed the
        surrogate's own predictions."""
        self._check(speed, frames, "rollout")
        if not is_int(steps) or steps < 0:
            raise ValueError(f"WaveStencil.rollout: steps={steps!r}, expected an integer >= 0")
        return self._roll(self.stencils(speed), frames[:, -self.history :], steps)

    def _roll(self, stencils: torch.Tensor, window: torch.Tensor, steps: int) -> torch.Tensor:
        if steps == 0:
            return window.new_zeros(window.shape[0], 0, *window.shape[2:])
        calls = -(-steps // self.horizon)
        if self._compiled_rollout(stencils):
            kernel = _cpu_kernels()["rollout"]
            result = kernel(stencils.contiguous().numpy(), window.contiguous().numpy(), calls)
            return torch.from_numpy(result[:, :steps])
        predicted: list[torch.Tensor] = []
        for _ in range(calls):
            following = apply_stencils(window, stencils)
            predicted.append(following)
            window = torch.cat([window, following], dim=1)[:, -self.history :]
        return torch.cat(predicted, dim=1)[:, :steps]

    def segment_length(self) -> int | None:
        """The training rollout segment length at the current point of the curriculum."""
        if self.unroll is None or self.unroll_warmup == 0:
            return self.unroll
        grown = 1 + (self.unroll - 1) * int(self.training_calls) // self.unroll_warmup
        return min(self.unroll, grown)

    @staticmethod
    def _compiled_rollout(stencils: torch.Tensor) -> bool:
        """Whether :meth:`rollout` runs the compiled CPU kernel: float32 CPU tensors that
        need no gradient, outside ``torch.compile``."""
        return (
            stencils.device.type == "cpu"
            and stencils.dtype == torch.float32
            and not (torch.is_grad_enabled() and stencils.requires_grad)
            and not torch.compiler.is_compiling()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Roll out a clip: ``(batch, 1 + n, H, W)`` (speed, then ``n >= history`` frames)
        to ``(batch, n, H, W)``: the first ``history`` frames as given, the rest predicted."""
        if not torch.compiler.is_compiling() and (x.ndim != 4 or x.shape[1] < 1 + self.history):
            raise ValueError(
                f"WaveStencil.forward: expected a clip of shape (batch, 1 + n_frames, H, W) "
                f"with n_frames >= history={self.history}, got {tuple(x.shape)}"
            )
        speed, frames = x[:, 0], x[:, 1:]
        history, n_frames = self.history, frames.shape[1]
        given = frames[:, :history]
        segment = n_frames - history
        if self.training:
            segment = min(segment, self.segment_length() or segment)
            self.training_calls += 1
        stencils = self.stencils(speed)
        outputs = [given]
        for start in range(history, n_frames, max(segment, 1)):
            window = frames[:, start - history : start]
            if self.training and self.input_noise > 0:
                scale = window.square().mean(dim=(1, 2, 3), keepdim=True).sqrt()
                window = window + self.input_noise * scale * torch.randn_like(window)
            outputs.append(self._roll(stencils, window, min(segment, n_frames - start)))
        return torch.cat(outputs, dim=1)
