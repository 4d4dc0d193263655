"""``WaveCNN``: an autoregressive CNN surrogate of the 2-D wave equation, dense or with
a-priori compressed (CP) convolutions."""

from __future__ import annotations

import torch

from physnet.nn._checks import is_int
from physnet.nn._registry import Model
from physnet.nn.convnet import _ACTIVATIONS
from physnet.nn.cpconv import IMPLEMENTATIONS, compress_convs

__all__ = ["WaveCNN"]

CONVOLUTIONS = ("dense", "cp")


class WaveCNN(Model, name="wave-cnn"):
    """Forecast a wave field from its previous frames and the wave-speed map.

    One step maps the speed map ``c`` and the last ``history`` frames
    ``u_{n-history+1}, ..., u_n`` (on a regular grid) to the next ``horizon`` frames. The
    network predicts a correction to the leapfrog extrapolation,

    .. math::

        u_{n+j} = u_n + j\\,(u_n - u_{n-1}) + s\\, \\mathrm{CNN}(c, u_{n-h+1:n} / s),
        \\qquad j = 1, \\dots, \\mathrm{horizon},

    with ``s`` the root-mean-square of the input frames of each sample: the wave equation
    is linear, so the surrogate is exactly equivariant to the field's amplitude. The CNN is
    a lifting ``kernel_size`` convolution, ``n_layers`` residual convolutions and a
    pointwise projection. With ``conv="cp"`` every spatial convolution is a rank-``rank``
    :class:`~physnet.nn.CPConv2d` (compressed *before* training); the 1x1 projection stays
    dense.

    :meth:`forward` rolls the surrogate out: given a clip ``(batch, 1 + n_frames, H, W)``
    (channel 0 the speed map, then the frames), it keeps the first ``history`` frames and
    predicts every later one from its own previous predictions, returning
    ``(batch, n_frames, H, W)``. Trained this way on short clips (the
    :class:`~physnet.training.Trainer` with inputs ``["speed", "frames"]`` and target
    ``["frames"]``), the loss is the error of a short autoregressive rollout. :meth:`step`
    is one step; :meth:`rollout` continues for any number of frames.

    Parameters
    ----------
    history : int, default 4
        Input frames per step (at least 2: the extrapolation needs two).
    horizon : int, default 1
        Frames predicted per step.
    hidden_channels : int, default 32
    n_layers : int, default 4
        Residual layers.
    kernel_size : int, default 5
        Odd width of the spatial convolutions.
    conv : {"dense", "cp"}, default "dense"
    rank : int, default 16
        CP rank of every spatial convolution when ``conv="cp"``.
    implementation : {"factorized", "reconstructed"}, default "factorized"
        How CP convolutions run (see :class:`~physnet.nn.CPConv2d`).
    activation : {"gelu", "relu", "silu", "tanh"}, default "gelu"
    input_noise : float, default 0.0
        In training mode, :meth:`forward` adds Gaussian noise of this standard deviation,
        relative to each clip's root-mean-square, to the given frames before rolling out
        (the returned given frames stay clean): the network learns to correct perturbed
        states, which keeps long rollouts stable (the noise trick of Sanchez-Gonzalez et al.
        2020, "Learning to simulate complex physics with graph networks").

    Examples
    --------
    >>> import torch
    >>> from physnet.nn import WaveCNN
    >>> model = WaveCNN(history=3, hidden_channels=8, n_layers=2, conv="cp", rank=4)
    >>> clip = torch.randn(2, 1 + 6, 16, 16)         # speed + 6 frames
    >>> model(clip).shape                             # 3 given + 3 predicted frames
    torch.Size([2, 6, 16, 16])
    >>> model.rollout(clip[:, 0], clip[:, 1:4], steps=10).shape
    torch.Size([2, 10, 16, 16])
    """

    def __init__(
        self,
        history: int = 4,
        horizon: int = 1,
        hidden_channels: int = 32,
        n_layers: int = 4,
        kernel_size: int = 5,
        conv: str = "dense",
        rank: int = 16,
        implementation: str = "factorized",
        activation: str = "gelu",
        input_noise: float = 0.0,
    ) -> None:
        super().__init__()
        for key, value, minimum in (
            ("history", history, 2),
            ("horizon", horizon, 1),
            ("hidden_channels", hidden_channels, 1),
            ("n_layers", n_layers, 0),
            ("rank", rank, 1),
        ):
            if not is_int(value) or value < minimum:
                raise ValueError(f"WaveCNN: {key}={value!r}, expected an integer >= {minimum}")
        if not is_int(kernel_size) or kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"WaveCNN: kernel_size={kernel_size!r}, expected a positive odd int")
        if conv not in CONVOLUTIONS:
            raise ValueError(f"WaveCNN: conv={conv!r}, expected one of {CONVOLUTIONS}")
        if implementation not in IMPLEMENTATIONS:
            raise ValueError(
                f"WaveCNN: implementation={implementation!r}, expected one of {IMPLEMENTATIONS}"
            )
        if activation not in _ACTIVATIONS:
            raise ValueError(
                f"WaveCNN: activation={activation!r}, expected one of {tuple(_ACTIVATIONS)}"
            )
        if not (isinstance(input_noise, (int, float)) and 0 <= input_noise < 1):
            raise ValueError(f"WaveCNN: input_noise={input_noise!r}, expected a number in [0, 1)")
        self.input_noise = float(input_noise)
        self.history, self.horizon = history, horizon
        padding = kernel_size // 2
        self.lift = torch.nn.Conv2d(1 + history, hidden_channels, kernel_size, padding=padding)
        self.layers = torch.nn.ModuleList(
            torch.nn.Conv2d(hidden_channels, hidden_channels, kernel_size, padding=padding)
            for _ in range(n_layers)
        )
        self.activation = _ACTIVATIONS[activation]()
        self.projection = torch.nn.Conv2d(hidden_channels, horizon, 1)
        for layer in (self.lift, *self.layers):
            torch.nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
        # Start from the leapfrog extrapolation: the correction is zero at initialisation.
        torch.nn.init.zeros_(self.projection.weight)
        torch.nn.init.zeros_(self.projection.bias)
        if conv == "cp":
            compress_convs(self, rank, implementation=implementation)

    def _check(self, speed: torch.Tensor, frames: torch.Tensor, what: str) -> None:
        if torch.compiler.is_compiling():
            return
        if speed.ndim != 3 or frames.ndim != 4 or frames.shape[0] != speed.shape[0]:
            raise ValueError(
                f"WaveCNN.{what}: expected speed (batch, H, W) and frames (batch, n, H, W), got "
                f"{tuple(speed.shape)} and {tuple(frames.shape)}"
            )
        if frames.shape[1] < self.history or frames.shape[2:] != speed.shape[1:]:
            raise ValueError(
                f"WaveCNN.{what}: frames of shape {tuple(frames.shape)}, expected at least "
                f"history={self.history} frames on the speed map's grid {tuple(speed.shape[1:])}"
            )

    def step(self, speed: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
        """The next ``horizon`` frames ``(batch, horizon, H, W)`` after the last
        ``history`` of ``frames`` ``(batch, n >= history, H, W)``, for speed maps
        ``(batch, H, W)``."""
        self._check(speed, frames, "step")
        frames = frames[:, -self.history :]
        # Clamped only so that an all-zero input stays zero (not NaN).
        scale = frames.square().mean(dim=(1, 2, 3), keepdim=True).sqrt().clamp_min(1e-30)
        # Channels-last: the fast layout of CPU convolutions, dense and CP alike.
        inputs = torch.cat([speed.unsqueeze(1), frames / scale], dim=1)
        h = self.lift(inputs.contiguous(memory_format=torch.channels_last))
        for layer in self.layers:
            h = h + layer(self.activation(h))
        correction = self.projection(self.activation(h))
        last, velocity = frames[:, -1:], frames[:, -1:] - frames[:, -2:-1]
        steps = torch.arange(1, self.horizon + 1, device=frames.device, dtype=frames.dtype)
        return last + steps.view(1, -1, 1, 1) * velocity + scale * correction

    def rollout(self, speed: torch.Tensor, frames: torch.Tensor, steps: int) -> torch.Tensor:
        """``steps`` frames ``(batch, steps, H, W)`` following ``frames``, each step fed
        the surrogate's own predictions."""
        self._check(speed, frames, "rollout")
        if not is_int(steps) or steps < 0:
            raise ValueError(f"WaveCNN.rollout: steps={steps!r}, expected an integer >= 0")
        window = frames[:, -self.history :]
        predicted: list[torch.Tensor] = []
        count = 0
        while count < steps:
            following = self.step(speed, window)
            predicted.append(following)
            window = torch.cat([window, following], dim=1)[:, -self.history :]
            count += self.horizon
        if not predicted:
            return frames.new_zeros(frames.shape[0], 0, *frames.shape[2:])
        return torch.cat(predicted, dim=1)[:, :steps]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Roll out a clip: ``(batch, 1 + n, H, W)`` (speed, then ``n >= history`` frames)
        to ``(batch, n, H, W)``: the first ``history`` frames as given, the rest predicted."""
        if not torch.compiler.is_compiling() and (x.ndim != 4 or x.shape[1] < 1 + self.history):
            raise ValueError(
                f"WaveCNN.forward: expected a clip of shape (batch, 1 + n_frames, H, W) with "
                f"n_frames >= history={self.history}, got {tuple(x.shape)}"
            )
        speed, frames = x[:, 0], x[:, 1:]
        given = frames[:, : self.history]
        start = given
        if self.training and self.input_noise > 0:
            scale = given.square().mean(dim=(1, 2, 3), keepdim=True).sqrt()
            start = given + self.input_noise * scale * torch.randn_like(given)
        predicted = self.rollout(speed, start, frames.shape[1] - self.history)
        return torch.cat([given, predicted], dim=1)
