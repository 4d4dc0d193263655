"""WaveLatentLeapfrog: a symmetric positive semi-definite joint operator within its
Gershgorin bound, an energy that never grows for any weights, the untrained twin of
WaveLeapfrog, amplitude equivariance, gradients, checkpoints and errors."""

from __future__ import annotations

import pytest
import torch

import physnet.nn
from physnet.nn import WaveLatentLeapfrog, WaveLeapfrog


def _scene(n=16, batch=2, frames=4, seed=0):
    generator = torch.Generator().manual_seed(seed)
    speed = 0.8 + 0.4 * torch.rand(batch, n, n, generator=generator, dtype=torch.float64)
    speed[:, 5:8, 6:9] = 0.0  # a hole
    given = torch.randn(batch, frames, n, n, generator=generator, dtype=torch.float64)
    return speed, torch.where(speed[:, None] == 0, 0, given)


def _randomise(model, scale=3.0, seed=0):
    """Arbitrary, large learned terms: springs, stiffness, damping and hidden initial state."""
    torch.manual_seed(seed)
    with torch.no_grad():
        model.projection.weight.normal_(0, scale)
        model.projection.bias.normal_(0, scale)
        for parameter in model.initial.parameters():
            parameter.normal_(0, 1.0)


def test_joint_operator_is_symmetric_psd_within_its_gershgorin_bound():
    model = WaveLatentLeapfrog(latent_channels=2, history=3, pad=2, hidden_channels=4, n_layers=1)
    model = model.double()
    _randomise(model, scale=2.0, seed=4)
    speed, _ = _scene(n=8, batch=1, seed=2)
    terms = model.operator(speed)
    shape = (3, 12, 12)
    size = 3 * 12 * 12
    basis = torch.eye(size, dtype=torch.float64).reshape(size, *shape)
    matrix = torch.stack([model.apply_joint(terms, e[None])[0].reshape(-1) for e in basis])
    torch.testing.assert_close(matrix, matrix.T)
    eigenvalues = torch.linalg.eigvalsh(matrix)
    assert eigenvalues.min() > -1e-9 * matrix.abs().max()
    # the sub-step count keeps (τ/m)² λ_max / 4 below safety², i.e. A's spectrum in [-2, 2]
    m = model._substeps(terms)
    assert (model.frame_interval / m) ** 2 * eigenvalues.max() / 4 <= model.safety**2 + 1e-12
    assert terms["springs"].abs().sum() > 0 and terms["stiffness"].abs().sum() > 0
    assert (terms["springs"][:, :, 7:10, 8:11] == 0).all()  # no springs in the hole


@pytest.mark.parametrize("pad", [0, 4])
def test_energy_never_grows_for_any_weights(pad):
    model = WaveLatentLeapfrog(latent_channels=3, history=4, pad=pad, hidden_channels=8)
    model = model.double()
    _randomise(model, seed=3)
    speed, frames = _scene(seed=1)
    steps = 150
    with torch.no_grad():
        step = model._stepper(speed)
        chebyshev, substeps = model._propagator(model.operator(speed))
        assert substeps > 1  # the large weights need sub-steps

        def energy(previous, current):  # model.energy, with the operator built once
            cross = (current * 2 * chebyshev(previous)).sum((1, 2, 3))
            return current.square().sum((1, 2, 3)) + previous.square().sum((1, 2, 3)) - cross

        previous, current = model.initial_state(speed, frames)
        assert previous[:, 1:].abs().max() > 0  # the hidden fields start non-zero
        energies = []
        for _ in range(steps):
            previous, current = current, step(previous, current)
            energies.append(energy(previous, current))
        torch.testing.assert_close(model.energy(speed, previous, current), energies[-1])
        rollout = model.rollout(speed, frames, steps)
    energies = torch.stack(energies)
    assert (energies >= -1e-9 * energies[0]).all()
    assert (energies[1:] <= energies[:-1] * (1 + 1e-9) + 1e-12).all()
    assert torch.isfinite(rollout).all()
    assert (rollout[:, :, 5:8, 6:9] == 0).all()  # holes stay empty


def test_untrained_model_is_the_untrained_leapfrog_once_the_springs_are_off():
    latent = WaveLatentLeapfrog(latent_channels=2, history=4, pad=3, hidden_channels=6)
    latent = latent.double()
    plain = WaveLeapfrog(pad=3, hidden_channels=6).double()
    shared = {
        key: value
        for key, value in latent.state_dict().items()
        if not key.startswith(("projection", "initial"))
    }
    plain.load_state_dict(shared, strict=False)
    speed, frames = _scene(seed=5)
    with torch.no_grad():
        expected = plain.rollout(speed, frames, 8)
        near = latent.rollout(speed, frames, 8)  # springs start almost off: 0.25 % of c²/h²
        assert (near - expected).norm() < 0.05 * expected.norm()
        latent.projection.bias[-4:] = -60.0  # springs and stiffness fully off
        exact = latent.rollout(speed, frames, 8)
    torch.testing.assert_close(exact, expected, rtol=1e-10, atol=1e-10)


def test_rollout_is_equivariant_to_the_field_amplitude():
    model = WaveLatentLeapfrog(latent_channels=2, history=4, pad=2, hidden_channels=4).double()
    _randomise(model, scale=0.5, seed=6)
    speed, frames = _scene(seed=7)
    with torch.no_grad():
        torch.testing.assert_close(
            model.rollout(speed, 3.5 * frames, 5), 3.5 * model.rollout(speed, frames, 5)
        )
        assert (model.rollout(speed, 0 * frames, 3) == 0).all()  # zero stays zero, no NaN


def test_training_gradients_and_checkpoint(tmp_path):
    model = WaveLatentLeapfrog(latent_channels=2, history=3, pad=2, hidden_channels=4)
    speed, frames = _scene(n=12, frames=5, seed=8)
    clip = torch.cat([speed[:, None], frames], 1).float()
    output = model(clip)
    assert output.shape == (2, 5, 12, 12)
    torch.testing.assert_close(output[:, :3], clip[:, 1:4])
    output[:, 3:].square().mean().backward()
    assert model.projection.weight.grad.abs().sum() > 0
    assert model.initial[-1].weight.grad.abs().sum() > 0  # the hidden start learns
    path = tmp_path / "latent.safetensors"
    physnet.nn.save(model, path)
    loaded = physnet.nn.load(path)
    assert loaded.config["latent_channels"] == 2 and loaded.history == 3
    torch.testing.assert_close(loaded(clip), output.detach())
    with torch.no_grad():
        torch.testing.assert_close(
            model.step(speed.float(), frames.float()),
            model.rollout(speed.float(), frames.float(), 3)[:, :1],
        )


def test_errors():
    with pytest.raises(ValueError, match="latent_channels=0"):
        WaveLatentLeapfrog(latent_channels=0)
    with pytest.raises(ValueError, match="history=1"):
        WaveLatentLeapfrog(history=1)
    with pytest.raises(ValueError, match="pad=-1"):
        WaveLatentLeapfrog(pad=-1)
    with pytest.raises(ValueError, match="coupling=0"):
        WaveLatentLeapfrog(coupling=0)
    model = WaveLatentLeapfrog(latent_channels=1, history=3, hidden_channels=4, n_layers=1)
    with pytest.raises(ValueError, match="history=3"):
        model.rollout(torch.ones(1, 8, 8), torch.zeros(1, 2, 8, 8), 1)
    with pytest.raises(ValueError, match="steps=-1"):
        model.rollout(torch.ones(1, 8, 8), torch.zeros(1, 3, 8, 8), -1)
