"""CUDA kernels of the near-field MIMO operator (CuPy path of NearFieldMIMO).

The phases are generated in registers from the distance tables, so the device holds
only ``d_vt`` ``(T, N)``, ``d_vr`` ``(R, N)`` and the wavenumbers (about 3 MB for the
reference setting) instead of the 0.5-1.5 GB dense operator.

``physnet_nfmimo_adjoint_{c64,c128}``
    One thread per (batch item, voxel): ``x[b, v] = sum_k sum_r conj(b_kvr) sum_t
    conj(a_kvt) y[b, k, t, r]``; the receiver factors of one frequency are kept in a local
    array (at most ``MAX_ANTENNAS`` receivers), the transmitter factors are generated
    once per (k, t).
``physnet_nfmimo_forward_{c64,c128}``
    One block per (batch item, measurement ``(k, t, r)``): the threads stride over the
    voxels, each accumulating ``x[b, v] a_kvt b_kvr``, and the block reduces in shared
    memory.

Complex arrays are read as interleaved (real, imaginary) pairs (``float2`` / ``double2``).
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from physnet import backend

__all__ = ["MAX_ANTENNAS", "adjoint", "forward", "kernel", "kernel_source"]

MAX_ANTENNAS = 256
_THREADS = 256

_SOURCE = r"""
#define MAX_ANTENNAS 256
#define FOUR_PI 12.566370614359172

extern "C" __global__ void physnet_nfmimo_adjoint_{suffix}(
    const {C}* __restrict__ y, {C}* __restrict__ x,
    const {R}* __restrict__ dt, const {R}* __restrict__ dr,
    const {R}* __restrict__ wavenumbers,
    const int batch, const int n_voxels, const int n_freq, const int n_tx, const int n_rx)
{
    const long long index = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (index >= (long long)batch * n_voxels) return;
    const int b = (int)(index / n_voxels);
    const int v = (int)(index % n_voxels);
    const long long m = (long long)n_freq * n_tx * n_rx;
    const {C}* yb = y + (long long)b * m;
    {R} br_re[MAX_ANTENNAS], br_im[MAX_ANTENNAS];
    {R} acc_re = 0, acc_im = 0;
    for (int k = 0; k < n_freq; ++k) {
        const {R} kk = wavenumbers[k];
        for (int r = 0; r < n_rx; ++r) {
            const {R} d = dr[(long long)r * n_voxels + v];
            {R} s, c;
            {SINCOS}(kk * d, &s, &c);
            /* conj(exp(-j k d) / d) = (cos + j sin) / d */
            br_re[r] = c / d;
            br_im[r] = s / d;
        }
        for (int t = 0; t < n_tx; ++t) {
            const {R} d = dt[(long long)t * n_voxels + v];
            {R} s, c;
            {SINCOS}(kk * d, &s, &c);
            const {R} at_re = c / (({R})FOUR_PI * d), at_im = s / (({R})FOUR_PI * d);
            const {C}* row = yb + ((long long)k * n_tx + t) * n_rx;
            {R} w_re = 0, w_im = 0;
            for (int r = 0; r < n_rx; ++r) {
                const {C} value = row[r];
                w_re += br_re[r] * value.x - br_im[r] * value.y;
                w_im += br_re[r] * value.y + br_im[r] * value.x;
            }
            acc_re += at_re * w_re - at_im * w_im;
            acc_im += at_re * w_im + at_im * w_re;
        }
    }
    {C} out;
    out.x = acc_re;
    out.y = acc_im;
    x[index] = out;
}

