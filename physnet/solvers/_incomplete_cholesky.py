"""Numba kernels of the zero fill-in incomplete Cholesky factorisation, IC(0).

The factor ``L`` is stored in CSR with the sparsity pattern of the lower triangle of
``A`` (column indices sorted, the diagonal last in each row).
"""

from __future__ import annotations

import math

import numba
import numpy as np

__all__ = ["factorize", "solve_in_place"]


@numba.njit(cache=True, nogil=True)
def factorize(indptr, indices, data, shift):  # pragma: no cover - compiled by Numba
    """Overwrite ``data`` (the lower triangle of ``A``) with its IC(0) factor ``L``.

    Row ``i`` of ``L`` is computed from the rows above it (left-looking): for each
    ``k < i`` in the pattern, ``L_ik = (A_ik - sum_{j<k} L_ij L_kj) / L_kk``, the sum
    running over the columns both rows hold (a merge of two sorted rows), then
    ``L_ii = sqrt((1 + shift) A_ii - sum_{j<i} L_ij^2)``.

    Returns ``-1`` on success, else the first row whose pivot is not positive (or whose
    diagonal entry is missing, returned as ``-(row + 2)``).
    """
    n = indptr.shape[0] - 1
    for i in range(n):
        start = indptr[i]
        diagonal = indptr[i + 1] - 1
        if diagonal < start or indices[diagonal] != i:
            return -(i + 2)
        for position in range(start, diagonal):
            k = indices[position]
            total = data[position]
            a = start
            c = indptr[k]
            c_end = indptr[k + 1] - 1
            while a < position and c < c_end:
                column_a = indices[a]
                column_c = indices[c]
                if column_a == column_c:
                    total -= data[a] * data[c]
                    a += 1
                    c += 1
                elif column_a < column_c:
                    a += 1
                else:
                    c += 1
            data[position] = total / data[c_end]
        pivot = data[diagonal] * (1.0 + shift)
        for position in range(start, diagonal):
            pivot -= data[position] * data[position]
        if not pivot > 0.0 or not math.isfinite(pivot):
            return i
        data[diagonal] = math.sqrt(pivot)
    return -1


@numba.njit(cache=True, nogil=True)
def solve_in_place(indptr, indices, data, x):  # pragma: no cover - compiled by Numba
    """Overwrite ``x`` with ``(L L^T)^{-1} x``: a forward then a backward substitution."""
    n = indptr.shape[0] - 1
    for i in range(n):
        total = x[i]
        diagonal = indptr[i + 1] - 1
        for position in range(indptr[i], diagonal):
            total -= data[position] * x[indices[position]]
        x[i] = total / data[diagonal]
    # L^T is L read by columns: once x_i is final, remove its contribution from the rows above.
    for i in range(n - 1, -1, -1):
        diagonal = indptr[i + 1] - 1
        value = x[i] / data[diagonal]
        x[i] = value
        for position in range(indptr[i], diagonal):
            x[indices[position]] -= data[position] * value
    return x


def lower_triangle(csr) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The CSR arrays of ``tril(A)`` in float64, canonical (sorted, no duplicates)."""
    import scipy.sparse

    lower = scipy.sparse.tril(csr, format="csr").astype(np.float64)
    lower.sum_duplicates()
    lower.sort_indices()
    return lower.indptr.astype(np.int64), lower.indices.astype(np.int64), lower.data.copy()
