"""``physnet.datasets.open``: one entry point for every data file physnet reads.

The format is recognised by the file's content, not its name:

``"physnet-store"``
    HDF5 whose root attribute ``physnet_format`` is ``"physnet-store"`` (what
    ``physnet generate`` writes), read by :class:`~physnet.datasets.store.StoreDataset`.
``"pdebench-darcy"``
    HDF5 holding ``nu`` and ``tensor`` (PDEBench 2D Darcy), read by
    :class:`~physnet.datasets.readers.PDEBenchDarcyDataset`.
``"fno-mat-v7.3"``, ``"fno-hdf5"``, ``"fno-mat-v5"``
    FNO-style Darcy ``.mat`` holding ``coeff`` and ``sol``: MATLAB v7.3 (HDF5 behind a MATLAB
    header), plain HDF5, or MATLAB v5, read by
    :class:`~physnet.datasets.readers.FNODarcyDataset`.
"""

from __future__ import annotations

import builtins
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.io

from physnet._io import FileFormatError, check_readable
from physnet.datasets._base import FieldDataset
from physnet.datasets.readers import (
    FNODarcyDataset,
    PDEBenchDarcyDataset,
    has_matlab_v73_header,
    hdf5_offset,
    open_hdf5,
)
from physnet.datasets.store import FORMAT_NAME, StoreDataset

__all__ = ["detect_format", "open"]

_MATLAB_HEADER = b"MATLAB"


def _unknown(path: str | os.PathLike, found: str) -> FileFormatError:
    return FileFormatError(path, f"not a physnet store, FNO .mat or PDEBench HDF5 file ({found})")


def detect_format(path: str | os.PathLike) -> str:
    """Name the format of the data file ``path``, judged by its content.

    Parameters
    ----------
    path : str or os.PathLike

    Returns
    -------
    str
        ``"physnet-store"``, ``"pdebench-darcy"``, ``"fno-mat-v7.3"``, ``"fno-hdf5"`` or
        ``"fno-mat-v5"``.

    Raises
    ------
    FileFormatError
        If the file is missing, is a damaged HDF5 file, or is none of these formats (the
        message lists the keys found).

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np, scipy.io
    >>> path = os.path.join(tempfile.mkdtemp(), "darcy.dat")
    >>> scipy.io.savemat(path, {"coeff": np.ones((1, 3, 3)), "sol": np.ones((1, 3, 3))})
    >>> detect_format(path)
    'fno-mat-v5'
    """
    check_readable(path)
    if hdf5_offset(path) is not None:
        with open_hdf5(path) as file:
            store_format = file.attrs.get("physnet_format")
            if isinstance(store_format, bytes):
                store_format = store_format.decode("utf-8", "replace")
            if store_format == FORMAT_NAME:
                return "physnet-store"
            keys = set(file.keys())
            if {"nu", "tensor"} <= keys:
                return "pdebench-darcy"
            if {"coeff", "sol"} <= keys:
                matlab = has_matlab_v73_header(path) or "MATLAB_class" in file["coeff"].attrs
                return "fno-mat-v7.3" if matlab else "fno-hdf5"
        raise _unknown(path, f"found keys {sorted(keys)}")

    with builtins.open(path, "rb") as f:
        header = f.read(len(_MATLAB_HEADER))
    try:
        keys = {name for name, _, _ in scipy.io.whosmat(path)}
    except MemoryError:
        raise
    except Exception as error:  # SciPy raises several types for non-MATLAB bytes
        if header == _MATLAB_HEADER:
            raise FileFormatError(path, f"damaged MATLAB file ({error})") from None
        raise _unknown(path, "neither HDF5 nor MATLAB content") from None
    if {"coeff", "sol"} <= keys:
        return "fno-mat-v5"
    raise _unknown(path, f"found keys {sorted(keys)}")


def open(
    path: str | os.PathLike,
    *,
    split: str | Sequence[int] | slice | None = None,
    stride: int = 1,
    fields: Sequence[str] | None = None,
    **kwargs: Any,
) -> FieldDataset:
    """Open a data file as a lazy dataset of samples, whatever format it is in.

    Parameters
    ----------
    path : str or os.PathLike
        A physnet store, a PDEBench 2D Darcy HDF5 file or an FNO-style ``.mat`` file
        (MATLAB v5 or v7.3); see :func:`detect_format`.
    split : str, sequence of int or slice, optional
        A store's named split (``"train"``, ...), or the indices of the samples to keep
        (for any format; the file's other samples are never read).
    stride : int, default 1
        Subsampling of the FNO and PDEBench grids (``array[::stride, ::stride]``).
    fields : sequence of str, optional
        Read only these fields (all by default).
    **kwargs
        Passed on to the reader, e.g. ``n_samples`` for the FNO and PDEBench readers.

    Returns
    -------
    FieldDataset
        ``dataset[i]`` is a dict of NumPy arrays; a torch ``Dataset``, safe with many
        ``DataLoader`` workers.

    Raises
    ------
    FileFormatError
        If the file is missing, damaged, or in no format physnet reads.
    ValueError
        If ``split`` names a split of a file that has none, or ``stride`` is given for a
        physnet store.

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np, scipy.io
    >>> import physnet.datasets
    >>> path = os.path.join(tempfile.mkdtemp(), "piececonst_r9_N4.mat")
    >>> grid = np.arange(4 * 9 * 9, dtype=np.float64).reshape(4, 9, 9)
    >>> scipy.io.savemat(path, {"coeff": grid, "sol": grid / 2})
    >>> test = physnet.datasets.open(path, split=slice(2, 4), stride=4)
    >>> len(test), test.inputs, test.targets
    (2, ('coefficient',), ('solution',))
    >>> test[0]["solution"]
    array([[ 81.,  83.,  85.],
           [ 99., 101., 103.],
           [117., 119., 121.]], dtype=float32)
    """
    file_format = detect_format(path)
    named_split = split if isinstance(split, str) else None
    if file_format == "physnet-store":
        if stride != 1:
            raise ValueError(
                f"open: stride={stride!r} applies to FNO .mat and PDEBench files, "
                f"not to the physnet store {os.fspath(path)}"
            )
        dataset = StoreDataset(path, split=named_split, fields=fields, **kwargs)
    else:
        if named_split is not None:
            raise ValueError(
                f"open: split={split!r}, but {os.fspath(path)} ({file_format}) has no named "
                "splits; pass sample indices (a list or a slice) instead"
            )
        reader = PDEBenchDarcyDataset if file_format == "pdebench-darcy" else FNODarcyDataset
        dataset = reader(path, stride=stride, fields=fields, **kwargs)
    if split is None or named_split is not None:
        return dataset
    return dataset.subset(_split_indices(split, len(dataset)))


def _split_indices(split: Any, n: int) -> np.ndarray:
    if isinstance(split, slice):
        return np.arange(n)[split]
    indices = np.asarray(split)
    if indices.ndim != 1 or not (indices.size == 0 or np.issubdtype(indices.dtype, np.integer)):
        raise TypeError(
            f"open: split must be a split name, a slice or a sequence of sample indices, "
            f"not {split!r}"
        )
    return indices.astype(np.int64)
