"""Array backends: NumPy, PyTorch and CuPy behind one small interface.

Every public operator and solver accepts arrays of any supported kind and returns
results of the caller's kind on the caller's device. This module is the one place
where the kind of an array is decided, where conversions happen (zero-copy through
DLPack where the memory allows it) and where the optional libraries are imported.

``import physnet`` needs only NumPy and SciPy: torch and CuPy are imported on first
use, and a missing one raises an :class:`ImportError` naming the extra to install.

Examples
--------
>>> import numpy as np
>>> from physnet import backend
>>> be = backend.get_backend(np.ones(3))
>>> be.kind, float(be.vdot(np.ones(3), np.arange(3.0)))
('numpy', 3.0)
"""

from __future__ import annotations

import importlib
from typing import Any

import numpy as np

__all__ = [
    "Backend",
    "array_kind",
    "as_like",
    "check_device",
    "get_backend",
    "require_cupy",
    "require_torch",
    "to_cupy",
    "to_numpy",
    "to_torch",
    "torch_dtype",
]

_EXTRAS = {"torch": "torch", "cupy": "gpu", "matplotlib": "plot", "h5py": "data"}


def _require(module: str, purpose: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - depends on the environment
        extra = _EXTRAS.get(module, module)
        raise ImportError(
            f"{purpose} needs the optional dependency '{module}', which is not installed; "
            f"install it with: pip install 'physnet[{extra}]'"
        ) from exc


def require_torch() -> Any:
    """Import and return :mod:`torch`, or raise an ImportError naming the ``torch`` extra."""
    return _require("torch", "this operation on torch tensors")


def require_cupy() -> Any:
    """Import and return :mod:`cupy`, or raise an ImportError naming the ``gpu`` extra."""
    return _require("cupy", "this GPU operation")


def require(module: str, purpose: str) -> Any:
    """Import an optional dependency (``matplotlib``, ``h5py``...) with an install hint."""
    return _require(module, purpose)


def check_device(device: Any) -> str:
    """``device`` as a canonical string, checked to name a device this machine has.

    Parameters
    ----------
    device : str or torch.device
        ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or another torch device type (``"mps"``...).

    Returns
    -------
    str
        The device as torch writes it (``"cuda:0"`` stays ``"cuda:0"``, ``"cuda"`` stays
        ``"cuda"``).

    Raises
    ------
    ValueError
        If ``device`` is not a device name (``"tpu"``), or names a device this machine or
        this torch build does not have (``"cuda"`` with a CPU-only torch, ``"cuda:3"``
        with one GPU); the message says which devices there are.

    Examples
    --------
    >>> check_device("cpu")
    'cpu'
    """
    text = str(device).strip()
    if text == "cpu":
        return text
    try:
        torch = require_torch()
    except ImportError:
        torch = None
    if torch is None:
        # Without torch only CuPy can offer a device.
        if text == "cuda" or text.startswith("cuda:"):
            return _check_cupy_device(text)
        raise ValueError(f"device {text!r} is not known; expected 'cpu', 'cuda' or 'cuda:N'")
    try:
        parsed = torch.device(text)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(
            f"device {text!r} is not a device name; expected 'cpu', 'cuda' or 'cuda:N'"
        ) from None
    if parsed.type == "cpu":
        return str(parsed)
    if parsed.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            build = "this torch build has no CUDA support"
            if torch.version.cuda is not None:
                build = "torch finds no CUDA device"
            raise ValueError(f"device {text!r} is not available: {build}; use 'cpu'")
        if parsed.index is not None and parsed.index >= count:
            raise ValueError(
                f"device {text!r} is not available: there are {count} CUDA device(s), "
                f"cuda:0 to cuda:{count - 1}"
            )
        return str(parsed)
    module = getattr(torch, parsed.type, None) or getattr(torch.backends, parsed.type, None)
    available = getattr(module, "is_available", None)
    if available is None or not available():
        raise ValueError(
            f"device {text!r} is not available in this torch build; use 'cpu'"
            + (" or 'cuda'" if torch.cuda.is_available() else "")
        )
    return str(parsed)


def _check_cupy_device(text: str) -> str:
    try:
        cupy = require_cupy()
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception:  # no CuPy, or no driver: either way no device
        count = 0
    index_text = text.split(":")[1] if ":" in text else "0"
    if not index_text.isdigit():
        raise ValueError(f"device {text!r} is not a device name; expected 'cuda' or 'cuda:N'")
    if int(index_text) >= count:
        raise ValueError(
            f"device {text!r} is not available: there are {count} CUDA device(s) "
            "(and torch is not installed)"
        )
    return text


def array_kind(x: Any) -> str:
    """Return ``"numpy"``, ``"torch"`` or ``"cupy"`` for an array, without importing anything.

    Anything that is neither a torch tensor nor a CuPy array (lists, scalars, NumPy
    arrays, objects with ``__array__``) is treated as NumPy input.
    """
    module = type(x).__module__
    if module.startswith("torch"):
        return "torch"
    if module.startswith("cupy"):
        return "cupy"
    return "numpy"


def torch_dtype(dtype: Any) -> Any:
    """The torch dtype for a NumPy dtype (``np.float64`` -> ``torch.float64``)."""
    torch = require_torch()
    return {
        np.dtype(np.float32): torch.float32,
        np.dtype(np.float64): torch.float64,
        np.dtype(np.complex64): torch.complex64,
        np.dtype(np.complex128): torch.complex128,
        np.dtype(np.int32): torch.int32,
        np.dtype(np.int64): torch.int64,
        np.dtype(np.int8): torch.int8,
        np.dtype(np.uint8): torch.uint8,
        np.dtype(np.bool_): torch.bool,
    }[np.dtype(dtype)]


def numpy_dtype(dtype: Any) -> np.dtype:
    """The NumPy dtype for a NumPy, torch or CuPy dtype."""
    if type(dtype).__module__.startswith("torch"):
        torch = require_torch()
        return np.dtype(torch.empty((), dtype=dtype).numpy().dtype)
    return np.dtype(dtype)


def to_numpy(x: Any) -> np.ndarray:
    """A NumPy view of ``x`` where possible (CPU tensors), a host copy otherwise (GPU arrays)."""
    kind = array_kind(x)
    if kind == "torch":
        x = x.detach()
        if x.device.type != "cpu":
            x = x.cpu()
        return x.resolve_conj().numpy()
    if kind == "cupy":
        return x.get()
    return np.asarray(x)


def to_torch(x: Any, device: Any = None) -> Any:
    """A torch tensor sharing memory with ``x`` where possible (CPU NumPy, CuPy via DLPack)."""
    torch = require_torch()
    kind = array_kind(x)
    if kind == "torch":
        tensor = x
    elif kind == "cupy":
        tensor = torch.from_dlpack(x)
    else:
        array = np.asarray(x)
        if not array.flags.writeable:
            array = array.copy()
        tensor = torch.from_numpy(array)
    if device is not None and tensor.device != torch.device(device):
        tensor = tensor.to(device)
    return tensor


def to_cupy(x: Any) -> Any:
    """A CuPy array sharing memory with ``x`` where possible (CUDA tensors through DLPack)."""
    cupy = require_cupy()
    kind = array_kind(x)
    if kind == "cupy":
        return x
    if kind == "torch":
        if x.device.type == "cuda":
            return cupy.from_dlpack(x.detach())
        x = x.detach().numpy()
    return cupy.asarray(x)


def as_like(x: Any, reference: Any) -> Any:
    """Convert ``x`` to the kind and device of ``reference`` (zero-copy where possible)."""
    kind = array_kind(reference)
    if kind == "torch":
        return to_torch(x, device=reference.device)
    if kind == "cupy":
        cupy = require_cupy()
        with cupy.cuda.Device(reference.device.id):
            return to_cupy(x)
    return to_numpy(x)


class Backend:
    """Vector operations of one array library, as the Krylov solvers need them.

    Scalars produced by :meth:`vdot` stay on the device (0-d arrays) so that a GPU
    iteration synchronises only where a solver reads a norm on the host.

    Parameters
    ----------
    kind : {"numpy", "torch", "cupy"}
    device : optional
        The torch device (or CuPy device) arrays created by this backend live on.
    """

    def __init__(self, kind: str, device: Any = None) -> None:
        if kind not in ("numpy", "torch", "cupy"):
            raise ValueError(f"unknown array backend {kind!r}; expected 'numpy', 'torch' or 'cupy'")
        self.kind = kind
        self.device = device
        if kind == "torch":
            self.xp = require_torch()
        elif kind == "cupy":
            self.xp = require_cupy()
        else:
            self.xp = np

    def __repr__(self) -> str:
        device = "" if self.device is None else f", device={self.device}"
        return f"Backend({self.kind!r}{device})"

    # --- creation and conversion -------------------------------------------------
    def asarray(self, x: Any, dtype: Any = None) -> Any:
        """``x`` as an array of this backend (zero-copy where possible), optionally cast."""
        if self.kind == "numpy":
            array = to_numpy(x)
            return array if dtype is None else array.astype(dtype, copy=False)
        if self.kind == "torch":
            tensor = to_torch(x, device=self.device)
            return tensor if dtype is None else tensor.to(torch_dtype(dtype))
        array = to_cupy(x)
        return array if dtype is None else array.astype(dtype, copy=False)

    def zeros(self, shape: Any, dtype: Any) -> Any:
        if self.kind == "torch":
            return self.xp.zeros(shape, dtype=torch_dtype(dtype), device=self.device)
        return self.xp.zeros(shape, dtype=dtype)

    def empty(self, shape: Any, dtype: Any) -> Any:
        if self.kind == "torch":
            return self.xp.empty(shape, dtype=torch_dtype(dtype), device=self.device)
        return self.xp.empty(shape, dtype=dtype)

    def copy(self, x: Any) -> Any:
        return x.clone() if self.kind == "torch" else x.copy()

    def dtype(self, x: Any) -> np.dtype:
        """The NumPy dtype of an array of this backend."""
        return numpy_dtype(x.dtype)

    # --- reductions ---------------------------------------------------------------
    def vdot(self, a: Any, b: Any) -> Any:
        """``conj(a) . b`` as a 0-d array on the device (flattened inputs)."""
        if self.kind == "torch":
            return self.xp.vdot(a.reshape(-1), b.reshape(-1))
        return self.xp.vdot(a, b)

    def norm(self, a: Any) -> float:
        """Euclidean norm as a Python float (synchronises a GPU)."""
        if self.kind == "torch":
            return float(self.xp.linalg.vector_norm(a))
        return float(self.xp.linalg.norm(a.ravel()))

    def all_finite(self, a: Any) -> bool:
        return bool(self.xp.isfinite(a).all())


def get_backend(*arrays: Any) -> Backend:
    """The backend of the given arrays; they must all be of one kind and on one device.

    Raises
    ------
    TypeError
        If the arrays mix kinds (a NumPy array with a torch tensor, say).
    ValueError
        If torch tensors or CuPy arrays live on different devices.
    """
    arrays = tuple(a for a in arrays if a is not None)
    kinds = {array_kind(a) for a in arrays}
    if len(kinds) > 1:
        raise TypeError(
            f"arrays of different kinds cannot be mixed ({', '.join(sorted(kinds))}); "
            "convert them to one kind first (see physnet.backend.as_like)"
        )
    kind = kinds.pop() if kinds else "numpy"
    device = None
    if kind in ("torch", "cupy"):
        devices = {str(a.device) for a in arrays}
        if len(devices) > 1:
            raise ValueError(f"arrays live on different devices: {sorted(devices)}")
        device = arrays[0].device
    return Backend(kind, device)
