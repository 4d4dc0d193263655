"""The physnet store: one HDF5 layout for every generated dataset.

Layout of a store file (h5py; every object created without timestamps, so equal content
gives equal bytes):

``/<field>``
    One dataset per field, shape ``(n_samples, *sample_shape)``, chunked one sample per
    chunk (``chunks=(1, *sample_shape)``), uncompressed unless asked. Without compression
    every chunk is allocated when the file is created, at a fixed place, so the bytes of
    the finished file do not depend on the order in which samples were written.
``/_written``
    ``bool (n_samples,)``: which samples are present (for resuming an interrupted run).
``/_checksums``
    ``uint32 (n_samples, n_fields)``: CRC-32 of each sample's bytes, field by field in
    the order of the ``fields`` attribute; readers compare them, so flipped bits are
    reported instead of returned.
``/splits/<name>``
    Optional ``int64`` sample indices of named splits (``train``, ``val``, ``test``),
    sorted, in range and mutually disjoint.
root attributes
    ``physnet_format = "physnet-store"``, ``format_version = 1``, ``physnet_version``,
    ``n_samples``, ``generator`` (name), ``config`` (JSON), ``seed``, ``inputs`` and
    ``targets`` (JSON lists of field names), ``fields`` (JSON: name ->
    ``{"shape": [...], "dtype": "..."}``) and whatever else the writer was given.

:class:`StoreWriter` writes a store under a temporary name (``PATH.partial``) and renames
it to ``PATH`` only once every sample is written, so a file at ``PATH`` is always
complete; :meth:`StoreWriter.resume` reopens the partial file after an interruption.
:class:`StoreDataset` reads a store lazily, one sample at a time, and is safe with any
number of ``DataLoader`` workers. :func:`verify_store` reads every sample back.

Examples
--------
>>> import os, tempfile
>>> import numpy as np
>>> from physnet.datasets.store import StoreDataset, StoreWriter
>>> path = os.path.join(tempfile.mkdtemp(), "pairs.h5")
>>> fields = {"x": ((3,), np.float32), "y": ((), np.int64)}
>>> writer = StoreWriter(path, fields, 4, inputs=["x"], targets=["y"],
...                      attrs={"generator": "example", "config": {"scale": 2}, "seed": 0})
>>> for i in range(4):
...     writer.write(i, {"x": np.full(3, i, np.float32), "y": np.int64(2 * i)})
>>> writer.finalize(splits={"train": [0, 1, 2], "test": [3]}).name
'pairs.h5'
>>> train = StoreDataset(path, split="train")
>>> len(train), train[2]["x"], int(train[2]["y"])
(3, array([2., 2., 2.], dtype=float32), 4)
>>> train.attrs["config"]
{'scale': 2}
"""

from __future__ import annotations

import contextlib
import functools
import json
import numbers
import os
import time
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from physnet._io import FileFormatError, check_readable, publish
from physnet.backend import require
from physnet.datasets._base import FieldDataset
from physnet.datasets._handles import PerProcessHandle

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "StoreDataset",
    "StoreWriter",
    "is_store",
    "partial_path",
    "verify_store",
]

FORMAT_NAME = "physnet-store"
FORMAT_VERSION = 1
PARTIAL_SUFFIX = ".partial"

_WRITTEN = "_written"
_CHECKSUMS = "_checksums"
_SPLITS = "splits"
_RESERVED = (_WRITTEN, _CHECKSUMS, _SPLITS)
# Root attributes always stored as JSON text; other dicts and lists given in ``attrs`` are
# too, and their names are listed in the root attribute ``json_attributes``.
_JSON_ATTRIBUTES = ("config", "inputs", "targets", "fields", "json_attributes")
_LAYOUT_ATTRIBUTES = (
    "physnet_format",
    "format_version",
    "physnet_version",
    "n_samples",
    "inputs",
    "targets",
    "fields",
    "json_attributes",
)


def _h5py() -> Any:
    return require("h5py", "the physnet HDF5 store")


def partial_path(path: str | os.PathLike) -> Path:
    """The temporary name of a store while it is written: ``PATH.partial``.

    Examples
    --------
    >>> partial_path("data/scenes.h5").name
    'scenes.h5.partial'
    """
    path = Path(path)
    return path.with_name(path.name + PARTIAL_SUFFIX)


def is_store(path: str | os.PathLike) -> bool:
    """Whether ``path`` is an HDF5 file marked as a physnet store (complete or not).

    Examples
    --------
    >>> is_store("no/such/file.h5")
    False
    """
    if not os.path.isfile(path):
        return False
    h5py = _h5py()
    try:
        with h5py.File(path, "r") as file:
            return _text(file.attrs.get("physnet_format")) == FORMAT_NAME
    except OSError:
        return False


