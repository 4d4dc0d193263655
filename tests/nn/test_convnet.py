"""ConvNet: shapes in 1D/2D/3D, input validation, gradient flow, a short training run."""

from __future__ import annotations

import pytest
import torch

from physnet.nn import ConvNet


@pytest.mark.parametrize(
    ("ndim", "grid"), [(1, (16,)), (2, (12, 10)), (3, (6, 8, 5))], ids=["1d", "2d", "3d"]
)
@pytest.mark.parametrize("padding_mode", ["zeros", "reflect", "replicate", "circular"])
def test_output_shape(ndim, grid, padding_mode):
    model = ConvNet(
        in_channels=3, out_channels=2, hidden_channels=4, ndim=ndim, padding_mode=padding_mode
    )
    assert model(torch.randn(2, 3, *grid)).shape == (2, 2, *grid)


def test_no_residual_layers_and_wide_kernel():
    model = ConvNet(hidden_channels=4, n_layers=0, kernel_size=5)
    assert model(torch.randn(1, 1, 9, 9)).shape == (1, 1, 9, 9)
    assert len(model.layers) == 0


@pytest.mark.parametrize(
    ("shape", "match"),
    [
        ((2, 3, 8, 8), r"expected an input of shape \(batch, 1, H, W\) .* got \(2, 3, 8, 8\)"),
        ((2, 1, 8, 8, 8), r"\(batch, 1, H, W\) for ndim=2 .* got \(2, 1, 8, 8, 8\)"),
        ((1, 8, 8), r"got \(1, 8, 8\)"),
    ],
)
def test_input_shape_is_checked(shape, match):
    with pytest.raises(ValueError, match=match):
        ConvNet(hidden_channels=4)(torch.zeros(shape))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"in_channels": 0}, "in_channels must be a positive integer"),
        ({"hidden_channels": 2.5}, "hidden_channels must be a positive integer"),
        ({"n_layers": -1}, "n_layers must be a non-negative integer"),
        ({"ndim": 4}, "ndim must be 1, 2 or 3"),
        ({"kernel_size": 4}, "kernel_size must be a positive odd integer"),
        ({"activation": "swish"}, r"activation 'swish' is unknown; expected one of 'gelu'"),
        ({"padding_mode": "wrap"}, r"padding_mode 'wrap' is unknown; expected one of 'zeros'"),
        ({"input_scale": 0.0}, r"ConvNet: input_scale=0.0, expected positive values"),
        ({"output_scale": [1.0, 2.0]}, r"ConvNet: output_scale=\[1.0, 2.0\], expected a number"),
    ],
)
def test_invalid_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ConvNet(**kwargs)


@pytest.mark.parametrize("ndim", [1, 2, 3])
def test_normalisation_wraps_the_network(ndim):
    # (x - shift) / scale goes in, the output is multiplied by output_scale: the scaled
    # network equals the plain one on normalised input, times the output scale.
    torch.manual_seed(0)
    plain = ConvNet(in_channels=2, out_channels=3, hidden_channels=4, n_layers=1, ndim=ndim)
    scaled = ConvNet(
        in_channels=2,
        out_channels=3,
        hidden_channels=4,
        n_layers=1,
        ndim=ndim,
        input_shift=[1.0, -2.0],
        input_scale=4.0,
        output_scale=[1e-3, 1.0, 10.0],
    )
    scaled.load_state_dict(plain.state_dict())
    x = torch.randn(2, 2, *([6] * ndim))
    shift = torch.tensor([1.0, -2.0]).reshape(1, 2, *([1] * ndim))
    expected = plain((x - shift) / 4.0) * torch.tensor([1e-3, 1.0, 10.0]).reshape(
        1, 3, *([1] * ndim)
    )
    torch.testing.assert_close(scaled(x), expected)
    assert "output_scale" not in scaled.state_dict()


def test_gradient_reaches_every_parameter():
    model = ConvNet(in_channels=2, hidden_channels=4, n_layers=2, ndim=3)
    model(torch.randn(2, 2, 5, 5, 5)).square().mean().backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None, name
        assert torch.isfinite(parameter.grad).all(), name
        assert parameter.grad.abs().sum() > 0, name


def test_short_training_run_reduces_the_loss():
    # Learn a fixed smoothing stencil: within the network's receptive field, so learnable.
    x = torch.randn(16, 1, 16, 16)
    target = (x + x.roll(1, -1) + x.roll(-1, -1) + x.roll(1, -2) + x.roll(-1, -2)) / 5
    model = ConvNet(hidden_channels=8, n_layers=2, padding_mode="circular")
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(60):
        optimizer.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), target)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.1 * losses[0]
