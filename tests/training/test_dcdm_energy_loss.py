"""dcdm_energy_loss: the relative A-norm error after one exact line search."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from physnet.operators import AIR, FLUID, SOLID, GridPoisson
from physnet.training.dcdm_loss import dcdm_energy_loss
from physnet.training.losses import get_loss


def _batch(rng, batch, grid):
    """Random geometries (each with air, so A is definite) and errors."""
    flags = rng.choice([FLUID, FLUID, FLUID, SOLID], size=(batch, *grid)).astype(np.int8)
    flags[(slice(None), 0)] = AIR
    flags[(slice(None), 1)] = FLUID
    error = rng.standard_normal((batch, *grid)) * (flags == FLUID)
    target = torch.from_numpy(np.stack([error, flags.astype(np.float64)], axis=1))
    return flags, error, target


@pytest.mark.parametrize("grid", [(7, 6), (5, 4, 6)], ids=["2d", "3d"])
def test_equals_the_energy_norm_reference(rng, grid):
    flags, error, target = _batch(rng, 3, grid)
    prediction = torch.from_numpy(rng.standard_normal((3, 1, *grid)))
    got = dcdm_energy_loss(prediction, target, reduction="none").numpy()
    for i in range(3):
        A = GridPoisson(flags[i])
        matrix = A.to_csr()
        e, f = A.gather(error[i]), A.gather(prediction[i, 0].numpy())
        beta = (f @ matrix @ e) / (f @ matrix @ f)
        left = e - beta * f
        np.testing.assert_allclose(got[i], (left @ matrix @ left) / (e @ matrix @ e), rtol=1e-10)
    assert np.all((got >= 0) & (got <= 1))


def test_zero_for_a_multiple_of_the_error_and_registered(rng):
    _, _, target = _batch(rng, 2, (5, 4, 6))
    prediction = -3.0 * target[:, :1] + 7.0 * (target[:, 1:] != FLUID)  # off-fluid ignored
    assert float(dcdm_energy_loss(prediction, target)) < 1e-12
    assert get_loss("dcdm_energy") is dcdm_energy_loss


def test_zero_prediction_is_one_with_zero_gradient(rng):
    _, _, target = _batch(rng, 2, (6, 6))
    prediction = torch.zeros(2, 1, 6, 6, dtype=torch.float64, requires_grad=True)
    loss = dcdm_energy_loss(prediction, target)
    loss.backward()
    assert loss.item() == 1.0
    assert torch.all(prediction.grad == 0)


def test_gradcheck(rng):
    _, _, target = _batch(rng, 2, (4, 5))
    prediction = torch.from_numpy(rng.standard_normal((2, 1, 4, 5))).requires_grad_()
    assert torch.autograd.gradcheck(lambda p: dcdm_energy_loss(p, target), (prediction,))


def test_bad_shapes_and_reduction():
    with pytest.raises(ValueError, match="reduction"):
        dcdm_energy_loss(torch.zeros(1, 1, 4, 4), torch.zeros(1, 2, 4, 4), reduction="max")
    with pytest.raises(ValueError, match="prediction"):
        dcdm_energy_loss(torch.zeros(1, 2, 4, 4), torch.zeros(1, 2, 4, 4))
    with pytest.raises(ValueError, match="target"):
        dcdm_energy_loss(torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 4))
