"""DCDM: FCG(m) with a network's directions, checked with stand-in networks."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from physnet.operators import AIR, SOLID, GridPoisson
from physnet.solvers import Status, cg, solve

torch = pytest.importorskip("torch")

import physnet.nn  # noqa: E402
import physnet.pretrained  # noqa: E402
from physnet.solvers.dcdm import dcdm  # noqa: E402


def _box(shape, obstacle=True):
    """A box with an air layer on top (A definite) and, optionally, a solid obstacle."""
    flags = np.zeros(shape, dtype=np.int8)
    flags[0] = AIR
    if obstacle:
        centre = tuple(slice(s // 3, s // 3 + max(2, s // 4)) for s in shape)
        flags[centre] = SOLID
    return flags


@pytest.fixture(params=[(20, 16), (8, 7, 6)], ids=["2d", "3d"])
def system(request, rng):
    A = GridPoisson(_box(request.param))
    return A, rng.standard_normal(A.n)


class Identity(torch.nn.Module):
    """No preconditioning: DCDM is then CG."""

    def forward(self, u):
        return u


class ExactInverse(torch.nn.Module):
    """``A^{-1}`` of one small operator by a dense solve: DCDM converges in one step."""

    def __init__(self, A):
        super().__init__()
        self.A = A
        self.inverse = torch.from_numpy(np.linalg.inv(A.to_csr().toarray()))

    def forward(self, u):
        r = self.A.gather(u[0, 0].to(torch.float64))
        return self.A.scatter(self.inverse @ r)[None, None].to(u.dtype)


class Constant(torch.nn.Module):
    """Returns the same field whatever the input (NaN, zero, one...)."""

    def __init__(self, value):
        super().__init__()
        self.value = value

    def forward(self, u):
        return torch.full_like(u, self.value)


def _iterations(function, A, b, **kwargs):
    calls = []
    x, info = function(A, b, callback=lambda xk: calls.append(1), **kwargs)
    return x, info, len(calls)


def test_identity_network_is_cg(system):
    A, b = system
    x_cg, info_cg, count_cg = _iterations(cg, A, b, rtol=1e-8)
    x, info, count = _iterations(dcdm, A, b, model=Identity(), rtol=1e-8)
    assert info == info_cg == 0
    assert abs(count - count_cg) <= 1
    np.testing.assert_allclose(x, x_cg, rtol=1e-6, atol=1e-8 * np.abs(x_cg).max())


def test_exact_inverse_network_converges_in_one_step(system):
    A, b = system
    x, info, count = _iterations(dcdm, A, b, model=ExactInverse(A), rtol=1e-10)
    assert info == 0 and count <= 2
    np.testing.assert_allclose(A.to_csr() @ x, b, atol=1e-9 * np.linalg.norm(b))


def test_returns_the_callers_kind_and_meets_the_stopping_rule_on_the_true_residual(xp, rng):
    A = GridPoisson(_box((12, 10)))
    b = rng.standard_normal(A.n)
    rtol = 1e-7
    x, info = dcdm(A, xp.asarray(b), model=Identity(), rtol=rtol)
    assert info == 0 and xp.is_own(x)
    x = xp.to_numpy(x)
    assert np.linalg.norm(b - A.to_csr() @ x) <= rtol * np.linalg.norm(b)


def test_float32_network_in_a_float64_solve(system):
    """A network's rounding makes it a nonlinear preconditioner; FCG still converges."""
    A, b = system
    smoother = _smoothing_convolution(A.ndim, torch.float32)
    x, info = dcdm(A, b, model=smoother, rtol=1e-9, m=4)
    assert info == 0
    assert np.linalg.norm(b - A.to_csr() @ x) <= 1e-9 * np.linalg.norm(b)


