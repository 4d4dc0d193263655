"""GridPoisson: assembly against independent references, every backend against to_csr()."""

from __future__ import annotations

import importlib
import itertools

import numpy as np
import pytest
import scipy.sparse as sp

from physnet.operators import AIR, FLUID, SOLID, GridPoisson
from physnet.testing import dot_product_test, symmetry_test

TOLERANCE = {np.float64: 1e-12, np.float32: 1e-5}


# --- scenes and an independent reference ------------------------------------------------


def random_flags(shape, rng, solid=0.2, air=0.1):
    """Random flags with at least one fluid cell."""
    draw = rng.random(shape)
    flags = np.full(shape, FLUID, dtype=np.int32)
    flags[draw < solid + air] = AIR
    flags[draw < solid] = SOLID
    flags.flat[0] = FLUID
    return flags


def face_shapes(shape):
    return [tuple(s - 1 if a == d else s for a, s in enumerate(shape)) for d in range(len(shape))]


def make_coefficients(kind, shape, rng):
    if kind is None:
        return None
    if kind == "cell":
        return rng.uniform(0.5, 2.0, shape)
    return [rng.uniform(0.5, 2.0, s) for s in face_shapes(shape)]


def explicit_matrix(flags, h, coefficients):
    """Dense reference assembled cell by cell, with the face rule written out directly."""
    flags = np.asarray(flags)
    ndim = flags.ndim
    h = (h,) * ndim if np.isscalar(h) else tuple(h)
    cells = [c for c in itertools.product(*map(range, flags.shape)) if flags[c] == FLUID]
    number = {c: k for k, c in enumerate(cells)}
    matrix = np.zeros((len(cells), len(cells)))

    def face_coefficient(lower_cell, axis):
        if coefficients is None:
            return 1.0
        if isinstance(coefficients, np.ndarray):
            upper_cell = list(lower_cell)
            upper_cell[axis] += 1
            return 0.5 * (coefficients[lower_cell] + coefficients[tuple(upper_cell)])
        return coefficients[axis][lower_cell]

    for cell in cells:
        row = number[cell]
        for axis in range(ndim):
            for step in (-1, 1):
                neighbour = list(cell)
                neighbour[axis] += step
                neighbour = tuple(neighbour)
                if not 0 <= neighbour[axis] < flags.shape[axis] or flags[neighbour] == SOLID:
                    continue
                lower = cell if step == 1 else neighbour
                weight = face_coefficient(lower, axis) / h[axis] ** 2
                matrix[row, row] += weight
                if flags[neighbour] == FLUID:
                    matrix[row, number[neighbour]] -= weight
    return matrix


SCENES = [
    pytest.param((7, 6), 1.0, id="2d"),
    pytest.param((5, 4, 6), 1.0, id="3d"),
    pytest.param((6, 5), (0.5, 2.0), id="2d-anisotropic"),
    pytest.param((4, 6, 5), (1.0, 0.5, 0.25), id="3d-anisotropic"),
]
COEFFICIENTS = [None, "cell", "face"]


# --- assembly ---------------------------------------------------------------------------


@pytest.mark.parametrize("coefficients", COEFFICIENTS)
@pytest.mark.parametrize(("shape", "h"), SCENES)
def test_to_csr_matches_cell_by_cell_assembly(shape, h, coefficients, rng):
    flags = random_flags(shape, rng)
    a = make_coefficients(coefficients, shape, rng)
    A = GridPoisson(flags, h=h, coefficients=a)
    expected = explicit_matrix(flags, h, a)
    np.testing.assert_allclose(A.to_csr().toarray(), expected, rtol=1e-14, atol=0)
    np.testing.assert_allclose(A.diagonal(), np.diag(expected), rtol=1e-14)


def _neumann_1d(n, dirichlet_below=False):
    """1-D second difference with walls at both ends (or air below the first cell)."""
    main = np.full(n, 2.0)
    main[-1] = 1.0
    if not dirichlet_below:
        main[0] = 1.0
    if n == 1:
        main[:] = 1.0 if dirichlet_below else 0.0
    return sp.diags([-np.ones(n - 1), main, -np.ones(n - 1)], [-1, 0, 1])


