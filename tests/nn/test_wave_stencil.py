"""WaveStencil: the stencil application against an unfold reference (values and gradients),
the compiled rollout against the autograd one, linearity in the field, the leapfrog start,
the unroll curriculum, checkpoints and bad inputs."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import physnet.nn
from physnet.nn import WaveStencil
from physnet.nn.wave_stencil import apply_stencils


def unfold_reference(frames, stencils):
    batch, outputs, history, k, _, height, width = stencils.shape
    patches = F.unfold(frames.double(), k, padding=k // 2)
    weights = stencils.double().reshape(batch, outputs, history * k * k, height * width)
    return (weights * patches[:, None]).sum(2).reshape(batch, outputs, height, width)


def clip(batch=2, frames=7, size=12, seed=0):
    generator = torch.Generator().manual_seed(seed)
    speed = 0.5 + torch.rand(batch, size, size, generator=generator)
    return torch.cat(
        [speed[:, None], torch.randn(batch, frames, size, size, generator=generator)], 1
    )


def trained_like(model, seed=0):
    """Random (small) learned stencils, so tests do not only see the leapfrog start."""
    torch.manual_seed(seed)
    with torch.no_grad():
        model.projection.weight.normal_(std=0.02)
        model.projection.bias.normal_(std=0.02)
    return model


@pytest.mark.parametrize("shape", [(2, 1, 3, 5, 5, 9, 7), (1, 2, 2, 3, 3, 4, 6)])
def test_apply_stencils_matches_unfold_in_values_and_gradients(shape):
    batch, _, history, _, _, height, width = shape
    torch.manual_seed(1)
    frames = torch.randn(batch, history, height, width, requires_grad=True)
    stencils = torch.randn(*shape, requires_grad=True)
    result = apply_stencils(frames, stencils)
    torch.testing.assert_close(
        result.double(), unfold_reference(frames, stencils), rtol=1e-5, atol=1e-5
    )
    grad = torch.randn_like(result)
    frames_grad, stencils_grad = torch.autograd.grad(result, (frames, stencils), grad)
    expected = torch.autograd.grad(
        unfold_reference(frames, stencils), (frames, stencils), grad.double()
    )
    torch.testing.assert_close(frames_grad.double(), expected[0].double(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(stencils_grad.double(), expected[1].double(), rtol=1e-5, atol=1e-5)


def test_float64_uses_the_unfold_path_and_agrees():
    torch.manual_seed(2)
    frames, stencils = torch.randn(1, 2, 6, 6), torch.randn(1, 1, 2, 3, 3, 6, 6)
    torch.testing.assert_close(
        apply_stencils(frames.double(), stencils.double()),
        apply_stencils(frames, stencils).double(),
        rtol=1e-5,
        atol=1e-5,
    )


def test_untrained_step_is_the_leapfrog_extrapolation():
    model = WaveStencil(history=3, horizon=2, stencil=5, hidden_channels=4, n_layers=1)
    x = clip()
    frames = x[:, 1:4]
    expected = torch.stack(
        [2 * frames[:, -1] - frames[:, -2], 3 * frames[:, -1] - 2 * frames[:, -2]], 1
    )
    torch.testing.assert_close(model.step(x[:, 0], frames), expected)


def test_compiled_rollout_equals_the_autograd_rollout():
    model = trained_like(WaveStencil(history=3, horizon=2, stencil=5, hidden_channels=4))
    x = clip(frames=3)
    with torch.no_grad():
        compiled = model.rollout(x[:, 0], x[:, 1:], 9)
    autograd = model.rollout(x[:, 0], x[:, 1:].requires_grad_(), 9)
    assert autograd.requires_grad and compiled.shape == (2, 9, 12, 12)
    torch.testing.assert_close(compiled, autograd.detach(), rtol=1e-4, atol=1e-4)


def test_rollout_is_linear_in_the_field():
    model = trained_like(WaveStencil(history=2, stencil=5, hidden_channels=4, n_layers=1)).eval()
    a, b = clip(seed=1), clip(seed=2)
    speed = a[:, 0]
    with torch.no_grad():
        combined = model.rollout(speed, 2 * a[:, 1:3] - 0.5 * b[:, 1:3], 6)
        separate = 2 * model.rollout(speed, a[:, 1:3], 6) - 0.5 * model.rollout(speed, b[:, 1:3], 6)
    torch.testing.assert_close(combined, separate, rtol=1e-4, atol=1e-4)


def test_forward_rolls_out_and_continues_with_rollout():
    model = trained_like(WaveStencil(history=2, stencil=3, hidden_channels=4, n_layers=1)).eval()
    x = clip(frames=8)
    with torch.no_grad():
        out = model(x)
        assert torch.equal(out[:, :2], x[:, 1:3])
        torch.testing.assert_close(out[:, 2:], model.rollout(x[:, 0], x[:, 1:3], 6))


def test_unroll_curriculum_restarts_segments_from_true_frames():
    model = WaveStencil(history=2, stencil=3, hidden_channels=4, unroll=4, unroll_warmup=6)
    trained_like(model).train()
    x = clip(frames=8)
    assert model.segment_length() == 1
    out = model(x)  # teacher forcing: every frame predicted from true frames
    for t in range(2, 8):
        expected = model.step(x[:, 0], x[:, 1 + t - 2 : 1 + t])[:, 0]
        torch.testing.assert_close(out[:, t], expected)
    lengths = []
    for _ in range(7):
        lengths.append(model.segment_length())
        model(x)
    assert lengths == [1, 2, 2, 3, 3, 4, 4]
    assert int(model.training_calls) == 8
    model.eval()
    with torch.no_grad():  # evaluation always rolls out the whole clip
        torch.testing.assert_close(model(x)[:, 2:], model.rollout(x[:, 0], x[:, 1:3], 6))


def test_checkpoint_round_trip_keeps_the_curriculum(tmp_path):
    model = trained_like(WaveStencil(history=2, stencil=3, hidden_channels=4, unroll=3))
    model.train()(clip())
    path = tmp_path / "stencil.safetensors"
    physnet.nn.save(model, path)
    loaded = physnet.nn.load(path)
    assert int(loaded.training_calls) == 1
    x = clip(seed=3)
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval()(x), model.eval()(x))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"history": 1}, "history"),
        ({"stencil": 4}, "stencil"),
        ({"unroll": 0}, "unroll"),
        ({"activation": "bad"}, "activation"),
        ({"input_noise": 2.0}, "input_noise"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        WaveStencil(**kwargs)


def test_bad_shapes():
    model = WaveStencil(history=3, stencil=3, hidden_channels=4)
    with pytest.raises(ValueError, match="history=3"):
        model.step(torch.rand(1, 8, 8), torch.rand(1, 2, 8, 8))
    with pytest.raises(ValueError, match="speed"):
        model.rollout(torch.rand(8, 8), torch.rand(1, 3, 8, 8), 2)
    with pytest.raises(ValueError, match="steps"):
        model.rollout(torch.rand(1, 8, 8), torch.rand(1, 3, 8, 8), -1)
    with pytest.raises(ValueError, match="clip"):
        model(torch.rand(1, 3, 8, 8))


def test_operator_basis_is_the_laplacian_powers_and_their_derivatives():
    from physnet.nn.wave_stencil import operator_basis

    kernels, orders = operator_basis(7)
    assert kernels.shape == (4 + 3 * 3, 7, 7)
    assert orders.tolist() == [0, 2, 4, 6, 1, 3, 5, 1, 3, 5, 2, 4, 6]
    torch.manual_seed(4)
    u = torch.zeros(1, 1, 21, 21)
    u[..., 3:-3, 3:-3] = torch.randn(15, 15)  # zero margins: no boundary effects
    laplacian = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])
    expected = u
    for m in range(4):
        applied = F.conv2d(u, kernels[m][None, None], padding=3)
        torch.testing.assert_close(applied, expected, rtol=1e-5, atol=1e-4)
        expected = F.conv2d(expected, laplacian[None, None], padding=1)
    dx = F.conv2d(u, kernels[4][None, None], padding=3)
    torch.testing.assert_close(dx[..., 1:-1], 0.5 * (u[..., 2:] - u[..., :-2]))


def test_operator_stencils_combine_the_operators_with_the_predicted_coefficients():
    model = trained_like(WaveStencil(history=2, stencil=5, hidden_channels=4, basis="operators"))
    speed = torch.rand(1, 8, 8) + 0.5
    stencils = model.stencils(speed)
    assert stencils.shape == (1, 1, 2, 5, 5, 8, 8)
    inputs = torch.stack([speed, torch.zeros_like(speed), torch.ones_like(speed)], 1)
    h = model.lift(inputs)
    for layer in model.layers:
        h = h + layer(model.activation(h))
    raw = model.projection(model.activation(h)).reshape(1, 1, 2, len(model.kernels), 8, 8)
    coefficients = raw * model.scales.view(1, 1, 1, -1, 1, 1)
    expected = torch.einsum("bojnyx,nac->bojacyx", coefficients, model.kernels)
    expected = expected + model.base[None, ..., None, None]
    torch.testing.assert_close(stencils, expected)


def test_bad_basis():
    with pytest.raises(ValueError, match="basis"):
        WaveStencil(basis="fourier")
    with pytest.raises(ValueError, match="courant"):
        WaveStencil(basis="operators", courant=0.0)
