"""``ConvNet``: a residual convolutional baseline for fields on 1D, 2D and 3D grids."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from physnet.nn._checks import is_int, per_channel
from physnet.nn._registry import Model

__all__ = ["ConvNet"]

_ACTIVATIONS = {
    "gelu": torch.nn.GELU,
    "relu": torch.nn.ReLU,
    "silu": torch.nn.SiLU,
    "tanh": torch.nn.Tanh,
}
_PADDING_MODES = ("zeros", "reflect", "replicate", "circular")
_CONVOLUTIONS = {1: torch.nn.Conv1d, 2: torch.nn.Conv2d, 3: torch.nn.Conv3d}


class ConvNet(Model, name="conv-net"):
    """A residual stack of convolutions mapping fields to fields on the same grid.

    A lifting convolution maps the input channels to ``hidden_channels``, ``n_layers``
    residual layers update the hidden state, and a pointwise projection maps it to the
    output channels:

    .. math::

        h_0 = W_{\\mathrm{lift}} * x, \\qquad
        h_{k+1} = h_k + W_k * \\sigma(h_k), \\qquad
        y = W_{\\mathrm{proj}}\\, \\sigma(h_n),

    where :math:`*` is a ``kernel_size``-wide convolution padded to keep the grid size
    and :math:`\\sigma` the activation. The receptive field is
    ``(n_layers + 1) * (kernel_size - 1) + 1`` points per axis. The network is
    translation-equivariant and accepts any grid size, so it is a baseline for
    operator-learning tasks and a small default for tests.

    Parameters
    ----------
    in_channels, out_channels : int, default 1
        Channels of the input and output fields.
    hidden_channels : int, default 32
        Width of the hidden state.
    n_layers : int, default 4
        Number of residual layers (0 gives lift + projection only).
    ndim : {1, 2, 3}, default 2
        Spatial dimensions: inputs are ``(batch, in_channels, *grid)`` with ``ndim`` grid axes.
    kernel_size : int, default 3
        Odd width of the convolution kernels.
    activation : {"gelu", "relu", "silu", "tanh"}, default "gelu"
    padding_mode : {"zeros", "reflect", "replicate", "circular"}, default "zeros"
        How the convolutions see beyond the grid; ``"circular"`` for periodic domains.
    input_shift, input_scale : float or list of float, default 0 and 1
        The input is normalised as ``(x - input_shift) / input_scale`` (one value, or one
        per input channel) inside the network, so checkpoints read raw data.
    output_scale : float or list of float, default 1
        The projection's output is multiplied by it (one value, or one per output
        channel), so targets far from unit scale need no rescaling of the data.

    Raises
    ------
    ValueError
        For an invalid argument (naming it and the accepted values), or, in ``forward``,
        an input whose shape does not fit (naming the expected shape).

    Examples
    --------
    >>> import torch
    >>> from physnet.nn import ConvNet
    >>> model = ConvNet(in_channels=2, out_channels=1, hidden_channels=8, ndim=3)
    >>> model(torch.zeros(4, 2, 8, 8, 8)).shape
    torch.Size([4, 1, 8, 8, 8])
    >>> model.name
    'conv-net'
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 1,
        hidden_channels: int = 32,
        n_layers: int = 4,
        ndim: int = 2,
        kernel_size: int = 3,
        activation: str = "gelu",
        padding_mode: str = "zeros",
        input_shift: float | Sequence[float] = 0.0,
        input_scale: float | Sequence[float] = 1.0,
        output_scale: float | Sequence[float] = 1.0,
    ) -> None:
        super().__init__()
        for key, value in (
            ("in_channels", in_channels),
            ("out_channels", out_channels),
            ("hidden_channels", hidden_channels),
        ):
            if not is_int(value) or value < 1:
                raise ValueError(f"ConvNet: {key} must be a positive integer, got {value!r}")
        if not is_int(n_layers) or n_layers < 0:
            raise ValueError(f"ConvNet: n_layers must be a non-negative integer, got {n_layers!r}")
        if ndim not in _CONVOLUTIONS:
            raise ValueError(f"ConvNet: ndim must be 1, 2 or 3, got {ndim!r}")
        if not is_int(kernel_size) or kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(
                f"ConvNet: kernel_size must be a positive odd integer (so the output keeps "
                f"the grid size), got {kernel_size!r}"
            )
        if activation not in _ACTIVATIONS:
            raise ValueError(
                f"ConvNet: activation {activation!r} is unknown; "
                f"expected one of {', '.join(map(repr, _ACTIVATIONS))}"
            )
        if padding_mode not in _PADDING_MODES:
            raise ValueError(
                f"ConvNet: padding_mode {padding_mode!r} is unknown; "
                f"expected one of {', '.join(map(repr, _PADDING_MODES))}"
            )
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.ndim = ndim
        for key, value, channels, positive in (
            ("input_shift", input_shift, in_channels, False),
            ("input_scale", input_scale, in_channels, True),
            ("output_scale", output_scale, out_channels, True),
        ):
            self.register_buffer(
                key,
                per_channel("ConvNet", key, value, channels, ndim, positive=positive),
                persistent=False,
            )
        convolution = _CONVOLUTIONS[ndim]

        def spatial(channels_in: int, channels_out: int) -> torch.nn.Module:
            return convolution(
                channels_in,
                channels_out,
                kernel_size,
                padding=kernel_size // 2,
                padding_mode=padding_mode,
            )

        self.lift = spatial(in_channels, hidden_channels)
        self.layers = torch.nn.ModuleList(
            spatial(hidden_channels, hidden_channels) for _ in range(n_layers)
        )
        self.activation = _ACTIVATIONS[activation]()
        self.projection = convolution(hidden_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``(batch, in_channels, *grid)`` fields to ``(batch, out_channels, *grid)``."""
        if not torch.compiler.is_compiling() and (
            x.ndim != self.ndim + 2 or x.shape[1] != self.in_channels
        ):
            grid = ", ".join("DHW"[3 - self.ndim :])
            raise ValueError(
                f"ConvNet.forward: expected an input of shape (batch, {self.in_channels}, "
                f"{grid}) for ndim={self.ndim} and in_channels={self.in_channels}, "
                f"got {tuple(x.shape)}"
            )
        h = self.lift((x - self.input_shift) / self.input_scale)
        for layer in self.layers:
            h = h + layer(self.activation(h))
        return self.projection(self.activation(h)) * self.output_scale