def test_to_csr_matches_kronecker_laplacian():
    shape, h = (6, 5, 4), (0.5, 1.0, 0.25)
    flags = np.zeros((shape[0] + 1, *shape[1:]), dtype=np.int8)
    flags[0] = AIR
    A = GridPoisson(flags, h=h)
    eye = [sp.identity(n) for n in shape]
    one_d = [
        _neumann_1d(shape[0], dirichlet_below=True),
        _neumann_1d(shape[1]),
        _neumann_1d(shape[2]),
    ]
    expected = (
        sp.kron(sp.kron(one_d[0], eye[1]), eye[2]) / h[0] ** 2
        + sp.kron(sp.kron(eye[0], one_d[1]), eye[2]) / h[1] ** 2
        + sp.kron(sp.kron(eye[0], eye[1]), one_d[2]) / h[2] ** 2
    )
    assert abs(A.to_csr() - expected).max() < 1e-12


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_to_csr_is_canonical_and_symmetric(dtype, rng):
    flags = random_flags((9, 8, 7), rng)
    A = GridPoisson(
        flags, h=(1.0, 0.5, 2.0), coefficients=rng.uniform(1, 2, flags.shape), dtype=dtype
    )
    matrix = A.to_csr()
    assert isinstance(matrix, sp.csr_matrix)
    assert matrix.dtype == dtype and matrix.shape == A.shape == (A.n, A.n)
    assert A.n == int(np.count_nonzero(flags == FLUID))
    copy = matrix.copy()
    copy.sort_indices()
    copy.sum_duplicates()
    assert np.array_equal(copy.indices, matrix.indices) and copy.nnz == matrix.nnz
    assert abs(matrix - matrix.T).max() == 0
    assert np.all(np.diff(matrix.indptr) > 0)  # no empty rows
    np.testing.assert_array_equal(matrix.diagonal(), A.diagonal())


def test_positive_definite_when_air_is_reachable(rng):
    flags = np.zeros((5, 4, 3), dtype=np.int8)
    flags[1:4, 1:3, 1] = SOLID
    flags[0, 0, 0] = AIR
    A = GridPoisson(flags, coefficients=rng.uniform(0.5, 2.0, flags.shape))
    eigenvalues = np.linalg.eigvalsh(A.to_csr().toarray())
    assert eigenvalues.min() > 1e-6


def test_null_space_of_pure_neumann_is_constant_per_component():
    flags = np.zeros((6, 7), dtype=np.int8)
    flags[:, 3] = SOLID  # two closed boxes
    A = GridPoisson(flags, h=0.3)
    dense = A.to_csr().toarray()
    eigenvalues = np.linalg.eigvalsh(dense)
    assert np.sum(np.abs(eigenvalues) < 1e-10) == 2
    assert eigenvalues.min() > -1e-10
    fluid = A.fluid_mask
    for columns in (slice(0, 3), slice(4, 7)):
        indicator = np.zeros(flags.shape)
        indicator[:, columns] = 1.0
        np.testing.assert_allclose(A @ indicator[fluid], 0.0, atol=1e-12)


def test_air_cell_in_coefficients_enters_face_mean():
    flags = np.array([[AIR, FLUID, SOLID]])
    A = GridPoisson(flags, coefficients=np.array([[3.0, 1.0, -5.0]]))  # the solid value is unused
    np.testing.assert_allclose(A.to_csr().toarray(), [[2.0]])


# --- matrix-free applies against to_csr -------------------------------------------------


def _relative_error(actual, expected):
    return np.linalg.norm(actual - expected) / np.linalg.norm(expected)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("coefficients", COEFFICIENTS)
@pytest.mark.parametrize(("shape", "h"), SCENES)
def test_matvec_matches_csr(xp, shape, h, coefficients, dtype, rng):
    flags = random_flags(shape, rng)
    A = GridPoisson(
        flags, h=h, coefficients=make_coefficients(coefficients, shape, rng), dtype=dtype
    )
    x = rng.standard_normal(A.n).astype(dtype)
    y = A @ xp.asarray(x)
    assert xp.is_own(y)
    assert tuple(y.shape) == (A.n,)
    result = xp.to_numpy(y)
    assert result.dtype == dtype
    expected = A.astype(np.float64).to_csr() @ x.astype(np.float64)
    assert _relative_error(result, expected) < TOLERANCE[dtype]


