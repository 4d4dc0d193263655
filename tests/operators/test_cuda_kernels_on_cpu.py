"""The CuPy RawKernels, compiled as C++ and run on the CPU, against NumPy float64 references.

Every kernel of ``physnet.operators._cuda`` runs through the CuPy path's own launch code
(``poisson.matvec``, ``radar.forward`` / ``radar.adjoint``) with ``cupy`` replaced by
:mod:`cuda_emulation`, so a change to a kernel source or to its launch is tested on every
machine with g++. The index arithmetic of grids beyond ``2**31`` cells is checked on the
source, since such grids do not fit a test.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
from cuda_emulation import (
    COMPILER,
    EmulatedCuPy,
    EmulatedModule,
    compile_kernels,
    kernel_names,
    to_device,
)

from physnet import backend
from physnet.operators import AIR, FLUID, SOLID, GridPoisson, NearFieldMIMO
from physnet.operators._cuda import poisson as cuda_poisson
from physnet.operators._cuda import radar as cuda_radar
from physnet.operators.radar import SPEED_OF_LIGHT

REAL = ("float32", "float64")
COMPLEX = ("complex64", "complex128")
TOLERANCE = {"float32": 1e-6, "float64": 1e-14, "complex64": 1e-4, "complex128": 1e-12}
INT32_MAX = 2**31 - 1


@pytest.fixture(scope="session")
def libraries(tmp_path_factory):
    if COMPILER is None:
        pytest.skip("g++ not found: the CPU emulation of the CUDA kernels needs it")
    directory = tmp_path_factory.mktemp("cuda_emulation")
    return {
        "poisson": compile_kernels([cuda_poisson.kernel_source(d) for d in REAL], directory),
        "radar": compile_kernels([cuda_radar.kernel_source(d) for d in COMPLEX], directory),
    }


@pytest.fixture
def emulated(libraries, monkeypatch):
    """CuPy replaced by the emulation, for the launchers of ``physnet.operators._cuda``."""
    monkeypatch.setattr(backend, "require_cupy", EmulatedCuPy)
    for name, module in (("poisson", cuda_poisson), ("radar", cuda_radar)):
        library = EmulatedModule(libraries[name])
        monkeypatch.setattr(module, "_module", lambda device_id, dtype_name, m=library: m)


def relative_error(result, reference) -> float:
    return float(np.max(np.abs(result - reference)) / np.max(np.abs(reference)))


def test_every_kernel_is_covered():
    names = {n for d in REAL for n in kernel_names(cuda_poisson.kernel_source(d))}
    names |= {n for d in COMPLEX for n in kernel_names(cuda_radar.kernel_source(d))}
    assert names == {
        f"physnet_poisson_matvec_{kind}{suffix}"
        for kind in ("", "variable_")
        for suffix in ("f32", "f64")
    } | {
        f"physnet_nfmimo_{kind}_{suffix}"
        for kind in ("forward", "adjoint")
        for suffix in ("c64", "c128")
    }


# --- Poisson --------------------------------------------------------------------------


def random_flags(shape, rng):
    draw = rng.random(shape)
    flags = np.full(shape, FLUID, dtype=np.int8)
    flags[draw < 0.3] = AIR
    flags[draw < 0.2] = SOLID
    flags.flat[0] = FLUID
    return flags


POISSON_GRIDS = {
    "2d-odd": ((5, 7), (0.7, 1.3)),
    "3d-odd": ((3, 4, 5), (0.5, 1.0, 2.0)),
    "3d-several-blocks": ((7, 6, 9), (1.0, 0.8, 1.1)),  # n > 256: a partial last block
}


@pytest.mark.parametrize("dtype", REAL)
@pytest.mark.parametrize("coefficients", [None, "cell", "face"])
@pytest.mark.parametrize("grid", POISSON_GRIDS)
def test_poisson_matvec(emulated, grid, coefficients, dtype):
    shape, h = POISSON_GRIDS[grid]
    rng = np.random.default_rng(sum(shape))
    flags = random_flags(shape, rng)
    if coefficients == "cell":
        coefficients = rng.uniform(0.5, 2.0, shape)
    elif coefficients == "face":
        face_shapes = [tuple(s - (a == d) for a, s in enumerate(shape)) for d in range(len(shape))]
        coefficients = [rng.uniform(0.5, 2.0, s) for s in face_shapes]
    op = GridPoisson(flags, h=h, coefficients=coefficients, dtype=dtype)
    reference_matrix = GridPoisson(flags, h=h, coefficients=coefficients).to_csr()
    assert reference_matrix.dtype == np.float64
    for _ in range(2):  # batch of two columns, as CuPy's matmat applies them
        x = rng.standard_normal(op.n).astype(dtype)
        y = op._apply_cupy(to_device(x))
        assert y.dtype == dtype and y.shape == (op.n,)
        reference = reference_matrix @ x.astype(np.float64)
        assert relative_error(y, reference) < TOLERANCE[dtype]


@pytest.mark.parametrize("dtype", REAL)
def test_poisson_complex_input_applies_real_and_imaginary_parts(emulated, dtype):
    rng = np.random.default_rng(3)
    flags = random_flags((4, 3, 5), rng)
    op = GridPoisson(flags, h=(1.0, 0.5, 2.0), dtype=dtype)
    complex_dtype = np.result_type(dtype, np.complex64)
    x = (rng.standard_normal(op.n) + 1j * rng.standard_normal(op.n)).astype(complex_dtype)
    y = op._apply_cupy(to_device(x))
    reference = GridPoisson(flags, h=(1.0, 0.5, 2.0)).to_csr() @ x.astype(np.complex128)
    assert relative_error(y, reference) < TOLERANCE[dtype]


# --- near-field MIMO ------------------------------------------------------------------


RADAR_CASES = {  # (transmitters, receivers, frequencies, voxels), batch
    "fewer-voxels-than-threads": ((2, 3, 2, 37), 1),
    "fewer-voxels-than-threads-batch-3": ((2, 3, 2, 37), 3),
    "voxels-over-one-block": ((2, 3, 2, 301), 1),
    "voxels-over-one-block-batch-3": ((3, 2, 2, 301), 3),
    "max-receivers": ((1, cuda_radar.MAX_ANTENNAS, 1, 40), 1),
}


def geometry(rng, n_tx, n_rx, n_freq, n_points):
    transmitters = rng.uniform(-0.2, 0.2, (n_tx, 3)) * [1, 1, 0]
    receivers = rng.uniform(-0.2, 0.2, (n_rx, 3)) * [1, 1, 0]
    frequencies = np.sort(rng.uniform(3e9, 18e9, n_freq))
    points = rng.uniform([-0.1, -0.1, 0.3], [0.1, 0.1, 0.7], (n_points, 3))
    return transmitters, receivers, frequencies, points


def born_matrix(transmitters, receivers, frequencies, points) -> np.ndarray:
    """``A[(k, t, r), v] = exp(-j k (d_t + d_r)) / (4 pi d_t d_r)``, in float64."""
    d_t = np.linalg.norm(points[None, :, :] - transmitters[:, None, :], axis=-1)  # (T, N)
    d_r = np.linalg.norm(points[None, :, :] - receivers[:, None, :], axis=-1)  # (R, N)
    k = 2 * np.pi * frequencies / SPEED_OF_LIGHT
    d = d_t[None, :, None, :] + d_r[None, None, :, :]
    a = np.exp(-1j * k[:, None, None, None] * d) / (
        4 * np.pi * d_t[None, :, None] * d_r[None, None]
    )
    return a.reshape(-1, points.shape[0])


@pytest.mark.parametrize("dtype", COMPLEX)
@pytest.mark.parametrize("case", RADAR_CASES)
def test_radar_forward_and_adjoint(emulated, case, dtype):
    sizes, batch = RADAR_CASES[case]
    rng = np.random.default_rng(len(case))
    positions = geometry(rng, *sizes)
    op = NearFieldMIMO(*positions, dtype=dtype)
    matrix = born_matrix(*positions)
    m, n = matrix.shape
    x = (rng.standard_normal((batch, n)) + 1j * rng.standard_normal((batch, n))).astype(dtype)
    y = (rng.standard_normal((batch, m)) + 1j * rng.standard_normal((batch, m))).astype(dtype)
    data = op._cuda_data(to_device(x), np.dtype(dtype))

    forward = cuda_radar.forward(to_device(x), data)
    assert forward.dtype == dtype and forward.shape == (batch, m)
    assert relative_error(forward, x.astype(np.complex128) @ matrix.T) < TOLERANCE[dtype]

    adjoint = cuda_radar.adjoint(to_device(y), data)
    assert adjoint.dtype == dtype and adjoint.shape == (batch, n)
    assert relative_error(adjoint, y.astype(np.complex128) @ matrix.conj()) < TOLERANCE[dtype]


def test_forward_reduction_is_independent_of_thread_order(libraries, monkeypatch):
    """A missing ``__syncthreads`` would make the two schedules differ."""
    rng = np.random.default_rng(7)
    positions = geometry(rng, 2, 3, 2, 301)
    op = NearFieldMIMO(*positions, dtype=np.complex128)
    x = to_device((rng.standard_normal((2, 301)) + 1j).astype(np.complex128))
    monkeypatch.setattr(backend, "require_cupy", EmulatedCuPy)
    results = []
    for reverse in (False, True):
        module = EmulatedModule(libraries["radar"], reverse=reverse)
        monkeypatch.setattr(cuda_radar, "_module", lambda device_id, dtype_name, m=module: m)
        results.append(cuda_radar.forward(x, op._cuda_data(x, np.dtype(np.complex128))))
    np.testing.assert_array_equal(results[0], results[1])


def test_launch_rejects_arguments_of_the_wrong_size(libraries):
    kernel = EmulatedModule(libraries["poisson"]).get_function("physnet_poisson_matvec_f64")
    x = to_device(np.zeros(4))
    cells = to_device(np.arange(4, dtype=np.int64))
    numbers = to_device(np.full(3 * 3 * 6, -1, dtype=np.int32))
    args = [x, x, cells, numbers, x, 1.0, 1.0, 1.0, np.int64(4), np.int32(1), np.int32(1)]
    with pytest.raises(TypeError, match="argument 11"):
        kernel((1,), (256,), (*args, np.int64(4)))  # nz as long long, not int
    with pytest.raises(TypeError, match="number of arguments"):
        kernel((1,), (256,), tuple(args))


# --- index arithmetic beyond 2**31 ----------------------------------------------------


def declarations(source: str, kernel: str) -> dict[str, str]:
    """``name -> type`` of the ``const`` locals of one kernel."""
    body = source.split(f"void {kernel}(")[1].split("__global__")[0]
    return {name: ctype for ctype, name in re.findall(r"const (long long|int) (\w+) =", body)}


@pytest.mark.parametrize("shape", [(256, 256, 256), (1024, 1024, 1024), (1290, 1291, 1292)])
@pytest.mark.parametrize(
    "kernel", ["physnet_poisson_matvec_f64", "physnet_poisson_matvec_variable_f64"]
)
def test_poisson_index_arithmetic_is_64_bit_where_it_exceeds_int32(shape, kernel):
    source = cuda_poisson.kernel_source("float64")
    nx, ny, nz = shape
    largest = {  # the largest value each index of the kernel takes on an all-fluid grid
        "k": nx * ny * nz - 1,
        "c": nx * ny * nz - 1,
        "r": nx * ny - 1,
        "stride0": (ny + 2) * (nz + 2),
        "p": (nx + 2) * (ny + 2) * (nz + 2) - 1,
        "f1": nx * (ny + 1) * nz - 1,
        "f2": nx * ny * (nz + 1) - 1,
        "w0": (nx + 1) * ny * nz - 1,  # c + ny * nz, formed in long long
    }
    types = declarations(source, kernel)
    for name, value in largest.items():
        if value > INT32_MAX and name in types:
            assert types[name] == "long long", (name, value)
    assert "(long long)blockIdx.x * blockDim.x" in source  # k, before the multiply
    assert "(long long)(ny + 2) * stride1" in source
    assert "c + (long long)ny * nz" in source
    assert (nx * ny * nz + 255) // 256 <= INT32_MAX  # the grid of blocks


def test_poisson_unknown_numbers_are_int32_so_matvec_refuses_more():
    """The padded number grid is ``int``: more than 2**31 - 1 unknowns cannot be numbered."""
    assert "const int* __restrict__ numbers" in cuda_poisson.kernel_source("float32")
    big = np.lib.stride_tricks.as_strided(np.zeros(1, np.float32), (INT32_MAX + 1,), (0,))
    with pytest.raises(ValueError, match="2147483647"):
        cuda_poisson.matvec(big, {})


@pytest.mark.parametrize("batch", [1, 64])
def test_radar_index_arithmetic_is_64_bit_where_it_exceeds_int32(batch):
    """At 512**3 voxels, 15 frequencies and 16 x 16 antennas."""
    n_voxels, n_freq, n_tx, n_rx = 512**3, 15, 16, 16
    m = n_freq * n_tx * n_rx
    source = cuda_radar.kernel_source("complex64")
    assert batch * n_voxels > INT32_MAX or batch == 1
    for offset in (
        "(long long)blockIdx.x * blockDim.x + threadIdx.x",
        "index >= (long long)batch * n_voxels",
        "y + (long long)b * m",
        "x + (long long)b * n_voxels",
        "dr[(long long)r * n_voxels + v]",
        "dt[(long long)t * n_voxels + v]",
        "((long long)k * n_tx + t) * n_rx",
        "const long long m = (long long)n_freq * n_tx * n_rx",
    ):
        assert offset in source, offset
    # b, v, r, t and k are int: each is below its int32 count.
    assert max(batch, n_voxels, n_freq, n_tx, n_rx) <= INT32_MAX
    # The forward kernel has one block per measurement: the grid limit is 2**31 - 1.
    assert batch * m <= INT32_MAX