# --- attributes and validation ------------------------------------------------------------


def _text(value: Any) -> Any:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _encode_attribute(name: str, value: Any) -> Any:
    if _is_json(name, value):
        return json.dumps(value, sort_keys=name != "fields")
    if isinstance(value, (bool, np.bool_)):
        return np.bool_(value)
    if isinstance(value, numbers.Integral):
        return np.int64(value)
    if isinstance(value, numbers.Real):
        return np.float64(value)
    if isinstance(value, str):
        return value
    raise TypeError(
        f"StoreWriter: attribute {name!r} is {type(value).__name__}, expected a string, "
        "a number, a bool or a JSON-serialisable list or dict"
    )


def _is_json(name: str, value: Any) -> bool:
    return name in _JSON_ATTRIBUTES or isinstance(value, (Mapping, list, tuple))


def _decode_attributes(path: Path, attributes: Mapping[str, Any]) -> dict[str, Any]:
    json_names = set(_JSON_ATTRIBUTES)
    with contextlib.suppress(TypeError, ValueError):
        json_names.update(json.loads(_text(attributes.get("json_attributes", "[]"))))
    decoded = {}
    for name, value in attributes.items():
        value = _text(value)
        if name in json_names:
            try:
                value = json.loads(value)
            except (TypeError, ValueError):
                raise FileFormatError(
                    path, f"attribute {name!r} is not valid JSON: {value!r}"
                ) from None
        elif isinstance(value, np.generic):
            value = value.item()
        decoded[name] = value
    return decoded


def _check_fields_spec(fields: Mapping[str, Any]) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    if not isinstance(fields, Mapping) or not fields:
        raise ValueError(
            f"StoreWriter: fields={fields!r}, expected a non-empty dict "
            "name -> (sample_shape, dtype)"
        )
    checked = {}
    for name, spec in fields.items():
        if not isinstance(name, str) or not name or "/" in name or name.startswith("_"):
            raise ValueError(
                f"StoreWriter: field name {name!r}, expected a non-empty string without '/' "
                "that does not start with '_'"
            )
        if name == _SPLITS:
            raise ValueError(f"StoreWriter: field name {name!r} is reserved for the splits group")
        try:
            shape, dtype = spec
            shape = tuple(int(n) for n in shape)
            dtype = np.dtype(dtype)
        except (TypeError, ValueError):
            raise ValueError(
                f"StoreWriter: field {name!r} has spec {spec!r}, expected (sample_shape, dtype)"
            ) from None
        if any(n < 1 for n in shape):
            raise ValueError(f"StoreWriter: field {name!r} has shape {shape}, expected sizes >= 1")
        if dtype.kind not in "biufc":
            raise ValueError(
                f"StoreWriter: field {name!r} has dtype {dtype}, expected a numeric or bool dtype"
            )
        checked[name] = (shape, dtype)
    return checked


def _fields_attribute(fields: Mapping[str, tuple[tuple[int, ...], np.dtype]]) -> dict[str, Any]:
    return {
        name: {"shape": list(shape), "dtype": dtype.str} for name, (shape, dtype) in fields.items()
    }


def _check_names(owner: str, what: str, names: Sequence[str], fields: Mapping[str, Any]) -> list:
    names = [names] if isinstance(names, str) else list(names)
    unknown = [name for name in names if name not in fields]
    if unknown:
        raise ValueError(f"{owner}: {what} {unknown} are not fields; fields are {list(fields)}")
    return names


def check_splits(splits: Mapping[str, Any] | None, n_samples: int) -> dict[str, np.ndarray]:
    """Validate named splits of ``n_samples`` samples: sorted int64 index arrays.

    Parameters
    ----------
    splits : dict of str to sequence of int, or None
        For example ``{"train": [...], "val": [...], "test": [...]}``.
    n_samples : int

    Returns
    -------
    dict of str to numpy.ndarray of int64
        Each split's indices, sorted.

    Raises
    ------
    ValueError
        For a bad name, indices out of range or repeated, or two splits sharing samples.

    Examples
    --------
    >>> check_splits({"train": [2, 0], "test": [1]}, 3)
    {'train': array([0, 2]), 'test': array([1])}
    >>> check_splits({"train": [0, 1], "test": [1]}, 3)
    Traceback (most recent call last):
    ...
    ValueError: splits 'train' and 'test' share 1 sample(s), e.g. sample 1
    """
    if splits is None:
        return {}
    if not isinstance(splits, Mapping):
        raise ValueError(f"splits={splits!r}, expected a dict name -> sample indices")
    checked: dict[str, np.ndarray] = {}
    for name, indices in splits.items():
        if not isinstance(name, str) or not name.isidentifier():
            raise ValueError(f"split name {name!r}, expected an identifier such as 'train'")
        array = np.asarray(indices)
        if array.size == 0:
            array = array.astype(np.int64)
        if array.ndim != 1 or array.dtype.kind not in "iu":
            raise ValueError(
                f"split {name!r}: expected a 1-D sequence of sample indices, got {indices!r}"
            )
        array = np.sort(array.astype(np.int64))
        if array.size and (array[0] < 0 or array[-1] >= n_samples):
            raise ValueError(
                f"split {name!r}: indices {array[0]}..{array[-1]} out of range for "
                f"{n_samples} samples"
            )
        repeated = array[1:][array[1:] == array[:-1]]
        if repeated.size:
            raise ValueError(f"split {name!r}: sample {repeated[0]} appears more than once")
        for other, other_indices in checked.items():
            shared = np.intersect1d(array, other_indices)
            if shared.size:
                raise ValueError(
                    f"splits {other!r} and {name!r} share {shared.size} sample(s), "
                    f"e.g. sample {shared[0]}"
                )
        checked[name] = array
    return checked


