"""Resolution-consistent MgNO (``reference_grid``): the same network at its own grid, level
plans, kernel rescaling by moments, the fixed grid transfers, and convergence under refinement."""

from __future__ import annotations

import math

import pytest
import torch

from physnet.nn import MgNO, MultigridCycle
from physnet.nn.mgno import _bilinear_prolongation, _full_weighting, _rescale_kernel

SCHEDULE = [[1, 0], [1, 0], [2, 0]]


def _grid(n, function):
    x = torch.linspace(0, 1, n, dtype=torch.float64)
    return function(x[:, None], x[None, :])[None, None]


@pytest.mark.parametrize("restriction", ["source", "residual"])
@pytest.mark.parametrize("fine_levels", ["interpolate", "reuse"])
def test_the_reference_grid_runs_the_trained_network_bit_for_bit(restriction, fine_levels):
    torch.manual_seed(0)
    model = MgNO(hidden_channels=4, n_layers=2, smoothing=SCHEDULE, restriction=restriction)
    x = torch.rand(2, 1, 17, 17)
    expected = model(x)
    model.set_reference_grid(17, fine_levels=fine_levels)
    assert torch.equal(model(x), expected)
    assert all(c.reference_grid == (17, 17) for c in model.cycles)
    assert model(torch.rand(1, 1, 65, 33)).shape == (1, 1, 65, 33)  # 2 / 1 extra levels
    assert model(torch.rand(1, 1, 9, 9)).shape == (1, 1, 9, 9)  # one level dropped
    assert torch.equal(model.set_reference_grid(None)(x), expected)


def test_level_plan():
    cycle = MultigridCycle(1, 2, SCHEDULE, reference_grid=17)
    assert cycle.level_plan((17, 17)) == [(0, None), (1, None), (2, None)]
    fine = [(-1, (4.0, 4.0)), (-1, (2.0, 2.0)), (0, None), (1, None), (2, None)]
    assert cycle.level_plan((65, 65)) == fine
    assert cycle.level_plan((9, 9)) == [(1, None), (2, None)]
    assert cycle.level_plan((3, 3)) == [(2, (0.5, 0.5))]  # the coarsest level always runs
    # a 49-node grid is 3x finer: 2 extra levels, every spacing off by 3/4 from the trained one
    assert cycle.level_plan((49, 49))[1:3] == [(-1, (1.5, 1.5)), (0, (0.75, 0.75))]
    assert cycle.level_plan((65, 33))[1] == (-1, (2.0, 1.0))  # anisotropic spacing ratios
    ratio = (128 - 1) / (64 - 1)  # a 128-node grid against a 64-node reference
    plan = MultigridCycle(1, 1, [[1, 0]] * 6, reference_grid=64).level_plan((128, 128))
    assert len(plan) == 7 and plan[0][0] == -1
    assert plan[1] == (0, (ratio / 2, ratio / 2))  # spacings not exactly halved: rescaled
    reuse = MultigridCycle(1, 2, SCHEDULE, reference_grid=17, fine_levels="reuse")
    assert reuse.level_plan((33, 33))[:2] == [(0, (2.0, 2.0)), (0, None)]


def _moments(kernel):
    offsets = torch.tensor([-1.0, 0.0, 1.0], dtype=kernel.dtype)
    powers = torch.stack([offsets**p for p in range(3)])
    return torch.einsum("pa,...ab,qb->...pq", powers, kernel, powers)


@pytest.mark.parametrize("shift", [0, -1])
def test_kernel_rescaling_scales_each_moment_by_its_order(shift):
    torch.manual_seed(1)
    kernel = torch.randn(3, 2, 3, 3, dtype=torch.float64)
    scale = (2.0, 1.5)
    scaled = _rescale_kernel(kernel, scale, shift)
    p = torch.arange(3, dtype=torch.float64)
    factor = scale[0] ** p[:, None] * scale[1] ** p[None, :] * (scale[0] * scale[1]) ** shift
    torch.testing.assert_close(_moments(scaled), _moments(kernel) * factor)


