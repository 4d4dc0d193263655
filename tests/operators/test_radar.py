"""NearFieldMIMO: the Born model entries, adjointness, batching, chunking, backends, errors."""

from __future__ import annotations

import importlib

import numpy as np
import pytest

from physnet.operators import NearFieldMIMO, cross_array, linear_frequencies, voxel_grid
from physnet.operators.radar import SPEED_OF_LIGHT, _NumpyCore
from physnet.testing import dot_product_test

SMALL = {"n_frequencies": 3, "grid_shape": (4, 5, 6)}


def brute_force_matrix(transmitters, receivers, frequencies, points) -> np.ndarray:
    """A[k,t,r,v] = exp(-j k (|r_v-p_t| + |r_v-p_r|)) / (4 pi |r_v-p_t| |r_v-p_r|), by loops."""
    K, T, R, N = len(frequencies), len(transmitters), len(receivers), len(points)
    A = np.empty((K, T, R, N), dtype=np.complex128)
    for k, f in enumerate(frequencies):
        wavenumber = 2 * np.pi * f / SPEED_OF_LIGHT
        for t in range(T):
            for r in range(R):
                d_t = np.linalg.norm(points - transmitters[t], axis=1)
                d_r = np.linalg.norm(points - receivers[r], axis=1)
                A[k, t, r] = np.exp(-1j * wavenumber * (d_t + d_r)) / (4 * np.pi * d_t * d_r)
    return A.reshape(K * T * R, N)


def random_geometry(rng, n_tx=3, n_rx=4, n_freq=5, n_points=37):
    transmitters = rng.uniform(-0.2, 0.2, (n_tx, 3)) * [1, 1, 0]
    receivers = rng.uniform(-0.2, 0.2, (n_rx, 3)) * [1, 1, 0]
    frequencies = np.sort(rng.uniform(3e9, 18e9, n_freq))  # not evenly spaced
    points = rng.uniform([-0.1, -0.1, 0.3], [0.1, 0.1, 0.7], (n_points, 3))
    return transmitters, receivers, frequencies, points


def complex_normal(rng, shape, dtype=np.complex128):
    return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(dtype)


def test_reference_geometry():
    tx, rx = cross_array()
    assert tx.shape == (12, 3) and rx.shape == (13, 3)
    assert np.allclose(np.linalg.norm(np.diff(rx, axis=0), axis=1), 0.3 * np.sqrt(2) / 12)
    assert np.allclose(np.linalg.norm(np.diff(tx, axis=0), axis=1), 0.3 * np.sqrt(2) / 11)
    assert np.allclose(rx[6], 0) and not np.any(np.all(np.isclose(tx, 0), axis=1))
    assert np.allclose(tx[0], [-0.15, 0.15, 0]) and np.allclose(rx[0], [-0.15, -0.15, 0])
    points = voxel_grid()
    assert points.shape == (30625, 3)
    assert np.allclose(np.unique(points[:, 0]), np.linspace(-0.15, 0.15, 25))
    assert np.allclose(np.diff(np.unique(points[:, 2])), 0.00625)
    assert np.allclose(linear_frequencies(15)[[0, -1]], [4e9, 16e9])
    A = NearFieldMIMO()
    assert A.measurement_shape == (15, 12, 13) and A.grid_shape == (25, 25, 49)
    assert A.shape == (15 * 156, 30625) and A.dtype == np.complex64


def test_matches_brute_force_matrix_on_any_geometry(rng):
    geometry = random_geometry(rng)
    A = NearFieldMIMO(*geometry, dtype=np.complex128)
    expected = brute_force_matrix(*geometry)
    np.testing.assert_allclose(A.dense(), expected, rtol=1e-12, atol=0)
    x = complex_normal(rng, (2, A.shape[1]))
    y = A @ x
    assert y.shape == (2, 5, 3, 4)
    np.testing.assert_allclose(y.reshape(2, -1), x @ expected.T, rtol=1e-11, atol=1e-14)
    w = complex_normal(rng, (2, 5, 3, 4))
    np.testing.assert_allclose(A.H @ w, w.reshape(2, -1) @ expected.conj(), rtol=1e-11, atol=1e-14)