def _checksum(array: np.ndarray) -> int:
    return zlib.crc32(np.ascontiguousarray(array).view(np.uint8).reshape(-1))


# --- writing ------------------------------------------------------------------------------


class StoreWriter:
    """Write a physnet store sample by sample, at a temporary name, then publish it.

    The file is created at ``PATH.partial`` with every dataset allocated; each
    :meth:`write` stores one sample at its index, and :meth:`flush` (at least every
    ``flush_interval`` seconds) marks the samples written in ``_written`` once their data
    is in the file, so a killed process loses at most the last interval's samples and the
    partial file can be reopened with :meth:`resume`. :meth:`finalize` checks that every
    sample is present and renames the file to ``PATH``.

    Parameters
    ----------
    path : str or os.PathLike
        The final file (conventionally ``*.h5``). Its directory must exist.
    fields : dict of str to (tuple of int, dtype)
        Each field's per-sample shape and dtype, in the order readers list them.
    n_samples : int
        Number of samples, at least 1.
    attrs : dict, optional
        Provenance recorded as root attributes: conventionally ``generator`` (str),
        ``config`` (dict, stored as JSON) and ``seed`` (int); any other string, number,
        bool, list or dict (lists and dicts are stored as JSON text).
    inputs, targets : sequence of str
        The fields a supervised model maps from and to.
    splits : dict of str to sequence of int, optional
        Named splits, validated by :func:`check_splits`; may instead be given to
        :meth:`finalize`.
    compression : {None, "gzip", "lzf"}, default None
        Chunk compression. Without it a file's bytes are a function of its content alone;
        with it they can depend on the order of the writes (compressed chunks are placed
        as they come), while the values are the same.
    overwrite : bool, default False
        Replace an existing ``PATH`` or ``PATH.partial`` instead of raising.
    flush_interval : float, default 1.0
        Seconds between flushes of the written samples' marks (:meth:`flush`); a killed
        process loses at most the samples of the last interval (0: flush every sample).

    Raises
    ------
    FileExistsError
        If ``PATH`` or ``PATH.partial`` exists and ``overwrite`` is False.
    ValueError
        For invalid fields, splits or names.

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np
    >>> path = os.path.join(tempfile.mkdtemp(), "ramp.h5")
    >>> with StoreWriter(path, {"u": ((2,), np.float64)}, 2) as writer:
    ...     writer.write(0, {"u": np.zeros(2)})
    ...     writer.write(1, {"u": np.ones(2)})
    ...     final = writer.finalize()
    >>> os.path.basename(final), StoreDataset(final)[1]["u"].tolist()
    ('ramp.h5', [1.0, 1.0])
    >>> writer.write(0, {"u": np.zeros(3)})
    Traceback (most recent call last):
    ...
    ValueError: StoreWriter.write: the store ... is finalized or closed
    """

    def __init__(
        self,
        path: str | os.PathLike,
        fields: Mapping[str, tuple[Sequence[int], Any]],
        n_samples: int,
        *,
        attrs: Mapping[str, Any] | None = None,
        inputs: Sequence[str] = (),
        targets: Sequence[str] = (),
        splits: Mapping[str, Sequence[int]] | None = None,
        compression: str | None = None,
        overwrite: bool = False,
        flush_interval: float = 1.0,
    ) -> None:
        h5py = _h5py()
        self.path = Path(path)
        self.partial = partial_path(self.path)
        self.fields = _check_fields_spec(fields)
        if isinstance(n_samples, (bool, np.bool_)) or not isinstance(n_samples, numbers.Integral):
            raise TypeError(f"StoreWriter: n_samples={n_samples!r}, expected an integer")
        if n_samples < 1:
            raise ValueError(f"StoreWriter: n_samples={n_samples}, expected at least 1")
        self.n_samples = int(n_samples)
        inputs = _check_names("StoreWriter", "inputs", inputs, self.fields)
        targets = _check_names("StoreWriter", "targets", targets, self.fields)
        splits = check_splits(splits, self.n_samples)
        if compression not in (None, "gzip", "lzf"):
            raise ValueError(
                f"StoreWriter: compression={compression!r}, expected None, 'gzip' or 'lzf'"
            )
        attributes = _root_attributes(self.fields, self.n_samples, inputs, targets, attrs)
        if not overwrite:
            for existing in (self.path, self.partial):
                if existing.exists():
                    raise FileExistsError(
                        f"StoreWriter: {existing} exists; pass overwrite=True to replace it"
                        + (
                            " or resume it with StoreWriter.resume"
                            if existing == self.partial
                            else ""
                        )
                    )

        # libver="earliest": a version-0 superblock has no "open for writing" flag, so a
        # partial file left by a killed process reopens without h5clear.
        file = h5py.File(self.partial, "w", libver="earliest", track_order=False)
        try:
            for name in sorted(attributes):
                file.attrs[name] = _encode_attribute(name, attributes[name])
            for name, (shape, dtype) in self.fields.items():
                _create_field(file, name, (self.n_samples, *shape), dtype, compression)
            file.create_dataset(
                _WRITTEN, data=np.zeros(self.n_samples, dtype=bool), track_times=False
            )
            file.create_dataset(
                _CHECKSUMS,
                data=np.zeros((self.n_samples, len(self.fields)), dtype=np.uint32),
                track_times=False,
            )
            if splits:
                _write_splits(file, splits)
            file.flush()
        except BaseException:
            file.close()
            with contextlib.suppress(FileNotFoundError):
                os.remove(self.partial)
            raise
        self._open(file, flush_interval)

    def _open(self, file: Any, flush_interval: float) -> None:
        if not flush_interval >= 0:
            raise ValueError(
                f"StoreWriter: flush_interval={flush_interval!r}, expected seconds >= 0"
            )
        self.flush_interval = float(flush_interval)
        self._file = file
        self._datasets = {name: file[name] for name in self.fields}
        # Unfiltered chunks are written as raw bytes at their preallocated place (10x less
        # overhead than a selection through h5py for small samples).
        self._direct = {
            name: dataset.id.get_create_plist().get_nfilters() == 0
            for name, dataset in self._datasets.items()
        }
        self._written_dataset = file[_WRITTEN]
        self._checksum_dataset = file[_CHECKSUMS]
        self.written = np.asarray(self._written_dataset[...], dtype=bool)
        self._checksums = np.asarray(self._checksum_dataset[...], dtype=np.uint32)
        self._pending: list[int] = []
        self._last_flush = time.monotonic()

    @classmethod
    def resume(
        cls,
        path: str | os.PathLike,
        *,
        fields: Mapping[str, tuple[Sequence[int], Any]] | None = None,
        n_samples: int | None = None,
        attrs: Mapping[str, Any] | None = None,
        flush_interval: float = 1.0,
    ) -> StoreWriter:
        """Reopen the partial file ``PATH.partial`` left by an interrupted writer.

        Parameters
        ----------
        path : str or os.PathLike
            The final file, as given to the constructor.
        flush_interval : float, default 1.0
            As for the constructor.
        fields, n_samples, attrs : optional
            What the caller is about to write; each given one must equal what the partial
            file records (``attrs`` is compared key by key, e.g. ``generator``,
            ``config``, ``seed``), so samples of two different configurations are never
            mixed in one file.

        Returns
        -------
        StoreWriter
            Its :attr:`written` marks the samples already present; :meth:`missing` lists
            the others.

        Raises
        ------
        FileNotFoundError
            If there is no partial file.
        FileFormatError
            If the partial file is unreadable or not a physnet store.
        ValueError
            If it records different fields, sample count or attributes (named).
        """
        h5py = _h5py()
        self = cls.__new__(cls)
        self.path = Path(path)
        self.partial = partial_path(self.path)
        if not self.partial.exists():
            raise FileNotFoundError(f"StoreWriter.resume: no partial store at {self.partial}")
        try:
            file = h5py.File(self.partial, "r+", libver="earliest")
        except OSError as error:
            raise FileFormatError(
                self.partial, f"cannot reopen the partial store ({error}); remove it and restart"
            ) from None
        try:
            recorded = _read_layout(self.partial, file)
            self.fields = {
                name: (tuple(spec["shape"]), np.dtype(spec["dtype"]))
                for name, spec in recorded["fields"].items()
            }
            self.n_samples = recorded["n_samples"]
            expected: dict[str, Any] = {}
            if fields is not None:
                expected["fields"] = _fields_attribute(_check_fields_spec(fields))
            if n_samples is not None:
                expected["n_samples"] = int(n_samples)
            for name, value in (attrs or {}).items():
                # Compare through the file encoding (JSON text, int64...) so equal means equal.
                encoded = {name: _encode_attribute(name, value)}
                if _is_json(name, value):
                    encoded["json_attributes"] = json.dumps([name])
                expected[name] = _decode_attributes(self.partial, encoded)[name]
            differing = [
                name for name, value in expected.items() if recorded.get(name, None) != value
            ]
            if differing:
                details = "; ".join(
                    f"{name}: file has {recorded.get(name)!r}, expected {expected[name]!r}"
                    for name in differing
                )
                raise ValueError(
                    f"StoreWriter.resume: {self.partial} was started with different settings "
                    f"({details}); remove it to start again"
                )
            self._open(file, flush_interval)
        except BaseException:
            file.close()
            raise
        return self

    # --- writing samples ------------------------------------------------------------------
    def missing(self) -> np.ndarray:
        """Indices of the samples not written yet."""
        return np.flatnonzero(~self.written)

    def write(self, index: int, sample: Mapping[str, Any]) -> None:
        """Store ``sample`` (field name -> array) as sample ``index``.

        The sample is marked as written on disk at the next :meth:`flush`, which happens
        here when ``flush_interval`` seconds have passed since the last one.

        Raises
        ------
        ValueError
            For an index out of range, missing or unknown fields, or a value whose shape
            or dtype differs from the field's (naming the field, given and expected).
        """
        if self._file is None:
            raise ValueError(f"StoreWriter.write: the store {self.path} is finalized or closed")
        if isinstance(index, (bool, np.bool_)) or not isinstance(index, numbers.Integral):
            raise TypeError(f"StoreWriter.write: index={index!r}, expected an integer")
        if not 0 <= index < self.n_samples:
            raise ValueError(
                f"StoreWriter.write: index {index} out of range for {self.n_samples} samples"
            )
        if not isinstance(sample, Mapping) or set(sample) != set(self.fields):
            given = sorted(sample) if isinstance(sample, Mapping) else type(sample).__name__
            raise ValueError(
                f"StoreWriter.write: sample {index} has fields {given}, "
                f"expected {sorted(self.fields)}"
            )
        values = []
        for name, (shape, dtype) in self.fields.items():
            value = np.asarray(sample[name])
            if value.shape != shape or value.dtype != dtype:
                raise ValueError(
                    f"StoreWriter.write: field {name!r} of sample {index} has shape "
                    f"{value.shape} and dtype {value.dtype}, expected shape {shape} "
                    f"and dtype {dtype}"
                )
            values.append(value)
        for (name, dataset), value in zip(self._datasets.items(), values, strict=True):
            if self._direct[name]:
                offsets = (index,) + (0,) * value.ndim
                dataset.id.write_direct_chunk(offsets, np.ascontiguousarray(value))
            else:
                dataset[index] = value
        self._checksums[index] = [_checksum(value) for value in values]
        self.written[index] = True
        self._pending.append(index)
        if time.monotonic() - self._last_flush >= self.flush_interval:
            self.flush()

    def flush(self) -> None:
        """Make the samples written so far durable: their data first, then their marks.

        A kill between the two steps only loses the marks, so those samples are computed
        again on resume; a sample is never marked without its data.
        """
        if self._file is None or not self._pending:
            return
        low, high = min(self._pending), max(self._pending) + 1
        self._checksum_dataset[low:high] = self._checksums[low:high]
        self._file.flush()
        self._written_dataset[low:high] = self.written[low:high]
        self._file.flush()
        self._pending.clear()
        self._last_flush = time.monotonic()

    def finalize(self, splits: Mapping[str, Sequence[int]] | None = None) -> Path:
        """Check every sample is written, record ``splits`` and rename the file to ``PATH``.

        Returns
        -------
        pathlib.Path
            The final path.

        Raises
        ------
        ValueError
            If samples are missing (the partial file is kept for resuming), or for
            invalid splits, or splits given twice.
        """
        if self._file is None:
            raise ValueError(f"StoreWriter.finalize: the store {self.path} is finalized or closed")
        self.flush()
        missing = self.missing()
        if missing.size:
            raise ValueError(
                f"StoreWriter.finalize: {missing.size} of {self.n_samples} samples of "
                f"{self.partial} are not written (first: {missing[:5].tolist()})"
            )
        if splits is not None:
            if _SPLITS in self._file:
                raise ValueError(
                    f"StoreWriter.finalize: {self.partial} already records splits "
                    f"{sorted(self._file[_SPLITS])}"
                )
            _write_splits(self._file, check_splits(splits, self.n_samples))
        self.close()
        with open(self.partial, "rb+") as f:
            os.fsync(f.fileno())
        publish(os.fspath(self.partial), self.path)
        return self.path

    def close(self) -> None:
        """Flush and close the file, keeping ``PATH.partial`` for :meth:`resume`."""
        if getattr(self, "_file", None) is not None:
            self.flush()
            self._file.close()
            self._file = None

    def __enter__(self) -> StoreWriter:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._file is None else f"{int(self.written.sum())} written"
        return f"<StoreWriter {self.partial}: {self.n_samples} samples, {state}>"


