"""Radar reconstruction pipelines: measurements in, volumes out, in batches.

:class:`Reconstructor` runs the two-stage method: the backprojection ``A^H y``
(:class:`physnet.operators.NearFieldMIMO`, computed on the fly) and a trained network
(``physnet.nn.load``: the pretrained ``"radar-deep2s"`` or a checkpoint) that maps its
magnitude, normalised per volume, to ``|x|``. :func:`reconstruct` applies it to arrays,
:func:`reconstruct_file` streams an HDF5 file of measurements into an HDF5 file of
volumes (``physnet reconstruct``).

A model whose ``config["conditions"]`` names ``"n_frequencies"`` or ``"snr_db"`` (a
conditioned :class:`~physnet.nn.Deep2S`) gets one constant channel per condition after the
backprojection channel(s), holding the raw value: the operator's number of frequencies and
the ``snr_db`` given to the :class:`Reconstructor`.

:func:`reconstruct_file` splits a file over processes like ``physnet generate``: with
``RANK``/``WORLD_SIZE`` (arguments or environment) rank ``r`` reconstructs the volumes
``i`` with ``i % world_size == r`` into its shard file
(:func:`physnet._io.shard_path`, ``OUT.shard-R-of-W.h5``), and :func:`merge_shards`, run
once after every rank has finished, joins them into the file a single process writes
(the same ``reconstruction`` dataset, bit for bit).

A volume's reconstruction does not depend on the other volumes of its batch: the
network is in evaluation mode (batch norm with running statistics) and normalises each
volume by its own maximum, and the backprojection and the network always see batches of
``batch_size`` volumes (a short last batch is padded with zeros), so the arithmetic is the
same whatever the batch mates (on one machine and thread count).

Examples
--------
>>> import numpy as np
>>> import physnet.nn
>>> from physnet.operators import NearFieldMIMO
>>> from physnet.reconstruction import Reconstructor
>>> A = NearFieldMIMO(n_frequencies=3, grid_shape=(9, 9, 17))
>>> model = physnet.nn.create("deep2s", backbone_config={"channels": [4], "head_channels": 4})
>>> reconstructor = Reconstructor(model, operator=A, batch_size=2, progress=False)
>>> y = np.ones((3, *A.measurement_shape), dtype=np.complex64)
>>> reconstructor(y).shape
(3, 9, 9, 17)
"""

from __future__ import annotations

import json
import math
import numbers
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from physnet import backend
from physnet._io import (
    FileFormatError,
    atomic_path,
    check_readable,
    rank_and_world_size,
    shard_path,
)

__all__ = [
    "CONDITIONS",
    "DEFAULT_MODEL",
    "Reconstructor",
    "merge_shards",
    "reconstruct",
    "reconstruct_file",
]

DEFAULT_MODEL = "radar-deep2s"
"""The pretrained model used when none is named."""

CONDITIONS = ("n_frequencies", "snr_db")
"""The conditions a model may name in ``config["conditions"]``, in any order: the number of
frequencies of the measurements (a count, such as 15.0) and their SNR in dB."""

OUTPUT_FIELD = "reconstruction"
_NAME = "Reconstructor"


