"""The radar networks: shapes, parameter counts, batch independence, checkpoints, training."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import physnet.nn  # noqa: E402
from physnet.nn import Deep2S, ResNet3D, UNet3D, create  # noqa: E402
from physnet.nn.radar import normalize_per_sample  # noqa: E402

TINY = {"channels": [4, 8], "head_channels": 4}


def parameters(model):
    return sum(p.numel() for p in model.parameters())


def test_reference_parameter_counts():
    """The reference sheet's derived counts: 2.87 M (3D), 1.00 M (2D kernels), 0.89 M (ResNet)."""
    assert parameters(UNet3D()) == pytest.approx(2.87e6, rel=0.01)
    assert parameters(UNet3D(kernel="2d")) == pytest.approx(1.00e6, rel=0.01)
    assert parameters(ResNet3D()) == pytest.approx(0.89e6, rel=0.01)
    assert parameters(UNet3D(in_channels=2)) - parameters(UNet3D()) == 32 * 27


@pytest.mark.parametrize(
    "config",
    [
        {"backbone_config": TINY},
        {"backbone_config": {**TINY, "kernel": "2d"}},
        {"backbone": "resnet3d", "backbone_config": {"hidden_channels": 4, "n_layers": 2}},
        {"input": "complex", "backbone_config": TINY},
    ],
    ids=["unet3d", "unet2d-kernels", "resnet", "complex"],
)
def test_variants_shapes_and_gradients(config):
    model = create("deep2s", **config)
    channels = 2 if config.get("input") == "complex" else 1
    x = torch.rand(2, channels, 9, 10, 17)
    y = model(x)
    assert y.shape == (2, 1, 9, 10, 17)
    y.square().mean().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_sigmoid_output_in_unit_interval():
    with torch.no_grad():
        y = create("deep2s", backbone_config=TINY).eval()(10 * torch.randn(2, 1, 8, 8, 8))
    assert float(y.min()) >= 0 and float(y.max()) <= 1


def test_normalisation_is_per_sample_and_scale_invariant():
    torch.manual_seed(0)
    model = create("deep2s", backbone_config=TINY).eval()
    x = torch.rand(3, 1, 9, 9, 17)
    with torch.no_grad():
        scaled = model(x * torch.tensor([1.0, 1e3, 1e-3]).reshape(3, 1, 1, 1, 1))
        torch.testing.assert_close(scaled, model(x), rtol=1e-5, atol=1e-6)
    complex_input = torch.randn(2, 2, 3, 3, 3)
    normalised = normalize_per_sample(complex_input, "complex")
    magnitude = torch.sqrt(normalised[:, 0] ** 2 + normalised[:, 1] ** 2)
    torch.testing.assert_close(magnitude.reshape(2, -1).amax(1), torch.ones(2))
    assert torch.equal(normalize_per_sample(torch.zeros(1, 1, 2)), torch.zeros(1, 1, 2))


def test_eval_output_does_not_depend_on_batch_mates():
    torch.manual_seed(0)
    model = create("deep2s", backbone_config=TINY)
    model.train()
    model(torch.rand(4, 1, 9, 9, 17))  # move the running statistics away from defaults
    model.eval()
    x = torch.rand(4, 1, 9, 9, 17)
    with torch.no_grad():
        alone = model(torch.cat([x[:1], torch.zeros(3, 1, 9, 9, 17)]))[0]
        mates = model(torch.cat([x[:1], 100 * x[1:]]))[0]
        torch.testing.assert_close(alone, mates, rtol=0, atol=1e-6)


def test_checkpoint_round_trip(tmp_path):
    model = create("deep2s", backbone="unet3d", backbone_config={**TINY, "kernel": "2d"})
    path = tmp_path / "deep2s.safetensors"
    physnet.nn.save(model, path)
    restored = physnet.nn.load(path)
    assert isinstance(restored, Deep2S) and restored.config == model.config
    x = torch.rand(2, 1, 9, 9, 17)
    assert torch.equal(restored(x), model.eval()(x))


def test_small_training_run_reduces_the_loss():
    torch.manual_seed(0)
    model = create("deep2s", backbone_config=TINY)
    target = torch.zeros(4, 1, 8, 8, 8)
    target[:, :, 2:5, 2:6, 3:6] = 1.0
    x = target + 0.3 * torch.rand(4, 1, 8, 8, 8)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        loss = torch.nn.functional.mse_loss(model(x), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.5 * losses[0]


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: UNet3D(channels=[]), "at least one level"),
        (lambda: UNet3D(kernel="4d"), "kernel"),
        (lambda: UNet3D(output="tanh"), "output"),
        (lambda: ResNet3D(n_layers=0), "n_layers"),
        (lambda: Deep2S(input="phase"), "input"),
        (lambda: Deep2S(input="complex", backbone_config={"in_channels": 1}), "in_channels"),
        (lambda: Deep2S(conditions=["range"]), "conditions"),
        (lambda: Deep2S(threshold=1.0), "threshold"),
        (lambda: Deep2S(conditions=["snr_db", "snr_db"]), "conditions"),
    ],
)
def test_bad_arguments(build, message):
    with pytest.raises(ValueError, match=message):
        build()


def test_bad_inputs():
    model = create("deep2s", backbone_config=TINY)
    with pytest.raises(ValueError, match=r"\(batch, 1, X, Y, Z\)"):
        model(torch.rand(1, 2, 8, 8, 8))
    with pytest.raises(ValueError, match="X, Y, Z >= 4"):
        model.backbone(torch.rand(1, 1, 3, 8, 8))
    with torch.no_grad():
        assert np.isfinite(model(torch.rand(8, 8, 8)[None]).numpy()).all()


def test_conditions_are_scaled_constant_channels():
    torch.manual_seed(0)
    model = create("deep2s", backbone_config=TINY, conditions=["n_frequencies", "snr_db"]).eval()
    assert model.backbone.config["in_channels"] == 3
    x = torch.rand(2, 1, 8, 8, 8)
    conditions = torch.tensor([15.0, 30.0]).reshape(1, 2, 1, 1, 1).expand(2, 2, 8, 8, 8)
    with torch.no_grad():
        out = model(torch.cat([x, conditions], dim=1))
        expected = model.backbone(torch.cat([normalize_per_sample(x), conditions / 30.0], dim=1))
    torch.testing.assert_close(out, expected)
    with pytest.raises(ValueError, match="n_frequencies and snr_db"):
        model(x)


def test_threshold_zeroes_small_outputs_in_evaluation_only():
    torch.manual_seed(0)
    model = create("deep2s", backbone_config=TINY)
    thresholded = create("deep2s", backbone_config=TINY, threshold=0.5)
    thresholded.load_state_dict(model.state_dict())
    x = torch.rand(2, 1, 8, 8, 8)
    with torch.no_grad():
        plain, cut = model.eval()(x), thresholded.eval()(x)
        torch.testing.assert_close(cut, torch.where(plain >= 0.5, plain, 0.0))
        assert (plain < 0.5).any()
        thresholded.train()
        torch.testing.assert_close(thresholded(x), model.train()(x))
