"""Flexible conjugate gradients FCG(m): CG for variable and nonlinear preconditioners."""

from __future__ import annotations

import numbers
from collections import deque
from collections.abc import Callable
from typing import Any

from physnet import backend
from physnet.solvers._krylov import (
    add_scaled,
    classify_breakdown,
    dot_function,
    guarded_step,
    single_threaded_blas,
)
from physnet.solvers._result import Status
from physnet.solvers._system import (
    Iteration,
    KrylovSystem,
    Monitor,
    as_preconditioner,
    conclude,
    device_norm,
    info_code,
    make_system,
    meets_tolerance,
    start_from_mb,
    to_host,
    true_residual,
    zero_solution,
)

__all__ = ["fcg"]


def fcg(
    A, b, x0=None, *, rtol=1e-5, atol=0.0, maxiter=None, M=None, m=2, callback=None, refresh=50
):
    """Solve ``A x = b`` for Hermitian positive definite ``A`` by flexible CG, FCG(m).

    Like :func:`~physnet.solvers.cg`, but the preconditioner may change from one
    iteration to the next or be nonlinear: ``M`` can be any function ``r -> z``, such as
    a few multigrid cycles with a varying smoother, an inner Krylov solve, or a neural
    network (the deep conjugate direction method plugs a CNN in here). Each new search
    direction is made ``A``-orthogonal to the last ``m`` ones, and the step is the exact
    line search along it, so the ``A``-norm of the error never increases.

    Parameters
    ----------
    A : operator, shape (n, n)
        Hermitian positive definite; anything :func:`~physnet.solvers.cg` accepts.
    b : array, shape (n,) or (n, 1)
        NumPy array, torch tensor or CuPy array.
    x0 : array or "Mb", optional
        Initial guess (zeros by default); never modified. ``"Mb"`` starts from ``M(b)``.
    rtol, atol : float, default 1e-5 and 0.0
        Stopping rule ``||b - A x||_2 <= max(rtol * ||b||_2, atol)``, on the true residual.
    maxiter : int, optional
        Maximum number of iterations; ``10 n`` by default.
    M : operator or callable, optional
        The preconditioner: a linear operator (as for :func:`~physnet.solvers.cg`) or any
        callable taking the residual (an array of the caller's kind, which it must not
        modify) and returning an array of the same kind and shape. Identity by default.
    m : int, default 2
        Number of previous directions each new one is ``A``-orthogonalised against
        (``m >= 1``).
    callback : callable, optional
        Called as ``callback(xk)`` after each iteration.
    refresh : int or None, default 50
        Recompute the true residual ``b - A x`` every ``refresh`` iterations, to bound the
        drift of the recursively updated one (``None`` or ``0``: never, except to confirm
        convergence).

    Returns
    -------
    x : array, shape (n,)
        The approximate solution, of the kind and device of ``b``.
    info : int
        ``0`` converged, ``> 0`` iterations done without convergence (``maxiter`` ran
        out, the accuracy floor of the dtype or a plateau was reached), ``< 0`` breakdown.

    Raises
    ------
    ValueError, TypeError
        As for :func:`~physnet.solvers.cg`; also for ``m < 1``, or a preconditioner
        returning an array of another shape or kind.

    Notes
    -----
    With ``z_k = M(r_k)``, the direction is ``z_k`` orthogonalised in the ``A``-inner
    product against the stored directions by one classical Gram–Schmidt pass,

    .. math::

        p_k = z_k - \\sum_{j=k-m}^{k-1} \\frac{(A p_j)^H z_k}{p_j^H A p_j}\\, p_j, \\qquad
        \\alpha_k = \\frac{p_k^H r_k}{p_k^H A p_k}, \\qquad
        x_{k+1} = x_k + \\alpha_k p_k, \\qquad
        r_{k+1} = r_k - \\alpha_k A p_k.

    The triples ``(p_j, A p_j, p_j^H A p_j)`` of the last ``m`` directions are kept, so a
    step costs one product with ``A``, one application of ``M`` and ``m + 3`` inner
    products. With a fixed Hermitian positive definite ``M`` and any ``m >= 1`` the
    iterates are those of preconditioned CG in exact arithmetic (the Gram–Schmidt
    coefficient against ``p_{k-1}`` is CG's ``-beta``, the others vanish); with a
    nonlinear ``M`` the method is a truncated conjugate-direction method with exact line
    search, without CG's finite-termination or rate guarantees.

    ``p^H A p <= 0`` stops with ``Status.NOT_POSITIVE_DEFINITE``, a direction that
    vanishes (``M`` returned something in the span of the stored directions, or zero)
    with ``Status.STAGNATION``, NaN/Inf with ``Status.NON_FINITE``; ``info`` is ``-1``.

    The iteration also ends, with ``info > 0``, when it can no longer meet the rule
    (:class:`~physnet.solvers._system.Monitor`): at the accuracy floor of the dtype
    (``Status.ACCURACY_LIMIT``: the true residual, read at the refreshes and convergence
    checks, no longer follows the recursive one) and, for a preconditioner that is a
    callable rather than a linear operator, at a plateau (``Status.PLATEAU``: the best
    residual of the last half of at least 200 iterations is not 10% below the best of
    the first half).

    References
    ----------
    .. [1] Y. Notay, "Flexible conjugate gradients", SIAM J. Sci. Comput. 22(4),
       1444–1460 (2000).
    .. [2] Y. Saad, *Iterative Methods for Sparse Linear Systems*, 2nd ed., SIAM, 2003,
       §9.4 (flexible variants).
    .. [3] A. Kaneda et al., "A deep conjugate direction method for iteratively solving
       linear systems", ICML 2023.

    Examples
    --------
    A nonlinear preconditioner: two damped Jacobi sweeps, with the residual's sign
    pattern thrown in (no linear map does this).

    >>> import numpy as np
    >>> import scipy.sparse as sp
    >>> from physnet.solvers import fcg
    >>> n = 64
    >>> A = sp.diags([-1.0, 2.0, -1.0], [-1, 0, 1], shape=(n, n), format="csr")
    >>> def sweeps(r):
    ...     z = r / 2.0
    ...     for _ in range(2):
    ...         z = z + (2.0 / 3.0) * (r - A @ z) / 2.0
    ...     return z + 0.1 * np.abs(z)
    >>> b = np.ones(n)
    >>> x, info = fcg(A, b, M=sweeps, m=4, rtol=1e-8)
    >>> info, bool(np.linalg.norm(b - A @ x) <= 1e-8 * np.linalg.norm(b))
    (0, True)
    """
    system = make_system(
        "fcg", A, b, x0, rtol=rtol, atol=atol, maxiter=maxiter, callback=callback, allow_mb=True
    )
    preconditioner = as_preconditioner("fcg", M, system.A.shape, allow_callable=True)
    m, refresh = check_fcg_options("fcg", m, refresh)
    result = fcg_iterate(system, preconditioner, m=m, refresh=refresh, callback=callback)
    return result.x, info_code(result)