def _root_attributes(fields, n_samples, inputs, targets, attrs) -> dict[str, Any]:
    from physnet import __version__

    attributes = {"generator": "", "config": {}}
    attributes.update(attrs or {})
    clash = sorted(set(attributes) & set(_LAYOUT_ATTRIBUTES))
    if clash:
        raise ValueError(f"StoreWriter: attrs {clash} are set by the writer itself")
    attributes.update(
        physnet_format=FORMAT_NAME,
        format_version=FORMAT_VERSION,
        physnet_version=__version__,
        n_samples=n_samples,
        inputs=inputs,
        targets=targets,
        fields=_fields_attribute(fields),
    )
    attributes["json_attributes"] = sorted(
        name
        for name, value in attributes.items()
        if _is_json(name, value) and name not in _JSON_ATTRIBUTES
    )
    for name, value in attributes.items():
        _encode_attribute(name, value)  # reject what cannot be stored before creating the file
    return attributes


def _create_field(file: Any, name: str, shape: tuple, dtype: np.dtype, compression) -> None:
    h5py = _h5py()
    chunks = (1, *shape[1:])
    if compression is None:
        # Every chunk gets its place at creation (no fill values written), so writes in
        # any order, by any process, after any interruption produce the same bytes.
        dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
        dcpl.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)
        dcpl.set_fill_time(h5py.h5d.FILL_TIME_NEVER)
        file.create_dataset(
            name, shape=shape, dtype=dtype, chunks=chunks, dcpl=dcpl, track_times=False
        )
    else:
        file.create_dataset(
            name,
            shape=shape,
            dtype=dtype,
            chunks=chunks,
            compression=compression,
            track_times=False,
        )


