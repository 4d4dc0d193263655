"""Atomic file output, the one error type for unreadable input files, and shard naming.

Every file physnet writes goes through :func:`atomic_write` (or :func:`atomic_path` for
libraries that only accept a path): the data goes to a temporary file in the target's
directory, is flushed and fsynced, and is renamed over the target only when the writer
finished without an exception. An interrupted run therefore leaves either the old file or
the complete new one, never a partial file.

Readers report a file they cannot use with :class:`FileFormatError`, whose message is one
line naming the file and what was wrong; the command line prints it without a traceback.

Commands that split their work over processes (``physnet generate``, ``physnet
reconstruct``) take the process's place from :func:`rank_and_world_size` (arguments, else
the ``RANK`` and ``WORLD_SIZE`` environment variables that ``torchrun`` and job arrays set)
and write it to :func:`shard_path`, which a merge step joins.

Examples
--------
>>> import os, tempfile
>>> import numpy as np
>>> from physnet._io import atomic_write, load_npy, save_npy
>>> folder = tempfile.mkdtemp()
>>> with atomic_write(os.path.join(folder, "notes.txt"), mode="w") as f:
...     _ = f.write("done\\n")
>>> save_npy(os.path.join(folder, "x.npy"), np.arange(3.0))
>>> load_npy(os.path.join(folder, "x.npy"))
array([0., 1., 2.])
>>> sorted(os.listdir(folder))
['notes.txt', 'x.npy']
"""

from __future__ import annotations

import contextlib
import numbers
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np

__all__ = [
    "FileFormatError",
    "atomic_path",
    "atomic_write",
    "check_readable",
    "load_npy",
    "publish",
    "rank_and_world_size",
    "save_npy",
    "shard_path",
    "write_text",
]

_MODES = ("wb", "w")


class FileFormatError(ValueError):
    """A file that cannot be read as what it should be.

    The message is a single line, ``"<path>: <what was wrong or expected>"``.

    Parameters
    ----------
    path : str or os.PathLike
        The offending file.
    reason : str
        What was wrong with it, naming the field where there is one.

    Examples
    --------
    >>> str(FileFormatError("A.npz", "field 'indptr' is missing"))
    "A.npz: field 'indptr' is missing"
    """

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        self.path = os.fspath(path)
        self.reason = " ".join(str(reason).split())
        super().__init__(f"{self.path}: {self.reason}")

    def __reduce__(self):  # keep the two-argument constructor picklable (worker processes)
        return (type(self), (self.path, self.reason))


