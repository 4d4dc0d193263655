"""dcdm-galerkin: the learned smoother of Galerkin aggregation multigrid."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import physnet.nn
from physnet.datasets import make_scene
from physnet.nn import DCDMGalerkinNet
from physnet.solvers import AggregationMultigrid, solve


def test_parameters_and_classical_initialisation():
    model = DCDMGalerkinNet(hidden_channels=16, smoothing_steps=2)
    assert sum(p.numel() for p in model.parameters()) == 7 * 16 + 17 * 2
    features = np.random.default_rng(0).random((50, 6), dtype=np.float32)
    np.testing.assert_allclose(model.damping(features, 3), 0.8, rtol=1e-6)
    assert model.damping(features, 0).dtype == np.float32


def test_untrained_network_is_its_classical_twin():
    # The solver with the untrained network and method="multigrid" with the same damping
    # are the same computation: same iterations, same solution.
    scene = make_scene("two-phase", 16)
    A, b = scene.operator(), scene.rhs_vector()
    learned = solve(A, b, method="dcdm", model=DCDMGalerkinNet(), rtol=1e-8)
    classical = solve(A, b, method="multigrid", damping=0.8, rtol=1e-8)
    assert learned.iterations == classical.iterations
    np.testing.assert_allclose(learned.x, classical.x, rtol=1e-6, atol=1e-9)
    assert learned.info["levels"] == classical.info["levels"]


def test_trained_dampings_reach_the_hierarchy():
    model = DCDMGalerkinNet(max_damping=1.2)
    with torch.no_grad():
        model.out.bias.fill_(0.0)  # sigmoid(0) = 0.5: omega = 0.6
    A = make_scene("sphere", 12).operator()
    r = np.random.default_rng(1).standard_normal(A.n)
    fixed = AggregationMultigrid(A, damping=0.6)
    learned = AggregationMultigrid(A, **model.multigrid_options())
    np.testing.assert_allclose(learned @ r, fixed @ r, rtol=1e-5, atol=1e-7)


def test_checkpoint_round_trip(tmp_path):
    model = DCDMGalerkinNet(ndim=2, smoothing_steps=1, hidden_channels=4)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_()
    path = tmp_path / "g.safetensors"
    physnet.nn.save(model, path)
    loaded = physnet.nn.load(path)
    features = np.random.default_rng(0).random((7, 6), dtype=np.float32)
    np.testing.assert_array_equal(loaded.damping(features, 1), model.damping(features, 1))
    assert loaded.config == model.config


def test_gradient_flows_through_forward():
    model = DCDMGalerkinNet()
    model.forward(torch.rand(9, 6)).sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_bad_arguments_and_inputs():
    with pytest.raises(ValueError, match="ndim"):
        DCDMGalerkinNet(ndim=4)
    with pytest.raises(ValueError, match="cycle"):
        DCDMGalerkinNet(cycle="W")
    with pytest.raises(ValueError, match="initial_damping"):
        DCDMGalerkinNet(initial_damping=1.5)
    with pytest.raises(ValueError, match="max_damping"):
        DCDMGalerkinNet(max_damping=2.0)
    with pytest.raises(ValueError, match=r"features of shape \(n, 6\)"):
        DCDMGalerkinNet()(torch.zeros(3, 5))
    A = make_scene("sphere", 12, ndim=2).operator()
    with pytest.raises(ValueError, match="3-D grids"):
        solve(A, np.ones(A.n), method="dcdm", model=DCDMGalerkinNet(ndim=3))
