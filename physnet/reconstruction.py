"""Radar reconstruction pipelines: measurements in, volumes out, in batches.

:class:`Reconstructor` runs the two-stage method: the backprojection ``A^H y``
(:class:`physnet.operators.NearFieldMIMO`, computed on the fly) and a trained network
(``physnet.nn.load``: the pretrained ``"radar-deep2s"`` or a checkpoint) that maps its
magnitude, normalised per volume, to ``|x|``. :func:`reconstruct` applies it to arrays,
:func:`reconstruct_file` streams an HDF5 file of measurements into an HDF5 file of
volumes (``physnet reconstruct``).

A volume's reconstruction does not depend on the other volumes of its batch: the
backprojection is computed volume by volume, the network is in evaluation mode (batch
norm with running statistics) and normalises each volume by its own maximum, and the
network always sees batches of ``batch_size`` volumes (a short last batch is padded with
zeros), so the arithmetic is the same whatever the batch mates (on one machine and thread
count).

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
import os
from pathlib import Path
from typing import Any

import numpy as np

from physnet import backend
from physnet._io import FileFormatError, atomic_path, check_readable

__all__ = ["DEFAULT_MODEL", "Reconstructor", "reconstruct", "reconstruct_file"]

DEFAULT_MODEL = "radar-deep2s"
"""The pretrained model used when none is named."""

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

    Raises
    ------
    ValueError
        For a bad ``batch_size``, an unknown model, or measurements that do not fit the
        operator (naming the shapes).
    """

    def __init__(
        self,
        model: Any = DEFAULT_MODEL,
        *,
        operator: Any = None,
        batch_size: int = 8,
        device: str | None = None,
        progress: bool = True,
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
        return self.operator

    def backprojection(self, measurements: np.ndarray) -> np.ndarray:
        """``A^H y`` volume by volume: ``(B, K, T, R)`` -> complex ``(B, X, Y, Z)``."""
        A = self.operator_for(tuple(measurements.shape[1:]))
        grid = A.grid_shape if A.grid_shape is not None else (A.shape[1],)
        out = np.empty((measurements.shape[0], A.shape[1]), dtype=A.dtype)
        for index, y in enumerate(measurements):
            out[index] = A.H @ y
        return out.reshape(-1, *grid)

    def network(self, backprojection: np.ndarray) -> np.ndarray:
        """The network on complex backprojections ``(B, X, Y, Z)``: magnitudes ``(B, X, Y, Z)``."""
        torch = backend.require_torch()
        if self.complex_input:
            inputs = np.stack([backprojection.real, backprojection.imag], axis=1)
        else:
            inputs = np.abs(backprojection)[:, None]
        inputs = inputs.astype(np.float32)
        count = inputs.shape[0]
        if count < self.batch_size:  # the same arithmetic for every batch: pad to full size
            padding = np.zeros((self.batch_size - count, *inputs.shape[1:]), np.float32)
            inputs = np.concatenate([inputs, padding])
        dtype = next((p.dtype for p in self.model.parameters()), torch.float32)
        with torch.no_grad():
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
) -> np.ndarray:
    """Reconstruct ``|x|`` volumes from measurements ``(B, K, T, R)`` (or ``(K, T, R)``).

    A one-call form of :class:`Reconstructor` (see it for the parameters).

    Returns
    -------
    numpy.ndarray, shape (B, X, Y, Z) or (X, Y, Z), float32
    """
    reconstructor = Reconstructor(
        model, operator=operator, batch_size=batch_size, device=device, progress=progress
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
) -> dict[str, Any]:
    """Reconstruct every sample of an HDF5 file of measurements into an HDF5 file of volumes.

    The input holds ``field`` as complex ``(B, K, T, R)`` (a ``radar-mimo`` store, or any
    HDF5 file) or real ``(B, K, T, R, 2)`` pairs; a store's ``grid_shape`` option is
    used for the default operator. Batches are read, reconstructed and written one at a
    time. The output gets one dataset ``reconstruction`` ``(B, X, Y, Z)`` float32, chunked
    per volume, with attributes naming the model, the input and the operator; it is
    written to a temporary file and renamed when complete.

    Parameters
    ----------
    measurements_path, out : str or os.PathLike
    model : str, os.PathLike or torch.nn.Module, default "radar-deep2s"
    field : str, default "measurements"
    batch_size, device, operator, progress
        As for :class:`Reconstructor`.

    Returns
    -------
    dict
        ``out``, ``volumes``, ``grid_shape``, ``model``, ``seconds`` and
        ``seconds_per_volume``.

    Raises
    ------
    FileFormatError
        For a missing or unreadable input, or a field of the wrong shape (one line naming
        the file and the field).
    """
    import time

    h5py = backend.require("h5py", "writing HDF5 volumes")
    from tqdm.auto import tqdm

    measurements_path, out = Path(measurements_path), Path(out)
    if not out.parent.is_dir():
        raise FileFormatError(out, "its directory does not exist")
    reconstructor = Reconstructor(
        model, operator=operator, batch_size=batch_size, device=device, progress=False
    )
    file, dataset, config = _open_measurements(measurements_path, field)
    started = time.perf_counter()
    try:
        count = int(dataset.shape[0])
        measurement_shape = tuple(dataset.shape[1:4])
        try:
            A = reconstructor.operator_for(measurement_shape, config.get("grid_shape"))
        except ValueError as error:
            raise FileFormatError(measurements_path, str(error)) from None
        grid = tuple(A.grid_shape) if A.grid_shape is not None else (A.shape[1],)
        with atomic_path(out) as temporary, h5py.File(temporary, "w") as target:
            volumes = target.create_dataset(
                OUTPUT_FIELD,
                shape=(count, *grid),
                dtype=np.float32,
                chunks=(1, *grid) if count else None,
                track_times=False,
            )
            volumes.attrs["description"] = "reconstructed magnitude |x| per volume"
            target.attrs["model"] = reconstructor.model_name
            target.attrs["source"] = os.fspath(measurements_path)
            target.attrs["source_field"] = field
            target.attrs["n_frequencies"] = int(measurement_shape[0])
            target.attrs["grid_shape"] = list(grid)
            starts = range(0, count, batch_size)
            for start in tqdm(starts, desc="reconstruct", unit="batch", disable=not progress):
                stop = min(count, start + batch_size)
                batch = _as_measurements(
                    np.asarray(dataset[start:stop]), f"{measurements_path}: field {field!r}"
                )
                volumes[start:stop] = reconstructor(batch)
    finally:
        file.close()
    seconds = time.perf_counter() - started
    return {
        "out": os.fspath(out),
        "volumes": count,
        "grid_shape": list(grid),
        "model": reconstructor.model_name,
        "seconds": seconds,
        "seconds_per_volume": seconds / count if count else 0.0,
    }
