"""The training loss of DCDM networks: the residual after one exact line search.

A network trained for the deep conjugate direction method
(:func:`physnet.solvers.dcdm.dcdm`) only has to point in the direction of ``A^{-1} b``:
the solver's line search chooses the step. :func:`dcdm_loss` measures exactly that, the
residual left after a line search from zero along the network's output, on a batch of
geometries at once (:func:`physnet.operators.masked.masked_poisson`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from physnet.operators.masked import masked_poisson
from physnet.operators.poisson import FLUID

__all__ = ["dcdm_energy_loss", "dcdm_loss", "dcdm_unrolled_loss"]

_REDUCTIONS = ("mean", "sum", "none")


def dcdm_loss(
    prediction: torch.Tensor,
    target: torch.Tensor,
    *,
    h: float | Sequence[float] = 1.0,
    eps: float = 1e-12,
    reduction: str = "mean",
) -> torch.Tensor:
    r"""Squared residual after an exact ``A``-norm line search along the network's output.

    Parameters
    ----------
    prediction : torch.Tensor, shape (B, 1, *grid)
        The network's output ``f`` for each right-hand side, on the full 2-D or 3-D grid;
        its values off the fluid cells are ignored.
    target : torch.Tensor, shape (B, 2, *grid)
        Channel 0 the right-hand side ``b``, channel 1 the cell flags (0 fluid, 1 solid,
        2 air; as floats, as a training batch stacks them): a Trainer with
        ``targets=["rhs", "flags"]`` assembles exactly this. ``b`` counts on the fluid
        cells only (the unknowns).
    h : float or sequence of float, default 1.0
        The grid spacing of the operator (one per axis for anisotropic grids). A single
        spacing scales ``A`` by a constant and does not change the loss.
    eps : float, default 1e-12
        A sample with :math:`f^T A f \le \epsilon\, f^T f` (a zero output, or one in the
        null space of a domain without air) takes no step: its loss is
        :math:`\|b\|^2`, with a zero gradient, rather than NaN.
    reduction : {"mean", "sum", "none"}, default "mean"
        Over the batch: mean or sum of the per-sample losses, or the ``(B,)`` tensor.

    Returns
    -------
    torch.Tensor
        A scalar, or shape ``(B,)`` for ``reduction="none"``.

    Raises
    ------
    ValueError
        Shapes other than ``(B, 1, *grid)`` and ``(B, 2, *grid)`` on the same grid, flag
        values other than 0, 1 and 2, or an unknown reduction.

    Notes
    -----
    With :math:`A` the grid Poisson operator of the sample's flags
    (:class:`~physnet.operators.GridPoisson`) and :math:`f` the prediction restricted to
    the fluid cells, the loss of a sample is

    .. math::

        L(b, f) = \Bigl\| b - \frac{b^T f}{f^T A f} A f \Bigr\|_2^2 ,

    the squared residual of the first DCDM iterate :math:`x_1 = \frac{b^T f}{f^T A f} f`
    from :math:`x_0 = 0` [1]_. It is invariant to the scale of :math:`f`, and zero
    exactly when :math:`f` is a multiple of :math:`A^{-1} b`. The batch is reduced after
    the per-sample values, as the other losses of :mod:`physnet.training.losses` do.

    References
    ----------
    .. [1] A. Kaneda, O. Akar, J. Chen, V. A. T. Kala, D. Hyde and J. Teran, "A deep
       conjugate direction method for iteratively solving linear systems", ICML 2023,
       PMLR 202:15720–15736.

    Examples
    --------
    Any multiple of the exact solution has zero loss:

    >>> import numpy as np
    >>> import torch
    >>> from physnet.operators import AIR, GridPoisson
    >>> from physnet.training.dcdm_loss import dcdm_loss
    >>> flags = np.zeros((6, 6), dtype=np.int8)
    >>> flags[0, :] = AIR
    >>> A = GridPoisson(flags)
    >>> b = np.random.default_rng(0).standard_normal(A.n)
    >>> x = np.linalg.solve(A.to_csr().toarray(), b)
    >>> rhs = torch.from_numpy(A.scatter(b))
    >>> target = torch.stack([rhs, torch.from_numpy(flags).double()])[None]
    >>> f = torch.from_numpy(A.scatter(3.0 * x))[None, None]
    >>> bool(dcdm_loss(f, target) < 1e-20)
    True
    >>> bool(dcdm_loss(torch.ones_like(f), target) > 0)
    True
    """
    b, f, flags = _unpack("dcdm_loss", prediction, target, "the right-hand side", reduction)
    zero = prediction.new_zeros(())
    Af = masked_poisson(f, flags, h)

    b_f = (b * f).flatten(1).sum(dim=1)
    f_Af = (f * Af).flatten(1).sum(dim=1)
    f_f = (f * f).flatten(1).sum(dim=1)
    # The double `where` keeps the gradient finite (zero) for samples that take no step.
    usable = f_Af > eps * f_f
    step = torch.where(usable, b_f / torch.where(usable, f_Af, torch.ones_like(f_Af)), zero)
    residual = b - step.reshape(-1, *([1] * (b.ndim - 1))) * Af
    per_sample = (residual * residual).flatten(1).sum(dim=1)
    if reduction == "mean":
        return per_sample.mean()
    if reduction == "sum":
        return per_sample.sum()
    return per_sample


def dcdm_energy_loss(
    prediction: torch.Tensor,
    target: torch.Tensor,
    *,
    h: float | Sequence[float] = 1.0,
    eps: float = 1e-12,
    reduction: str = "mean",
) -> torch.Tensor:
    r"""Relative ``A``-norm error left after an exact line search along the network's output.

    The error-propagation counterpart of :func:`dcdm_loss`: the sample carries the error
    ``e`` (the solution of ``A e = b``) rather than the right-hand side, so the loss can
    weigh every frequency of the error evenly, as a multigrid preconditioner must.

    Parameters
    ----------
    prediction : torch.Tensor, shape (B, 1, *grid)
        The network's output ``f`` for the right-hand side ``b = A e`` (as the network was
        given it, normalised or not: the loss is invariant to the scale of ``f``).
    target : torch.Tensor, shape (B, 2, *grid)
        Channel 0 the error ``e``, channel 1 the cell flags (0 fluid, 1 solid, 2 air).
    h, eps, reduction
        As for :func:`dcdm_loss`. A sample with no usable step (``f^T A f`` below
        ``eps f^T f``) or a zero error has loss 1 with a zero gradient.

    Returns
    -------
    torch.Tensor
        A scalar, or shape ``(B,)`` for ``reduction="none"``.

    Notes
    -----
    With :math:`b = A e`, the step :math:`\beta = b^T f / f^T A f` minimises
    :math:`\|e - \beta f\|_A`, and the loss is the fraction of the error's energy left:

    .. math::

        L(e, f) = \frac{\|e - \beta f\|_A^2}{\|e\|_A^2}
                = 1 - \frac{(f^T b)^2}{(f^T A f)(e^T b)} \in [0, 1],

    one minus the squared ``A``-cosine between :math:`f` and :math:`e`. It is zero exactly
    when :math:`f` is a multiple of :math:`e = A^{-1} b`. Unlike :func:`dcdm_loss`, whose
    residual norm is dominated by the rough components of ``b``, it measures the quantity
    a conjugate-direction method reduces (the ``A``-norm of the error).

    Examples
    --------
    >>> import torch
    >>> from physnet.training.dcdm_loss import dcdm_energy_loss
    >>> flags = torch.zeros(1, 1, 6, 6)
    >>> flags[..., 0, :] = 2.0
    >>> e = torch.randn(1, 1, 6, 6, dtype=torch.float64)
    >>> target = torch.cat([e, flags.double()], dim=1)
    >>> bool(dcdm_energy_loss(-2.0 * e, target) < 1e-12)
    True
    """
    e, f, flags = _unpack("dcdm_energy_loss", prediction, target, "the error", reduction)
    b = masked_poisson(e, flags, h)
    Af = masked_poisson(f, flags, h)

    b_f = (b * f).flatten(1).sum(dim=1)
    f_Af = (f * Af).flatten(1).sum(dim=1)
    f_f = (f * f).flatten(1).sum(dim=1)
    e_b = (e * b).flatten(1).sum(dim=1)
    usable = (f_Af > eps * f_f) & (e_b > 0)
    one = torch.ones_like(f_Af)
    cosine2 = b_f * b_f / (torch.where(usable, f_Af, one) * torch.where(usable, e_b, one))
    per_sample = torch.where(usable, 1.0 - cosine2, one)
    if reduction == "mean":
        return per_sample.mean()
    if reduction == "sum":
        return per_sample.sum()
    return per_sample


def _unpack(
    name: str, prediction: torch.Tensor, target: torch.Tensor, field: str, reduction: str
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Check shapes and reduction; the target's field and the prediction, zero off fluid."""
    if reduction not in _REDUCTIONS:
        raise ValueError(f"{name}: reduction={reduction!r}, expected one of {_REDUCTIONS}")
    if prediction.ndim not in (4, 5) or prediction.shape[1] != 1:
        raise ValueError(
            f"{name}: prediction has shape {tuple(prediction.shape)}, expected "
            "(batch, 1, *grid) with a 2-D or 3-D grid"
        )
    expected = (prediction.shape[0], 2, *prediction.shape[2:])
    if tuple(target.shape) != expected:
        raise ValueError(
            f"{name}: target has shape {tuple(target.shape)}, expected {expected}: "
            f"{field} and the cell flags as two channels on the prediction's grid"
        )
    values, flags = target[:, :1], target[:, 1:]
    fluid = flags == FLUID
    zero = prediction.new_zeros(())
    return (
        torch.where(fluid, values.to(prediction.dtype), zero),
        torch.where(fluid, prediction, zero),
        flags,
    )


