r"""Iterative baselines of linear inverse problems ``y = A x + n``: backprojection,
Tikhonov (CG on the normal equations) and ADMM with 3-D total variation.

Every function takes a linear operator with a batched calling convention (``A @ x`` maps
``(..., N)`` to measurements, ``A.H @ y`` maps them back, as
:class:`physnet.operators.NearFieldMIMO` does), measurements with any leading batch axes,
and returns reflectivities ``(..., N)`` of the measurements' kind. The problems are posed
on the normalised operator ``A / s``, ``s = ||A||_2`` (:func:`operator_norm`), so the
regularisation weights do not depend on the operator's physical scale.

Examples
--------
>>> import numpy as np
>>> from physnet.operators import NearFieldMIMO
>>> from physnet.solvers.inverse import backprojection, tikhonov
>>> A = NearFieldMIMO(n_frequencies=4, grid_shape=(4, 4, 6), dtype=np.complex128)
>>> x = np.zeros(96, complex); x[40] = 1.0
>>> y = A @ x
>>> int(np.argmax(np.abs(backprojection(A, y))))
40
>>> x_hat = tikhonov(A, y, regularization=1e-8, rtol=1e-10, maxiter=500)
>>> bool(np.linalg.norm(A @ x_hat - y) < 1e-4 * np.linalg.norm(y))
True
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np

from physnet import backend
from physnet.operators.base import CallableOperator
from physnet.solvers.cg import cg

__all__ = ["admm_tv", "backprojection", "operator_norm", "tikhonov", "tv_denoise"]


def operator_norm(A: Any, *, rtol: float = 1e-8, seed: int = 0) -> float:
    """The spectral norm ``||A||_2``: the largest eigenvalue of ``A^H A`` by Lanczos (ARPACK).

    Examples
    --------
    >>> import numpy as np
    >>> from physnet.operators import MatrixOperator
    >>> round(operator_norm(MatrixOperator(np.diag([1.0, 3.0, 2.0]))), 6)
    3.0
    """
    import scipy.sparse.linalg

    n = A.shape[1]
    dtype = np.result_type(A.dtype, np.complex64)
    if n == 1:
        column = np.asarray(A @ np.ones(1, dtype=dtype)).reshape(-1)
        return float(np.linalg.norm(column))
    normal = scipy.sparse.linalg.LinearOperator(
        (n, n), matvec=lambda v: np.asarray(A.H @ (A @ v.astype(dtype))).reshape(-1), dtype=dtype
    )
    rng = np.random.default_rng(seed)
    start = (rng.standard_normal(n) + 1j * rng.standard_normal(n)).astype(dtype)
    if n <= 3:
        values = [np.max(np.linalg.eigvalsh(normal @ np.eye(n, dtype=dtype)))]
    else:
        values = scipy.sparse.linalg.eigsh(
            normal, k=1, which="LM", tol=rtol, v0=start, return_eigenvectors=False
        )
    return math.sqrt(max(float(np.real(values[0])), 0.0))


def _measurements(function: str, A: Any, y: Any) -> tuple[np.ndarray, tuple[int, ...], Any]:
    """``y`` as a NumPy ``(B, M)`` array, the batch shape, and the caller's array."""
    m = A.shape[0]
    array = backend.to_numpy(y)
    shape = tuple(array.shape)
    measurement_shape = tuple(getattr(A, "measurement_shape", (m,)))
    k = len(measurement_shape)
    if shape[-k:] == measurement_shape:
        batch = shape[:-k]
    elif shape[-1:] == (m,):
        batch = shape[:-1]
    else:
        raise ValueError(
            f"{function}: measurements have shape {shape}, expected (..., "
            f"{', '.join(map(str, measurement_shape))}) or (..., {m})"
        )
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{function}: measurements have NaN or Inf entries")
    return array.reshape(-1, m), batch, y


