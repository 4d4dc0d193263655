"""Losses against independent references: NumPy per-sample norms and continuous integrals."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from physnet.training.losses import (
    LOSSES,
    get_loss,
    mse,
    relative_h1,
    relative_l1,
    relative_l2,
    relative_lp,
)

DTYPE = torch.float64

# The losses comparing a prediction with a target field of the same shape ("dcdm" takes a
# (b, flags) target instead; tests/training/test_dcdm_loss.py covers it).
VOLUME_LOSSES = {"l1_ssim"}  # need x-y slices of at least the 11-point SSIM window
FIELD_LOSSES = sorted(
    set(LOSSES) - {"dcdm", "dcdm_energy", "dcdm_unrolled", "multigrid_es"} - VOLUME_LOSSES
)


@pytest.fixture
def pair(rng):
    prediction = rng.standard_normal((4, 2, 9, 7))
    target = rng.standard_normal((4, 2, 9, 7))
    return prediction, target


def _numpy_relative(prediction, target, p):
    error = (prediction - target).reshape(len(target), -1)
    reference = target.reshape(len(target), -1)
    return np.linalg.norm(error, ord=p, axis=1) / np.linalg.norm(reference, ord=p, axis=1)


# -- relative Lp and MSE against NumPy ---------------------------------------------------


@pytest.mark.parametrize("p", [1, 2, 3.5, math.inf])
def test_relative_lp_matches_numpy_per_sample(pair, p):
    prediction, target = pair
    expected = _numpy_relative(prediction, target, p)
    values = relative_lp(
        torch.from_numpy(prediction), torch.from_numpy(target), p, reduction="none"
    )
    np.testing.assert_allclose(values.numpy(), expected, rtol=1e-13)
    mean = relative_lp(torch.from_numpy(prediction), torch.from_numpy(target), p)
    np.testing.assert_allclose(mean.item(), expected.mean(), rtol=1e-13)
    total = relative_lp(torch.from_numpy(prediction), torch.from_numpy(target), p, reduction="sum")
    np.testing.assert_allclose(total.item(), expected.sum(), rtol=1e-13)


def test_named_relative_losses(pair):
    prediction, target = (torch.from_numpy(a) for a in pair)
    np.testing.assert_allclose(
        relative_l2(prediction, target).item(), _numpy_relative(*pair, 2).mean(), rtol=1e-13
    )
    np.testing.assert_allclose(
        relative_l1(prediction, target).item(), _numpy_relative(*pair, 1).mean(), rtol=1e-13
    )


@pytest.mark.parametrize("p", [1, 2])
@pytest.mark.parametrize("axis", [1, 2, -1])
@pytest.mark.parametrize("floor", [0.0, 0.3])
def test_relative_lp_per_slice_matches_a_numpy_loop(pair, p, axis, floor):
    prediction, target = pair
    expected = []
    for pred, true in zip(prediction, target, strict=True):
        sample_axis = axis - 1 if axis > 0 else axis  # the axis without the batch axis
        pred, true = np.moveaxis(pred, sample_axis, 0), np.moveaxis(true, sample_axis, 0)
        norms = [np.linalg.norm(t.ravel(), ord=p) for t in true]
        errors = [np.linalg.norm((a - t).ravel(), ord=p) for a, t in zip(pred, true, strict=True)]
        denominators = np.maximum(norms, floor * max(norms))
        expected.append(np.mean(np.array(errors) / denominators))
    values = relative_lp(
        torch.from_numpy(prediction),
        torch.from_numpy(target),
        p,
        slice_axis=axis,
        floor=floor,
        reduction="none",
    )
    np.testing.assert_allclose(values.numpy(), expected, rtol=1e-13)
    assert relative_l2(
        torch.from_numpy(prediction), torch.from_numpy(target), slice_axis=axis, floor=floor
    ).item() == pytest.approx(
        relative_lp(
            torch.from_numpy(prediction), torch.from_numpy(target), 2, slice_axis=axis, floor=floor
        ).item(),
        rel=1e-14,
    )


def test_relative_l2_per_slice_floor_tames_empty_frames():
    target = torch.zeros(1, 3, 4, 4, dtype=DTYPE)
    target[0, 1] = 1.0  # frames 0 and 2 empty
    prediction = target + 1e-3
    unfloored = relative_l2(prediction, target, slice_axis=1)
    floored = relative_l2(prediction, target, slice_axis=1, floor=0.1)
    # frame 1: 4e-3 / 4; frames 0, 2: 4e-3 / 1e-12 unfloored, 4e-3 / 0.4 floored
    assert unfloored.item() > 1e6
    assert floored.item() == pytest.approx((1e-3 + 2 * 1e-2) / 3, rel=1e-12)


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"slice_axis": 0}, "not a non-batch axis"),
        ({"slice_axis": 4}, "not a non-batch axis"),
        ({"slice_axis": 1.0}, "must be an integer"),
        ({"slice_axis": 1, "floor": 1.5}, "0 <= floor <= 1"),
        ({"slice_axis": 1, "floor": -0.1}, "0 <= floor <= 1"),
    ],
)
def test_relative_lp_per_slice_rejects_bad_options(pair, options, match):
    prediction, target = (torch.from_numpy(x) for x in pair)
    with pytest.raises(ValueError, match=match):
        relative_lp(prediction, target, **options)


def test_relative_l2_is_not_a_batch_sum(pair):
    # neuraloperator's LpLoss sums over the batch by default; this is a mean.
    prediction, target = (torch.from_numpy(a) for a in pair)
    once = relative_l2(prediction, target)
    twice = relative_l2(prediction.repeat(2, 1, 1, 1), target.repeat(2, 1, 1, 1))
    torch.testing.assert_close(once, twice)


def test_mse_matches_torch_and_numpy(pair):
    prediction, target = pair
    expected = ((prediction - target) ** 2).reshape(4, -1).mean(axis=1)
    values = mse(torch.from_numpy(prediction), torch.from_numpy(target), reduction="none")
    np.testing.assert_allclose(values.numpy(), expected, rtol=1e-13)
    torch.testing.assert_close(
        mse(torch.from_numpy(prediction), torch.from_numpy(target)),
        torch.nn.functional.mse_loss(torch.from_numpy(prediction), torch.from_numpy(target)),
    )


@pytest.mark.parametrize("name", FIELD_LOSSES)
def test_batch_reduction_is_mean_of_per_sample_values(pair, name):
    loss = get_loss(name)
    prediction, target = (torch.from_numpy(a) for a in pair)
    per_sample = loss(prediction, target, reduction="none")
    assert per_sample.shape == (4,)
    for i in range(4):
        torch.testing.assert_close(per_sample[i], loss(prediction[i : i + 1], target[i : i + 1]))
    torch.testing.assert_close(loss(prediction, target), per_sample.mean())
    torch.testing.assert_close(loss(prediction, target, reduction="sum"), per_sample.sum())


@pytest.mark.parametrize("name", FIELD_LOSSES)
def test_gradient_flows(pair, name):
    prediction = torch.from_numpy(pair[0]).requires_grad_()
    get_loss(name)(prediction, torch.from_numpy(pair[1])).backward()
    assert torch.isfinite(prediction.grad).all()
    assert prediction.grad.abs().sum() > 0


@pytest.mark.parametrize("name", FIELD_LOSSES)
def test_gradcheck(rng, name):
    prediction = torch.from_numpy(rng.standard_normal((2, 1, 4, 5))).requires_grad_()
    target = torch.from_numpy(rng.standard_normal((2, 1, 4, 5)))
    assert torch.autograd.gradcheck(lambda x: get_loss(name)(x, target), (prediction,))


@pytest.mark.parametrize("name", FIELD_LOSSES)
def test_exact_prediction_gives_zero_and_finite_gradient(pair, name):
    target = torch.from_numpy(pair[1])
    prediction = target.clone().requires_grad_()
    loss = get_loss(name)(prediction, target)
    assert loss.item() == 0.0
    loss.backward()
    assert torch.isfinite(prediction.grad).all()


@pytest.mark.parametrize("name", ["relative_l1", "relative_l2", "relative_h1"])
def test_zero_target_is_finite(name):
    zeros = torch.zeros(2, 1, 5, 5, dtype=DTYPE)
    assert get_loss(name)(zeros, zeros).item() == 0.0


# -- relative H1 against the continuous integrals ----------------------------------------


def _grid(*sizes):
    axes = [torch.linspace(0, 1, n, dtype=DTYPE) for n in sizes]
    return torch.meshgrid(*axes, indexing="ij")


def _smooth_pair_2d(nx, ny):
    """u = sin(πx) sin(πy), û = u + 0.1 eˣ cos y, and the exact relative H1 error on [0, 1]²."""
    x, y = _grid(nx, ny)
    target = torch.sin(math.pi * x) * torch.sin(math.pi * y)
    error = 0.1 * torch.exp(x) * torch.cos(y)
    # ∫∫ e² = 0.01 (e²−1)/2 (1/2 + sin 2/4);  ∫∫ |∇e|² = 0.01 (e²−1)/2;
    # ∫∫ u² = 1/4;  ∫∫ |∇u|² = π²/2.
    exp_integral = (math.e**2 - 1) / 2
    numerator = 0.01 * exp_integral * (0.5 + math.sin(2) / 4) + 0.01 * exp_integral
    exact = math.sqrt(numerator / (0.25 + math.pi**2 / 2))
    return (target + error)[None, None], target[None, None], exact


def _periodic_h1(prediction, target):
    """neuraloperator-style H1 (periodic central differences, plain sums) on the unit square."""

    def squared(field):
        h = [1 / (n - 1) for n in field.shape[2:]]
        total = field**2
        for axis, step in zip((2, 3), h, strict=True):
            derivative = (field.roll(-1, axis) - field.roll(1, axis)) / (2 * step)
            total = total + derivative**2
        return total.flatten(1).sum(1)

    return torch.sqrt(squared(prediction - target) / squared(target))


def test_relative_h1_matches_continuous_value_at_second_order():
    errors = []
    for n in (33, 65, 129, 257):
        prediction, target, exact = _smooth_pair_2d(n, n)
        errors.append(abs(relative_h1(prediction, target).item() - exact))
    assert errors[-1] < 3e-5 * exact
    ratios = [coarse / fine for coarse, fine in itertools.pairwise(errors)]
    assert 3.5 < ratios[-2] < 4.5, ratios
    assert 3.7 < ratios[-1] < 4.3, ratios


def test_periodic_h1_is_wrong_on_a_non_periodic_field():
    for n in (65, 129):
        prediction, target, exact = _smooth_pair_2d(n, n)
        ours = relative_h1(prediction, target).item()
        periodic = _periodic_h1(prediction, target).item()
        assert abs(ours - exact) < 1e-3 * exact
        assert periodic > 3 * exact  # the wrap-around jump dominates, and grows with n


def test_relative_h1_default_spacing_is_per_axis():
    prediction, target, exact = _smooth_pair_2d(129, 65)
    value = relative_h1(prediction, target)
    assert abs(value.item() - exact) < 1e-3 * exact
    torch.testing.assert_close(relative_h1(prediction, target, spacing=(1 / 128, 1 / 64)), value)


def test_relative_h1_scalar_spacing():
    prediction, target, _ = _smooth_pair_2d(33, 33)
    torch.testing.assert_close(
        relative_h1(prediction, target, spacing=1 / 32), relative_h1(prediction, target)
    )
    # A coarser spacing weighs the gradient term less: a different (documented) norm.
    assert not torch.allclose(
        relative_h1(prediction, target, spacing=1.0), relative_h1(prediction, target)
    )


def test_relative_h1_3d_matches_continuous_value():
    # u = sin(πx) sin(πy) sin(πz), e = 0.1 xyz on [0, 1]³.
    exact = math.sqrt((0.01 / 27 + 0.01 / 3) / (1 / 8 + 3 * math.pi**2 / 8))
    errors = []
    for n in (17, 33, 65):
        x, y, z = _grid(n, n, n)
        target = torch.sin(math.pi * x) * torch.sin(math.pi * y) * torch.sin(math.pi * z)
        prediction = target + 0.1 * x * y * z
        errors.append(abs(relative_h1(prediction[None, None], target[None, None]).item() - exact))
    assert errors[-1] < 1e-3 * exact
    assert errors[-1] < errors[-2] / 3.3 < errors[0] / 10


def test_relative_h1_sums_channels_jointly():
    prediction, target, _ = _smooth_pair_2d(17, 17)
    both = relative_h1(torch.cat([prediction, 2 * target], 1), torch.cat([target, 2 * target], 1))
    alone = relative_h1(prediction, target)
    # Adding an exact channel enlarges only the denominator: sqrt(1 / (1 + 4)).
    torch.testing.assert_close(both, alone / math.sqrt(5))


# -- errors and registry -----------------------------------------------------------------


@pytest.mark.parametrize("name", FIELD_LOSSES)
def test_shape_mismatch_is_an_error(name):
    with pytest.raises(ValueError, match=r"shape \(2, 1, 8, 8\) and target \(2, 8, 8\)"):
        get_loss(name)(torch.zeros(2, 1, 8, 8), torch.zeros(2, 8, 8))


@pytest.mark.parametrize("name", FIELD_LOSSES)
def test_unknown_reduction_is_an_error(name):
    with pytest.raises(ValueError, match=r"reduction='avg', expected one of"):
        get_loss(name)(torch.ones(2, 1, 4, 4), torch.ones(2, 1, 4, 4), reduction="avg")


def test_argument_errors():
    x = torch.ones(2, 1, 4, 4)
    with pytest.raises(ValueError, match="p >= 1"):
        relative_lp(x, x, p=0.5)
    with pytest.raises(ValueError, match="at least 3 points"):
        relative_h1(torch.ones(2, 1, 4, 2), torch.ones(2, 1, 4, 2))
    with pytest.raises(ValueError, match="at least 3 axes"):
        relative_h1(torch.ones(2, 4), torch.ones(2, 4))
    with pytest.raises(ValueError, match="spacing has 3 entries for 2 grid axes"):
        relative_h1(x, x, spacing=(1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="positive and finite"):
        relative_h1(x, x, spacing=(1.0, -1.0))


def test_registry():
    assert set(LOSSES) == {
        "relative_l2",
        "relative_l1",
        "relative_h1",
        "mse",
        "l1_ssim",
        "dcdm",
        "dcdm_energy",
        "dcdm_unrolled",
        "multigrid_es",
    }
    assert get_loss("relative_h1") is relative_h1
    with pytest.raises(ValueError, match=r"unknown loss 'l2'; available losses: relative_l2"):
        get_loss("l2")
    with pytest.raises(TypeError):
        LOSSES["mine"] = mse  # read-only


@pytest.fixture
def volumes(rng):
    target = rng.uniform(size=(3, 1, 13, 12, 5)) * (rng.uniform(size=(3, 1, 13, 12, 5)) > 0.7)
    prediction = np.clip(target + 0.1 * rng.standard_normal(target.shape), 0, 1)
    return prediction, target


def test_slice_ssim_matches_the_metric(volumes):
    from physnet.metrics import ssim
    from physnet.training.losses import slice_ssim

    prediction, target = volumes
    values = slice_ssim(torch.from_numpy(prediction), torch.from_numpy(target))
    np.testing.assert_allclose(values.numpy(), ssim(prediction[:, 0], target[:, 0]), rtol=1e-12)


def test_l1_ssim_is_l1_plus_ssim_deficit(volumes):
    from physnet.metrics import ssim

    prediction, target = volumes
    loss = get_loss("l1_ssim")
    per_sample = loss(torch.from_numpy(prediction), torch.from_numpy(target), reduction="none")
    expected = np.abs(prediction - target).reshape(3, -1).mean(axis=1)
    expected += 1 - ssim(prediction[:, 0], target[:, 0])
    np.testing.assert_allclose(per_sample.numpy(), expected, rtol=1e-12)
    torch.testing.assert_close(
        loss(torch.from_numpy(prediction), torch.from_numpy(target)), per_sample.mean()
    )
    tensor = torch.from_numpy(prediction).requires_grad_()
    loss(tensor, torch.from_numpy(target)).backward()
    assert torch.isfinite(tensor.grad).all() and tensor.grad.abs().sum() > 0


def test_l1_ssim_refuses_volumes_smaller_than_the_window(pair):
    prediction, target = (torch.from_numpy(a) for a in pair)
    with pytest.raises(ValueError, match="smaller than the 11-point window"):
        get_loss("l1_ssim")(prediction, target)