@pytest.mark.parametrize("coefficients", [None, "face"])
@pytest.mark.parametrize("shape", [(6, 9), (4, 5, 6)])
def test_matmat_matches_csr(xp, shape, coefficients, rng):
    flags = random_flags(shape, rng)
    A = GridPoisson(flags, coefficients=make_coefficients(coefficients, shape, rng))
    x = rng.standard_normal((A.n, 3))
    y = A @ xp.asarray(x)
    assert xp.is_own(y) and tuple(y.shape) == (A.n, 3)
    assert _relative_error(xp.to_numpy(y), A.to_csr() @ x) < 1e-12
    column = A @ xp.asarray(x[:, :1])
    assert tuple(column.shape) == (A.n, 1)
    assert _relative_error(xp.to_numpy(column), A.to_csr() @ x[:, :1]) < 1e-12


def test_matvec_matches_csr_at_64_cubed(rng):
    n = 64
    flags = np.zeros((n, n, n), dtype=np.int8)
    flags[:, :, -1] = AIR
    centre = np.indices(flags.shape) - n / 2
    flags[(centre**2).sum(axis=0) < (n / 6) ** 2] = SOLID
    A = GridPoisson(flags, h=1.0 / n)
    x = rng.standard_normal(A.n)
    assert _relative_error(A @ x, A.to_csr() @ x) < 1e-12


def test_result_dtype_follows_promotion(rng):
    flags = random_flags((5, 6), rng)
    A32 = GridPoisson(flags, dtype=np.float32)
    matrix = A32.astype(np.float64).to_csr()
    x = rng.standard_normal(A32.n)
    assert (A32 @ x).dtype == np.float64  # a float32 operator keeps float64 input in float64
    assert _relative_error(A32 @ x, matrix @ x) < 1e-12
    integers = np.arange(A32.n)
    assert (A32 @ integers).dtype == np.float64
    z = x + 1j * rng.standard_normal(A32.n)
    assert (A32 @ z).dtype == np.complex128
    assert _relative_error(A32 @ z, matrix @ z) < 1e-12


def test_complex_torch_input(rng):
    torch = pytest.importorskip("torch")
    flags = random_flags((5, 4, 3), rng)
    A = GridPoisson(flags, coefficients=make_coefficients("cell", flags.shape, rng))
    z = rng.standard_normal(A.n) + 1j * rng.standard_normal(A.n)
    y = A @ torch.from_numpy(z)
    assert y.dtype == torch.complex128
    assert _relative_error(y.numpy(), A.to_csr() @ z) < 1e-12


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("coefficients", COEFFICIENTS)
def test_dot_product_and_symmetry(xp, coefficients, dtype, rng):
    shape = (6, 5, 4)
    flags = random_flags(shape, rng)
    A = GridPoisson(
        flags,
        h=(1.0, 0.5, 0.7),
        coefficients=make_coefficients(coefficients, shape, rng),
        dtype=dtype,
    )
    like = xp.asarray(np.zeros(1, dtype=dtype))
    dot_product_test(A, like=like)
    symmetry_test(A, like=like)
    assert A.H is A


# --- grid <-> unknowns, dtype, autograd ----------------------------------------------------


def test_scatter_gather_round_trip(xp, rng):
    flags = random_flags((5, 6, 4), rng)
    A = GridPoisson(flags)
    x = rng.standard_normal(A.n)
    grid = A.scatter(xp.asarray(x), fill=-1.0)
    assert xp.is_own(grid) and tuple(grid.shape) == flags.shape
    on_host = xp.to_numpy(grid)
    np.testing.assert_array_equal(on_host[A.fluid_mask], x)
    assert np.all(on_host[~A.fluid_mask] == -1.0)
    back = A.gather(grid)
    assert xp.is_own(back)
    np.testing.assert_array_equal(xp.to_numpy(back), x)

    columns = rng.standard_normal((A.n, 2))
    grids = A.scatter(xp.asarray(columns))
    assert tuple(grids.shape) == (*flags.shape, 2)
    np.testing.assert_array_equal(xp.to_numpy(A.gather(grids)), columns)


