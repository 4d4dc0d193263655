"""Numba kernels and hierarchy construction of :mod:`physnet.solvers.multigrid` (private).

Every level is a CSR matrix (``indptr``, ``indices``, ``data``) with sorted column indices
and the diagonal stored in its row. The coarse levels come from aggregating the unknowns of
the level above: an aggregate is a connected set of unknowns inside one ``2 x 2 (x 2)`` block
of that level's grid, so a block split by a thin wall (or any face of zero weight) gives two
aggregates, and the coarse operator is the Galerkin product ``P^T A P`` of the piecewise
constant prolongation ``P``.
"""

from __future__ import annotations

import numba
import numpy as np
import scipy.sparse

__all__ = [
    "aggregate",
    "galerkin",
    "grid_csr",
    "jacobi_sweep",
    "matvec",
    "members",
    "prolong_add",
    "residual",
    "restrict",
    "row_features",
]

N_FEATURES = 6
"""Number of per-unknown features :func:`row_features` computes."""


def grid_csr(
    fluid_mask: np.ndarray, face_weights: tuple[np.ndarray, ...], diagonal: np.ndarray
) -> scipy.sparse.csr_matrix:
    """The CSR matrix of a grid operator from its face weights (unknowns in C order)."""
    n = int(diagonal.shape[0])
    if fluid_mask.ndim == 2:  # as (n0, 1, n1), like the stencil kernels
        fluid_mask = fluid_mask[:, None, :]
        w0, w2 = (w[:, None, :] for w in face_weights)
        w1 = np.zeros((fluid_mask.shape[0], 0, fluid_mask.shape[2]))
    else:
        w0, w1, w2 = face_weights
    numbers = np.full(fluid_mask.shape, -1, dtype=np.int64)
    numbers[fluid_mask] = np.arange(n)
    diagonal = np.asarray(diagonal, dtype=np.float64)
    lengths = np.empty(n, dtype=np.int64)
    indptr = np.zeros(n + 1, dtype=np.int64)
    nothing = np.empty(0, dtype=np.int64)
    _grid_rows(numbers, w0, w1, w2, diagonal, lengths, indptr, nothing, diagonal[:0], False)
    np.cumsum(lengths, out=indptr[1:])
    indices = np.empty(indptr[-1], dtype=np.int64)
    data = np.empty(indptr[-1], dtype=np.float64)
    _grid_rows(numbers, w0, w1, w2, diagonal, lengths, indptr, indices, data, True)
    return scipy.sparse.csr_matrix((data, indices, indptr), shape=(n, n))


@numba.njit(cache=True)
def _grid_neighbours(numbers, w0, w1, w2, i, j, l, out_columns, out_weights):
    """The fluid neighbours of cell ``(i, j, l)`` in increasing unknown order."""
    nx, ny, nz = numbers.shape
    count = 0
    if i > 0 and numbers[i - 1, j, l] >= 0 and w0[i - 1, j, l] > 0:
        out_columns[count] = numbers[i - 1, j, l]
        out_weights[count] = w0[i - 1, j, l]
        count += 1
    if j > 0 and numbers[i, j - 1, l] >= 0 and w1[i, j - 1, l] > 0:
        out_columns[count] = numbers[i, j - 1, l]
        out_weights[count] = w1[i, j - 1, l]
        count += 1
    if l > 0 and numbers[i, j, l - 1] >= 0 and w2[i, j, l - 1] > 0:
        out_columns[count] = numbers[i, j, l - 1]
        out_weights[count] = w2[i, j, l - 1]
        count += 1
    out_columns[count] = -1  # the diagonal's place
    count += 1
    if l < nz - 1 and numbers[i, j, l + 1] >= 0 and w2[i, j, l] > 0:
        out_columns[count] = numbers[i, j, l + 1]
        out_weights[count] = w2[i, j, l]
        count += 1
    if j < ny - 1 and numbers[i, j + 1, l] >= 0 and w1[i, j, l] > 0:
        out_columns[count] = numbers[i, j + 1, l]
        out_weights[count] = w1[i, j, l]
        count += 1
    if i < nx - 1 and numbers[i + 1, j, l] >= 0 and w0[i, j, l] > 0:
        out_columns[count] = numbers[i + 1, j, l]
        out_weights[count] = w0[i, j, l]
        count += 1
    return count