def check_fcg_options(name: str, m: Any, refresh: Any) -> tuple[int, int]:
    """Validate FCG's ``m`` and ``refresh`` (``None`` becomes 0, never)."""
    if isinstance(m, bool) or not isinstance(m, numbers.Integral) or m < 1:
        raise ValueError(f"{name}: m must be an integer >= 1, got {m!r}")
    if refresh is None:
        refresh = 0
    if isinstance(refresh, bool) or not isinstance(refresh, numbers.Integral) or refresh < 0:
        raise ValueError(f"{name}: refresh must be a non-negative integer or None, got {refresh!r}")
    return int(m), int(refresh)


def _check_direction(name: str, z: Any, r: Any) -> None:
    kind, expected_kind = backend.array_kind(z), backend.array_kind(r)
    if kind != expected_kind:
        raise TypeError(
            f"{name}: the preconditioner M returned a {kind} array ({type(z).__name__}), "
            f"expected a {expected_kind} array like the residual"
        )
    if tuple(z.shape) != tuple(r.shape):
        raise ValueError(
            f"{name}: the preconditioner M returned an array of shape {tuple(z.shape)}, "
            f"expected {tuple(r.shape)} like the residual"
        )


@single_threaded_blas
def fcg_iterate(
    system: KrylovSystem,
    preconditioner: Callable[[Any], Any] | None = None,
    *,
    m: int = 2,
    refresh: int = 50,
    callback: Callable[[Any], Any] | None = None,
    plateau: bool | None = None,
) -> Iteration:
    """The FCG(m) iteration on a validated system: the core of :func:`fcg` and ``solve``.

    ``plateau`` enables the plateau rule of :class:`~physnet.solvers._system.Monitor`;
    by default it is on for a preconditioner that is not a linear operator's apply
    (a nonlinear or variable one, such as DCDM's network).
    """
    if system.rhs_norm == 0:
        return zero_solution(system)
    start_from_mb(system, preconditioner)
    if plateau is None:
        plateau = preconditioner is not None and not _is_linear(preconditioner)
    be, A, x = system.backend, system.A, system.x
    dot = dot_function(be, system.dtype)
    work = None if be.kind == "torch" else be.empty(x.shape, system.dtype)

    r = be.copy(system.b) if system.x0_is_zero else system.b - A.matvec(x)
    residual_norm = be.norm(r)
    residuals = [residual_norm]
    status, iterations = Status.MAX_ITERATIONS, 0
    monitor = Monitor(system, residual_norm, plateau=plateau)
    directions: deque[tuple[Any, Any, Any]] = deque()  # (p_j, A p_j, p_j^H A p_j), oldest first
    spare = None
    for _ in range(system.maxiter):
        if meets_tolerance(residual_norm, system.threshold):
            true_r, true_norm = true_residual(system, x)
            if meets_tolerance(true_norm, system.threshold):
                return conclude(
                    system, x, Status.CONVERGED, iterations, residuals, true_norm, monitor.info()
                )
            stop = monitor.true_residual(x, true_norm, residual_norm, check=True)
            r, residual_norm = true_r, true_norm
            residuals[-1] = true_norm
            if stop is not None:
                status = stop
                break

        z = r if preconditioner is None else preconditioner(r)
        _check_direction(system.name, z, r)
        # Classical Gram-Schmidt: every coefficient is taken from z itself, so the m inner
        # products are independent (one pass over memory each, no host round trip).
        coefficients = [dot(Ap_j, z) / curvature_j for _, Ap_j, curvature_j in directions]
        p = be.empty(x.shape, system.dtype) if spare is None else spare
        spare = None
        if be.kind == "torch":
            p.copy_(z)
        else:
            p[...] = z
        for coefficient, (p_j, _, _) in zip(coefficients, directions, strict=True):
            add_scaled(be, p, coefficient, p_j, work, subtract=True)

        q = A.matvec(p)
        curvature = dot(p, q)
        alpha, valid = guarded_step(be, dot(p, r), curvature, numerator_positive=False)
        if valid is not False:
            add_scaled(be, x, alpha, p, work)
            add_scaled(be, r, alpha, q, work, subtract=True)
        recursive_norm = None
        if refresh and (iterations + 1) % refresh == 0:
            recursive_norm = be.norm(r)
            r = system.b - A.matvec(x)

        residual_norm, curvature_host = to_host(be, device_norm(be, r), curvature)
        breakdown = classify_breakdown(
            curvature=curvature_host,
            numerator=None,
            residual_norm=residual_norm,
            preconditioned=preconditioner is not None,
        )
        if breakdown is Status.NOT_POSITIVE_DEFINITE and be.norm(p) == 0:
            breakdown = Status.STAGNATION
        if breakdown is not None:
            status = breakdown
            break
        if len(directions) == m:
            spare = directions.popleft()[0]
        directions.append((p, q, curvature))
        iterations += 1
        residuals.append(residual_norm)
        if callback is not None:
            callback(x)
        stop = None
        if recursive_norm is not None:
            stop = monitor.true_residual(x, residual_norm, recursive_norm, check=False)
        stop = stop or monitor.iteration(iterations, residual_norm)
        if stop is not None:
            status = stop
            break
    return conclude(
        system, monitor.solution(x, status), status, iterations, residuals, info=monitor.info()
    )


def _is_linear(preconditioner: Callable[[Any], Any]) -> bool:
    """Whether ``preconditioner`` is the apply of a linear operator (see ``as_preconditioner``)."""
    import scipy.sparse.linalg

    from physnet.operators.base import LinearOperator

    owner = getattr(preconditioner, "__self__", None)
    return isinstance(owner, (LinearOperator, scipy.sparse.linalg.LinearOperator))
