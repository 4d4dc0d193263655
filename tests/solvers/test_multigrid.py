"""Galerkin aggregation multigrid: assembly, aggregates, Galerkin products, the cycle."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import scipy.sparse.linalg

from physnet.datasets import make_scene
from physnet.operators import AIR, SOLID, GridPoisson
from physnet.solvers import AggregationMultigrid, _aggregation, fcg, solve


def _system(shape, seed=0, ratio=1e3):
    rng = np.random.default_rng(seed)
    flags = np.zeros(shape, dtype=np.int8)
    flags[..., -1] = AIR
    flags[rng.random(shape) < 0.08] = SOLID
    coefficients = np.where(rng.random(shape) < 0.5, 1.0 / ratio, 1.0)
    return GridPoisson(flags, coefficients=coefficients, h=0.5)


@pytest.mark.parametrize("shape", [(9, 12), (6, 7, 5)])
def test_grid_csr_is_the_operator_exactly(shape):
    A = _system(shape)
    matrix = _aggregation.grid_csr(A.fluid_mask, A.face_weights(), A.diagonal())
    assert matrix.has_sorted_indices
    assert abs(matrix - A.to_csr()).max() == 0.0


def test_face_weights_match_the_operator():
    A = _system((5, 6, 4))
    diagonal = np.zeros(A.grid_shape)
    dense = A.to_csr()
    for d, weights in enumerate(A.face_weights()):
        lower = tuple(slice(0, -1) if a == d else slice(None) for a in range(3))
        upper = tuple(slice(1, None) if a == d else slice(None) for a in range(3))
        diagonal[lower] += weights
        diagonal[upper] += weights
    np.testing.assert_allclose(diagonal[A.fluid_mask], dense.diagonal())


def test_a_wall_splits_a_block_into_two_aggregates():
    # A one-cell wall at y = 1 runs through the 2x2x2 blocks of y in {0, 1} and {2, 3}'s
    # neighbour: cells on either side of it in one block are not connected inside it.
    flags = np.zeros((2, 4, 2), dtype=np.int8)
    flags[:, 1, :] = SOLID
    flags[:, 3, 1] = AIR
    A = GridPoisson(flags)
    labels, count, coarse = _aggregation.aggregate(A.to_csr(), np.argwhere(A.fluid_mask))
    numbers = A.scatter(np.arange(A.n, dtype=float), fill=-1).astype(int)
    assert labels[numbers[0, 0, 0]] == labels[numbers[1, 0, 1]]  # one side, one block
    assert labels[numbers[0, 2, 0]] == labels[numbers[1, 3, 0]]  # the other block
    assert count == 2 and coarse.tolist() == [[0, 0, 0], [0, 1, 0]]
    # Inside one 2x2 block: two fluid cells that touch only at a corner (the other two
    # are solid) are two aggregates of the same block.
    flags2 = np.zeros((2, 4), dtype=np.int8)
    flags2[0, 1] = flags2[1, 0] = SOLID
    flags2[:, 3] = AIR
    A2 = GridPoisson(flags2)
    labels2, count2, coarse2 = _aggregation.aggregate(A2.to_csr(), np.argwhere(A2.fluid_mask))
    numbers2 = A2.scatter(np.arange(A2.n, dtype=float), fill=-1).astype(int)
    assert labels2[numbers2[0, 0]] != labels2[numbers2[1, 1]]
    assert count2 == 3 and coarse2.tolist() == [[0, 0], [0, 0], [0, 1]]


def test_galerkin_product_matches_dense_ptap():
    A = _system((8, 6, 6))
    matrix = A.to_csr()
    labels, count, _ = _aggregation.aggregate(matrix, np.argwhere(A.fluid_mask))
    coarse = _aggregation.galerkin(matrix, labels, count)
    P = np.zeros((A.n, count))
    P[np.arange(A.n), labels] = 1.0
    np.testing.assert_allclose(coarse.toarray(), P.T @ matrix.toarray() @ P, rtol=1e-12, atol=1e-12)
    assert abs(coarse - coarse.T).max() == 0.0


def test_v_cycle_is_a_symmetric_positive_definite_operator():
    A = _system((16, 16, 12))
    M = AggregationMultigrid(A, cycle="V", max_coarse=64)
    assert len(M.level_sizes) >= 3
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal(A.n), rng.standard_normal(A.n)
    lhs, rhs = (M @ x) @ y, x @ (M @ y)
    assert abs(lhs - rhs) <= 1e-5 * np.linalg.norm(M @ x) * np.linalg.norm(y)  # float32 cycle
    assert x @ (M @ x) > 0


@pytest.mark.parametrize("cycle", ["K", "V"])
def test_fcg_with_multigrid_matches_a_direct_solve(cycle):
    A = _system((12, 10, 9), seed=3, ratio=1e4)
    b = np.random.default_rng(2).standard_normal(A.n)
    M = AggregationMultigrid(A, cycle=cycle, max_coarse=32)
    x, info = fcg(A, b, M=M, rtol=1e-10)
    assert info == 0
    exact = scipy.sparse.linalg.spsolve(A.to_csr().tocsc(), b)
    np.testing.assert_allclose(x, exact, rtol=1e-7, atol=1e-7 * np.abs(exact).max())


@pytest.mark.parametrize("name, bound", [("thin-walls", 12), ("two-phase", 14), ("sphere", 12)])
def test_iterations_on_hard_scenes_stay_low(name, bound):
    # rtol 1e-6 at 32^3; the counts are deterministic (they regress if the coarsening
    # loses a thin wall or a coefficient jump: geometric coarsening needed 33 and 150).
    scene = make_scene(name, 32)
    result = solve(scene.operator(), scene.rhs_vector(), method="multigrid", rtol=1e-6)
    assert result.converged and result.iterations <= bound
    assert result.info["levels"][0] == scene.operator().n


def test_with_damping_equals_a_fresh_hierarchy():
    A = _system((10, 9, 8))
    r = np.random.default_rng(0).standard_normal(A.n)

    def damping(features, level):
        return np.full((features.shape[0], 2), 0.6 + 0.05 * level, dtype=np.float32)

    fresh = AggregationMultigrid(A, damping=damping, max_coarse=16)
    reused = AggregationMultigrid(A, max_coarse=16).with_damping(damping)
    np.testing.assert_array_equal(fresh @ r, reused @ r)


def test_features_are_scale_free():
    A = _system((6, 6, 6))
    matrix = A.to_csr()
    first = AggregationMultigrid.features(matrix, 0)
    scaled = AggregationMultigrid.features((7.5 * matrix).tocsr(), 0)
    np.testing.assert_allclose(first, scaled, rtol=1e-6, atol=1e-6)
    assert first.shape == (A.n, 6) and first.dtype == np.float32
    assert (first[:, 0] >= 0).all() and (first[:, 1] <= 1).all()


def test_torch_tensors_come_back_as_torch_tensors():
    torch = pytest.importorskip("torch")
    A = _system((8, 8))
    M = AggregationMultigrid(A)
    r = np.random.default_rng(0).standard_normal(A.n)
    z = M @ torch.from_numpy(r)
    assert isinstance(z, torch.Tensor)
    np.testing.assert_allclose(z.numpy(), M @ r)


def test_zero_residual_gives_zero_and_cost_is_reported():
    A = _system((16, 16, 16))
    M = AggregationMultigrid(A)
    np.testing.assert_array_equal(M @ np.zeros(A.n), np.zeros(A.n))
    assert 40 < M.flops_per_unknown() < 150
    assert 1.0 < M.operator_complexity < 1.5
    assert "AggregationMultigrid(levels=" in repr(M)


def test_bad_arguments():
    A = _system((6, 6))
    with pytest.raises(TypeError, match="GridPoisson"):
        AggregationMultigrid(A.to_csr())
    with pytest.raises(ValueError, match=r"damping must lie in \(0, 2\)"):
        AggregationMultigrid(A, damping=2.5)
    with pytest.raises(ValueError, match="cycle must be one of"):
        AggregationMultigrid(A, cycle="W")
    with pytest.raises(ValueError, match="smoothing_steps"):
        AggregationMultigrid(A, smoothing_steps=0)
    with pytest.raises(ValueError, match="returned shape"):
        AggregationMultigrid(A, damping=lambda features, level: np.ones(3), max_coarse=4)
    with pytest.raises(ValueError, match="outside"):
        AggregationMultigrid(
            A, damping=lambda f, level: np.full((f.shape[0], 2), 3.0), max_coarse=4
        )
    with pytest.raises(TypeError, match="unknown option"):
        solve(A, np.ones(A.n), method="multigrid", M=None)
    assert isinstance(sp.csr_matrix(A.to_csr()), sp.csr_matrix)


def test_singular_compatible_system_converges():
    # No air: a pure-Neumann box. The coarsest level is singular (pseudo-inverse); a
    # right-hand side with zero mean is solved up to a constant.
    A = GridPoisson(np.zeros((12, 12, 12), dtype=np.int8))
    b = np.random.default_rng(0).standard_normal(A.n)
    b -= b.mean()
    x, info = fcg(A, b, M=AggregationMultigrid(A, max_coarse=64), rtol=1e-8)
    assert info == 0 and np.linalg.norm(b - A @ x) <= 1e-8 * np.linalg.norm(b)
