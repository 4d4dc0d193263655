"""WaveCNN and WaveCNN3d: the leapfrog start, amplitude equivariance, rollout shapes, dense, CP
and separable variants, checkpoints, and short training runs through the Trainer."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import physnet.nn
from physnet.datasets._base import FieldDataset
from physnet.nn import CPConv2d, CPConv3d, SeparableConv2d, WaveCNN, WaveCNN3d
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


# --- WaveCNN with separable kernels -----------------------------------------------------


def test_separable_variant_uses_per_kernel_one_way_filters():
    hidden, k, rank, history = 8, 5, 2, 3
    model = WaveCNN(
        history=history,
        hidden_channels=hidden,
        n_layers=2,
        kernel_size=k,
        conv="separable",
        rank=rank,
    )
    assert all(isinstance(layer, SeparableConv2d) for layer in (model.lift, *model.layers))
    expected = (
        SeparableConv2d.parameter_count(1 + history, hidden, k, rank)
        + 2 * SeparableConv2d.parameter_count(hidden, hidden, k, rank)
        + hidden
        + 1
    )
    assert sum(p.numel() for p in model.parameters()) == expected
    with torch.no_grad():
        model.projection.weight.normal_()
    x = clip(frames=5).double()
    model = model.double()
    out = model(x)
    assert out.shape == (2, 5, 12, 12)
    torch.testing.assert_close(1e3 * model.step(x[:, 0], 1e-3 * x[:, 1:4]), out[:, 3:4])


# --- WaveCNN3d: space-time convolutions -------------------------------------------------


def test_wave_cnn3d_is_registered_and_its_untrained_step_is_the_leapfrog_extrapolation():
    model = physnet.nn.create("wave-cnn3d", history=3, horizon=2, hidden_channels=4, n_layers=1)
    assert isinstance(model, WaveCNN3d)
    x = clip()
    frames = x[:, 1:4]
    expected = torch.stack(
        [2 * frames[:, -1] - frames[:, -2], 3 * frames[:, -1] - 2 * frames[:, -2]], 1
    )
    torch.testing.assert_close(model.step(x[:, 0], frames), expected)


@pytest.mark.parametrize("conv", ["dense", "cp"])
def test_wave_cnn3d_shapes_and_rollout_continue_forward(conv):
    model = WaveCNN3d(history=3, horizon=2, hidden_channels=4, n_layers=2, conv=conv, rank=3)
    with torch.no_grad():
        model.projection.weight.normal_(std=0.1)
    x = clip(frames=8)
    assert model.step(x[:, 0], x[:, 1:6]).shape == (2, 2, 12, 12)  # uses the last 3 frames
    out = model(x)
    assert out.shape == (2, 8, 12, 12)
    torch.testing.assert_close(out[:, :3], x[:, 1:4])
    torch.testing.assert_close(out[:, 3:], model.rollout(x[:, 0], x[:, 1:4], steps=5))
    first = model.step(x[:, 0], x[:, 1:4])
    torch.testing.assert_close(out[:, 5:7], model.step(x[:, 0], torch.cat([x[:, 3:4], first], 1)))
    assert model.rollout(x[:, 0], x[:, 1:4], steps=0).shape == (2, 0, 12, 12)


@pytest.mark.parametrize("conv", ["dense", "cp"])
def test_wave_cnn3d_is_equivariant_to_the_amplitude_of_the_frames(conv):
    model = WaveCNN3d(history=3, hidden_channels=4, n_layers=2, conv=conv, rank=3).double()
    with torch.no_grad():
        model.projection.weight.normal_()
    x = clip(frames=6).double()
    scaled = x.clone()
    scaled[:, 1:] *= 1e-3  # the frames, not the speed map
    torch.testing.assert_close(1e3 * model(scaled), model(x))
    # The speed map is an input, not scaled: changing it changes the forecast.
    other = x.clone()
    other[:, 0] *= 2
    assert not torch.allclose(model(other)[:, 3:], model(x)[:, 3:])


def test_wave_cnn3d_parameter_counts_are_comparable_to_wave_cnn():
    def count(model):
        return sum(p.numel() for p in model.parameters())

    hidden, history, rank = 16, 4, 40
    dense = WaveCNN3d(hidden_channels=hidden, history=history)
    compressed = WaveCNN3d(hidden_channels=hidden, history=history, conv="cp", rank=rank)
    assert all(isinstance(layer, CPConv3d) for layer in (compressed.lift, *compressed.layers))
    kernel = (3, 3, 3)
    head = hidden * history + 1  # the (history, 1, 1) convolution to horizon=1 frame
    assert count(dense) == (
        CPConv3d.dense_parameter_count(2, hidden, kernel)
        + 4 * CPConv3d.dense_parameter_count(hidden, hidden, kernel)
        + head
    )
    assert count(compressed) == (
        CPConv3d.parameter_count(2, hidden, kernel, rank)
        + 4 * CPConv3d.parameter_count(hidden, hidden, kernel, rank)
        + head
    )
    assert (count(dense), count(compressed)) == (28657, 7785)
    reference = {"hidden_channels": hidden, "history": history, "n_layers": 4, "kernel_size": 5}
    assert count(WaveCNN(**reference)) == 27697
    assert count(WaveCNN(**reference, conv="cp", rank=rank)) == 8057


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"history": 1}, "WaveCNN3d: history=1, expected an integer >= 2"),
        ({"horizon": 0}, "horizon=0"),
        ({"hidden_channels": 2.5}, "hidden_channels=2.5"),
        ({"conv": "separable"}, "conv='separable', expected one of \\('dense', 'cp'\\)"),
        ({"kernel_size": 4}, "kernel_size=4, expected a positive odd int"),
        ({"time_kernel_size": 2}, "time_kernel_size=2"),
        ({"implementation": "fast"}, "implementation='fast'"),
        ({"activation": "elu"}, "activation='elu'"),
        ({"input_noise": 1.5}, "input_noise=1.5"),
    ],
)
def test_wave_cnn3d_invalid_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        WaveCNN3d(**kwargs)


def test_wave_cnn3d_input_shapes_are_checked():
    model = WaveCNN3d(history=4, hidden_channels=4, n_layers=0)
    with pytest.raises(ValueError, match=r"WaveCNN3d\.forward: .*n_frames >= history=4"):
        model(torch.zeros(1, 4, 8, 8))
    with pytest.raises(ValueError, match=r"WaveCNN3d\.forward: expected a clip of shape"):
        model(torch.zeros(1, 6, 2, 8, 8))
    with pytest.raises(ValueError, match=r"WaveCNN3d\.step: .*at least history=4 frames"):
        model.step(torch.zeros(1, 8, 8), torch.zeros(1, 3, 8, 8))
    with pytest.raises(ValueError, match="on the speed map's grid \\(8, 8\\)"):
        model.step(torch.zeros(1, 8, 8), torch.zeros(1, 4, 8, 9))
    with pytest.raises(ValueError, match=r"WaveCNN3d\.rollout: steps=-1"):
        model.rollout(torch.zeros(1, 8, 8), torch.zeros(1, 4, 8, 8), steps=-1)


def test_wave_cnn3d_checkpoint_round_trip_and_input_noise(tmp_path):
    model = WaveCNN3d(history=2, hidden_channels=4, n_layers=1, conv="cp", rank=3, input_noise=0.1)
    with torch.no_grad():
        model.projection.weight.normal_()
    path = tmp_path / "wave3d.safetensors"
    physnet.nn.save(model, path)
    loaded = physnet.nn.load(path).eval()
    x = clip(frames=5)
    model.eval()
    torch.testing.assert_close(loaded(x), model(x))
    assert loaded.config == model.config
    model.train()
    noisy = model(x)
    torch.testing.assert_close(noisy[:, :2], x[:, 1:3])  # the given frames stay clean
    assert not torch.allclose(noisy[:, 2:], loaded(x)[:, 2:])


def test_wave_cnn3d_short_training_run_reduces_the_rollout_loss():
    torch.manual_seed(0)
    model = WaveCNN3d(history=2, hidden_channels=6, n_layers=1, conv="cp", rank=4)
    validation = PlaneWaves(8, offset=100)
    untrained = evaluate(model, validation, metrics=("relative_l2",))["relative_l2"]
    trainer = Trainer(model, epochs=5, batch_size=8, lr=1e-2, progress=False, schedule="constant")
    history = trainer.fit(PlaneWaves(16), validation)
    assert history["val_loss"][-1] < 0.8 * untrained
