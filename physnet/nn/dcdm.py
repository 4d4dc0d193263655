"""Networks that propose search directions for the deep conjugate direction method (DCDM).

Two architectures, both mapping a residual on the grid to a direction on the same grid:

- :class:`DCDMPaperNet` (``"dcdm-paper"``), the network of Kaneda et al. (ICML 2023)
  reproduced layer for layer: residual in, 16-channel 3³ convolutions, one pooling level.
- :class:`DCDMMultigridNet` (``"dcdm-multigrid"``), physnet's own: a learned geometric
  multigrid V-cycle whose smoothers are predicted from the fluid/solid/air masks. It is
  linear in the residual, sees the geometry, covers the whole domain and costs about 60
  FLOP per voxel.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from physnet.nn._checks import is_int
from physnet.nn._registry import Model

__all__ = ["DCDMMultigridNet", "DCDMPaperNet", "MultigridState"]

_CONVOLUTIONS = {2: torch.nn.Conv2d, 3: torch.nn.Conv3d}
_AVERAGE_POOLS = {2: F.avg_pool2d, 3: F.avg_pool3d}
_MAX_POOLS = {2: F.max_pool2d, 3: F.max_pool3d}
# (fine convolutions, coarse convolutions, post convolutions) of the published variants.
_PAPER_VARIANTS = {"from64": (4, 6, 4), "from128": (6, 10, 6)}


def _check_input(name: str, x: torch.Tensor, ndim: int, channels: int) -> None:
    if torch.compiler.is_compiling():
        return
    if x.ndim != ndim + 2 or x.shape[1] != channels:
        grid = ", ".join("DHW"[3 - ndim :])
        raise ValueError(
            f"{name}: expected an input of shape (batch, {channels}, {grid}) for ndim={ndim}, "
            f"got {tuple(x.shape)}"
        )


def _pad_to(x: torch.Tensor, shape: tuple[int, ...], value: float = 0.0) -> torch.Tensor:
    """Pad the grid axes of ``x`` at their far ends up to ``shape``."""
    pads: list[int] = []
    for size, target in zip(reversed(x.shape[2:]), reversed(shape), strict=True):
        pads += [0, target - size]
    if not any(pads):
        return x
    return F.pad(x, pads, value=value)


def _crop(x: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    return x[(Ellipsis, *(slice(0, size) for size in shape))]


# ----------------------------------------------------------------------------------------
# The paper's network
# ----------------------------------------------------------------------------------------


class DCDMPaperNet(Model, name="dcdm-paper"):
    """The CNN of the deep conjugate direction method, as published (Kaneda et al. 2023).

    The input is the (normalised) residual on the full grid, solid and air cells included,
    and nothing else: the geometry enters only through the residual's pattern. Every
    convolution is 3^ndim wide with ``channels`` filters, zero-padded ("same").

    Parameters
    ----------
    ndim : {2, 3}, default 3
        Spatial dimensions; the published network is 3D.
    channels : int, default 16
        Filters of every convolution.
    variant : {"from64", "from128"}, default "from64"
        The published network trained at 64³ (15 convolutions) or at 128³ (23).
    init : {"torch", "keras"}, default "torch"
        ``"keras"``: the reference code's initialisation, Glorot-uniform kernels and zero
        biases (drawn after PyTorch's defaults, module by module). At 64³ the input is a
        unit-norm residual of about ``2e-3`` per cell, which PyTorch's default biases (up
        to 0.2) swamp: training from them sat at loss 1.0, from Keras' started to learn.

    Raises
    ------
    ValueError
        For an invalid argument, or in ``forward`` an input of the wrong shape.

    Notes
    -----
    The layers of ``src/train.py`` in the reference code, with :math:`c` a convolution
    followed by ReLU unless marked linear ("from64"; "from128" has 6 fine, 10 coarse and 6
    post convolutions wired the same way):

    .. code-block:: text

        h  = c_lin(r)                              1 -> 16
        a  = c(h);  b = c(a)                       fine level, 4 convolutions:
        a  = c(b) + a;  b = c(a)                   a residual add
        p  = avgpool_2(b)                          coarse level, 6 convolutions:
        q = c(p);  p = c(q) + p      (x 3)         3 residual pairs
        u  = upsample_2(p) + b                     nearest, plus the fine skip
        v = c(u);  u = c(v) + u      (x 2)         2 residual pairs
        y  = Dense(1)(u)                           1x1 convolution 16 -> 1

    Each 16 -> 16 convolution has :math:`27 \\cdot 16 \\cdot 16 + 16 = 6{,}928` parameters
    in 3D, so "from64" has :math:`448 + 14 \\cdot 6{,}928 + 17 = 97{,}457` and "from128"
    :math:`448 + 22 \\cdot 6{,}928 + 17 = 152{,}881`. The wiring of "from128" is not in the
    public code; it repeats the "from64" pattern (its parameter count is exact).

    Cost: a 16 -> 16 3³ convolution is :math:`2 \\cdot 27 \\cdot 256 = 13{,}824` FLOP per
    voxel, so "from64" costs about :math:`1.2 \\cdot 10^5` FLOP per voxel per application
    (the coarse level counts 1/8) and "from128" about :math:`1.8 \\cdot 10^5`, against 13
    for a 7-point matrix-vector product. The receptive field is about ±23 cells
    ("from64"), so at 128³ and beyond the network is a local approximate inverse.

    Odd grid sizes (which the reference code never meets: Keras' "same" pooling would
    not match the upsampled shape) are padded with zeros at the far end to an even size
    and the output is cropped back.

    References
    ----------
    .. [1] A. Kaneda, O. Akar, J. Chen, V. A. T. Kala, D. Hyde and J. Teran, "A deep
       conjugate direction method for iteratively solving linear systems", ICML 2023.

    Examples
    --------
    >>> import torch
    >>> from physnet.nn import DCDMPaperNet
    >>> model = DCDMPaperNet()
    >>> sum(p.numel() for p in model.parameters())
    97457
    >>> model(torch.randn(1, 1, 9, 8, 8)).shape
    torch.Size([1, 1, 9, 8, 8])
    """

    uses_flags = False

    def __init__(
        self, ndim: int = 3, channels: int = 16, variant: str = "from64", init: str = "torch"
    ) -> None:
        super().__init__()
        if init not in ("torch", "keras"):
            raise ValueError(f"DCDMPaperNet: init must be 'torch' or 'keras', got {init!r}")
        if ndim not in _CONVOLUTIONS:
            raise ValueError(f"DCDMPaperNet: ndim must be 2 or 3, got {ndim!r}")
        if not is_int(channels) or channels < 1:
            raise ValueError(f"DCDMPaperNet: channels must be a positive integer, got {channels!r}")
        if variant not in _PAPER_VARIANTS:
            raise ValueError(
                f"DCDMPaperNet: variant {variant!r} is unknown; expected one of "
                f"{', '.join(map(repr, _PAPER_VARIANTS))}"
            )
        self.ndim = ndim
        convolution = _CONVOLUTIONS[ndim]
        n_fine, n_coarse, n_post = _PAPER_VARIANTS[variant]

        def convolutions(count: int) -> torch.nn.ModuleList:
            return torch.nn.ModuleList(
                convolution(channels, channels, 3, padding=1) for _ in range(count)
            )

        self.lift = convolution(1, channels, 3, padding=1)
        self.fine = convolutions(n_fine)
        self.coarse = convolutions(n_coarse)
        self.post = convolutions(n_post)
        self.dense = convolution(channels, 1, 1)
        if init == "keras":
            with torch.no_grad():
                for module in self.modules():
                    if isinstance(module, convolution):
                        torch.nn.init.xavier_uniform_(module.weight)
                        torch.nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map residuals ``(batch, 1, *grid)`` to directions ``(batch, 1, *grid)``."""
        _check_input("DCDMPaperNet.forward", x, self.ndim, 1)
        grid = tuple(x.shape[2:])
        x = _pad_to(x, tuple(size + size % 2 for size in grid))
        relu = torch.relu
        h = self.lift(x)
        a = relu(self.fine[0](h))
        b = relu(self.fine[1](a))
        for k in range(2, len(self.fine), 2):
            a = relu(self.fine[k](b)) + a
            b = relu(self.fine[k + 1](a))
        p = _AVERAGE_POOLS[self.ndim](b, 2)
        for k in range(0, len(self.coarse), 2):
            p = relu(self.coarse[k + 1](relu(self.coarse[k](p)))) + p
        u = F.interpolate(p, scale_factor=2, mode="nearest") + b
        for k in range(0, len(self.post), 2):
            u = relu(self.post[k + 1](relu(self.post[k](u)))) + u
        return _crop(self.dense(u), grid)