extern "C" __global__ void physnet_nfmimo_forward_{suffix}(
    const {C}* __restrict__ x, {C}* __restrict__ y,
    const {R}* __restrict__ dt, const {R}* __restrict__ dr,
    const {R}* __restrict__ wavenumbers,
    const int batch, const int n_voxels, const int n_freq, const int n_tx, const int n_rx)
{
    __shared__ {R} sum_re[256];
    __shared__ {R} sum_im[256];
    const long long m = (long long)n_freq * n_tx * n_rx;
    const long long measurement = blockIdx.x;   /* b * m + (k * T + t) * R + r */
    const int b = (int)(measurement / m);
    const long long within = measurement % m;
    const int r = (int)(within % n_rx);
    const int t = (int)((within / n_rx) % n_tx);
    const int k = (int)(within / ((long long)n_rx * n_tx));
    const {R} kk = wavenumbers[k];
    const {C}* xb = x + (long long)b * n_voxels;
    {R} acc_re = 0, acc_im = 0;
    for (int v = threadIdx.x; v < n_voxels; v += blockDim.x) {
        const {R} d1 = dt[(long long)t * n_voxels + v];
        const {R} d2 = dr[(long long)r * n_voxels + v];
        {R} s, c;
        {SINCOS}(kk * (d1 + d2), &s, &c);
        const {R} amplitude = ({R})1 / (({R})FOUR_PI * d1 * d2);
        /* exp(-j k (d1 + d2)) = cos - j sin */
        const {R} a_re = c * amplitude, a_im = -s * amplitude;
        const {C} value = xb[v];
        acc_re += a_re * value.x - a_im * value.y;
        acc_im += a_re * value.y + a_im * value.x;
    }
    sum_re[threadIdx.x] = acc_re;
    sum_im[threadIdx.x] = acc_im;
    __syncthreads();
    for (int stride = blockDim.x / 2; stride > 0; stride >>= 1) {
        if (threadIdx.x < stride) {
            sum_re[threadIdx.x] += sum_re[threadIdx.x + stride];
            sum_im[threadIdx.x] += sum_im[threadIdx.x + stride];
        }
        __syncthreads();
    }
    if (threadIdx.x == 0) {
        {C} out;
        out.x = sum_re[0];
        out.y = sum_im[0];
        y[measurement] = out;
    }
}
"""

_TYPES = {
    "complex64": ("float2", "float", "sincosf", "c64"),
    "complex128": ("double2", "double", "sincos", "c128"),
}


def kernel_source(dtype: Any) -> str:
    """The CUDA source compiled for a complex dtype (the CPU emulation tests compile it too)."""
    complex_type, real_type, sincos, suffix = _TYPES[np.dtype(dtype).name]
    return (
        _SOURCE.replace("{C}", complex_type)
        .replace("{R}", real_type)
        .replace("{SINCOS}", sincos)
        .replace("{suffix}", suffix)
    )


@functools.cache
def _module(device_id: int, dtype_name: str) -> Any:
    cupy = backend.require_cupy()
    with cupy.cuda.Device(device_id):
        module = cupy.RawModule(code=kernel_source(dtype_name), options=("--std=c++11",))
        module.compile()
    return module


def kernel(device_id: int, dtype: Any, adjoint: bool) -> Any:
    """The compiled forward or adjoint kernel for a device and a complex dtype (cached)."""
    dtype_name = np.dtype(dtype).name
    suffix = _TYPES[dtype_name][3]
    name = f"physnet_nfmimo_{'adjoint' if adjoint else 'forward'}_{suffix}"
    return _module(device_id, dtype_name).get_function(name)


def _launch(x: Any, data: dict[str, Any], adjoint: bool) -> Any:
    cupy = backend.require_cupy()
    dtype = np.dtype(data["dtype"])
    n_freq, n_tx, n_rx = data["measurement_shape"]
    n_voxels = int(data["n_voxels"])
    if n_rx > MAX_ANTENNAS:
        raise ValueError(
            f"NearFieldMIMO: the CUDA adjoint supports at most {MAX_ANTENNAS} receivers, "
            f"got {n_rx}; apply the operator to torch tensors instead"
        )
    with cupy.cuda.Device(x.device.id):
        x = cupy.ascontiguousarray(x.astype(dtype, copy=False))
        batch = int(x.shape[0])
        m = n_freq * n_tx * n_rx
        function = kernel(x.device.id, dtype, adjoint)
        arguments = (
            data["transmitter_distances"],
            data["receiver_distances"],
            data["wavenumbers"],
            np.int32(batch),
            np.int32(n_voxels),
            np.int32(n_freq),
            np.int32(n_tx),
            np.int32(n_rx),
        )
        if adjoint:
            out = cupy.empty((batch, n_voxels), dtype=dtype)
            blocks = (batch * n_voxels + _THREADS - 1) // _THREADS
        else:
            out = cupy.empty((batch, m), dtype=dtype)
            blocks = batch * m
        if blocks > 0:
            function((blocks,), (_THREADS,), (x, out, *arguments))
    return out


def forward(x: Any, data: dict[str, Any]) -> Any:
    """``A x`` for a ``(B, N)`` CuPy array; ``data`` from ``NearFieldMIMO._cuda_data``."""
    return _launch(x, data, adjoint=False)


def adjoint(y: Any, data: dict[str, Any]) -> Any:
    """``A^H y`` for a ``(B, K T R)`` CuPy array."""
    return _launch(y, data, adjoint=True)
