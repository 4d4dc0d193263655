"""The backend layer: kinds, zero-copy conversions, vector operations, install hints."""

import subprocess
import sys

import numpy as np
import pytest

from physnet import backend


def test_numpy_is_default_kind():
    assert backend.array_kind(np.ones(2)) == "numpy"
    assert backend.array_kind([1.0, 2.0]) == "numpy"
    assert backend.get_backend().kind == "numpy"


def _host(value) -> complex:
    return complex(np.asarray(backend.to_numpy(value)))


def test_vector_operations_agree_with_numpy(xp, rng):
    from physnet.solvers._krylov import add_scaled

    a = rng.standard_normal(50)
    b = rng.standard_normal(50)
    A, B = xp.asarray(a), xp.asarray(b)
    be = backend.get_backend(A, B)
    assert be.kind == xp.kind
    assert _host(be.vdot(A, B)).real == pytest.approx(a @ b, rel=1e-14)
    assert be.norm(A) == pytest.approx(np.linalg.norm(a), rel=1e-14)
    work = None if be.kind == "torch" else be.empty(A.shape, np.float64)
    add_scaled(be, B, 0.5, A, work)
    np.testing.assert_allclose(xp.to_numpy(B), b + 0.5 * a, rtol=1e-15)
    add_scaled(be, B, be.vdot(A, A), A, work, subtract=True)
    np.testing.assert_allclose(xp.to_numpy(B), b + 0.5 * a - (a @ a) * a, rtol=1e-13)
    assert be.all_finite(A)
    assert be.dtype(A) == np.float64


def test_complex_vdot_conjugates_first_argument(xp):
    a = np.array([1 + 2j, 3 - 1j])
    b = np.array([2 - 1j, 1j])
    be = backend.get_backend(xp.asarray(a))
    assert _host(be.vdot(xp.asarray(a), xp.asarray(b))) == pytest.approx(np.vdot(a, b))


def test_torch_cpu_conversions_are_zero_copy():
    torch = pytest.importorskip("torch")
    array = np.arange(4.0)
    tensor = backend.to_torch(array)
    tensor[0] = 42.0
    assert array[0] == 42.0
    back = backend.to_numpy(tensor)
    back[1] = -1.0
    assert tensor[1].item() == -1.0
    like = backend.as_like(np.zeros(3), torch.ones(1, dtype=torch.float64))
    assert isinstance(like, torch.Tensor)
    assert backend.torch_dtype(np.float32) is torch.float32
    assert backend.numpy_dtype(torch.complex64) == np.complex64


def test_mixed_kinds_are_rejected():
    torch = pytest.importorskip("torch")
    with pytest.raises(TypeError, match="different kinds"):
        backend.get_backend(np.ones(2), torch.ones(2))


def test_unknown_backend_name():
    with pytest.raises(ValueError, match="unknown array backend"):
        backend.Backend("jax")


def test_import_physnet_needs_neither_torch_nor_cupy():
    code = (
        "import sys, physnet, physnet.operators, physnet.solvers, physnet.datasets, physnet.cli;"
        "bad = [m for m in ('torch', 'cupy', 'matplotlib', 'h5py') if m in sys.modules];"
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_missing_optional_dependency_names_the_extra(monkeypatch):
    real_import = backend.importlib.import_module

    def fake_import(name, *args, **kwargs):
        if name.split(".")[0] in ("cupy", "torch"):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(backend.importlib, "import_module", fake_import)
    with pytest.raises(ImportError, match=r"pip install 'physnet\[gpu\]'"):
        backend.require_cupy()
    with pytest.raises(ImportError, match=r"pip install 'physnet\[torch\]'"):
        backend.Backend("torch")