def _write_splits(file: Any, splits: Mapping[str, np.ndarray]) -> None:
    group = file.create_group(_SPLITS, track_order=False)
    for name in sorted(splits):
        group.create_dataset(name, data=splits[name], dtype=np.int64, track_times=False)


# --- reading ------------------------------------------------------------------------------


def _open_for_reading(path: Path) -> Any:
    h5py = _h5py()
    check_readable(path)
    try:
        return h5py.File(path, "r")
    except OSError as error:
        raise FileFormatError(path, f"truncated or corrupt HDF5 file ({error})") from None


def _read_layout(path: Path, file: Any) -> dict[str, Any]:
    """The decoded root attributes, after checking the file is a store this version reads."""
    try:
        attributes = dict(file.attrs)
    except (OSError, RuntimeError, KeyError) as error:
        raise FileFormatError(path, f"unreadable root attributes ({error})") from None
    if _text(attributes.get("physnet_format")) != FORMAT_NAME:
        raise FileFormatError(
            path, f"not a physnet store (no root attribute physnet_format={FORMAT_NAME!r})"
        )
    attributes = _decode_attributes(path, attributes)
    missing = [name for name in _LAYOUT_ATTRIBUTES if name not in attributes]
    if missing:
        raise FileFormatError(path, f"root attribute(s) {missing} are missing")
    if not isinstance(attributes["format_version"], int) or attributes["format_version"] > (
        FORMAT_VERSION
    ):
        raise FileFormatError(
            path,
            f"format_version {attributes['format_version']!r}; this physnet reads stores up "
            f"to version {FORMAT_VERSION} (upgrade physnet)",
        )
    return attributes


