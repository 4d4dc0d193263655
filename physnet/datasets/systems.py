"""Linear systems ``A x = b`` on disk: ``.npz``, Matrix Market and the DCDM/Eigen binary dumps.

Formats, chosen by the file suffix:

``.npz``
    One NumPy archive with the CSR arrays under SciPy's :func:`scipy.sparse.save_npz` names
    (``format``, ``shape``, ``data``, ``indices``, ``indptr``) plus the right-hand side under
    ``b`` when there is one; ``scipy.sparse.load_npz`` reads the matrix. Exact round trip.
``.mtx``
    Matrix Market (:func:`scipy.io.mmwrite`) for ``A``; the right-hand side goes to the
    sibling file ``<stem>.rhs.mtx`` as an ``(n, 1)`` array. Values are written with the
    shortest representation that reads back to the same double.

Readers check what they read (shape, index ranges, lengths, NaN/Inf) and report a file they
cannot use with :class:`~physnet._io.FileFormatError`, whose message names the file and the field.

Examples
--------
>>> import os, tempfile
>>> import numpy as np, scipy.sparse as sp
>>> from physnet.datasets import load_system, save_system
>>> A = sp.diags([2.0, 3.0, 4.0]).tocsr()
>>> path = os.path.join(tempfile.mkdtemp(), "system.npz")
>>> save_system(path, A, np.ones(3))
>>> A2, b2 = load_system(path)
>>> (A2 != A).nnz, b2
(0, array([1., 1., 1.]))
"""

from __future__ import annotations

import contextlib
import os
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import scipy.io
import scipy.sparse

from physnet._io import FileFormatError, atomic_write, check_readable, load_npy

__all__ = ["load_system", "load_vector", "read_eigen_sparse", "read_eigen_vector", "save_system"]

_SYSTEM_SUFFIXES = (".npz", ".mtx")
_VECTOR_SUFFIXES = (".npy", ".mtx", ".npz")
_NPZ_MATRIX_KEYS = ("format", "shape", "data", "indices", "indptr")
_EIGEN_HEADER = np.dtype([(name, "<i4") for name in ("rows", "cols", "nnz", "outer", "inner")])


def rhs_path(path: str | os.PathLike) -> Path:
    """The sibling file holding the right-hand side of a Matrix Market system.

    Examples
    --------
    >>> str(rhs_path("data/A.mtx"))
    'data/A.rhs.mtx'
    """
    path = Path(path)
    return path.with_name(f"{path.stem}.rhs.mtx")


# --- writing ------------------------------------------------------------------------------


