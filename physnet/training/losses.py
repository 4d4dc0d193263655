"""Losses and metrics for fields on grids: relative Lp, relative H1 and mean squared error.

Every function takes ``(prediction, target)`` tensors of the same shape
``(batch, channels, *grid)``, measures each sample over all its non-batch axes (channels
included, jointly), and then reduces over the batch: ``reduction="mean"`` (the default)
averages the per-sample values, ``"sum"`` adds them, ``"none"`` returns them as a tensor of
shape ``(batch,)``. A loss is therefore independent of the batch size, unlike
neuraloperator's ``LpLoss``/``H1Loss`` whose default sums over the batch.

:data:`LOSSES` maps the names used in training configs to these functions; :func:`get_loss`
looks one up.

Examples
--------
>>> import torch
>>> from physnet.training.losses import get_loss
>>> target = torch.ones(2, 1, 8, 8)
>>> get_loss("relative_l2")(1.1 * target, target)
tensor(0.1000)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from types import MappingProxyType

import torch

from physnet.nn._checks import is_int
from physnet.training.dcdm_loss import dcdm_energy_loss, dcdm_loss, dcdm_unrolled_loss
from physnet.training.multigrid_loss import multigrid_es_loss

__all__ = [
    "LOSSES",
    "get_loss",
    "l1_ssim",
    "mse",
    "relative_h1",
    "relative_l1",
    "relative_l2",
    "relative_lp",
    "slice_ssim",
]

_REDUCTIONS = ("mean", "sum", "none")


def _check(function: str, prediction: torch.Tensor, target: torch.Tensor, min_ndim: int) -> None:
    if prediction.shape != target.shape:
        raise ValueError(
            f"{function}: prediction has shape {tuple(prediction.shape)} and target "
            f"{tuple(target.shape)}; they must be equal (no broadcasting)"
        )
    if prediction.ndim < min_ndim:
        layout = "(batch, channels, *grid)" if min_ndim > 2 else "(batch, ...)"
        raise ValueError(
            f"{function}: expected tensors shaped {layout} with at least {min_ndim} axes, "
            f"got shape {tuple(prediction.shape)}"
        )


def _reduce(function: str, per_sample: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "mean":
        return per_sample.mean()
    if reduction == "sum":
        return per_sample.sum()
    if reduction == "none":
        return per_sample
    raise ValueError(f"{function}: reduction={reduction!r}, expected one of {_REDUCTIONS}")


def relative_lp(
    prediction: torch.Tensor,
    target: torch.Tensor,
    p: float = 2,
    *,
    eps: float = 1e-12,
    reduction: str = "mean",
    slice_axis: int | None = None,
    floor: float = 0.0,
) -> torch.Tensor:
    """Relative Lp error per sample, ``||prediction - target||_p / ||target||_p``.

    Parameters
    ----------
    prediction, target : torch.Tensor
        Same shape ``(batch, ...)``; each sample's norm runs over all its other axes.
    p : float, default 2
        Order of the norm, ``p >= 1`` (``math.inf`` for the maximum norm).
    eps : float, default 1e-12
        Floor on the target's norm, so an all-zero target gives a finite value.
    reduction : {"mean", "sum", "none"}, default "mean"
        Over the batch: mean or sum of the per-sample errors, or the ``(batch,)`` tensor.
    slice_axis : int, optional
        Measure every index along this (non-batch) axis on its own, e.g. every frame of a
        rollout ``(batch, frames, H, W)`` with ``slice_axis=1``: a sample's error is then the
        mean over its slices of ``||error_s||_p / max(||target_s||_p, floor · max_s'
        ||target_s'||_p)``. Unlike one norm over the whole sample, late frames of a decaying
        field weigh as much as the early, large ones.
    floor : float, default 0
        With ``slice_axis``: the smallest denominator, as a fraction of the sample's largest
        slice norm, so that nearly empty slices (a source that has not fired yet) do not
        dominate. ``0 <= floor <= 1``.

    Returns
    -------
    torch.Tensor
        A scalar, or shape ``(batch,)`` for ``reduction="none"``.

    Raises
    ------
    ValueError
        Shapes that differ or have no batch axis, ``p < 1``, an unknown reduction, a
        ``slice_axis`` that is not a non-batch axis, or ``floor`` outside ``[0, 1]``.

    Notes
    -----
    The norms are discrete vector norms over the grid points. On a uniform grid the
    quadrature weight of a continuous norm is the same in numerator and denominator and
    cancels, so this is also the relative error of the continuous Lp norms up to quadrature.

    Examples
    --------
    >>> import torch
    >>> from physnet.training.losses import relative_lp
    >>> target = torch.tensor([[3.0, 4.0], [1.0, 0.0]])
    >>> prediction = torch.tensor([[3.0, 4.5], [1.0, 1.0]])
    >>> relative_lp(prediction, target, reduction="none")
    tensor([0.1000, 1.0000])
    >>> relative_lp(prediction, target)
    tensor(0.5500)

    Per frame: the second frame, 100 times smaller, counts as much as the first.

    >>> frames = torch.tensor([[[1.0, 0.0], [0.01, 0.0]]])  # (batch, frames, points)
    >>> relative_lp(frames + 0.001, frames, slice_axis=1)
    tensor(0.0714)
    """
    _check("relative_lp", prediction, target, 2)
    if not p >= 1:
        raise ValueError(f"relative_lp: p={p!r}, expected p >= 1 (or math.inf)")
    if slice_axis is not None:
        return _reduce(
            "relative_lp",
            _relative_per_slice(prediction, target, p, eps, slice_axis, floor),
            reduction,
        )
    error = (prediction - target).flatten(1)
    numerator = torch.linalg.vector_norm(error, ord=p, dim=1)
    denominator = torch.linalg.vector_norm(target.flatten(1), ord=p, dim=1)
    return _reduce("relative_lp", numerator / denominator.clamp_min(eps), reduction)


def _relative_per_slice(
    prediction: torch.Tensor,
    target: torch.Tensor,
    p: float,
    eps: float,
    slice_axis: int,
    floor: float,
) -> torch.Tensor:
    """The per-sample mean over the slices along ``slice_axis`` of their relative Lp errors."""
    ndim = prediction.ndim
    if not is_int(slice_axis):
        raise ValueError(f"relative_lp: slice_axis must be an integer, got {slice_axis!r}")
    axis = slice_axis + ndim if slice_axis < 0 else slice_axis
    if not 1 <= axis < ndim:
        raise ValueError(
            f"relative_lp: slice_axis={slice_axis} is not a non-batch axis of a "
            f"{ndim}-dimensional tensor"
        )
    if not 0 <= floor <= 1:
        raise ValueError(f"relative_lp: floor={floor!r}, expected 0 <= floor <= 1")

    def norms(x: torch.Tensor) -> torch.Tensor:  # (batch, slices)
        return torch.linalg.vector_norm(x.movedim(axis, 1).flatten(2), ord=p, dim=2)

    reference = norms(target)
    reference = torch.maximum(reference, floor * reference.amax(dim=1, keepdim=True))
    return (norms(prediction - target) / reference.clamp_min(eps)).mean(dim=1)


def relative_l2(
    prediction: torch.Tensor,
    target: torch.Tensor,
    *,
    eps: float = 1e-12,
    reduction: str = "mean",
    slice_axis: int | None = None,
    floor: float = 0.0,
) -> torch.Tensor:
    """Relative L2 error per sample: :func:`relative_lp` with ``p=2`` (and its ``slice_axis``
    and ``floor`` options).

    Examples
    --------
    >>> import torch
    >>> from physnet.training.losses import relative_l2
    >>> relative_l2(torch.tensor([[0.0, 1.0]]), torch.tensor([[0.0, 2.0]]))
    tensor(0.5000)
    """
    return relative_lp(
        prediction, target, 2, eps=eps, reduction=reduction, slice_axis=slice_axis, floor=floor
    )


def relative_l1(
    prediction: torch.Tensor,
    target: torch.Tensor,
    *,
    eps: float = 1e-12,
    reduction: str = "mean",
) -> torch.Tensor:
    """Relative L1 error per sample: :func:`relative_lp` with ``p=1``.

    Examples
    --------
    >>> import torch
    >>> from physnet.training.losses import relative_l1
    >>> relative_l1(torch.tensor([[1.0, 1.0]]), torch.tensor([[1.0, 3.0]]))
    tensor(0.5000)
    """
    return relative_lp(prediction, target, 1, eps=eps, reduction=reduction)


def relative_h1(
    prediction: torch.Tensor,
    target: torch.Tensor,
    spacing: float | Sequence[float] | None = None,
    *,
    eps: float = 1e-12,
    reduction: str = "mean",
) -> torch.Tensor:
    """Relative H1 error per sample on a non-periodic grid.

    .. math::

        \\frac{\\sqrt{\\|e\\|_{L^2}^2 + \\|\\nabla e\\|_{L^2}^2}}
              {\\sqrt{\\|u\\|_{L^2}^2 + \\|\\nabla u\\|_{L^2}^2}},
        \\qquad e = \\hat u - u,

    with ``u`` the target and :math:`\\hat u` the prediction; the norms run over the grid
    axes and the channels of each sample.

    Parameters
    ----------
    prediction, target : torch.Tensor
        Same shape ``(batch, channels, *grid)``, at least 3 points per grid axis. The grid
        holds nodal values with nodes on the boundary of the domain.
    spacing : float or sequence of float, optional
        Grid spacing, one for all axes or one per grid axis. By default ``1 / (n - 1)`` for
        an axis of ``n`` points: the unit square or cube with nodes on its boundary.
        Only the ratio of the two terms depends on it, so it matters: the gradient term
        weighs ``1 / spacing**2`` relative to the value term.
    eps : float, default 1e-12
        Floor on the target's H1 norm, so an all-zero target gives a finite value.
    reduction : {"mean", "sum", "none"}, default "mean"
        Over the batch: mean or sum of the per-sample errors, or the ``(batch,)`` tensor.

    Returns
    -------
    torch.Tensor
        A scalar, or shape ``(batch,)`` for ``reduction="none"``.

    Raises
    ------
    ValueError
        Shapes that differ, fewer than 3 axes or 3 points per grid axis, a spacing of the
        wrong length or not positive, or an unknown reduction.

    Notes
    -----
    Partial derivatives are second-order finite differences that do not wrap around the
    domain: central differences inside and one-sided three-point differences on the
    boundary (:func:`torch.gradient` with ``edge_order=2``). The integrals use the
    trapezoidal rule (half weights on boundary nodes). Both are second-order accurate on
    smooth fields, so the value converges to the continuous relative H1 error as
    :math:`O(h^2)`. neuraloperator's ``H1Loss`` uses periodic differences by default,
    which on a non-periodic field (a Dirichlet Darcy solution, say) differentiate across
    the jump between opposite boundaries and give an O(1) wrong gradient there.

    Examples
    --------
    >>> import math, torch
    >>> from physnet.training.losses import relative_h1
    >>> x = torch.linspace(0, 1, 65, dtype=torch.float64)
    >>> target = torch.sin(math.pi * x)[:, None] * torch.sin(math.pi * x)[None, :]
    >>> error = 0.01 * torch.ones_like(target)  # a constant offset: no gradient error
    >>> value = relative_h1((target + error)[None, None], target[None, None])
    >>> exact = math.sqrt(1e-4 / (1 / 4 + math.pi**2 / 2))
    >>> abs(value.item() - exact) < 1e-5
    True
    """
    _check("relative_h1", prediction, target, 3)
    grid = prediction.shape[2:]
    if min(grid) < 3:
        raise ValueError(
            f"relative_h1: every grid axis needs at least 3 points for second-order "
            f"differences, got grid shape {tuple(grid)}"
        )
    if spacing is None:
        spacings = [1.0 / (n - 1) for n in grid]
    elif isinstance(spacing, (int, float)):
        spacings = [float(spacing)] * len(grid)
    else:
        spacings = [float(h) for h in spacing]
        if len(spacings) != len(grid):
            raise ValueError(
                f"relative_h1: spacing has {len(spacings)} entries for {len(grid)} grid axes "
                f"(grid shape {tuple(grid)})"
            )
    if not all(h > 0 and math.isfinite(h) for h in spacings):
        raise ValueError(f"relative_h1: spacing must be positive and finite, got {spacing!r}")
    root_weights = _trapezoid_weights(grid, prediction).sqrt()
    numerator = _h1_norm(prediction - target, spacings, root_weights)
    denominator = _h1_norm(target, spacings, root_weights)
    per_sample = numerator / denominator.clamp_min(eps)
    return _reduce("relative_h1", per_sample, reduction)


def _trapezoid_weights(grid: Sequence[int], like: torch.Tensor) -> torch.Tensor:
    """Product trapezoidal weights (without the cell volume, which cancels in the ratio)."""
    dtype = like.real.dtype if like.is_complex() else like.dtype
    weights = torch.ones((), dtype=dtype, device=like.device)
    for n in grid:
        axis = torch.ones(n, dtype=dtype, device=like.device)
        axis[0] = axis[-1] = 0.5
        weights = weights[..., None] * axis
    return weights


def _h1_norm(
    field: torch.Tensor, spacings: Sequence[float], root_weights: torch.Tensor
) -> torch.Tensor:
    """Per-sample discrete H1 norm: values and partial derivatives, all channels together."""
    grid_axes = tuple(range(2, field.ndim))
    derivatives = torch.gradient(field, spacing=list(spacings), dim=grid_axes, edge_order=2)
    # One vector norm over everything (rather than sqrt of a sum of squares) keeps the
    # gradient finite where the error is exactly zero.
    terms = [(term * root_weights).flatten(1) for term in (field, *derivatives)]
    return torch.linalg.vector_norm(torch.cat(terms, dim=1), dim=1)


def mse(prediction: torch.Tensor, target: torch.Tensor, *, reduction: str = "mean") -> torch.Tensor:
    """Mean squared error per sample (over all non-batch axes), then reduced over the batch.

    With ``reduction="mean"`` this equals :func:`torch.nn.functional.mse_loss`.

    Examples
    --------
    >>> import torch
    >>> from physnet.training.losses import mse
    >>> mse(torch.tensor([[1.0, 3.0], [0.0, 0.0]]), torch.zeros(2, 2), reduction="none")
    tensor([5., 0.])
    """
    _check("mse", prediction, target, 2)
    per_sample = ((prediction - target).abs() ** 2).flatten(1).mean(dim=1)
    return _reduce("mse", per_sample, reduction)


def slice_ssim(
    prediction: torch.Tensor,
    target: torch.Tensor,
    *,
    peak: float = 1.0,
    window_size: int = 11,
    sigma: float = 1.5,
) -> torch.Tensor:
    """Differentiable slice SSIM per sample: :func:`physnet.metrics.ssim` in torch.

    2-D SSIM of every x-y slice of ``(B, ..., X, Y, Z)`` volumes (Gaussian window, valid
    positions, ``C1 = (0.01 peak)^2``, ``C2 = (0.03 peak)^2``), averaged over the slices
    and every other non-batch axis: one value per sample.

    Examples
    --------
    >>> import torch
    >>> from physnet.training.losses import slice_ssim
    >>> x = torch.rand(2, 1, 12, 12, 3)
    >>> slice_ssim(x, x).tolist()
    [1.0, 1.0]
    """
    _check("slice_ssim", prediction, target, 4)
    if min(prediction.shape[-3:-1]) < window_size:
        raise ValueError(
            f"slice_ssim: volumes of shape {tuple(prediction.shape[-3:])} are smaller than "
            f"the {window_size}-point window along x or y"
        )
    coordinates = torch.arange(window_size, dtype=prediction.dtype, device=prediction.device)
    window = torch.exp(-0.5 * ((coordinates - (window_size - 1) / 2) / sigma) ** 2)
    window = window / window.sum()
    batch = prediction.shape[0]
    x_size, y_size, z_size = prediction.shape[-3:]

    def slices(volume: torch.Tensor) -> torch.Tensor:  # (B, ..., X, Y, Z) -> (B S Z, 1, X, Y)
        return (
            volume.reshape(-1, x_size, y_size, z_size)
            .permute(0, 3, 1, 2)
            .reshape(-1, 1, x_size, y_size)
        )

    x, y = slices(prediction), slices(target)
    stacked = torch.cat([x, y, x * x, y * y, x * y], dim=1)  # (N, 5, X, Y)
    blurred = torch.nn.functional.conv2d(
        stacked, window.reshape(1, 1, -1, 1).expand(5, 1, -1, 1).contiguous(), groups=5
    )
    blurred = torch.nn.functional.conv2d(
        blurred, window.reshape(1, 1, 1, -1).expand(5, 1, 1, -1).contiguous(), groups=5
    )
    mu_x, mu_y, xx, yy, xy = blurred.unbind(dim=1)
    c1, c2 = (0.01 * peak) ** 2, (0.03 * peak) ** 2
    luminance = (2 * mu_x * mu_y + c1) / (mu_x**2 + mu_y**2 + c1)
    structure = (2 * (xy - mu_x * mu_y) + c2) / (xx - mu_x**2 + yy - mu_y**2 + c2)
    return (luminance * structure).reshape(batch, -1).mean(dim=1)


def l1_ssim(
    prediction: torch.Tensor, target: torch.Tensor, *, reduction: str = "mean"
) -> torch.Tensor:
    """Mean absolute error plus ``1 -`` :func:`slice_ssim`, per sample, reduced over the batch.

    For sparse volumes in ``[0, 1]`` (radar reflectivity magnitudes): the SSIM term
    rewards exact emptiness where the scene is empty (its constants are tiny, so a faint
    background costs much), the L1 term keeps the magnitudes.

    Examples
    --------
    >>> import torch
    >>> from physnet.training.losses import l1_ssim
    >>> x = torch.rand(2, 1, 12, 12, 3)
    >>> float(l1_ssim(x, x))
    0.0
    """
    _check("l1_ssim", prediction, target, 4)
    l1 = (prediction - target).abs().flatten(1).mean(dim=1)
    return _reduce("l1_ssim", l1 + 1 - slice_ssim(prediction, target), reduction)


LOSSES: MappingProxyType[str, Callable[..., torch.Tensor]] = MappingProxyType(
    {
        "relative_l2": relative_l2,
        "relative_l1": relative_l1,
        "relative_h1": relative_h1,
        "mse": mse,
        "l1_ssim": l1_ssim,
        "dcdm": dcdm_loss,
        "dcdm_energy": dcdm_energy_loss,
        "dcdm_unrolled": dcdm_unrolled_loss,
        "multigrid_es": multigrid_es_loss,
    }
)
"""The losses by the names training configs use (read-only)."""


def get_loss(name: str) -> Callable[..., torch.Tensor]:
    """The loss function registered under ``name`` in :data:`LOSSES`.

    Raises
    ------
    ValueError
        If ``name`` is unknown (the message lists the known names).

    Examples
    --------
    >>> from physnet.training.losses import get_loss
    >>> get_loss("mse").__name__
    'mse'
    """
    try:
        return LOSSES[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown loss {name!r}; available losses: {', '.join(LOSSES)}") from None
