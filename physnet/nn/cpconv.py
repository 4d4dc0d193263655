"""A-priori compressed convolutions: CP-format kernels trained from scratch.

A dense convolution's weight ``W`` of shape ``(C_out, C_in, k_1, ..., k_d)`` is replaced
by a rank-``R`` canonical polyadic (CP) tensor with one factor per mode,

.. math::

    W_{o, i, y, x} = \\sum_{r=1}^{R} U_{o r}\\, A_{r i}\\, Y_{r y}\\, X_{r x}
    \\qquad (d = 2;\\ \\text{one more 1-D factor for } d = 3),

chosen *before* training (a priori) and learned factor by factor. The ``C_in x k_h x k_w``
three-way filters become a channel projection to ``R`` channels, one one-way (1-D) filter
per rank and spatial axis, and a projection to ``C_out`` — run as a 1x1 convolution,
``d`` depthwise 1-D convolutions and a 1x1 convolution (Lebedev et al. 2015; the layer of
Boukraichi et al. 2023). Parameters: ``R (C_in + C_out + k_1 + ... + k_d)`` (+ ``C_out``
bias) instead of ``C_out C_in k_1 ... k_d``.

The factorized layer returns a channels-last tensor: its two projections are matrix
products over the channel axis, and PyTorch's CPU depthwise convolutions are several times
faster on channels-last data (measured: two rank-32 one-way convolutions on a 32 x 32 x 64 x
64 batch, 265 ms in NCHW, 31 ms channels-last). Networks of these layers run fastest with
channels-last inputs (``x.contiguous(memory_format=torch.channels_last)``).

Examples
--------
>>> import torch
>>> from physnet.nn import CPConv2d
>>> layer = CPConv2d(32, 32, kernel_size=5, rank=8, padding=2)
>>> layer(torch.zeros(1, 32, 16, 16)).shape
torch.Size([1, 32, 16, 16])
>>> sum(p.numel() for p in layer.parameters()), CPConv2d.parameter_count(32, 32, 5, 8)
(624, 624)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

__all__ = ["CPConv2d", "CPConv3d", "compress_convs"]

IMPLEMENTATIONS = ("factorized", "reconstructed")
_DENSE = {2: torch.nn.Conv2d, 3: torch.nn.Conv3d}
_CONV = {2: F.conv2d, 3: F.conv3d}


def _tuple(value: Any, ndim: int, name: str, owner: str, minimum: int) -> tuple[int, ...]:
    values = (value,) * ndim if isinstance(value, int) and not isinstance(value, bool) else value
    try:
        values = tuple(values)
    except TypeError:
        values = ()
    if len(values) != ndim or not all(
        isinstance(v, int) and not isinstance(v, bool) and v >= minimum for v in values
    ):
        raise ValueError(
            f"{owner}: {name}={value!r}, expected an int >= {minimum} or {ndim} of them"
        )
    return values


class _CPConvNd(torch.nn.Module):
    ndim: ClassVar[int]

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | Sequence[int],
        rank: int,
        stride: int | Sequence[int] = 1,
        padding: int | Sequence[int] = 0,
        bias: bool = True,
        *,
        padding_mode: str = "zeros",
        implementation: str = "factorized",
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        super().__init__()
        owner = type(self).__name__
        for name, value in (
            ("in_channels", in_channels),
            ("out_channels", out_channels),
            ("rank", rank),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{owner}: {name}={value!r}, expected a positive integer")
        self.kernel_size = _tuple(kernel_size, self.ndim, "kernel_size", owner, 1)
        self.stride = _tuple(stride, self.ndim, "stride", owner, 1)
        self.padding = _tuple(padding, self.ndim, "padding", owner, 0)
        if padding_mode not in ("zeros", "reflect", "replicate", "circular"):
            raise ValueError(
                f"{owner}: padding_mode={padding_mode!r}, expected 'zeros', 'reflect', "
                "'replicate' or 'circular'"
            )
        if implementation not in IMPLEMENTATIONS:
            raise ValueError(
                f"{owner}: implementation={implementation!r}, expected one of {IMPLEMENTATIONS}"
            )
        self.in_channels, self.out_channels, self.rank = in_channels, out_channels, rank
        self.padding_mode, self.implementation = padding_mode, implementation
        options = {"device": device, "dtype": dtype}
        self.input_factor = torch.nn.Parameter(torch.empty(rank, in_channels, **options))
        self.spatial_factors = torch.nn.ParameterList(
            torch.nn.Parameter(torch.empty(rank, k, **options)) for k in self.kernel_size
        )
        self.output_factor = torch.nn.Parameter(torch.empty(out_channels, rank, **options))
        self.bias = torch.nn.Parameter(torch.empty(out_channels, **options)) if bias else None
        self.reset_parameters()

    @property
    def fan_in(self) -> int:
        return self.in_channels * math.prod(self.kernel_size)

    def reset_parameters(self) -> None:
        """Kaiming-normal initialisation of the equivalent dense kernel.

        The factors are drawn from ``N(0, 1)`` and then all scaled by one common factor so
        that the reconstructed kernel's mean square is exactly ``2 / fan_in`` (He et al.
        2015, ``fan_in = C_in k_1 ... k_d``): a rank-``R`` product of ``d + 2`` Gaussian
        factors has a heavy-tailed, sample-dependent scale, so the expected-variance rule
        ``std = (sigma^2 / R)^(1 / (2 (d + 2)))`` alone misses by far more than 10 % for
        small kernels. The bias is drawn like torch's: ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``.
        """
        with torch.no_grad():
            factors = [self.input_factor, *self.spatial_factors, self.output_factor]
            for factor in factors:
                factor.normal_()
            target = 2.0 / self.fan_in
            mean_square = self.to_dense().double().square().mean().item()
            scale = (target / mean_square) ** (1.0 / (2 * len(factors)))
            for factor in factors:
                factor.mul_(scale)
            if self.bias is not None:
                bound = 1.0 / math.sqrt(self.fan_in)
                self.bias.uniform_(-bound, bound)

    def to_dense(self) -> torch.Tensor:
        """The equivalent dense weight ``(C_out, C_in, *kernel_size)`` (differentiable)."""
        # Outer products of the one-way filters first, then one matrix product over the
        # rank: cheaper than a general einsum for the small kernels of convolutions.
        spatial = self.spatial_factors[0]
        for factor in self.spatial_factors[1:]:
            spatial = (spatial[:, :, None] * factor[:, None, :]).flatten(1)
        core = self.input_factor[:, :, None] * spatial[:, None, :]
        weight = self.output_factor @ core.flatten(1)
        return weight.reshape(self.out_channels, self.in_channels, *self.kernel_size)

    def to_conv(self) -> torch.nn.Module:
        """A dense ``torch.nn.Conv2d``/``Conv3d`` computing the same function."""
        conv = _DENSE[self.ndim](
            self.in_channels,
            self.out_channels,
            self.kernel_size,
            stride=self.stride,
            padding=self.padding,
            bias=self.bias is not None,
            padding_mode=self.padding_mode,
            device=self.input_factor.device,
            dtype=self.input_factor.dtype,
        )
        with torch.no_grad():
            conv.weight.copy_(self.to_dense())
            if self.bias is not None:
                conv.bias.copy_(self.bias)
        return conv

    @classmethod
    def parameter_count(
        cls,
        in_channels: int,
        out_channels: int,
        kernel_size: int | Sequence[int],
        rank: int,
        bias: bool = True,
    ) -> int:
        """``rank * (in_channels + out_channels + sum(kernel_size)) + bias * out_channels``."""
        kernel = _tuple(kernel_size, cls.ndim, "kernel_size", cls.__name__, 1)
        return rank * (in_channels + out_channels + sum(kernel)) + (out_channels if bias else 0)

    @classmethod
    def dense_parameter_count(
        cls,
        in_channels: int,
        out_channels: int,
        kernel_size: int | Sequence[int],
        bias: bool = True,
    ) -> int:
        """``out_channels * in_channels * prod(kernel_size) + bias * out_channels``."""
        kernel = _tuple(kernel_size, cls.ndim, "kernel_size", cls.__name__, 1)
        return out_channels * in_channels * math.prod(kernel) + (out_channels if bias else 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != self.ndim + 2 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"{type(self).__name__}.forward: expected an input of shape (batch, "
                f"{self.in_channels}, {', '.join('DHW'[3 - self.ndim :])}), got {tuple(x.shape)}"
            )
        padding = self.padding
        if self.padding_mode != "zeros":
            widths = [p for size in reversed(padding) for p in (size, size)]
            x = F.pad(x, widths, mode=self.padding_mode)
            padding = (0,) * self.ndim
        convolution = _CONV[self.ndim]
        if self.implementation == "reconstructed":
            return convolution(x, self.to_dense(), self.bias, stride=self.stride, padding=padding)
        # Channels-last throughout: the projections are matrix products over the last
        # (channel) axis and the depthwise convolutions run on oneDNN's channels-last
        # kernels, several times faster on CPU than in NCHW (see the module notes).
        to_last = (0, *range(2, self.ndim + 2), 1)
        to_first = (0, self.ndim + 1, *range(1, self.ndim + 1))
        h = (x.permute(to_last) @ self.input_factor.T).permute(to_first)
        for axis, factor in enumerate(self.spatial_factors):
            shape = [1] * self.ndim
            shape[axis] = factor.shape[1]
            stride, pad = [1] * self.ndim, [0] * self.ndim
            stride[axis], pad[axis] = self.stride[axis], padding[axis]
            h = convolution(
                h,
                factor.reshape(self.rank, 1, *shape),
                stride=stride,
                padding=pad,
                groups=self.rank,
            )
        h = h.permute(to_last) @ self.output_factor.T
        if self.bias is not None:
            h = h + self.bias
        return h.permute(to_first)

    def extra_repr(self) -> str:
        text = (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"rank={self.rank}, stride={self.stride}, padding={self.padding}"
        )
        if self.bias is None:
            text += ", bias=False"
        if self.padding_mode != "zeros":
            text += f", padding_mode={self.padding_mode!r}"
        return text + f", implementation={self.implementation!r}"


class CPConv2d(_CPConvNd):
    """A 2-D convolution whose kernel is a rank-``R`` CP tensor (see the module notes).

    Parameters
    ----------
    in_channels, out_channels : int
    kernel_size : int or (int, int)
    rank : int
        ``R``, the number of rank-one terms.
    stride, padding : int or (int, int), default 1 and 0
    bias : bool, default True
    padding_mode : {"zeros", "reflect", "replicate", "circular"}, default "zeros"
    implementation : {"factorized", "reconstructed"}, default "factorized"
        ``"factorized"`` runs 1x1 -> 1-D depthwise along y -> along x -> 1x1 (fewer FLOPs
        when ``R`` is small); ``"reconstructed"`` builds the dense kernel and runs one
        convolution. Both compute the same function.

    Notes
    -----
    Parameters: ``R (C_in + C_out + k_h + k_w) + C_out`` (with bias) versus
    ``C_out C_in k_h k_w + C_out`` dense (:meth:`parameter_count`,
    :meth:`dense_parameter_count`). Multiply-adds per output pixel, factorized:
    ``R (C_in s_h s_w + k_h s_w + k_w + C_out)`` for strides ``s`` versus
    ``C_out C_in k_h k_w``.

    References
    ----------
    V. Lebedev et al., "Speeding-up convolutional neural networks using fine-tuned
    CP-decomposition", ICLR 2015, arXiv:1412.6553. H. Boukraichi et al., "A priori
    compression of convolutional neural networks for wave simulators", arXiv:2304.04964.

    Examples
    --------
    >>> import torch
    >>> layer = CPConv2d(3, 8, kernel_size=3, rank=4, padding=1)
    >>> x = torch.randn(2, 3, 10, 10)
    >>> torch.allclose(layer(x), layer.to_conv()(x), atol=1e-5)
    True
    """

    ndim = 2


class CPConv3d(_CPConvNd):
    """A 3-D convolution whose kernel is a rank-``R`` CP tensor: like :class:`CPConv2d` with
    three one-way filters (along z, y, x).

    Parameters: ``R (C_in + C_out + k_d + k_h + k_w) + C_out`` (with bias).

    Examples
    --------
    >>> import torch
    >>> layer = CPConv3d(2, 4, kernel_size=3, rank=5, padding=1)
    >>> layer(torch.randn(1, 2, 6, 6, 6)).shape, layer.to_dense().shape
    (torch.Size([1, 4, 6, 6, 6]), torch.Size([4, 2, 3, 3, 3]))
    """

    ndim = 3


_CP = {2: CPConv2d, 3: CPConv3d}


def compress_convs(
    model: torch.nn.Module,
    rank: int | float,
    *,
    implementation: str = "factorized",
) -> torch.nn.Module:
    """Replace a model's dense 2-D/3-D convolutions by freshly initialised CP convolutions.

    The one-line switch of a priori compression: every ``torch.nn.Conv2d``/``Conv3d`` with
    a spatial kernel (not 1x1), ``groups == 1`` and ``dilation == 1`` becomes a
    :class:`CPConv2d`/:class:`CPConv3d` with the same channels, kernel size, stride,
    padding, padding mode, bias, device and dtype, initialised from scratch (the dense
    weights are discarded: compression happens *before* training). Other layers are kept.

    Parameters
    ----------
    model : torch.nn.Module
        Modified in place.
    rank : int or float
        An int is the CP rank of every layer; a float in (0, 1] is a fraction of each dense
        layer's weight count: ``R = max(1, floor(f C_out C_in prod(k) / (C_in + C_out +
        sum(k))))``.
    implementation : {"factorized", "reconstructed"}, default "factorized"

    Returns
    -------
    torch.nn.Module
        ``model``.

    Notes
    -----
    A registered :class:`physnet.nn.Model` compressed this way no longer matches the
    architecture its ``config`` rebuilds; models meant to be saved take the compression as a
    constructor argument (e.g. :class:`physnet.nn.WaveCNN`'s ``conv="cp"``).

    Examples
    --------
    >>> import torch
    >>> from physnet.nn import compress_convs
    >>> model = torch.nn.Sequential(torch.nn.Conv2d(4, 16, 5, padding=2), torch.nn.GELU(),
    ...                             torch.nn.Conv2d(16, 1, 1))
    >>> model = compress_convs(model, rank=8)
    >>> type(model[0]).__name__, type(model[2]).__name__
    ('CPConv2d', 'Conv2d')
    """
    if isinstance(rank, bool) or not isinstance(rank, (int, float)):
        raise TypeError(f"compress_convs: rank={rank!r}, expected an int or a float fraction")
    if (isinstance(rank, int) and rank < 1) or (isinstance(rank, float) and not 0 < rank <= 1):
        raise ValueError(
            f"compress_convs: rank={rank!r}, expected an int >= 1 or a fraction in (0, 1]"
        )
    for name, child in list(model.named_children()):
        ndim = 2 if type(child) is torch.nn.Conv2d else 3 if type(child) is torch.nn.Conv3d else 0
        if ndim == 0:
            compress_convs(child, rank, implementation=implementation)
            continue
        if (
            math.prod(child.kernel_size) == 1
            or child.groups != 1
            or any(d != 1 for d in child.dilation)
        ):
            continue
        padding = child.padding
        if isinstance(padding, str):
            if padding == "valid":
                padding = (0,) * ndim
            elif all(k % 2 == 1 for k in child.kernel_size):
                padding = tuple(k // 2 for k in child.kernel_size)
            else:
                continue
        layer_rank = rank
        if isinstance(rank, float):
            dense = child.out_channels * child.in_channels * math.prod(child.kernel_size)
            modes = child.in_channels + child.out_channels + sum(child.kernel_size)
            layer_rank = max(1, math.floor(rank * dense / modes))
        setattr(
            model,
            name,
            _CP[ndim](
                child.in_channels,
                child.out_channels,
                tuple(child.kernel_size),
                layer_rank,
                stride=tuple(child.stride),
                padding=tuple(padding),
                bias=child.bias is not None,
                padding_mode=child.padding_mode,
                implementation=implementation,
                device=child.weight.device,
                dtype=child.weight.dtype,
            ),
        )
    return model