def test_default_setting_matches_brute_force_on_a_voxel_subset(rng):
    A = NearFieldMIMO(n_frequencies=5)
    subset = rng.choice(A.shape[1], 20, replace=False)
    expected = brute_force_matrix(A.transmitters, A.receivers, A.frequencies, A.points[subset])
    x = np.zeros((1, A.shape[1]), dtype=np.complex64)
    x[0, subset] = complex_normal(rng, 20, np.complex64)
    np.testing.assert_allclose(
        (A @ x).reshape(-1), expected @ x[0, subset], rtol=2e-5 * 20, atol=1e-6
    )


@pytest.mark.parametrize("dtype", [np.complex128, np.complex64])
def test_dot_product(xp, dtype):
    A = NearFieldMIMO(**SMALL, dtype=dtype)
    rtol = 1e-6 if dtype == np.complex128 else 1e-4
    gap = dot_product_test(A, like=xp.asarray(np.zeros(1)), rtol=rtol)
    assert gap <= (1e-12 if dtype == np.complex128 else 1e-5)


def test_dot_product_reference_setting_float64():
    A = NearFieldMIMO(n_frequencies=2, dtype=np.complex128)
    assert dot_product_test(A, rtol=1e-6) < 1e-12


def test_batch_shapes_and_protocol(rng):
    A = NearFieldMIMO(**SMALL, dtype=np.complex128)
    x = complex_normal(rng, (2, 3, A.shape[1]))
    y = A @ x
    assert y.shape == (2, 3, *A.measurement_shape)
    back = A.H @ y
    assert back.shape == (2, 3, A.shape[1])
    np.testing.assert_allclose(A.H @ y.reshape(2, 3, -1), back)
    np.testing.assert_allclose(A @ x[0, 1], y[0, 1])  # one volume: (N,) -> (K, T, R)
    np.testing.assert_allclose(A.matvec(x[0, 1]), y[0, 1].reshape(-1))
    np.testing.assert_allclose(A.rmatvec(y[0, 1].reshape(-1)), back[0, 1])
    columns = x[0].T  # (N, 3): the column protocol
    np.testing.assert_allclose(A.matmat(columns), y[0].reshape(3, -1).T)
    np.testing.assert_allclose(A.H.matmat(y[0].reshape(3, -1).T), back[0].T)
    np.testing.assert_allclose(A.to_scipy() @ x[0, 0], y[0, 0].reshape(-1))
    assert A.H.H is A
    np.testing.assert_allclose(A.volume(x).shape, (2, 3, 4, 5, 6))


def test_real_input_is_promoted(rng):
    A = NearFieldMIMO(**SMALL, dtype=np.complex128)
    x = rng.standard_normal(A.shape[1])
    np.testing.assert_allclose(A @ x, A @ x.astype(np.complex128))