def dcdm_unrolled_loss(
    model: torch.nn.Module,
    inputs: torch.Tensor,
    target: torch.Tensor,
    *,
    steps: int = 4,
    memory: int = 2,
    h: float | Sequence[float] = 1.0,
    reduction: str = "mean",
) -> torch.Tensor:
    r"""Relative ``A``-norm error left after ``steps`` differentiable iterations of the solver.

    The loss the shipped ``dcdm-poisson3d`` network is trained with: it unrolls
    :func:`physnet.solvers.dcdm.dcdm` from ``x = 0`` — the network's direction for the
    normalised residual, A-orthogonalised against the last ``memory`` directions, then the
    exact line search — and measures the error's energy left. It is called by the
    :class:`~physnet.training.Trainer` as ``loss(model, inputs, targets)``
    (``needs_model``), because it applies the model ``steps`` times.

    Parameters
    ----------
    model : torch.nn.Module
        A DCDM network: ``prepare(flags)`` / ``apply_prepared(residual, state)`` (such as
        ``dcdm-multigrid``), or a module called on ``[residual, flags]`` when it declares
        ``uses_flags = True``, else on the residual alone (``dcdm-paper``).
    inputs : torch.Tensor, shape (B, C, *grid)
        The batch's model inputs; only their batch and grid are checked (each step builds
        the network's input from its residual).
    target : torch.Tensor, shape (B, 2, *grid)
        Channel 0 the error ``e`` (the solution of ``A e = b``; the iteration solves for
        ``b = A e``), channel 1 the cell flags (0 fluid, 1 solid, 2 air).
    steps : int, default 4
        Iterations unrolled; ``steps=1`` equals :func:`dcdm_energy_loss` of the network's
        first direction.
    memory : int, default 2
        Directions kept for the A-orthogonalisation (the solver's ``m``).
    h, reduction
        As for :func:`dcdm_loss`.

    Returns
    -------
    torch.Tensor
        A scalar, or shape ``(B,)`` for ``reduction="none"``; each sample's value is
        :math:`\|e - x_K\|_A^2 / \|e\|_A^2 \in [0, 1]`.

    Notes
    -----
    A one-step loss rewards a direction that is good once, such as an over-relaxed
    smoother that is indefinite as a preconditioner and ruins the later iterations;
    unrolling a few steps measures what the solver gets from the network. Every step is
    scale-invariant in the direction, as the line search is.

    Examples
    --------
    A network that returns the exact solution leaves no error after one step:

    >>> import numpy as np
    >>> import torch
    >>> from physnet.operators import AIR, GridPoisson
    >>> from physnet.training.dcdm_loss import dcdm_unrolled_loss
    >>> flags = np.zeros((6, 6), dtype=np.int8)
    >>> flags[0, :] = AIR
    >>> A = GridPoisson(flags)
    >>> inverse = np.linalg.inv(A.to_csr().toarray())
    >>> class Exact(torch.nn.Module):
    ...     def forward(self, r):
    ...         x = inverse @ A.gather(r[0, 0].numpy())
    ...         return torch.from_numpy(A.scatter(x))[None, None]
    >>> e = torch.from_numpy(A.scatter(np.random.default_rng(0).standard_normal(A.n)))[None, None]
    >>> target = torch.cat([e, torch.from_numpy(flags).double()[None, None]], dim=1)
    >>> bool(dcdm_unrolled_loss(Exact(), e, target, steps=1) < 1e-20)
    True
    """
    from physnet.solvers.dcdm import _has_prepare, _uses_flags

    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise ValueError(f"dcdm_unrolled_loss: steps must be an integer >= 1, got {steps!r}")
    if not isinstance(memory, int) or isinstance(memory, bool) or memory < 0:
        raise ValueError(f"dcdm_unrolled_loss: memory must be an integer >= 0, got {memory!r}")
    if inputs.shape[0] != target.shape[0] or inputs.shape[2:] != target.shape[2:]:
        raise ValueError(
            f"dcdm_unrolled_loss: inputs {tuple(inputs.shape)} and target "
            f"{tuple(target.shape)} differ in batch or grid"
        )
    probe = target.new_zeros((target.shape[0], 1, *target.shape[2:]))
    e, _, flags = _unpack("dcdm_unrolled_loss", probe, target, "the error", reduction)
    fluid = (flags == FLUID).to(e.dtype)
    b = masked_poisson(e, flags, h)

    def dot(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return (u * v).flatten(1).sum(dim=1).view(-1, *([1] * (u.ndim - 1)))

    if _has_prepare(model):
        state = model.prepare(flags)

        def direction(r: torch.Tensor) -> torch.Tensor:
            return model.apply_prepared(r, state)

    elif _uses_flags(model):

        def direction(r: torch.Tensor) -> torch.Tensor:
            return model(torch.cat([r, flags.to(r.dtype)], dim=1))

    else:
        direction = model
    tiny = torch.finfo(e.dtype).tiny
    x, r = torch.zeros_like(b), b
    history: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
    for _ in range(steps):
        q = direction(r / dot(r, r).sqrt().clamp_min(tiny)).to(e.dtype) * fluid
        for p, Ap, pAp in history:
            q = q - dot(q, Ap) / pAp * p
        Aq = masked_poisson(q, flags, h)
        qAq = dot(q, Aq).clamp_min(tiny)
        step = dot(q, r) / qAq
        x = x + step * q
        r = r - step * Aq
        history = [*history, (q, Aq, qAq)][-memory:] if memory else []
    left = e - x
    energy = dot(e, b).flatten().clamp_min(tiny)
    per_sample = dot(left, masked_poisson(left, flags, h)).flatten() / energy
    if reduction == "mean":
        return per_sample.mean()
    if reduction == "sum":
        return per_sample.sum()
    return per_sample


dcdm_unrolled_loss.needs_model = True  # type: ignore[attr-defined]