def test_kernel_rescaling_rediscretises_the_laplacian_and_jacobi():
    h = 1 / 16
    laplacian = torch.tensor([[0, 1, 0], [1, -4, 1], [0, 1, 0]], dtype=torch.float64) / h**2
    torch.testing.assert_close(
        _rescale_kernel(laplacian[None, None], (2.0, 2.0), 0)[0, 0], laplacian * 4
    )
    jacobi = torch.zeros(3, 3, dtype=torch.float64)
    jacobi[1, 1] = h**2 / 4  # ω D⁻¹ of the 5-point Laplacian: h² / 4
    torch.testing.assert_close(
        _rescale_kernel(jacobi[None, None], (2.0, 2.0), -1)[0, 0], jacobi / 4
    )


def test_fixed_transfers_are_exact_on_bilinear_functions():
    bilinear = lambda x, y: 1 + 2 * x - 3 * y + 5 * x * y  # noqa: E731
    fine, coarse = _grid(33, bilinear), _grid(17, bilinear)
    restricted = _full_weighting(fine, "dirichlet")
    torch.testing.assert_close(restricted[..., 1:-1, 1:-1], coarse[..., 1:-1, 1:-1])
    torch.testing.assert_close(_bilinear_prolongation(coarse, (33, 33), "dirichlet"), fine)
    # a field even about the sides (zero normal derivative): full weighting is second order
    # on the whole grid, boundary included
    field = lambda x, y: torch.cos(math.pi * x) * torch.cos(2 * math.pi * y)  # noqa: E731
    errors = [
        (_full_weighting(_grid(2 * n - 1, field), "dirichlet") - _grid(n, field)).abs().max()
        for n in (17, 33)
    ]
    assert 3.6 < errors[0] / errors[1] < 4.4


@pytest.mark.parametrize(("boundary", "order"), [("periodic", 3.6), ("dirichlet", 2.5)])
def test_resolution_consistent_outputs_converge_under_refinement(boundary, order):
    """Outputs of the same weights on grids 2x finer agree at the shared nodes, to O(h²):
    the network has a continuum limit. Without reference_grid they do not."""
    torch.manual_seed(2)
    model = MgNO(hidden_channels=4, n_layers=2, smoothing=SCHEDULE, boundary=boundary).double()
    field = lambda x, y: torch.cos(2 * math.pi * x) * torch.cos(2 * math.pi * y)  # noqa: E731

    def gaps(reference_grid):
        model.set_reference_grid(reference_grid)
        with torch.no_grad():
            out = {n: model(_grid(n, field)) for n in (17, 33, 65, 129)}
        return [(out[2 * n - 1][..., ::2, ::2] - out[n]).abs().max().item() for n in (17, 33, 65)]

    # measured: periodic 2.8e-3, 5.5e-4, 1.4e-4 (second order); Dirichlet 3.5e-3, 1.0e-3,
    # 3.6e-4 (zero padding at the sides costs half an order); outputs are ~0.08
    consistent = gaps(17)
    assert consistent[0] / consistent[1] > order and consistent[1] / consistent[2] > order
    reference = gaps(None)  # the reference network: ~1.1e-2 at every refinement
    assert min(reference) > 0.5 * max(reference) and reference[2] > 20 * consistent[2]


def test_errors():
    with pytest.raises(ValueError, match="reference_grid=2"):
        MgNO(reference_grid=2)
    with pytest.raises(ValueError, match="reference_grid=\\[64\\]"):
        MgNO(reference_grid=[64])
    with pytest.raises(ValueError, match="kernel_scaling 'h2' is unknown"):
        MgNO(kernel_scaling="h2")
    with pytest.raises(ValueError, match="fine_levels 'copy' is unknown"):
        MgNO().set_reference_grid(64, fine_levels="copy")