def test_chunked_and_uncached_applies_agree(rng):
    A = NearFieldMIMO(**SMALL, dtype=np.complex128)
    B = NearFieldMIMO(**SMALL, dtype=np.complex128, workspace_bytes=0, table_bytes=0)
    B.workspace_bytes = 4096  # force many voxel chunks
    assert B._chunk(3, np.dtype(np.complex128)) < B.shape[1]
    x = complex_normal(rng, (3, A.shape[1]))
    y = complex_normal(rng, (3, *A.measurement_shape))
    np.testing.assert_allclose(B @ x, A @ x, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(B.H @ y, A.H @ y, rtol=1e-12, atol=1e-15)
    assert B._cached_table_bytes() == 0 and A._cached_table_bytes() > 0


def relative_error(value, expected):
    return np.linalg.norm(value - expected) / np.linalg.norm(expected)


@pytest.mark.parametrize("dtype", [np.complex64, np.complex128])
@pytest.mark.parametrize("batch", [1, 3, _NumpyCore.TILE_BATCH, 11, _NumpyCore.ADJOINT_TILE_BATCH])
@pytest.mark.parametrize("cached", [True, False], ids=["cached", "uncached"])
@pytest.mark.parametrize("symmetric", [False, True], ids=["plain", "symmetric"])
def test_fused_and_tile_applies_match_the_dense_matrix(
    rng, monkeypatch, dtype, batch, cached, symmetric
):
    # 720 voxels: two blocks of the fused kernels; tiles of 64 voxels and a short last one
    # (symmetric: 360 voxels, one per orbit of the rotation by 180 degrees, and twice the batch).
    kwargs = {"symmetric": symmetric} if cached else {"table_bytes": 0, "symmetric": symmetric}
    A = NearFieldMIMO(n_frequencies=3, grid_shape=(8, 9, 10), dtype=dtype, **kwargs)
    if cached:
        m = A.shape[0]
        monkeypatch.setattr(_NumpyCore, "TILE_BYTES", 3 * m * np.dtype(dtype).itemsize // 2 * 64)
    else:
        A.workspace_bytes = 1 << 16  # voxel chunks of the tables as well
    dense = NearFieldMIMO(n_frequencies=3, grid_shape=(8, 9, 10), dtype=np.complex128).dense()
    x = complex_normal(rng, (batch, A.shape[1]), dtype)
    y = complex_normal(rng, (batch, *A.measurement_shape), dtype)
    forward, back = A @ x, A.H @ y
    assert forward.dtype == dtype and back.dtype == dtype
    assert forward.shape == (batch, *A.measurement_shape) and back.shape == (batch, A.shape[1])
    tol = 1e-13 if dtype == np.complex128 else 2e-6
    assert relative_error(forward.reshape(batch, -1), x @ dense.T) < tol
    assert relative_error(back, y.reshape(batch, -1) @ dense.conj()) < tol
    assert (A._cached_table_bytes() > 0) == cached
    assert (A.symmetry() is not None) == symmetric
    # <A x, y> = <x, A^H y> over the whole batch
    left, right = np.vdot(forward, y), np.vdot(x, back)
    assert abs(left - right) <= tol * np.linalg.norm(forward) * np.linalg.norm(y)


@pytest.mark.parametrize("symmetric", [False, True], ids=["plain", "symmetric"])
def test_batch_mates_do_not_change_a_fused_result(rng, symmetric):
    A = NearFieldMIMO(**SMALL, symmetric=symmetric)
    count = _NumpyCore.TILE_BATCH // (2 if symmetric else 1) - 1  # 2 symmetries: 2x the batch
    y = complex_normal(rng, (count, *A.measurement_shape), np.complex64)
    x = complex_normal(rng, (count, A.shape[1]), np.complex64)
    np.testing.assert_array_equal(A.H @ y[2], (A.H @ y)[2])
    np.testing.assert_array_equal(A @ x[2], (A @ x)[2])


@pytest.mark.parametrize("dtype", [np.complex64, np.complex128])
@pytest.mark.parametrize("symmetric", [False, True], ids=["plain", "symmetric"])
def test_the_fused_adjoint_gives_a_volume_the_same_bits_in_any_batch(rng, dtype, symmetric):
    # Its kernel shares each read of the tables between the volumes of a group (up to
    # 8): a volume's result must not depend on its group, its place in it, or the batch.
    A = NearFieldMIMO(n_frequencies=3, grid_shape=(8, 9, 10), dtype=dtype, symmetric=symmetric)
    count = _NumpyCore.ADJOINT_TILE_BATCH // (2 if symmetric else 1) - 1
    y = complex_normal(rng, (count, *A.measurement_shape), dtype)
    alone = np.stack([A.H @ volume for volume in y])
    np.testing.assert_array_equal(A.H @ y, alone)
    order = rng.permutation(count)
    mates = y[order] * np.where(np.arange(count) % 2, 1e3, 1.0).reshape(-1, 1, 1, 1)
    shuffled = A.H @ mates.astype(dtype)
    for place, index in enumerate(order):
        if place % 2 == 0:
            np.testing.assert_array_equal(shuffled[place], alone[index])
    dense = NearFieldMIMO(n_frequencies=3, grid_shape=(8, 9, 10), dtype=np.complex128).dense()
    tol = 1e-13 if dtype == np.complex128 else 2e-6
    assert relative_error(alone, y.reshape(count, -1) @ dense.conj()) < tol


def test_the_reference_geometry_has_four_symmetries():
    # Rotation by 180 degrees and the two diagonal reflections map the cross array and the
    # 25 x 25 grid onto themselves: (625 + 1 + 25 + 25) / 4 = 169 orbits per z layer.
    symmetry = NearFieldMIMO(n_frequencies=1).symmetry()
    assert len(symmetry) == 4
    assert symmetry.reduced.shape == (156, 169 * 49)
    assert NearFieldMIMO(n_frequencies=1, symmetric=False).symmetry() is None
    with pytest.raises(TypeError, match="symmetric"):
        NearFieldMIMO(n_frequencies=1, symmetric="yes")


def test_an_asymmetric_geometry_has_no_symmetry_reduction(rng):
    points = voxel_grid((4, 5, 6)) + np.array([0.01, 0.0, 0.0])  # shifted off the axis
    assert NearFieldMIMO(n_frequencies=2, points=points).symmetry() is None


@pytest.mark.parametrize("grid", [(5, 5, 3), (6, 6, 2)], ids=["odd", "even"])
@pytest.mark.parametrize("batch", [1, 2, 5])
def test_symmetric_applies_match_the_plain_ones(rng, grid, batch):
    # Square grids: voxels on the diagonals are fixed by a reflection, and with an odd side
    # the centre column by all four symmetries; each must count once in the forward map.
    A = NearFieldMIMO(n_frequencies=3, grid_shape=grid, dtype=np.complex128)
    plain = NearFieldMIMO(n_frequencies=3, grid_shape=grid, dtype=np.complex128, symmetric=False)
    x = complex_normal(rng, (batch, A.shape[1]))
    y = complex_normal(rng, (batch, *A.measurement_shape))
    np.testing.assert_allclose(A @ x, plain @ x, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(A.H @ y, plain.H @ y, rtol=1e-12, atol=1e-15)
    assert len(A.symmetry()) == 4
    assert dot_product_test(A) < 1e-12


def test_complex64_agrees_with_complex128(rng):
    A64 = NearFieldMIMO(**SMALL, dtype=np.complex64)
    A128 = NearFieldMIMO(**SMALL, dtype=np.complex128)
    x = complex_normal(rng, (2, A64.shape[1]), np.complex64)
    y = A64 @ x
    assert y.dtype == np.complex64
    expected = A128 @ x.astype(np.complex128)
    assert np.linalg.norm(y - expected) <= 1e-5 * np.linalg.norm(expected)


def test_torch_matches_numpy_and_is_differentiable(rng):
    torch = pytest.importorskip("torch")
    A = NearFieldMIMO(**SMALL, dtype=np.complex128)
    x = complex_normal(rng, (2, A.shape[1]))
    xt = torch.from_numpy(x).requires_grad_(True)
    y = A @ xt
    assert isinstance(y, torch.Tensor) and y.shape == (2, *A.measurement_shape)
    np.testing.assert_allclose(y.detach().numpy(), A @ x, rtol=1e-12, atol=1e-15)
    w = complex_normal(rng, y.shape)
    np.testing.assert_allclose((A.H @ torch.from_numpy(w)).numpy(), A.H @ w, rtol=1e-12)
    # d/dx Re<w, A x> = A^H w (conjugate Wirtinger convention of torch)
    (y * torch.from_numpy(w).conj()).real.sum().backward()
    np.testing.assert_allclose(xt.grad.numpy(), A.H @ w, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"transmitters": np.zeros((3, 2)), "receivers": np.zeros((2, 3))}, "transmitters"),
        ({"transmitters": np.zeros((3, 3))}, "both"),
        ({"frequencies": [-1e9]}, "positive"),
        ({"frequencies": np.ones((2, 2))}, r"expected \(K,\)"),
        ({"grid_shape": (4, 4)}, "grid_shape"),
        ({"points": np.zeros((5, 3)), "grid_shape": (2, 2, 2)}, "points has 5"),
        ({"points": [[0.0, 0.0, 0.0]]}, "coincides"),
    ],
)
def test_bad_construction(kwargs, message):
    kwargs = {"n_frequencies": 2, **kwargs}
    with pytest.raises(ValueError, match=message):
        NearFieldMIMO(**kwargs)


