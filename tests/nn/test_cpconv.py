"""CP-format and separable convolutions: equivalence with their dense kernel, initial variance,
parameter counts, the automatic choice of implementation, and the one-line switch."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from physnet.nn import CPConv2d, CPConv3d, SeparableConv2d, compress_convs

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


# --- implementation="auto": the cost model, the choice and the kernel cache -------------


@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("grad", [False, True])
@pytest.mark.parametrize(
    "options",
    [
        {"kernel_size": 3, "padding": 1},
        {"kernel_size": (3, 5, 1), "stride": 2, "padding": (1, 2, 0), "bias": False},
        {"kernel_size": 3, "padding": 1, "padding_mode": "reflect"},
    ],
)
def test_auto_equals_both_explicit_implementations(ndim, grad, options):
    options = {
        key: (tuple(value[:ndim]) if isinstance(value, tuple) else value)
        for key, value in options.items()
    }
    layer = LAYERS[ndim](3, 5, rank=4, **options)
    assert layer.implementation == "auto"
    x = torch.randn(2, 3, *(11, 9, 7)[:ndim])
    outputs = {}
    for implementation in ("auto", "factorized", "reconstructed"):
        layer.implementation = implementation
        with torch.set_grad_enabled(grad):
            outputs[implementation] = layer(x)
    for implementation in ("factorized", "reconstructed"):
        torch.testing.assert_close(outputs["auto"], outputs[implementation], atol=1e-5, rtol=1e-5)
    if grad:
        outputs["auto"].square().sum().backward()
        assert all(p.grad is not None for p in layer.parameters())


def test_cost_model_counts_the_documented_multiply_adds():
    from physnet.nn.cpconv import COST_MODEL

    cin, cout, (kh, kw), rank, (sh, sw) = 6, 10, (3, 5), 7, (1, 2)
    layer = CPConv2d(cin, cout, (kh, kw), rank, stride=(sh, sw), padding=(1, 2))
    batch, (h, w) = 4, (16, 20)
    ho, wo = h // sh, w // sw
    operations = layer.operations((batch, cin, h, w))
    factorized = operations["factorized"]
    assert [kind for kind, _, _ in factorized] == [
        "projection",
        "depthwise",
        "depthwise",
        "projection",
    ]
    # The docstring's per-output-pixel count R (C_in s_h s_w + k_h s_w + k_w + C_out).
    per_pixel = rank * (cin * sh * sw + kh * sw + kw + cout)
    assert sum(macs for _, macs, _ in factorized) == batch * ho * wo * per_pixel
    # Outputs: R channels at full resolution, after y, after x; then C_out channels.
    assert [n for _, _, n in factorized] == [
        batch * rank * h * w,
        batch * rank * ho * w,
        batch * rank * ho * wo,
        batch * cout * ho * wo,
    ]
    assert operations["reconstructed"] == [
        ("reconstruction", rank * cin * kh * kw * (cout + 1), cout * cin * kh * kw),
        ("conv", batch * ho * wo * cout * cin * kh * kw, batch * ho * wo * cout),
    ]
    for backward in (False, True):
        constants = COST_MODEL["backward" if backward else "forward"]
        costs = layer.implementation_costs((batch, cin, h, w), backward=backward)
        for implementation, ops in operations.items():
            expected = sum(
                constants[kind][0] + (constants[kind][1] * macs + constants[kind][2] * n) / 1e3
                for kind, macs, n in ops
            )
            assert costs[implementation] == pytest.approx(expected)
    with pytest.raises(ValueError, match="expected an input of shape"):
        layer.operations((batch, cin + 1, h, w))


def test_auto_reconstructs_large_batches_and_factorizes_where_cheaper():
    # Rank above the channel count, 3x3: the dense convolution is cheaper per pixel.
    wide_rank = CPConv2d(16, 16, 3, rank=40, padding=1)
    assert wide_rank.choose_implementation((64, 16, 64, 64)) == "reconstructed"
    assert wide_rank.choose_implementation((64, 16, 64, 64), backward=True) == "reconstructed"
    # Low rank, wide channels, 7x7: the factorized path does ~100x fewer multiply-adds.
    low_rank = CPConv2d(64, 64, 7, rank=4, padding=3)
    assert low_rank.choose_implementation((8, 64, 64, 64)) == "factorized"
    assert low_rank.choose_implementation((8, 64, 64, 64), backward=True) == "factorized"
    # The reconstruction is paid once per call: its share shrinks with the batch, and a
    # layer with an expensive kernel (rank 256) reconstructs only for large batches.
    big = CPConv2d(64, 64, 3, rank=256, padding=1)
    assert big.choose_implementation((1, 64, 4, 4)) == "factorized"
    assert big.choose_implementation((64, 64, 32, 32)) == "reconstructed"
    per_sample = [
        big.implementation_costs((n, 64, 8, 8))["reconstructed"] / n for n in (1, 4, 16, 64)
    ]
    assert per_sample == sorted(per_sample, reverse=True)
    # Off the CPU the constants are not calibrated: one dense convolution.
    assert low_rank.choose_implementation((8, 64, 64, 64), device="cuda") == "reconstructed"


def test_forward_follows_the_chooser_deterministically(monkeypatch):
    layer = CPConv2d(4, 4, 3, rank=2, padding=1)
    calls = []
    choose = layer.choose_implementation

    def spy(shape, *, backward=False, device="cpu"):
        choice = choose(shape, backward=backward, device=device)
        calls.append((tuple(shape), backward, choice))
        return choice

    monkeypatch.setattr(layer, "choose_implementation", spy)
    x = torch.randn(3, 4, 8, 8)
    first = layer(x)
    torch.testing.assert_close(layer(x), first)  # the same shape: the same (memoised) choice
    with torch.no_grad():
        layer(x)
    assert [call[:2] for call in calls] == [((3, 4, 8, 8), True), ((3, 4, 8, 8), False)]
    assert calls[0][2] == choose((3, 4, 8, 8), backward=True)
    layer.implementation = "factorized"
    layer(torch.randn(1, 4, 6, 6))
    assert len(calls) == 2


def test_the_dense_kernel_is_cached_in_evaluation_mode_only_while_valid():
    layer = CPConv2d(3, 4, 3, rank=2, padding=1, implementation="reconstructed")
    x = torch.randn(2, 3, 8, 8)
    layer(x)  # training mode, autograd: no cache
    assert layer._kernel_cache is None
    layer.eval()
    with torch.no_grad():
        first = layer(x)
        kernel = layer._kernel_cache[2]
        torch.testing.assert_close(layer(x), first)
        assert layer._kernel_cache[2] is kernel  # reused
        layer.output_factor.mul_(2)  # in place: the version counter changes
        torch.testing.assert_close(layer(x), layer.to_conv()(x))
        assert layer._kernel_cache[2] is not kernel
    layer.load_state_dict(CPConv2d(3, 4, 3, rank=2, padding=1).state_dict())
    with torch.inference_mode():
        torch.testing.assert_close(layer(x), layer.to_conv()(x))
    layer.double()  # new storage
    with torch.no_grad():
        assert layer(x.double()).dtype == torch.float64
        torch.testing.assert_close(layer(x.double()), layer.to_conv()(x.double()))
    # Under autograd the kernel is rebuilt (differentiable), even in evaluation mode.
    out = layer(x.double())
    assert out.requires_grad
    out.sum().backward()
    assert layer.input_factor.grad is not None
    layer.train()
    assert layer._kernel_cache is None


# --- SeparableConv2d ------------------------------------------------------------------


def brute_force_separable_kernel(layer):
    a, b = (f.detach().double() for f in layer.filters)
    kernel = torch.zeros(layer.out_channels, layer.in_channels, a.shape[-1], b.shape[-1])
    for o in range(layer.out_channels):
        for i in range(layer.in_channels):
            for r in range(layer.rank):
                kernel[o, i] += torch.outer(a[o, i, r], b[o, i, r])
    return kernel.double()


@pytest.mark.parametrize("implementation", ["auto", "factorized", "reconstructed"])
@pytest.mark.parametrize(
    "options",
    [
        {"kernel_size": 3, "padding": 1},
        {"kernel_size": (3, 5), "stride": 2, "padding": (1, 2)},
        {"kernel_size": 5, "stride": (1, 3), "padding": 0, "bias": False},
        {"kernel_size": 3, "padding": 1, "padding_mode": "circular"},
    ],
)
def test_separable_equals_the_dense_convolution_of_its_kernel(implementation, options):
    layer = SeparableConv2d(3, 5, rank=2, implementation=implementation, **options)
    with torch.no_grad():
        layer.bias is not None and layer.bias.normal_()
    torch.testing.assert_close(layer.to_dense().double(), brute_force_separable_kernel(layer))
    x = torch.randn(2, 3, 11, 9)
    dense = layer.to_conv()
    assert type(dense) is torch.nn.Conv2d and dense.weight.shape == layer.to_dense().shape
    torch.testing.assert_close(layer(x).double(), dense.double()(x.double()), atol=1e-5, rtol=1e-5)
    kinds = [kind for kind, _, _ in layer.operations(x.shape)["factorized"]]
    assert kinds == ["expand", "regroup", "grouped"]


def test_separable_parameter_counts_and_gradients():
    for bias in (True, False):
        layer = SeparableConv2d(6, 10, (3, 5), rank=2, bias=bias)
        counted = sum(p.numel() for p in layer.parameters())
        assert counted == 10 * 6 * 2 * (3 + 5) + 10 * bias
        assert counted == SeparableConv2d.parameter_count(6, 10, (3, 5), 2, bias=bias)
        assert SeparableConv2d.dense_parameter_count(6, 10, (3, 5), bias=bias) == (
            10 * 6 * 15 + 10 * bias
        )
    assert [tuple(f.shape) for f in layer.filters] == [(10, 6, 2, 3), (10, 6, 2, 5)]
    for implementation in ("factorized", "reconstructed"):
        layer = SeparableConv2d(4, 4, 3, rank=2, padding=1, implementation=implementation)
        layer(torch.randn(2, 4, 8, 8)).square().sum().backward()
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in layer.parameters())


@pytest.mark.parametrize(("channels", "kernel_size", "rank"), [(16, 3, 1), (32, 5, 2)])
def test_separable_initial_kernel_has_kaiming_variance(channels, kernel_size, rank):
    layer = SeparableConv2d(channels, channels, kernel_size, rank, padding=kernel_size // 2)
    weight = layer.to_dense().detach().double()
    assert weight.var().item() == pytest.approx(2.0 / (channels * kernel_size**2), rel=0.1)


def test_separable_bad_arguments_are_named():
    with pytest.raises(ValueError, match="SeparableConv2d: rank=0"):
        SeparableConv2d(3, 3, 3, rank=0)
    with pytest.raises(ValueError, match="implementation='svd'"):
        SeparableConv2d(3, 3, 3, rank=1, implementation="svd")
    with pytest.raises(ValueError, match="expected an input of shape \\(batch, 3, H, W\\)"):
        SeparableConv2d(3, 3, 3, rank=1)(torch.zeros(1, 3, 8, 8, 8))
    with pytest.raises(ValueError, match="implementation='fast'"):
        compress_convs(torch.nn.Conv2d(2, 2, 3), rank=2, implementation="fast")
