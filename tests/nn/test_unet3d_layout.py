"""UNet3D's fast CPU forward (channels-last activations, evaluation-mode batch norms folded
into their convolutions, the 1x1x1 head convolution as a matrix product) against the
original code (contiguous activations, every layer applied as its own module): the same
outputs and gradients in float64, the same checkpoints, the shipped model unchanged."""

from __future__ import annotations

import os

import pytest

torch = pytest.importorskip("torch")

import safetensors.torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from checkpoint_checks import load_pretrained_and_check_resave  # noqa: E402

import physnet  # noqa: E402
import physnet.nn  # noqa: E402
from physnet.nn import UNet3D, create  # noqa: E402
from physnet.nn.radar import normalize_per_sample  # noqa: E402

CONFIGURATIONS = [
    {"channels": [3, 5], "head_channels": 4},  # the shipped layout, small
    {"channels": [3, 5], "head_channels": 4, "kernel": "2d"},
    {"in_channels": 2, "out_channels": 3, "channels": [4], "head_channels": 2},
    {"channels": [3, 4], "head_channels": 3, "batch_norm": False, "output": "none"},
]


def reference_forward(model: UNet3D, x: torch.Tensor) -> torch.Tensor:
    """The original ``UNet3D.forward``: the layers as modules on contiguous activations."""

    def apply(layers, h):
        for layer in layers:
            h = layer(h)
        return h

    factor = 2**model.levels
    grid = tuple(x.shape[2:])
    cropped = tuple(n - n % factor for n in grid)
    h = x[..., : cropped[0], : cropped[1], : cropped[2]]
    skips = []
    for block in model.encoder:
        h = apply(block, h)
        skips.append(h)
        h = F.max_pool3d(h, 2)
    for upsample, block, skip in zip(model.upsample, model.decoder, reversed(skips), strict=True):
        h = apply(block, torch.cat([upsample(h), skip], dim=1))
    h = F.pad(h, [0, grid[2] - cropped[2], 0, grid[1] - cropped[1], 0, grid[0] - cropped[0]])
    h = apply(model.head, h)
    return torch.sigmoid(h) if model.output == "sigmoid" else h


def with_statistics(model: UNet3D, x: torch.Tensor) -> UNet3D:
    """The model with running statistics away from their defaults (then in eval mode)."""
    model.train()
    with torch.no_grad():
        model(x)
        model(0.5 * x + 1.0)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm3d):
            with torch.no_grad():
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.5, 0.5)
    return model.eval()


def gradients(forward, model: UNet3D, x: torch.Tensor) -> list[torch.Tensor]:
    """Output, input gradient and parameter gradients of a fixed functional of the output."""
    model.zero_grad()
    x = x.detach().requires_grad_()
    y = forward(x)
    weights = torch.cos(torch.arange(y.numel(), dtype=y.dtype)).reshape(y.shape)
    (weights * y).sum().backward()
    return [y.detach(), x.grad] + [p.grad.clone() for p in model.parameters()]


@pytest.mark.parametrize("config", CONFIGURATIONS)
@pytest.mark.parametrize("grid", [(5, 6, 7), (4, 4, 8)])
@pytest.mark.parametrize("mode", ["eval", "train"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_fast_forward_matches_the_reference(config, grid, mode, dtype):
    # The reference runs in float64. In float32 the convolutions are oneDNN's on
    # channels-last activations (with the 1x1x1 head as a matrix product); float64 ones
    # are torch's own, which return contiguous activations.
    torch.manual_seed(0)
    model = UNet3D(**config).double()
    x = torch.rand(2, model.in_channels, *grid, dtype=torch.float64)
    model = with_statistics(model, x)
    if mode == "train":
        model.train()
    state = {key: value.clone() for key, value in model.state_dict().items()}
    expected = gradients(lambda v: reference_forward(model, v), model, x)
    model.load_state_dict(state)  # the running statistics before the reference's update
    model.to(dtype)
    actual = gradients(model, model, x.to(dtype))
    assert actual[0].dtype == dtype and actual[0].is_contiguous()
    assert len(actual) == len(expected)
    for want, got in zip(expected, actual, strict=True):
        if dtype == torch.float64:
            torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    if dtype == torch.float32:
        # Output and input gradient to float32 rounding; the parameter gradients are sums
        # over every voxel with cancellation, a few of them only good to 1e-4 in float32.
        for index, (want, got) in enumerate(zip(expected, actual, strict=True)):
            scale = want.abs().max().item()
            tolerance = 2e-5 if index < 2 else 1e-3
            torch.testing.assert_close(got.double(), want, rtol=0, atol=tolerance * scale)


def test_activations_are_channels_last_and_outputs_contiguous():
    model = UNet3D(channels=[3, 5], head_channels=4, out_channels=2).eval()
    seen = []
    model.encoder[1].register_forward_hook(lambda module, args, output: seen.append(output))
    with torch.no_grad():
        y = model(torch.rand(2, 1, 9, 8, 13))
    assert seen[0].is_contiguous(memory_format=torch.channels_last_3d)
    assert not seen[0].is_contiguous()
    assert y.shape == (2, 2, 9, 8, 13) and y.is_contiguous()


def test_checkpoints_store_contiguous_tensors_and_round_trip(tmp_path):
    torch.manual_seed(0)
    model = create("deep2s", backbone_config={"channels": [3, 5], "head_channels": 4})
    x = torch.rand(2, 1, 9, 8, 13)
    with_statistics(model.backbone, normalize_per_sample(x))
    path = os.path.join(tmp_path, "deep2s.safetensors")
    physnet.nn.save(model.eval(), path)
    stored = safetensors.torch.load_file(path)
    assert stored.keys() == model.state_dict().keys()
    for key, value in model.state_dict().items():
        assert value.is_contiguous() and torch.equal(stored[key], value), key
    loaded = physnet.nn.load(path)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)


SHIPPED_PARAMETERS = 180_401  # radar-deep2s: complex input, widths 8/16/32, head 16


def test_pretrained_checkpoint_loads_with_unchanged_weights_and_outputs(tmp_path):
    model = load_pretrained_and_check_resave("radar-deep2s", SHIPPED_PARAMETERS, tmp_path)
    # Outputs: the float32 fast forward against the original code in float64 and float32,
    # on a backprojection-like input (sparse bright blobs on a faint background).
    generator = torch.Generator().manual_seed(7)
    magnitude = torch.rand(2, 1, 25, 25, 49, generator=generator) ** 8
    if model.input == "complex":  # real and imaginary channels of a random phase
        phase = 2 * torch.pi * torch.rand(magnitude.shape, generator=generator)
        field = torch.cat([magnitude * torch.cos(phase), magnitude * torch.sin(phase)], dim=1)
    else:
        field = magnitude
    x = torch.cat([field, torch.full_like(magnitude, 15.0)], dim=1)
    normalised = normalize_per_sample(field, model.input)
    inputs = torch.cat([normalised, x[:, -1:] / 30.0], dim=1)
    with torch.no_grad():
        fast = model(x)
        expected = reference_forward(model.backbone.double(), inputs.double())
        reference_32 = reference_forward(model.backbone.float(), inputs)
    scale = expected.abs().max().item()
    assert scale > 0.1
    torch.testing.assert_close(fast.double(), expected, rtol=0, atol=1e-5 * scale)
    torch.testing.assert_close(fast, reference_32, rtol=0, atol=1e-5 * scale)
