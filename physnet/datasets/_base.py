"""The sample interface every physnet dataset follows (generated stores and readers alike)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["FieldDataset"]


class FieldDataset:
    """A map-style dataset of samples made of named fields.

    ``dataset[i]`` is a ``dict`` mapping each field name to a NumPy array (the sample's
    value of that field, without the sample axis); torch's ``DataLoader`` collates such
    samples into batched tensors, so every ``FieldDataset`` is a torch ``Dataset``
    without importing torch. ``inputs`` and ``targets`` name the fields a supervised
    model maps from and to (the Trainer's defaults).

    Subclasses implement :meth:`__len__` and :meth:`_sample`; the base class checks the
    index (negative indices count from the end) and applies the index map of a subset.

    Attributes
    ----------
    fields : tuple of str
        Names of the fields of each sample.
    inputs, targets : tuple of str
        The fields a supervised model maps from and to.
    attrs : dict
        Provenance: generator, config, seed, version, source file...
    """

    fields: tuple[str, ...] = ()
    inputs: tuple[str, ...] = ()
    targets: tuple[str, ...] = ()
    attrs: dict[str, Any]

    def __len__(self) -> int:
        raise NotImplementedError

    def _sample(self, index: int) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        n = len(self)
        if not isinstance(index, (int, np.integer)):
            raise TypeError(f"{type(self).__name__}: index must be an integer, not {index!r}")
        if not -n <= index < n:
            raise IndexError(f"{type(self).__name__}: index {index} out of range for {n} samples")
        return self._sample(int(index) % n)

    def subset(self, indices: Sequence[int]) -> FieldDataset:
        """A view of the samples at ``indices`` (in that order)."""
        return _Subset(self, indices)

    def __repr__(self) -> str:
        return (
            f"<{type(self).__name__}: {len(self)} samples, fields {list(self.fields)}, "
            f"inputs {list(self.inputs)}, targets {list(self.targets)}>"
        )


class _Subset(FieldDataset):
    def __init__(self, parent: FieldDataset, indices: Sequence[int]) -> None:
        indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        n = len(parent)
        if indices.size and (indices.min() < 0 or indices.max() >= n):
            raise IndexError(
                f"subset indices must lie in [0, {n}), got {indices.min()}..{indices.max()}"
            )
        self.parent = parent
        self.indices = indices
        self.fields, self.inputs, self.targets = parent.fields, parent.inputs, parent.targets
        self.attrs = parent.attrs

    def __len__(self) -> int:
        return int(self.indices.size)

    def _sample(self, index: int) -> dict[str, np.ndarray]:
        return self.parent[int(self.indices[index])]
