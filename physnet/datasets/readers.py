"""Readers for PDE data files users already hold: FNO-style Darcy ``.mat`` and PDEBench HDF5.

Both readers are :class:`~physnet.datasets._base.FieldDataset` s with the fields
``coefficient`` (the input) and ``solution`` (the target), one ``float32`` array per sample,
subsampled by ``stride`` as ``array[::stride, ::stride]`` (the FNO convention: a 421² file at
stride ``r`` gives ``(421 - 1) / r + 1`` points per side).

FNO Darcy ``.mat``
    The files of Li et al. (``piececonst_r421_N1024_smooth1.mat`` and kin) hold ``coeff`` and
    ``sol``, each ``(N, s, s)``. MATLAB v5 files are read eagerly with
    :func:`scipy.io.loadmat`; MATLAB v7.3 files are HDF5 files behind a 512-byte MATLAB header
    and are read lazily, one sample at a time, with h5py. MATLAB stores arrays column-major,
    so h5py sees a MATLAB ``(N, s, s)`` array as ``(s, s, N)``; the reader transposes back,
    and both versions of one file give identical samples.
PDEBench 2D Darcy HDF5
    ``2D_DarcyFlow_beta*_Train.hdf5`` holds ``nu`` ``(N, X, Y)`` (the coefficient) and
    ``tensor`` ``(N, 1, X, Y)`` (the solution, with a singleton time axis that is dropped),
    plus ``x-coordinate`` and ``y-coordinate``. Read lazily with h5py.

The lazy readers open their file on first use in each process and reopen it after a fork,
and drop the handle when pickled, so they are safe with any number of ``DataLoader``
workers. A file that cannot be used raises :class:`~physnet._io.FileFormatError` naming the
file and the key.

Examples
--------
>>> import os, tempfile
>>> import numpy as np, scipy.io
>>> from physnet.datasets.readers import FNODarcyDataset
>>> path = os.path.join(tempfile.mkdtemp(), "darcy.mat")
>>> coeff = np.arange(2 * 5 * 5, dtype=np.float64).reshape(2, 5, 5)
>>> scipy.io.savemat(path, {"coeff": coeff, "sol": -coeff})
>>> dataset = FNODarcyDataset(path, stride=2)
>>> len(dataset), dataset.inputs, dataset.targets
(2, ('coefficient',), ('solution',))
>>> dataset[1]["coefficient"]
array([[25., 27., 29.],
       [35., 37., 39.],
       [45., 47., 49.]], dtype=float32)
"""

from __future__ import annotations

import builtins
import functools
import os
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar

import numpy as np
import scipy.io

from physnet._io import FileFormatError, check_readable
from physnet.backend import require
from physnet.datasets._base import FieldDataset
from physnet.datasets._handles import PerProcessHandle

__all__ = ["FNODarcyDataset", "PDEBenchDarcyDataset"]

_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
_MATLAB_V73_HEADER = b"MATLAB 7.3 MAT-file"
_MATLAB_V5_HEADER = b"MATLAB 5.0 MAT-file"
_DARCY_FIELDS = ("coefficient", "solution")


# --- sniffing -----------------------------------------------------------------------------


def hdf5_offset(path: str | os.PathLike) -> int | None:
    """Byte offset of the HDF5 superblock in ``path``, or None if the file is not HDF5.

    HDF5 looks for its signature at offset 0, 512, 1024, 2048, ...; a file with a user
    block (such as a MATLAB v7.3 file, whose 512-byte header is one) starts it later.
    """
    size = os.path.getsize(path)
    offset = 0
    with builtins.open(path, "rb") as f:
        while offset + len(_HDF5_SIGNATURE) <= size:
            f.seek(offset)
            if f.read(len(_HDF5_SIGNATURE)) == _HDF5_SIGNATURE:
                return offset
            offset = 512 if offset == 0 else 2 * offset
    return None


def has_matlab_v73_header(path: str | os.PathLike) -> bool:
    """Whether ``path`` starts with the text header MATLAB writes before a v7.3 (HDF5) file."""
    with builtins.open(path, "rb") as f:
        return f.read(len(_MATLAB_V73_HEADER)) == _MATLAB_V73_HEADER