@numba.njit(parallel=True, cache=True)
def _grid_rows(numbers, w0, w1, w2, diagonal, lengths, indptr, indices, data, fill):
    """Count the entries of every row (``fill`` False), or write them (``fill`` True)."""
    nx, ny, nz = numbers.shape
    for i in numba.prange(nx):
        columns = np.empty(7, dtype=np.int64)
        weights = np.empty(7, dtype=np.float64)
        for j in range(ny):
            for l in range(nz):
                k = numbers[i, j, l]
                if k < 0:
                    continue
                count = _grid_neighbours(numbers, w0, w1, w2, i, j, l, columns, weights)
                if not fill:
                    lengths[k] = count
                    continue
                position = indptr[k]
                for c in range(count):
                    if columns[c] < 0:
                        indices[position + c] = k
                        data[position + c] = diagonal[k]
                    else:
                        indices[position + c] = columns[c]
                        data[position + c] = -weights[c]


@numba.njit(cache=True)
def _find(parent, i):
    root = i
    while parent[root] != root:
        root = parent[root]
    while parent[i] != root:  # path compression
        parent[i], i = root, parent[i]
    return root


@numba.njit(cache=True)
def _components(indptr, indices, data, block):
    """Root of every unknown's component over the couplings inside its block."""
    n = indptr.shape[0] - 1
    parent = np.arange(n)
    for i in range(n):
        for k in range(indptr[i], indptr[i + 1]):
            j = indices[k]
            if j > i and data[k] != 0.0 and block[j] == block[i]:
                ri = _find(parent, i)
                rj = _find(parent, j)
                if ri != rj:
                    if ri < rj:
                        parent[rj] = ri
                    else:
                        parent[ri] = rj
    for i in range(n):
        parent[i] = _find(parent, i)
    return parent


def aggregate(
    matrix: scipy.sparse.csr_matrix, coordinates: np.ndarray
) -> tuple[np.ndarray, int, np.ndarray]:
    """Aggregates of connected unknowns inside the ``2^d`` blocks of the level's grid.

    Parameters
    ----------
    matrix : scipy.sparse.csr_matrix
        The level's operator; a nonzero off-diagonal entry couples two unknowns.
    coordinates : numpy.ndarray of int, shape (n, d)
        Grid cell of every unknown on this level.

    Returns
    -------
    labels : numpy.ndarray of int64, shape (n,)
        The aggregate of every unknown; aggregates are numbered in C order of their
        blocks (and by their first unknown within a block).
    count : int
    coarse_coordinates : numpy.ndarray of int, shape (count, d)
        The block of every aggregate: its cell on the next level's grid.
    """
    blocks = coordinates // 2
    shape = tuple(int(s) + 1 for s in blocks.max(axis=0))
    block = np.ravel_multi_index(tuple(blocks.T), shape).astype(np.int64)
    roots = _components(matrix.indptr, matrix.indices, matrix.data, block)
    unique_roots = np.unique(roots)
    order = np.lexsort((unique_roots, block[unique_roots]))
    label_of_root = np.empty(matrix.shape[0], dtype=np.int64)
    label_of_root[unique_roots[order]] = np.arange(unique_roots.size)
    labels = label_of_root[roots]
    coarse = blocks[unique_roots[order]]
    return labels, int(unique_roots.size), coarse


