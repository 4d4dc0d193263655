"""masked_poisson: GridPoisson's rows on batches of full grids, differentiable."""

from __future__ import annotations

import numpy as np
import pytest

from physnet.operators import AIR, FLUID, SOLID, GridPoisson

torch = pytest.importorskip("torch")

from physnet.operators.masked import masked_poisson  # noqa: E402


def _random_flags(rng, batch, grid):
    flags = rng.choice([FLUID, FLUID, FLUID, SOLID, AIR], size=(batch, *grid)).astype(np.int8)
    flags[:, (0,) * len(grid)] = FLUID  # every sample has an unknown
    return flags


@pytest.mark.parametrize("grid", [(9, 7), (1, 6), (5, 6, 4)], ids=["2d", "2d-thin", "3d"])
@pytest.mark.parametrize("h", [1.0, 0.3, "per-axis"])
def test_matches_the_csr_matrix_of_every_sample(rng, grid, h):
    if h == "per-axis":
        h = tuple(0.5 + 0.25 * d for d in range(len(grid)))
    flags = _random_flags(rng, 4, grid)
    u = torch.from_numpy(rng.standard_normal((4, 1, *grid)))
    result = masked_poisson(u, torch.from_numpy(flags), h=h)
    assert result.shape == u.shape and result.dtype == u.dtype
    for i in range(4):
        A = GridPoisson(flags[i], h=h)
        expected = A.to_csr() @ A.gather(u[i, 0].numpy())
        np.testing.assert_allclose(A.gather(result[i, 0].numpy()), expected, rtol=1e-12, atol=1e-12)
        assert not result[i, 0].numpy()[flags[i] != FLUID].any()


def test_float_flags_with_a_channel_axis_and_broadcast_geometry(rng):
    flags = _random_flags(rng, 1, (6, 5, 4))
    u = torch.from_numpy(rng.standard_normal((3, 1, 6, 5, 4))).float()
    as_int = masked_poisson(u, torch.from_numpy(flags))  # (1, *grid): shared by the batch
    as_float = masked_poisson(u, torch.from_numpy(flags).float()[:, None].expand(3, -1, -1, -1, -1))
    torch.testing.assert_close(as_int, as_float)
    A = GridPoisson(flags[0], dtype=np.float32)
    np.testing.assert_allclose(
        A.gather(as_int[2, 0].numpy()), A @ A.gather(u[2, 0].numpy()), rtol=1e-5, atol=1e-5
    )


def test_ignores_values_off_the_fluid_cells(rng):
    flags = torch.from_numpy(_random_flags(rng, 2, (8, 8)))
    u = torch.from_numpy(rng.standard_normal((2, 1, 8, 8)))
    noisy = torch.where(flags[:, None] == FLUID, u, torch.full_like(u, 7.0))
    torch.testing.assert_close(masked_poisson(noisy, flags), masked_poisson(u, flags))


def test_gradient_is_the_transpose_apply(rng):
    """A is symmetric: d/du <v, A u> = A v on the fluid cells."""
    flags = torch.from_numpy(_random_flags(rng, 2, (5, 4, 6)))
    u = torch.from_numpy(rng.standard_normal((2, 1, 5, 4, 6))).requires_grad_()
    v = torch.from_numpy(rng.standard_normal((2, 1, 5, 4, 6)))
    (masked_poisson(u, flags) * v).sum().backward()
    torch.testing.assert_close(u.grad, masked_poisson(v, flags))


def test_bad_inputs_name_the_problem():
    u = torch.zeros(2, 1, 4, 4)
    with pytest.raises(ValueError, match="u has shape"):
        masked_poisson(torch.zeros(2, 4, 4), torch.zeros(2, 4, 4))
    with pytest.raises(ValueError, match="flags has shape"):
        masked_poisson(u, torch.zeros(2, 1, 4, 5))
    with pytest.raises(ValueError, match="batch size"):
        masked_poisson(u, torch.zeros(3, 4, 4))
    with pytest.raises(ValueError, match="values other than"):
        masked_poisson(u, torch.full((2, 4, 4), 3))
    with pytest.raises(ValueError, match="spacings"):
        masked_poisson(u, torch.zeros(2, 4, 4), h=(1.0, 2.0, 3.0))
    with pytest.raises(TypeError, match="floating-point"):
        masked_poisson(u.long(), torch.zeros(2, 4, 4))
    with pytest.raises(TypeError, match="torch tensors"):
        masked_poisson(np.zeros((2, 1, 4, 4)), torch.zeros(2, 4, 4))