# ----------------------------------------------------------------------------------------
# physnet's multigrid network
# ----------------------------------------------------------------------------------------


@dataclass
class _Level:
    """The geometry-dependent tensors of one level, shapes ``(batch, ., *shape)``."""

    shape: tuple[int, ...]
    fluid: torch.Tensor  # 1 on fluid cells
    diagonal: torch.Tensor  # number of non-solid neighbours, on fluid cells
    smoother_scale: list[torch.Tensor]  # S_k = fluid * omega_k / diagonal, one per sweep
    smoother_keep: list[torch.Tensor]  # T_k = fluid * (1 - omega_k)
    transfer_weight: torch.Tensor | None = None  # fluid / P(non-solid coarse), to the next


@dataclass
class MultigridState:
    """What :meth:`DCDMMultigridNet.prepare` computes from the flags, once per geometry.

    Attributes
    ----------
    grid_shape : tuple of int
        The fine grid.
    levels : list
        Per level (finest first): masks, smoother coefficients, transfer weights.
    coarsest_inverse : torch.Tensor or None
        ``(batch, n, n)`` pseudo-inverse of the coarsest operator, or None when the
        coarsest grid is too large for a dense solve (it is smoothed instead).
    """

    grid_shape: tuple[int, ...]
    levels: list[_Level]
    coarsest_inverse: torch.Tensor | None


