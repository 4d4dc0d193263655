"""MgNO's channels-last weights (the fast layout) against contiguous ones (the original
code): the same outputs and gradients in float64, the same checkpoints, the shipped model
unchanged."""

from __future__ import annotations

import copy
import os

import pytest
import safetensors.torch
import torch
from checkpoint_checks import load_pretrained_and_check_resave

import physnet
import physnet.nn
from physnet.nn import MgNO

CONFIGURATIONS = [
    # the shipped layout, small: Dirichlet, source restriction, exact boundary, normalisation
    {
        "hidden_channels": 5,
        "n_layers": 2,
        "smoothing": [[1, 0], [1, 0], [2, 0]],
        "exact_boundary": True,
        "input_shift": 7.5,
        "input_scale": 4.5,
        "output_scale": 0.01,
    },
    # post-smoothing, biases, several input and output channels
    {
        "in_channels": 2,
        "out_channels": 3,
        "hidden_channels": 4,
        "n_layers": 2,
        "smoothing": [[1, 1], [0, 1], [2, 1]],
        "bias": True,
    },
    {
        "in_channels": 2,
        "hidden_channels": 4,
        "n_layers": 2,
        "smoothing": [[1, 1], [1, 1], [2, 0]],
        "boundary": "periodic",
        "restriction": "residual",
    },
    {
        "hidden_channels": 3,
        "n_layers": 2,
        "smoothing": [[1, 1], [1, 0], [2, 1]],
        "boundary": "neumann",
        "bias": True,
    },
]


def _reference(model: torch.nn.Module) -> torch.nn.Module:
    """The original code: the same model with contiguous weights."""
    return copy.deepcopy(model).to(memory_format=torch.contiguous_format)


def _run(model: torch.nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """Output, input gradient and parameter gradients of a fixed functional of the output."""
    x = x.detach().requires_grad_()
    y = model(x)
    weights = torch.cos(torch.arange(y.numel(), dtype=y.dtype)).reshape(y.shape)
    (weights * y).sum().backward()
    return [y.detach(), x.grad] + [p.grad for p in model.parameters()]


@pytest.mark.parametrize("kwargs", CONFIGURATIONS)
@pytest.mark.parametrize("grid", [(19, 14), (16, 16)])
def test_channels_last_model_matches_the_reference_in_float64(kwargs, grid):
    torch.manual_seed(0)
    model = MgNO(**kwargs).double()
    reference = _reference(model)
    weight = model.cycles[1].pre_smoothing[0][0]["S"].weight
    assert weight.is_contiguous(memory_format=torch.channels_last)
    assert not weight.is_contiguous()
    # ... so oneDNN keeps the activations channels-last (where the speed comes from).
    hidden = model.cycles[1](torch.randn(2, weight.shape[1], *grid, dtype=torch.float64))
    assert hidden.shape[1] > 1 and hidden.is_contiguous(memory_format=torch.channels_last)
    x = 3.0 + 9.0 * torch.rand(2, model.in_channels, *grid, dtype=torch.float64)
    expected = _run(reference, x)
    actual = _run(model, x)
    assert len(actual) == len(expected)
    for want, got in zip(expected, actual, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_checkpoints_store_contiguous_tensors_and_round_trip(tmp_path):
    model = MgNO(hidden_channels=4, n_layers=2, smoothing=[[1, 0], [2, 0]])
    path = os.path.join(tmp_path, "mgno.safetensors")
    physnet.nn.save(model, path)
    stored = safetensors.torch.load_file(path)
    assert stored.keys() == model.state_dict().keys()
    for key, value in model.state_dict().items():
        assert torch.equal(stored[key], value), key
    loaded = physnet.nn.load(path)
    assert (
        loaded.cycles[0]
        .pre_smoothing[0][0]["S"]
        .weight.is_contiguous(memory_format=torch.channels_last)
    )
    x = torch.randn(2, 1, 11, 9)
    torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)
    # A file written by the original code (contiguous weights) holds the same tensors and
    # metadata (the header's key order is not deterministic, so bytes are not compared).
    original = os.path.join(tmp_path, "original.safetensors")
    physnet.nn.save(_reference(model), original)
    with safetensors.safe_open(original, "pt") as a, safetensors.safe_open(path, "pt") as b:
        assert a.metadata() == b.metadata()
        assert sorted(a.keys()) == sorted(b.keys())
        for key in a.keys():  # noqa: SIM118 (a safe_open handle is not a mapping)
            assert torch.equal(a.get_tensor(key), b.get_tensor(key)), key


def test_pretrained_checkpoint_loads_with_unchanged_weights_and_outputs(tmp_path):
    model = load_pretrained_and_check_resave("mgno-darcy-smooth-64", 572_661, tmp_path)
    # Outputs: the float32 model against the original code (contiguous weights) in float64
    # and in float32.
    generator = torch.Generator().manual_seed(7)
    x = torch.where(torch.rand(3, 1, 64, 64, generator=generator) > 0.5, 12.0, 3.0)
    with torch.no_grad():
        fast = model(x)
        expected = _reference(model).double()(x.double())
        reference_32 = _reference(model)(x)
    scale = expected.abs().max().item()
    assert scale > 0
    torch.testing.assert_close(fast.double(), expected, rtol=0, atol=1e-5 * scale)
    torch.testing.assert_close(fast, reference_32, rtol=0, atol=1e-5 * scale)
