"""Volumetric backbones of the radar reconstructor: a 3D U-Net and a residual CNN.

``unet3d``
    The Deep2S 3D U-Net (Manisali et al. 2024): crop to a multiple of ``2^levels``,
    ``levels`` encoder stages of [conv -> batch norm -> ReLU] x 2 followed by 2x2x2 max
    pooling, no bottleneck convolution, a decoder of 2x2x2 transposed convolutions with
    concatenated skips and [conv -> BN -> ReLU] x 2, zero padding back to the input grid,
    a final conv (``head_channels``) -> BN -> ReLU and a 1x1x1 conv, then a sigmoid. With
    ``kernel="2d"`` every convolution is 3x3x1 and every transposed convolution 2x2x1 with
    stride 2 along all axes (the reference's "2D" U-Net, which keeps 2x2x2 pooling).
``resnet3d``
    The Deep2S ResNet variant: ``n_layers`` 3x3x3 convolutions at ``hidden_channels``
    (batch norm on all but the first), ReLU, a convolution to ``out_channels`` and a skip
    from the input; no output nonlinearity.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from physnet.nn._registry import Model

__all__ = ["ResNet3D", "UNet3D"]

_KERNELS = ("3d", "2d")
_OUTPUTS = ("sigmoid", "none")


def _check_positive(owner: str, name: str, value: object) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{owner}: {name} must be a positive integer, got {value!r}")


class _Layers(torch.nn.Sequential):
    """Convolutions, batch norms and ReLUs applied in order, with two shortcuts that keep the
    arithmetic (to float rounding):

    - in evaluation mode a batch norm with running statistics is folded into the
      convolution before it (:func:`_fold_batch_norm`), saving a pass over the activations;
    - a 1x1x1 convolution of channels-last activations runs as a matrix product over the
      channel axis (:func:`_pointwise`): torch's own 1x1x1 path first copies them to the
      contiguous layout.
    """

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        layers = list(self)
        index = 0
        while index < len(layers):
            layer = layers[index]
            following = layers[index + 1] if index + 1 < len(layers) else None
            if isinstance(layer, torch.nn.Conv3d) and _uses_running_statistics(following):
                weight, bias = _fold_batch_norm(layer, following)
                h = F.conv3d(h, weight, bias, layer.stride, layer.padding, layer.dilation)
                index += 2
                continue
            if _is_pointwise(layer) and h.is_contiguous(memory_format=torch.channels_last_3d):
                h = _pointwise(layer, h)
            else:
                h = layer(h)
            index += 1
        return h


def _double_conv(channels_in: int, channels_out: int, kernel, padding, batch_norm: bool):
    layers: list[torch.nn.Module] = []
    for c_in in (channels_in, channels_out):
        layers.append(
            torch.nn.Conv3d(c_in, channels_out, kernel, padding=padding, bias=not batch_norm)
        )
        if batch_norm:
            layers.append(torch.nn.BatchNorm3d(channels_out))
        layers.append(torch.nn.ReLU(inplace=True))
    return _Layers(*layers)


def _uses_running_statistics(layer: torch.nn.Module | None) -> bool:
    """Whether ``layer`` is a batch norm that normalises by its running statistics."""
    return (
        isinstance(layer, torch.nn.BatchNorm3d)
        and not layer.training
        and layer.running_mean is not None
        and layer.running_var is not None
    )


def _fold_batch_norm(
    conv: torch.nn.Conv3d, norm: torch.nn.BatchNorm3d
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""The weight and bias of ``norm(conv(x))`` as one convolution (differentiable).

    With ``s = gamma / sqrt(running_var + eps)``: ``W' = s W`` (per output channel) and
    ``b' = s (b - running_mean) + beta``.
    """
    scale = torch.rsqrt(norm.running_var + norm.eps)
    if norm.weight is not None:
        scale = scale * norm.weight
    bias = -norm.running_mean if conv.bias is None else conv.bias - norm.running_mean
    bias = bias * scale
    if norm.bias is not None:
        bias = bias + norm.bias
    return conv.weight * scale.reshape(-1, 1, 1, 1, 1), bias