class Reconstructor:
    """Backprojection followed by a trained network, applied in batches.

    Parameters
    ----------
    model : str, os.PathLike or torch.nn.Module, default "radar-deep2s"
        A pretrained name or a checkpoint path (loaded with :func:`physnet.nn.load`), or a
        model taking ``(B, C, X, Y, Z)`` backprojections (``C = 1``: magnitudes; the
        model's ``config["input"] == "complex"``: real and imaginary channels).
    operator : NearFieldMIMO, optional
        The measurement operator; by default the reference geometry with as many
        frequencies as the measurements have (built on first use).
    batch_size : int, default 8
        Volumes per network evaluation.
    device : str, optional
        torch device of the network (``"cuda"`` when available, else ``"cpu"``).
    progress : bool, default True
        A tqdm bar over the batches.
    snr_db : float, optional
        The measurements' signal-to-noise ratio in dB, the value of the ``"snr_db"``
        condition; required if (and only used if) the model conditions on it.

    Attributes
    ----------
    conditions : tuple of str
        The model's conditions (``config["conditions"]``), in its channel order.
    trained_n_frequencies : list of int or None
        The model's ``config["trained_n_frequencies"]``: measurements with another number
        of frequencies give a :class:`UserWarning` (once per number).

    Raises
    ------
    ValueError
        For a bad ``batch_size``, an unknown model, a condition not in :data:`CONDITIONS`,
        a model conditioned on ``snr_db`` without ``snr_db``, or measurements that do not
        fit the operator (naming the shapes).

    Notes
    -----
    The network's input is ``(B, C + len(conditions), X, Y, Z)``: the backprojection
    channel(s) (``C = 1``, the magnitude, or ``C = 2``, real and imaginary parts), then one
    constant channel per condition holding its raw value (the model scales it).
    """

    def __init__(
        self,
        model: Any = DEFAULT_MODEL,
        *,
        operator: Any = None,
        batch_size: int = 8,
        device: str | None = None,
        progress: bool = True,
        snr_db: float | None = None,
    ) -> None:
        torch = backend.require_torch()
        import physnet.nn

        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"{_NAME}: batch_size={batch_size!r}, expected a positive integer")
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        if isinstance(model, torch.nn.Module):
            self.model = model.to(self.device)
            self.model_name = getattr(model, "name", None) or type(model).__name__
        else:
            self.model = physnet.nn.load(model, device=self.device)
            self.model_name = os.fspath(model)
        self.model.eval()
        config = getattr(self.model, "config", {}) or {}
        self.complex_input = config.get("input") == "complex"
        self.conditions = tuple(config.get("conditions") or ())
        unknown = [name for name in self.conditions if name not in CONDITIONS]
        if unknown:
            raise ValueError(
                f"{_NAME}: the model {self.model_name!r} conditions on {unknown}; "
                f"supported conditions: {list(CONDITIONS)}"
            )
        if snr_db is not None and (
            isinstance(snr_db, bool)
            or not isinstance(snr_db, numbers.Real)
            or not math.isfinite(snr_db)
        ):
            raise ValueError(f"{_NAME}: snr_db={snr_db!r}, expected a finite number of dB")
        if "snr_db" in self.conditions and snr_db is None:
            raise ValueError(
                f"{_NAME}: the model {self.model_name!r} conditions on snr_db; pass snr_db= "
                "(the measurements' SNR in dB; --snr-db on the command line)"
            )
        self.snr_db = None if snr_db is None else float(snr_db)
        trained = config.get("trained_n_frequencies")
        self.trained_n_frequencies = None if trained is None else [int(n) for n in trained]
        self._warned_n_frequencies: set[int] = set()
        self.operator = operator
        self.batch_size = batch_size
        self.progress = progress

    def operator_for(self, measurement_shape: tuple[int, ...], grid_shape: Any = None) -> Any:
        """The operator for measurements of ``measurement_shape`` ``(K, T, R)``."""
        if self.operator is None:
            from physnet.operators.radar import NearFieldMIMO

            if len(measurement_shape) != 3 or tuple(measurement_shape[1:]) != (12, 13):
                given = ", ".join(map(str, measurement_shape))
                raise ValueError(
                    f"{_NAME}: measurements of shape (..., {given})"
                    " do not fit the reference cross array (K, 12, 13); pass the operator "
                    "of your geometry (operator=NearFieldMIMO(...))"
                )
            kwargs = {"grid_shape": tuple(grid_shape)} if grid_shape is not None else {}
            self.operator = NearFieldMIMO(n_frequencies=int(measurement_shape[0]), **kwargs)
        if tuple(measurement_shape) != tuple(self.operator.measurement_shape):
            given = ", ".join(map(str, measurement_shape))
            expected = ", ".join(map(str, self.operator.measurement_shape))
            raise ValueError(
                f"{_NAME}: measurements have shape (..., {given}), "
                f"the operator expects (..., {expected})"
            )
        self._check_trained(int(self.operator.measurement_shape[0]))
        return self.operator

    def _check_trained(self, n_frequencies: int) -> None:
        trained = self.trained_n_frequencies
        if trained is None or n_frequencies in trained:
            return
        if n_frequencies not in self._warned_n_frequencies:
            self._warned_n_frequencies.add(n_frequencies)
            warnings.warn(
                f"{_NAME}: the model {self.model_name!r} was trained at N_f in {trained}, "
                f"these measurements have N_f = {n_frequencies} (outside its training data)",
                UserWarning,
                stacklevel=3,
            )

    def condition_values(self) -> dict[str, float]:
        """The value of each of the model's conditions for the current operator.

        Raises
        ------
        ValueError
            If the model conditions on ``n_frequencies`` and no operator is known yet (give
            ``operator=`` or reconstruct measurements first).
        """
        values = {}
        for name in self.conditions:
            if name == "n_frequencies":
                if self.operator is None:
                    raise ValueError(
                        f"{_NAME}: the model conditions on n_frequencies but no operator is "
                        "known yet; pass operator= or call the reconstructor on measurements"
                    )
                values[name] = float(self.operator.measurement_shape[0])
            else:
                values[name] = self.snr_db
        return values

    def backprojection(self, measurements: np.ndarray) -> np.ndarray:
        """``A^H y``: ``(B, K, T, R)`` -> complex ``(B, X, Y, Z)``.

        Computed ``batch_size`` volumes at a time (a short last batch padded with zeros,
        so that the operator applies the same arithmetic to a volume whatever its batch
        mates): :class:`~physnet.operators.NearFieldMIMO` reads its factor tables once
        per batch (at 8 volumes, N_f = 15, 1.4x faster per volume than one at a time).
        """
        A = self.operator_for(tuple(measurements.shape[1:]))
        grid = A.grid_shape if A.grid_shape is not None else (A.shape[1],)
        count = measurements.shape[0]
        out = np.empty((count, A.shape[1]), dtype=A.dtype)
        for start in range(0, count, self.batch_size):
            batch = measurements[start : start + self.batch_size]
            size = batch.shape[0]
            if size < self.batch_size:
                padding = np.zeros((self.batch_size - size, *batch.shape[1:]), batch.dtype)
                batch = np.concatenate([batch, padding])
            out[start : start + size] = (A.H @ batch)[:size]
        return out.reshape(-1, *grid)

    def network(self, backprojection: np.ndarray) -> np.ndarray:
        """The network on complex backprojections ``(B, X, Y, Z)``: magnitudes ``(B, X, Y, Z)``.

        The condition channels (:meth:`condition_values`) follow the backprojection's.
        """
        torch = backend.require_torch()
        values = self.condition_values()
        count = backprojection.shape[0]
        if count < self.batch_size:  # the same arithmetic for every batch: pad to full size
            padding = np.zeros((self.batch_size - count, *backprojection.shape[1:]))
            backprojection = np.concatenate([backprojection, padding.astype(backprojection.dtype)])
        if self.complex_input:
            channels = [backprojection.real, backprojection.imag]
        else:
            channels = [np.abs(backprojection)]
        channels += [np.full(backprojection.shape, value, np.float32) for value in values.values()]
        inputs = np.stack(channels, axis=1).astype(np.float32, copy=False)
        dtype = next((p.dtype for p in self.model.parameters()), torch.float32)
        with torch.inference_mode():
            output = self.model(torch.from_numpy(inputs).to(self.device, dtype))
        return output[:count, 0].float().cpu().numpy()

    def __call__(self, measurements: Any) -> np.ndarray:
        """Reconstruct ``(B, K, T, R)`` (or one ``(K, T, R)``) measurements: ``|x|`` volumes."""
        from tqdm.auto import tqdm

        array = _as_measurements(backend.to_numpy(measurements), "measurements")
        single = array.ndim == 3
        array = array[None] if single else array
        outputs = []
        starts = range(0, array.shape[0], self.batch_size)
        for start in tqdm(starts, desc="reconstruct", unit="batch", disable=not self.progress):
            batch = array[start : start + self.batch_size]
            outputs.append(self.network(self.backprojection(batch)))
        volumes = np.concatenate(outputs) if outputs else np.empty((0,))
        return volumes[0] if single else volumes