def open_hdf5(path: str | os.PathLike) -> Any:
    """Open ``path`` read-only with h5py, reporting an unreadable file as FileFormatError."""
    h5py = require("h5py", f"reading the HDF5 file {os.fspath(path)}")
    try:
        return h5py.File(path, "r")
    except OSError as error:
        raise FileFormatError(path, f"truncated or corrupt HDF5 file ({error})") from None


# --- arguments ----------------------------------------------------------------------------


def _check_stride(owner: str, stride: Any) -> int:
    if isinstance(stride, (bool, np.bool_)) or not isinstance(stride, (int, np.integer)):
        raise TypeError(f"{owner}: stride must be a positive integer, not {stride!r}")
    if stride < 1:
        raise ValueError(f"{owner}: stride={stride}, expected a positive integer")
    return int(stride)


def _check_n_samples(owner: str, n_samples: Any, n_in_file: int) -> int:
    if n_samples is None:
        return n_in_file
    if isinstance(n_samples, (bool, np.bool_)) or not isinstance(n_samples, (int, np.integer)):
        raise TypeError(f"{owner}: n_samples must be an integer or None, not {n_samples!r}")
    if not 1 <= n_samples <= n_in_file:
        raise ValueError(
            f"{owner}: n_samples={n_samples}, expected 1..{n_in_file} "
            f"(the file holds {n_in_file} samples)"
        )
    return int(n_samples)


def _check_fields(owner: str, fields: Any, available: tuple[str, ...]) -> tuple[str, ...]:
    if fields is None:
        return available
    selected = (fields,) if isinstance(fields, str) else tuple(fields)
    unknown = [name for name in selected if name not in available]
    if unknown or not selected or len(set(selected)) != len(selected):
        raise ValueError(
            f"{owner}: fields={list(selected)}, expected distinct names among {list(available)}"
        )
    return selected


def _strided(length: int, stride: int) -> int:
    return (length - 1) // stride + 1


def _check_pair(
    path: str | os.PathLike,
    shapes: Mapping[str, tuple[int, ...]],
    dtypes: Mapping[str, np.dtype],
    layouts: Mapping[str, tuple[str, ...]],
) -> int:
    """Check the shapes of the coefficient and solution arrays; return the number of samples.

    ``shapes`` are in sample-first order; ``layouts`` names each key's axes, such as
    ``("N", "1", "X", "Y")``, where ``"1"`` marks an axis that must have length 1.
    """
    for key, shape in shapes.items():
        layout = layouts[key]
        if len(shape) != len(layout) or any(
            axis == "1" and n != 1 for axis, n in zip(layout, shape, strict=True)
        ):
            raise FileFormatError(
                path, f"'{key}' has shape {shape}, expected ({', '.join(layout)})"
            )
        if dtypes[key].kind not in "fiub":
            raise FileFormatError(
                path, f"'{key}' has dtype {dtypes[key]}, expected a real numeric array"
            )
    (key_a, shape_a), (key_b, shape_b) = shapes.items()
    if shape_a[0] != shape_b[0]:
        raise FileFormatError(
            path,
            f"'{key_a}' holds {shape_a[0]} samples but '{key_b}' holds {shape_b[0]}",
        )
    if shape_a[-2:] != shape_b[-2:]:
        raise FileFormatError(
            path,
            f"'{key_b}' has shape {shape_b}, expected the grid {shape_a[-2:]} of '{key_a}'",
        )
    if shape_a[0] == 0:
        raise FileFormatError(path, f"'{key_a}' holds no samples")
    return shape_a[0]


# --- lazy HDF5 access ---------------------------------------------------------------------


class _LazyHDF5:
    """Reads samples from an HDF5 file opened lazily in each process (see PerProcessHandle)."""

    path: str
    _handle: PerProcessHandle | None = None

    def _file(self) -> Any:
        if self._handle is None:
            self._handle = PerProcessHandle(functools.partial(open_hdf5, self.path))
        return self._handle.get()

    def _read(self, key: str, selection: tuple, index: int) -> np.ndarray:
        try:
            return self._file()[key][selection]
        except (OSError, KeyError) as error:
            raise FileFormatError(
                self.path, f"could not read sample {index} of '{key}' ({error})"
            ) from None

    def close(self) -> None:
        """Close this process's handle on the file (reopened by the next sample read)."""
        if self._handle is not None:
            self._handle.close()