class DCDMMultigridNet(Model, name="dcdm-multigrid"):
    """A learned geometric multigrid V-cycle that sees the geometry: physnet's DCDM network.

    The input is ``(batch, 2, *grid)``: the residual and the cell flags as floats (0 fluid,
    1 solid, 2 air, as in :class:`physnet.operators.GridPoisson`). The output is a search
    direction on the grid, zero off the fluid cells. For a fixed geometry the map is
    **linear** in the residual, with coefficients predicted from the masks:
    :meth:`prepare` computes them once per geometry and :meth:`apply_prepared` runs the cheap
    residual path, so a solve pays for the geometry once and ~60 FLOP per voxel per
    iteration. ``forward(x) == apply_prepared(x[:, :1], prepare(x[:, 1:]))``.

    Parameters
    ----------
    ndim : {2, 3}, default 3
        Spatial dimensions.
    levels : int or None, default None
        Number of grid levels. ``None`` coarsens while every axis is longer than
        ``coarsest_size`` (6 levels at 128³, 7 at 256³), so the coarsest grid is tiny and
        solved exactly, and the same weights serve every grid size. An integer caps it.
    smoothing_steps : int, default 2
        Smoothing sweeps before and after each coarse-grid correction.
    hidden_channels : int, default 16
        Width of the per-voxel network that predicts the smoother weights from the masks.
    coarsest_size : int, default 4
        Coarsening stops once an axis has at most this many cells.
    max_dense_cells : int, default 1024
        The coarsest level is solved with a dense pseudo-inverse (computed in
        :meth:`prepare`) when it has at most this many cells; above, it gets
        ``4 * smoothing_steps`` sweeps.
    symmetric : bool, default True
        Post-smoothing repeats the pre-smoothing dampings in reverse order, so the cycle is
        a symmetric operator (restriction is the transpose of prolongation): the setting in
        which flexible CG's truncated A-orthogonalisation loses nothing.
    max_damping : float, default 1.0
        Upper bound of the learned dampings, :math:`\\omega = \\omega_{max}\\,\\sigma(\\cdot)`.
        Damped Jacobi with :math:`\\omega \\le 1` converges in the A-norm (the eigenvalues of
        :math:`D^{-1}A` lie in :math:`[0, 2]`), which keeps the symmetric cycle positive
        definite; training with a bound of 2 finds over-relaxed smoothers that are better
        for one step and indefinite as preconditioners.

    Raises
    ------
    ValueError
        For an invalid argument, or an input of the wrong shape.

    Notes
    -----
    *Operators.* On level :math:`\\ell` (level 0 the given grid, level :math:`\\ell + 1`
    of size :math:`\\lceil n/2 \\rceil` per axis; odd sizes are padded with one solid cell)
    a cell is air if any of its children is, else fluid if any child is, else solid: the
    free surface survives coarsening even when it is one fine cell thick (letting fluid win
    instead turns every coarse problem into a pure Neumann one, and the iteration count
    then grows with the grid: 23 / 33 / 48 at 32³ / 64³ / 128³ against 11 / 13 / 14). The
    level's operator is the unit-spacing 7-point (5-point in 2D) Poisson stencil of these
    flags, :math:`A_\\ell u = D_\\ell u - N(u)` on fluid cells, with :math:`D_\\ell` the
    number of non-solid neighbours and :math:`N` the sum over the :math:`2d` neighbours of
    a field that vanishes off the fluid. On level 0 this is exactly ``GridPoisson(flags)``
    (up to :math:`1/h^2`, which the solver's line search absorbs).

    *Smoother.* Sweep :math:`k` is a damped Jacobi step with a learned, spatially varying
    damping :math:`\\omega_k(x) \\in (0, \\omega_{max})`,

    .. math::

        z \\leftarrow z + \\frac{\\omega_k}{D_\\ell}(r - A_\\ell z)
          = T_k z + S_k (r + N(z)), \\qquad S_k = \\frac{\\omega_k}{D_\\ell},\\;
          T_k = 1 - \\omega_k,

    where :math:`(\\omega_1, \\dots, \\omega_s)` (pre-smoothing; post-smoothing runs them in
    reverse, or has its own :math:`s` when ``symmetric=False``) come from a small
    per-voxel network (shared by all levels, so the same weights work at any depth) whose
    inputs are the cell's fluid/solid/air fractions, their means over the neighbours and
    :math:`D_\\ell/2d`: a learned polynomial smoother that adapts to walls and free
    surfaces, in the spirit of NPSDO's mask-driven stencils [2]_.

    *Cycle.* :math:`s` sweeps, restriction of the residual, the cycle on the next level,
    prolongation of its correction, :math:`s` sweeps. Prolongation is cell-centred
    (tri)linear interpolation (weights 3/4, 1/4 per axis) normalised by the interpolated
    non-solid indicator, so walls do not drag the correction to zero while air does;
    restriction is its exact transpose; the correction is scaled by
    :math:`4/2^d` (the coarse stencil is unit-spaced) times a learned scalar. The
    coarsest level (at most ``coarsest_size`` cells on an axis) is solved with the dense
    pseudo-inverse of :math:`A_L`, so the receptive field is the whole domain at every
    size.

    *Cost* per application, FLOP per fine voxel (a multiply-add counts 2): a sweep
    :math:`2d + 4`, the first one 1, the residual :math:`2d + 4`, restriction
    :math:`3 \\sum_{k<d} 2^{-k}`, prolongation :math:`5 \\sum_{k=1}^{d} 2^{-k}`, scaling
    and adding the correction :math:`2 + 2^{-d}`; summed over the levels
    (:math:`\\times 8/7` in 3D) that is 60 FLOP per voxel in 3D with ``smoothing_steps=2``
    (:meth:`flops_per_voxel`), plus :math:`2 n_L^2` for the dense coarsest solve. The
    residual path touches only elementwise products and shifted sums, no small-channel
    convolutions (which are slow on CPUs).

    The learned parts are the smoother network (7 features -> ``hidden_channels`` -> s
    damping factors: 162 parameters by default) and the correction scale;
    at initialisation the network is a plain multigrid V-cycle with :math:`\\omega = 0.7`,
    already a good preconditioner, and training on small grids tunes it for all sizes.
    The directions are not scaled (no normalisation layers, no biases on the residual
    path): :math:`f(\\alpha r) = \\alpha f(r)`, which the line search of FCG makes
    irrelevant. Variable coefficients are not modelled (the operator is the constant-
    coefficient stencil of the flags).

    References
    ----------
    .. [1] A. Kaneda, O. Akar, J. Chen, V. A. T. Kala, D. Hyde and J. Teran, "A deep
       conjugate direction method for iteratively solving linear systems", ICML 2023.
    .. [2] K. W. Lan, E. Gueidon, A. Kaneda, J. Panetta and J. Teran, "A neural-
       preconditioned Poisson solver for mixed Dirichlet and Neumann boundary
       conditions", ICML 2024.
    .. [3] A. McAdams, E. Sifakis and J. Teran, "A parallel multigrid Poisson solver for
       fluids simulation on large grids", SCA 2010.

    Examples
    --------
    >>> import torch
    >>> from physnet.nn import DCDMMultigridNet
    >>> model = DCDMMultigridNet(ndim=3)
    >>> flags = torch.zeros(1, 1, 20, 20, 20)
    >>> flags[..., 0, :, :] = 2.0  # an air layer
    >>> state = model.prepare(flags)
    >>> len(state.levels)
    4
    >>> z = model.apply_prepared(torch.randn(1, 1, 20, 20, 20), state)
    >>> z.shape, bool(z[..., 0, :, :].abs().max() == 0)
    (torch.Size([1, 1, 20, 20, 20]), True)
    >>> model.flops_per_voxel(3)
    60
    """

    uses_flags = True

    def __init__(
        self,
        ndim: int = 3,
        levels: int | None = None,
        smoothing_steps: int = 2,
        hidden_channels: int = 16,
        coarsest_size: int = 4,
        max_dense_cells: int = 1024,
        symmetric: bool = True,
        max_damping: float = 1.0,
    ) -> None:
        super().__init__()
        if ndim not in _CONVOLUTIONS:
            raise ValueError(f"DCDMMultigridNet: ndim must be 2 or 3, got {ndim!r}")
        if levels is not None and (not is_int(levels) or levels < 1):
            raise ValueError(
                f"DCDMMultigridNet: levels must be a positive integer or None, got {levels!r}"
            )
        for key, value, low in (
            ("smoothing_steps", smoothing_steps, 1),
            ("hidden_channels", hidden_channels, 1),
            ("coarsest_size", coarsest_size, 1),
            ("max_dense_cells", max_dense_cells, 0),
        ):
            if not is_int(value) or value < low:
                raise ValueError(
                    f"DCDMMultigridNet: {key} must be an integer >= {low}, got {value!r}"
                )
        if not isinstance(symmetric, bool):
            raise ValueError(f"DCDMMultigridNet: symmetric must be a bool, got {symmetric!r}")
        if (
            not isinstance(max_damping, (int, float))
            or isinstance(max_damping, bool)
            or not 0.0 < max_damping <= 2.0
        ):
            raise ValueError(
                f"DCDMMultigridNet: max_damping must be a number in (0, 2], got {max_damping!r}"
            )
        self.ndim = ndim
        self.levels = levels
        self.symmetric = symmetric
        self.max_damping = float(max_damping)
        self.smoothing_steps = smoothing_steps
        self.coarsest_size = coarsest_size
        self.max_dense_cells = max_dense_cells
        n_features = 7
        n_dampings = smoothing_steps if symmetric else 2 * smoothing_steps
        self.smoother_hidden = torch.nn.Linear(n_features, hidden_channels)
        self.smoother_out = torch.nn.Linear(hidden_channels, n_dampings)
        # Start as damped Jacobi with omega = 0.7 everywhere (half the bound when the bound is
        # lower), with small weights so every parameter has a gradient from the first step.
        omega = 0.7 if self.max_damping > 0.7 else 0.5 * self.max_damping
        fraction = omega / self.max_damping
        with torch.no_grad():
            self.smoother_out.weight.normal_(0.0, 1e-2)
            self.smoother_out.bias.fill_(math.log(fraction / (1.0 - fraction)))
        self.correction_scale = torch.nn.Parameter(torch.tensor(1.0))

    # --- geometry ---------------------------------------------------------------------
    def level_shapes(self, grid_shape: tuple[int, ...]) -> list[tuple[int, ...]]:
        """The grid of every level for a fine grid ``grid_shape``, finest first."""
        shapes = [tuple(int(s) for s in grid_shape)]
        while (self.levels is None or len(shapes) < self.levels) and min(
            shapes[-1]
        ) > self.coarsest_size:
            shapes.append(tuple((s + 1) // 2 for s in shapes[-1]))
        return shapes

    def prepare(self, flags: torch.Tensor) -> MultigridState:
        """Compute the geometry-dependent tensors of every level, once per geometry.

        Parameters
        ----------
        flags : torch.Tensor, shape ``(batch, 1, *grid)``
            Cell flags as numbers: 0 fluid, 1 solid, 2 air.

        Returns
        -------
        MultigridState
            For :meth:`apply_prepared`. Differentiable with respect to the smoother network.
        """
        _check_input("DCDMMultigridNet.prepare", flags, self.ndim, 1)
        dtype = flags.dtype if flags.is_floating_point() else torch.get_default_dtype()
        fluid = (flags < 0.5).to(dtype)
        air = (flags > 1.5).to(dtype)
        shapes = self.level_shapes(tuple(flags.shape[2:]))
        # Fractions of fluid/solid/air (the features) and binary masks, level by level.
        fluid_fraction, air_fraction = fluid, air
        fluid_mask, air_mask, open_mask = fluid, air, fluid + air  # open: not solid
        levels: list[_Level] = []
        open_masks = []
        for index, shape in enumerate(shapes):
            if index > 0:
                padded = tuple(2 * s for s in shape)
                fluid_fraction = _AVERAGE_POOLS[self.ndim](_pad_to(fluid_fraction, padded), 2)
                air_fraction = _AVERAGE_POOLS[self.ndim](_pad_to(air_fraction, padded), 2)
                # Air wins over fluid: a coarse cell with any air child is air, so the
                # free surface (Dirichlet) survives coarsening even when it is one fine
                # cell thick; otherwise the coarse problems lose it and turn pure Neumann.
                air_mask = _MAX_POOLS[self.ndim](_pad_to(air_mask, padded), 2)
                fluid_mask = _MAX_POOLS[self.ndim](_pad_to(fluid_mask, padded), 2)
                fluid_mask = fluid_mask * (1.0 - air_mask)
                open_mask = _MAX_POOLS[self.ndim](_pad_to(open_mask, padded), 2)
            open_masks.append(open_mask)
            levels.append(self._level(shape, fluid_fraction, air_fraction, fluid_mask, open_mask))
        for fine, open_coarse in zip(levels[:-1], open_masks[1:], strict=True):
            weight = _prolong(open_coarse, fine.shape)
            fine.transfer_weight = fine.fluid / weight.clamp_min(1e-3)
        coarsest = levels[-1]
        inverse = None
        if math.prod(coarsest.shape) <= self.max_dense_cells:
            inverse = self._coarsest_inverse(coarsest)
        return MultigridState(tuple(flags.shape[2:]), levels, inverse)

    def _level(
        self,
        shape: tuple[int, ...],
        fluid_fraction: torch.Tensor,
        air_fraction: torch.Tensor,
        fluid_mask: torch.Tensor,
        open_mask: torch.Tensor,
    ) -> _Level:
        n_neighbours = 2 * self.ndim
        solid_fraction = 1.0 - fluid_fraction - air_fraction
        inside = _neighbour_sum(torch.ones_like(fluid_mask))  # neighbours within the grid
        diagonal = _neighbour_sum(open_mask) * fluid_mask
        features = torch.cat(
            [
                fluid_fraction,
                solid_fraction,
                air_fraction,
                _neighbour_sum(fluid_fraction) / n_neighbours,
                (_neighbour_sum(solid_fraction) + n_neighbours - inside) / n_neighbours,
                _neighbour_sum(air_fraction) / n_neighbours,
                diagonal / n_neighbours,
            ],
            dim=1,
        )
        hidden = torch.tanh(self.smoother_hidden(features.movedim(1, -1)))
        omega = (self.max_damping * torch.sigmoid(self.smoother_out(hidden))).movedim(-1, 1)
        sweeps = list(range(omega.shape[1]))
        if self.symmetric:  # post-smoothing = the pre-smoothing sweeps in reverse order
            sweeps += sweeps[::-1]
        inverse_diagonal = fluid_mask / diagonal.clamp_min(1.0)
        scale = [inverse_diagonal * omega[:, k : k + 1] for k in sweeps]
        keep = [fluid_mask * (1.0 - omega[:, k : k + 1]) for k in sweeps]
        return _Level(shape, fluid_mask, diagonal, scale, keep)

    def _coarsest_inverse(self, level: _Level) -> torch.Tensor:
        """Pseudo-inverse of the coarsest operator, ``(batch, n, n)``, zero off the fluid."""
        with torch.no_grad():
            batch = level.fluid.shape[0]
            cells = math.prod(level.shape)
            fluid = level.fluid.double().reshape(batch, cells)
            identity = torch.eye(cells, dtype=torch.float64, device=fluid.device)
            basis = (identity.unsqueeze(0) * fluid.unsqueeze(1)).reshape(
                batch * cells, 1, *level.shape
            )
            diagonal = level.diagonal.double().repeat_interleave(cells, dim=0)
            columns = diagonal * basis - _neighbour_sum(basis)
            matrix = columns.reshape(batch, cells, cells) * fluid.unsqueeze(1)
            matrix = matrix.transpose(1, 2) * fluid.unsqueeze(1)
            inverse = torch.linalg.pinv(matrix, hermitian=True)
        return inverse.to(level.fluid.dtype)

    # --- the residual path ----------------------------------------------------------------
    def apply_prepared(self, residual: torch.Tensor, state: MultigridState) -> torch.Tensor:
        """The direction for ``residual`` ``(batch, 1, *grid)`` on the geometry ``state``."""
        _check_input("DCDMMultigridNet.apply_prepared", residual, self.ndim, 1)
        if tuple(residual.shape[2:]) != state.grid_shape:
            raise ValueError(
                f"DCDMMultigridNet.apply_prepared: the residual's grid {tuple(residual.shape[2:])} "
                f"differs from the prepared geometry's {state.grid_shape}"
            )
        return self._cycle(residual, state, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``(batch, 2, *grid)`` = [residual, flags] to directions ``(batch, 1, *grid)``."""
        _check_input("DCDMMultigridNet.forward", x, self.ndim, 2)
        return self.apply_prepared(x[:, :1], self.prepare(x[:, 1:]))

    def _sweep(self, z: torch.Tensor, r: torch.Tensor, level: _Level, k: int) -> torch.Tensor:
        scale, keep = level.smoother_scale[k], level.smoother_keep[k]
        update = _neighbour_sum(z).add_(r).mul_(scale)
        return torch.addcmul(update, keep, z)

    def _defect(self, z: torch.Tensor, r: torch.Tensor, level: _Level) -> torch.Tensor:
        """``(r - A z) * transfer_weight``: the residual handed to the coarser level."""
        weight = level.transfer_weight
        defect = torch.addcmul(_neighbour_sum(z).add_(r), level.diagonal, z, value=-1.0)
        return defect.mul_(weight)

    def _cycle(self, r: torch.Tensor, state: MultigridState, index: int) -> torch.Tensor:
        level = state.levels[index]
        steps = self.smoothing_steps
        if index == len(state.levels) - 1:
            if state.coarsest_inverse is not None:
                batch = r.shape[0]
                flat = torch.bmm(state.coarsest_inverse, r.reshape(batch, -1, 1))
                return flat.reshape(r.shape)
            z = r * level.smoother_scale[0]
            for sweep in range(1, 4 * steps):
                z = self._sweep(z, r, level, sweep % (2 * steps))
            return z
        z = r * level.smoother_scale[0]
        for k in range(1, steps):
            z = self._sweep(z, r, level, k)
        defect = self._defect(z, r, level)
        coarse_shape = state.levels[index + 1].shape
        correction = self._cycle(_restrict(defect, coarse_shape), state, index + 1)
        correction = correction * (self.correction_scale * (4.0 / 2**self.ndim))
        z = torch.addcmul(z, level.transfer_weight, _prolong(correction, level.shape))
        for k in range(steps, 2 * steps):
            z = self._sweep(z, r, level, k)
        return z

    # --- descriptions -------------------------------------------------------------------
    def flops_per_voxel(self, ndim: int | None = None) -> int:
        """FLOP per fine voxel of one :meth:`apply_prepared`, all levels included (rounded).

        The asymptotic count for a large grid (a multiply-add counts 2): per level,
        ``1 + (2s - 1)(2d + 4)`` for the sweeps, ``2d + 4`` for the residual,
        ``3 sum_{k<d} 2^-k`` restriction, ``5 sum_{k=1..d} 2^-k`` prolongation and
        ``2 + 2^-d`` for the scaled correction, times ``1 / (1 - 2^-d)`` for the coarser
        levels. The dense coarsest solve (``2 n_L^2`` per sample, under 0.1 per voxel at
        64³) and the boundary slices are left out.
        """
        d = self.ndim if ndim is None else ndim
        s = self.smoothing_steps
        stencil = 2 * d + 4
        per_level = (
            1
            + (2 * s - 1) * stencil
            + stencil
            + 3 * sum(2.0**-k for k in range(d))
            + 5 * sum(2.0**-k for k in range(1, d + 1))
            + 2
            + 2.0**-d
        )
        return round(per_level / (1 - 2.0**-d))

    def receptive_field(self, grid_shape: tuple[int, ...] = (256, 256, 256)) -> int:
        """Radius in cells of the fine-grid region one output depends on, for ``grid_shape``.

        With the dense coarsest solve (the default at every cubic size) every output
        depends on every input: the result is the largest axis of the grid.
        """
        shapes = self.level_shapes(tuple(grid_shape))
        if math.prod(shapes[-1]) <= self.max_dense_cells:
            return max(grid_shape)
        s = self.smoothing_steps
        radius = 4 * s  # coarsest sweeps, in coarsest cells
        for _ in shapes[:-1]:
            # s sweeps, restriction (+2 fine cells), the coarse cycle, prolongation, s sweeps
            radius = 2 * s + 2 + 2 * radius
        return min(radius, max(grid_shape))


def _neighbour_sum(u: torch.Tensor) -> torch.Tensor:
    """Sum of the ``2 d`` face neighbours of every cell; zero beyond the grid."""
    out = torch.zeros_like(u)
    for axis in range(2, u.ndim):
        n = u.shape[axis]
        if n < 2:
            continue
        out.narrow(axis, 1, n - 1).add_(u.narrow(axis, 0, n - 1))
        out.narrow(axis, 0, n - 1).add_(u.narrow(axis, 1, n - 1))
    return out


def _prolong(coarse: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """Cell-centred linear interpolation to ``shape`` (weights 3/4 and 1/4 per axis).

    Beyond the grid the coarse values are continued by the edge value, so constants are
    reproduced exactly; the result is cropped to ``shape`` (odd fine sizes).
    """
    u = coarse
    for axis, size in enumerate(shape, start=2):
        m = u.shape[axis]
        extended = torch.cat([u.narrow(axis, 0, 1), u, u.narrow(axis, m - 1, 1)], dim=axis)
        centre = u * 0.75
        even = torch.add(centre, extended.narrow(axis, 0, m), alpha=0.25)
        odd = torch.add(centre, extended.narrow(axis, 2, m), alpha=0.25)
        u = torch.stack([even, odd], dim=axis + 1).flatten(axis, axis + 1).narrow(axis, 0, size)
    return u


def _restrict(fine: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """The transpose of :func:`_prolong` (odd fine sizes are padded with zeros)."""
    u = _pad_to(fine, tuple(2 * s for s in shape))
    for axis in range(2, u.ndim):
        m = u.shape[axis] // 2
        even = u.narrow(axis, 0, 2 * m).unflatten(axis, (m, 2)).select(axis + 1, 0)
        odd = u.narrow(axis, 0, 2 * m).unflatten(axis, (m, 2)).select(axis + 1, 1)
        c = (even + odd).mul_(0.75)
        if m > 1:
            c.narrow(axis, 0, m - 1).add_(even.narrow(axis, 1, m - 1), alpha=0.25)
            c.narrow(axis, 1, m - 1).add_(odd.narrow(axis, 0, m - 1), alpha=0.25)
        c.narrow(axis, 0, 1).add_(even.narrow(axis, 0, 1), alpha=0.25)
        c.narrow(axis, m - 1, 1).add_(odd.narrow(axis, m - 1, 1), alpha=0.25)
        u = c
    return u
