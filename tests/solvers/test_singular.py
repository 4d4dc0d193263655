"""solve() on singular grid operators: fluid regions that touch no air cell."""

from __future__ import annotations

import numpy as np
import pytest

from physnet.operators import AIR, SOLID, GridPoisson
from physnet.solvers import Status, solve

METHODS = ("cg", "jacobi", "amg", "ic", "fcg")


@pytest.fixture
def closed_box():
    """An all-fluid 14x12 grid: no air, so constants span the null space."""
    return GridPoisson(np.zeros((14, 12), dtype=np.int8))


def _minimum_norm_solution(A, b):
    from threadpoolctl import threadpool_limits

    # One BLAS thread: a threaded SVD of this small matrix took seconds on a busy machine.
    with threadpool_limits(limits=1, user_api="blas"):
        return np.linalg.lstsq(A.to_csr().toarray(), b, rcond=None)[0]


@pytest.mark.parametrize("method", METHODS)
def test_compatible_rhs_gives_the_zero_mean_solution(closed_box, rng, method):
    A = closed_box
    b = rng.standard_normal(A.n)
    b -= b.mean()
    result = solve(A, b, method=method, rtol=1e-10)
    assert result.status is Status.CONVERGED
    assert abs(result.x.mean()) < 1e-12
    np.testing.assert_allclose(result.x, _minimum_norm_solution(A, b), atol=1e-8)
    assert np.linalg.norm(b - A @ result.x) <= 1e-10 * np.linalg.norm(b)
    assert result.info["floating_regions"] == 1
    assert "zero mean" in result.info["singular"]


@pytest.mark.parametrize("method", METHODS)
def test_incompatible_rhs_has_its_own_status(closed_box, rng, method):
    A = closed_box
    b = rng.standard_normal(A.n) + 0.5
    result = solve(A, b, method=method, rtol=1e-10)
    assert result.status is Status.INCOMPATIBLE
    assert not result.converged
    assert "incompatible" in str(result.status)
    assert result.iterations < A.n
    # x is the least-squares (minimum-norm) solution; the residual is b's null part.
    np.testing.assert_allclose(result.x, _minimum_norm_solution(A, b), atol=1e-8)
    null_part = np.full(A.n, b.mean())
    assert result.residual == pytest.approx(np.linalg.norm(null_part), rel=1e-8)
    assert result.info["null_space_component"] == pytest.approx(
        np.linalg.norm(null_part) / np.linalg.norm(b), rel=1e-8
    )


def test_only_the_floating_region_is_projected(rng):
    # Left region touches air; the right one is walled off by a solid column.
    flags = np.zeros((10, 13), dtype=np.int8)
    flags[:, 6] = SOLID
    flags[0, :6] = AIR
    A = GridPoisson(flags)
    right = A.gather(np.broadcast_to(np.arange(13) > 6, flags.shape))
    b = rng.standard_normal(A.n)
    b[right] -= b[right].mean()
    result = solve(A, b, rtol=1e-11)
    assert result.converged and result.info["floating_regions"] == 1
    assert abs(result.x[right].mean()) < 1e-12
    np.testing.assert_allclose(result.x, _minimum_norm_solution(A, b), atol=1e-8)


def test_nonsingular_grids_are_untouched(rng):
    flags = np.zeros((8, 8), dtype=np.int8)
    flags[0, 0] = AIR  # a single Dirichlet cell grounds the whole region
    result = solve(GridPoisson(flags), rng.standard_normal(63), rtol=1e-10)
    assert result.converged and "singular" not in result.info


def test_rounding_level_incompatibility_is_compatible_in_single_precision(rng):
    A = GridPoisson(np.zeros((16, 16), dtype=np.int8), dtype=np.float32)
    x_true = rng.standard_normal(A.n).astype(np.float32)
    b = A @ x_true  # in the range up to float32 rounding
    result = solve(A, b, rtol=1e-5)
    assert result.status is Status.CONVERGED
    assert abs(float(result.x.mean())) < 1e-5


def test_dcdm_on_a_singular_grid():
    torch = pytest.importorskip("torch")
    A = GridPoisson(np.zeros((16, 16), dtype=np.int8))
    network = torch.nn.Conv2d(1, 1, 3, padding=1, bias=False, dtype=torch.float64)
    kernel = torch.tensor([[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]]) / 16
    network.weight.data.copy_(kernel)
    b = np.random.default_rng(3).standard_normal(A.n)
    b -= b.mean()
    result = solve(A, b, method="dcdm", model=network, rtol=1e-8)
    assert result.status is Status.CONVERGED
    assert abs(result.x.mean()) < 1e-12
    incompatible = solve(A, b + 1.0, method="dcdm", model=network, rtol=1e-8)
    assert incompatible.status is Status.INCOMPATIBLE
