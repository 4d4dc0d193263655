"""physnet's coefficient-aware DCDM network: a learned smoother inside Galerkin multigrid.

:class:`DCDMGalerkinNet` (``"dcdm-galerkin"``) is the default network of
``physnet.solve(A, b, method="dcdm")``. It is the smoother of a Galerkin aggregation
multigrid cycle (:class:`physnet.solvers.AggregationMultigrid`) whose dampings a small
per-unknown network predicts from the stencil of every level's operator, so the
coefficients and the geometry reach it on every level through the Galerkin coarse
operators.
"""

from __future__ import annotations

import math
from typing import Any

import numba
import numpy as np
import torch

from physnet.nn._checks import is_int
from physnet.nn._registry import Model

__all__ = ["DCDMGalerkinNet"]

N_FEATURES = 6  # the row features of physnet.solvers.AggregationMultigrid.features
_CYCLES = ("K", "V")


class DCDMGalerkinNet(Model, name="dcdm-galerkin"):
    r"""Learned smoother dampings for Galerkin aggregation multigrid: physnet's DCDM network.

    The network maps six scale-free features of each row of a level's operator (the
    Dirichlet fraction of its diagonal, its largest and smallest off-diagonal entry
    relative to the diagonal, the coefficient contrast :math:`\log_{10}` of their ratio,
    the number of neighbours and the level) to the dampings :math:`\omega_k \in (0,
    \omega_{max})` of the ``smoothing_steps`` Jacobi sweeps of that unknown. The cycle it
    serves — Galerkin coarse operators over connected aggregates, K-cycle, dense
    coarsest solve — is :class:`physnet.solvers.AggregationMultigrid`; the deep conjugate
    direction solver (:func:`physnet.solvers.dcdm`) runs flexible CG with it. Because
    every level's operator is the Galerkin product of the one above, the network sees the
    coefficients and the geometry on every level, and the search direction is linear in
    the residual for a V-cycle (the K-cycle adds two inner Krylov steps per coarse level).

    Parameters
    ----------
    ndim : {2, 3}, default 3
        Grid dimension the weights were trained for (the features do not depend on it;
        the solver checks it against the grid).
    smoothing_steps : int, default 2
        Jacobi sweeps before and after each coarse correction (post-sweeps reuse the
        pre-sweeps' dampings in reverse order, so a V-cycle stays symmetric).
    hidden_channels : int, default 16
        Width of the per-unknown network.
    cycle : {"K", "V"}, default "K"
    max_damping : float, default 1.0
        Upper bound of the dampings, :math:`\omega = \omega_{max}\,\sigma(\cdot)`; damped
        Jacobi with :math:`\omega < 1` smooths every mode of these operators.
    initial_damping : float, default 0.8
        The damping the untrained network predicts everywhere (its output bias; the last
        layer starts at zero), so that before training the solver *is* its classical twin,
        ``method="multigrid"`` with ``damping=initial_damping``.

    Raises
    ------
    ValueError
        For an invalid argument.

    Notes
    -----
    The network is ``Linear(6, hidden) -> tanh -> Linear(hidden, smoothing_steps) ->
    max_damping * sigmoid``: :math:`(6 + 1) h + (h + 1) s` parameters (146 by default).
    It runs once per level in the setup, costing :math:`2(6h + hs) ≈ 260` FLOP per unknown
    of the hierarchy (about 1.15 times the fine unknowns in 3-D), and never in the
    iteration, whose cost is the multigrid cycle's (about 85 FLOP per unknown in 3-D,
    :meth:`physnet.solvers.AggregationMultigrid.flops_per_unknown`).

    It is trained without backpropagating through the solver: the objective, the mean
    :math:`\log_{10}` residual reduction per iteration of the actual solver on a batch of
    systems, is not differentiable through the numba kernels, so
    :func:`physnet.training.multigrid_es_loss` estimates its gradient with antithetic
    Gaussian perturbations of the parameters (evolution strategies), in the spirit of
    black-box learning of multigrid parameters [1]_, and the Trainer's optimiser takes
    the step.

    References
    ----------
    .. [1] A. Katrutsa, T. Daulbaev and I. Oseledets, "Black-box learning of multigrid
       parameters", J. Comput. Appl. Math. 368, 112524 (2020).
    .. [2] Y. Notay, "An aggregation-based algebraic multigrid method", Electron. Trans.
       Numer. Anal. 37, 123–146 (2010).

    Examples
    --------
    >>> import numpy as np
    >>> from physnet.nn import DCDMGalerkinNet
    >>> model = DCDMGalerkinNet()
    >>> sum(p.numel() for p in model.parameters())
    146
    >>> features = np.zeros((5, 6), dtype=np.float32)
    >>> model.damping(features, 0).round(3)
    array([[0.8, 0.8],
           [0.8, 0.8],
           [0.8, 0.8],
           [0.8, 0.8],
           [0.8, 0.8]], dtype=float32)
    """

    def __init__(
        self,
        ndim: int = 3,
        smoothing_steps: int = 2,
        hidden_channels: int = 16,
        cycle: str = "K",
        max_damping: float = 1.0,
        initial_damping: float = 0.8,
    ) -> None:
        super().__init__()
        name = "DCDMGalerkinNet"
        if ndim not in (2, 3):
            raise ValueError(f"{name}: ndim must be 2 or 3, got {ndim!r}")
        for key, value in (
            ("smoothing_steps", smoothing_steps),
            ("hidden_channels", hidden_channels),
        ):
            if not is_int(value) or value < 1:
                raise ValueError(f"{name}: {key} must be a positive integer, got {value!r}")
        if cycle not in _CYCLES:
            raise ValueError(f"{name}: cycle must be one of {_CYCLES}, got {cycle!r}")
        for key, value in (("max_damping", max_damping), ("initial_damping", initial_damping)):
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                raise ValueError(f"{name}: {key} must be a number, got {value!r}")
        if not 0.0 < max_damping < 2.0:
            raise ValueError(f"{name}: max_damping must lie in (0, 2), got {max_damping!r}")
        if not 0.0 < initial_damping < max_damping:
            raise ValueError(
                f"{name}: initial_damping must lie in (0, max_damping={max_damping}), got "
                f"{initial_damping!r}"
            )
        self.ndim = ndim
        self.smoothing_steps = smoothing_steps
        self.cycle = cycle
        self.max_damping = float(max_damping)
        self.hidden = torch.nn.Linear(N_FEATURES, hidden_channels)
        self.out = torch.nn.Linear(hidden_channels, smoothing_steps)
        fraction = initial_damping / max_damping
        with torch.no_grad():
            self.out.weight.zero_()
            self.out.bias.fill_(math.log(fraction / (1.0 - fraction)))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Dampings ``(n, smoothing_steps)`` for row features ``(n, 6)``."""
        if features.ndim != 2 or features.shape[1] != N_FEATURES:
            raise ValueError(
                f"DCDMGalerkinNet.forward: expected features of shape (n, {N_FEATURES}), got "
                f"{tuple(features.shape)}"
            )
        hidden = torch.tanh(self.hidden(features))
        return self.max_damping * torch.sigmoid(self.out(hidden))

    def damping(self, features: np.ndarray, level: int) -> np.ndarray:
        """The :data:`physnet.solvers.multigrid.DampingFunction` of this network (NumPy).

        Evaluated row by row in a fused numba loop (float32, all cores): the same
        function as :meth:`forward`, without its ``(n, hidden)`` temporaries, which at
        128³ cost more than the rest of the setup.
        """
        weights = [
            np.ascontiguousarray(p.detach().cpu().float().numpy())
            for p in (self.hidden.weight, self.hidden.bias, self.out.weight, self.out.bias)
        ]
        features = np.ascontiguousarray(features, dtype=np.float32)
        out = np.empty((features.shape[0], self.smoothing_steps), dtype=np.float32)
        _mlp_dampings(features, *weights, np.float32(self.max_damping), out)
        return out

    def multigrid_options(self) -> dict[str, Any]:
        """Keyword arguments of :class:`physnet.solvers.AggregationMultigrid` for this network."""
        return {
            "damping": self.damping,
            "smoothing_steps": self.smoothing_steps,
            "cycle": self.cycle,
        }


@numba.njit(parallel=True, cache=True, fastmath=True)
def _mlp_dampings(features, w1, b1, w2, b2, max_damping, out):
    """``max_damping * sigmoid(w2 tanh(w1 f + b1) + b2)`` for every row ``f``.

    Rows go in blocks, each with its own hidden-layer buffer, so that the inner loops
    vectorise and nothing is allocated per row.
    """
    n, n_in = features.shape
    n_hidden = w1.shape[0]
    n_out = w2.shape[0]
    block = 256
    for start in numba.prange((n + block - 1) // block):
        stop = min(n, (start + 1) * block)
        hidden = np.empty((block, n_hidden), dtype=np.float32)
        for i in range(start * block, stop):
            row = i - start * block
            for k in range(n_hidden):
                s = b1[k]
                for m in range(n_in):
                    s += w1[k, m] * features[i, m]
                hidden[row, k] = s
        hidden[:] = np.tanh(hidden)
        for i in range(start * block, stop):
            row = i - start * block
            for j in range(n_out):
                s = b2[j]
                for k in range(n_hidden):
                    s += w2[j, k] * hidden[row, k]
                out[i, j] = max_damping / (1.0 + np.exp(-s))
