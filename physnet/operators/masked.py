"""The grid Poisson operator on batches of full grids, for training (torch, differentiable).

:class:`~physnet.operators.GridPoisson` is one operator for one geometry, acting on the
unknowns (the fluid cells). Training a network that proposes search directions needs the
same operator on a *batch* of geometries at once, on the full grid, with gradients:
:func:`masked_poisson` applies ``GridPoisson(flags[i], h=h)`` to every sample of a batch
in one vectorised pass of shifted differences and face masks, without a Python loop over
the samples.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any

from physnet import backend
from physnet.operators.poisson import AIR, FLUID, SOLID

__all__ = ["masked_poisson"]

_NAME = "masked_poisson"


def masked_poisson(u: Any, flags: Any, h: float | Sequence[float] = 1.0) -> Any:
    r"""Apply the grid Poisson operator of each sample's flags to a batch of grid fields.

    Parameters
    ----------
    u : torch.Tensor, shape (B, 1, \*grid)
        The fields on the full 2-D or 3-D grids (floating point; gradients flow through).
        Values off the fluid cells are ignored, as if they were zero.
    flags : torch.Tensor, shape (B, 1, \*grid) or (B, \*grid)
        Cell flags per sample, :data:`~physnet.operators.FLUID` (0),
        :data:`~physnet.operators.SOLID` (1) or :data:`~physnet.operators.AIR` (2), as
        integers or as floats holding those values (the form a training batch stacks
        them in). A batch of one is broadcast to every sample of ``u``.
    h : float or sequence of float, default 1.0
        The grid spacing, one for every axis or one per axis.

    Returns
    -------
    torch.Tensor, shape (B, 1, \*grid)
        ``A_i u_i`` on the fluid cells of sample ``i``, where ``A_i`` is
        ``GridPoisson(flags[i], h=h)``, and zero on every other cell; of the dtype and
        device of ``u``.

    Raises
    ------
    TypeError
        If ``u`` or ``flags`` is not a torch tensor, or ``u`` is not floating point.
    ValueError
        Shapes that are not ``(B, 1, *grid)`` with a 2-D or 3-D grid, flags on another
        grid or with another batch size, flag values other than 0, 1 and 2, or a
        spacing that is not positive and finite.

    Notes
    -----
    With :math:`\tilde u = u` on fluid cells and 0 elsewhere, and the face weight
    :math:`w_f = 1/h_d^2` on every interior face along axis :math:`d` with no solid cell
    on either side (0 otherwise, and no flux through the grid's boundary, a wall),

    .. math::

        (A u)_c = -\sum_d \bigl(F_d[c] - F_d[c - e_d]\bigr), \qquad
        F_d[c] = w_{c + e_d/2} \bigl(\tilde u_{c + e_d} - \tilde u_c\bigr),

    on fluid cells :math:`c`. A solid neighbour drops its term; an air neighbour keeps the
    diagonal term and, its :math:`\tilde u` being zero, adds no off-diagonal one: the
    discretisation of :class:`~physnet.operators.GridPoisson` (without coefficients),
    whose rows are reproduced exactly. The cost is a few passes over the batch.

    Examples
    --------
    >>> import numpy as np
    >>> import torch
    >>> from physnet.operators import AIR, SOLID, GridPoisson
    >>> from physnet.operators.masked import masked_poisson
    >>> rng = np.random.default_rng(0)
    >>> flags = rng.choice([0, 0, 0, SOLID, AIR], size=(3, 8, 8)).astype(np.int8)
    >>> u = torch.randn(3, 1, 8, 8, dtype=torch.float64)
    >>> Au = masked_poisson(u, torch.from_numpy(flags), h=0.5)
    >>> A = GridPoisson(flags[1], h=0.5)
    >>> bool(torch.allclose(A.gather(Au[1, 0]), A @ A.gather(u[1, 0])))
    True
    """
    torch = backend.require_torch()
    if not isinstance(u, torch.Tensor) or not isinstance(flags, torch.Tensor):
        raise TypeError(
            f"{_NAME}: u and flags must be torch tensors, got {type(u).__name__} and "
            f"{type(flags).__name__}"
        )
    if not u.is_floating_point():
        raise TypeError(f"{_NAME}: u has dtype {u.dtype}, expected a floating-point tensor")
    if u.ndim not in (4, 5) or u.shape[1] != 1:
        raise ValueError(
            f"{_NAME}: u has shape {tuple(u.shape)}, expected (batch, 1, *grid) with a 2-D "
            "or 3-D grid"
        )
    ndim = u.ndim - 2
    grid = tuple(u.shape[2:])
    if flags.ndim == ndim + 1:
        flags = flags.unsqueeze(1)
    if flags.ndim != ndim + 2 or flags.shape[1] != 1 or tuple(flags.shape[2:]) != grid:
        raise ValueError(
            f"{_NAME}: flags has shape {tuple(flags.shape)}, expected (batch, 1, *{grid}) or "
            f"(batch, *{grid}) like u of shape {tuple(u.shape)}"
        )
    if flags.shape[0] not in (1, u.shape[0]):
        raise ValueError(
            f"{_NAME}: flags holds {flags.shape[0]} samples and u {u.shape[0]}; expected "
            "the same batch size (or flags for one sample, shared by all)"
        )
    spacing = _spacing(h, ndim)
    flags = flags.to(u.device)
    fluid = flags == FLUID
    open_cell = flags != SOLID
    if ((flags != FLUID) & (flags != SOLID) & (flags != AIR)).any():
        raise ValueError(
            f"{_NAME}: flags holds values other than FLUID={FLUID}, SOLID={SOLID} and AIR={AIR}"
        )

    masked = torch.where(fluid, u, u.new_zeros(()))
    result = None
    for d in range(ndim):
        axis = d + 2
        length = grid[d]
        # A face carries flux unless a solid cell lies on either side of it.
        face_open = open_cell.narrow(axis, 0, length - 1) & open_cell.narrow(axis, 1, length - 1)
        flux = torch.diff(masked, dim=axis) * face_open.to(u.dtype)
        wall = flux.new_zeros((*flux.shape[:axis], 1, *flux.shape[axis + 1 :]))
        term = torch.diff(flux, dim=axis, prepend=wall, append=wall) / spacing[d] ** 2
        result = -term if result is None else result - term
    return torch.where(fluid, result, result.new_zeros(()))


def _spacing(h: Any, ndim: int) -> tuple[float, ...]:
    if isinstance(h, numbers.Real) and not isinstance(h, bool):
        spacing = (float(h),) * ndim
    elif isinstance(h, Sequence) and not isinstance(h, str) and len(h) == ndim:
        spacing = tuple(float(v) for v in h)
    else:
        raise ValueError(f"{_NAME}: h={h!r}, expected a number or {ndim} spacings (one per axis)")
    if not all(v > 0 and v < float("inf") for v in spacing):
        raise ValueError(f"{_NAME}: h={h!r}, expected positive finite spacings")
    return spacing
