"""Vector kernels shared by the conjugate-direction cores (CG, flexible CG).

They work on every backend without leaving the device: scalars stay 0-d arrays and
are read on the host once per iteration, through :func:`physnet.solvers._system.to_host`.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np

from physnet.backend import Backend
from physnet.solvers._result import Status

__all__ = [
    "add_scaled",
    "classify_breakdown",
    "dot_function",
    "guarded_step",
    "scale_add",
    "single_threaded_blas",
]

_Iterate = TypeVar("_Iterate", bound=Callable[..., Any])


def single_threaded_blas(iterate: _Iterate) -> _Iterate:
    """Run a NumPy iteration with BLAS limited to one thread.

    The iterations interleave BLAS level-1 calls (dot products) with multithreaded
    operator applies (numba kernels, pyamg). OpenBLAS worker threads busy-wait after
    each call and then compete with the operator's threads for the cores: on a 2-core
    machine this made a 64^3 CG ten times slower. A single-threaded dot product costs
    almost nothing, so the whole iteration runs with BLAS on one thread.
    """

    @functools.wraps(iterate)
    def wrapper(system: Any, *args: Any, **kwargs: Any) -> Any:
        if system.backend.kind != "numpy":
            return iterate(system, *args, **kwargs)
        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=1, user_api="blas"):
            return iterate(system, *args, **kwargs)

    return wrapper  # type: ignore[return-value]


def dot_function(be: Backend, dtype: np.dtype):
    """``(a, b) -> a^H b`` as a device scalar; NumPy's ``dot`` for real arrays, as SciPy uses."""
    if be.kind == "numpy" and dtype.kind != "c":
        return np.dot
    return be.vdot


def guarded_step(
    be: Backend, numerator: Any, curvature: Any, numerator_positive: bool
) -> tuple[Any, bool | None]:
    """The step ``numerator / curvature`` and whether it is valid, without synchronising.

    A step is invalid (a breakdown) when ``curvature <= 0``, when it or the curvature is
    not finite, or,
    with ``numerator_positive``, when ``numerator <= 0``. On NumPy the answer is known at
    once (``True``/``False``) and the caller skips an invalid update. On a device it is
    ``None`` (known only when the scalars reach the host) and the step is masked to 0 on
    the device instead, so the update leaves the iterate unchanged and the breakdown,
    detected after the update, still returns the last valid iterate.
    """
    if be.kind == "numpy":
        with np.errstate(all="ignore"):
            step = numerator / curvature
        valid = bool(
            np.real(curvature) > 0
            and np.isfinite(curvature)
            and (not numerator_positive or np.real(numerator) > 0)
            and np.isfinite(step)
        )
        return step, valid
    xp = be.xp
    step = numerator / curvature
    ok = (xp.real(curvature) > 0) & xp.isfinite(curvature) & xp.isfinite(step)
    if numerator_positive:
        ok = ok & (xp.real(numerator) > 0)
    return xp.where(ok, step, xp.zeros_like(step)), None


def add_scaled(be: Backend, y: Any, alpha: Any, x: Any, work: Any, *, subtract: bool = False):
    """``y += alpha x`` (or ``y -= alpha x``) in place, without temporaries.

    ``alpha`` is a Python number or a 0-d array of the backend (a device scalar).

    NumPy and CuPy form ``alpha x`` in the preallocated ``work`` array and add it, which
    gives the same rounding as SciPy's ``y += alpha * x``.
    """
    if be.kind == "torch":
        sign = -1 if subtract else 1
        if isinstance(alpha, (int, float, complex)):
            y.add_(x, alpha=sign * alpha)
        else:
            y.addcmul_(x, alpha, value=sign)
        return y
    be.xp.multiply(x, alpha, out=work)
    if subtract:
        y -= work
    else:
        y += work
    return y


def scale_add(be: Backend, p: Any, beta: Any, z: Any) -> Any:
    """``p = beta p + z`` in place."""
    if be.kind == "torch":
        return p.mul_(beta).add_(z)
    p *= beta
    p += z
    return p


def classify_breakdown(
    *, curvature: float, numerator: float | None, residual_norm: float, preconditioned: bool
) -> Status | None:
    """The breakdown status read from the host copies of an iteration's scalars, if any.

    ``curvature`` is ``p^H A p``; ``numerator`` is ``r^H M r`` for CG (None where the
    method has no such requirement).
    """
    scalars = [curvature, residual_norm] + ([] if numerator is None else [numerator])
    if not all(math.isfinite(s) for s in scalars):
        return Status.NON_FINITE
    if numerator is not None and numerator <= 0:
        return Status.PRECONDITIONER_NOT_POSITIVE_DEFINITE if preconditioned else Status.STAGNATION
    if curvature <= 0:
        return Status.NOT_POSITIVE_DEFINITE
    return None