def _is_pointwise(layer: torch.nn.Module) -> bool:
    return (
        isinstance(layer, torch.nn.Conv3d)
        and layer.kernel_size == (1, 1, 1)
        and layer.stride == (1, 1, 1)
        and layer.groups == 1
        and layer.padding in ((0, 0, 0), "valid")
    )


def _pointwise(conv: torch.nn.Conv3d, h: torch.Tensor) -> torch.Tensor:
    """A 1x1x1 convolution of channels-last ``h``: a matrix product over its channel axis."""
    channels_last = h.permute(0, 2, 3, 4, 1)  # a contiguous view for channels-last ``h``
    return F.linear(channels_last, conv.weight.flatten(1), conv.bias).permute(0, 4, 1, 2, 3)


class UNet3D(Model, name="unet3d"):
    """The Deep2S 3D U-Net (module docstring): ``(B, C_in, X, Y, Z)`` -> ``(B, C_out, X, Y, Z)``.

    Parameters
    ----------
    in_channels, out_channels : int, default 1
    channels : list of int, default [32, 64, 128]
        Channels of the encoder levels (their number is the number of poolings).
    head_channels : int, default 64
        Channels of the convolution after the decoder.
    kernel : {"3d", "2d"}, default "3d"
        3x3x3 convolutions, or 3x3x1 ("2d": convolution within x-y slices).
    batch_norm : bool, default True
    output : {"sigmoid", "none"}, default "sigmoid"
    ndim : int, default 3
        Grid axes of the input (always 3; recorded for the Trainer).

    Raises
    ------
    ValueError
        For invalid arguments, or an input grid smaller than ``2^levels`` along an axis.

    Notes
    -----
    On the CPU the activations are channels-last (the layout oneDNN's 3-D convolutions
    run in without reordering), in evaluation mode every batch norm is folded into the
    convolution before it, and the final 1x1x1 convolution is a matrix product over the
    channels. Outputs and gradients agree with applying the layers one by one on contiguous
    tensors to float rounding; the weights and checkpoints are unchanged.

    Examples
    --------
    >>> import torch
    >>> from physnet.nn import UNet3D
    >>> model = UNet3D(channels=[4, 8], head_channels=4).eval()
    >>> model(torch.rand(2, 1, 9, 9, 13)).shape
    torch.Size([2, 1, 9, 9, 13])
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 1,
        channels: list[int] | tuple[int, ...] = (32, 64, 128),
        head_channels: int = 64,
        kernel: str = "3d",
        batch_norm: bool = True,
        output: str = "sigmoid",
        ndim: int = 3,
    ) -> None:
        super().__init__()
        for name, value in (
            ("in_channels", in_channels),
            ("out_channels", out_channels),
            ("head_channels", head_channels),
        ):
            _check_positive("UNet3D", name, value)
        channels = list(channels)
        if not channels:
            raise ValueError("UNet3D: channels must list at least one level, got []")
        for value in channels:
            _check_positive("UNet3D", "channels[...]", value)
        if kernel not in _KERNELS:
            raise ValueError(f"UNet3D: kernel {kernel!r} is unknown; expected one of {_KERNELS}")
        if output not in _OUTPUTS:
            raise ValueError(f"UNet3D: output {output!r} is unknown; expected one of {_OUTPUTS}")
        if ndim != 3:
            raise ValueError(f"UNet3D: ndim must be 3, got {ndim!r}")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.levels = len(channels)
        self.output = output
        conv_kernel, padding = ((3, 3, 3), (1, 1, 1)) if kernel == "3d" else ((3, 3, 1), (1, 1, 0))
        up_kernel = (2, 2, 2) if kernel == "3d" else (2, 2, 1)
        self.encoder = torch.nn.ModuleList()
        previous = in_channels
        for width in channels:
            self.encoder.append(_double_conv(previous, width, conv_kernel, padding, batch_norm))
            previous = width
        self.upsample = torch.nn.ModuleList()
        self.decoder = torch.nn.ModuleList()
        for level in reversed(range(self.levels)):
            width = channels[level]
            self.upsample.append(
                torch.nn.ConvTranspose3d(
                    previous,
                    width,
                    up_kernel,
                    stride=2,
                    output_padding=(0, 0, 1) if kernel == "2d" else 0,
                )
            )
            self.decoder.append(_double_conv(2 * width, width, conv_kernel, padding, batch_norm))
            previous = width
        head: list[torch.nn.Module] = [
            torch.nn.Conv3d(
                previous, head_channels, conv_kernel, padding=padding, bias=not batch_norm
            )
        ]
        if batch_norm:
            head.append(torch.nn.BatchNorm3d(head_channels))
        head += [torch.nn.ReLU(inplace=True), torch.nn.Conv3d(head_channels, out_channels, 1)]
        self.head = _Layers(*head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``(B, in_channels, X, Y, Z)`` to ``(B, out_channels, X, Y, Z)``."""
        factor = 2**self.levels
        if x.ndim != 5 or x.shape[1] != self.in_channels or min(x.shape[2:]) < factor:
            raise ValueError(
                f"UNet3D.forward: expected an input of shape (batch, {self.in_channels}, X, Y, Z) "
                f"with X, Y, Z >= {factor}, got {tuple(x.shape)}"
            )
        grid = tuple(x.shape[2:])
        cropped = tuple(n - n % factor for n in grid)
        h = x[..., : cropped[0], : cropped[1], : cropped[2]]
        if h.device.type == "cpu":
            # oneDNN convolves channels-last activations as they are; contiguous ones it
            # reorders to its blocked layout and back around every convolution (radar-deep2s
            # measured 1.2x faster, 1 thread). Other devices keep their layout (unmeasured).
            h = h.contiguous(memory_format=torch.channels_last_3d)
        skips = []
        for block in self.encoder:
            h = block(h)
            skips.append(h)
            h = F.max_pool3d(h, 2)
        for upsample, block, skip in zip(self.upsample, self.decoder, reversed(skips), strict=True):
            h = block(torch.cat([upsample(h), skip], dim=1))
        h = F.pad(h, [0, grid[2] - cropped[2], 0, grid[1] - cropped[1], 0, grid[0] - cropped[0]])
        h = self.head(h)
        return (torch.sigmoid(h) if self.output == "sigmoid" else h).contiguous()


