"""multigrid_es_loss: the solver's convergence rate with an evolution-strategies gradient."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from physnet.datasets import make_scene
from physnet.nn import DCDMGalerkinNet
from physnet.solvers import AggregationMultigrid
from physnet.training.losses import get_loss
from physnet.training.multigrid_loss import multigrid_convergence, multigrid_es_loss


def _batch(size=40, count=2):
    inputs, targets = [], []
    for seed, name in enumerate(["two-phase", "thin-walls"][:count]):
        scene = make_scene(name, size, ndim=2, seed=seed)
        coefficients = (
            scene.coefficients if scene.coefficients is not None else np.ones(scene.shape)
        )
        inputs.append(np.stack([scene.flags.astype(np.float32), coefficients.astype(np.float32)]))
        targets.append(scene.rhs[None].astype(np.float32))
    return torch.from_numpy(np.stack(inputs)), torch.from_numpy(np.stack(targets))


def test_value_is_the_measured_convergence_rate():
    inputs, targets = _batch()
    model = DCDMGalerkinNet(ndim=2)
    with torch.no_grad():
        value = float(multigrid_es_loss(model, inputs, targets, iterations=4))
    scene = make_scene("two-phase", 40, ndim=2, seed=0)
    A = scene.operator()
    b = scene.rhs_vector()
    single = multigrid_convergence(model, [(A, b, AggregationMultigrid(A))], 4)
    assert -3.0 < value < 0.0 and -3.0 < single < 0.0
    assert get_loss("multigrid_es").__name__ == "multigrid_es_loss"


def test_gradient_estimate_reaches_every_parameter_and_restores_them():
    inputs, targets = _batch()
    model = DCDMGalerkinNet(ndim=2)
    before = [p.detach().clone() for p in model.parameters()]
    torch.manual_seed(0)
    loss = multigrid_es_loss(model, inputs, targets, iterations=3, population=2)
    loss.backward()
    for p, original in zip(model.parameters(), before, strict=True):
        assert p.grad is not None and torch.isfinite(p.grad).all()
        assert torch.equal(p.detach(), original)
    assert any(float(p.grad.abs().sum()) > 0 for p in model.parameters())


def test_a_few_steps_from_a_poor_damping_improve_the_solver():
    # Start from omega = 0.3 (too little smoothing): descending the estimated gradient
    # raises the damping and the measured convergence rate.
    inputs, targets = _batch(size=48, count=1)
    model = DCDMGalerkinNet(ndim=2, initial_damping=0.3)
    torch.manual_seed(0)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
    with torch.no_grad():
        start = float(multigrid_es_loss(model, inputs, targets, iterations=4))
    for _ in range(6):
        optimizer.zero_grad()
        multigrid_es_loss(model, inputs, targets, iterations=4, population=2).backward()
        optimizer.step()
    with torch.no_grad():
        end = float(multigrid_es_loss(model, inputs, targets, iterations=4))
    assert end < start - 0.02


def test_bad_inputs():
    inputs, targets = _batch(count=1)
    with pytest.raises(TypeError, match="multigrid_options"):
        multigrid_es_loss(torch.nn.Linear(2, 2), inputs, targets)
    with pytest.raises(ValueError, match=r"\(B, 2, \*grid\)"):
        multigrid_es_loss(DCDMGalerkinNet(ndim=2), inputs[:, :1], targets)
    with pytest.raises(ValueError, match="does not match"):
        multigrid_es_loss(DCDMGalerkinNet(ndim=2), inputs, targets[:, :, :5])