def _as_measurements(array: np.ndarray, where: str) -> np.ndarray:
    """Complex ``(..., K, T, R)`` measurements; real ``(..., K, T, R, 2)`` pairs are joined."""
    if array.dtype.kind != "c":
        if array.dtype.kind in "fiu" and array.ndim >= 4 and array.shape[-1] == 2:
            array = array[..., 0] + 1j * array[..., 1]
        else:
            raise ValueError(
                f"{where}: measurements of shape {array.shape} and dtype {array.dtype}, expected "
                "complex (B, K, T, R) or real (B, K, T, R, 2) (real, imaginary) pairs"
            )
    if array.ndim not in (3, 4):
        raise ValueError(f"{where}: measurements of shape {array.shape}, expected (B, K, T, R)")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{where}: measurements have NaN or Inf entries")
    return array.astype(np.complex64, copy=False)


def reconstruct(
    measurements: Any,
    model: Any = DEFAULT_MODEL,
    *,
    operator: Any = None,
    batch_size: int = 8,
    device: str | None = None,
    progress: bool = False,
    snr_db: float | None = None,
) -> np.ndarray:
    """Reconstruct ``|x|`` volumes from measurements ``(B, K, T, R)`` (or ``(K, T, R)``).

    A one-call form of :class:`Reconstructor` (see it for the parameters).

    Returns
    -------
    numpy.ndarray, shape (B, X, Y, Z) or (X, Y, Z), float32
    """
    reconstructor = Reconstructor(
        model,
        operator=operator,
        batch_size=batch_size,
        device=device,
        progress=progress,
        snr_db=snr_db,
    )
    return reconstructor(measurements)