class ResNet3D(Model, name="resnet3d"):
    """The Deep2S ResNet variant: a plain stack of 3x3x3 convolutions with an input skip.

    Parameters
    ----------
    in_channels, out_channels : int, default 1
        The skip adds the mean of the input channels to every output channel.
    hidden_channels : int, default 64
    n_layers : int, default 9
        Convolutions at ``hidden_channels`` (batch norm on layers 2 to ``n_layers``).
    ndim : int, default 3

    Examples
    --------
    >>> import torch
    >>> from physnet.nn import ResNet3D
    >>> ResNet3D(hidden_channels=4, n_layers=2)(torch.rand(1, 1, 5, 5, 7)).shape
    torch.Size([1, 1, 5, 5, 7])
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 1,
        hidden_channels: int = 64,
        n_layers: int = 9,
        ndim: int = 3,
    ) -> None:
        super().__init__()
        for name, value in (
            ("in_channels", in_channels),
            ("out_channels", out_channels),
            ("hidden_channels", hidden_channels),
            ("n_layers", n_layers),
        ):
            _check_positive("ResNet3D", name, value)
        if ndim != 3:
            raise ValueError(f"ResNet3D: ndim must be 3, got {ndim!r}")
        self.in_channels = in_channels
        layers: list[torch.nn.Module] = []
        previous = in_channels
        for index in range(n_layers):
            layers.append(torch.nn.Conv3d(previous, hidden_channels, 3, padding=1, bias=index == 0))
            if index > 0:
                layers.append(torch.nn.BatchNorm3d(hidden_channels))
            layers.append(torch.nn.ReLU(inplace=True))
            previous = hidden_channels
        layers.append(torch.nn.Conv3d(previous, out_channels, 3, padding=1))
        self.layers = torch.nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``(B, in_channels, X, Y, Z)`` to ``(B, out_channels, X, Y, Z)``."""
        if x.ndim != 5 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"ResNet3D.forward: expected an input of shape (batch, {self.in_channels}, X, Y, "
                f"Z), got {tuple(x.shape)}"
            )
        return self.layers(x) + x.mean(dim=1, keepdim=True)
