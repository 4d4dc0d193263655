"""Training-state checkpoints without pickles: tensors in safetensors, everything else JSON.

A training state is a nested structure of dicts, lists, tuples, scalars, strings, ``None``,
torch tensors and NumPy arrays (optimizer and scheduler ``state_dict``s, RNG states, the
epoch counter, the history). :func:`save_state` splits it into

* a flat ``{key path: tensor}`` mapping stored as safetensors tensors, and
* a JSON skeleton in the safetensors header's metadata, where each tensor is replaced by
  ``{"__tensor__": key}`` (``{"__ndarray__": key}`` for NumPy arrays), tuples by
  ``{"__tuple__": [...]}`` and dicts with non-string keys (an optimizer's per-parameter
  state is keyed by integers) by ``{"__dict__": [[key, value], ...]}``,

so one file, written atomically, holds a consistent state and :func:`load_state` rebuilds
the structure exactly: tensors bit for bit, floats through their shortest round-trip
``repr``, ints as ints, tuples as tuples.

Examples
--------
>>> import os, tempfile
>>> import torch
>>> from physnet.training._state import load_state, save_state
>>> path = os.path.join(tempfile.mkdtemp(), "state.safetensors")
>>> state = {"epoch": 3, "betas": (0.9, 0.999), "per_param": {0: {"step": torch.tensor(7.0)}}}
>>> save_state(path, state)
>>> restored = load_state(path)
>>> restored["betas"], restored["per_param"][0]["step"]
((0.9, 0.999), tensor(7.))
"""

from __future__ import annotations

import json
import math
import os
from typing import Any

import numpy as np
import torch

from physnet._io import FileFormatError, atomic_write, check_readable

__all__ = ["load_state", "save_state"]

_METADATA_KEY = "physnet.training_state"
_FORMAT_VERSION = 1


def _encode(value: Any, path: str, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(value, torch.Tensor):
        # clone: safetensors refuses tensors sharing storage (tied weights, views)
        tensors[path] = value.detach().to("cpu").contiguous().clone()
        return {"__tensor__": path}
    if isinstance(value, np.ndarray):
        if value.dtype.hasobject:
            raise TypeError(f"training state: {path or 'root'} is an object array")
        tensors[path] = torch.from_numpy(np.ascontiguousarray(value).copy())
        return {"__ndarray__": path}
    if isinstance(value, dict):
        if all(isinstance(key, str) for key in value):
            return {
                key: _encode(item, f"{path}/{key}" if path else key, tensors)
                for key, item in value.items()
            }
        return {
            "__dict__": [
                [key, _encode(item, f"{path}/{key}" if path else str(key), tensors)]
                for key, item in value.items()
            ]
        }
    if isinstance(value, tuple):
        return {
            "__tuple__": [_encode(item, f"{path}/{i}", tensors) for i, item in enumerate(value)]
        }
    if isinstance(value, list):
        return [_encode(item, f"{path}/{i}", tensors) for i, item in enumerate(value)]
    if isinstance(value, (np.integer, np.floating, np.bool_)):
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(
        f"training state: {path or 'root'} has type {type(value).__name__}, which cannot be "
        "stored without pickles (expected tensors, arrays, numbers, strings, lists, dicts)"
    )


def _decode(value: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(value, dict):
        if "__tensor__" in value:
            return tensors[value["__tensor__"]]
        if "__ndarray__" in value:
            return tensors[value["__ndarray__"]].numpy()
        if "__tuple__" in value:
            return tuple(_decode(item, tensors) for item in value["__tuple__"])
        if "__dict__" in value:
            return {_decode_key(key): _decode(item, tensors) for key, item in value["__dict__"]}
        return {key: _decode(item, tensors) for key, item in value.items()}
    if isinstance(value, list):
        return [_decode(item, tensors) for item in value]
    return value


def _decode_key(key: Any) -> Any:
    return tuple(key) if isinstance(key, list) else key


def save_state(path: str | os.PathLike, state: dict[str, Any]) -> None:
    """Write a training state to one safetensors file, atomically.

    Parameters
    ----------
    path : str or os.PathLike
        The file to write; its directory must exist.
    state : dict
        Nested dicts, lists and tuples of tensors, NumPy arrays, numbers, strings and ``None``.

    Raises
    ------
    TypeError
        If the state holds anything that could only be stored as a pickle.
    """
    from safetensors.torch import save

    tensors: dict[str, torch.Tensor] = {}
    skeleton = _encode(state, "", tensors)
    header = json.dumps({"version": _FORMAT_VERSION, "state": skeleton}, allow_nan=True)
    payload = save(tensors, metadata={_METADATA_KEY: header})
    with atomic_write(path, "wb") as f:
        f.write(payload)


def load_state(path: str | os.PathLike) -> dict[str, Any]:
    """Read a training state written by :func:`save_state` (tensors on the CPU).

    Raises
    ------
    FileFormatError
        If the file is missing, is not a safetensors file, or holds no training state.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load

    check_readable(path)
    with open(path, "rb") as f:
        payload = f.read()
    try:
        tensors = load(payload)
        header_size = int.from_bytes(payload[:8], "little")
        metadata = json.loads(payload[8 : 8 + header_size]).get("__metadata__") or {}
    except (SafetensorError, ValueError, UnicodeDecodeError) as error:
        raise FileFormatError(path, f"not a safetensors file ({error})") from None
    if _METADATA_KEY not in metadata:
        raise FileFormatError(path, "is a safetensors file but holds no physnet training state")
    header = json.loads(metadata[_METADATA_KEY], parse_constant=_parse_constant)
    if header.get("version") != _FORMAT_VERSION:
        raise FileFormatError(
            path, f"training-state version {header.get('version')}, expected {_FORMAT_VERSION}"
        )
    return _decode(header["state"], tensors)


def _parse_constant(name: str) -> float:
    return {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}[name]
