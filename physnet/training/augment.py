"""Data augmentation by exact symmetries of the grid: flips, rotations and transposes.

A symmetry is named by the spatial axes it acts on (0 is the first grid axis, after the
batch and channel axes):

- ``"flip<i>"``: reverse axis ``i``;
- ``"rot180_<i><j>"``: reverse axes ``i`` and ``j`` (a 180° rotation in their plane);
- ``"transpose_<i><j>"``: swap axes ``i`` and ``j`` (their sizes must agree);
- ``"antitranspose_<i><j>"``: the transpose followed by the 180° rotation;
- ``"rot90_<i><j>"``, ``"rot270_<i><j>"``: a quarter turn in the plane of axes ``i`` and
  ``j`` (``torch.rot90`` with ``k = 1`` and ``k = 3``; their sizes must agree).

Each is its own inverse except the quarter turns, which invert each other
(:func:`inverse_symmetry`); with the identity, ``flip0, flip1, rot180_01, transpose_01,
antitranspose_01, rot90_01, rot270_01`` are the eight symmetries of the square
(:data:`DIHEDRAL_2D`). :func:`augment_batch` maps every sample of a batch (its
inputs and targets alike) by one transform drawn uniformly from the identity and the listed
ones. Only list transforms that the physics commutes with: for the near-field MIMO cross
array, ``A^H A`` commutes with ``rot180_01``, ``transpose_01`` and ``antitranspose_01`` but
not with a single flip (``tests/operators/test_radar.py``), so those three are exact
augmentations of ``(A^H y, |x|)`` pairs.

Examples
--------
>>> import torch
>>> from physnet.training.augment import apply_symmetry
>>> x = torch.arange(4.0).reshape(1, 1, 2, 2)
>>> apply_symmetry(x, "transpose_01")[0, 0].tolist()
[[0.0, 2.0], [1.0, 3.0]]
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import torch

_PATTERN = re.compile(r"(flip)(\d)|(rot180|rot90|rot270|transpose|antitranspose)_(\d)(\d)")
_SQUARE = ("transpose", "antitranspose", "rot90", "rot270")  # need equal axis sizes

DIHEDRAL_2D = (
    "flip0",
    "flip1",
    "rot180_01",
    "transpose_01",
    "antitranspose_01",
    "rot90_01",
    "rot270_01",
)
"""The seven symmetries of the square other than the identity (the group D4 of order 8)."""


def parse_symmetry(name: str) -> tuple[str, tuple[int, ...]]:
    """``"rot180_01"`` -> ``("rot180", (0, 1))``; a clear error for anything else."""
    match = _PATTERN.fullmatch(name) if isinstance(name, str) else None
    if match is None:
        raise ValueError(
            f"augment: unknown symmetry {name!r}; expected 'flip<i>', 'rot180_<i><j>', "
            "'rot90_<i><j>', 'rot270_<i><j>', 'transpose_<i><j>' or "
            "'antitranspose_<i><j>' (i, j: grid axes, 0 first)"
        )
    if match.group(1):
        return "flip", (int(match.group(2)),)
    axes = (int(match.group(4)), int(match.group(5)))
    if axes[0] == axes[1]:
        raise ValueError(f"augment: symmetry {name!r} names the same axis twice")
    return match.group(3), axes


def check_symmetries(names: Sequence[str], grid: Sequence[int]) -> None:
    """Raise if a symmetry is unknown, names an axis the grid lacks, or transposes (or turns)
    axes of different sizes."""
    for name in names:
        kind, axes = parse_symmetry(name)
        if max(axes) >= len(grid):
            raise ValueError(
                f"augment: symmetry {name!r} acts on grid axis {max(axes)}, but the samples "
                f"have {len(grid)} grid axes (shape {tuple(grid)})"
            )
        if kind in _SQUARE and grid[axes[0]] != grid[axes[1]]:
            raise ValueError(
                f"augment: symmetry {name!r} swaps grid axes of sizes {grid[axes[0]]} and "
                f"{grid[axes[1]]}; a transpose or quarter turn needs equal sizes"
            )


def inverse_symmetry(name: str) -> str:
    """The name of the symmetry that undoes ``name`` (itself, except for quarter turns).

    >>> inverse_symmetry("rot90_01"), inverse_symmetry("flip1")
    ('rot270_01', 'flip1')
    """
    kind, axes = parse_symmetry(name)
    if kind in ("rot90", "rot270"):
        return f"{'rot270' if kind == 'rot90' else 'rot90'}_{axes[0]}{axes[1]}"
    return name


def apply_symmetry(x: torch.Tensor, name: str) -> torch.Tensor:
    """The symmetry ``name`` on ``x`` of shape ``(batch, channels, *grid)``."""
    kind, axes = parse_symmetry(name)
    dims = [2 + axis for axis in axes]
    if kind in ("flip", "rot180"):
        return torch.flip(x, dims)
    if kind in ("rot90", "rot270"):
        return torch.rot90(x, 1 if kind == "rot90" else 3, dims)
    x = x.transpose(*dims)
    return torch.flip(x, dims) if kind == "antitranspose" else x


def augment_batch(
    tensors: Sequence[torch.Tensor], names: Sequence[str], generator: torch.Generator
) -> list[torch.Tensor]:
    """Map sample ``b`` of every tensor by the same transform, drawn per sample uniformly
    from the identity and ``names`` with ``generator`` (on the CPU)."""
    if not names:
        return list(tensors)
    batch = tensors[0].shape[0]
    choice = torch.randint(len(names) + 1, (batch,), generator=generator)
    out = [t.clone() for t in tensors]
    for k, name in enumerate(names, start=1):
        index = torch.nonzero(choice == k).flatten()
        if index.numel() == 0:
            continue
        for source, target in zip(tensors, out, strict=True):
            rows = index.to(source.device)
            target[rows] = apply_symmetry(source[rows], name)
    return out
