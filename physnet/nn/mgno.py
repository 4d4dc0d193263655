"""MgNO: the multigrid neural operator (He, Liu and Xu, ICLR 2024), for fields on 2-D grids.

Every linear map of the network is a multi-channel multigrid V-cycle with learned
convolutions; a layer is ``u ← GELU(V-cycle(u) + W u + b)``. Unlike the reference code this
version accepts any grid size, enforces Dirichlet values exactly when asked, keeps periodic
prolongations periodic, restricts the residual (the paper) or the source (the reference code)
by a switch, and maps any number of input channels to any number of output channels.

:class:`MgNO` keeps its convolution weights in the channels-last memory format, so oneDNN
runs every convolution of the network on channels-last activations, its fastest layout on
CPU (a training step at 64×64 takes about 10–20 % less time than with contiguous weights,
``benchmarks/mgno_speed.py``). Values, parameters and checkpoints do not change;
``model.to(memory_format=torch.contiguous_format)`` restores the original layout.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from physnet.nn._checks import is_int, per_channel
from physnet.nn._registry import Model

__all__ = ["MgNO", "MultigridCycle"]

BOUNDARIES = ("dirichlet", "periodic", "neumann")
RESTRICTIONS = ("source", "residual")
KERNEL_SCALINGS = ("moments", "none")
FINE_LEVELS = ("interpolate", "reuse")
FIXED_LEVEL = -1  # level_plan's mark of a level that only restricts and interpolates
_PADDING_MODES = {"dirichlet": "zeros", "periodic": "circular", "neumann": "reflect"}
_FUNCTIONAL_PADDING = {"periodic": "circular", "neumann": "reflect"}


class MultigridCycle(torch.nn.Module):
    """One multi-channel multigrid V-cycle ``f ↦ u`` with learned convolutions (linear).

    With ``f`` the input (``source_channels`` channels) and ``u`` the output
    (``solution_channels``), level ``ℓ = 0`` being the input grid:

    - smoothing: ``u ← u + S ∗ (f − A ∗ u)``, ``A`` a 3×3 convolution ``u → f`` channels and
      ``S`` one ``f → u``; a step from ``u = 0`` is ``u = S ∗ f`` (no ``A``);
    - down: ``"source"`` restriction (the reference code) sets ``f_{ℓ+1} = R ∗ f_ℓ`` and
      ``u_{ℓ+1} = Π ∗ u_ℓ``; ``"residual"`` restriction (the paper) sets
      ``f_{ℓ+1} = R ∗ (f_ℓ − A ∗ u_ℓ)`` and ``u_{ℓ+1} = 0``. ``R`` and ``Π`` are 3×3
      convolutions with stride 2 (coarse node ``j`` sits on fine node ``2j``);
    - up: ``u_ℓ ← u_ℓ + P(u_{ℓ+1})``, ``P`` a stride-2 transposed convolution with a 4×4
      kernel, followed by the level's post-smoothing steps.

    Parameters
    ----------
    source_channels, solution_channels : int
    smoothing : sequence of (int, int)
        ``[pre, post]`` smoothing steps per level, finest first; its length is the number of
        levels.
    boundary : {"dirichlet", "periodic", "neumann"}
        Zero, circular or reflecting padding of every convolution.
    restriction : {"source", "residual"}
    bias : bool
        Biases on the smoothing convolutions ``A`` and ``S``.
    reference_grid : int or (int, int), optional
        Make the cycle resolution-consistent (see :func:`level_plan`): the schedule's levels
        belong to grids of this many nodes per axis, finest first, and a grid with another
        spacing gets levels added (finer grids) or dropped (coarser ones) so that every
        level keeps the physical spacing it was trained at (``fine_levels`` says what the
        added levels do); where a spacing differs from the trained one (a grid size that is
        not the reference's times a power of 2) the learned ``A`` and ``S`` kernels are
        rescaled to it (``kernel_scaling``). Without it (the reference behaviour) the cycle
        always has ``len(smoothing)`` levels, whatever the grid.
    kernel_scaling : {"moments", "none"}, default "moments"
        How a level's ``A`` and ``S`` follow the ratio ``s = h_trained / h`` of grid spacings
        when ``reference_grid`` is set: ``"moments"`` keeps the continuous operator a
        kernel discretises, scaling its moment ``Σ K(i, j) iᵖ jᑫ`` by ``s_xᵖ s_yᑫ`` for ``A``
        (a differential operator) and by ``s_xᵖ⁻¹ s_yᑫ⁻¹`` for ``S`` (a smoother, the inverse
        of a second-order operator: ``h²`` times a stencil); ``"none"`` reuses the kernels as
        they are. Restrictions and prolongations (averaging and interpolation) never change.
    fine_levels : {"interpolate", "reuse"}, default "interpolate"
        What a level finer than the finest trained one does: ``"interpolate"`` restricts
        the source by full weighting and interpolates the coarser levels' solution back
        bilinearly (no learned weights: the network adds no operator at scales it never
        saw); ``"reuse"`` runs the finest trained level's modules there, their ``A`` and
        ``S`` rescaled by ``kernel_scaling``.

    Raises
    ------
    ValueError
        For an invalid argument, naming it and the accepted values.

    Examples
    --------
    >>> import torch
    >>> from physnet.nn import MultigridCycle
    >>> cycle = MultigridCycle(1, 4, [[1, 1], [1, 1], [2, 0]], boundary="periodic")
    >>> cycle(torch.zeros(2, 1, 17, 12)).shape
    torch.Size([2, 4, 17, 12])
    """

    def __init__(
        self,
        source_channels: int,
        solution_channels: int,
        smoothing: Sequence[Sequence[int]],
        boundary: str = "dirichlet",
        restriction: str = "source",
        bias: bool = False,
        reference_grid: int | Sequence[int] | None = None,
        kernel_scaling: str = "moments",
        fine_levels: str = "interpolate",
    ) -> None:
        super().__init__()
        for key, value in (
            ("source_channels", source_channels),
            ("solution_channels", solution_channels),
        ):
            if not is_int(value) or value < 1:
                raise ValueError(f"MultigridCycle: {key} must be a positive integer, got {value!r}")
        _check_choice("MultigridCycle", "boundary", boundary, BOUNDARIES)
        _check_choice("MultigridCycle", "restriction", restriction, RESTRICTIONS)
        self.smoothing = _check_smoothing("MultigridCycle", smoothing)
        _check_choice("MultigridCycle", "kernel_scaling", kernel_scaling, KERNEL_SCALINGS)
        _check_choice("MultigridCycle", "fine_levels", fine_levels, FINE_LEVELS)
        self.reference_grid = _check_reference_grid("MultigridCycle", reference_grid)
        self.kernel_scaling = kernel_scaling
        self.fine_levels = fine_levels
        self.boundary = boundary
        self.restriction = restriction
        padding_mode = _PADDING_MODES[boundary]

        def convolution(channels_in: int, channels_out: int, stride: int = 1, **options) -> Any:
            return torch.nn.Conv2d(
                channels_in,
                channels_out,
                3,
                stride=stride,
                padding=1,
                padding_mode=padding_mode,
                **options,
            )

        def step(with_operator: bool) -> torch.nn.ModuleDict:
            modules = {"S": convolution(source_channels, solution_channels, bias=bias)}
            if with_operator:
                modules["A"] = convolution(solution_channels, source_channels, bias=bias)
            return torch.nn.ModuleDict(modules)

        levels = len(self.smoothing)
        self.pre_smoothing = torch.nn.ModuleList()
        self.restrictions = torch.nn.ModuleList()
        # Which u are identically zero (no step has touched them) decides which modules exist:
        # a step from u = 0 needs no A, a zero u needs no projection, residual or prolongation.
        zero_after_pre = []
        u_zero = True  # u is zero on entering the finest level
        for level, (pre, _) in enumerate(self.smoothing):
            self.pre_smoothing.append(
                torch.nn.ModuleList(step(with_operator=not (u_zero and i == 0)) for i in range(pre))
            )
            u_zero = u_zero and pre == 0
            zero_after_pre.append(u_zero)
            if level == levels - 1:
                break
            down = torch.nn.ModuleDict(
                {"R": convolution(source_channels, source_channels, stride=2, bias=False)}
            )
            if not u_zero and restriction == "source":
                down["Pi"] = convolution(solution_channels, solution_channels, 2, bias=False)
            if not u_zero and restriction == "residual":
                down["A"] = convolution(solution_channels, source_channels, bias=bias)
            self.restrictions.append(down)
            u_zero = u_zero or restriction == "residual"  # residual restriction restarts u
        post_smoothing: list[torch.nn.ModuleList] = [torch.nn.ModuleList()] * levels
        prolongations: list[torch.nn.Module] = [torch.nn.Identity()] * (levels - 1)
        u_zero = zero_after_pre[-1]
        for level in range(levels - 1, -1, -1):
            if level < levels - 1:
                if not u_zero:
                    prolongations[level] = torch.nn.ConvTranspose2d(
                        solution_channels, solution_channels, 4, stride=2, padding=1, bias=False
                    )
                u_zero = u_zero and zero_after_pre[level]
            post = self.smoothing[level][1]
            post_smoothing[level] = torch.nn.ModuleList(
                step(with_operator=not (u_zero and i == 0)) for i in range(post)
            )
            u_zero = u_zero and post == 0
        self.post_smoothing = torch.nn.ModuleList(post_smoothing)
        self.prolongations = torch.nn.ModuleList(prolongations)

    def _prolong(self, index: int, coarse: torch.Tensor, fine_shape: Sequence[int]) -> Any:
        layer = self.prolongations[index]
        height, width = fine_shape
        if self.boundary == "dirichlet":
            # Coarse node j sits on fine node 2j; the transposed convolution gives 2 * coarse
            # points, one too many for an odd fine size: the last one lies outside the grid.
            return layer(coarse)[..., :height, :width]
        # Pad the coarse grid as the boundary condition extends it, so the nodes next to the
        # boundary receive the same contributions as interior ones, then cut the fine grid out
        # (index 2j - 1 + k of the padded output is index 2j - 1 + k - 3 of the unpadded one).
        padded = F.pad(coarse, (1, 1, 1, 1), mode=_FUNCTIONAL_PADDING[self.boundary])
        fine = F.conv_transpose2d(padded, layer.weight, stride=2)
        return fine[..., 3 : 3 + height, 3 : 3 + width]

    def _smooth(self, steps: torch.nn.ModuleList, u: Any, f: torch.Tensor, scale: Any) -> Any:
        for step in steps:
            if u is None:
                u = self._convolve(step["S"], f, scale, -1)
            elif "A" in step:
                u = u + self._convolve(
                    step["S"], f - self._convolve(step["A"], u, scale, 0), scale, -1
                )
            else:  # a step built for a zero u (no A) meets a non-zero one: A = 0 there
                u = u + self._convolve(step["S"], f, scale, -1)
        return u

    def _convolve(self, conv: Any, x: torch.Tensor, scale: Any, shift: int) -> torch.Tensor:
        """``conv(x)`` with its kernel rescaled to the grid-spacing ratio ``scale``."""
        if scale is None or self.kernel_scaling == "none":
            return conv(x)
        weight = _rescale_kernel(conv.weight, scale, shift)
        bias = conv.bias
        if bias is not None and shift:
            bias = bias * (scale[0] * scale[1]) ** shift
        return conv._conv_forward(x, weight, bias)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        plan = self.level_plan(f.shape[-2:])
        sources: list[torch.Tensor] = []
        solutions: list[Any] = []
        u: Any = None
        for position, (level, scale) in enumerate(plan):
            if level == FIXED_LEVEL:  # a grid finer than any trained level: pass f down
                sources.append(f)
                solutions.append(None)
                f = _full_weighting(f, self.boundary)
                continue
            u = self._smooth(self.pre_smoothing[level], u, f, scale)
            sources.append(f)
            solutions.append(u)
            if position == len(plan) - 1:
                break
            down = self.restrictions[level]
            # A level that is the finest trained one or finer starts from u = 0: that is what
            # the trained finest level saw, and its first step may have no A.
            keep_u = plan[position + 1][0] > 0
            if self.restriction == "source":
                f = down["R"](f)
                u = down["Pi"](u) if keep_u and u is not None else None
            else:
                residual = f if u is None else f - self._convolve(down["A"], u, scale, 0)
                f = down["R"](residual)
                u = None
        level, scale = plan[-1]
        u = self._smooth(self.post_smoothing[level], solutions[-1], sources[-1], scale)
        for position in range(len(plan) - 2, -1, -1):
            level, scale = plan[position]
            shape = sources[position].shape[-2:]
            if level == FIXED_LEVEL:
                u = None if u is None else _bilinear_prolongation(u, shape, self.boundary)
                continue
            fine = solutions[position]
            if u is not None:
                correction = self._prolong(level, u, shape)
                fine = correction if fine is None else fine + correction
            u = self._smooth(self.post_smoothing[level], fine, sources[position], scale)
        return u

    def level_plan(self, shape: Sequence[int]) -> list[tuple[int, Any]]:
        """The levels a ``shape`` grid runs, finest first: ``(schedule level, scale)`` pairs.

        Without ``reference_grid`` this is every level of the schedule, unscaled (``scale``
        ``None``). With it, the spacing ratio per axis ``ρ = (n − 1) / (n_ref − 1)`` sets
        ``e = round(log2 √(ρ_y ρ_x))`` extra levels (``e < 0`` drops the ``−e`` finest
        trained ones): grid level ``ℓ ≥ e`` runs schedule level ``ℓ − e`` with the spacing
        ratio ``s = ρ 2^(−e)`` per axis, ``None`` where it is exactly 1 (so the reference
        grid runs the trained network bit for bit); the ``e`` finer levels are ``-1``
        (``fine_levels="interpolate"``) or the finest trained level 0 with
        ``s = ρ 2^(−ℓ)`` (``"reuse"``).

        Examples
        --------
        >>> from physnet.nn import MultigridCycle
        >>> cycle = MultigridCycle(1, 2, [[1, 0]] * 3 + [[2, 0]], reference_grid=33)
        >>> [level for level, _ in cycle.level_plan((65, 65))]
        [-1, 0, 1, 2, 3]
        >>> cycle.fine_levels = "reuse"
        >>> cycle.level_plan((65, 65))[:2]
        [(0, (2.0, 2.0)), (0, None)]
        >>> cycle.level_plan((17, 17))
        [(1, None), (2, None), (3, None)]
        """
        levels = len(self.smoothing)
        if self.reference_grid is None:
            return [(level, None) for level in range(levels)]
        finest = FIXED_LEVEL if self.fine_levels == "interpolate" else 0
        ratios = [(n - 1) / (ref - 1) for n, ref in zip(shape, self.reference_grid, strict=True)]
        extra = round(math.log2(math.sqrt(ratios[0] * ratios[1])))
        extra = max(extra, 1 - levels)  # keep at least the coarsest level
        plan = []
        for position in range(levels + extra):
            level = max(position - extra, 0)
            scale = tuple(ratio * 2.0 ** (level - position) for ratio in ratios)
            if position < extra:
                level = finest
            plan.append((level, None if scale == (1.0, 1.0) else scale))
        return plan


class MgNO(Model, name="mgno"):
    """Multigrid neural operator: layers ``u ← GELU(V-cycle(u) + W u + b)`` on 2-D grids.

    The network maps ``(batch, in_channels, H, W)`` to ``(batch, out_channels, H, W)`` for
    any ``H, W``: the first layer's V-cycle reads the input channels as its source ``f``,
    the following ones read the hidden state; a bias-free 1×1 convolution maps the last
    hidden state to the output. There is no separate lifting layer and no grid-coordinate
    input (as in the reference code).

    Parameters
    ----------
    in_channels, out_channels : int, default 1
    hidden_channels : int, default 24
        Channels of ``u`` in every V-cycle (the reference uses 24 on Darcy).
    n_layers : int, default 4
        Number of MgNO layers (4 for Darcy rough, 5 for Darcy smooth in the reference).
    smoothing : list of [pre, post], default ``[[1, 0]] * 5 + [[2, 0]]``
        Smoothing steps per level, finest first; the number of levels is its length.
        The default is the reference's Darcy schedule (6 levels).
    boundary : {"dirichlet", "periodic", "neumann"}, default "dirichlet"
        Zero, circular (with periodic prolongation) or reflecting padding.
    exact_boundary : bool, default False
        With ``boundary="dirichlet"``, set the output to zero on the outermost grid nodes
        (a nodal grid whose boundary nodes carry the Dirichlet value 0).
    restriction : {"source", "residual"}, default "source"
        What a V-cycle restricts: the source ``f`` with ``u`` projected by its own
        convolution (the reference code) or the residual ``f − A u`` with ``u`` restarted
        from zero (the paper's algorithm).
    bias : bool, default False
        Biases on the smoothing convolutions (the 1×1 branch always has one).
    input_shift, input_scale : float or list of float, default 0 and 1
        The input is normalised as ``(x - input_shift) / input_scale`` (one value, or one
        per input channel) inside the network, so checkpoints read raw data.
    output_scale : float or list of float, default 1
        The head's output is multiplied by it (one value, or one per output channel).
    reference_grid : int or (int, int), optional
        Resolution-consistent mode: the grid (nodes per axis) the schedule belongs to,
        normally the training grid. On a finer or coarser grid every V-cycle adds or drops
        levels so each level keeps its physical spacing, and the learned smoothing kernels
        are rescaled to the spacing (:class:`MultigridCycle`). ``None`` (default) is the
        reference behaviour: the same levels and kernels on every grid. It holds no
        parameters, so it can be set on a trained model (``model.set_reference_grid(64)``).
    kernel_scaling : {"moments", "none"}, default "moments"
    fine_levels : {"interpolate", "reuse"}, default "interpolate"
        What resolution-consistent mode does at spacings other than the trained ones
        (:class:`MultigridCycle`).

    Raises
    ------
    ValueError
        For an invalid argument (naming it and what is accepted) or, in ``forward``, an input
        of the wrong shape or too small for ``boundary="neumann"``.

    Notes
    -----
    Parameter count with ``F`` input channels, ``C`` hidden channels and the default
    schedule (source restriction, no bias): the first V-cycle has ``117 F C`` smoothing,
    ``45 (F² + C²)`` restriction and ``80 C²`` prolongation weights; each further one
    ``117 C² + 90 C² + 80 C²``; plus the 1×1 convolutions and the head. The reference's
    Darcy-rough model (``n_layers=4, hidden_channels=24``) has 572,661.

    References
    ----------
    .. [1] J. He, X. Liu and J. Xu, "MgNO: Efficient parameterization of linear operators via
       multigrid", ICLR 2024, arXiv:2310.19809.

    Examples
    --------
    >>> import torch
    >>> from physnet.nn import MgNO
    >>> model = MgNO(hidden_channels=8, n_layers=2, smoothing=[[1, 0], [1, 0], [2, 0]])
    >>> model(torch.zeros(2, 1, 30, 21)).shape
    torch.Size([2, 1, 30, 21])
    >>> sum(p.numel() for p in MgNO(n_layers=4).parameters())
    572661
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 1,
        hidden_channels: int = 24,
        n_layers: int = 4,
        smoothing: Sequence[Sequence[int]] = ((1, 0),) * 5 + ((2, 0),),
        boundary: str = "dirichlet",
        exact_boundary: bool = False,
        restriction: str = "source",
        bias: bool = False,
        input_shift: float | Sequence[float] = 0.0,
        input_scale: float | Sequence[float] = 1.0,
        output_scale: float | Sequence[float] = 1.0,
        reference_grid: int | Sequence[int] | None = None,
        kernel_scaling: str = "moments",
        fine_levels: str = "interpolate",
    ) -> None:
        super().__init__()
        for key, value in (
            ("in_channels", in_channels),
            ("out_channels", out_channels),
            ("hidden_channels", hidden_channels),
            ("n_layers", n_layers),
        ):
            if not is_int(value) or value < 1:
                raise ValueError(f"MgNO: {key} must be a positive integer, got {value!r}")
        schedule = _check_smoothing("MgNO", smoothing)
        _check_choice("MgNO", "boundary", boundary, BOUNDARIES)
        _check_choice("MgNO", "restriction", restriction, RESTRICTIONS)
        if not isinstance(exact_boundary, bool) or not isinstance(bias, bool):
            raise ValueError(
                f"MgNO: exact_boundary and bias must be booleans, got {exact_boundary!r} and "
                f"{bias!r}"
            )
        if exact_boundary and boundary != "dirichlet":
            raise ValueError(
                f"MgNO: exact_boundary=True needs boundary='dirichlet', got {boundary!r}"
            )
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.levels = len(schedule)
        self.boundary = boundary
        self.exact_boundary = exact_boundary
        self.register_buffer(
            "input_shift",
            per_channel("MgNO", "input_shift", input_shift, in_channels),
            persistent=False,
        )
        self.register_buffer(
            "input_scale",
            per_channel("MgNO", "input_scale", input_scale, in_channels, positive=True),
            persistent=False,
        )
        self.register_buffer(
            "output_scale",
            per_channel("MgNO", "output_scale", output_scale, out_channels, positive=True),
            persistent=False,
        )
        self.cycles = torch.nn.ModuleList(
            MultigridCycle(
                in_channels if layer == 0 else hidden_channels,
                hidden_channels,
                schedule,
                boundary=boundary,
                restriction=restriction,
                bias=bias,
                reference_grid=reference_grid,
                kernel_scaling=kernel_scaling,
                fine_levels=fine_levels,
            )
            for layer in range(n_layers)
        )
        self.pointwise = torch.nn.ModuleList(
            torch.nn.Conv2d(in_channels if layer == 0 else hidden_channels, hidden_channels, 1)
            for layer in range(n_layers)
        )
        self.head = torch.nn.Conv2d(hidden_channels, out_channels, 1, bias=False)
        # Channels-last weights make oneDNN keep every activation channels-last (see the
        # module docstring); physnet.nn.save stores contiguous copies, so files do not change.
        self.to(memory_format=torch.channels_last)

    def set_reference_grid(
        self,
        reference_grid: int | Sequence[int] | None,
        kernel_scaling: str | None = None,
        fine_levels: str | None = None,
    ) -> MgNO:
        """Switch resolution-consistent mode on (a grid) or off (``None``); returns ``self``.

        Examples
        --------
        >>> import torch
        >>> from physnet.nn import MgNO
        >>> model = MgNO(hidden_channels=4, n_layers=1, smoothing=[[1, 0], [2, 0]])
        >>> x = torch.rand(1, 1, 17, 17)
        >>> y = model(x)
        >>> bool(torch.equal(model.set_reference_grid(17)(x), y))  # the same at its own grid
        True
        >>> model(torch.rand(1, 1, 33, 33)).shape  # one more level here
        torch.Size([1, 1, 33, 33])
        """
        grid = _check_reference_grid("MgNO.set_reference_grid", reference_grid)
        options = {"kernel_scaling": kernel_scaling, "fine_levels": fine_levels}
        choices = {"kernel_scaling": KERNEL_SCALINGS, "fine_levels": FINE_LEVELS}
        for key, value in options.items():
            if value is not None:
                _check_choice("MgNO.set_reference_grid", key, value, choices[key])
        for cycle in self.cycles:
            cycle.reference_grid = grid
            for key, value in options.items():
                if value is not None:
                    setattr(cycle, key, value)
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``(batch, in_channels, H, W)`` fields to ``(batch, out_channels, H, W)``."""
        if not torch.compiler.is_compiling():
            self._check_input(x)
        u = (x - self.input_shift) / self.input_scale
        for cycle, pointwise in zip(self.cycles, self.pointwise, strict=True):
            u = F.gelu(cycle(u) + pointwise(u))
        y = self.head(u) * self.output_scale
        if self.exact_boundary:
            y = F.pad(y[..., 1:-1, 1:-1], (1, 1, 1, 1))
        return y

    def _check_input(self, x: torch.Tensor) -> None:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"MgNO.forward: expected an input of shape (batch, {self.in_channels}, H, W), "
                f"got {tuple(x.shape)}"
            )
        height, width = x.shape[-2:]
        if self.exact_boundary and min(height, width) < 3:
            raise ValueError(
                "MgNO.forward: exact_boundary needs at least 3 nodes per axis, got "
                f"{height}x{width}"
            )
        if self.boundary == "neumann":
            coarsest = [_coarse_size(n, self.levels - 1) for n in (height, width)]
            if min(coarsest) < 2:
                raise ValueError(
                    f"MgNO.forward: a {height}x{width} grid has a {coarsest[0]}x{coarsest[1]} "
                    f"coarsest level after {self.levels - 1} coarsenings; reflecting padding "
                    "needs at least 2 points per axis there (use fewer levels or a larger grid)"
                )


def _full_weighting(f: torch.Tensor, boundary: str) -> torch.Tensor:
    """Full-weighting restriction to the grid of every other node (coarse ``j`` = fine ``2j``)."""
    taps = torch.tensor([0.25, 0.5, 0.25], dtype=f.dtype, device=f.device)
    kernel = (taps[:, None] * taps[None, :]).expand(f.shape[1], 1, 3, 3)
    mode = _FUNCTIONAL_PADDING.get(boundary, "replicate")
    return F.conv2d(F.pad(f, (1, 1, 1, 1), mode=mode), kernel, stride=2, groups=f.shape[1])


def _bilinear_prolongation(u: torch.Tensor, shape: Sequence[int], boundary: str) -> torch.Tensor:
    """Bilinear interpolation from every other node (coarse ``j`` = fine ``2j``) to ``shape``."""
    taps = torch.tensor([0.5, 1.0, 0.5], dtype=u.dtype, device=u.device)
    kernel = (taps[:, None] * taps[None, :]).expand(u.shape[1], 1, 3, 3)
    padded = F.pad(u, (1, 1, 1, 1), mode=_FUNCTIONAL_PADDING.get(boundary, "replicate"))
    fine = F.conv_transpose2d(padded, kernel, stride=2, groups=u.shape[1])
    return fine[..., 3 : 3 + shape[0], 3 : 3 + shape[1]]


def _rescale_kernel(weight: torch.Tensor, scale: Sequence[float], shift: int) -> torch.Tensor:
    """A 3×3 kernel for a grid ``scale`` times finer per axis (``(s_y, s_x)``), by moments.

    The moments ``m_pq = Σ_ij K(i, j) iᵖ jᑫ`` (``i, j ∈ {−1, 0, 1}``, ``p, q ≤ 2``) determine
    a 3×3 kernel; a kernel discretising a fixed continuous operator has
    ``m_pq ∝ h_y^(−p) h_x^(−q)``, so the finer grid's kernel has ``m_pq s_yᵖ s_xᑫ`` —
    times ``(s_y s_x)^shift`` (``shift = −1`` for a smoother, which is ``h²`` times a
    stencil). ``K' = T_y K T_xᵀ`` with ``T = V⁻¹ diag(1, s, s²) V``, ``V_pi = iᵖ``.
    """
    nodes = torch.tensor([-1.0, 0.0, 1.0], dtype=torch.float64)
    vandermonde = torch.stack([nodes**p for p in range(3)])
    inverse = torch.linalg.inv(vandermonde)
    rows, cols = (
        (inverse @ torch.diag(torch.tensor([1.0, s, s * s], dtype=torch.float64)) @ vandermonde)
        for s in scale
    )
    rows = rows.to(weight.dtype) * (scale[0] * scale[1]) ** shift
    cols = cols.to(weight.dtype)
    return torch.einsum("ia,ocab,jb->ocij", rows, weight, cols)


def _check_reference_grid(owner: str, value: Any) -> tuple[int, int] | None:
    if value is None:
        return None
    sizes = [value, value] if is_int(value) else value
    try:
        pair = tuple(sizes)
    except TypeError:
        pair = ()
    if len(pair) != 2 or not all(is_int(n) and n >= 3 for n in pair):
        raise ValueError(
            f"{owner}: reference_grid={value!r}, expected None, a node count >= 3 or a pair of "
            "them (the grid the schedule's finest level belongs to)"
        )
    return (int(pair[0]), int(pair[1]))


def _coarse_size(n: int, coarsenings: int) -> int:
    for _ in range(coarsenings):
        n = (n - 1) // 2 + 1
    return n


def _check_choice(owner: str, key: str, value: Any, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ValueError(
            f"{owner}: {key} {value!r} is unknown; expected one of {', '.join(map(repr, choices))}"
        )


def _check_smoothing(owner: str, smoothing: Any) -> list[tuple[int, int]]:
    try:
        schedule = [tuple(level) for level in smoothing]
    except TypeError:
        schedule = []
    if (
        not schedule
        or any(len(level) != 2 for level in schedule)
        or not all(is_int(count) and count >= 0 for level in schedule for count in level)
    ):
        raise ValueError(
            f"{owner}: smoothing={smoothing!r}, expected a non-empty list of [pre, post] pairs of "
            "non-negative integers, one per level"
        )
    if not any(count for level in schedule for count in level):
        raise ValueError(f"{owner}: smoothing={smoothing!r} has no smoothing step at all")
    return [(int(pre), int(post)) for pre, post in schedule]