def test_bad_dtype_and_operands():
    with pytest.raises(TypeError, match="complex64 or complex128"):
        NearFieldMIMO(**SMALL, dtype=np.float64)
    A = NearFieldMIMO(**SMALL)
    with pytest.raises(ValueError, match=r"NearFieldMIMO.forward: operand has shape \(3,\)"):
        A @ np.zeros(3)
    with pytest.raises(ValueError, match="backproject"):
        A.H @ np.zeros((2, 12, 13))
    with pytest.raises(TypeError, match="numeric"):
        A @ np.array(["a"] * A.shape[1])


def test_cuda_module_imports_without_cupy():
    module = importlib.import_module("physnet.operators._cuda.radar")
    source = module._SOURCE.replace("{suffix}", "c64")
    assert "physnet_nfmimo_adjoint_c64" in source and "physnet_nfmimo_forward_c64" in source


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [np.complex128, np.complex64])
def test_cupy_kernels_match_numpy(dtype, rng):
    cupy = pytest.importorskip("cupy")
    A = NearFieldMIMO(n_frequencies=4, grid_shape=(6, 7, 9), dtype=dtype)
    x = complex_normal(rng, (3, A.shape[1]), dtype)
    w = complex_normal(rng, (3, *A.measurement_shape), dtype)
    y = A @ cupy.asarray(x)
    back = A.H @ cupy.asarray(w)
    assert isinstance(y, cupy.ndarray) and y.dtype == dtype and back.dtype == dtype
    tol = 1e-10 if dtype == np.complex128 else 1e-4
    expected_y, expected_back = A @ x, A.H @ w
    assert np.linalg.norm(cupy.asnumpy(y) - expected_y) <= tol * np.linalg.norm(expected_y)
    assert np.linalg.norm(cupy.asnumpy(back) - expected_back) <= tol * np.linalg.norm(expected_back)
    assert dot_product_test(A, like=cupy.zeros(1), rtol=tol) <= tol


def test_normal_operator_commutes_with_the_cross_arrays_symmetries():
    """``A^H A`` of the cross array commutes with the 180° rotation and both transposes
    of the aperture plane, not with a single flip: the exact augmentations of
    ``(A^H y, |x|)`` pairs (``solvers/radar-deep2s/train-augment.toml``)."""
    import torch

    from physnet.training.augment import apply_symmetry

    A = NearFieldMIMO(n_frequencies=5, grid_shape=(9, 9, 7), dtype=np.complex128)
    rng = np.random.default_rng(0)
    x = rng.standard_normal(A.grid_shape) + 1j * rng.standard_normal(A.grid_shape)

    def normal(v):
        return (A.H @ (A @ v.reshape(-1))).reshape(A.grid_shape)

    def move(v, name):
        return apply_symmetry(torch.from_numpy(v)[None, None], name)[0, 0].numpy()

    scale = np.abs(normal(x)).max()
    for name in ("rot180_01", "transpose_01", "antitranspose_01"):
        np.testing.assert_allclose(normal(move(x, name)), move(normal(x), name), atol=1e-12 * scale)
    assert np.abs(normal(move(x, "flip0")) - move(normal(x), "flip0")).max() > 1e-3 * scale