def _result(x: np.ndarray, batch: tuple[int, ...], like: Any) -> Any:
    x = x.reshape(*batch, x.shape[-1])
    return x if backend.array_kind(like) == "numpy" else backend.as_like(x, like)


def _positive(function: str, name: str, value: Any, allow_zero: bool = False) -> float:
    ok = isinstance(value, numbers.Real) and (value >= 0 if allow_zero else value > 0)
    if not ok or not math.isfinite(value):
        bound = "non-negative" if allow_zero else "positive"
        raise ValueError(f"{function}: {name}={value!r}, expected a {bound} number")
    return float(value)


def backprojection(A: Any, y: Any, *, normalize: bool = False) -> Any:
    """The backprojection (adjoint, matched filter) ``A^H y`` of measurements ``(..., M)``.

    Parameters
    ----------
    A : operator
    y : array, shape ``(..., *measurement_shape)`` or ``(..., M)``
    normalize : bool, default False
        Return ``|A^H y|`` divided by each volume's own maximum (the Deep2S input).

    Returns
    -------
    array, shape (..., N)
        Complex, or real magnitudes in [0, 1] with ``normalize``.
    """
    _measurements("backprojection", A, y)
    x = A.H @ y
    if not normalize:
        return x
    if backend.array_kind(x) == "torch":
        magnitude = x.abs()
        peak = magnitude.amax(dim=-1, keepdim=True)
        return magnitude / peak.clamp_min(1e-30)
    magnitude = np.abs(x)
    peak = magnitude.max(axis=-1, keepdims=True)
    return magnitude / np.where(peak > 0, peak, 1.0)


def tikhonov(
    A: Any,
    y: Any,
    *,
    regularization: float = 1e-2,
    rtol: float = 1e-4,
    atol: float = 0.0,
    maxiter: int | None = 100,
    norm: float | None = None,
) -> Any:
    r"""Tikhonov-regularised least squares by CG on the normal equations, per volume.

    Solves :math:`(\hat A^H \hat A + \lambda I) x = \hat A^H \hat y` with
    :math:`\hat A = A / s`, :math:`\hat y = y / s`, :math:`s = \|A\|_2`, i.e. minimises
    :math:`\|A x - y\|^2 / s^2 + \lambda \|x\|^2`, by :func:`physnet.solvers.cg` with the
    common stopping rule ``||b - (Â^H Â + λ I) x|| <= max(rtol ||b||, atol)``.

    Parameters
    ----------
    A : operator
    y : array, shape ``(..., *measurement_shape)`` or ``(..., M)``
    regularization : float, default 1e-2
        ``lambda`` (relative to ``||A||^2``).
    rtol, atol : float
    maxiter : int or None, default 100
    norm : float, optional
        ``||A||_2`` if known (otherwise :func:`operator_norm` computes it).

    Returns
    -------
    array, shape (..., N)
        Complex reflectivities (``NumPy`` computation; the caller's kind back).
    """
    regularization = _positive("tikhonov", "regularization", regularization, allow_zero=True)
    rows, batch, like = _measurements("tikhonov", A, y)
    scale = operator_norm(A) if norm is None else _positive("tikhonov", "norm", norm)
    n = A.shape[1]
    dtype = np.result_type(A.dtype, rows.dtype, np.complex64)
    normal = _normal_operator(A, scale, regularization, n, dtype)
    out = np.empty((rows.shape[0], n), dtype=dtype)
    for index, row in enumerate(rows):
        rhs = np.asarray(A.H @ row.astype(dtype)).reshape(-1) / scale**2
        out[index], _ = cg(normal, rhs, rtol=rtol, atol=atol, maxiter=maxiter)
    return _result(out, batch, like)


def _normal_operator(A: Any, scale: float, shift: float, n: int, dtype: Any) -> CallableOperator:
    def apply(x: Any) -> Any:
        return np.asarray(A.H @ (A @ x)).reshape(-1) / scale**2 + shift * x

    return CallableOperator(apply, shape=(n, n), dtype=dtype, hermitian=True)


