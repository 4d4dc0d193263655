"""WaveCNN: the leapfrog start, amplitude equivariance, rollout shapes, dense and CP variants,
checkpoints, and a short training run through the Trainer."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import physnet.nn
from physnet.datasets._base import FieldDataset
from physnet.nn import CPConv2d, WaveCNN
from physnet.training import Trainer, evaluate


def clip(batch=2, frames=7, size=12, seed=0):
    generator = torch.Generator().manual_seed(seed)
    speed = 0.5 + torch.rand(batch, size, size, generator=generator)
    return torch.cat(
        [speed[:, None], torch.randn(batch, frames, size, size, generator=generator)], 1
    )


def test_untrained_step_is_the_leapfrog_extrapolation():
    model = WaveCNN(history=3, horizon=2, hidden_channels=6, n_layers=1)
    x = clip()
    frames = x[:, 1:4]
    expected = torch.stack(
        [2 * frames[:, -1] - frames[:, -2], 3 * frames[:, -1] - 2 * frames[:, -2]], 1
    )
    torch.testing.assert_close(model.step(x[:, 0], frames), expected)


@pytest.mark.parametrize("conv", ["dense", "cp"])
def test_step_is_equivariant_to_the_amplitude(conv):
    model = WaveCNN(history=3, hidden_channels=6, n_layers=2, conv=conv, rank=3)
    with torch.no_grad():
        model.projection.weight.normal_()
    x = clip().double()
    model = model.double()
    small = model.step(x[:, 0], 1e-3 * x[:, 1:4])
    torch.testing.assert_close(1e3 * small, model.step(x[:, 0], x[:, 1:4]))


def test_forward_rolls_out_a_clip_and_keeps_the_given_frames():
    model = WaveCNN(history=3, horizon=2, hidden_channels=6, n_layers=1)
    with torch.no_grad():
        model.projection.weight.normal_(std=0.1)
    x = clip(frames=8)
    out = model(x)
    assert out.shape == (2, 8, 12, 12)
    torch.testing.assert_close(out[:, :3], x[:, 1:4])
    torch.testing.assert_close(out[:, 3:], model.rollout(x[:, 0], x[:, 1:4], steps=5))
    # The rollout feeds back its predictions: step 2 is the step from frames 2..4 (predicted).
    first = model.step(x[:, 0], x[:, 1:4])
    window = torch.cat([x[:, 2:4], first[:, :1]], 1)
    torch.testing.assert_close(
        out[:, 5:7], model.step(x[:, 0], torch.cat([window[:, 1:], first[:, 1:]], 1))
    )


def test_cp_variant_uses_cp_convolutions_with_the_documented_parameter_count():
    hidden, k, rank, history = 16, 5, 6, 4
    dense = WaveCNN(history=history, hidden_channels=hidden, n_layers=3, kernel_size=k)
    compressed = WaveCNN(
        history=history, hidden_channels=hidden, n_layers=3, kernel_size=k, conv="cp", rank=rank
    )
    assert all(isinstance(layer, CPConv2d) for layer in (compressed.lift, *compressed.layers))
    expected = (
        CPConv2d.parameter_count(1 + history, hidden, k, rank)
        + 3 * CPConv2d.parameter_count(hidden, hidden, k, rank)
        + hidden
        + 1
    )
    assert sum(p.numel() for p in compressed.parameters()) == expected
    expected_dense = (
        CPConv2d.dense_parameter_count(1 + history, hidden, k)
        + 3 * CPConv2d.dense_parameter_count(hidden, hidden, k)
        + hidden
        + 1
    )
    assert sum(p.numel() for p in dense.parameters()) == expected_dense


def test_checkpoint_round_trip_rebuilds_the_compressed_model(tmp_path):
    model = WaveCNN(history=2, hidden_channels=6, n_layers=1, conv="cp", rank=3)
    with torch.no_grad():
        model.projection.weight.normal_()
    path = tmp_path / "wave.safetensors"
    physnet.nn.save(model, path)
    loaded = physnet.nn.load(path)
    x = clip(frames=5)
    torch.testing.assert_close(loaded(x), model(x))
    assert loaded.config == model.config


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"history": 1}, "history=1"),
        ({"conv": "tucker"}, "conv='tucker'"),
        ({"kernel_size": 4}, "kernel_size=4"),
        ({"implementation": "mobilenet"}, "implementation='mobilenet'"),
    ],
)
def test_invalid_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        WaveCNN(**kwargs)


def test_input_shapes_are_checked():
    model = WaveCNN(history=4, hidden_channels=4, n_layers=0)
    with pytest.raises(ValueError, match="n_frames >= history=4"):
        model(torch.zeros(1, 4, 8, 8))
    with pytest.raises(ValueError, match="at least history=4 frames"):
        model.step(torch.zeros(1, 8, 8), torch.zeros(1, 3, 8, 8))


class PlaneWaves(FieldDataset):
    """Travelling plane waves u = sin(k.x - |k| c t) on a periodic 16^2 grid."""

    fields, inputs, targets = ("speed", "frames"), ("speed", "frames"), ("frames",)

    def __init__(self, n, offset=0):
        self.n, self.offset, self.attrs = n, offset, {}

    def __len__(self):
        return self.n

    def _sample(self, index):
        rng = np.random.default_rng(index + self.offset)
        c = rng.uniform(0.5, 1.5)
        k = 2 * math.pi * rng.integers(1, 3, size=2) * rng.choice([-1, 1], size=2)
        x = (np.arange(16) + 0.5) / 16
        grid_x, grid_y = np.meshgrid(x, x)
        t = 0.02 * np.arange(4)[:, None, None]
        phase = k[0] * grid_x + k[1] * grid_y - np.hypot(*k) * c * t + rng.uniform(0, 6)
        return {
            "speed": np.full((16, 16), c, np.float32),
            "frames": np.sin(phase).astype(np.float32),
        }


def test_a_short_training_run_reduces_the_rollout_loss():
    torch.manual_seed(0)
    model = WaveCNN(history=2, hidden_channels=8, n_layers=1, kernel_size=3, conv="cp", rank=4)
    validation = PlaneWaves(8, offset=100)
    untrained = evaluate(model, validation, metrics=("relative_l2",))["relative_l2"]
    trainer = Trainer(model, epochs=5, batch_size=8, lr=1e-2, progress=False, schedule="constant")
    history = trainer.fit(PlaneWaves(16), validation)
    assert history["val_loss"][-1] < 0.8 * untrained
