"""dcdm_unrolled_loss: the A-norm error after K differentiable DCDM iterations, and its
use through the Trainer (a loss that runs the model)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from physnet.datasets import generate
from physnet.datasets import open as open_dataset
from physnet.nn import DCDMMultigridNet
from physnet.operators import AIR, FLUID, SOLID, GridPoisson
from physnet.training import Trainer
from physnet.training.dcdm_loss import dcdm_energy_loss, dcdm_unrolled_loss
from physnet.training.evaluate import needs_model, resolve_loss


class Jacobi(torch.nn.Module):
    """A fixed linear SPD "network": the inverse diagonal of the grid Poisson operator."""

    uses_flags = True

    def forward(self, x):
        r, flags = x[:, :1], x[:, 1:]
        fluid = flags == FLUID
        open_cells = (flags != SOLID).to(r.dtype)
        diagonal = torch.zeros_like(r)
        for axis in range(2, r.ndim):
            n = r.shape[axis]
            diagonal.narrow(axis, 1, n - 1).add_(open_cells.narrow(axis, 0, n - 1))
            diagonal.narrow(axis, 0, n - 1).add_(open_cells.narrow(axis, 1, n - 1))
        return torch.where(fluid, r / diagonal.clamp_min(1.0), torch.zeros_like(r))


def _batch(rng, batch, grid):
    flags = rng.choice([FLUID, FLUID, FLUID, SOLID], size=(batch, *grid)).astype(np.int8)
    flags[(slice(None), 0)] = AIR
    flags[(slice(None), 1)] = FLUID
    error = rng.standard_normal((batch, *grid)) * (flags == FLUID)
    target = torch.from_numpy(np.stack([error, flags.astype(np.float64)], axis=1))
    return flags, error, target


def _pcg_energy_left(flags, error, steps):
    """Reference: ||e - x_K||_A^2 / ||e||_A^2 of Jacobi-PCG from zero (dense NumPy)."""
    A = GridPoisson(flags)
    matrix = A.to_csr().toarray()
    e = A.gather(error)
    b = matrix @ e
    inverse_diagonal = 1.0 / np.diag(matrix)
    x = np.zeros_like(b)
    r = b.copy()
    z = inverse_diagonal * r
    p = z.copy()
    for _ in range(steps):
        Ap = matrix @ p
        alpha = (r @ z) / (p @ Ap)
        x += alpha * p
        r_new = r - alpha * Ap
        z_new = inverse_diagonal * r_new
        p = z_new + (r_new @ z_new) / (r @ z) * p
        r, z = r_new, z_new
    left = e - x
    return (left @ matrix @ left) / (e @ matrix @ e)


@pytest.mark.parametrize("grid", [(7, 6), (5, 4, 6)], ids=["2d", "3d"])
@pytest.mark.parametrize("steps", [1, 3, 5])
def test_a_fixed_spd_preconditioner_gives_pcg(rng, grid, steps):
    # With a fixed symmetric preconditioner, FCG(m >= 1) is PCG in exact arithmetic.
    flags, error, target = _batch(rng, 3, grid)
    got = dcdm_unrolled_loss(Jacobi(), target[:, :1], target, steps=steps, reduction="none")
    expected = [_pcg_energy_left(flags[i], error[i], steps) for i in range(3)]
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-8, atol=1e-14)


def test_one_step_is_the_energy_loss_of_the_first_direction(rng):
    flags, error, target = _batch(rng, 2, (6, 5, 4))
    model = DCDMMultigridNet(ndim=3).double()
    b = torch.stack(
        [
            torch.from_numpy(GridPoisson(f).scatter(GridPoisson(f) @ GridPoisson(f).gather(e)))
            for f, e in zip(flags, error, strict=True)
        ]
    )[:, None]
    norm = b.flatten(1).norm(dim=1).view(-1, 1, 1, 1, 1)
    direction = model(torch.cat([b / norm, target[:, 1:]], dim=1))
    torch.testing.assert_close(
        dcdm_unrolled_loss(model, b, target, steps=1), dcdm_energy_loss(direction, target)
    )


def test_more_steps_leave_less_error_and_gradients_reach_the_network(rng):
    _, _, target = _batch(rng, 2, (8, 8, 8))
    model = DCDMMultigridNet(ndim=3).double()
    values = [dcdm_unrolled_loss(model, target[:, :1], target, steps=k) for k in (1, 2, 4)]
    assert values[0] > values[1] > values[2] > 0
    values[2].backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    assert model.smoother_out.weight.grad.abs().sum() > 0


def test_needs_model_survives_options_and_bad_arguments_are_named(rng):
    loss = resolve_loss("dcdm_unrolled", options={"steps": 2})
    assert needs_model(loss) and not needs_model(resolve_loss("dcdm"))
    _, _, target = _batch(rng, 1, (5, 5))
    with pytest.raises(ValueError, match="steps must be an integer >= 1"):
        dcdm_unrolled_loss(Jacobi(), target[:, :1], target, steps=0)
    with pytest.raises(ValueError, match="differ in batch or grid"):
        dcdm_unrolled_loss(Jacobi(), target[:, :1, :4], target)


def test_trainer_trains_dcdm_multigrid_with_the_unrolled_loss(tmp_path):
    path = tmp_path / "errors.h5"
    generate(
        "dcdm-errors",
        path,
        samples=12,
        progress=False,
        overrides={"size": 12, "scales": [1, 2, 4]},
    )
    train, val = open_dataset(path, split="train"), open_dataset(path, split="val")
    torch.manual_seed(0)
    model = DCDMMultigridNet(ndim=3)
    trainer = Trainer(
        model,
        loss="dcdm_unrolled",
        loss_options={"steps": 2},
        metrics=["dcdm_energy"],
        epochs=4,
        batch_size=4,
        lr=3e-2,
        schedule="constant",
        weight_decay=0.0,
        progress=False,
        out_dir=tmp_path / "run",
    )
    history = trainer.fit(train, val)
    assert history["train_loss"][-1] < history["train_loss"][0]
    assert set(history.records[-1]) >= {"val_loss", "val_dcdm_energy"}
    assert (tmp_path / "run" / "best.safetensors").exists()
