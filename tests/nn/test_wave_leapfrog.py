"""WaveLeapfrog: the initial operator against the analytic five-point spectrum, energy that
never grows for any weights, linearity, the data's physics prior, gradients and errors."""

from __future__ import annotations

import math

import pytest
import torch

import physnet.nn
from physnet.nn import WaveLeapfrog
from physnet.nn.wave_leapfrog import EDGES


def _scene(n=16, batch=2, seed=0, holes=True):
    generator = torch.Generator().manual_seed(seed)
    speed = 0.8 + 0.4 * torch.rand(batch, n, n, generator=generator, dtype=torch.float64)
    if holes:
        speed[:, 5:8, 6:9] = 0.0
    frames = torch.randn(batch, 2, n, n, generator=generator, dtype=torch.float64)
    return speed, torch.where(speed[:, None] == 0, 0, frames)


def _energies(model, speed, frames, steps):
    """The discrete energy after each of ``steps`` frame-map steps from the first two frames
    (on the padded grid), and the last padded state."""
    pad = model.pad
    widen = (lambda u: torch.nn.functional.pad(u, (pad,) * 4)) if pad else (lambda u: u)
    with torch.no_grad():
        states = [widen(frames[:, 0]), widen(frames[:, 1])]
        step = model._stepper(speed)
        energies = []
        for _ in range(steps):
            states.append(step(states[-2], states[-1]))
            energies.append(model.energy(speed, states[-2], states[-1]))
    return torch.stack(energies), states[-1]


