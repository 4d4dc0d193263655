"""FNO wrapper: the same network as neuraloperator's FNO, normalisation, exact boundary,
checkpoints, the error naming the extra when neuraloperator is missing, a short training run."""

from __future__ import annotations

import os
import sys

import pytest
import torch

import physnet.nn

neuralop_models = pytest.importorskip("neuralop.models")


def test_wraps_the_neuraloperator_network():
    torch.manual_seed(0)
    model = physnet.nn.create("fno", n_modes=[6, 6], hidden_channels=8, n_layers=2)
    torch.manual_seed(0)
    reference = neuralop_models.FNO(
        n_modes=(6, 6), in_channels=1, out_channels=1, hidden_channels=8, n_layers=2
    )
    count = sum(p.numel() for p in model.parameters())
    assert count == sum(p.numel() for p in reference.parameters())
    x = torch.randn(2, 1, 16, 12)
    torch.testing.assert_close(model(x), reference(x))


def test_normalisation_and_exact_boundary():
    options = {"n_modes": [4, 4], "hidden_channels": 8, "n_layers": 1}
    model = physnet.nn.create(
        "fno", exact_boundary=True, input_shift=7.5, input_scale=4.5, output_scale=0.01, **options
    )
    plain = physnet.nn.create("fno", **options)
    plain.load_state_dict(model.state_dict())
    x = 3.0 + 9.0 * torch.rand(2, 1, 12, 10)
    y = model(x)
    assert y[..., [0, -1], :].abs().max() == 0 and y[..., :, [0, -1]].abs().max() == 0
    expected = 0.01 * plain((x - 7.5) / 4.5)
    torch.testing.assert_close(y[..., 1:-1, 1:-1], expected[..., 1:-1, 1:-1])


def test_checkpoint_round_trip(tmp_path):
    model = physnet.nn.create(
        "fno", in_channels=2, out_channels=3, n_modes=[4, 4], hidden_channels=8, n_layers=2
    )
    path = os.path.join(tmp_path, "fno.safetensors")
    physnet.nn.save(model, path)
    loaded = physnet.nn.load(path)
    x = torch.randn(2, 2, 10, 9)
    torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)


def test_missing_neuraloperator_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "neuralop", None)
    monkeypatch.setitem(sys.modules, "neuralop.models", None)
    with pytest.raises(ImportError, match=r'pip install "physnet\[neuraloperator\]"'):
        physnet.nn.FNO(n_modes=[4, 4])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_modes": []}, r"n_modes=\[\], expected a list of positive integers"),
        ({"hidden_channels": 0}, "hidden_channels must be a positive integer"),
        ({"positional_embedding": "sine"}, "expected 'grid' or None"),
        ({"domain_padding": -0.1}, "expected None or a positive number"),
    ],
)
def test_invalid_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        physnet.nn.FNO(**kwargs)


def test_input_shape_is_checked():
    with pytest.raises(ValueError, match=r"FNO.forward: expected an input of shape \(batch, 1"):
        physnet.nn.FNO(n_modes=[4, 4], hidden_channels=4)(torch.zeros(1, 2, 8, 8))


def test_short_training_run_reduces_the_loss():
    torch.manual_seed(0)
    x = torch.randn(8, 1, 12, 12)
    target = (x + x.roll(1, -1) + x.roll(-1, -1) + x.roll(1, -2) + x.roll(-1, -2)) / 5
    model = physnet.nn.FNO(n_modes=[6, 6], hidden_channels=8, n_layers=1)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(40):
        optimizer.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), target)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