def _new_file_mode() -> int:
    """Permissions an ordinary ``open(path, "w")`` would give a new file (0o666 minus umask)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _temporary_name(path: Path) -> str:
    fd, name = tempfile.mkstemp(
        dir=path.parent, prefix=f".{path.name}.", suffix=f".tmp{path.suffix}"
    )
    os.close(fd)
    return name


def _fsync_directory(directory: Path) -> None:
    # Makes the rename itself durable; not possible on every platform (e.g. Windows).
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def publish(temporary: str | os.PathLike, path: str | os.PathLike) -> None:
    """Rename a finished temporary file onto ``path`` atomically and durably.

    The file gets ``path``'s old permissions (or the usual ones for a new file) and the
    directory entry is fsynced. For writers that build a file over several runs (a
    resumable ``.partial`` store) and publish it once it is complete.
    """
    temporary, path = os.fspath(temporary), Path(path)
    mode = path.stat().st_mode & 0o7777 if path.exists() else _new_file_mode()
    os.chmod(temporary, mode)
    os.replace(temporary, path)
    _fsync_directory(path.parent)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[str]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` if the block succeeds.

    For writers that insist on opening the file themselves (h5py, some SciPy writers).
    The temporary name keeps ``path``'s suffix. The writer must close the file before
    the block ends; the file is then fsynced and renamed. If the block raises, the
    temporary file is removed and ``path`` is left as it was.

    Parameters
    ----------
    path : str or os.PathLike
        The final file. Its directory must exist.

    Yields
    ------
    str
        The temporary path to write to.

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np
    >>> target = os.path.join(tempfile.mkdtemp(), "a.npy")
    >>> with atomic_path(target) as temporary:
    ...     np.save(temporary, np.zeros(2))
    >>> np.load(target)
    array([0., 0.])
    """
    path = Path(path)
    temporary = _temporary_name(path)
    try:
        yield temporary
        with open(temporary, "rb+") as f:
            os.fsync(f.fileno())
        publish(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(temporary)
        raise


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO[Any]]:
    """Open a temporary file next to ``path`` and rename it onto ``path`` on success.

    Parameters
    ----------
    path : str or os.PathLike
        The final file. Its directory must exist.
    mode : {"wb", "w"}, default "wb"
        Binary, or text (UTF-8).

    Yields
    ------
    file object
        Write the whole content to it. On normal exit it is flushed, fsynced, closed and
        renamed over ``path`` (replacing an existing file, keeping its permissions). If the
        block raises (including ``KeyboardInterrupt``), the temporary file is removed, the
        old ``path`` is untouched and the exception propagates.

    Raises
    ------
    ValueError
        If ``mode`` is not one of the supported modes.

    Examples
    --------
    >>> import os, tempfile
    >>> target = os.path.join(tempfile.mkdtemp(), "result.txt")
    >>> with atomic_write(target, mode="w") as f:
    ...     _ = f.write("converged\\n")
    >>> Path(target).read_text()
    'converged\\n'
    """
    if mode not in _MODES:
        raise ValueError(f"atomic_write: mode={mode!r}, expected one of {_MODES}")
    path = Path(path)
    temporary = _temporary_name(path)
    try:
        kwargs = {"encoding": "utf-8"} if mode == "w" else {}
        with open(temporary, mode, **kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        publish(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(temporary)
        raise


def save_npy(path: str | os.PathLike, array: Any) -> None:
    """Write ``array`` to ``path`` in ``.npy`` format, atomically and without pickles.

    Parameters
    ----------
    path : str or os.PathLike
        The file to write (written as given: no ``.npy`` suffix is appended).
    array : array_like
        A numeric or boolean array; object arrays are refused.

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np
    >>> target = os.path.join(tempfile.mkdtemp(), "flags.npy")
    >>> save_npy(target, np.zeros((4, 4), dtype=np.int8))
    >>> np.load(target).shape
    (4, 4)
    """
    array = np.asanyarray(array)
    if array.dtype.hasobject:
        raise TypeError(f"save_npy: array has dtype {array.dtype}, expected a numeric dtype")
    with atomic_write(path, "wb") as f:
        np.save(f, array, allow_pickle=False)


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically.

    Examples
    --------
    >>> import os, tempfile
    >>> target = os.path.join(tempfile.mkdtemp(), "result.json")
    >>> write_text(target, '{"converged": true}')
    >>> Path(target).read_text()
    '{"converged": true}'
    """
    with atomic_write(path, "w") as f:
        f.write(text)


def load_npy(path: str | os.PathLike) -> np.ndarray:
    """Read a ``.npy`` file (no pickles), reporting any problem as :class:`FileFormatError`.

    Parameters
    ----------
    path : str or os.PathLike

    Returns
    -------
    numpy.ndarray

    Raises
    ------
    FileFormatError
        If the file is missing, is not a ``.npy`` file, is truncated, or holds objects.

    Examples
    --------
    >>> load_npy("no/such/file.npy")
    Traceback (most recent call last):
    ...
    physnet._io.FileFormatError: no/such/file.npy: no such file
    """
    check_readable(path)
    with open(path, "rb") as f:
        magic = f.read(6)
    if magic[:4] == b"PK\x03\x04":
        raise FileFormatError(path, "is an .npz archive, expected a single .npy array")
    if magic != b"\x93NUMPY":
        raise FileFormatError(path, "not a .npy file (no NumPy header)")
    try:
        return np.load(path, allow_pickle=False)
    except ValueError as error:
        if "pickle" in str(error).lower():
            raise FileFormatError(path, "holds Python objects (pickles are not loaded)") from None
        raise FileFormatError(path, f"truncated or corrupt .npy file ({error})") from None
    except (OSError, EOFError) as error:
        raise FileFormatError(path, f"truncated or corrupt .npy file ({error})") from None


def check_readable(path: str | os.PathLike) -> None:
    """Raise :class:`FileFormatError` unless ``path`` is an existing regular file."""
    if not os.path.exists(path):
        raise FileFormatError(path, "no such file")
    if not os.path.isfile(path):
        raise FileFormatError(path, "is not a regular file")


def shard_path(out: str | os.PathLike, rank: int, world_size: int) -> Path:
    """The file rank ``rank`` of ``world_size`` writes: ``OUT.shard-R-of-W.h5``.

    Examples
    --------
    >>> shard_path("data/fields.h5", 1, 4).name
    'fields.h5.shard-1-of-4.h5'
    """
    out = Path(out)
    return out.with_name(f"{out.name}.shard-{rank}-of-{world_size}.h5")


def rank_and_world_size(rank: int | None, world_size: int | None, where: str) -> tuple[int, int]:
    """This process's ``(rank, world_size)``: the arguments, else ``$RANK`` and ``$WORLD_SIZE``.

    Neither given (nor set) means one process, ``(0, 1)``.

    Raises
    ------
    ValueError
        For a rank without a world size or the reverse, a world size below 1, a rank outside
        ``[0, world_size - 1]``, or an environment variable that is not an integer (each
        message starts with ``where``).
    TypeError
        For a rank or world size that is not an integer.

    Examples
    --------
    >>> rank_and_world_size(1, 4, "generate")
    (1, 4)
    """
    if world_size is None:
        world_size = _environment_integer("WORLD_SIZE", where)
    if rank is None:
        rank = _environment_integer("RANK", where)
    if world_size is None:
        if rank not in (None, 0):
            raise ValueError(f"{where}: rank={rank} is given without world_size")
        return 0, 1
    world_size = _check_integer(f"{where}: world_size", world_size, 1)
    if rank is None:
        raise ValueError(f"{where}: world_size={world_size} is given without rank (or RANK)")
    rank = _check_integer(f"{where}: rank", rank, 0, world_size - 1)
    return rank, world_size


def _environment_integer(variable: str, where: str) -> int | None:
    value = os.environ.get(variable)
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise ValueError(
            f"{where}: environment variable {variable}={value!r}, expected an integer"
        ) from None


def _check_integer(where: str, value: Any, minimum: int, maximum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{where}: expected an integer, got {value!r}")
    if value < minimum or (maximum is not None and value > maximum):
        bound = f"in [{minimum}, {maximum}]" if maximum is not None else f">= {minimum}"
        raise ValueError(f"{where}: {value}, expected an integer {bound}")
    return int(value)