def test_initial_operator_is_the_five_point_scheme_with_its_exact_frame_map():
    """Constant speed, no band: a cosine mode (Neumann sides) follows
    u_{n+1} = 2 cos(m θ) u_n - u_{n-1}, cos θ = 1 - dt² λ / 2, λ = 4 c² sin²(π k / 2N) / h²."""
    n, c, k = 16, 1.1, 3
    model = WaveLeapfrog(pad=0, hidden_channels=4, n_layers=1).double()
    speed = torch.full((1, n, n), c, dtype=torch.float64)
    weights, damping = model.operator(speed)
    h = 1.0 / n
    assert torch.allclose(weights[:, 0, :, :-1], torch.tensor(c**2 / h**2, dtype=torch.float64))
    assert weights[:, 2:].abs().max() < 0.003 * c**2 / h**2  # off-axis edges start ~off
    assert damping.abs().max() < 1e-3
    with torch.no_grad():
        model.projection.bias[2:6] = -30.0  # switch the off-axis edges fully off
        model.projection.bias[6] = -60.0  # and the interior damping
    mode = torch.cos(math.pi * k * (torch.arange(n, dtype=torch.float64) + 0.5) / n)
    field = (mode[:, None] * torch.ones(n, dtype=torch.float64))[None]
    frames = torch.stack([0.3 * field, field], 1)
    predicted = model.rollout(speed, frames, 5)
    lam = 4 * c**2 * math.sin(math.pi * k / (2 * n)) ** 2 / h**2
    m = model._substeps(model.operator(speed)[0])
    theta = math.acos(1 - (model.frame_interval / m) ** 2 * lam / 2)
    previous, current = 0.3, 1.0
    for j in range(5):
        previous, current = current, 2 * math.cos(m * theta) * current - previous
        torch.testing.assert_close(predicted[0, j], current * field[0], rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("pad", [0, 4])
def test_energy_never_grows_for_any_weights(pad):
    torch.manual_seed(3)
    model = WaveLeapfrog(pad=pad, hidden_channels=8, n_layers=1).double()
    with torch.no_grad():  # arbitrary, large learned terms
        model.projection.weight.normal_(0, 3.0)
        model.projection.bias.normal_(0, 3.0)
    speed, frames = _scene(seed=1)
    with torch.no_grad():
        rollout = model.rollout(speed, frames, 300)
    energies, last = _energies(model, speed, frames, 300)
    assert (energies >= -1e-9 * energies[0]).all()
    assert (energies[1:] <= energies[:-1] * (1 + 1e-9) + 1e-12).all()
    assert rollout.abs().max() < 10 * frames.abs().max() * 10  # bounded, no blow-up
    inner = last[:, pad : pad + 16, pad : pad + 16] if pad else last
    torch.testing.assert_close(rollout[:, -1], inner)


def test_operator_is_symmetric_positive_semidefinite():
    torch.manual_seed(4)
    model = WaveLeapfrog(pad=2, hidden_channels=4, n_layers=1).double()
    with torch.no_grad():
        model.projection.bias.normal_(0, 2.0)
    speed, _ = _scene(n=8, batch=1, seed=2)
    weights, _ = model.operator(speed)
    size = 12 * 12
    basis = torch.eye(size, dtype=torch.float64).reshape(size, 12, 12)
    matrix = torch.stack([model.apply_operator(weights, e[None])[0].reshape(-1) for e in basis])
    torch.testing.assert_close(matrix, matrix.T)
    assert torch.linalg.eigvalsh(matrix).min() > -1e-9 * matrix.abs().max()
    assert len(EDGES) == 6 and weights.shape == (1, 6, 12, 12)


def test_steps_are_linear_in_the_field():
    model = WaveLeapfrog(pad=3, hidden_channels=4, n_layers=1).double()
    speed, a = _scene(seed=5)
    _, b = _scene(seed=6)
    with torch.no_grad():
        combined = model.rollout(speed, 2 * a - 3 * b, 4)
        separate = 2 * model.rollout(speed, a, 4) - 3 * model.rollout(speed, b, 4)
    torch.testing.assert_close(combined, separate)
    assert (combined[:, :, 5:8, 6:9] == 0).all()  # holes stay empty


def test_training_gradients_and_checkpoint(tmp_path):
    model = WaveLeapfrog(pad=2, hidden_channels=4, n_layers=1)
    speed, frames = _scene(n=12, seed=7)
    clip = torch.cat([speed[:, None], frames, frames], 1).float()  # 4 frames
    output = model(clip)
    assert output.shape == (2, 4, 12, 12)
    torch.testing.assert_close(output[:, :2], clip[:, 1:3])
    output[:, 2:].square().mean().backward()
    assert model.projection.weight.grad.abs().sum() > 0 and model.band.grad is not None
    path = tmp_path / "leapfrog.safetensors"
    physnet.nn.save(model, path)
    loaded = physnet.nn.load(path)
    torch.testing.assert_close(loaded(clip), output.detach())


def test_errors():
    with pytest.raises(ValueError, match="pad=-1"):
        WaveLeapfrog(pad=-1)
    with pytest.raises(ValueError, match=r"safety=1\.5"):
        WaveLeapfrog(safety=1.5)
    with pytest.raises(ValueError, match="frame_interval=0"):
        WaveLeapfrog(frame_interval=0)
    with pytest.raises(ValueError, match="activation"):
        WaveLeapfrog(activation="swish")
    model = WaveLeapfrog(hidden_channels=4, n_layers=1, pad=0)
    with pytest.raises(ValueError, match="steps=-1"):
        model.rollout(torch.ones(1, 8, 8), torch.zeros(1, 2, 8, 8), -1)
    with pytest.raises(ValueError, match="expected speed"):
        model.rollout(torch.ones(8, 8), torch.zeros(1, 2, 8, 8), 1)


def test_pretrained_beats_its_untrained_twin_on_a_fresh_simulation():
    """The shipped weights (solvers/wave-leapfrog/card.md) on a scene drawn with a seed no
    data set uses, simulated by the FE solver: rollout errors below 0.75x those of the
    same network untrained (the five-point prior), and the energy never grows."""
    import numpy as np

    from physnet.datasets._wave import draw_wave_scene, simulate_wave_scene
    from physnet.datasets.generate import get_generator

    shipped = physnet.nn.load("wave-leapfrog").eval()
    assert sum(p.numel() for p in shipped.parameters()) == 39_656
    untrained = WaveLeapfrog(**shipped.config).eval()  # zero projection: the prior
    config = get_generator("wave2d").check_config({"n_frames": 14})
    solution, to_grid, _ = simulate_wave_scene(
        config, draw_wave_scene(config, np.random.default_rng(777))
    )
    frames = torch.as_tensor(to_grid(solution.values), dtype=torch.float32)[None]
    speed = torch.as_tensor(to_grid.cell_values(solution.speed), dtype=torch.float32)[None]
    truth = frames[:, 2:]

    def errors(model):
        with torch.no_grad():
            predicted = model.rollout(speed, frames[:, :2], truth.shape[1])
        return ((predicted - truth).flatten(2).norm(dim=2) / truth.flatten(2).norm(dim=2))[0]

    learned, prior = errors(shipped), errors(untrained)
    assert (learned < 0.75 * prior).all(), (learned, prior)
    energies, _ = _energies(shipped.double(), speed.double(), frames.double(), 100)
    assert (energies[1:] <= energies[:-1] * (1 + 1e-9) + 1e-12).all()
