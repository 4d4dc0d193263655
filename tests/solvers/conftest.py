"""Small SPD test systems built with scipy.sparse (Dirichlet Laplacians)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp


def laplacian_1d(n: int) -> sp.csr_matrix:
    return sp.diags([-1.0, 2.0, -1.0], [-1, 0, 1], shape=(n, n), format="csr")


def make_laplacian(n: int, ndim: int) -> sp.csr_matrix:
    """The Dirichlet Laplacian on an ``n**ndim`` grid: SPD, CSR, canonical."""
    T = laplacian_1d(n)
    A = T
    for _ in range(ndim - 1):
        A = sp.kronsum(A, T, format="csr")
    A = sp.csr_matrix(A)
    A.sort_indices()
    return A


@pytest.fixture
def laplacian():
    """``laplacian(n, ndim)``: the Dirichlet Laplacian on an ``n**ndim`` grid."""
    return make_laplacian


@pytest.fixture
def poisson2d() -> sp.csr_matrix:
    return make_laplacian(24, 2)


@pytest.fixture
def poisson3d() -> sp.csr_matrix:
    return make_laplacian(12, 3)


@pytest.fixture
def variable_poisson2d(rng) -> sp.csr_matrix:
    """A 2-D Laplacian with a random diagonal scaling: Jacobi matters on it."""
    A = make_laplacian(20, 2)
    scale = sp.diags(np.exp(rng.uniform(-2.0, 2.0, A.shape[0])))
    return sp.csr_matrix(scale @ A @ scale)


@pytest.fixture
def rhs(rng):
    def make(n: int) -> np.ndarray:
        return rng.standard_normal(n)

    return make