def _hdf5_arrays(path: str | os.PathLike, file: Any, keys: Iterable[str]) -> dict[str, Any]:
    h5py = require("h5py", f"reading the HDF5 file {os.fspath(path)}")
    found = sorted(file.keys())
    arrays = {}
    for key in keys:
        if key not in file:
            raise FileFormatError(path, f"key '{key}' is missing (found keys {found})")
        if not isinstance(file[key], h5py.Dataset):
            raise FileFormatError(path, f"'{key}' is a group, expected an array")
        arrays[key] = file[key]
    return arrays


def _float32(array: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(array, dtype=np.float32)


# --- FNO Darcy .mat -----------------------------------------------------------------------


class _DarcyReader(_LazyHDF5, FieldDataset):
    """What the Darcy readers share: fields, inputs/targets, stride, a readable path."""

    def _describe(self, path: str | os.PathLike, stride: int, fields: Iterable[str] | None) -> None:
        owner = type(self).__name__
        self.path = os.fspath(path)
        self.stride = _check_stride(owner, stride)
        self.fields = _check_fields(owner, fields, _DARCY_FIELDS)
        self.inputs = tuple(name for name in ("coefficient",) if name in self.fields)
        self.targets = tuple(name for name in ("solution",) if name in self.fields)
        check_readable(path)


class FNODarcyDataset(_DarcyReader):
    """Darcy flow samples from an FNO-style ``.mat`` file (keys ``coeff`` and ``sol``).

    Parameters
    ----------
    path : str or os.PathLike
        A MATLAB v5 or v7.3 file holding ``coeff`` and ``sol``, each ``(N, s, s)`` (in
        MATLAB's index order). Other variables (``Kcoeff``, ``Kcoeff_x``, ...) are ignored.
        An HDF5 file without a MATLAB header holding ``coeff`` and ``sol`` as ``(N, s, s)``
        in C order (as h5py writes them) is read too.
    stride : int, default 1
        Keep every ``stride``-th grid point along each axis (``array[::stride, ::stride]``).
    n_samples : int, optional
        Use only the first ``n_samples`` samples of the file (all of them by default).
    fields : sequence of str, optional
        Read only these of ``("coefficient", "solution")``.

    Attributes
    ----------
    fields, inputs, targets : tuple of str
        ``("coefficient", "solution")``, ``("coefficient",)``, ``("solution",)``.
    attrs : dict
        ``source`` (the file), ``format`` (``"fno-mat-v5"``, ``"fno-mat-v7.3"`` or
        ``"fno-hdf5"``), ``stride``, ``original_resolution`` and ``resolution`` (grid
        shapes before and after striding) and ``n_samples_in_file``.

    Raises
    ------
    FileFormatError
        If the file is missing or unreadable, lacks ``coeff`` or ``sol``, or they are not
        real ``(N, s, s)`` arrays with the same shape.

    Notes
    -----
    A v5 file is loaded whole when the dataset is made (then cut to ``n_samples`` and
    ``stride`` and held as ``float32``). A v7.3 file is read one sample per item; that is
    fast when MATLAB chunked the arrays, and slow for a large unchunked one (each sample is
    strided across the whole file): write such data to a physnet store once instead.

    References
    ----------
    .. [1] Z. Li et al., "Fourier Neural Operator for Parametric Partial Differential
       Equations", ICLR 2021.

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np, scipy.io
    >>> path = os.path.join(tempfile.mkdtemp(), "piececonst_r5_N3.mat")
    >>> rng = np.random.default_rng(0)
    >>> scipy.io.savemat(path, {"coeff": rng.random((3, 5, 5)), "sol": rng.random((3, 5, 5))})
    >>> dataset = FNODarcyDataset(path, stride=2, n_samples=2)
    >>> len(dataset), dataset[0]["solution"].shape, dataset[0]["solution"].dtype
    (2, (3, 3), dtype('float32'))
    >>> dataset.attrs["format"], dataset.attrs["original_resolution"], dataset.attrs["resolution"]
    ('fno-mat-v5', (5, 5), (3, 3))
    """

    _keys: ClassVar[dict[str, str]] = {"coefficient": "coeff", "solution": "sol"}

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        stride: int = 1,
        n_samples: int | None = None,
        fields: Iterable[str] | None = None,
    ) -> None:
        self._describe(path, stride, fields)
        layouts = dict.fromkeys(self._keys.values(), ("N", "s", "s"))

        self._arrays: dict[str, np.ndarray] | None = None
        self._matlab_order = False
        if hdf5_offset(path) is not None:
            with open_hdf5(path) as file:
                datasets = _hdf5_arrays(path, file, self._keys.values())
                # MATLAB writes its arrays column-major: h5py sees their axes reversed.
                self._matlab_order = has_matlab_v73_header(path) or any(
                    "MATLAB_class" in array.attrs for array in datasets.values()
                )
                order = slice(None, None, -1) if self._matlab_order else slice(None)
                shapes = {key: array.shape[order] for key, array in datasets.items()}
                dtypes = {key: array.dtype for key, array in datasets.items()}
            n_in_file = _check_pair(path, shapes, dtypes, layouts)
            file_format = "fno-mat-v7.3" if self._matlab_order else "fno-hdf5"
        else:
            arrays = _load_mat_v5(path, tuple(self._keys.values()))
            shapes = {key: array.shape for key, array in arrays.items()}
            dtypes = {key: array.dtype for key, array in arrays.items()}
            n_in_file = _check_pair(path, shapes, dtypes, layouts)
            file_format = "fno-mat-v5"
        self.n_samples = _check_n_samples(type(self).__name__, n_samples, n_in_file)
        if file_format == "fno-mat-v5":
            step = slice(None, None, self.stride)
            window = (slice(self.n_samples), step, step)
            self._arrays = {
                self._keys[name]: _float32(arrays[self._keys[name]][window]) for name in self.fields
            }

        resolution = shapes["coeff"][-2:]
        self.attrs = {
            "source": self.path,
            "format": file_format,
            "stride": self.stride,
            "original_resolution": tuple(int(n) for n in resolution),
            "resolution": tuple(_strided(int(n), self.stride) for n in resolution),
            "n_samples_in_file": int(n_in_file),
        }

    def __len__(self) -> int:
        return self.n_samples

    def _sample(self, index: int) -> dict[str, np.ndarray]:
        if self._arrays is not None:
            # copies: a caller normalising a sample in place must not change the dataset
            return {name: self._arrays[self._keys[name]][index].copy() for name in self.fields}
        step = slice(None, None, self.stride)
        sample = {}
        for name in self.fields:
            key = self._keys[name]
            if self._matlab_order:
                sample[name] = _float32(self._read(key, (step, step, index), index).T)
            else:
                sample[name] = _float32(self._read(key, (index, step, step), index))
        return sample


