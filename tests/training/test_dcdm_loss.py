"""dcdm_loss: the residual after one exact line search, against a NumPy reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import physnet.nn
from physnet.datasets._base import FieldDataset
from physnet.operators import AIR, FLUID, SOLID, GridPoisson
from physnet.training import Trainer
from physnet.training.dcdm_loss import dcdm_loss


def _batch(rng, batch, grid):
    """Random geometries (each with air, so A is definite) and right-hand sides."""
    flags = rng.choice([FLUID, FLUID, FLUID, SOLID], size=(batch, *grid)).astype(np.int8)
    flags[(slice(None), 0)] = AIR
    flags[(slice(None), 1)] = FLUID
    rhs = rng.standard_normal((batch, *grid)) * (flags == FLUID)
    target = torch.from_numpy(np.stack([rhs, flags.astype(np.float64)], axis=1))
    return flags, rhs, target


def _reference(flags, rhs, prediction, h=1.0):
    losses = []
    for i in range(flags.shape[0]):
        A = GridPoisson(flags[i], h=h)
        matrix = A.to_csr()
        b, f = A.gather(rhs[i]), A.gather(prediction[i, 0])
        Af = matrix @ f
        residual = b - (b @ f) / (f @ Af) * Af
        losses.append(residual @ residual)
    return np.array(losses)


@pytest.mark.parametrize("grid", [(7, 6), (5, 4, 6)], ids=["2d", "3d"])
def test_equals_the_numpy_computation_with_the_csr_matrix(rng, grid):
    flags, rhs, target = _batch(rng, 3, grid)
    prediction = torch.from_numpy(rng.standard_normal((3, 1, *grid)))
    expected = _reference(flags, rhs, prediction.numpy())
    per_sample = dcdm_loss(prediction, target, reduction="none")
    np.testing.assert_allclose(per_sample.numpy(), expected, rtol=1e-12)
    np.testing.assert_allclose(dcdm_loss(prediction, target).item(), expected.mean(), rtol=1e-12)
    np.testing.assert_allclose(
        dcdm_loss(prediction, target, reduction="sum").item(), expected.sum(), rtol=1e-12
    )


def test_per_axis_spacing_changes_the_operator(rng):
    flags, rhs, target = _batch(rng, 2, (6, 5))
    prediction = torch.from_numpy(rng.standard_normal((2, 1, 6, 5)))
    expected = _reference(flags, rhs, prediction.numpy(), h=(1.0, 0.25))
    got = dcdm_loss(prediction, target, h=(1.0, 0.25), reduction="none")
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-12)
    # One spacing for all axes scales A by a constant, which the line search absorbs.
    torch.testing.assert_close(dcdm_loss(prediction, target, h=0.1), dcdm_loss(prediction, target))


def test_invariant_to_the_scale_of_the_prediction(rng):
    _, _, target = _batch(rng, 4, (6, 6))
    prediction = torch.from_numpy(rng.standard_normal((4, 1, 6, 6)))
    scales = torch.tensor([1e-3, -2.0, 5.0, 1e4], dtype=torch.float64).reshape(4, 1, 1, 1)
    torch.testing.assert_close(
        dcdm_loss(scales * prediction, target, reduction="none"),
        dcdm_loss(prediction, target, reduction="none"),
    )


def test_zero_for_the_exact_solution_and_ignores_non_fluid_values(rng):
    flags, rhs, target = _batch(rng, 2, (5, 4, 3))
    exact = np.zeros((2, 1, 5, 4, 3))
    for i in range(2):
        A = GridPoisson(flags[i])
        x = np.linalg.solve(A.to_csr().toarray(), A.gather(rhs[i]))
        exact[i, 0] = A.scatter(x, fill=100.0)  # junk off the fluid cells is ignored
    loss = dcdm_loss(torch.from_numpy(exact), target, reduction="none")
    assert (loss < 1e-20 * (rhs**2).sum()).all()
    assert dcdm_loss(torch.from_numpy(rng.standard_normal(exact.shape)), target) > 1e-3


def test_gradient_flows_and_vanishes_at_the_optimum(rng):
    _, _, target = _batch(rng, 2, (6, 6))
    prediction = torch.from_numpy(rng.standard_normal((2, 1, 6, 6))).requires_grad_()
    dcdm_loss(prediction, target).backward()
    assert prediction.grad is not None and torch.isfinite(prediction.grad).all()
    assert prediction.grad.abs().sum() > 0
    # Gradient descent on f itself reduces the loss.
    with torch.no_grad():
        stepped = prediction - 1e-2 * prediction.grad / prediction.grad.norm()
    assert dcdm_loss(stepped, target) < dcdm_loss(prediction.detach(), target)


def test_no_step_without_curvature_is_finite_with_zero_gradient(rng):
    _, rhs, target = _batch(rng, 2, (5, 5))
    prediction = torch.zeros(2, 1, 5, 5, dtype=torch.float64, requires_grad=True)
    loss = dcdm_loss(prediction, target, reduction="none")
    np.testing.assert_allclose(loss.detach().numpy(), (rhs**2).sum(axis=(1, 2)))
    loss.sum().backward()
    assert torch.equal(prediction.grad, torch.zeros_like(prediction))


def test_float32_batch_as_the_trainer_assembles_it(rng):
    flags, rhs, target = _batch(rng, 3, (8, 8))
    prediction = torch.from_numpy(rng.standard_normal((3, 1, 8, 8)))
    expected = _reference(flags, rhs, prediction.numpy())
    got = dcdm_loss(prediction.float(), target.float(), reduction="none")
    assert got.dtype == torch.float32
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-4)


def test_bad_shapes_and_reduction():
    with pytest.raises(ValueError, match="prediction has shape"):
        dcdm_loss(torch.zeros(2, 2, 4, 4), torch.zeros(2, 2, 4, 4))
    with pytest.raises(ValueError, match="target has shape"):
        dcdm_loss(torch.zeros(2, 1, 4, 4), torch.zeros(2, 1, 4, 4))
    with pytest.raises(ValueError, match="reduction"):
        dcdm_loss(torch.zeros(2, 1, 4, 4), torch.zeros(2, 2, 4, 4), reduction="max")


def test_gradcheck(rng):
    _, _, target = _batch(rng, 2, (4, 5))
    prediction = torch.from_numpy(rng.standard_normal((2, 1, 4, 5))).requires_grad_()
    assert torch.autograd.gradcheck(lambda f: dcdm_loss(f, target), (prediction,))


class _Scenes(FieldDataset):
    fields = ("rhs", "flags")
    inputs = ("rhs",)
    targets = ("rhs", "flags")

    def __init__(self, n_samples, seed):
        rng = np.random.default_rng(seed)
        self.flags, self.rhs, _ = _batch(rng, n_samples, (12, 12))
        self.rhs = self.rhs.astype(np.float32)
        self.attrs = {}

    def __len__(self):
        return len(self.rhs)

    def _sample(self, index):
        return {"rhs": self.rhs[index], "flags": self.flags[index]}


def test_trainer_reduces_the_loss_with_rhs_and_flags_as_targets():
    """The Trainer stacks targets=["rhs", "flags"] into the (b, flags) target the loss reads."""
    model = physnet.nn.create("conv-net", in_channels=1, hidden_channels=8, n_layers=2)
    trainer = Trainer(
        model, loss=dcdm_loss, epochs=6, batch_size=8, lr=3e-3, schedule="constant", progress=False
    )
    history = trainer.fit(_Scenes(32, seed=1))
    assert history["train_loss"][-1] < 0.8 * history["train_loss"][0]