def galerkin(
    matrix: scipy.sparse.csr_matrix, labels: np.ndarray, count: int
) -> scipy.sparse.csr_matrix:
    """``P^T A P`` for the piecewise-constant prolongation of ``labels``."""
    n = matrix.shape[0]
    prolongation = scipy.sparse.csr_matrix(
        (np.ones(n, dtype=matrix.dtype), (np.arange(n), labels)), shape=(n, count)
    )
    coarse = (prolongation.T @ matrix @ prolongation).tocsr()
    coarse.sum_duplicates()
    coarse.sort_indices()
    return coarse


def members(labels: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
    """The unknowns of every aggregate as CSR-like ``(start, members)`` arrays."""
    order = np.argsort(labels, kind="stable")
    start = np.zeros(count + 1, dtype=np.int64)
    np.cumsum(np.bincount(labels, minlength=count), out=start[1:])
    return start, order.astype(np.int64)


@numba.njit(parallel=True, cache=True)
def row_features(indptr, indices, data, level, out):
    """Scale-free features of every row, for a learned smoother.

    ``out[i]``: the Dirichlet fraction ``(a_ii - sum_j |a_ij|) / a_ii``, the largest and
    the smallest off-diagonal ``|a_ij| / a_ii``, ``log10`` of their ratio over 4 (the
    coefficient contrast around the unknown), the number of off-diagonal entries over 6
    and the level over 8.
    """
    n = indptr.shape[0] - 1
    for i in numba.prange(n):
        diagonal = 0.0
        total = 0.0
        largest = 0.0
        smallest = np.inf
        count = 0
        for k in range(indptr[i], indptr[i + 1]):
            j = indices[k]
            value = data[k]
            if j == i:
                diagonal = value
            elif value != 0.0:
                magnitude = abs(value)
                total += magnitude
                largest = max(largest, magnitude)
                smallest = min(smallest, magnitude)
                count += 1
        if count == 0:
            smallest = 0.0
        inverse = 1.0 / diagonal if diagonal > 0.0 else 0.0
        out[i, 0] = max(0.0, 1.0 - total * inverse)
        out[i, 1] = largest * inverse
        out[i, 2] = smallest * inverse
        out[i, 3] = np.log10(largest / smallest) / 4.0 if count > 0 and smallest > 0.0 else 0.0
        out[i, 4] = count / 6.0
        out[i, 5] = level / 8.0


@numba.njit(parallel=True, cache=True)
def jacobi_sweep(indptr, indices, data, scale, r, z, out):
    """``out = z + scale * (r - A z)``: one damped Jacobi sweep (``scale = omega / a_ii``)."""
    n = indptr.shape[0] - 1
    for i in numba.prange(n):
        s = r[i]
        for k in range(indptr[i], indptr[i + 1]):
            s -= data[k] * z[indices[k]]
        out[i] = z[i] + scale[i] * s


@numba.njit(parallel=True, cache=True)
def residual(indptr, indices, data, r, z, out):
    """``out = r - A z``."""
    n = indptr.shape[0] - 1
    for i in numba.prange(n):
        s = r[i]
        for k in range(indptr[i], indptr[i + 1]):
            s -= data[k] * z[indices[k]]
        out[i] = s


@numba.njit(parallel=True, cache=True)
def restrict(start, member, fine, out):
    """``out = P^T fine``: the sum over the unknowns of every aggregate."""
    count = start.shape[0] - 1
    for a in numba.prange(count):
        s = 0.0
        for k in range(start[a], start[a + 1]):
            s += fine[member[k]]
        out[a] = s


@numba.njit(parallel=True, cache=True)
def prolong_add(labels, coarse, z):
    """``z += P coarse``: every unknown gets its aggregate's value."""
    for i in numba.prange(labels.shape[0]):
        z[i] += coarse[labels[i]]


@numba.njit(parallel=True, cache=True)
def matvec(indptr, indices, data, z, out):
    """``out = A z``."""
    n = indptr.shape[0] - 1
    for i in numba.prange(n):
        s = 0.0
        for k in range(indptr[i], indptr[i + 1]):
            s += data[k] * z[indices[k]]
        out[i] = s
