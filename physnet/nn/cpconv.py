"""A-priori compressed convolutions: CP-format and separable kernels trained from scratch.

A dense convolution's weight ``W`` of shape ``(C_out, C_in, k_1, ..., k_d)`` is replaced
by a low-rank tensor format chosen *before* training (a priori) and learned factor by
factor: the ``C_in x k_h x k_w`` three-way (or ``k_h x k_w`` two-way) kernels become
one-way (1-D) filters (Boukraichi et al. 2023). Two formats:

- :class:`CPConv2d`/:class:`CPConv3d`: one rank-``R`` canonical polyadic (CP) tensor for
  the whole weight, with one factor per mode,

  .. math::

      W_{o, i, y, x} = \\sum_{r=1}^{R} U_{o r}\\, A_{r i}\\, Y_{r y}\\, X_{r x}
      \\qquad (d = 2;\\ \\text{one more 1-D factor for } d = 3),

  run as a 1x1 convolution to ``R`` channels, ``d`` depthwise 1-D convolutions and a 1x1
  convolution (Lebedev et al. 2015). Parameters: ``R (C_in + C_out + k_1 + ... + k_d)``
  (+ ``C_out`` bias) instead of ``C_out C_in k_1 ... k_d``.
- :class:`SeparableConv2d`: every ``(out, in)`` kernel is a sum of ``R`` outer products of
  1-D filters, ``W_{o, i} = sum_r a_{o i r} (x) b_{o i r}`` (a truncated SVD of each
  kernel). Parameters: ``C_out C_in R (k_h + k_w)`` (+ bias): fewer than dense only when
  ``R (k_h + k_w) < k_h k_w``.

Execution: each layer computes the same function in two ways, ``"factorized"`` (the
chain of small convolutions above) or ``"reconstructed"`` (build the dense kernel, then
one ``F.conv2d``/``F.conv3d``). The default ``implementation="auto"`` chooses per call from
the input's shape and whether autograd records it, with a cost model calibrated on a CPU
(see :meth:`CPConv2d.implementation_costs`): the multiply-adds and memory writes of the
factorized operations against those of the dense convolution plus the kernel's
reconstruction, which is paid once per call and so amortised over the batch (off the CPU,
``"auto"`` reconstructs). In evaluation mode without autograd the reconstructed kernel is
cached between calls (keyed on the parameters' storage and version counters).

The factorized CP layer returns a channels-last tensor: its two projections are matrix
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
>>> layer.choose_implementation((64, 32, 64, 64))  # the cheaper path for this input
'factorized'
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

__all__ = ["CPConv2d", "CPConv3d", "SeparableConv2d", "compress_convs"]

IMPLEMENTATIONS = ("auto", "factorized", "reconstructed")
_DENSE = {2: torch.nn.Conv2d, 3: torch.nn.Conv3d}
_CONV = {2: F.conv2d, 3: F.conv3d}

# The cost model of implementation="auto": an operation of kind K with ``m`` multiply-adds
# (elements moved, for "regroup") writing ``n`` output elements takes ``overhead_us +
# (ns_per_mac * m + ns_per_output * n) / 1000`` microseconds; a path costs the sum of its
# operations (``operations()``). Calibrated on the development machine (AMD EPYC, 2 cores
# shared with other jobs, torch 2.13 CPU, 1 thread, channels-last float32, medians of CPU
# time): overhead_us and ns_per_mac per kind by least squares in relative error on a dozen
# shapes of each operation alone; ns_per_output (the same for all kinds) on whole layers
# with large inputs, where the factorized chain is memory-bound: its fresh intermediates
# cost page faults (glibc returns large blocks to the OS; with MALLOC_MMAP_THRESHOLD_ and
# MALLOC_TRIM_THRESHOLD_ raised, the (8, 16, 64, 64) rank-40 5x5 factorized forward drops
# from 16 ms to 4 ms). "backward" is one forward plus one backward pass. The ratios are
# what matters: the dense convolution runs 2x as fast per multiply-add as the 1x1
# projections and 5-6x as fast as the 1-D depthwise convolutions, whose per-call overheads
# (oneDNN primitives, ~0.1 ms) also weigh on small inputs. Checked on 169 whole-layer
# timings (random shapes, CP 2-D/3-D and separable, both modes): the chosen path is on
# average 0-8 % slower than the faster one (wrong only near ties, worst 1.7x: 3-D dense
# convolutions at batch 1 are anomalously slow in this oneDNN). Timings on this shared
# machine vary up to 2-4x between runs; re-calibrate on other hardware.
MEMORY_FORWARD, MEMORY_BACKWARD = 0.5, 3.0  # ns per output element
COST_MODEL: dict[str, dict[str, tuple[float, float, float]]] = {
    # kind: (overhead_us, ns_per_mac, ns_per_output)
    "forward": {
        "conv": (77.0, 0.027, MEMORY_FORWARD),  # dense F.conv2d/F.conv3d
        "projection": (14.0, 0.057, MEMORY_FORWARD),  # 1x1: a matrix product over channels
        "depthwise": (97.0, 0.15, MEMORY_FORWARD),  # 1-D depthwise convolution, per tap
        "expand": (107.0, 0.10, MEMORY_FORWARD),  # 1-D convolution, 1 -> C_out R channels
        "regroup": (27.0, 1.5, 0.0),  # channel permutation (a strided copy), per element
        "grouped": (118.0, 0.52, MEMORY_FORWARD),  # 1-D convolution summing C_in R channels
        "reconstruction": (34.0, 0.037, 0.0),  # building the dense kernel
    },
    "backward": {
        "conv": (410.0, 0.125, MEMORY_BACKWARD),
        "projection": (170.0, 0.25, MEMORY_BACKWARD),
        "depthwise": (320.0, 0.60, MEMORY_BACKWARD),
        "expand": (680.0, 1.0, MEMORY_BACKWARD),
        "regroup": (220.0, 2.9, 0.0),
        "grouped": (430.0, 1.7, MEMORY_BACKWARD),
        "reconstruction": (310.0, 0.128, 0.0),
    },
}


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


def _check_implementation(owner: str, implementation: object) -> None:
    if implementation not in IMPLEMENTATIONS:
        raise ValueError(
            f"{owner}: implementation={implementation!r}, expected one of {IMPLEMENTATIONS}"
        )


class _FactorizedConvNd(torch.nn.Module):
    """Shared by the factorized convolutions: arguments, initialisation, the dense
    equivalent, and the choice and caching of the implementation."""

    ndim: ClassVar[int]
    _kernel_cache: tuple[tuple[Any, ...], list[torch.Tensor], torch.Tensor] | None

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
        implementation: str = "auto",
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
        _check_implementation(owner, implementation)
        self.in_channels, self.out_channels, self.rank = in_channels, out_channels, rank
        self.padding_mode, self.implementation = padding_mode, implementation
        self._kernel_cache = None
        self._choices: dict[tuple[Any, ...], str] = {}
        options = {"device": device, "dtype": dtype}
        self._create_factors(options)
        self.bias = torch.nn.Parameter(torch.empty(out_channels, **options)) if bias else None
        self.reset_parameters()

    # --- the format: defined by each subclass -----------------------------------------

    def _create_factors(self, options: dict[str, Any]) -> None:
        raise NotImplementedError

    def _factors(self) -> list[torch.Tensor]:
        """The factor tensors; each term of the kernel is a product of one entry of each."""
        raise NotImplementedError

    def _factor_order(self) -> int:
        """How many factors multiply in each term of the reconstructed kernel."""
        return len(self._factors())

    def to_dense(self) -> torch.Tensor:
        """The equivalent dense weight ``(C_out, C_in, *kernel_size)`` (differentiable)."""
        raise NotImplementedError

    def _reconstruction_macs(self) -> int:
        raise NotImplementedError

    def _factorized_operations(
        self, batch: int, sizes: tuple[int, ...], padding: tuple[int, ...]
    ) -> list[tuple[str, int, int]]:
        raise NotImplementedError

    def _factorized(self, x: torch.Tensor, padding: tuple[int, ...]) -> torch.Tensor:
        raise NotImplementedError

    # --- shared ---------------------------------------------------------------------

    @property
    def fan_in(self) -> int:
        return self.in_channels * math.prod(self.kernel_size)

    def reset_parameters(self) -> None:
        """Kaiming-normal initialisation of the equivalent dense kernel.

        The factors are drawn from ``N(0, 1)`` and then all scaled by one common factor so
        that the reconstructed kernel's mean square is exactly ``2 / fan_in`` (He et al.
        2015, ``fan_in = C_in k_1 ... k_d``): a rank-``R`` product of Gaussian factors has
        a heavy-tailed, sample-dependent scale, so the expected-variance rule
        ``std = (sigma^2 / R)^(1 / (2 n_factors))`` alone misses by far more than 10 % for
        small kernels. The bias is drawn like torch's: ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``.
        """
        with torch.no_grad():
            factors = self._factors()
            for factor in factors:
                factor.normal_()
            target = 2.0 / self.fan_in
            mean_square = self.to_dense().double().square().mean().item()
            scale = (target / mean_square) ** (1.0 / (2 * self._factor_order()))
            for factor in factors:
                factor.mul_(scale)
            if self.bias is not None:
                bound = 1.0 / math.sqrt(self.fan_in)
                self.bias.uniform_(-bound, bound)

    def to_conv(self) -> torch.nn.Module:
        """A dense ``torch.nn.Conv2d``/``Conv3d`` computing the same function."""
        weight = self.to_dense()
        conv = _DENSE[self.ndim](
            self.in_channels,
            self.out_channels,
            self.kernel_size,
            stride=self.stride,
            padding=self.padding,
            bias=self.bias is not None,
            padding_mode=self.padding_mode,
            device=weight.device,
            dtype=weight.dtype,
        )
        with torch.no_grad():
            conv.weight.copy_(weight)
            if self.bias is not None:
                conv.bias.copy_(self.bias)
        return conv

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

    def _check_input(self, shape: Sequence[int], where: str) -> None:
        if len(shape) != self.ndim + 2 or shape[1] != self.in_channels:
            raise ValueError(
                f"{type(self).__name__}.{where}: expected an input of shape (batch, "
                f"{self.in_channels}, {', '.join('DHW'[3 - self.ndim :])}), got {tuple(shape)}"
            )

    def operations(self, input_shape: Sequence[int]) -> dict[str, list[tuple[str, int, int]]]:
        """The operations of each implementation for an input of ``input_shape``.

        Returns
        -------
        dict
            ``{"factorized": [(kind, multiply_adds, outputs), ...], "reconstructed":
            [...]}``: each operation's kind (a key of ``COST_MODEL``), multiply-adds
            (elements moved, for a ``"regroup"``) and output elements. ``"reconstructed"``
            is the kernel's ``("reconstruction", ...)`` then ``("conv", batch * prod(output)
            * C_out * C_in * prod(kernel_size), batch * prod(output) * C_out)``.
        """
        self._check_input(input_shape, "operations")
        batch, sizes = int(input_shape[0]), tuple(int(s) for s in input_shape[2:])
        padding = self.padding
        if self.padding_mode != "zeros":  # padded explicitly before the convolutions
            sizes = tuple(s + 2 * p for s, p in zip(sizes, padding, strict=True))
            padding = (0,) * self.ndim
        output = [
            max(0, (s + 2 * p - k) // t + 1)
            for s, p, k, t in zip(sizes, padding, self.kernel_size, self.stride, strict=True)
        ]
        outputs = batch * math.prod(output) * self.out_channels
        kernel = self.out_channels * self.fan_in
        return {
            "factorized": self._factorized_operations(batch, sizes, padding),
            "reconstructed": [
                ("reconstruction", self._reconstruction_macs(), kernel),
                ("conv", outputs * self.fan_in, outputs),
            ],
        }

    def implementation_costs(
        self, input_shape: Sequence[int], *, backward: bool = False
    ) -> dict[str, float]:
        """Modelled CPU time in microseconds of each implementation for one call.

        Parameters
        ----------
        input_shape : sequence of int
            ``(batch, C_in, *spatial)``.
        backward : bool, default False
            Model a forward plus a backward pass (training) instead of a forward pass.

        Returns
        -------
        dict
            ``{"factorized": t_f, "reconstructed": t_r}``: the sums over
            :meth:`operations` of ``overhead_us + (ns_per_mac * multiply_adds +
            ns_per_output * outputs) / 1000`` with the constants of
            ``physnet.nn.cpconv.COST_MODEL`` (calibrated on a CPU; see the comment there).
            The reconstruction of the dense kernel is counted once per call, whatever the
            batch: its share shrinks as the batch grows.
        """
        constants = COST_MODEL["backward" if backward else "forward"]
        costs = {}
        for implementation, operations in self.operations(input_shape).items():
            costs[implementation] = sum(
                constants[kind][0] + (constants[kind][1] * macs + constants[kind][2] * n) / 1e3
                for kind, macs, n in operations
            )
        return costs

    def choose_implementation(
        self, input_shape: Sequence[int], *, backward: bool = False, device: Any = "cpu"
    ) -> str:
        """The implementation ``"auto"`` runs for an input of ``input_shape``.

        On a CPU, the cheaper of :meth:`implementation_costs` (``"reconstructed"`` on a
        tie); on other devices (whose dense convolutions are far faster than their chains
        of small ones and whose constants are not calibrated) always ``"reconstructed"``.
        A pure function of the shape, ``backward`` and the device type.
        """
        if torch.device(device).type != "cpu":
            return "reconstructed"
        costs = self.implementation_costs(input_shape, backward=backward)
        return "factorized" if costs["factorized"] < costs["reconstructed"] else "reconstructed"

    def _auto_implementation(
        self, shape: Sequence[int], backward: bool, device: torch.device
    ) -> str:
        """:meth:`choose_implementation`, memoised per shape (it costs ~20 us a call)."""
        if torch.compiler.is_compiling():
            return self.choose_implementation(shape, backward=backward, device=device)
        key = (tuple(shape), backward, device.type)
        choice = self._choices.get(key)
        if choice is None:
            choice = self.choose_implementation(shape, backward=backward, device=device)
            if len(self._choices) >= 64:
                self._choices.clear()
            self._choices[key] = choice
        return choice

    def _dense_kernel(self) -> torch.Tensor:
        """:meth:`to_dense`, cached in evaluation mode when no gradient is recorded."""
        if self.training or torch.is_grad_enabled() or torch.compiler.is_compiling():
            return self.to_dense()
        factors = self._factors()
        if any(f.is_meta for f in factors):
            return self.to_dense()
        # The version counters see in-place updates (optimisers, load_state_dict, ``p.add_``
        # under no_grad) and data pointers see new storage (``.to()``, ``p.data = ...``);
        # the cache holds the factors' storage alive, so a pointer is never reused while it
        # is a key. Writes through ``p.data`` bypass the counter: call ``train()`` after them.
        key = (
            torch.is_inference_mode_enabled(),
            *((f.data_ptr(), f._version, f.dtype, f.device) for f in factors),
        )
        if self._kernel_cache is None or self._kernel_cache[0] != key:
            self._kernel_cache = (key, [f.detach() for f in factors], self.to_dense())
        return self._kernel_cache[2]

    def train(self, mode: bool = True) -> _FactorizedConvNd:
        self._kernel_cache = None
        return super().train(mode)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x.shape, "forward")
        implementation = self.implementation
        if implementation == "auto":
            backward = torch.is_grad_enabled() and (
                x.requires_grad or any(p.requires_grad for p in self.parameters())
            )
            implementation = self._auto_implementation(x.shape, backward, x.device)
        padding = self.padding
        if self.padding_mode != "zeros":
            widths = [p for size in reversed(padding) for p in (size, size)]
            x = F.pad(x, widths, mode=self.padding_mode)
            padding = (0,) * self.ndim
        if implementation == "reconstructed":
            return _CONV[self.ndim](
                x, self._dense_kernel(), self.bias, stride=self.stride, padding=padding
            )
        return self._factorized(x, padding)

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


class _CPConvNd(_FactorizedConvNd):
    def _create_factors(self, options: dict[str, Any]) -> None:
        rank = self.rank
        self.input_factor = torch.nn.Parameter(torch.empty(rank, self.in_channels, **options))
        self.spatial_factors = torch.nn.ParameterList(
            torch.nn.Parameter(torch.empty(rank, k, **options)) for k in self.kernel_size
        )
        self.output_factor = torch.nn.Parameter(torch.empty(self.out_channels, rank, **options))

    def _factors(self) -> list[torch.Tensor]:
        return [self.input_factor, *self.spatial_factors, self.output_factor]

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

    def _reconstruction_macs(self) -> int:
        # The core (R x C_in x prod k) and the product with the output factor.
        return self.rank * self.fan_in * (1 + self.out_channels)

    def _factorized_operations(
        self, batch: int, sizes: tuple[int, ...], padding: tuple[int, ...]
    ) -> list[tuple[str, int, int]]:
        rank, current = self.rank, list(sizes)
        pixels = batch * math.prod(current)
        operations = [("projection", pixels * self.in_channels * rank, pixels * rank)]
        for axis, k in enumerate(self.kernel_size):
            current[axis] = max(0, (current[axis] + 2 * padding[axis] - k) // self.stride[axis] + 1)
            outputs = batch * rank * math.prod(current)
            operations.append(("depthwise", outputs * k, outputs))
        pixels = batch * math.prod(current)
        operations.append(
            ("projection", pixels * rank * self.out_channels, pixels * self.out_channels)
        )
        return operations

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

    def _factorized(self, x: torch.Tensor, padding: tuple[int, ...]) -> torch.Tensor:
        # Channels-last throughout: the projections are matrix products over the last
        # (channel) axis and the depthwise convolutions run on oneDNN's channels-last
        # kernels, several times faster on CPU than in NCHW (see the module notes).
        convolution = _CONV[self.ndim]
        to_last = (0, *range(2, self.ndim + 2), 1)
        to_first = (0, self.ndim + 1, *range(1, self.ndim + 1))
        h = F.linear(x.permute(to_last), self.input_factor).permute(to_first)
        for axis, factor in enumerate(self.spatial_factors):
            shape = [1] * self.ndim
            shape[axis] = factor.shape[1]
            stride, pad = [1] * self.ndim, [0] * self.ndim
            stride[axis], pad[axis] = self.stride[axis], padding[axis]
            weight = factor.reshape(self.rank, 1, *shape)
            if self.ndim == 3 and axis == 0:
                # Along depth, as a 2-D convolution over (depth, height x width): the
                # same memory (H and W merge in channels-last), and oneDNN's 3-D depthwise
                # kernels are 5-25x slower along depth than along the other axes.
                sizes = h.shape[3:]
                h = F.conv2d(
                    h.flatten(3),
                    weight.flatten(3),
                    stride=stride[:2],
                    padding=pad[:2],
                    groups=self.rank,
                ).unflatten(3, sizes)
                continue
            h = convolution(h, weight, stride=stride, padding=pad, groups=self.rank)
        # One fused matrix product and bias (addmm) when the result is channels-last.
        return F.linear(h.permute(to_last), self.output_factor, self.bias).permute(to_first)


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
    implementation : {"auto", "factorized", "reconstructed"}, default "auto"
        ``"factorized"`` runs 1x1 -> 1-D depthwise along y -> along x -> 1x1 (fewer FLOPs
        when ``R`` is small); ``"reconstructed"`` builds the dense kernel and runs one
        convolution; ``"auto"`` picks, call by call, the one the cost model finds cheaper
        for the input's shape, with or without a backward pass (:meth:`choose_implementation`,
        deterministic; always ``"reconstructed"`` off the CPU). All compute the same
        function. The attribute of the same name may be changed after construction.

    Notes
    -----
    Parameters: ``R (C_in + C_out + k_h + k_w) + C_out`` (with bias) versus
    ``C_out C_in k_h k_w + C_out`` dense (:meth:`parameter_count`,
    :meth:`dense_parameter_count`). Multiply-adds per output pixel, factorized:
    ``R (C_in s_h s_w + k_h s_w + k_w + C_out)`` for strides ``s`` versus
    ``C_out C_in k_h k_w``, plus ``R C_in k_h k_w (C_out + 1)`` per call to reconstruct the
    kernel (:meth:`operations`, :meth:`implementation_costs`).

    With ``"auto"`` or ``"reconstructed"``, in evaluation mode (``model.eval()``) and
    without autograd (``torch.no_grad()``/``torch.inference_mode()``), the dense kernel
    is built once and reused until a parameter changes (in place, through an optimiser or
    ``load_state_dict``, or to new storage); a write through ``parameter.data`` is not
    seen, so call :meth:`train` (or ``eval()``) after one.

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


class _SeparableConvNd(_FactorizedConvNd):
    def _create_factors(self, options: dict[str, Any]) -> None:
        shape = (self.out_channels, self.in_channels, self.rank)
        self.filters = torch.nn.ParameterList(
            torch.nn.Parameter(torch.empty(*shape, k, **options)) for k in self.kernel_size
        )

    def _factors(self) -> list[torch.Tensor]:
        return list(self.filters)

    def to_dense(self) -> torch.Tensor:
        """The equivalent dense weight ``(C_out, C_in, *kernel_size)`` (differentiable)."""
        kernel = self.filters[0]
        for factor in self.filters[1:]:
            middle = (1,) * (kernel.ndim - 3)
            kernel = kernel[..., None] * factor.reshape(*factor.shape[:3], *middle, -1)
        return kernel.sum(dim=2)

    def _reconstruction_macs(self) -> int:
        return self.out_channels * self.rank * self.fan_in

    def _factorized_operations(
        self, batch: int, sizes: tuple[int, ...], padding: tuple[int, ...]
    ) -> list[tuple[str, int, int]]:
        channels = self.in_channels * self.out_channels * self.rank
        current, operations = list(sizes), []
        for step, axis in enumerate((*range(self.ndim - 1, 0, -1), 0)):
            k = self.kernel_size[axis]
            if axis == 0:  # regroup the channels, then sum C_in R of them per output
                moved = batch * channels * math.prod(current)
                operations.append(("regroup", moved, moved))
            current[axis] = max(0, (current[axis] + 2 * padding[axis] - k) // self.stride[axis] + 1)
            outputs = batch * channels * math.prod(current)
            if axis == 0:
                pixels = batch * math.prod(current)
                operations.append(("grouped", outputs * k, pixels * self.out_channels))
            else:
                operations.append(("expand" if step == 0 else "depthwise", outputs * k, outputs))
        return operations

    @classmethod
    def parameter_count(
        cls,
        in_channels: int,
        out_channels: int,
        kernel_size: int | Sequence[int],
        rank: int,
        bias: bool = True,
    ) -> int:
        """``out_channels * in_channels * rank * sum(kernel_size) + bias * out_channels``."""
        kernel = _tuple(kernel_size, cls.ndim, "kernel_size", cls.__name__, 1)
        return out_channels * in_channels * rank * sum(kernel) + (out_channels if bias else 0)

    def _factorized(self, x: torch.Tensor, padding: tuple[int, ...]) -> torch.Tensor:
        # Along the last axis, every input channel i becomes C_out R channels (i, o, r)
        # (a grouped convolution with C_in groups); along the middle axes (3-D) a
        # depthwise convolution of those; the channels are regrouped as (o, i, r); along
        # the first axis, a grouped convolution with C_out groups sums each output
        # channel's C_in R terms.
        convolution = _CONV[self.ndim]
        cin, cout, rank, ndim = self.in_channels, self.out_channels, self.rank, self.ndim
        channels = cin * cout * rank

        def one_way(
            h: torch.Tensor, axis: int, weight: torch.Tensor, groups: int, **extra: Any
        ) -> torch.Tensor:
            shape, stride, pad = [1] * ndim, [1] * ndim, [0] * ndim
            shape[axis] = weight.shape[-1]
            stride[axis], pad[axis] = self.stride[axis], padding[axis]
            weight = weight.reshape(*weight.shape[:2], *shape)
            return convolution(h, weight, stride=stride, padding=pad, groups=groups, **extra)

        h = x
        for axis in range(ndim - 1, 0, -1):
            weight = self.filters[axis].transpose(0, 1).reshape(channels, 1, -1)
            h = one_way(h, axis, weight, cin if axis == ndim - 1 else channels)
        to_last = (0, *range(2, ndim + 2), 1)
        to_first = (0, ndim + 1, *range(1, ndim + 1))
        last = h.permute(to_last)
        last = last.unflatten(-1, (cin, cout, rank)).transpose(-3, -2).reshape(last.shape)
        weight = self.filters[0].reshape(cout, cin * rank, -1)
        return one_way(last.permute(to_first), 0, weight, cout, bias=self.bias)


class SeparableConv2d(_SeparableConvNd):
    """A 2-D convolution whose every kernel is a sum of ``rank`` outer products of 1-D
    filters: a priori compression read kernel by kernel (see the module notes).

    .. math::

        W_{o, i, y, x} = \\sum_{r=1}^{R} a_{o i r y}\\, b_{o i r x},

    a rank-``R`` truncated SVD of each ``k_h x k_w`` kernel, trained from scratch: the
    "2-way kernels replaced by one-way filters" of Boukraichi et al. (2023) in its most
    literal reading. ``filters[0]`` holds ``a`` ``(C_out, C_in, R, k_h)`` and
    ``filters[1]`` holds ``b`` ``(C_out, C_in, R, k_w)``.

    Parameters
    ----------
    in_channels, out_channels : int
    kernel_size : int or (int, int)
    rank : int
        ``R``, the number of rank-one terms of each kernel.
    stride, padding : int or (int, int), default 1 and 0
    bias : bool, default True
    padding_mode : {"zeros", "reflect", "replicate", "circular"}, default "zeros"
    implementation : {"auto", "factorized", "reconstructed"}, default "auto"
        ``"factorized"`` runs a 1-D convolution along x from ``C_in`` to
        ``C_in C_out R`` channels (``C_in`` groups), then a 1-D convolution along y that sums
        each output channel's ``C_in R`` terms (``C_out`` groups); ``"reconstructed"``
        builds the dense kernel and runs one convolution; ``"auto"`` chooses per call as in
        :class:`CPConv2d`.

    Notes
    -----
    Parameters: ``C_out C_in R (k_h + k_w) + C_out`` (with bias, :meth:`parameter_count`)
    versus ``C_out C_in k_h k_w + C_out`` dense: a saving only when ``R (k_h + k_w) < k_h
    k_w`` (``R <= 2`` for 5x5 kernels, ``R = 1`` for 3x3). Multiply-adds per output pixel,
    factorized (stride 1): ``C_out C_in R (k_h + k_w)``, the same ratio to dense, but
    through a ``C_in C_out R``-channel intermediate and grouped convolutions that run far
    below a dense convolution's rate, so ``"auto"`` mostly reconstructs. Initialisation
    and the evaluation-mode kernel cache are those of :class:`CPConv2d`.

    Examples
    --------
    >>> import torch
    >>> from physnet.nn import SeparableConv2d
    >>> layer = SeparableConv2d(4, 8, kernel_size=5, rank=2, padding=2)
    >>> x = torch.randn(2, 4, 12, 12)
    >>> torch.allclose(layer(x), layer.to_conv()(x), atol=1e-5)
    True
    >>> sum(p.numel() for p in layer.parameters()), SeparableConv2d.parameter_count(4, 8, 5, 2)
    (648, 648)
    """

    ndim = 2


_CP = {2: CPConv2d, 3: CPConv3d}


def compress_convs(
    model: torch.nn.Module,
    rank: int | float,
    *,
    implementation: str = "auto",
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
    implementation : {"auto", "factorized", "reconstructed"}, default "auto"

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
    _check_implementation("compress_convs", implementation)
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