def _open_measurements(path: Path, field: str) -> tuple[Any, Any, dict[str, Any]]:
    h5py = backend.require("h5py", "reading HDF5 measurements")
    check_readable(path)
    try:
        file = h5py.File(path, "r")
    except OSError as error:
        raise FileFormatError(path, f"not an HDF5 file ({error})") from None
    if field not in file:
        fields = sorted(k for k in file if isinstance(file[k], h5py.Dataset))
        file.close()
        raise FileFormatError(path, f"no field {field!r}; fields: {fields}")
    dataset = file[field]
    shape = dataset.shape
    is_pairs = dataset.dtype.kind in "fiu" and len(shape) == 5 and shape[-1] == 2
    if not ((dataset.dtype.kind == "c" and len(shape) == 4) or is_pairs):
        file.close()
        raise FileFormatError(
            path,
            f"field {field!r} has shape {shape} and dtype {dataset.dtype}, expected complex "
            "(B, K, T, R) or real (B, K, T, R, 2)",
        )
    attributes: dict[str, Any] = {}
    config = file.attrs.get("config")
    if config is not None:
        try:
            attributes = json.loads(config)
        except (TypeError, ValueError):
            attributes = {}
    return file, dataset, attributes


def reconstruct_file(
    measurements_path: str | os.PathLike,
    out: str | os.PathLike,
    model: Any = DEFAULT_MODEL,
    *,
    field: str = "measurements",
    batch_size: int = 8,
    device: str | None = None,
    operator: Any = None,
    progress: bool = True,
    snr_db: float | None = None,
    rank: int | None = None,
    world_size: int | None = None,
) -> dict[str, Any]:
    """Reconstruct every sample of an HDF5 file of measurements into an HDF5 file of volumes.

    The input holds ``field`` as complex ``(B, K, T, R)`` (a ``radar-mimo`` store, or any
    HDF5 file) or real ``(B, K, T, R, 2)`` pairs; a store's ``grid_shape`` option is
    used for the default operator. Batches are read, reconstructed and written one at a
    time. The output gets one dataset ``reconstruction`` ``(B, X, Y, Z)`` float32, chunked
    per volume, with attributes naming the model, the input, the operator and the
    conditions; it is written to a temporary file and renamed when complete.

    Parameters
    ----------
    measurements_path, out : str or os.PathLike
    model : str, os.PathLike or torch.nn.Module, default "radar-deep2s"
    field : str, default "measurements"
    batch_size, device, operator, progress, snr_db
        As for :class:`Reconstructor`.
    rank, world_size : int, optional
        Shard the work: this process reconstructs the volumes ``i`` with
        ``i % world_size == rank`` into ``shard_path(out, rank, world_size)``
        (``OUT.shard-R-of-W.h5``). Default: the environment variables ``RANK`` and
        ``WORLD_SIZE`` (``torchrun``, job arrays), else one process writing ``out``. Join
        the shards with :func:`merge_shards`.

    Returns
    -------
    dict
        ``out`` (the file written: ``out`` or this rank's shard), ``volumes`` (in it),
        ``grid_shape``, ``model``, ``n_frequencies``, ``conditions`` (each condition's
        value, ``{}`` for an unconditioned model), ``rank``, ``world_size``, ``seconds``
        and ``seconds_per_volume``.

    Raises
    ------
    FileFormatError
        For a missing or unreadable input, or a field of the wrong shape (one line naming
        the file and the field).
    ValueError
        For a bad rank or world size (or ``RANK``/``WORLD_SIZE``), a world size larger than
        the number of volumes, or a :class:`Reconstructor` argument that does not fit the
        model.
    """
    import time

    h5py = backend.require("h5py", "writing HDF5 volumes")
    from tqdm.auto import tqdm

    rank, world_size = rank_and_world_size(rank, world_size, "reconstruct_file")
    measurements_path, out = Path(measurements_path), Path(out)
    if not out.parent.is_dir():
        raise FileFormatError(out, "its directory does not exist")
    reconstructor = Reconstructor(
        model,
        operator=operator,
        batch_size=batch_size,
        device=device,
        progress=False,
        snr_db=snr_db,
    )
    file, dataset, config = _open_measurements(measurements_path, field)
    started = time.perf_counter()
    try:
        count = int(dataset.shape[0])
        if world_size > 1 and world_size > count:
            raise ValueError(
                f"reconstruct_file: world_size={world_size} exceeds the {count} volumes of "
                f"{os.fspath(measurements_path)}"
            )
        measurement_shape = tuple(dataset.shape[1:4])
        try:
            A = reconstructor.operator_for(measurement_shape, config.get("grid_shape"))
        except ValueError as error:
            raise FileFormatError(measurements_path, str(error)) from None
        grid = tuple(A.grid_shape) if A.grid_shape is not None else (A.shape[1],)
        conditions = reconstructor.condition_values()
        indices = np.arange(rank, count, world_size)
        target_path = out if world_size == 1 else shard_path(out, rank, world_size)
        with atomic_path(target_path) as temporary, h5py.File(temporary, "w") as target:
            volumes = target.create_dataset(
                OUTPUT_FIELD,
                shape=(indices.size, *grid),
                dtype=np.float32,
                chunks=(1, *grid) if indices.size else None,
                track_times=False,
            )
            volumes.attrs["description"] = "reconstructed magnitude |x| per volume"
            target.attrs["model"] = reconstructor.model_name
            target.attrs["source"] = os.fspath(measurements_path)
            target.attrs["source_field"] = field
            target.attrs["n_frequencies"] = int(measurement_shape[0])
            target.attrs["grid_shape"] = list(grid)
            target.attrs["conditions"] = json.dumps(conditions)
            if world_size > 1:
                target.attrs["shard"] = json.dumps(
                    {"rank": rank, "world_size": world_size, "volumes": count}
                )
            starts = range(0, indices.size, batch_size)
            for start in tqdm(starts, desc="reconstruct", unit="batch", disable=not progress):
                stop = min(indices.size, start + batch_size)
                rows = slice(int(indices[start]), int(indices[stop - 1]) + 1, world_size)
                batch = _as_measurements(
                    np.asarray(dataset[rows]), f"{measurements_path}: field {field!r}"
                )
                volumes[start:stop] = reconstructor(batch)
    finally:
        file.close()
    seconds = time.perf_counter() - started
    return {
        "out": os.fspath(target_path),
        "volumes": int(indices.size),
        "grid_shape": list(grid),
        "model": reconstructor.model_name,
        "n_frequencies": int(measurement_shape[0]),
        "conditions": conditions,
        "rank": rank,
        "world_size": world_size,
        "seconds": seconds,
        "seconds_per_volume": seconds / indices.size if indices.size else 0.0,
    }


