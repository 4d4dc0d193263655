"""Numba kernels of the near-field MIMO applies on NumPy arrays (private to
:mod:`physnet.operators.radar`).

Every kernel reads the factor tables as split real and imaginary planes with the voxels
last, ``a`` as ``(K, T, n)`` and ``b`` as ``(K, R, n)`` (float32 for complex64, float64 for
complex128), so that the innermost loops run over contiguous voxels and vectorise.

Two ways to apply the operator, chosen by the batch size in :mod:`physnet.operators.radar`:

**Fused** (:func:`adjoint_fused`, :func:`forward_fused`), for small batches. The adjoint
accumulates, per frequency and transmitter, ``sum_r b[k, r, v] y[k, t, r]`` for a block of
voxels (receivers four at a time, so that the partial sums are loaded and stored once per four
receivers rather than once per receiver, and four rows of ``b`` serve up to :data:`GROUP`
volumes while they are in L1) and then adds ``a[k, t, v]`` times it to the result;
the forward map weights ``a`` by ``x`` once per block and takes dot products with the ``b``
rows. No temporary grows with the batch.

**Tiles** (:func:`build_tiles`), for larger batches. For a chunk of voxels the kernel writes
the rows ``(k, t, r)`` of the dense operator, ``D[(k, t, r), v] = a[k, t, v] b[k, r, v]``, as
three real tiles ``Re D``, ``Im D`` and ``Re D + Im D``, and the caller multiplies the batch by
them with three real BLAS products (the 3M method: three real products instead of the four of
a complex one, :func:`physnet.operators.radar._NumpyCore`). Writing a tile costs one complex
product per entry, which the batch amortises; the tile stays in cache, so the products run at
the speed of BLAS on data it does not have to read from memory.
"""

from __future__ import annotations

import numba
import numpy as np

__all__ = ["adjoint_fused", "build_tiles", "forward_fused"]

# Reassociation lets the voxel reductions of the forward map vectorise and contraction fuses
# the multiply-adds; NaN and Inf keep their IEEE meaning (unlike fastmath=True).
_FASTMATH = {"reassoc", "contract"}

# The adjoint and the tiles have no reduction over voxels to vectorise: without reassociation
# their sums run in the order written, so the bits do not depend on how LLVM compiled them
# (with it, a fresh compile and a cached one were seen to round differently), at no cost in
# speed (adjoint at N_f = 15, 1 thread: 21.3 against 28.1 ms per volume alone, 16.1 against
# 16.4 for 8 volumes).
_CONTRACT = {"contract"}

BLOCK = 512
"""Voxels per block of the fused kernels (their partial sums stay in L1)."""

GROUP = 8
"""Volumes of a batch that the fused adjoint applies each read of a table row to."""