def _smoothing_convolution(ndim, dtype):
    convolution = (torch.nn.Conv2d if ndim == 2 else torch.nn.Conv3d)(
        1, 1, 3, padding=1, bias=False, dtype=dtype
    )
    # The tensor product of [1, 6, 1] / 8 per axis: symmetric positive definite (its
    # symbol is at least 1/2 per axis), a fixed preconditioner CG could use too.
    kernel = torch.tensor([1.0, 6.0, 1.0], dtype=dtype) / 8
    weight = (
        kernel[:, None] * kernel if ndim == 2 else kernel[:, None, None] * kernel[:, None] * kernel
    )
    with torch.no_grad():
        convolution.weight.copy_(weight)
    return convolution


def test_the_network_sees_the_normalised_residual_on_the_grid(rng):
    A = GridPoisson(_box((9, 8)))
    seen = []

    class Recorder(torch.nn.Module):
        def forward(self, u):
            seen.append(u.clone())
            return u

    dcdm(A, rng.standard_normal(A.n), model=Recorder(), maxiter=3)
    assert len(seen) == 3
    for u in seen:
        assert u.shape == (1, 1, 9, 8) and u.dtype == torch.float64
        assert torch.linalg.vector_norm(u).item() == pytest.approx(1.0)
        assert not u[0, 0][torch.from_numpy(A.flags != 0)].any()


def test_flags_channel_and_prepared_state(rng):
    A = GridPoisson(_box((10, 9)))
    b = rng.standard_normal(A.n)
    flags = torch.from_numpy(A.flags.astype(np.float64))[None, None]

    class WithFlags(torch.nn.Module):
        uses_flags = True

        def forward(self, u):
            assert u.shape == (1, 2, 10, 9)
            assert torch.equal(u[:, 1:], flags)
            return u[:, :1]

    class Prepared(torch.nn.Module):
        input_channels = 2

        def __init__(self):
            super().__init__()
            self.prepared = 0

        def prepare(self, geometry):
            self.prepared += 1
            assert torch.equal(geometry, flags)
            return {"solid": geometry == SOLID}

        def apply_prepared(self, residual, state):
            assert residual.shape == (1, 1, 10, 9)
            return torch.where(state["solid"], 0.0, residual)

        def forward(self, u):
            raise AssertionError("prepare/apply_prepared must be used")

    x_cg, _ = cg(A, b, rtol=1e-8)
    for model in (WithFlags(), Prepared()):
        x, info = dcdm(A, b, model=model, rtol=1e-8)
        assert info == 0
        np.testing.assert_allclose(x, x_cg, rtol=1e-6, atol=1e-8 * np.abs(x_cg).max())
    assert model.prepared == 1


def test_network_is_left_in_its_mode_and_on_its_device(rng):
    A = GridPoisson(_box((8, 8)))
    model = _smoothing_convolution(2, torch.float64).train()
    dcdm(A, rng.standard_normal(A.n), model=model, maxiter=2, device="cpu")
    assert model.training


def test_nan_network_ends_with_non_finite(system):
    A, b = system
    result = solve(A, b, method="dcdm", model=Constant(float("nan")))
    assert result.status is Status.NON_FINITE and not result.converged
    assert np.isfinite(result.x).all()
    _, info = dcdm(A, b, model=Constant(float("nan")))
    assert info == -1


def test_zero_direction_ends_with_stagnation(system):
    A, b = system
    result = solve(A, b, method="dcdm", model=Constant(0.0))
    assert result.status is Status.STAGNATION and result.iterations == 0


def test_direction_without_curvature_ends_with_not_positive_definite(rng):
    """A closed box (no air) is singular; a constant direction has p^T A p = 0."""
    A = GridPoisson(np.zeros((8, 8), dtype=np.int8))
    b = rng.standard_normal(A.n)
    b -= b.mean()  # consistent system
    result = solve(A, b, method="dcdm", model=Constant(1.0))
    assert result.status is Status.NOT_POSITIVE_DEFINITE


