r"""Iterative baselines of linear inverse problems ``y = A x + n``: backprojection,
Tikhonov (CG on the normal equations) and ADMM with 3-D total variation.

Every function takes a linear operator, measurements with any leading batch axes, and
returns reflectivities ``(..., N)`` of the measurements' kind. :func:`backprojection` uses
the batched calling convention (``A.H @ y`` maps ``(..., M)`` to ``(..., N)``, as
:class:`physnet.operators.NearFieldMIMO` does); :func:`tikhonov` and :func:`admm_tv`
solve ``batch_size`` volumes together through the column protocol (``A.matmat`` and
``A.rmatmat`` on ``(N, b)`` and ``(M, b)`` blocks), so one apply of ``A`` serves a whole
batch and any physnet operator (or matrix) serves. The problems are posed on the
normalised operator ``A / s``, ``s = ||A||_2`` (:func:`operator_norm`), so the
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
from collections.abc import Callable
from typing import Any

import numpy as np

from physnet import backend
from physnet.operators.base import CallableOperator, LinearOperator, aslinearoperator
from physnet.solvers._system import Monitor, make_system, meets_tolerance

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
    batch_size: int = 32,
    callback: Callable[[int, np.ndarray], Any] | None = None,
    progress: bool = False,
) -> Any:
    r"""Tikhonov-regularised least squares by CG on the normal equations, in batches.

    Solves :math:`(\hat A^H \hat A + \lambda I) x = \hat A^H \hat y` with
    :math:`\hat A = A / s`, :math:`\hat y = y / s`, :math:`s = \|A\|_2`, i.e. minimises
    :math:`\|A x - y\|^2 / s^2 + \lambda \|x\|^2`, for every volume by the conjugate
    gradient method with the stopping rule of :func:`physnet.solvers.cg`,
    ``||b - (Â^H Â + λ I) x|| <= max(rtol ||b||, atol)`` per volume.

    Parameters
    ----------
    A : operator
    y : array, shape ``(..., *measurement_shape)`` or ``(..., M)``
    regularization : float, default 1e-2
        ``lambda`` (relative to ``||A||^2``).
    rtol, atol : float
    maxiter : int or None, default 100
        Per volume (``None``: ``10 N``, as :func:`physnet.solvers.cg`).
    norm : float, optional
        ``||A||_2`` if known (otherwise :func:`operator_norm` computes it).
    batch_size : int, default 32
        Volumes solved together: each CG iteration applies ``A`` and ``A^H`` once to
        the batch's unconverged volumes.
    callback : callable, optional
        Called after every iteration of a batch as ``callback(iteration, x)``, with
        ``iteration`` counted from 1 in each batch and ``x`` the batch's current
        iterates, shape ``(b, N)`` (converged volumes keep their solution). Batches come
        in the order of the volumes.
    progress : bool, default False
        A tqdm bar over the volumes.

    Returns
    -------
    array, shape (..., N)
        Complex reflectivities (``NumPy`` computation; the caller's kind back).

    Notes
    -----
    The batch runs one CG per volume in lockstep (a block CG with a step ``alpha`` and
    ``beta`` per volume, not a block Krylov method), so each volume's iterates are those
    of :func:`physnet.solvers.cg` on its own system, up to rounding: the same
    convergence test on the true residual (with a restart where the recursion drifted),
    the same breakdown guards and accuracy-floor rule. A volume that converges leaves
    the batch; the others go on.
    """
    regularization = _positive("tikhonov", "regularization", regularization, allow_zero=True)
    batch_size = _check_batch_size("tikhonov", batch_size)
    rows, batch, like, normal, out = _batched_normal_problem("tikhonov", A, y, norm, regularization)
    from tqdm.auto import tqdm

    with tqdm(total=rows.shape[0], desc="Tikhonov", unit="volume", disable=not progress) as bar:
        for start in range(0, rows.shape[0], batch_size):
            stop = min(start + batch_size, rows.shape[0])
            rhs = normal.backproject(rows[start:stop])
            out[start:stop] = _block_cg(
                "tikhonov",
                normal,
                rhs,
                None,
                rtol=rtol,
                atol=atol,
                maxiter=maxiter,
                callback=callback,
            )
            bar.update(stop - start)
    return _result(out, batch, like)


def _check_batch_size(function: str, batch_size: Any) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral):
        raise ValueError(f"{function}: batch_size={batch_size!r}, expected a positive integer")
    if batch_size < 1:
        raise ValueError(f"{function}: batch_size={batch_size!r}, expected a positive integer")
    return int(batch_size)


def _batched_normal_problem(function: str, A: Any, y: Any, norm: float | None, shift: float):
    """The measurement rows, the scaled normal operator ``Â^H Â + shift I`` and the output."""
    rows, batch, like = _measurements(function, A, y)
    operator = aslinearoperator(A)
    scale = operator_norm(A) if norm is None else _positive(function, "norm", norm)
    dtype = np.result_type(operator.dtype, rows.dtype, np.complex64)
    normal = _NormalRows(operator, scale, shift, dtype)
    out = np.empty((rows.shape[0], operator.shape[1]), dtype=dtype)
    return rows, batch, like, normal, out


class _NormalRows:
    """``(Â^H Â + shift I)`` applied to the rows of ``(b, N)`` arrays, one batched apply
    of ``A`` and ``A^H`` per call (the column protocol, ``A.matmat(X.T)``, so any
    operator serves)."""

    def __init__(self, A: LinearOperator, scale: float, shift: float, dtype: Any) -> None:
        self.A, self.scale, self.shift, self.dtype = A, scale, shift, np.dtype(dtype)

    def backproject(self, rows: np.ndarray) -> np.ndarray:
        """``Â^H ŷ`` of measurement rows ``(b, M)``: ``(b, N)``."""
        columns = np.asarray(self.A.rmatmat(rows.astype(self.dtype, copy=False).T))
        return (columns.T / self.scale**2).astype(self.dtype, copy=False)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        measurements = np.asarray(self.A.matmat(x.T))
        normal = np.asarray(self.A.rmatmat(measurements)).T / self.scale**2
        return (normal + self.shift * x).astype(self.dtype, copy=False)

    def operator(self) -> CallableOperator:
        """The same map on single vectors, as a square operator."""
        n = self.A.shape[1]

        def apply(v: Any) -> Any:
            return self(np.asarray(v).reshape(1, -1))[0]

        return CallableOperator(apply, shape=(n, n), dtype=self.dtype, hermitian=True)


def _rowwise_dot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a_j^H b_j`` for every row ``j``."""
    return np.einsum("ij,ij->i", a.conj(), b)


def _block_cg(
    function: str,
    normal: _NormalRows,
    rhs: np.ndarray,
    x0: np.ndarray | None,
    *,
    rtol: float,
    atol: float,
    maxiter: int | None,
    callback: Callable[[int, np.ndarray], Any] | None = None,
) -> np.ndarray:
    """CG on ``normal @ x_j = rhs_j`` for every row ``j`` at once, each row following
    :func:`physnet.solvers.cg`'s iteration (``cg_iterate``) and stopping rule."""
    count = rhs.shape[0]
    operator = normal.operator()
    systems = [
        make_system(function, operator, rhs[j], rtol=rtol, atol=atol, maxiter=maxiter)
        for j in range(count)
    ]
    thresholds = np.array([system.threshold for system in systems])
    limit = systems[0].maxiter if systems else 0
    active = np.array([system.rhs_norm > 0 for system in systems], dtype=bool)
    x = np.zeros_like(rhs) if x0 is None else np.array(x0, dtype=rhs.dtype)
    x[~active] = 0  # cg's answer to b = 0, whatever x0
    r = rhs.copy()
    if x0 is not None and active.any():
        rows = np.flatnonzero(active)
        r[rows] -= normal(x[rows])
    norms = np.linalg.norm(r, axis=1)
    monitors = [Monitor(system, float(norms[j])) for j, system in enumerate(systems)]
    p = np.zeros_like(rhs)
    restart = np.ones(count, dtype=bool)  # cg's "p is None"
    rho_previous = np.ones(count, dtype=rhs.dtype)
    for iteration in range(1, limit + 1):
        check = np.flatnonzero(active & (norms <= thresholds))
        if check.size:
            true_r = rhs[check] - normal(x[check])
            true_norms = np.linalg.norm(true_r, axis=1)
            for k, j in enumerate(check):
                if meets_tolerance(true_norms[k], thresholds[j]):
                    active[j] = False
                    continue
                stop = monitors[j].true_residual(x[j], true_norms[k], norms[j], check=True)
                r[j], norms[j], restart[j] = true_r[k], true_norms[k], True
                if stop is not None:
                    x[j] = monitors[j].solution(x[j], stop)
                    active[j] = False
        rows = np.flatnonzero(active)
        if rows.size == 0:
            break
        residual = r[rows]
        rho = _rowwise_dot(residual, residual)
        with np.errstate(all="ignore"):
            beta = np.where(restart[rows], 0, rho / rho_previous[rows])
        directions = beta[:, None] * p[rows] + residual
        q = normal(directions)
        curvature = _rowwise_dot(directions, q)
        with np.errstate(all="ignore"):
            alpha = rho / curvature
            valid = (
                (curvature.real > 0) & np.isfinite(curvature) & (rho.real > 0) & np.isfinite(alpha)
            )
        step = np.where(valid, alpha, 0)[:, None]
        x[rows] += step * directions
        residual -= step * q
        r[rows], p[rows] = residual, directions
        norms[rows] = np.linalg.norm(residual, axis=1)
        breakdown = (
            ~np.isfinite(curvature)
            | ~np.isfinite(rho)
            | ~np.isfinite(norms[rows])
            | (rho.real <= 0)
            | (curvature.real <= 0)
        )
        active[rows[breakdown]] = False
        rho_previous[rows] = rho
        restart[rows] = False
        if callback is not None:
            callback(iteration, x)
    return x


def _gradient(u: np.ndarray) -> np.ndarray:
    """Forward differences along the last three axes with a zero last row (Neumann),
    ``(3, *u.shape)``."""
    g = np.zeros((3, *u.shape), dtype=u.dtype)
    g[0, ..., :-1, :, :] = u[..., 1:, :, :] - u[..., :-1, :, :]
    g[1, ..., :, :-1, :] = u[..., :, 1:, :] - u[..., :, :-1, :]
    g[2, ..., :, :, :-1] = u[..., :, :, 1:] - u[..., :, :, :-1]
    return g


def _divergence(p: np.ndarray) -> np.ndarray:
    """The negative adjoint of :func:`_gradient`."""
    d = np.zeros(p.shape[1:], dtype=p.dtype)
    d[..., :-1, :, :] += p[0, ..., :-1, :, :]
    d[..., 1:, :, :] -= p[0, ..., :-1, :, :]
    d[..., :, :-1, :] += p[1, ..., :, :-1, :]
    d[..., :, 1:, :] -= p[1, ..., :, :-1, :]
    d[..., :, :, :-1] += p[2, ..., :, :, :-1]
    d[..., :, :, 1:] -= p[2, ..., :, :, :-1]
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
    volume : numpy.ndarray, shape (..., X, Y, Z), real
        One volume or a batch (each denoised on its own).
    weight : float
    iterations : int, default 20
    nonnegative : bool, default True
    dual : numpy.ndarray, shape (3, ..., X, Y, Z), optional
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
    if volume.ndim < 3:
        raise ValueError(f"tv_denoise: volume has shape {volume.shape}, expected (..., X, Y, Z)")
    weight = _positive("tv_denoise", "weight", weight, allow_zero=True)
    if weight == 0:
        return (np.maximum(volume, 0) if nonnegative else volume), np.zeros((3, *volume.shape))
    p = np.zeros((3, *volume.shape)) if dual is None else np.array(dual, dtype=np.float64)
    if p.shape != (3, *volume.shape):
        raise ValueError(f"tv_denoise: dual has shape {p.shape}, expected {(3, *volume.shape)}")
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
    l1_weight: float = 0.0,
    norm: float | None = None,
    batch_size: int = 32,
    callback: Callable[[int, np.ndarray], Any] | None = None,
    progress: bool = False,
) -> Any:
    r"""ADMM with 3-D total variation (and optionally ℓ1) on the magnitude, in batches.

    The C-SALSA/ADMM baseline. Minimises
    :math:`\frac12 \|\hat A x - \hat y\|^2 + \tau\, TV(|x|) + \mu \|x\|_1` (with
    :math:`\hat A = A / \|A\|_2`, :math:`\hat y = y / \|A\|_2`) by the splitting ``z = x``:

    .. math::

        x &\leftarrow (\hat A^H \hat A + \rho I)^{-1} (\hat A^H \hat y + \rho (z - u))
            \quad \text{(warm-started CG, ``cg_iterations`` steps)} \\
        z &\leftarrow \operatorname{prox}_{(\tau TV(|\cdot|) + \mu \|\cdot\|_1)/\rho}(x + u)
            \quad \text{(prox of the magnitude, phase kept)} \\
        u &\leftarrow u + x - z

    The magnitude prox (the polar form of Oral and Oktem) applies :func:`tv_denoise`
    (non-negative) to ``|x + u| - mu / rho`` and keeps the phase: on ``u >= 0`` the ℓ1
    norm is the linear ``sum(u)``, so shifting the input by ``mu / rho`` is its exact
    prox; with ``tau = 0`` it is soft thresholding of the magnitude. Returns ``z``.

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
    l1_weight : float, default 0
        ``mu`` (0: TV alone).
    norm : float, optional
        ``||A||_2`` if known.
    batch_size : int, default 32
        Volumes iterated together: every CG step applies ``A`` and ``A^H`` once to the
        whole batch, and the TV prox runs on the batch's volumes at once.
    callback : callable, optional
        Called after every ADMM iteration of a batch as ``callback(iteration, z)``,
        ``iteration`` counted from 1 in each batch and ``z`` the batch's current
        estimates, shape ``(b, N)``; batches come in the order of the volumes. The
        iterates do not depend on ``iterations``, so one run gives the estimates of every
        shorter one.
    progress : bool, default False
        A tqdm bar over the volumes.

    Returns
    -------
    array, shape (..., N)
        Complex reflectivities.

    Notes
    -----
    Each volume's iterates are those of the ADMM run on that volume alone, up to
    rounding: the CG steps run per volume in lockstep (see :func:`tikhonov`) and the TV
    prox acts voxel-wise within each volume.

    Examples
    --------
    >>> import numpy as np
    >>> from physnet.operators import NearFieldMIMO
    >>> A = NearFieldMIMO(n_frequencies=4, grid_shape=(4, 4, 6), dtype=np.complex128)
    >>> x = np.zeros((2, 96), complex); x[0, 40] = x[1, 50] = 1.0
    >>> estimate = admm_tv(A, A @ x, tv_weight=1e-4, iterations=20, batch_size=2)
    >>> np.argmax(np.abs(estimate), axis=-1).tolist()
    [40, 50]
    """
    grid_shape = tuple(grid_shape or getattr(A, "grid_shape", None) or ())
    if len(grid_shape) != 3 or math.prod(grid_shape) != A.shape[1]:
        raise ValueError(
            f"admm_tv: grid_shape={grid_shape or None} does not describe the operator's "
            f"{A.shape[1]} voxels; pass grid_shape=(X, Y, Z)"
        )
    tv_weight = _positive("admm_tv", "tv_weight", tv_weight, allow_zero=True)
    l1_weight = _positive("admm_tv", "l1_weight", l1_weight, allow_zero=True)
    penalty = _positive("admm_tv", "penalty", penalty)
    for name, value in (
        ("iterations", iterations),
        ("cg_iterations", cg_iterations),
        ("tv_iterations", tv_iterations),
    ):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"admm_tv: {name}={value!r}, expected a positive integer")
    batch_size = _check_batch_size("admm_tv", batch_size)
    rows, batch, like, normal, out = _batched_normal_problem("admm_tv", A, y, norm, penalty)
    from tqdm.auto import tqdm

    with tqdm(total=rows.shape[0], desc="ADMM-TV", unit="volume", disable=not progress) as bar:
        for start in range(0, rows.shape[0], batch_size):
            stop = min(start + batch_size, rows.shape[0])
            data = normal.backproject(rows[start:stop])
            x = np.zeros_like(data)
            z = np.zeros_like(data)
            u = np.zeros_like(data)
            dual = None
            for iteration in range(1, iterations + 1):
                x = _block_cg(
                    "admm_tv",
                    normal,
                    data + penalty * (z - u),
                    x,
                    rtol=1e-12,
                    atol=0.0,
                    maxiter=cg_iterations,
                )
                v = x + u
                magnitude = np.abs(v)
                denoised, dual = tv_denoise(
                    (magnitude - l1_weight / penalty).reshape(-1, *grid_shape),
                    tv_weight / penalty,
                    iterations=tv_iterations,
                    dual=dual,
                )
                phase = np.where(magnitude > 0, v / np.where(magnitude > 0, magnitude, 1), 1)
                z = (denoised.reshape(v.shape) * phase).astype(out.dtype)
                u = u + x - z
                if callback is not None:
                    callback(iteration, z)
            out[start:stop] = z
            bar.update(stop - start)
    return _result(out, batch, like)
