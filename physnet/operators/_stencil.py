"""Numba kernels of the matrix-free grid Poisson apply (private to :mod:`physnet.operators`).

Both kernels see every grid as 3-D (a 2-D grid ``(n0, n1)`` as ``(n0, 1, n1)``, so that
the threads still split its first axis) and read three precomputed arrays:

``padded_flags``
    The cell flags with one layer of SOLID cells around the grid, so that no
    neighbour access needs a bounds check.
``padded_numbers``
    The unknown number of each padded cell, ``-1`` for every cell that is not fluid
    (so one comparison tells whether a neighbour contributes an off-diagonal term).
``row_start``
    For each grid row ``(i, j)`` (flattened), the number of the first unknown in it.
    Unknowns are numbered in C order, so along the contiguous last axis consecutive
    fluid cells have consecutive numbers and their neighbours are ``k - 1`` and
    ``k + 1``: the innermost loop never touches ``padded_numbers``.

The diagonal is precomputed per unknown (the sum of the weights of its faces that
are not walls), so the kernels only subtract the off-diagonal terms. Threads split
the first axis (``prange``), which measured faster than splitting the flattened
``(i, j)`` rows.
"""

from __future__ import annotations

import numba
import numpy as np

__all__ = ["matvec_constant", "matvec_variable", "row_starts"]


def row_starts(fluid_mask_3d: np.ndarray) -> np.ndarray:
    """Number of the first unknown of every grid row ``(i, j)`` of a 3-D fluid mask (flattened)."""
    nx, ny, nz = fluid_mask_3d.shape
    counts = np.count_nonzero(fluid_mask_3d.reshape(nx * ny, nz), axis=1)
    starts = np.zeros(nx * ny, dtype=np.int64)
    np.cumsum(counts[:-1], out=starts[1:])
    return starts


@numba.njit(parallel=True, cache=True)
def matvec_constant(x, y, padded_flags, padded_numbers, row_start, diagonal, axis_weights):
    """``y = A x`` for one weight per axis (constant coefficient, spacing ``h`` per axis)."""
    nx = padded_flags.shape[0] - 2
    ny = padded_flags.shape[1] - 2
    nz = padded_flags.shape[2] - 2
    w0 = axis_weights[0]
    w1 = axis_weights[1]
    w2 = axis_weights[2]
    for i in numba.prange(1, nx + 1):
        for j in range(1, ny + 1):
            k = row_start[(i - 1) * ny + (j - 1)]
            for l in range(1, nz + 1):
                if padded_flags[i, j, l] != 0:
                    continue
                s = diagonal[k] * x[k]
                a = padded_numbers[i - 1, j, l]
                if a >= 0:
                    s -= w0 * x[a]
                a = padded_numbers[i + 1, j, l]
                if a >= 0:
                    s -= w0 * x[a]
                a = padded_numbers[i, j - 1, l]
                if a >= 0:
                    s -= w1 * x[a]
                a = padded_numbers[i, j + 1, l]
                if a >= 0:
                    s -= w1 * x[a]
                if padded_flags[i, j, l - 1] == 0:
                    s -= w2 * x[k - 1]
                if padded_flags[i, j, l + 1] == 0:
                    s -= w2 * x[k + 1]
                y[k] = s
                k += 1


@numba.njit(parallel=True, cache=True)
def matvec_variable(x, y, padded_flags, padded_numbers, row_start, diagonal, w0, w1, w2):
    """``y = A x`` with one weight per interior face.

    ``w0`` has shape ``(nx - 1, ny, nz)`` (the face between cells ``i`` and ``i + 1``
    along axis 0), ``w1`` shape ``(nx, ny - 1, nz)`` and ``w2`` shape ``(nx, ny, nz - 1)``.
    Cell ``(i, j, l)`` of the padded grid is cell ``(i - 1, j - 1, l - 1)`` of the grid;
    a face weight is read only when the neighbour across it is fluid, so it always exists.
    """
    nx = padded_flags.shape[0] - 2
    ny = padded_flags.shape[1] - 2
    nz = padded_flags.shape[2] - 2
    for i in numba.prange(1, nx + 1):
        for j in range(1, ny + 1):
            k = row_start[(i - 1) * ny + (j - 1)]
            for l in range(1, nz + 1):
                if padded_flags[i, j, l] != 0:
                    continue
                s = diagonal[k] * x[k]
                a = padded_numbers[i - 1, j, l]
                if a >= 0:
                    s -= w0[i - 2, j - 1, l - 1] * x[a]
                a = padded_numbers[i + 1, j, l]
                if a >= 0:
                    s -= w0[i - 1, j - 1, l - 1] * x[a]
                a = padded_numbers[i, j - 1, l]
                if a >= 0:
                    s -= w1[i - 1, j - 2, l - 1] * x[a]
                a = padded_numbers[i, j + 1, l]
                if a >= 0:
                    s -= w1[i - 1, j - 1, l - 1] * x[a]
                if padded_flags[i, j, l - 1] == 0:
                    s -= w2[i - 1, j - 1, l - 2] * x[k - 1]
                if padded_flags[i, j, l + 1] == 0:
                    s -= w2[i - 1, j - 1, l - 1] * x[k + 1]
                y[k] = s
                k += 1
