"""Figures people would rather look at than tables (matplotlib, imported on first use)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from physnet import backend
from physnet._io import atomic_write

__all__ = ["plot_convergence"]


def plot_convergence(
    results: Sequence[Any],
    path: str | os.PathLike,
    *,
    title: str | None = None,
    rtol: float | None = None,
) -> None:
    """Write a convergence plot (relative residual against iteration) as a PNG.

    Parameters
    ----------
    results : sequence of SolveResult
        One curve per result, labelled with its method, iterations and times.
    path : path-like
        Output PNG, written atomically.
    title : str, optional
    rtol : float, optional
        Draws the tolerance as a horizontal line.
    """
    matplotlib = backend.require("matplotlib", "plotting")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2), layout="constrained")
    for result in results:
        residuals = np.asarray(result.residuals, dtype=float)
        if residuals.size == 0:
            continue
        scale = result.rhs_norm if result.rhs_norm > 0 else 1.0
        label = (
            f"{result.method}: {result.iterations} it, "
            f"{result.setup_time:.2f} s + {result.solve_time:.2f} s"
        )
        ax.semilogy(np.arange(residuals.size), residuals / scale, label=label)
    if rtol is not None:
        ax.axhline(rtol, color="0.5", linestyle="--", linewidth=0.8, label=f"rtol = {rtol:g}")
    ax.set_xlabel("iteration")
    ax.set_ylabel(r"relative residual $\|b - Ax_k\|_2 / \|b\|_2$")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize="small")
    if title:
        ax.set_title(title)
    with atomic_write(path, "wb") as handle:
        fig.savefig(handle, format="png", dpi=120)
    plt.close(fig)