def test_scatter_and_gather_reject_wrong_shapes(rng):
    A = GridPoisson(random_flags((4, 5), rng))
    with pytest.raises(ValueError, match=r"scatter: x has shape \(3,\)"):
        A.scatter(np.zeros(3))
    with pytest.raises(ValueError, match=r"gather: u has shape \(5, 4\), expected \(4, 5\)"):
        A.gather(np.zeros((5, 4)))


def test_attributes_and_astype(rng):
    flags = random_flags((4, 5, 6), rng)
    A = GridPoisson(flags, h=[0.5, 1.0, 2.0])
    assert A.grid_shape == (4, 5, 6) and A.ndim == 3 and A.h == (0.5, 1.0, 2.0)
    assert A.fluid_mask.dtype == bool and not A.fluid_mask.flags.writeable
    assert A.hermitian and A.dtype == np.float64 and not A.variable_coefficients
    B = A.astype(np.float32)
    assert B.dtype == np.float32 and A.dtype == np.float64 and B.n == A.n
    assert A.astype(np.float64) is A
    assert "GridPoisson on a 4x5x6 grid" in repr(A)


def test_torch_autograd(rng):
    torch = pytest.importorskip("torch")
    flags = random_flags((4, 3, 3), rng)
    A = GridPoisson(flags, coefficients=make_coefficients("face", flags.shape, rng))
    x = torch.randn(A.n, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda v: A @ v, (x,))
    batch = torch.randn(A.n, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda v: A @ v, (batch,))
    # A is symmetric, so the gradient of <y, A x> is A y.
    y = torch.from_numpy(rng.standard_normal(A.n))
    torch.vdot(y, A @ x).backward()
    np.testing.assert_allclose(x.grad.numpy(), A.to_csr() @ y.numpy(), rtol=1e-12)
    u = A.scatter(x)
    u.sum().backward()


def test_flags_from_torch(rng):
    torch = pytest.importorskip("torch")
    flags = random_flags((4, 5), rng)
    A = GridPoisson(torch.from_numpy(flags))
    assert abs(A.to_csr() - GridPoisson(flags).to_csr()).max() == 0


# --- errors -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "error", "match"),
    [
        (np.zeros((3, 3)), TypeError, "flags has dtype float64"),
        (np.zeros((3, 3), dtype=bool), TypeError, "flags has dtype bool"),
        (np.zeros((3, 3), dtype=object), TypeError, "flags has dtype object"),
        (np.zeros(5, dtype=np.int8), ValueError, r"flags has shape \(5,\)"),
        (np.zeros((2, 2, 2, 2), dtype=np.int8), ValueError, "expected a 2-D or 3-D grid"),
        (np.array([[0, 3], [-1, 7]]), ValueError, "flags holds the values -1, 3, 7"),
        (np.full((3, 3), SOLID), ValueError, "flags of shape .* has no fluid cell"),
    ],
)
def test_bad_flags(flags, error, match):
    with pytest.raises(error, match=match):
        GridPoisson(flags)


@pytest.mark.parametrize(
    ("h", "match"),
    [
        (0.0, "h=0.0"),
        (-1.0, "positive finite"),
        (np.nan, "positive finite"),
        ((1.0, 2.0, 3.0), r"h has shape \(3,\), expected a number or 2 spacings"),
        ((1.0, -2.0), "positive finite"),
        ("x", "h='x'"),
    ],
)
def test_bad_spacing(h, match):
    with pytest.raises(ValueError, match=match):
        GridPoisson(np.zeros((3, 4), dtype=np.int8), h=h)