def test_solve_fills_the_result_and_loads_a_checkpoint(tmp_path, rng):
    A = GridPoisson(_box((12, 12)))
    b = rng.standard_normal(A.n)
    model = physnet.nn.create("conv-net", in_channels=1, hidden_channels=4, n_layers=2)
    path = tmp_path / "net.safetensors"
    physnet.nn.save(model, path)
    result = solve(A, b, method="dcdm", model=path, maxiter=5, m=3, refresh=10)
    assert result.method == "dcdm" and result.status is Status.MAX_ITERATIONS
    assert result.iterations == 5 and len(result.residuals) == 6
    assert result.setup_time > 0 and result.solve_time > 0
    assert result.info == {"model": str(path), "m": 3, "refresh": 10}
    np.testing.assert_allclose(result.residual, np.linalg.norm(b - A.to_csr() @ result.x))
    # An untrained network gives poor, nonlinear directions; the exact line search still
    # never lets the A-norm of the error grow.
    matrix = A.to_csr()
    error = result.x - sp.linalg.spsolve(matrix.tocsc(), b)
    exact = sp.linalg.spsolve(matrix.tocsc(), b)
    assert error @ (matrix @ error) < exact @ (matrix @ exact)


def test_model_none_without_shipped_weights_names_the_missing_network(monkeypatch):
    monkeypatch.setattr(physnet.pretrained, "available", lambda: ())
    b2, b3 = np.ones(GridPoisson(_box((6, 6))).n), np.ones(GridPoisson(_box((4, 4, 4))).n)
    with pytest.raises(ValueError, match=r"'dcdm-galerkin2d'.*not installed.*model="):
        dcdm(GridPoisson(_box((6, 6))), b2)
    with pytest.raises(ValueError, match=r"'dcdm-galerkin3d'.*not installed"):
        solve(GridPoisson(_box((4, 4, 4))), b3, method="dcdm")


def test_operator_other_than_grid_poisson_is_a_type_error():
    A = GridPoisson(_box((6, 6)))
    with pytest.raises(TypeError, match="GridPoisson"):
        dcdm(A.to_csr(), np.ones(A.n), model=Identity())
    with pytest.raises(TypeError, match="GridPoisson"):
        solve(sp.identity(4, format="csr"), np.ones(4), method="dcdm", model=Identity())


def test_bad_models_and_outputs():
    A = GridPoisson(_box((6, 6)))
    b = np.ones(A.n)
    with pytest.raises(TypeError, match="model must be"):
        dcdm(A, b, model=42)
    with pytest.raises(ValueError, match=r"returned a tensor of shape \(1, 1, 3, 3\)"):
        dcdm(A, b, model=torch.nn.AdaptiveAvgPool2d(3))
    three_d = physnet.nn.create("conv-net", ndim=3, hidden_channels=2, n_layers=1)
    with pytest.raises(ValueError, match="3-D grids"):
        dcdm(A, b, model=three_d)
    with pytest.raises(ValueError, match="input channels"):
        dcdm(A, b, model=physnet.nn.create("conv-net", in_channels=3, hidden_channels=2))
    with pytest.raises(ValueError, match="m must be"):
        dcdm(A, b, model=Identity(), m=0)
    with pytest.raises(TypeError, match="unknown option"):
        solve(A, b, method="dcdm", model=Identity(), M=None)
    with pytest.raises(TypeError, match="real systems"):
        dcdm(A, b + 1j, model=Identity())


@pytest.mark.parametrize("scene_name", ["sphere", "torus"])
def test_the_shipped_network_loads_and_beats_cg(scene_name):
    # model=None is the shipped dcdm-poisson3d (its card: 10-13 iterations from 32^3 to
    # 128^3); CG needs ~100 here. A mismatch between weights and architecture fails loudly.
    from physnet.datasets import make_scene

    scene = make_scene(scene_name, 24)
    A, b = scene.operator(), scene.rhs_vector()
    result = solve(A, b, method="dcdm", rtol=1e-6)
    assert result.converged and result.iterations <= 14
    assert np.linalg.norm(b - A @ result.x) <= 1e-6 * np.linalg.norm(b)
    assert solve(A, b, method="cg", rtol=1e-6).iterations > 5 * result.iterations