_SHARED_ATTRIBUTES = (
    "model",
    "source",
    "source_field",
    "n_frequencies",
    "grid_shape",
    "conditions",
)


def merge_shards(
    out: str | os.PathLike, world_size: int, *, keep_shards: bool = False
) -> dict[str, Any]:
    """Join the shard files of a sharded :func:`reconstruct_file` into ``out``.

    Call it from one process once every rank has finished. Volume ``i`` comes from the shard
    of rank ``i % world_size``, so ``out`` holds the ``reconstruction`` dataset (and the
    attributes) a single process writes, bit for bit. ``out`` is written atomically.

    Parameters
    ----------
    out : str or os.PathLike
        The ``out`` given to :func:`reconstruct_file`.
    world_size : int
    keep_shards : bool, default False
        Keep the shard files after a successful merge.

    Returns
    -------
    dict
        ``out``, ``volumes``, ``grid_shape``, ``model``, ``n_frequencies``, ``conditions``
        and ``world_size``.

    Raises
    ------
    FileNotFoundError
        If a shard is missing (naming every missing one).
    FileFormatError
        If a shard is not a shard of this reconstruction (another rank, world size,
        model, input or operator than the others).
    ValueError
        For a world size below 1.
    TypeError
        For a world size that is not an integer.

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np, h5py, physnet.nn
    >>> from physnet.operators import NearFieldMIMO
    >>> folder = tempfile.mkdtemp()
    >>> with h5py.File(os.path.join(folder, "y.h5"), "w") as f:
    ...     f["measurements"] = np.ones((3, 2, 12, 13), np.complex64)
    >>> model = physnet.nn.create("deep2s", backbone_config={"channels": [2], "head_channels": 2})
    >>> out = os.path.join(folder, "volumes.h5")
    >>> for rank in range(2):
    ...     _ = reconstruct_file(os.path.join(folder, "y.h5"), out, model, progress=False,
    ...                          rank=rank, world_size=2, operator=NearFieldMIMO(
    ...                              n_frequencies=2, grid_shape=(5, 5, 5)))
    >>> merge_shards(out, 2)["volumes"], sorted(os.listdir(folder))
    (3, ['volumes.h5', 'y.h5'])
    """
    h5py = backend.require("h5py", "merging HDF5 volumes")
    out = Path(out)
    if isinstance(world_size, bool) or not isinstance(world_size, numbers.Integral):
        raise TypeError(f"merge_shards: world_size={world_size!r}, expected an integer")
    if world_size < 1:
        raise ValueError(f"merge_shards: world_size={world_size}, expected an integer >= 1")
    paths = [shard_path(out, rank, world_size) for rank in range(world_size)]
    absent = [os.fspath(path) for path in paths if not path.exists()]
    if absent:
        raise FileNotFoundError(f"merge_shards: missing shard(s) {absent}")
    shards = []
    try:
        for path in paths:
            check_readable(path)
            try:
                shards.append(h5py.File(path, "r"))
            except OSError as error:
                raise FileFormatError(path, f"not an HDF5 file ({error})") from None
        first = shards[0]
        attributes = {name: first.attrs.get(name) for name in _SHARED_ATTRIBUTES}
        count = _shard_volumes(paths[0], first, 0, world_size)
        for rank, (path, shard) in enumerate(zip(paths, shards, strict=True)):
            if _shard_volumes(path, shard, rank, world_size) != count:
                raise FileFormatError(path, "is a shard of a file with another number of volumes")
            differing = [
                name
                for name in _SHARED_ATTRIBUTES
                if not _same_attribute(shard.attrs.get(name), attributes[name])
            ]
            expected_size = len(range(rank, count, world_size))
            if (
                differing
                or OUTPUT_FIELD not in shard
                or shard[OUTPUT_FIELD].shape[0] != expected_size
            ):
                raise FileFormatError(
                    path,
                    f"is not a shard of the same reconstruction as {os.fspath(paths[0])} "
                    f"(differs in {differing or [OUTPUT_FIELD]})",
                )
        grid = tuple(first[OUTPUT_FIELD].shape[1:])
        with atomic_path(out) as temporary, h5py.File(temporary, "w") as target:
            volumes = target.create_dataset(
                OUTPUT_FIELD,
                shape=(count, *grid),
                dtype=np.float32,
                chunks=(1, *grid) if count else None,
                track_times=False,
            )
            volumes.attrs["description"] = first[OUTPUT_FIELD].attrs["description"]
            for name, value in attributes.items():
                if value is not None:
                    target.attrs[name] = value
            block = 64
            for rank, shard in enumerate(shards):
                source = shard[OUTPUT_FIELD]
                for start in range(0, source.shape[0], block):
                    stop = min(source.shape[0], start + block)
                    rows = slice(rank + start * world_size, rank + stop * world_size, world_size)
                    volumes[rows] = source[start:stop]
    finally:
        for shard in shards:
            shard.close()
    if not keep_shards:
        for path in paths:
            path.unlink()
    conditions = attributes["conditions"]
    return {
        "out": os.fspath(out),
        "volumes": count,
        "grid_shape": list(grid),
        "model": attributes["model"],
        "n_frequencies": None
        if attributes["n_frequencies"] is None
        else int(attributes["n_frequencies"]),
        "conditions": json.loads(conditions) if conditions is not None else {},
        "world_size": world_size,
    }


def _shard_volumes(path: Path, shard: Any, rank: int, world_size: int) -> int:
    """The total number of volumes recorded in a shard, after checking its place."""
    try:
        record = json.loads(shard.attrs["shard"])
        place = (int(record["rank"]), int(record["world_size"]))
        count = int(record["volumes"])
    except (KeyError, TypeError, ValueError):
        raise FileFormatError(
            path, "is not a reconstruction shard (no 'shard' attribute)"
        ) from None
    if place != (rank, world_size):
        raise FileFormatError(
            path, f"is shard {place[0]} of {place[1]}, expected shard {rank} of {world_size}"
        )
    return count


def _same_attribute(value: Any, expected: Any) -> bool:
    if isinstance(value, np.ndarray) or isinstance(expected, np.ndarray):
        return np.array_equal(value, expected)
    return value == expected
