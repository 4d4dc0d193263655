"""TOML configuration files: one reader and one KEY=VALUE override parser for every command."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Mapping
from typing import Any

from physnet._io import FileFormatError, check_readable

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

__all__ = ["load_toml", "parse_assignments"]


def load_toml(path: str | os.PathLike) -> dict[str, Any]:
    """Read a TOML file; a missing, unreadable or invalid file raises FileFormatError naming it."""
    check_readable(path)
    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except tomllib.TOMLDecodeError as error:
        raise FileFormatError(path, f"invalid TOML ({error})") from None
    except UnicodeDecodeError as error:
        raise FileFormatError(path, f"not UTF-8 text ({error})") from None


def parse_assignments(
    items: Mapping[str, Any] | Iterable[str] | str | None,
) -> list[tuple[str, Any]]:
    """``["a.b=5", "c='x'"]`` → ``[("a.b", 5), ("c", "x")]``; values are read as TOML.

    A value that is not valid TOML is kept as the string given (``name=sphere``). A
    mapping is returned as its items.

    Examples
    --------
    >>> parse_assignments(["training.epochs=5", "data.train=run.h5", "names=['box']"])
    [('training.epochs', 5), ('data.train', 'run.h5'), ('names', ['box'])]
    """
    if items is None:
        return []
    if isinstance(items, Mapping):
        return list(items.items())
    if isinstance(items, str):
        items = [items]
    parsed = []
    for item in items:
        key, separator, text = str(item).partition("=")
        if not separator or not key.strip():
            raise ValueError(f"override {item!r}: expected KEY=VALUE, e.g. training.epochs=5")
        try:
            value = tomllib.loads(f"value = {text.strip()}")["value"]
        except tomllib.TOMLDecodeError:
            value = text.strip()
        parsed.append((key.strip(), value))
    return parsed