def _load_mat_v5(path: str | os.PathLike, keys: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Load ``keys`` from a MATLAB v4/v5/v7 file with SciPy, as FileFormatError on failure."""
    try:
        found = {name for name, _, _ in scipy.io.whosmat(path)}
        loaded = scipy.io.loadmat(path, variable_names=[key for key in keys if key in found])
    except MemoryError:
        raise
    except Exception as error:  # SciPy raises several types for foreign or damaged files
        raise FileFormatError(path, f"not a readable MATLAB file ({error})") from None
    for key in keys:
        if key not in loaded:
            raise FileFormatError(path, f"key '{key}' is missing (found keys {sorted(found)})")
    return {key: np.asarray(loaded[key]) for key in keys}


# --- PDEBench Darcy HDF5 ------------------------------------------------------------------


class PDEBenchDarcyDataset(_DarcyReader):
    """Darcy flow samples from a PDEBench 2D Darcy HDF5 file (keys ``nu`` and ``tensor``).

    Parameters
    ----------
    path : str or os.PathLike
        A ``2D_DarcyFlow_beta*_Train.hdf5`` file: ``nu`` ``(N, X, Y)`` is the coefficient,
        ``tensor`` ``(N, 1, X, Y)`` the solution (its singleton time axis is dropped).
    stride : int, default 1
        Keep every ``stride``-th grid point along each axis (``array[::stride, ::stride]``).
    n_samples : int, optional
        Use only the first ``n_samples`` samples of the file (all of them by default).
    fields : sequence of str, optional
        Read only these of ``("coefficient", "solution")``.

    Attributes
    ----------
    fields, inputs, targets : tuple of str
        ``("coefficient", "solution")``, ``("coefficient",)``, ``("solution",)``.
    attrs : dict
        ``source``, ``format`` (``"pdebench-darcy"``), ``stride``, ``original_resolution``,
        ``resolution``, ``n_samples_in_file``, and ``x_coordinate`` / ``y_coordinate`` (the
        file's ``x-coordinate`` / ``y-coordinate`` after striding) where the file has them.

    Raises
    ------
    FileFormatError
        If the file is missing, not HDF5, truncated, lacks ``nu`` or ``tensor``, or their
        shapes do not match ``(N, X, Y)`` and ``(N, 1, X, Y)``.

    Notes
    -----
    The file is opened on first use in each process (and again after a fork), never shared
    between processes, so the dataset is safe with any number of ``DataLoader`` workers.

    References
    ----------
    .. [1] M. Takamoto et al., "PDEBench: An Extensive Benchmark for Scientific Machine
       Learning", NeurIPS 2022 Datasets and Benchmarks.

    Examples
    --------
    >>> import os, tempfile
    >>> import h5py, numpy as np
    >>> path = os.path.join(tempfile.mkdtemp(), "2D_DarcyFlow_beta1.0_Train.hdf5")
    >>> with h5py.File(path, "w") as f:
    ...     _ = f.create_dataset("nu", data=np.ones((4, 8, 8), np.float32))
    ...     _ = f.create_dataset("tensor", data=np.zeros((4, 1, 8, 8), np.float32))
    >>> dataset = PDEBenchDarcyDataset(path, stride=2)
    >>> len(dataset), dataset[3]["coefficient"].shape, dataset[3]["solution"].shape
    (4, (4, 4), (4, 4))
    """

    _keys: ClassVar[dict[str, str]] = {"coefficient": "nu", "solution": "tensor"}

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        stride: int = 1,
        n_samples: int | None = None,
        fields: Iterable[str] | None = None,
    ) -> None:
        self._describe(path, stride, fields)
        if hdf5_offset(path) is None:
            raise FileFormatError(path, "not an HDF5 file, expected PDEBench HDF5")
        with open_hdf5(path) as file:
            datasets = _hdf5_arrays(path, file, self._keys.values())
            shapes = {key: array.shape for key, array in datasets.items()}
            dtypes = {key: array.dtype for key, array in datasets.items()}
            n_in_file = _check_pair(
                path, shapes, dtypes, {"nu": ("N", "X", "Y"), "tensor": ("N", "1", "X", "Y")}
            )
            coordinates = {
                f"{axis}_coordinate": np.asarray(file[f"{axis}-coordinate"][:: self.stride])
                for axis in ("x", "y")
                if f"{axis}-coordinate" in file
            }
        self.n_samples = _check_n_samples(type(self).__name__, n_samples, n_in_file)
        resolution = shapes["nu"][-2:]
        self.attrs = {
            "source": self.path,
            "format": "pdebench-darcy",
            "stride": self.stride,
            "original_resolution": tuple(int(n) for n in resolution),
            "resolution": tuple(_strided(int(n), self.stride) for n in resolution),
            "n_samples_in_file": int(n_in_file),
            **coordinates,
        }

    def __len__(self) -> int:
        return self.n_samples

    def _sample(self, index: int) -> dict[str, np.ndarray]:
        step = slice(None, None, self.stride)
        selections = {"nu": (index, step, step), "tensor": (index, 0, step, step)}
        return {
            name: _float32(self._read(self._keys[name], selections[self._keys[name]], index))
            for name in self.fields
        }
