"""Data augmentation by exact symmetries of the grid: flips, 180° rotations and transposes.

A symmetry is named by the spatial axes it acts on (0 is the first grid axis, after the
batch and channel axes):

- ``"flip<i>"``: reverse axis ``i``;
- ``"rot180_<i><j>"``: reverse axes ``i`` and ``j`` (a 180° rotation in their plane);
- ``"transpose_<i><j>"``: swap axes ``i`` and ``j`` (their sizes must agree);
- ``"antitranspose_<i><j>"``: the transpose followed by the 180° rotation.

Each of these is its own inverse. :func:`augment_batch` maps every sample of a batch (its
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

_PATTERN = re.compile(r"(flip)(\d)|(rot180|transpose|antitranspose)_(\d)(\d)")


def parse_symmetry(name: str) -> tuple[str, tuple[int, ...]]:
    """``"rot180_01"`` -> ``("rot180", (0, 1))``; a clear error for anything else."""
    match = _PATTERN.fullmatch(name) if isinstance(name, str) else None
    if match is None:
        raise ValueError(
            f"augment: unknown symmetry {name!r}; expected 'flip<i>', 'rot180_<i><j>', "
            "'transpose_<i><j>' or 'antitranspose_<i><j>' (i, j: grid axes, 0 first)"
        )
    if match.group(1):
        return "flip", (int(match.group(2)),)
    axes = (int(match.group(4)), int(match.group(5)))
    if axes[0] == axes[1]:
        raise ValueError(f"augment: symmetry {name!r} names the same axis twice")
    return match.group(3), axes


def check_symmetries(names: Sequence[str], grid: Sequence[int]) -> None:
    """Raise if a symmetry is unknown, names an axis the grid lacks, or transposes axes of
    different sizes."""
    for name in names:
        kind, axes = parse_symmetry(name)
        if max(axes) >= len(grid):
            raise ValueError(
                f"augment: symmetry {name!r} acts on grid axis {max(axes)}, but the samples "
                f"have {len(grid)} grid axes (shape {tuple(grid)})"
            )
        if kind in ("transpose", "antitranspose") and grid[axes[0]] != grid[axes[1]]:
            raise ValueError(
                f"augment: symmetry {name!r} swaps grid axes of sizes {grid[axes[0]]} and "
                f"{grid[axes[1]]}; a transpose needs equal sizes"
            )


def apply_symmetry(x: torch.Tensor, name: str) -> torch.Tensor:
    """The symmetry ``name`` on ``x`` of shape ``(batch, channels, *grid)``."""
    kind, axes = parse_symmetry(name)
    dims = [2 + axis for axis in axes]
    if kind in ("flip", "rot180"):
        return torch.flip(x, dims)
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
