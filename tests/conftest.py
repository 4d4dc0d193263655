"""Shared fixtures: array backends and devices from guarded imports, seeding, markers."""

from __future__ import annotations

import importlib.util
import os
import random

import numpy as np
import pytest

os.environ.setdefault("NUMBA_NUM_THREADS", "2")


def _torch_available() -> bool:
    return importlib.util.find_spec("torch") is not None


def _cuda_available() -> bool:
    if importlib.util.find_spec("cupy") is not None:
        try:
            import cupy

            return cupy.cuda.runtime.getDeviceCount() > 0
        except Exception:  # no driver or no device: CuPy raises its own runtime errors
            return False
    return False


def _torch_cuda_available() -> bool:
    if not _torch_available():
        return False
    import torch

    return torch.cuda.is_available()


HAS_TORCH = _torch_available()
HAS_CUPY = _cuda_available()
HAS_TORCH_CUDA = _torch_cuda_available()

# (kind, device) pairs; GPU entries carry the gpu marker so CPU-only runs deselect them.
_BACKENDS = [pytest.param(("numpy", "cpu"), id="numpy")]
if HAS_TORCH:
    _BACKENDS.append(pytest.param(("torch", "cpu"), id="torch-cpu"))
if HAS_TORCH_CUDA:
    _BACKENDS.append(pytest.param(("torch", "cuda"), id="torch-cuda", marks=pytest.mark.gpu))
if HAS_CUPY:
    _BACKENDS.append(pytest.param(("cupy", "cuda"), id="cupy", marks=pytest.mark.gpu))


class ArrayFactory:
    """Makes arrays of one backend from NumPy arrays, and brings results back to NumPy."""

    def __init__(self, kind: str, device: str) -> None:
        self.kind = kind
        self.device = device

    def __repr__(self) -> str:
        return f"ArrayFactory({self.kind!r}, {self.device!r})"

    def asarray(self, array):
        array = np.asarray(array)
        if self.kind == "torch":
            import torch

            return torch.from_numpy(array.copy()).to(self.device)
        if self.kind == "cupy":
            import cupy

            return cupy.asarray(array)
        return array.copy()

    def to_numpy(self, array):
        from physnet.backend import to_numpy

        return to_numpy(array)

    def is_own(self, array) -> bool:
        from physnet.backend import array_kind

        if array_kind(array) != self.kind:
            return False
        if self.kind == "torch":
            return array.device.type == self.device
        return True


@pytest.fixture(params=_BACKENDS)
def xp(request) -> ArrayFactory:
    """One array backend per parameter: numpy always; torch and CuPy when importable."""
    kind, device = request.param
    return ArrayFactory(kind, device)


@pytest.fixture(autouse=True)
def _seed() -> None:
    """Every test starts from the same random state."""
    random.seed(0)
    np.random.seed(0)  # noqa: NPY002 - seeds the legacy global state other libraries draw from
    if HAS_TORCH:
        import torch

        torch.manual_seed(0)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(12345)