def test_bad_coefficients():
    flags = np.zeros((3, 4), dtype=np.int8)
    flags[0, 0] = SOLID
    with pytest.raises(ValueError, match=r"coefficients has shape \(4, 3\), expected .*\(3, 4\)"):
        GridPoisson(flags, coefficients=np.ones((4, 3)))
    with pytest.raises(
        ValueError, match=r"coefficients\[1\] .* has shape \(3, 4\), expected \(3, 3\)"
    ):
        GridPoisson(flags, coefficients=[np.ones((2, 4)), np.ones((3, 4))])
    with pytest.raises(ValueError, match="coefficients is a sequence of 3 arrays"):
        GridPoisson(flags, coefficients=[np.ones((2, 4))] * 3)
    cell = np.ones((3, 4))
    cell[1, 1] = np.nan
    with pytest.raises(ValueError, match=r"coefficients .* NaN or Inf"):
        GridPoisson(flags, coefficients=cell)
    cell[1, 1] = -3.0
    with pytest.raises(ValueError, match=r"coefficients .* value -1 on a face"):
        GridPoisson(flags, coefficients=cell)
    with pytest.raises(TypeError, match=r"coefficients .* dtype complex128"):
        GridPoisson(flags, coefficients=np.ones((3, 4), dtype=complex))
    faces = [np.ones((2, 4)), np.ones((3, 3))]
    faces[1][0, 0] = 0.0  # the face next to the solid cell is unused: allowed
    GridPoisson(flags, coefficients=faces)
    faces[1][1, 0] = 0.0
    with pytest.raises(ValueError, match=r"coefficients\[1\] .* value 0 on a face"):
        GridPoisson(flags, coefficients=faces)


@pytest.mark.parametrize("dtype", [np.int64, np.complex128, np.float16, "not a dtype", None])
def test_bad_dtype(dtype):
    with pytest.raises(TypeError, match=r"dtype .* expected numpy.float32 or numpy.float64"):
        GridPoisson(np.zeros((3, 3), dtype=np.int8), dtype=dtype)


def test_bad_operand():
    A = GridPoisson(np.zeros((3, 3), dtype=np.int8))
    with pytest.raises(ValueError, match=r"GridPoisson.matvec: operand has shape \(8,\)"):
        A @ np.ones(8)
    with pytest.raises(TypeError, match=r"GridPoisson.matvec: operand has dtype bool"):
        A @ np.ones(9, dtype=bool)


# --- CUDA --------------------------------------------------------------------------------


def test_cuda_module_imports_without_cupy():
    module = importlib.import_module("physnet.operators._cuda.poisson")
    assert callable(module.matvec) and callable(module.kernel)
    assert "physnet_poisson_matvec_f64" in module._SOURCE.replace("{suffix}", "f64")


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("coefficients", COEFFICIENTS)
@pytest.mark.parametrize(("shape", "h"), SCENES)
def test_cupy_kernel_matches_cpu_reference(shape, h, coefficients, dtype, rng):
    cupy = pytest.importorskip("cupy")
    flags = random_flags(shape, rng)
    A = GridPoisson(
        flags, h=h, coefficients=make_coefficients(coefficients, shape, rng), dtype=dtype
    )
    x = rng.standard_normal((A.n, 2)).astype(dtype)
    y = A @ cupy.asarray(x)
    assert isinstance(y, cupy.ndarray) and y.dtype == dtype
    expected = A.astype(np.float64) @ x.astype(np.float64)
    assert _relative_error(cupy.asnumpy(y), expected) < TOLERANCE[dtype]
    grid = A.scatter(cupy.asarray(x[:, 0]))
    np.testing.assert_array_equal(cupy.asnumpy(A.gather(grid)), x[:, 0])


@pytest.mark.parametrize("coefficients", COEFFICIENTS)
@pytest.mark.parametrize("shape", [(1, 9), (9, 1), (6, 1, 5), (1, 1, 7), (2, 3, 1)])
def test_thin_grids(xp, shape, coefficients, rng):
    flags = random_flags(shape, rng)
    a = make_coefficients(coefficients, shape, rng)
    A = GridPoisson(flags, coefficients=a)
    np.testing.assert_allclose(A.to_csr().toarray(), explicit_matrix(flags, 1.0, a), rtol=1e-14)
    x = rng.standard_normal(A.n)
    expected = A.to_csr() @ x
    np.testing.assert_allclose(xp.to_numpy(A @ xp.asarray(x)), expected, rtol=1e-12, atol=1e-12)