def save_system(path: str | os.PathLike, A: Any, b: Any = None) -> None:
    """Write the system ``(A, b)`` to ``path`` (``.npz`` or ``.mtx``), atomically.

    Parameters
    ----------
    path : str or os.PathLike
        Target file; its suffix picks the format.
    A : scipy.sparse matrix or array, or 2-D numpy.ndarray
        A square matrix with finite entries.
    b : array_like, optional
        Right-hand side of length ``n``. For ``.mtx`` it is written to
        ``<stem>.rhs.mtx``; when ``b`` is None an existing ``<stem>.rhs.mtx`` (belonging to
        the system being replaced) is removed, so the pair on disk always matches.

    Raises
    ------
    ValueError
        For an unknown suffix, a non-square ``A``, a ``b`` of the wrong length, or NaN/Inf.

    Notes
    -----
    Each file is written to a temporary name and renamed. A Matrix Market system is two
    files, each replaced atomically; the matrix is written first.

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np, scipy.sparse as sp
    >>> folder = tempfile.mkdtemp()
    >>> save_system(os.path.join(folder, "A.mtx"), sp.eye(3, format="csr"), np.arange(3.0))
    >>> sorted(os.listdir(folder))
    ['A.mtx', 'A.rhs.mtx']
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in _SYSTEM_SUFFIXES:
        raise ValueError(
            f"save_system: cannot tell the format of {str(path)!r} from its suffix, "
            f"expected one of {_SYSTEM_SUFFIXES}"
        )
    matrix = _check_matrix(A)
    vector = None if b is None else _check_vector(b, matrix.shape[0])

    if suffix == ".npz":
        arrays = {
            "format": np.array("csr"),
            "shape": np.array(matrix.shape, dtype=np.int64),
            "data": matrix.data,
            "indices": matrix.indices,
            "indptr": matrix.indptr,
        }
        if vector is not None:
            arrays["b"] = vector
        with atomic_write(path) as f:
            np.savez(f, **arrays)
        return

    with atomic_write(path) as f:
        scipy.io.mmwrite(f, matrix, comment="written by physnet.datasets.save_system")
    sibling = rhs_path(path)
    if vector is None:
        if sibling.exists():
            os.remove(sibling)
        return
    with atomic_write(sibling) as f:
        scipy.io.mmwrite(f, vector.reshape(-1, 1), comment="right-hand side of " + path.name)


def _check_matrix(A: Any) -> scipy.sparse.csr_matrix:
    if scipy.sparse.issparse(A):
        matrix = scipy.sparse.csr_matrix(A)
    elif isinstance(A, np.ndarray):
        if A.ndim != 2:
            raise ValueError(f"save_system: A has {A.ndim} dimensions, expected 2")
        matrix = scipy.sparse.csr_matrix(A)
    else:
        raise TypeError(
            f"save_system: A is a {type(A).__name__}, expected a SciPy sparse matrix or a 2-D "
            "NumPy array (use to_csr() for a physnet grid operator)"
        )
    if matrix.shape[0] != matrix.shape[1]:
        raise ValueError(f"save_system: A has shape {matrix.shape}, expected a square matrix")
    if matrix.dtype.kind not in "iufc":
        raise TypeError(f"save_system: A has dtype {matrix.dtype}, expected a numeric dtype")
    matrix.sum_duplicates()
    if not np.all(np.isfinite(matrix.data)):
        raise ValueError("save_system: A has NaN or Inf entries")
    return matrix


def _check_vector(b: Any, n: int) -> np.ndarray:
    vector = np.asarray(b)
    if vector.ndim == 2 and vector.shape[1] == 1:
        vector = vector[:, 0]
    if vector.shape != (n,):
        raise ValueError(f"save_system: b has shape {vector.shape}, expected ({n},) to match A")
    if vector.dtype.kind not in "iufc":
        raise TypeError(f"save_system: b has dtype {vector.dtype}, expected a numeric dtype")
    if not np.all(np.isfinite(vector)):
        raise ValueError("save_system: b has NaN or Inf entries")
    return np.ascontiguousarray(vector)


# --- reading ------------------------------------------------------------------------------


def load_system(
    path: str | os.PathLike, rhs: str | os.PathLike | None = None
) -> tuple[scipy.sparse.csr_matrix, np.ndarray | None]:
    """Read a system written by :func:`save_system` (or any ``.npz``/``.mtx`` in that layout).

    Parameters
    ----------
    path : str or os.PathLike
        A ``.npz`` archive or a Matrix Market ``.mtx`` file.
    rhs : str or os.PathLike, optional
        A right-hand side file (``.npy``, ``.mtx`` or ``.npz``, see :func:`load_vector`). It
        replaces any ``b`` stored with the matrix. Without it, ``b`` is the ``b`` field of an
        ``.npz`` or the sibling ``<stem>.rhs.mtx`` of an ``.mtx``, or None if there is none.

    Returns
    -------
    A : scipy.sparse.csr_matrix
        Square, finite, with sorted indices; integer matrices are returned as float64.
    b : numpy.ndarray or None
        One-dimensional, of length ``A.shape[0]``.

    Raises
    ------
    FileFormatError
        If a file is missing or unreadable, lacks a field, is truncated, holds a non-square
        matrix, inconsistent CSR arrays, NaN/Inf, or a ``b`` whose length is not ``n``.

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np, scipy.sparse as sp
    >>> path = os.path.join(tempfile.mkdtemp(), "A.mtx")
    >>> save_system(path, sp.diags([1.0, 2.0]), np.array([0.5, 0.25]))
    >>> A, b = load_system(path)
    >>> A.toarray(), b
    (array([[1., 0.],
           [0., 2.]]), array([0.5 , 0.25]))
    """
    check_readable(path)
    suffix = Path(path).suffix.lower()
    if suffix == ".npz":
        matrix, vector = _load_npz_system(path)
    elif suffix == ".mtx":
        matrix = _sparse_from_mtx(path)
        vector = None
        if rhs is None and rhs_path(path).exists():
            rhs = rhs_path(path)
    else:
        raise FileFormatError(path, f"unknown system format, expected one of {_SYSTEM_SUFFIXES}")
    if rhs is not None:
        vector = load_vector(rhs)
        source = rhs
    else:
        source = path
    if vector is not None and vector.shape != (matrix.shape[0],):
        raise FileFormatError(
            source, f"field 'b' has length {vector.size}, expected {matrix.shape[0]} to match A"
        )
    return matrix, vector


def load_vector(path: str | os.PathLike) -> np.ndarray:
    """Read a right-hand side or solution vector from ``.npy``, ``.mtx`` or ``.npz``.

    Parameters
    ----------
    path : str or os.PathLike
        ``.npy``: a 1-D or ``(n, 1)`` array. ``.mtx``: an ``(n, 1)`` or ``(1, n)`` matrix.
        ``.npz``: the array named ``b``, or the only array in the archive.

    Returns
    -------
    numpy.ndarray
        One-dimensional and finite; integer data is returned as float64.

    Raises
    ------
    FileFormatError
        If the file is missing or unreadable, is not a vector, or holds NaN/Inf.

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np
    >>> path = os.path.join(tempfile.mkdtemp(), "b.npy")
    >>> np.save(path, np.ones((3, 1)))
    >>> load_vector(path)
    array([1., 1., 1.])
    """
    check_readable(path)
    suffix = Path(path).suffix.lower()
    if suffix == ".npy":
        vector = load_npy(path)
    elif suffix == ".mtx":
        vector = _read_mtx(path)
        if scipy.sparse.issparse(vector):
            vector = vector.toarray()
    elif suffix == ".npz":
        with _open_npz(path) as archive:
            names = archive.files
            if "b" in names:
                key = "b"
            elif len(names) == 1:
                key = names[0]
            else:
                raise FileFormatError(
                    path, f"holds arrays {sorted(names)}, expected one named 'b' or a single array"
                )
            vector = _npz_field(path, archive, key)
    else:
        raise FileFormatError(path, f"unknown vector format, expected one of {_VECTOR_SUFFIXES}")
    vector = np.asarray(vector)
    if vector.ndim == 2 and 1 in vector.shape:
        vector = vector.reshape(-1)
    if vector.ndim != 1:
        raise FileFormatError(path, f"holds an array of shape {vector.shape}, expected a vector")
    return _numeric(path, "vector", vector)


def _numeric(path: Any, what: str, values: np.ndarray) -> np.ndarray:
    if values.dtype.kind not in "iufc":
        raise FileFormatError(path, f"{what} has dtype {values.dtype}, expected numbers")
    if values.dtype.kind in "iu":
        values = values.astype(np.float64)
    bad = np.count_nonzero(~np.isfinite(values))
    if bad:
        raise FileFormatError(path, f"{what} has {bad} NaN or Inf entries")
    return values


@contextlib.contextmanager
def _open_npz(path: Any) -> Iterator[Any]:
    # Open the file here so that it is closed even when NumPy fails to read the archive.
    with open(path, "rb") as f:
        try:
            archive = np.load(f, allow_pickle=False)
        except (ValueError, OSError, EOFError, zipfile.BadZipFile) as error:
            raise FileFormatError(path, f"not a readable .npz archive ({error})") from None
        if not hasattr(archive, "files"):
            raise FileFormatError(path, "is a single .npy array, expected an .npz archive")
        with archive:
            yield archive


def _npz_field(path: Any, archive: Any, key: str) -> np.ndarray:
    if key not in archive.files:
        raise FileFormatError(path, f"field {key!r} is missing (fields: {sorted(archive.files)})")
    try:
        return archive[key]
    except ValueError as error:
        if "pickle" in str(error).lower():
            raise FileFormatError(path, f"field {key!r} holds Python objects") from None
        raise FileFormatError(path, f"field {key!r} is truncated or corrupt ({error})") from None
    except (OSError, EOFError, zipfile.BadZipFile) as error:
        raise FileFormatError(path, f"field {key!r} is truncated or corrupt ({error})") from None


def _load_npz_system(path: Any) -> tuple[scipy.sparse.csr_matrix, np.ndarray | None]:
    with _open_npz(path) as archive:
        fields = {key: _npz_field(path, archive, key) for key in _NPZ_MATRIX_KEYS}
        vector = _npz_field(path, archive, "b") if "b" in archive.files else None
    layout = fields["format"]
    layout = layout.item() if layout.ndim == 0 else None
    if isinstance(layout, bytes):
        layout = layout.decode("ascii", errors="replace")
    if layout not in ("csr", "csc"):
        raise FileFormatError(path, f"field 'format' is {layout!r}, expected 'csr' or 'csc'")
    shape = fields["shape"]
    if shape.shape != (2,) or shape.dtype.kind not in "iu":
        raise FileFormatError(path, f"field 'shape' is {shape!r}, expected two integers")
    matrix = _compressed_matrix(
        path, layout, fields["data"], fields["indices"], fields["indptr"], tuple(shape.tolist())
    )
    if vector is not None:
        if vector.ndim == 2 and vector.shape[1:] == (1,):
            vector = vector[:, 0]
        if vector.shape != (matrix.shape[0],):
            raise FileFormatError(
                path, f"field 'b' has shape {vector.shape}, expected ({matrix.shape[0]},)"
            )
        vector = _numeric(path, "field 'b'", vector)
    return matrix, vector


def _compressed_matrix(
    path: Any,
    layout: str,
    data: np.ndarray,
    indices: np.ndarray,
    indptr: np.ndarray,
    shape: tuple[int, int],
) -> scipy.sparse.csr_matrix:
    """Validate compressed-sparse arrays fully and build a square CSR matrix from them."""
    rows, cols = shape
    if rows < 0 or cols < 0:
        raise FileFormatError(path, f"field 'shape' is {shape}, expected non-negative sizes")
    if rows != cols:
        raise FileFormatError(path, f"field 'shape' is {shape}, expected a square matrix")
    outer, inner = (rows, cols) if layout == "csr" else (cols, rows)
    for name, array in (("data", data), ("indices", indices), ("indptr", indptr)):
        if array.ndim != 1:
            raise FileFormatError(path, f"field {name!r} has shape {array.shape}, expected 1-D")
    for name, array in (("indices", indices), ("indptr", indptr)):
        if array.dtype.kind not in "iu":
            raise FileFormatError(
                path, f"field {name!r} has dtype {array.dtype}, expected integers"
            )
    if indptr.size != outer + 1:
        raise FileFormatError(
            path, f"field 'indptr' has length {indptr.size}, expected {outer + 1} for shape {shape}"
        )
    nnz = data.size
    if indices.size != nnz:
        raise FileFormatError(
            path,
            f"field 'indices' has length {indices.size}, expected {nnz} (the length of 'data')",
        )
    if indptr[0] != 0 or indptr[-1] != nnz or np.any(np.diff(indptr) < 0):
        raise FileFormatError(path, f"field 'indptr' must rise from 0 to {nnz} without decreasing")
    if nnz and (indices.min() < 0 or indices.max() >= inner):
        raise FileFormatError(path, f"field 'indices' has entries outside [0, {inner})")
    data = _numeric(path, "field 'data'", data)
    index_dtype = np.int32 if max(nnz, inner) < np.iinfo(np.int32).max else np.int64
    parts = (data, indices.astype(index_dtype, copy=False), indptr.astype(index_dtype, copy=False))
    if layout == "csr":
        matrix = scipy.sparse.csr_matrix(parts, shape=shape)
    else:
        matrix = scipy.sparse.csc_matrix(parts, shape=shape).tocsr()
    matrix.sum_duplicates()
    return matrix


def _read_mtx(path: Any) -> Any:
    with open(path, "rb") as f:
        if not f.read(14).startswith(b"%%MatrixMarket"):
            raise FileFormatError(path, "not a Matrix Market file (no '%%MatrixMarket' header)")
    try:
        return scipy.io.mmread(path)
    except Exception as error:  # the reader raises several types for malformed text
        raise FileFormatError(path, f"not a readable Matrix Market file ({error})") from None


def _sparse_from_mtx(path: Any) -> scipy.sparse.csr_matrix:
    content = _read_mtx(path)
    matrix = scipy.sparse.csr_matrix(content)
    if matrix.shape[0] != matrix.shape[1]:
        raise FileFormatError(path, f"matrix has shape {matrix.shape}, expected a square matrix")
    matrix.sum_duplicates()
    matrix.data = _numeric(path, "matrix", matrix.data)
    return matrix


# --- DCDM / Eigen binary dumps ------------------------------------------------------------


def read_eigen_sparse(path: str | os.PathLike) -> scipy.sparse.csr_matrix:
    """Read an Eigen ``SparseMatrix`` binary dump, the matrix format of the DCDM data.

    Parameters
    ----------
    path : str or os.PathLike

    Returns
    -------
    scipy.sparse.csr_matrix
        float32 or float64, as stored.

    Raises
    ------
    FileFormatError
        If the file is missing, its size does not match its header, or the arrays are
        inconsistent (pointers not rising from 0 to nnz, indices out of range, NaN/Inf).

    Notes
    -----
    Layout (little-endian): five int32 ``rows, cols, nnz, outerSize, innerSize``; ``nnz``
    values; ``outerSize`` int32 outer pointers (the final pointer, ``nnz``, is not stored);
    ``nnz`` int32 inner indices. The value type is inferred from the file size:
    ``20 + nnz * (itemsize + 4) + 4 * outerSize`` bytes with itemsize 4 (float32, the DCDM
    files) or 8 (float64, the NPSDO files). The storage is read as row-major (CSR), as the
    DCDM reader does; a column-major dump of a square matrix reads as its transpose, which
    is the same matrix for the symmetric Poisson matrices these files hold.
    The arrays are read with :func:`numpy.frombuffer`, so a ``256^3`` matrix loads in a
    fraction of a second.

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np
    >>> header = np.array([2, 2, 2, 2, 2], dtype="<i4")
    >>> values = np.array([4.0, 5.0], dtype="<f4")
    >>> pointers, columns = np.array([0, 1], dtype="<i4"), np.array([0, 1], dtype="<i4")
    >>> path = os.path.join(tempfile.mkdtemp(), "matrixA_1.bin")
    >>> with open(path, "wb") as f:
    ...     _ = f.write(b"".join(a.tobytes() for a in (header, values, pointers, columns)))
    >>> read_eigen_sparse(path).toarray()
    array([[4., 0.],
           [0., 5.]], dtype=float32)
    """
    check_readable(path)
    raw = Path(path).read_bytes()
    if len(raw) < _EIGEN_HEADER.itemsize:
        raise FileFormatError(path, f"file has {len(raw)} bytes, shorter than the 20-byte header")
    header = np.frombuffer(raw, dtype=_EIGEN_HEADER, count=1)[0]
    rows, cols, nnz, outer, inner = (int(header[name]) for name in _EIGEN_HEADER.names)
    if min(rows, cols, nnz, outer, inner) < 0:
        raise FileFormatError(path, f"header {rows, cols, nnz, outer, inner} has negative sizes")
    if (outer, inner) != (rows, cols):
        raise FileFormatError(
            path,
            f"header outerSize={outer}, innerSize={inner}, expected rows={rows}, cols={cols} "
            "(row-major storage)",
        )
    payload = len(raw) - _EIGEN_HEADER.itemsize - 4 * outer - 4 * nnz
    itemsize = payload // nnz if nnz else 8
    if (nnz and (payload % nnz or itemsize not in (4, 8))) or (not nnz and payload != 0):
        raise FileFormatError(
            path,
            f"file has {len(raw)} bytes, expected 20 + {nnz} * (4 or 8) + {4 * outer} + {4 * nnz} "
            f"for rows={rows}, nnz={nnz}, outerSize={outer} (truncated?)",
        )
    offset = _EIGEN_HEADER.itemsize
    values = np.frombuffer(raw, dtype=f"<f{itemsize}", count=nnz, offset=offset)
    offset += itemsize * nnz
    pointers = np.frombuffer(raw, dtype="<i4", count=outer, offset=offset)
    offset += 4 * outer
    indices = np.frombuffer(raw, dtype="<i4", count=nnz, offset=offset)
    indptr = np.append(pointers, np.int32(nnz)).astype(np.int32)
    return _compressed_matrix(
        path,
        "csr",
        values.astype(values.dtype.newbyteorder("=")),
        indices.copy(),
        indptr,
        (rows, cols),
    )


def read_eigen_vector(path: str | os.PathLike, dtype: Any = np.float64) -> np.ndarray:
    """Read a DCDM/NPSDO vector dump: a uint64 length, then the values.

    Parameters
    ----------
    path : str or os.PathLike
    dtype : dtype, default float64
        The stored type: float64 for ``div_v_star*.bin``, int32 for ``flags*.bin``
        (little-endian).

    Returns
    -------
    numpy.ndarray
        One-dimensional, of the given dtype.

    Raises
    ------
    FileFormatError
        If the file is missing, its size does not match the length header, or a floating
        vector holds NaN/Inf.

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np
    >>> path = os.path.join(tempfile.mkdtemp(), "div_v_star1.bin")
    >>> with open(path, "wb") as f:
    ...     _ = f.write(np.uint64(3).tobytes() + np.arange(3.0).tobytes())
    >>> read_eigen_vector(path)
    array([0., 1., 2.])
    """
    dtype = np.dtype(dtype).newbyteorder("<")
    if dtype.kind not in "iuf":
        raise TypeError(f"read_eigen_vector: dtype={dtype}, expected an integer or float dtype")
    check_readable(path)
    raw = Path(path).read_bytes()
    if len(raw) < 8:
        raise FileFormatError(path, f"file has {len(raw)} bytes, shorter than the 8-byte header")
    length = int(np.frombuffer(raw, dtype="<u8", count=1)[0])
    expected = 8 + length * dtype.itemsize
    if len(raw) != expected:
        raise FileFormatError(
            path,
            f"file has {len(raw)} bytes, expected {expected} for a length-{length} vector of "
            f"{dtype.name} (truncated or another dtype?)",
        )
    values = np.frombuffer(raw, dtype=dtype, count=length, offset=8).astype(dtype.newbyteorder("="))
    if values.dtype.kind == "f":
        bad = np.count_nonzero(~np.isfinite(values))
        if bad:
            raise FileFormatError(path, f"vector has {bad} NaN or Inf entries")
    return values
