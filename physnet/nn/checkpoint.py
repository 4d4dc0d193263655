"""Model checkpoints: one ``.safetensors`` file holding the weights and how to rebuild them.

A checkpoint written by :func:`save` is a standard safetensors file. Its header's string
metadata records the registered architecture name (``physnet_model``), the constructor
arguments as JSON (``config``), the physnet version that wrote it and the checkpoint
``format_version``, beside any metadata of the caller, and the SHA-256 of the tensor data
(``physnet_data_sha256``). :func:`load` verifies that checksum (a file with a flipped byte
is refused, naming the file; files written before the checksum existed load as before),
rebuilds the architecture from the registry with that config and loads the weights into
it. No Python object is ever pickled or unpickled, so loading a checkpoint cannot run code.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import safetensors
import safetensors.torch
import torch

from physnet._io import FileFormatError, atomic_write, check_readable
from physnet.nn._registry import _REGISTRY, Model, available_models, create

__all__ = ["load", "read_metadata", "save"]

FORMAT_VERSION = "1"
_ALIASES = "physnet_aliases"
_CHECKSUM = "physnet_data_sha256"
_RESERVED = (
    "physnet_model",
    "config",
    "physnet_version",
    "format_version",
    _ALIASES,
    _CHECKSUM,
)
_MAX_HEADER_BYTES = 100_000_000  # safetensors' own limit on the JSON header
_LISTED = 5  # mismatches named in an error message


def save(
    model: Model, path: str | os.PathLike, *, metadata: Mapping[str, str] | None = None
) -> None:
    """Write ``model``'s weights, architecture name and config to one ``.safetensors`` file.

    The file is written to a temporary name and renamed, so an interrupted save leaves the
    previous file (if any) intact. Weights are stored on the CPU in their own dtypes;
    parameters shared between modules (tied weights) are stored once.

    Parameters
    ----------
    model : Model
        A registered physnet model. A ``DistributedDataParallel``/``DataParallel`` wrapper
        or a ``torch.compile`` module is unwrapped first.
    path : str or os.PathLike
        The file to write (as given; ``.safetensors`` is the conventional suffix). Its
        directory must exist.
    metadata : mapping of str to str, optional
        Extra header entries (for example the training step or the dataset); the names
        ``physnet_model``, ``config``, ``physnet_version``, ``format_version``,
        ``physnet_aliases`` and ``physnet_data_sha256`` are reserved.

    Raises
    ------
    TypeError
        If ``model`` is not a :class:`Model`, or ``metadata`` has a non-string key or value.
    ValueError
        If the model's class is not registered, or ``metadata`` uses a reserved name.

    See Also
    --------
    load, read_metadata

    Examples
    --------
    >>> import os, tempfile
    >>> import physnet.nn
    >>> model = physnet.nn.create("conv-net", hidden_channels=8)
    >>> path = os.path.join(tempfile.mkdtemp(), "model.safetensors")
    >>> physnet.nn.save(model, path, metadata={"epoch": "10"})
    >>> meta = physnet.nn.read_metadata(path)
    >>> meta["physnet_model"], meta["config"]["hidden_channels"], meta["epoch"]
    ('conv-net', 8, '10')
    """
    model = _unwrap(model)
    if not isinstance(model, Model):
        raise TypeError(
            f"save: expected a physnet.nn.Model, got {type(model).__name__}; a plain torch "
            "module has no registered config to rebuild it from (save its state_dict with "
            "safetensors.torch.save_file instead)"
        )
    name = type(model).name
    if name is None or _REGISTRY.get(name) is not type(model):
        raise ValueError(
            f"save: {type(model).__qualname__} is not a registered model; declare it as "
            f"class {type(model).__name__}(Model, name='...')"
        )
    header = {
        "physnet_model": name,
        "config": json.dumps(model.config, sort_keys=True),
        "physnet_version": _physnet_version(),
        "format_version": FORMAT_VERSION,
    }
    for key, value in (metadata or {}).items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise TypeError(
                f"save: metadata entries must be strings (json.dumps other values), got "
                f"{key!r}: {type(value).__name__}"
            )
        if key in _RESERVED:
            raise ValueError(f"save: metadata name {key!r} is reserved; reserved: {_RESERVED}")
        header[key] = value
    tensors, aliases = _flatten(model.state_dict())
    if aliases:
        header[_ALIASES] = json.dumps(aliases, sort_keys=True)
    # The data section does not depend on the header, so its checksum, computed on a
    # first serialisation, describes the second one too (checked).
    header[_CHECKSUM] = hashlib.sha256(_data_section(safetensors.torch.save(tensors))).hexdigest()
    payload = safetensors.torch.save(tensors, metadata=header)
    if hashlib.sha256(_data_section(payload)).hexdigest() != header[_CHECKSUM]:
        raise RuntimeError("save: safetensors laid the tensor data out differently twice")
    with atomic_write(path) as f:
        f.write(payload)


def _data_section(payload: bytes) -> memoryview:
    """The tensor data of a serialised safetensors file: what follows the JSON header."""
    header_length = int.from_bytes(payload[:8], "little")
    return memoryview(payload)[8 + header_length :]


def load(
    path_or_pretrained_name: str | os.PathLike,
    *,
    device: str | torch.device = "cpu",
    strict: bool = True,
) -> Model:
    """Rebuild a model from a checkpoint written by :func:`save`, or a pretrained name.

    Parameters
    ----------
    path_or_pretrained_name : str or os.PathLike
        A checkpoint file, or the name of a pretrained model shipped with physnet
        (:func:`physnet.pretrained.available`), whose file's SHA-256 is checked first. An
        existing path wins over a pretrained name; a string with a path separator or the
        ``.safetensors`` suffix is always a path.
    device : str or torch.device, default "cpu"
        Where the returned model lives.
    strict : bool, default True
        If False, weights missing from the file and entries the architecture does not have
        are ignored (as in :meth:`torch.nn.Module.load_state_dict`); shapes must match
        either way.

    Returns
    -------
    Model
        The registered architecture built with the saved config, holding the saved weights
        in their saved dtypes, in evaluation mode, on ``device``.

    Raises
    ------
    FileFormatError
        If the file is missing, is not a safetensors file, is truncated, has no physnet
        metadata, or its tensor data does not match the SHA-256 its header records (a
        corrupt file); the message names the file. Files without the checksum (written
        by older versions) are not checked.
    ValueError
        If the architecture is not registered, the config does not fit its constructor,
        or the weights do not fit the architecture (listing the first mismatches), naming
        the file; or an unknown pretrained name (listing the available ones).

    Examples
    --------
    >>> import os, tempfile
    >>> import torch
    >>> import physnet.nn
    >>> model = physnet.nn.create("conv-net", in_channels=2, hidden_channels=8)
    >>> path = os.path.join(tempfile.mkdtemp(), "model.safetensors")
    >>> physnet.nn.save(model, path)
    >>> restored = physnet.nn.load(path)
    >>> restored.config == model.config, restored.training
    (True, False)
    >>> x = torch.randn(1, 2, 16, 16)
    >>> torch.equal(restored(x), model.eval()(x))
    True
    """
    path = _checkpoint_path(path_or_pretrained_name)
    metadata = _physnet_metadata(path)
    if _CHECKSUM in metadata:
        _verify_checksum(path, metadata[_CHECKSUM])
    name, config = metadata["physnet_model"], metadata["config"]
    if name not in _REGISTRY:
        raise ValueError(
            f"{path}: unknown model architecture {name!r} (written by physnet "
            f"{metadata.get('physnet_version', '?')}); available models: "
            f"{', '.join(available_models())}"
        )
    try:
        model = create(name, **config)
    except (TypeError, ValueError) as error:
        raise ValueError(
            f"{path}: the saved config of {name!r} does not build this version's "
            f"architecture: {error}"
        ) from None
    try:
        tensors = safetensors.torch.load_file(path, device="cpu")
    except (safetensors.SafetensorError, OSError, ValueError, RuntimeError) as error:
        raise FileFormatError(path, f"unreadable tensor data ({error})") from None
    aliases = metadata.get(_ALIASES, {})
    for alias, stored in aliases.items():
        if stored not in tensors:
            raise FileFormatError(path, f"alias {alias!r} refers to the missing tensor {stored!r}")
        tensors[alias] = tensors[stored]
    _load_into(model, tensors, strict=strict, where=f"{path}: the weights do not fit {name!r}")
    return model.to(device).eval()


def read_metadata(path_or_pretrained_name: str | os.PathLike) -> dict[str, Any]:
    """The header metadata of a checkpoint, without loading its weights.

    Parameters
    ----------
    path_or_pretrained_name : str or os.PathLike
        As for :func:`load`.

    Returns
    -------
    dict
        The string entries of the safetensors header (``physnet_model``,
        ``physnet_version``, ``format_version`` and the caller's metadata), with
        ``config`` decoded to a dict. Empty for a safetensors file without metadata.

    Raises
    ------
    FileFormatError
        If the file is missing or is not a safetensors file.

    Examples
    --------
    >>> import os, tempfile
    >>> import physnet.nn
    >>> path = os.path.join(tempfile.mkdtemp(), "model.safetensors")
    >>> physnet.nn.save(physnet.nn.create("conv-net"), path)
    >>> sorted(physnet.nn.read_metadata(path))
    ['config', 'format_version', 'physnet_data_sha256', 'physnet_model', 'physnet_version']
    """
    path = _checkpoint_path(path_or_pretrained_name)
    metadata: dict[str, Any] = dict(_read_header(path).get("__metadata__") or {})
    for key in ("config", _ALIASES):
        if key in metadata:
            metadata[key] = _json_object(path, metadata, key)
    return metadata


def _unwrap(model: Any) -> Any:
    while True:
        if isinstance(model, (torch.nn.DataParallel, torch.nn.parallel.DistributedDataParallel)):
            model = model.module
        elif isinstance(getattr(model, "_orig_mod", None), torch.nn.Module):  # torch.compile
            model = model._orig_mod
        else:
            return model


def _physnet_version() -> str:
    import physnet

    return physnet.__version__


def _checkpoint_path(path_or_name: str | os.PathLike) -> Path:
    if isinstance(path_or_name, os.PathLike) or os.path.exists(path_or_name):
        return Path(path_or_name)
    if not isinstance(path_or_name, str):
        raise TypeError(
            f"expected a checkpoint path or a pretrained model name, got {path_or_name!r}"
        )
    looks_like_path = (
        "/" in path_or_name or os.sep in path_or_name or path_or_name.endswith(".safetensors")
    )
    if looks_like_path:
        check_readable(path_or_name)  # raises FileFormatError: no such file
    import physnet.pretrained

    return physnet.pretrained.resolve(path_or_name)


def _read_header(path: Path) -> dict[str, Any]:
    """The JSON header of a safetensors file, checked against the file's size."""
    check_readable(path)
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        prefix = f.read(8)
        if len(prefix) < 8:
            raise FileFormatError(path, f"not a safetensors file ({size} bytes, no header)")
        header_length = int.from_bytes(prefix, "little")
        if not 2 <= header_length <= min(size - 8, _MAX_HEADER_BYTES):
            raise FileFormatError(
                path,
                f"not a safetensors file, or truncated: the header length field reads "
                f"{header_length} bytes, the file holds {size - 8} after it",
            )
        raw = f.read(header_length)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        header = None
    if not isinstance(header, dict):
        raise FileFormatError(path, "not a safetensors file (its header is not a JSON object)")
    metadata = header.get("__metadata__") or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise FileFormatError(path, "corrupt safetensors header ('__metadata__' is not strings)")
    data_end = 0
    for key, entry in header.items():
        if key == "__metadata__":
            continue
        try:
            _begin, end = entry["data_offsets"]
            data_end = max(data_end, int(end))
        except (TypeError, KeyError, ValueError):
            raise FileFormatError(
                path, f"corrupt safetensors header (tensor {key!r} has no data_offsets)"
            ) from None
    available = size - 8 - header_length
    if data_end > available:
        raise FileFormatError(
            path,
            f"truncated: its tensors need {data_end} bytes of data, the file holds {available}",
        )
    return header


def _verify_checksum(path: Path, expected: str) -> None:
    """Compare the SHA-256 of the file's tensor data with the one its header records."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        header_length = int.from_bytes(f.read(8), "little")
        f.seek(8 + header_length)
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    if digest.hexdigest() != expected:
        raise FileFormatError(
            path,
            f"corrupt checkpoint: the SHA-256 of its tensor data is {digest.hexdigest()}, "
            f"its header records {expected} (the file was damaged after it was written)",
        )


def _json_object(path: Path, metadata: Mapping[str, str], key: str) -> dict[str, Any]:
    try:
        value = json.loads(metadata[key])
    except json.JSONDecodeError:
        value = None
    if not isinstance(value, dict):
        raise FileFormatError(path, f"metadata entry {key!r} is not a JSON object")
    return value


def _physnet_metadata(path: Path) -> dict[str, Any]:
    metadata = read_metadata(path)
    if "physnet_model" not in metadata or "config" not in metadata:
        raise FileFormatError(
            path,
            "a safetensors file without physnet metadata (no 'physnet_model' and 'config'), "
            "i.e. bare weights: build the model with physnet.nn.create and load them with "
            "safetensors.torch.load_file and load_state_dict",
        )
    version = metadata.get("format_version")
    if version != FORMAT_VERSION:
        raise FileFormatError(
            path,
            f"checkpoint format_version {version!r} (physnet {metadata.get('physnet_version')}"
            f"); this physnet reads format {FORMAT_VERSION!r}",
        )
    return metadata


def _flatten(state: Mapping[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """CPU tensors safetensors accepts (no shared storage), and the aliases of tied weights.

    Entries that are the very same tensor (tied weights: same storage, offset, shape,
    strides and dtype) are stored once and recorded as aliases; distinct views of one
    storage are copied apart, since safetensors refuses shared memory.
    """
    tensors: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    first_of_view: dict[tuple, str] = {}
    storage_users: dict[tuple, list[str]] = {}
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise TypeError(
                f"save: state_dict entry {key!r} is a {type(value).__name__}, not a tensor; "
                "checkpoints hold tensors only (no pickled extra state)"
            )
        value = value.detach()
        if value.numel() > 0:
            storage = (value.device, value.untyped_storage().data_ptr())
            view = (
                *storage,
                value.storage_offset(),
                tuple(value.shape),
                value.stride(),
                value.dtype,
            )
            if view in first_of_view:
                aliases[key] = first_of_view[view]
                continue
            first_of_view[view] = key
            storage_users.setdefault(storage, []).append(key)
        tensors[key] = value
    shared = {key for users in storage_users.values() if len(users) > 1 for key in users}
    for key, value in tensors.items():
        value = value.to("cpu")
        if key in shared:
            value = value.clone()
        tensors[key] = value.contiguous()
    return tensors, aliases


def _load_into(
    model: torch.nn.Module, tensors: dict[str, torch.Tensor], *, strict: bool, where: str
) -> None:
    """Load ``tensors`` into ``model``, adopting their dtypes; one clear error on mismatch."""
    expected = model.state_dict()
    missing = [key for key in expected if key not in tensors]
    unexpected = [key for key in tensors if key not in expected]
    problems = []
    for key, target in expected.items():  # in the model's order, which reads best
        if key not in tensors:
            continue
        value = tensors[key]
        if value.shape != target.shape:
            problems.append(
                f"{key}: shape {tuple(value.shape)} in the file, {tuple(target.shape)} in the model"
            )
        elif (value.is_floating_point(), value.is_complex()) != (
            target.is_floating_point(),
            target.is_complex(),
        ):
            problems.append(f"{key}: dtype {value.dtype} in the file, {target.dtype} in the model")
    if strict:
        problems += [f"{key}: missing from the file" for key in missing]
        problems += [f"{key}: in the file but not in the model" for key in unexpected]
    if problems:
        listed = "; ".join(problems[:_LISTED])
        more = f"; and {len(problems) - _LISTED} more" if len(problems) > _LISTED else ""
        raise ValueError(f"{where}: {len(problems)} mismatch(es): {listed}{more}")
    # A model saved after .double() (or in mixed precision) comes back in its own dtypes.
    for key, value in tensors.items():
        if key in expected and value.dtype != expected[key].dtype:
            _set_dtype(model, key, value.dtype)
    model.load_state_dict(tensors, strict=False)


def _set_dtype(model: torch.nn.Module, key: str, dtype: torch.dtype) -> None:
    module_name, _, attribute = key.rpartition(".")
    module = model.get_submodule(module_name)
    if attribute in module._parameters:
        parameter = module._parameters[attribute]
        parameter.data = parameter.data.to(dtype)  # keeps the Parameter, so ties survive
    elif attribute in module._buffers:
        module._buffers[attribute] = module._buffers[attribute].to(dtype)
