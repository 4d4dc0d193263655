"""Argument checks shared by the networks of :mod:`physnet.nn` (one copy of each)."""

from __future__ import annotations

from typing import Any

import torch


def is_int(value: object) -> bool:
    """An integer that is not a bool."""
    return isinstance(value, int) and not isinstance(value, bool)


def per_channel(
    owner: str, name: str, value: Any, channels: int, ndim: int = 2, *, positive: bool = False
) -> torch.Tensor:
    """A number or one number per channel as a ``(1, channels, 1, ...)`` float32 tensor.

    Raises
    ------
    ValueError
        Naming ``owner`` and ``name``, for a value that is neither a number nor a list of
        ``channels`` numbers, or (with ``positive``) a value that is not positive.
    """
    values = list(value) if isinstance(value, (list, tuple)) else [value]
    if len(values) not in (1, channels) or not all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in values
    ):
        raise ValueError(
            f"{owner}: {name}={value!r}, expected a number or a list of {channels} numbers"
        )
    if positive and not all(v > 0 for v in values):
        raise ValueError(f"{owner}: {name}={value!r}, expected positive values")
    tensor = torch.tensor([float(v) for v in values], dtype=torch.float32)
    return tensor.expand(channels).reshape(1, channels, *([1] * ndim)).clone()
