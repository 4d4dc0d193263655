"""Autoregressive CNN surrogates of the 2-D wave equation, dense or with a-priori
compressed convolutions: :class:`WaveCNN` (frames as channels, 2-D convolutions) and
:class:`WaveCNN3d` (frames along a third axis, space-time 3-D convolutions).

Both map the wave-speed map and the last ``history`` frames to the next ``horizon`` frames
as a learned correction to the leapfrog extrapolation, scaled by the input's amplitude
(the wave equation is linear, so the surrogates are exactly equivariant to it), and share
:meth:`~WaveCNN.step`, :meth:`~WaveCNN.rollout` and :meth:`~WaveCNN.forward` (a rollout of
a clip ``(batch, 1 + n_frames, H, W)``, channel 0 the speed map).
"""

from __future__ import annotations

import torch

from physnet.nn._checks import is_int
from physnet.nn._registry import Model
from physnet.nn.convnet import _ACTIVATIONS
from physnet.nn.cpconv import IMPLEMENTATIONS, CPConv3d, SeparableConv2d, compress_convs

__all__ = ["WaveCNN", "WaveCNN3d"]

CONVOLUTIONS = ("dense", "cp", "separable")
CONVOLUTIONS_3D = ("dense", "cp")


class _WaveSurrogate(Model):
    """The amplitude scaling, leapfrog residual, rollout and clip forward shared by the wave
    surrogates; a subclass defines :meth:`_correction` (and registers a name)."""

    history: int
    horizon: int
    input_noise: float

    def _setup(
        self,
        *,
        history: int,
        horizon: int,
        integers: dict[str, tuple[object, int]],
        odd: dict[str, object],
        choices: dict[str, tuple[object, tuple[str, ...]]],
        input_noise: float,
    ) -> None:
        """Check the constructor's arguments (naming the class and the argument in each
        ValueError) and keep ``history``, ``horizon`` and ``input_noise``."""
        owner = type(self).__name__
        integers = {"history": (history, 2), "horizon": (horizon, 1), **integers}
        for key, (value, minimum) in integers.items():
            if not is_int(value) or value < minimum:
                raise ValueError(f"{owner}: {key}={value!r}, expected an integer >= {minimum}")
        for key, value in odd.items():
            if not is_int(value) or value < 1 or value % 2 == 0:
                raise ValueError(f"{owner}: {key}={value!r}, expected a positive odd int")
        for key, (value, allowed) in choices.items():
            if value not in allowed:
                raise ValueError(f"{owner}: {key}={value!r}, expected one of {allowed}")
        if not (
            isinstance(input_noise, (int, float))
            and not isinstance(input_noise, bool)
            and 0 <= input_noise < 1
        ):
            raise ValueError(f"{owner}: input_noise={input_noise!r}, expected a number in [0, 1)")
        self.history, self.horizon, self.input_noise = history, horizon, float(input_noise)

    def _correction(self, speed: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
        """The network's output ``(batch, horizon, H, W)`` for speed maps ``(batch, H, W)``
        and the last ``history`` frames ``(batch, history, H, W)`` at unit amplitude."""
        raise NotImplementedError

    def _check(self, speed: torch.Tensor, frames: torch.Tensor, what: str) -> None:
        if torch.compiler.is_compiling():
            return
        owner = type(self).__name__
        if speed.ndim != 3 or frames.ndim != 4 or frames.shape[0] != speed.shape[0]:
            raise ValueError(
                f"{owner}.{what}: expected speed (batch, H, W) and frames (batch, n, H, W), got "
                f"{tuple(speed.shape)} and {tuple(frames.shape)}"
            )
        if frames.shape[1] < self.history or frames.shape[2:] != speed.shape[1:]:
            raise ValueError(
                f"{owner}.{what}: frames of shape {tuple(frames.shape)}, expected at least "
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
        correction = self._correction(speed, frames / scale)
        last, velocity = frames[:, -1:], frames[:, -1:] - frames[:, -2:-1]
        steps = torch.arange(1, self.horizon + 1, device=frames.device, dtype=frames.dtype)
        return last + steps.view(1, -1, 1, 1) * velocity + scale * correction

    def rollout(self, speed: torch.Tensor, frames: torch.Tensor, steps: int) -> torch.Tensor:
        """``steps`` frames ``(batch, steps, H, W)`` following ``frames``, each step fed
        the surrogate's own predictions."""
        self._check(speed, frames, "rollout")
        if not is_int(steps) or steps < 0:
            raise ValueError(
                f"{type(self).__name__}.rollout: steps={steps!r}, expected an integer >= 0"
            )
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
                f"{type(self).__name__}.forward: expected a clip of shape (batch, 1 + n_frames, "
                f"H, W) with n_frames >= history={self.history}, got {tuple(x.shape)}"
            )
        speed, frames = x[:, 0], x[:, 1:]
        given = frames[:, : self.history]
        start = given
        if self.training and self.input_noise > 0:
            scale = given.square().mean(dim=(1, 2, 3), keepdim=True).sqrt()
            start = given + self.input_noise * scale * torch.randn_like(given)
        predicted = self.rollout(speed, start, frames.shape[1] - self.history)
        return torch.cat([given, predicted], dim=1)


class WaveCNN(_WaveSurrogate, name="wave-cnn"):
    """Forecast a wave field from its previous frames and the wave-speed map.

    One step maps the speed map ``c`` and the last ``history`` frames
    ``u_{n-history+1}, ..., u_n`` (on a regular grid) to the next ``horizon`` frames. The
    network predicts a correction to the leapfrog extrapolation,

    .. math::

        u_{n+j} = u_n + j\\,(u_n - u_{n-1}) + s\\, \\mathrm{CNN}(c, u_{n-h+1:n} / s),
        \\qquad j = 1, \\dots, \\mathrm{horizon},

    with ``s`` the root-mean-square of the input frames of each sample: the wave equation
    is linear, so the surrogate is exactly equivariant to the field's amplitude. The CNN is
    a lifting ``kernel_size`` convolution (the speed map and the frames as ``1 + history``
    channels), ``n_layers`` residual convolutions and a pointwise projection. With
    ``conv="cp"`` every spatial convolution is a rank-``rank`` :class:`~physnet.nn.CPConv2d`
    and with ``conv="separable"`` a :class:`~physnet.nn.SeparableConv2d` whose every kernel
    has rank ``rank`` (both compressed *before* training); the 1x1 projection stays dense.

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
    conv : {"dense", "cp", "separable"}, default "dense"
    rank : int, default 16
        CP rank of every spatial convolution when ``conv="cp"``; rank of every kernel when
        ``conv="separable"`` (which saves parameters only below ``kernel_size / 2``).
    implementation : {"auto", "factorized", "reconstructed"}, default "auto"
        How compressed convolutions run (see :class:`~physnet.nn.CPConv2d`).
    activation : {"gelu", "relu", "silu", "tanh"}, default "gelu"
    input_noise : float, default 0.0
        In training mode, :meth:`forward` adds Gaussian noise of this standard deviation,
        relative to each clip's root-mean-square, to the given frames before rolling out
        (the returned given frames stay clean): the network learns to correct perturbed
        states, which keeps long rollouts stable (the noise trick of Sanchez-Gonzalez et al.
        2020, "Learning to simulate complex physics with graph networks").

    See Also
    --------
    WaveCNN3d : the same surrogate with the frames along a third (time) axis.

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
        implementation: str = "auto",
        activation: str = "gelu",
        input_noise: float = 0.0,
    ) -> None:
        super().__init__()
        self._setup(
            history=history,
            horizon=horizon,
            integers={
                "hidden_channels": (hidden_channels, 1),
                "n_layers": (n_layers, 0),
                "rank": (rank, 1),
            },
            odd={"kernel_size": kernel_size},
            choices={
                "conv": (conv, CONVOLUTIONS),
                "implementation": (implementation, IMPLEMENTATIONS),
                "activation": (activation, tuple(_ACTIVATIONS)),
            },
            input_noise=input_noise,
        )
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
        elif conv == "separable":
            options = {"padding": padding, "implementation": implementation}
            self.lift = SeparableConv2d(1 + history, hidden_channels, kernel_size, rank, **options)
            self.layers = torch.nn.ModuleList(
                SeparableConv2d(hidden_channels, hidden_channels, kernel_size, rank, **options)
                for _ in range(n_layers)
            )

    def _correction(self, speed: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
        # Channels-last: the fast layout of CPU convolutions, dense and CP alike.
        inputs = torch.cat([speed.unsqueeze(1), frames], dim=1)
        h = self.lift(inputs.contiguous(memory_format=torch.channels_last))
        for layer in self.layers:
            h = h + layer(self.activation(h))
        return self.projection(self.activation(h))


class WaveCNN3d(_WaveSurrogate, name="wave-cnn3d"):
    """:class:`WaveCNN` with space-time convolutions: the frame history as a third axis.

    The same surrogate (leapfrog extrapolation plus an amplitude-scaled correction, the
    same :meth:`step`, :meth:`rollout`, :meth:`forward` and clip format), but the network
    sees a 3-D volume: the last ``history`` frames at unit root-mean-square stacked along
    time, with the speed map repeated along time as a second channel, an input
    ``(batch, 2, history, H, W)``. A lifting convolution, ``n_layers`` residual
    convolutions, all with kernels ``(time_kernel_size, kernel_size, kernel_size)`` over
    ``(time, y, x)`` ("same" padding), then a convolution whose time kernel spans the whole
    history (``(history, 1, 1)``, no padding) collapses time into the ``horizon`` output
    frames. With ``conv="cp"`` the space-time convolutions are rank-``rank``
    :class:`~physnet.nn.CPConv3d` (a 1-D filter along each of t, y and x); the collapsing
    convolution stays dense (``hidden_channels history horizon`` weights).

    Parameters
    ----------
    history : int, default 4
        Input frames per step (at least 2), the length of the time axis.
    horizon : int, default 1
        Frames predicted per step.
    hidden_channels : int, default 32
    n_layers : int, default 4
        Residual layers.
    kernel_size : int, default 3
        Odd spatial width of the convolutions.
    time_kernel_size : int, default 3
        Odd temporal width of the convolutions.
    conv : {"dense", "cp"}, default "dense"
    rank : int, default 16
        CP rank of every space-time convolution when ``conv="cp"``.
    implementation : {"auto", "factorized", "reconstructed"}, default "auto"
        How CP convolutions run (see :class:`~physnet.nn.CPConv2d`).
    activation : {"gelu", "relu", "silu", "tanh"}, default "gelu"
    input_noise : float, default 0.0
        As in :class:`WaveCNN`.

    Notes
    -----
    Parameters at ``hidden_channels=16, history=4`` and the defaults: 28,657 dense and
    7,785 with ``conv="cp", rank=40``, against 27,697 and 8,057 for
    ``WaveCNN(hidden_channels=16, n_layers=4, kernel_size=5)``: ``3 x 3 x 3`` space-time
    kernels cost about what ``5 x 5`` spatial kernels over ``1 + history`` channels do.

    Examples
    --------
    >>> import torch
    >>> from physnet.nn import WaveCNN3d
    >>> model = WaveCNN3d(history=3, hidden_channels=8, n_layers=2, conv="cp", rank=4)
    >>> clip = torch.randn(2, 1 + 6, 16, 16)         # speed + 6 frames
    >>> model(clip).shape                             # 3 given + 3 predicted frames
    torch.Size([2, 6, 16, 16])
    >>> model.rollout(clip[:, 0], clip[:, 1:4], steps=5).shape
    torch.Size([2, 5, 16, 16])
    """

    def __init__(
        self,
        history: int = 4,
        horizon: int = 1,
        hidden_channels: int = 32,
        n_layers: int = 4,
        kernel_size: int = 3,
        time_kernel_size: int = 3,
        conv: str = "dense",
        rank: int = 16,
        implementation: str = "auto",
        activation: str = "gelu",
        input_noise: float = 0.0,
    ) -> None:
        super().__init__()
        self._setup(
            history=history,
            horizon=horizon,
            integers={
                "hidden_channels": (hidden_channels, 1),
                "n_layers": (n_layers, 0),
                "rank": (rank, 1),
            },
            odd={"kernel_size": kernel_size, "time_kernel_size": time_kernel_size},
            choices={
                "conv": (conv, CONVOLUTIONS_3D),
                "implementation": (implementation, IMPLEMENTATIONS),
                "activation": (activation, tuple(_ACTIVATIONS)),
            },
            input_noise=input_noise,
        )
        kernel = (time_kernel_size, kernel_size, kernel_size)
        padding = tuple(k // 2 for k in kernel)

        def space_time(in_channels: int) -> torch.nn.Module:
            if conv == "cp":
                return CPConv3d(
                    in_channels,
                    hidden_channels,
                    kernel,
                    rank,
                    padding=padding,
                    implementation=implementation,
                )
            layer = torch.nn.Conv3d(in_channels, hidden_channels, kernel, padding=padding)
            torch.nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
            return layer

        self.lift = space_time(2)
        self.layers = torch.nn.ModuleList(space_time(hidden_channels) for _ in range(n_layers))
        self.activation = _ACTIVATIONS[activation]()
        self.projection = torch.nn.Conv3d(hidden_channels, horizon, (history, 1, 1))
        # Start from the leapfrog extrapolation: the correction is zero at initialisation.
        torch.nn.init.zeros_(self.projection.weight)
        torch.nn.init.zeros_(self.projection.bias)

    def _correction(self, speed: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
        inputs = torch.stack([speed.unsqueeze(1).expand_as(frames), frames], dim=1)
        # Channels-last: several times faster for CPU 3-D convolutions, dense and CP alike.
        h = self.lift(inputs.contiguous(memory_format=torch.channels_last_3d))
        for layer in self.layers:
            h = h + layer(self.activation(h))
        return self.projection(self.activation(h)).squeeze(2)
