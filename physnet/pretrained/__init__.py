"""Pretrained weights shipped with physnet, verified by their SHA-256 before use.

``manifest.json`` beside this module lists the shipped checkpoints, each an object
``{"name", "file", "sha256", "card"}``: the name users pass to :func:`physnet.nn.load`,
the ``.safetensors`` file (relative to the manifest), the SHA-256 of that file, and the
model card (``solvers/<name>/card.md`` in the repository: task, data, the command that
trained it, measured results). This module needs no torch.

Examples
--------
>>> import physnet.pretrained
>>> isinstance(physnet.pretrained.available(), tuple)
True
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from physnet._io import FileFormatError

__all__ = ["available", "info", "resolve"]

_MANIFEST = Path(__file__).with_name("manifest.json")
_FIELDS = ("name", "file", "sha256", "card")


def _entries() -> dict[str, dict[str, str]]:
    """The manifest's entries by name, validated."""
    try:
        entries = json.loads(_MANIFEST.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileFormatError(_MANIFEST, "pretrained manifest is missing") from None
    except json.JSONDecodeError as error:
        raise FileFormatError(_MANIFEST, f"not valid JSON ({error})") from None
    if not isinstance(entries, list):
        raise FileFormatError(_MANIFEST, "expected a JSON list of entries")
    by_name: dict[str, dict[str, str]] = {}
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict) or not all(
            isinstance(entry.get(field), str) for field in _FIELDS
        ):
            raise FileFormatError(
                _MANIFEST, f"entry {index} must be an object with string fields {list(_FIELDS)}"
            )
        if entry["name"] in by_name:
            raise FileFormatError(_MANIFEST, f"the name {entry['name']!r} is listed twice")
        by_name[entry["name"]] = dict(entry)
    return by_name


def available() -> tuple[str, ...]:
    """The names of the shipped pretrained models, sorted.

    Examples
    --------
    >>> from physnet.pretrained import available
    >>> all(isinstance(name, str) for name in available())
    True
    """
    return tuple(sorted(_entries()))


def _entry(name: str) -> dict[str, str]:
    entries = _entries()
    if name not in entries:
        listed = ", ".join(sorted(entries)) or "none are installed"
        raise ValueError(
            f"unknown pretrained model {name!r}; available pretrained models: {listed}"
        )
    return entries[name]


def info(name: str) -> dict[str, Any]:
    """The manifest entry of pretrained model ``name`` (``name, file, sha256, card``).

    Raises
    ------
    ValueError
        If ``name`` is not in the manifest (the message lists the available names).
    """
    return dict(_entry(name))


def resolve(name: str) -> Path:
    """The checkpoint file of pretrained model ``name``, after checking its SHA-256.

    Parameters
    ----------
    name : str
        One of :func:`available`.

    Returns
    -------
    pathlib.Path
        The ``.safetensors`` file, for :func:`physnet.nn.load` (which calls this for a name).

    Raises
    ------
    ValueError
        If ``name`` is not in the manifest (the message lists the available names).
    FileFormatError
        If the file is missing, or its SHA-256 differs from the manifest's (a corrupt or
        replaced file: the message gives both hashes).

    Examples
    --------
    >>> from physnet.pretrained import available, resolve
    >>> all(resolve(name).suffix == ".safetensors" for name in available())
    True
    """
    entry = _entry(name)
    path = _MANIFEST.parent / entry["file"]
    if not path.is_file():
        raise FileFormatError(
            path, f"the weights of pretrained model {name!r} are missing (incomplete installation)"
        )
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    actual = digest.hexdigest()
    if actual != entry["sha256"].lower():
        raise FileFormatError(
            path,
            f"corrupt weights of pretrained model {name!r}: sha256 is {actual}, the manifest "
            f"expects {entry['sha256']}; reinstall physnet",
        )
    return path
