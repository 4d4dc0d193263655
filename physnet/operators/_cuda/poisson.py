"""CUDA kernels of the matrix-free grid Poisson apply (CuPy path of GridPoisson).

One thread per unknown. Each thread finds its cell from ``cells`` (the flat grid
index of every unknown, C order), reads its neighbours' unknown numbers from the
padded number grid (``-1`` for non-fluid cells, one layer of ``-1`` around the grid,
so no bounds checks) and subtracts ``weight * x[neighbour]`` from the precomputed
``diagonal[k] * x[k]``. A 2-D grid ``(n0, n1)`` is passed as the 3-D grid ``(n0, 1, n1)``.

Face weights of the variable-coefficient kernel are stored with the two boundary
faces included (zero) along their own axis: ``w0`` has shape ``(nx + 1, ny, nz)``,
``w1`` ``(nx, ny + 1, nz)``, ``w2`` ``(nx, ny, nz + 1)``, so cell ``(i, j, l)`` has its
lower axis-0 face at ``w0[i, j, l]`` and its upper one at ``w0[i + 1, j, l]``.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from physnet import backend

__all__ = ["kernel", "kernel_source", "matvec"]

_SOURCE = r"""
extern "C" __global__ void physnet_poisson_matvec_{suffix}(
    const {T}* __restrict__ x, {T}* __restrict__ y,
    const long long* __restrict__ cells, const int* __restrict__ numbers,
    const {T}* __restrict__ diagonal,
    const {T} w0, const {T} w1, const {T} w2,
    const long long n, const int nx, const int ny, const int nz)
{
    const long long k = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (k >= n) return;
    const long long c = cells[k];
    const long long l = c % nz;
    const long long r = c / nz;
    const long long j = r % ny;
    const long long i = r / ny;
    const long long stride1 = nz + 2;  /* strides of the padded number grid */
    const long long stride0 = (long long)(ny + 2) * stride1;
    const long long p = (i + 1) * stride0 + (j + 1) * stride1 + (l + 1);
    {T} s = diagonal[k] * x[k];
    int a;
    a = numbers[p - stride0]; if (a >= 0) s -= w0 * x[a];
    a = numbers[p + stride0]; if (a >= 0) s -= w0 * x[a];
    a = numbers[p - stride1]; if (a >= 0) s -= w1 * x[a];
    a = numbers[p + stride1]; if (a >= 0) s -= w1 * x[a];
    a = numbers[p - 1];  if (a >= 0) s -= w2 * x[a];
    a = numbers[p + 1];  if (a >= 0) s -= w2 * x[a];
    y[k] = s;
}

extern "C" __global__ void physnet_poisson_matvec_variable_{suffix}(
    const {T}* __restrict__ x, {T}* __restrict__ y,
    const long long* __restrict__ cells, const int* __restrict__ numbers,
    const {T}* __restrict__ diagonal,
    const {T}* __restrict__ w0, const {T}* __restrict__ w1, const {T}* __restrict__ w2,
    const long long n, const int nx, const int ny, const int nz)
{
    const long long k = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (k >= n) return;
    const long long c = cells[k];
    const long long l = c % nz;
    const long long r = c / nz;
    const long long j = r % ny;
    const long long i = r / ny;
    const long long stride1 = nz + 2;  /* strides of the padded number grid */
    const long long stride0 = (long long)(ny + 2) * stride1;
    const long long p = (i + 1) * stride0 + (j + 1) * stride1 + (l + 1);
    const long long f1 = (i * (ny + 1) + j) * nz + l;
    const long long f2 = r * (nz + 1) + l;
    {T} s = diagonal[k] * x[k];
    int a;
    a = numbers[p - stride0]; if (a >= 0) s -= w0[c] * x[a];
    a = numbers[p + stride0]; if (a >= 0) s -= w0[c + (long long)ny * nz] * x[a];
    a = numbers[p - stride1]; if (a >= 0) s -= w1[f1] * x[a];
    a = numbers[p + stride1]; if (a >= 0) s -= w1[f1 + nz] * x[a];
    a = numbers[p - 1];  if (a >= 0) s -= w2[f2] * x[a];
    a = numbers[p + 1];  if (a >= 0) s -= w2[f2 + 1] * x[a];
    y[k] = s;
}
"""

_TYPES = {"float32": ("float", "f32"), "float64": ("double", "f64")}
_THREADS = 256


def kernel_source(dtype: Any) -> str:
    """The CUDA source compiled for a real dtype (the CPU emulation tests compile it too)."""
    ctype, suffix = _TYPES[np.dtype(dtype).name]
    return _SOURCE.replace("{T}", ctype).replace("{suffix}", suffix)


@functools.cache
def _module(device_id: int, dtype_name: str) -> Any:
    cupy = backend.require_cupy()
    with cupy.cuda.Device(device_id):
        module = cupy.RawModule(code=kernel_source(dtype_name), options=("--std=c++11",))
        module.compile()
    return module


def kernel(device_id: int, dtype: Any, variable: bool) -> Any:
    """The compiled matvec kernel for a device and a real dtype (compiled once, then cached)."""
    dtype_name = np.dtype(dtype).name
    _, suffix = _TYPES[dtype_name]
    kind = "variable_" if variable else ""
    name = f"physnet_poisson_matvec_{kind}{suffix}"
    return _module(device_id, dtype_name).get_function(name)


def matvec(x: Any, data: dict[str, Any]) -> Any:
    """``A @ x`` for a real, contiguous 1-D CuPy array ``x`` of the dtype of ``data``.

    ``data`` holds the device arrays GridPoisson prepared for this device and dtype:
    ``cells``, ``numbers``, ``diagonal``, ``grid_shape`` (3-D) and either
    ``axis_weights`` (three numbers) or ``face_weights`` (three arrays).
    """
    n = int(x.shape[0])
    if n > np.iinfo(np.int32).max:  # the padded number grid holds int32 unknown numbers
        raise ValueError(
            f"GridPoisson: the CUDA apply numbers at most {np.iinfo(np.int32).max} unknowns "
            f"(int32), got {n}; apply the operator to torch tensors instead"
        )
    cupy = backend.require_cupy()
    dtype = np.dtype(x.dtype)
    y = cupy.empty_like(x)
    if n == 0:
        return y
    nx, ny, nz = data["grid_shape"]
    variable = data.get("face_weights") is not None
    if variable:
        weights = tuple(data["face_weights"])
    else:
        weights = tuple(dtype.type(w) for w in data["axis_weights"])
    function = kernel(x.device.id, dtype, variable)
    blocks = (n + _THREADS - 1) // _THREADS
    with cupy.cuda.Device(x.device.id):
        function(
            (blocks,),
            (_THREADS,),
            (
                x,
                y,
                data["cells"],
                data["numbers"],
                data["diagonal"],
                *weights,
                np.int64(n),
                np.int32(nx),
                np.int32(ny),
                np.int32(nz),
            ),
        )
    return y