class StoreDataset(FieldDataset):
    """A physnet store read lazily, one sample at a time.

    Safe with many ``DataLoader`` workers: the HDF5 file is opened on first use in each
    process (and reopened after a fork), and a pickled dataset carries no open handle.

    Parameters
    ----------
    path : str or os.PathLike
        A complete store, as :class:`StoreWriter` or :func:`physnet.datasets.generate`
        write it.
    split : str, optional
        Restrict to a split recorded in the file (``"train"``, ``"val"``, ``"test"``).
    fields : sequence of str, optional
        Read only these fields (all by default); ``inputs`` and ``targets`` keep those
        among them.
    verify_checksums : bool, default True
        Compare each sample read with its recorded CRC-32 (cheap next to the read).

    Attributes
    ----------
    fields, inputs, targets : tuple of str
    attrs : dict
        The root attributes: ``generator``, ``config`` (dict), ``seed``,
        ``physnet_version``, ``n_samples``... and ``path``.
    splits : dict of str to numpy.ndarray
        Every split the file records (indices into the whole file).
    split : str or None
    shapes, dtypes : dict
        Each field's per-sample shape and dtype.

    Raises
    ------
    FileFormatError
        If the file is missing, truncated, corrupt, incomplete, not a store, or lacks a
        field it declares (naming the file and the field); also when a sample cannot be
        read or fails its checksum.
    ValueError
        For a split or field the file does not have.

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np
    >>> path = os.path.join(tempfile.mkdtemp(), "squares.h5")
    >>> with StoreWriter(path, {"n": ((), np.int64), "n2": ((), np.int64)}, 5,
    ...                  inputs=["n"], targets=["n2"]) as writer:
    ...     for i in range(5):
    ...         writer.write(i, {"n": np.int64(i), "n2": np.int64(i * i)})
    ...     _ = writer.finalize(splits={"train": [0, 1, 2, 3], "test": [4]})
    >>> test = StoreDataset(path, split="test", fields=["n2"])
    >>> test
    <StoreDataset: 1 samples, fields ['n2'], inputs [], targets ['n2']>
    >>> test[0]
    {'n2': array(16)}
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        split: str | None = None,
        fields: Sequence[str] | None = None,
        verify_checksums: bool = True,
    ) -> None:
        self.path = Path(path)
        self.verify_checksums = bool(verify_checksums)
        self._store: PerProcessHandle | None = None
        with _open_for_reading(self.path) as file:
            attributes = _read_layout(self.path, file)
            self._all_fields = tuple(attributes["fields"])
            self.shapes = {
                name: tuple(spec["shape"]) for name, spec in attributes["fields"].items()
            }
            self.dtypes = {
                name: np.dtype(spec["dtype"]) for name, spec in attributes["fields"].items()
            }
            self.n_samples = int(attributes["n_samples"])
            for name in self._all_fields:
                _check_field(
                    self.path,
                    file,
                    name,
                    (self.n_samples, *self.shapes[name]),
                    self.dtypes[name],
                )
            written = _read_dataset(self.path, file, _WRITTEN, (self.n_samples,))
            if not written.all():
                raise FileFormatError(
                    self.path,
                    f"incomplete store: {int((~written).sum())} of {self.n_samples} samples "
                    "were never written (resume the generation that writes it)",
                )
            _check_field(self.path, file, _CHECKSUMS, (self.n_samples, len(self._all_fields)))
            self.splits = _read_splits(self.path, file, self.n_samples)

        selected = self._all_fields if fields is None else fields
        selected = (selected,) if isinstance(selected, str) else tuple(selected)
        unknown = [name for name in selected if name not in self._all_fields]
        if unknown or not selected or len(set(selected)) != len(selected):
            raise ValueError(
                f"StoreDataset: fields={list(selected)}, expected distinct names among "
                f"{list(self._all_fields)} (the fields of {self.path})"
            )
        self.fields = selected
        self.inputs = tuple(name for name in attributes["inputs"] if name in selected)
        self.targets = tuple(name for name in attributes["targets"] if name in selected)
        self._columns = [self._all_fields.index(name) for name in selected]

        self.split = split
        if split is None:
            self._indices = None
        elif split in self.splits:
            self._indices = self.splits[split]
        else:
            raise ValueError(
                f"StoreDataset: split={split!r}, but {self.path} records "
                + (f"the splits {sorted(self.splits)}" if self.splits else "no splits")
            )
        for name in _LAYOUT_ATTRIBUTES[:2]:
            attributes.pop(name)
        self.attrs = {**attributes, "path": os.fspath(self.path)}

    def __len__(self) -> int:
        return self.n_samples if self._indices is None else int(self._indices.size)

    def _open_here(self) -> _OpenStore:
        if self._store is None:
            self._store = PerProcessHandle(
                functools.partial(_OpenStore, self.path, self.fields, self.verify_checksums)
            )
        return self._store.get()

    def _sample(self, index: int) -> dict[str, np.ndarray]:
        file_index = index if self._indices is None else int(self._indices[index])
        state = self._open_here()
        sample = {}
        for name, column in zip(self.fields, self._columns, strict=True):
            value = state.read(name, file_index, self.shapes[name], self.dtypes[name])
            if (
                state.checksums is not None
                and _checksum(value) != state.checksums[file_index, column]
            ):
                raise FileFormatError(
                    self.path,
                    f"field {name!r}, sample {file_index}: checksum mismatch (corrupted data)",
                )
            sample[name] = value
        return sample

    def close(self) -> None:
        """Close this process's file handle (it is reopened on the next read)."""
        if self._store is not None:
            self._store.close()

    def __enter__(self) -> StoreDataset:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()


