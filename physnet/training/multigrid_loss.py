"""The training loss of ``dcdm-galerkin``: the solver's convergence rate, zeroth-order gradient.

The network of :class:`physnet.nn.DCDMGalerkinNet` sets the smoother of a multigrid cycle
that runs in numba kernels, so the objective — how fast the actual solver converges — has
no autograd graph. :func:`multigrid_es_loss` measures it and estimates its gradient with
antithetic Gaussian perturbations of the parameters (evolution strategies); the Trainer's
optimiser, schedule, checkpoints and bit-exact resume work unchanged.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from physnet.operators.poisson import GridPoisson

__all__ = ["multigrid_convergence", "multigrid_es_loss"]


def multigrid_convergence(
    model: Any, systems: list[tuple[Any, Any, Any]], iterations: int
) -> float:
    """Mean ``log10`` residual reduction per iteration of the DCDM solve with ``model``.

    ``systems`` holds ``(A, b, hierarchy)`` triples: a
    :class:`~physnet.operators.GridPoisson`, a right-hand side and an
    :class:`~physnet.solvers.AggregationMultigrid` of ``A`` whose damping is replaced by the
    model's (:meth:`~physnet.solvers.AggregationMultigrid.with_damping`). Each solve is
    flexible CG(2) from zero for exactly ``iterations`` steps (or until the residual
    reaches 1e-12 of ``||b||``, which counts as that reduction).
    """
    from physnet.solvers.fcg import fcg

    options = model.multigrid_options()
    rates = []
    for A, b, hierarchy in systems:
        preconditioner = hierarchy.with_damping(options["damping"])
        x, _ = fcg(A, b, M=preconditioner, rtol=1e-12, maxiter=iterations, m=2)
        reduction = float(np.linalg.norm(b - A @ x)) / float(np.linalg.norm(b))
        rates.append(math.log10(max(reduction, 1e-12)) / iterations)
    return float(np.mean(rates))


class _ZerothOrder(torch.autograd.Function):
    """``value`` whose gradient with respect to ``vector`` is the given estimate."""

    @staticmethod
    def forward(ctx, vector, value, gradient):  # type: ignore[override]
        ctx.save_for_backward(gradient)
        return value.clone()

    @staticmethod
    def backward(ctx, grad_output):  # type: ignore[override]
        (gradient,) = ctx.saved_tensors
        return grad_output * gradient, None, None


def multigrid_es_loss(
    model: torch.nn.Module,
    inputs: torch.Tensor,
    target: torch.Tensor,
    *,
    iterations: int = 6,
    population: int = 8,
    sigma: float = 0.05,
) -> torch.Tensor:
    r"""Mean ``log10`` convergence factor of the solver, with an evolution-strategies gradient.

    Called by the :class:`~physnet.training.Trainer` as ``loss(model, inputs, targets)``
    (``needs_model``).

    Parameters
    ----------
    model : torch.nn.Module
        A network with ``multigrid_options()`` (:class:`physnet.nn.DCDMGalerkinNet`).
    inputs : torch.Tensor, shape (B, 2, *grid)
        Channel 0 the cell flags (0 fluid, 1 solid, 2 air), channel 1 the cell
        coefficients (the ``poisson-systems`` fields ``["flags", "coefficients"]``).
    target : torch.Tensor, shape (B, 1, *grid)
        The right-hand side on the grid (field ``"rhs"``); only its fluid cells count.
    iterations : int, default 6
        Flexible CG steps per solve.
    population : int, default 8
        Antithetic pairs of parameter perturbations per gradient estimate (``2 *
        population`` extra evaluations of the batch); no estimate is made when gradients
        are disabled (validation).
    sigma : float, default 0.05
        Standard deviation of the perturbations, in parameter units.

    Returns
    -------
    torch.Tensor
        A scalar: the mean over the batch of :math:`\log_{10}(\|r_k\| / \|b\|) / k`, the
        digits of residual reduction per iteration with a minus sign (lower is better:
        -0.6 is 10 iterations for six digits). Its gradient with respect to the model's
        parameters is the estimate below.

    Notes
    -----
    With :math:`F(\theta)` the batch objective and :math:`\epsilon_i \sim N(0, I)` drawn from
    torch's generator (so a resumed run draws the same ones),

    .. math::

        \nabla F(\theta) \approx \frac{1}{2 \sigma N} \sum_{i=1}^{N}
            \bigl(F(\theta + \sigma \epsilon_i) - F(\theta - \sigma \epsilon_i)\bigr)
            \epsilon_i ,

    the antithetic estimator of the gradient of the Gaussian smoothing of :math:`F`
    (Salimans et al. 2017; Katrutsa et al. 2020 for multigrid parameters). Every
    evaluation uses the same systems and right-hand sides (common random numbers), and
    each system's hierarchy is built once per batch: only the smoother scales change.

    Examples
    --------
    >>> import torch
    >>> from physnet.nn import DCDMGalerkinNet
    >>> flags = torch.zeros(1, 1, 16, 16)
    >>> flags[..., -1] = 2.0
    >>> inputs = torch.cat([flags, torch.ones_like(flags)], dim=1)
    >>> target = torch.randn(1, 1, 16, 16)
    >>> loss = multigrid_es_loss(DCDMGalerkinNet(ndim=2), inputs, target, population=2)
    >>> loss.backward()
    >>> bool(loss < 0)
    True
    """
    from physnet.solvers.multigrid import AggregationMultigrid

    if not callable(getattr(model, "multigrid_options", None)):
        raise TypeError(
            "multigrid_es_loss: the model must have multigrid_options() (a dcdm-galerkin "
            f"network), got {type(model).__name__}"
        )
    if inputs.ndim < 4 or inputs.shape[1] != 2:
        raise ValueError(
            "multigrid_es_loss: inputs must be (B, 2, *grid) = [flags, coefficients], got "
            f"{tuple(inputs.shape)}"
        )
    if target.shape[0] != inputs.shape[0] or target.shape[2:] != inputs.shape[2:]:
        raise ValueError(
            f"multigrid_es_loss: target {tuple(target.shape)} does not match inputs "
            f"{tuple(inputs.shape)} (expected (B, 1, *grid))"
        )
    systems = []
    for flags, coefficients, rhs in zip(
        inputs[:, 0].detach().cpu().numpy(),
        inputs[:, 1].detach().cpu().double().numpy(),
        target[:, 0].detach().cpu().double().numpy(),
        strict=True,
    ):
        A = GridPoisson(np.rint(flags).astype(np.int8), coefficients=coefficients)
        b = A.gather(rhs)
        systems.append((A, b, AggregationMultigrid(A, smoothing_steps=model.smoothing_steps)))
    parameters = [p for p in model.parameters() if p.requires_grad]
    vector = torch.nn.utils.parameters_to_vector(parameters)
    value = multigrid_convergence(model, systems, iterations)
    gradient = torch.zeros_like(vector)
    if torch.is_grad_enabled() and population > 0:
        original = vector.detach().clone()
        try:
            for _ in range(population):
                noise = torch.randn_like(original)
                scores = []
                for sign in (1.0, -1.0):
                    with torch.no_grad():
                        torch.nn.utils.vector_to_parameters(
                            original + sign * sigma * noise, parameters
                        )
                    scores.append(multigrid_convergence(model, systems, iterations))
                gradient += (scores[0] - scores[1]) / (2.0 * sigma * population) * noise
        finally:
            with torch.no_grad():
                torch.nn.utils.vector_to_parameters(original, parameters)
    return _ZerothOrder.apply(vector, torch.tensor(value, dtype=vector.dtype), gradient)


multigrid_es_loss.needs_model = True  # type: ignore[attr-defined]