@numba.njit(parallel=True, cache=True, fastmath=_CONTRACT)
def adjoint_fused(ar, ai, br, bi, yr, yi, outr, outi):
    """``out[j, v] = sum_{k,t} a[k,t,v] sum_r b[k,r,v] y[j,k,t,r]``, no conjugation.

    ``y`` is ``(B, K, T, R)``, ``out`` is ``(B, n)``, all split into real and imaginary
    planes. The caller conjugates (``A^H y = conj(A_plain(conj y))``). Threads split the
    voxel blocks and the groups of ``GROUP`` volumes. Every volume goes through the same
    loops whatever its group, so its result does not depend on the batch.
    """
    n_frequencies, n_transmitters, n = ar.shape
    n_receivers = br.shape[1]
    batch = yr.shape[0]
    dtype = ar.dtype
    n_groups = (batch + GROUP - 1) // GROUP
    for item in numba.prange(((n + BLOCK - 1) // BLOCK) * n_groups):
        start = (item // n_groups) * BLOCK
        stop = min(n, start + BLOCK)
        width = stop - start
        first = (item % n_groups) * GROUP
        size = min(GROUP, batch - first)
        partial_r = np.empty((size, width), dtype)
        partial_i = np.empty((size, width), dtype)
        sum_r = np.zeros((size, width), dtype)
        sum_i = np.zeros((size, width), dtype)
        for k in range(n_frequencies):
            for t in range(n_transmitters):
                partial_r[:] = 0
                partial_i[:] = 0
                r = 0
                while r + 4 <= n_receivers:
                    b0r, b0i = br[k, r, start:stop], bi[k, r, start:stop]
                    b1r, b1i = br[k, r + 1, start:stop], bi[k, r + 1, start:stop]
                    b2r, b2i = br[k, r + 2, start:stop], bi[k, r + 2, start:stop]
                    b3r, b3i = br[k, r + 3, start:stop], bi[k, r + 3, start:stop]
                    for g in range(size):  # the four rows of b stay in L1 for the group
                        j = first + g
                        c0r, c0i = yr[j, k, t, r], yi[j, k, t, r]
                        c1r, c1i = yr[j, k, t, r + 1], yi[j, k, t, r + 1]
                        c2r, c2i = yr[j, k, t, r + 2], yi[j, k, t, r + 2]
                        c3r, c3i = yr[j, k, t, r + 3], yi[j, k, t, r + 3]
                        p_r, p_i = partial_r[g], partial_i[g]
                        for v in range(width):
                            p_r[v] += (
                                b0r[v] * c0r
                                - b0i[v] * c0i
                                + b1r[v] * c1r
                                - b1i[v] * c1i
                                + b2r[v] * c2r
                                - b2i[v] * c2i
                                + b3r[v] * c3r
                                - b3i[v] * c3i
                            )
                            p_i[v] += (
                                b0r[v] * c0i
                                + b0i[v] * c0r
                                + b1r[v] * c1i
                                + b1i[v] * c1r
                                + b2r[v] * c2i
                                + b2i[v] * c2r
                                + b3r[v] * c3i
                                + b3i[v] * c3r
                            )
                    r += 4
                while r < n_receivers:
                    b0r, b0i = br[k, r, start:stop], bi[k, r, start:stop]
                    for g in range(size):
                        j = first + g
                        cr, ci = yr[j, k, t, r], yi[j, k, t, r]
                        p_r, p_i = partial_r[g], partial_i[g]
                        for v in range(width):
                            p_r[v] += b0r[v] * cr - b0i[v] * ci
                            p_i[v] += b0r[v] * ci + b0i[v] * cr
                    r += 1
                a_r, a_i = ar[k, t, start:stop], ai[k, t, start:stop]
                for g in range(size):
                    p_r, p_i = partial_r[g], partial_i[g]
                    s_r, s_i = sum_r[g], sum_i[g]
                    for v in range(width):
                        s_r[v] += a_r[v] * p_r[v] - a_i[v] * p_i[v]
                        s_i[v] += a_r[v] * p_i[v] + a_i[v] * p_r[v]
        for g in range(size):
            outr[first + g, start:stop] = sum_r[g]
            outi[first + g, start:stop] = sum_i[g]


@numba.njit(parallel=True, cache=True, fastmath=_FASTMATH)
def forward_fused(ar, ai, br, bi, xr, xi, yr, yi):
    """``y[j, k, t, r] += sum_v a[k,t,v] b[k,r,v] x[j,v]`` (accumulates into ``y``).

    ``x`` is ``(B, n)`` and ``y`` is ``(B, K, T, R)``, split into real and imaginary
    planes. Threads split the ``(j, k)`` pairs, each of which owns its rows of ``y``.
    """
    n_frequencies, n_transmitters, n = ar.shape
    n_receivers = br.shape[1]
    batch = xr.shape[0]
    dtype = ar.dtype
    zero = np.zeros(1, dtype)[0]
    for item in numba.prange(batch * n_frequencies):
        j = item // n_frequencies
        k = item % n_frequencies
        weighted_r = np.empty((n_transmitters, BLOCK), dtype)
        weighted_i = np.empty((n_transmitters, BLOCK), dtype)
        for start in range(0, n, BLOCK):
            stop = min(n, start + BLOCK)
            width = stop - start
            x_r, x_i = xr[j, start:stop], xi[j, start:stop]
            for t in range(n_transmitters):
                a_r, a_i = ar[k, t, start:stop], ai[k, t, start:stop]
                w_r, w_i = weighted_r[t], weighted_i[t]
                for v in range(width):
                    w_r[v] = a_r[v] * x_r[v] - a_i[v] * x_i[v]
                    w_i[v] = a_r[v] * x_i[v] + a_i[v] * x_r[v]
            for t in range(n_transmitters):
                w_r, w_i = weighted_r[t, :width], weighted_i[t, :width]
                r = 0
                while r + 2 <= n_receivers:
                    b0r, b0i = br[k, r, start:stop], bi[k, r, start:stop]
                    b1r, b1i = br[k, r + 1, start:stop], bi[k, r + 1, start:stop]
                    s0r = s0i = s1r = s1i = zero
                    for v in range(width):
                        s0r += w_r[v] * b0r[v] - w_i[v] * b0i[v]
                        s0i += w_r[v] * b0i[v] + w_i[v] * b0r[v]
                        s1r += w_r[v] * b1r[v] - w_i[v] * b1i[v]
                        s1i += w_r[v] * b1i[v] + w_i[v] * b1r[v]
                    yr[j, k, t, r] += s0r
                    yi[j, k, t, r] += s0i
                    yr[j, k, t, r + 1] += s1r
                    yi[j, k, t, r + 1] += s1i
                    r += 2
                if r < n_receivers:
                    b0r, b0i = br[k, r, start:stop], bi[k, r, start:stop]
                    s0r = s0i = zero
                    for v in range(width):
                        s0r += w_r[v] * b0r[v] - w_i[v] * b0i[v]
                        s0i += w_r[v] * b0i[v] + w_i[v] * b0r[v]
                    yr[j, k, t, r] += s0r
                    yi[j, k, t, r] += s0i


@numba.njit(parallel=True, cache=True, fastmath=_CONTRACT)
def build_tiles(ar, ai, br, bi, start, stop, tiles):
    """``tiles[:, (k, t, r), v - start] = (Re D, Im D, Re D + Im D)`` of
    ``D = a[k,t,v] b[k,r,v]`` for the voxels ``v`` in ``start:stop``.

    ``tiles`` is ``(3, K T R, stop - start)``. Threads split the rows ``(k, t)``.
    """
    n_frequencies, n_transmitters = ar.shape[:2]
    n_receivers = br.shape[1]
    width = stop - start
    for item in numba.prange(n_frequencies * n_transmitters):
        k = item // n_transmitters
        t = item % n_transmitters
        a_r, a_i = ar[k, t, start:stop], ai[k, t, start:stop]
        for r in range(n_receivers):
            row = item * n_receivers + r
            b_r, b_i = br[k, r, start:stop], bi[k, r, start:stop]
            real, imag, total = tiles[0, row], tiles[1, row], tiles[2, row]
            for v in range(width):
                re = a_r[v] * b_r[v] - a_i[v] * b_i[v]
                im = a_r[v] * b_i[v] + a_i[v] * b_r[v]
                real[v] = re
                imag[v] = im
                total[v] = re + im