class _OpenStore:
    """One process's open store: the h5py file, its field datasets and the checksums."""

    def __init__(self, path: Path, fields: Sequence[str], verify_checksums: bool) -> None:
        self.path = path
        self.file = _open_for_reading(path)
        try:
            self.datasets = {}
            for name in fields:
                dataset = self.file[name]
                direct = dataset.id.get_create_plist().get_nfilters() == 0
                self.datasets[name] = (dataset, direct)
            self.checksums = (
                np.asarray(self.file[_CHECKSUMS][...], dtype=np.int64) if verify_checksums else None
            )
        except (KeyError, OSError, RuntimeError) as error:
            self.file.close()
            raise FileFormatError(path, f"unreadable store ({error})") from None

    def close(self) -> None:
        self.file.close()

    def read(self, name: str, index: int, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        dataset, direct = self.datasets[name]
        try:
            if not direct:
                return np.asarray(dataset[index])
            value = np.empty(shape, dtype)
            dataset.id.read_direct_chunk(
                (index,) + (0,) * len(shape), out=value.reshape(-1).view(np.uint8)
            )
            return value
        except (OSError, RuntimeError, ValueError, KeyError) as error:
            raise FileFormatError(
                self.path, f"field {name!r}, sample {index}: unreadable ({error})"
            ) from None


def _check_field(
    path: Path, file: Any, name: str, shape: tuple[int, ...], dtype: Any = None
) -> None:
    try:
        dataset = file[name]
        found_shape, found_dtype = dataset.shape, dataset.dtype
    except KeyError:
        raise FileFormatError(path, f"field {name!r} is missing") from None
    except (OSError, RuntimeError, TypeError) as error:
        raise FileFormatError(path, f"field {name!r} is unreadable ({error})") from None
    if found_shape != shape:
        raise FileFormatError(path, f"field {name!r} has shape {found_shape}, expected {shape}")
    if dtype is not None and found_dtype != dtype:
        raise FileFormatError(path, f"field {name!r} has dtype {found_dtype}, expected {dtype}")


def _read_dataset(path: Path, file: Any, name: str, shape: tuple[int, ...]) -> np.ndarray:
    _check_field(path, file, name, shape)
    try:
        return file[name][...]
    except (OSError, RuntimeError, ValueError) as error:
        raise FileFormatError(path, f"field {name!r} is unreadable ({error})") from None


def _read_splits(path: Path, file: Any, n_samples: int) -> dict[str, np.ndarray]:
    if _SPLITS not in file:
        return {}
    try:
        group = file[_SPLITS]
        splits = {name: group[name][...] for name in group}
    except (OSError, RuntimeError, KeyError, TypeError) as error:
        raise FileFormatError(path, f"field 'splits' is unreadable ({error})") from None
    try:
        return check_splits(splits, n_samples)
    except ValueError as error:
        raise FileFormatError(path, f"field 'splits': {error}") from None


def verify_store(path: str | os.PathLike) -> dict[str, Any]:
    """Check a store completely: layout, every sample written, splits, every chunk's checksum.

    Parameters
    ----------
    path : str or os.PathLike

    Returns
    -------
    dict
        ``path``, ``n_samples``, ``fields`` (name -> ``{"shape", "dtype"}``), ``splits``
        (name -> number of samples), ``generator``, ``seed`` and ``bytes`` (file size).

    Raises
    ------
    FileFormatError
        At the first problem, naming the file, the field and the sample.

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np
    >>> path = os.path.join(tempfile.mkdtemp(), "one.h5")
    >>> with StoreWriter(path, {"u": ((4,), np.float32)}, 1) as writer:
    ...     writer.write(0, {"u": np.ones(4, np.float32)})
    ...     _ = writer.finalize()
    >>> report = verify_store(path)
    >>> report["n_samples"], report["fields"]
    (1, {'u': {'shape': [4], 'dtype': '<f4'}})
    """
    with StoreDataset(path) as dataset:
        for index in range(len(dataset)):
            dataset[index]
        return {
            "path": os.fspath(path),
            "n_samples": dataset.n_samples,
            "fields": dataset.attrs["fields"],
            "splits": {name: int(indices.size) for name, indices in dataset.splits.items()},
            "generator": dataset.attrs.get("generator"),
            "seed": dataset.attrs.get("seed"),
            "bytes": os.path.getsize(path),
        }
