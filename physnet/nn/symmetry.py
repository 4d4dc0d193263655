"""Make a trained model exactly equivariant by averaging it over a group of grid symmetries.

Where the physics commutes with a symmetry ``g`` of the grid (the Darcy solution operator on
the square commutes with all eight symmetries of the square: rotating the coefficient rotates
the pressure), the group average

.. math:: \\bar f(x) = \\frac{1}{|G|} \\sum_{g \\in G} g^{-1} f(g\\, x)

of any model ``f`` is exactly equivariant, ``f̄(g x) = g f̄(x)``. For an equivariant target
``u`` its error at ``x`` is at most the mean of ``f``'s errors over the orbit ``{g x}``
(the triangle inequality; the symmetries permute grid nodes, so they keep L2 norms). It
costs ``|G|`` forward passes, run as one batch.

The symmetries are named as in :mod:`physnet.training.augment`; they act on the grid axes
only, so every channel must be a scalar field (a velocity's components would have to turn
with the grid, and do not here). The physics commuting with ``G`` is not enough: ``f`` is
evaluated on the moved inputs ``g x``, so they must look like its training data, that is,
the law of the inputs must be invariant under ``G`` too. The isotropic Darcy coefficients
are; HANO's multiscale coefficients, with preferred directions, are not, and averaging a
model trained on them makes it five times worse (``solvers/mgno-darcy/card.md``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from physnet.training.augment import (
    DIHEDRAL_2D,
    apply_symmetry,
    check_symmetries,
    inverse_symmetry,
    parse_symmetry,
)

GROUPS = {"d4": DIHEDRAL_2D, "flips": ("flip0", "flip1", "rot180_01")}


def _check_group(names: tuple[str, ...]) -> None:
    """Raise unless ``names`` with the identity is closed under composition (a group), by
    their action on the nodes of a 3 × ... × 3 grid."""
    ndim = 1 + max(max(parse_symmetry(name)[1]) for name in names)
    grid = torch.arange(3**ndim).reshape(1, 1, *(3,) * ndim)

    def image(x: torch.Tensor) -> tuple[int, ...]:
        return tuple(x.flatten().tolist())

    members = {image(grid)} | {image(apply_symmetry(grid, name)) for name in names}
    if len(members) != len(names) + 1:
        raise ValueError(
            f"SymmetryAverage: symmetries {names} repeat an element or name the identity; "
            "list each symmetry other than the identity once"
        )
    for first in names:
        for second in names:
            if image(apply_symmetry(apply_symmetry(grid, first), second)) not in members:
                raise ValueError(
                    f"SymmetryAverage: symmetries {names} are not a group: {first!r} then "
                    f"{second!r} is none of them, so the average would not be equivariant "
                    "(use 'd4', 'flips', or add the missing compositions)"
                )


class SymmetryAverage(torch.nn.Module):
    """A model averaged over a group of exact grid symmetries (test-time symmetrisation).

    Parameters
    ----------
    model : torch.nn.Module
        Maps ``(batch, channels, *grid)`` to ``(batch, channels', *grid)`` on the same grid.
    symmetries : str or sequence of str, default "d4"
        ``"d4"``: the eight symmetries of the square (grid axes 0 and 1, which must have equal
        sizes); ``"flips"``: the identity, both flips and the half turn (any rectangle); or the
        names of the group's elements other than the identity (see
        :mod:`physnet.training.augment`), which must be closed under composition.

    Raises
    ------
    ValueError
        For an unknown symmetry, or names that are not a group with the identity; at call
        time, for a grid a symmetry cannot act on (see
        :func:`physnet.training.augment.check_symmetries`).

    Notes
    -----
    The wrapper holds no weights of its own: save and load the wrapped ``model`` (the
    attribute of that name) and wrap it again after loading.

    Examples
    --------
    The average of a model that is not equivariant is:

    >>> import torch
    >>> from physnet.nn import SymmetryAverage
    >>> from physnet.training.augment import apply_symmetry
    >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
    <torch._C.Generator object at ...>
    >>> model = torch.nn.Conv2d(1, 1, 3, padding=1)  # a random, lopsided stencil
    >>> average = SymmetryAverage(model, "d4")
    >>> x = torch.randn(2, 1, 8, 8)
    >>> turned = apply_symmetry(x, "rot90_01")
    >>> bool(torch.allclose(average(turned), apply_symmetry(average(x), "rot90_01"), atol=1e-6))
    True
    >>> bool(torch.allclose(model(turned), apply_symmetry(model(x), "rot90_01"), atol=1e-6))
    False
    """

    def __init__(self, model: torch.nn.Module, symmetries: str | Sequence[str] = "d4") -> None:
        super().__init__()
        if not isinstance(model, torch.nn.Module):
            raise ValueError(f"SymmetryAverage: model must be a torch.nn.Module, got {model!r}")
        if isinstance(symmetries, str):
            if symmetries not in GROUPS:
                raise ValueError(
                    f"SymmetryAverage: unknown group {symmetries!r}; expected one of "
                    f"{sorted(GROUPS)} or a sequence of symmetry names"
                )
            names = GROUPS[symmetries]
        else:
            names = tuple(symmetries)
            if not names:
                raise ValueError("SymmetryAverage: symmetries is empty; the identity alone")
            for name in names:
                parse_symmetry(name)
            _check_group(names)
        self.model = model
        self.symmetries: tuple[str, ...] = names

    @property
    def config(self) -> Any:
        """The wrapped model's configuration (``None`` where it has none)."""
        return getattr(self.model, "config", None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_symmetries(self.symmetries, x.shape[2:])
        batch = x.shape[0]
        stacked = torch.cat([x, *(apply_symmetry(x, name) for name in self.symmetries)])
        parts = self.model(stacked).split(batch)
        total = parts[0].clone()
        for part, name in zip(parts[1:], self.symmetries, strict=True):
            total += apply_symmetry(part, inverse_symmetry(name))
        return total / (len(self.symmetries) + 1)

    def extra_repr(self) -> str:
        return f"symmetries={self.symmetries}"
