"""SymmetryAverage: exact equivariance, the group check, and agreement with a NumPy average."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from physnet.nn import SymmetryAverage, create
from physnet.training.augment import DIHEDRAL_2D, apply_symmetry


@pytest.fixture(scope="module")
def mgno():
    torch.manual_seed(0)  # a random MgNO: its zero padding and stride-2 grids are lopsided
    model = create(
        "mgno",
        in_channels=1,
        out_channels=1,
        hidden_channels=4,
        n_layers=2,
        smoothing=((1, 0),) * 3,
    )
    return model.double().eval()


def numpy_average(model, x: np.ndarray) -> np.ndarray:
    """mean over the eight symmetries g of the square of g⁻¹ f(g x), written with np.rot90."""
    total = np.zeros_like(x)
    for transposed in (False, True):
        for k in range(4):
            g = x.transpose(0, 1, 3, 2) if transposed else x
            g = np.rot90(g, k, axes=(2, 3)).copy()
            with torch.no_grad():
                y = model(torch.from_numpy(g)).numpy()
            y = np.rot90(y, -k, axes=(2, 3))
            total += y.transpose(0, 1, 3, 2) if transposed else y
    return total / 8


def test_matches_a_numpy_group_average(mgno):
    x = torch.randn(3, 1, 20, 20, dtype=torch.float64)
    with torch.no_grad():
        got = SymmetryAverage(mgno, "d4")(x).numpy()
    np.testing.assert_allclose(got, numpy_average(mgno, x.numpy()), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name", DIHEDRAL_2D)
def test_the_average_is_equivariant_though_the_model_is_not(mgno, name):
    average = SymmetryAverage(mgno, "d4")
    x = torch.randn(2, 1, 20, 20, dtype=torch.float64)
    with torch.no_grad():
        moved = average(apply_symmetry(x, name))
        expected = apply_symmetry(average(x), name)
        gap = (mgno(apply_symmetry(x, name)) - apply_symmetry(mgno(x), name)).abs().max()
    torch.testing.assert_close(moved, expected, rtol=1e-12, atol=1e-13)
    assert gap > 1e-6


def test_flips_work_on_rectangles_and_d4_refuses_them(mgno):
    x = torch.randn(1, 1, 16, 24, dtype=torch.float64)
    with torch.no_grad():
        y = SymmetryAverage(mgno, "flips")(x)
        torch.testing.assert_close(
            SymmetryAverage(mgno, "flips")(x.flip(-1)), y.flip(-1), rtol=1e-12, atol=1e-13
        )
    with pytest.raises(ValueError, match="equal sizes"):
        SymmetryAverage(mgno, "d4")(x)


def test_gradients_reach_the_wrapped_model(mgno):
    model = create("conv-net", in_channels=1, out_channels=1, hidden_channels=4, n_layers=2)
    SymmetryAverage(model)(torch.randn(2, 1, 8, 8)).square().sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    assert SymmetryAverage(model).config == model.config


@pytest.mark.parametrize(
    ("symmetries", "message"),
    [
        ("d5", "unknown group"),
        ((), "empty"),
        (("flip0", "transpose_01"), "not a group"),
        (("flip0", "flip0"), "repeat"),
        (("rot90_01",), "not a group"),
        (("spin",), "unknown symmetry"),
    ],
)
def test_bad_symmetries_are_refused(symmetries, message):
    with pytest.raises(ValueError, match=message):
        SymmetryAverage(torch.nn.Identity(), symmetries)


def test_explicit_groups_are_accepted():
    for names in (
        DIHEDRAL_2D,
        ("rot180_01",),
        ("transpose_01",),
        ("rot90_01", "rot180_01", "rot270_01"),
    ):
        assert SymmetryAverage(torch.nn.Identity(), names).symmetries == tuple(names)
