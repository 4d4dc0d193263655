"""CP-format convolutions: equivalence with their dense kernel, initial variance, parameter
counts, and the one-line switch."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from physnet.nn import CPConv2d, CPConv3d, compress_convs

LAYERS = {2: CPConv2d, 3: CPConv3d}
DENSE = {2: torch.nn.Conv2d, 3: torch.nn.Conv3d}


def brute_force_kernel(layer):
    """The CP sum written out term by term in float64 (independent of einsum)."""
    output = layer.output_factor.detach().double()
    channel = layer.input_factor.detach().double()
    spatial = [f.detach().double() for f in layer.spatial_factors]
    kernel = 0
    for r in range(layer.rank):
        term = torch.outer(output[:, r], channel[r])
        for factor in spatial:
            term = term[..., None] * factor[r]
        kernel = kernel + term
    return kernel


@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("implementation", ["factorized", "reconstructed"])
@pytest.mark.parametrize(
    "options",
    [
        {"kernel_size": 3, "padding": 1},
        {"kernel_size": (3, 5, 1), "stride": 2, "padding": (1, 2, 0)},
        {"kernel_size": 5, "stride": (1, 2, 3), "padding": 0, "bias": False},
        {"kernel_size": 3, "padding": 1, "padding_mode": "circular"},
    ],
)
def test_outputs_match_the_dense_convolution_of_to_dense(ndim, implementation, options):
    options = {
        key: (tuple(value[:ndim]) if isinstance(value, tuple) else value)
        for key, value in options.items()
    }
    layer = LAYERS[ndim](3, 5, rank=4, implementation=implementation, **options)
    with torch.no_grad():
        layer.bias is not None and layer.bias.normal_()
    torch.testing.assert_close(layer.to_dense().double(), brute_force_kernel(layer))
    x = torch.randn(2, 3, *(11, 9, 7)[:ndim])
    dense = layer.to_conv()
    assert type(dense) is DENSE[ndim] and dense.weight.shape == layer.to_dense().shape
    expected = dense.double()(x.double())
    torch.testing.assert_close(layer(x).double(), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize(("channels", "kernel_size", "rank"), [(16, 3, 4), (32, 5, 16), (8, 3, 64)])
def test_initial_dense_kernel_has_kaiming_variance(ndim, channels, kernel_size, rank):
    layer = LAYERS[ndim](channels, channels, kernel_size, rank, padding=kernel_size // 2)
    fan_in = channels * kernel_size**ndim
    kaiming = 2.0 / fan_in
    weight = layer.to_dense().detach().double()
    assert weight.var().item() == pytest.approx(kaiming, rel=0.1)
    # The signal propagates like a Kaiming-initialised dense layer: E|y|^2 = fan_in var(w).
    x = torch.randn(64, channels, *(12,) * ndim)
    with torch.no_grad():
        centre = (slice(None), slice(None), *(slice(kernel_size, -kernel_size),) * ndim)
        output = (layer(x) - layer.bias.view(-1, *(1,) * ndim))[centre]
    assert output.square().mean().item() == pytest.approx(fan_in * kaiming, rel=0.1)


@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("bias", [True, False])
def test_parameter_counts_follow_the_documented_formulas(ndim, bias):
    kernel = (3, 5, 7)[:ndim]
    layer = LAYERS[ndim](6, 10, kernel, rank=7, bias=bias)
    counted = sum(p.numel() for p in layer.parameters())
    assert counted == 7 * (6 + 10 + sum(kernel)) + 10 * bias
    assert counted == LAYERS[ndim].parameter_count(6, 10, kernel, 7, bias=bias)
    dense = DENSE[ndim](6, 10, kernel, bias=bias)
    assert sum(p.numel() for p in dense.parameters()) == LAYERS[ndim].dense_parameter_count(
        6, 10, kernel, bias=bias
    )


def test_gradients_reach_every_factor():
    layer = CPConv2d(4, 4, 3, rank=3, padding=1)
    layer(torch.randn(2, 4, 8, 8)).square().sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in layer.parameters())


def test_compress_convs_switches_spatial_convolutions_only():
    model = torch.nn.Sequential(
        torch.nn.Conv2d(2, 16, 5, padding="same"),
        torch.nn.ReLU(),
        torch.nn.Sequential(torch.nn.Conv3d(16, 16, 3, stride=2), torch.nn.Conv2d(16, 8, 1)),
        torch.nn.Conv2d(16, 16, 3, groups=4),
    )
    compress_convs(model, rank=0.25)
    assert isinstance(model[0], CPConv2d) and model[0].padding == (2, 2)
    assert model[0].rank == math.floor(0.25 * 16 * 2 * 25 / (2 + 16 + 10))
    assert isinstance(model[2][0], CPConv3d) and model[2][0].stride == (2, 2, 2)
    assert type(model[2][1]) is torch.nn.Conv2d  # 1x1: nothing to compress
    assert type(model[3]) is torch.nn.Conv2d  # grouped: kept dense
    assert model[0](torch.zeros(1, 2, 9, 9)).shape == (1, 16, 9, 9)
    with pytest.raises(ValueError, match="rank=0"):
        compress_convs(model, rank=0)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="rank=0"):
        CPConv2d(3, 3, 3, rank=0)
    with pytest.raises(ValueError, match="kernel_size=\\(3, 3, 3\\)"):
        CPConv2d(3, 3, (3, 3, 3), rank=2)
    with pytest.raises(ValueError, match="expected an input of shape \\(batch, 3"):
        CPConv2d(3, 3, 3, rank=2)(torch.zeros(1, 4, 8, 8))
    assert np.isfinite(CPConv3d(1, 1, 1, rank=1).to_dense().item())