def _gradient(u: np.ndarray) -> np.ndarray:
    """Forward differences with a zero last row along each axis (Neumann), ``(3, *u.shape)``."""
    g = np.zeros((3, *u.shape), dtype=u.dtype)
    g[0, :-1] = u[1:] - u[:-1]
    g[1, :, :-1] = u[:, 1:] - u[:, :-1]
    g[2, :, :, :-1] = u[:, :, 1:] - u[:, :, :-1]
    return g


def _divergence(p: np.ndarray) -> np.ndarray:
    """The negative adjoint of :func:`_gradient`."""
    d = np.zeros(p.shape[1:], dtype=p.dtype)
    d[:-1] += p[0, :-1]
    d[1:] -= p[0, :-1]
    d[:, :-1] += p[1, :, :-1]
    d[:, 1:] -= p[1, :, :-1]
    d[:, :, :-1] += p[2, :, :, :-1]
    d[:, :, 1:] -= p[2, :, :, :-1]
    return d


def tv_denoise(
    volume: np.ndarray,
    weight: float,
    *,
    iterations: int = 20,
    nonnegative: bool = True,
    dual: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    r"""The prox of isotropic 3-D total variation: :math:`\arg\min_u \frac12\|u - v\|^2 + w\,TV(u)`.

    Beck and Teboulle's projected gradient on the dual (step ``1/12``, since
    ``||grad||^2 <= 12`` in 3-D), optionally with ``u >= 0`` (projection inside the
    iteration, which keeps it the exact prox of ``w TV + indicator(u >= 0)``).

    Parameters
    ----------
    volume : numpy.ndarray, shape (X, Y, Z), real
    weight : float
    iterations : int, default 20
    nonnegative : bool, default True
    dual : numpy.ndarray, shape (3, X, Y, Z), optional
        A warm start of the dual variable (e.g. from the previous ADMM iteration).

    Returns
    -------
    denoised : numpy.ndarray
    dual : numpy.ndarray
        The final dual variable, to warm-start the next call.

    Examples
    --------
    >>> import numpy as np
    >>> v = np.zeros((6, 6, 6)); v[2:4, 2:4, 2:4] = 1.0
    >>> noisy = v + 0.1 * np.random.default_rng(0).standard_normal(v.shape)
    >>> u, _ = tv_denoise(noisy, 0.05, iterations=50)
    >>> bool(np.linalg.norm(u - v) < np.linalg.norm(noisy - v))
    True
    """
    volume = np.asarray(volume, dtype=np.float64)
    if volume.ndim != 3:
        raise ValueError(f"tv_denoise: volume has shape {volume.shape}, expected (X, Y, Z)")
    weight = _positive("tv_denoise", "weight", weight, allow_zero=True)
    if weight == 0:
        return (np.maximum(volume, 0) if nonnegative else volume), np.zeros((3, *volume.shape))
    p = np.zeros((3, *volume.shape)) if dual is None else np.array(dual, dtype=np.float64)
    step = 1.0 / (12.0 * weight)

    def primal(p: np.ndarray) -> np.ndarray:
        u = volume + weight * _divergence(p)
        return np.maximum(u, 0) if nonnegative else u

    for _ in range(iterations):
        p = p + step * _gradient(primal(p))
        p /= np.maximum(1.0, np.sqrt(np.sum(p * p, axis=0)))[None]
    return primal(p), p


def admm_tv(
    A: Any,
    y: Any,
    *,
    grid_shape: tuple[int, int, int] | None = None,
    tv_weight: float = 1e-3,
    penalty: float = 1e-2,
    iterations: int = 50,
    cg_iterations: int = 5,
    tv_iterations: int = 10,
    norm: float | None = None,
    progress: bool = False,
) -> Any:
    r"""ADMM with 3-D total variation on the magnitude (the C-SALSA/ADMM baseline).

    Minimises :math:`\frac12 \|\hat A x - \hat y\|^2 + \tau\, TV(|x|)` (with
    :math:`\hat A = A / \|A\|_2`, :math:`\hat y = y / \|A\|_2`) by the splitting ``z = x``:

    .. math::

        x &\leftarrow (\hat A^H \hat A + \rho I)^{-1} (\hat A^H \hat y + \rho (z - u))
            \quad \text{(warm-started CG, ``cg_iterations`` steps)} \\
        z &\leftarrow \operatorname{prox}_{(\tau/\rho) TV(|\cdot|)}(x + u)
            \quad \text{(TV prox of the magnitude, phase kept)} \\
        u &\leftarrow u + x - z

    The magnitude prox (the polar form of Oral and Oktem) applies :func:`tv_denoise`
    (non-negative) to ``|x + u|`` and keeps the phase. Returns ``z``.

    Parameters
    ----------
    A : operator
        With ``grid_shape`` (or pass ``grid_shape``).
    y : array, shape ``(..., *measurement_shape)`` or ``(..., M)``
    grid_shape : tuple of 3 int, optional
        Default ``A.grid_shape``.
    tv_weight : float, default 1e-3
        ``tau``, in units of the (normalised) reflectivity.
    penalty : float, default 1e-2
        ``rho``.
    iterations, cg_iterations, tv_iterations : int, default 50, 5, 10
    norm : float, optional
        ``||A||_2`` if known.
    progress : bool, default False
        A tqdm bar over the volumes.

    Returns
    -------
    array, shape (..., N)
        Complex reflectivities.
    """
    grid_shape = tuple(grid_shape or getattr(A, "grid_shape", None) or ())
    if len(grid_shape) != 3 or math.prod(grid_shape) != A.shape[1]:
        raise ValueError(
            f"admm_tv: grid_shape={grid_shape or None} does not describe the operator's "
            f"{A.shape[1]} voxels; pass grid_shape=(X, Y, Z)"
        )
    tv_weight = _positive("admm_tv", "tv_weight", tv_weight, allow_zero=True)
    penalty = _positive("admm_tv", "penalty", penalty)
    for name, value in (
        ("iterations", iterations),
        ("cg_iterations", cg_iterations),
        ("tv_iterations", tv_iterations),
    ):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"admm_tv: {name}={value!r}, expected a positive integer")
    rows, batch, like = _measurements("admm_tv", A, y)
    scale = operator_norm(A) if norm is None else _positive("admm_tv", "norm", norm)
    n = A.shape[1]
    dtype = np.result_type(A.dtype, rows.dtype, np.complex64)
    normal = _normal_operator(A, scale, penalty, n, dtype)
    from tqdm.auto import tqdm

    out = np.empty((rows.shape[0], n), dtype=dtype)
    for index in tqdm(range(rows.shape[0]), desc="ADMM-TV", disable=not progress):
        data = np.asarray(A.H @ rows[index].astype(dtype)).reshape(-1) / scale**2
        x = np.zeros(n, dtype=dtype)
        z = np.zeros(n, dtype=dtype)
        u = np.zeros(n, dtype=dtype)
        dual = None
        for _ in range(iterations):
            x, _ = cg(normal, data + penalty * (z - u), x0=x, rtol=1e-12, maxiter=cg_iterations)
            v = x + u
            magnitude = np.abs(v)
            denoised, dual = tv_denoise(
                magnitude.reshape(grid_shape),
                tv_weight / penalty,
                iterations=tv_iterations,
                dual=dual,
            )
            phase = np.where(magnitude > 0, v / np.where(magnitude > 0, magnitude, 1), 1)
            z = (denoised.reshape(-1) * phase).astype(dtype)
            u = u + x - z
        out[index] = z
    return _result(out, batch, like)
