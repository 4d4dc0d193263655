"""The (preconditioned) conjugate gradient method with SciPy's contract, on every backend."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from physnet.solvers._krylov import (
    add_scaled,
    classify_breakdown,
    dot_function,
    guarded_step,
    scale_add,
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

__all__ = ["cg"]


def cg(A, b, x0=None, *, rtol=1e-5, atol=0.0, maxiter=None, M=None, callback=None):
    """Solve ``A x = b`` for Hermitian positive definite ``A`` by the conjugate gradient method.

    The signature, the defaults and the meaning of every argument and of ``info`` are
    SciPy's (:func:`scipy.sparse.linalg.cg`), so pyamg's ``aspreconditioner()`` and SciPy
    operators drop in; on NumPy input the iterates and the iteration count are SciPy's.
    The arrays may also be torch tensors (CPU or CUDA) or CuPy arrays: the solution comes
    back in the caller's kind, on the caller's device.

    Parameters
    ----------
    A : operator, shape (n, n)
        A physnet :class:`~physnet.operators.LinearOperator`, a SciPy sparse matrix, a
        dense NumPy array or a :class:`scipy.sparse.linalg.LinearOperator`. Must be
        Hermitian positive definite.
    b : array, shape (n,) or (n, 1)
        Right-hand side: NumPy array, torch tensor or CuPy array.
    x0 : array or "Mb", optional
        Initial guess (zeros by default); never modified. ``"Mb"`` starts from ``M @ b``
        (``b`` without ``M``), as in SciPy.
    rtol, atol : float, default 1e-5 and 0.0
        Stopping rule ``||b - A x||_2 <= max(rtol * ||b||_2, atol)``.
    maxiter : int, optional
        Maximum number of iterations; ``10 n`` by default, as in SciPy (the research API
        :func:`~physnet.solvers.solve` has a smaller default).
    M : operator, optional
        Preconditioner approximating ``A^{-1}``, Hermitian positive definite (e.g.
        :class:`~physnet.solvers.Jacobi`, :class:`~physnet.solvers.AMG`,
        :class:`~physnet.solvers.IncompleteCholesky` or pyamg's ``aspreconditioner()``).
    callback : callable, optional
        Called as ``callback(xk)`` after each iteration with the current iterate.

    Returns
    -------
    x : array, shape (n,)
        The approximate solution, of the kind and device of ``b``.
    info : int
        ``0`` converged; ``> 0`` the number of iterations done without convergence
        (``maxiter`` ran out, or the residual reached the accuracy floor of the dtype);
        ``< 0`` breakdown (``-1``: ``A`` or ``M`` not positive definite, or NaN/Inf
        appeared). :func:`~physnet.solvers.solve` reports which, as a :class:`Status`.

    Raises
    ------
    ValueError
        Shapes that do not match, NaN or Inf in ``b`` or ``x0``, negative tolerances,
        ``atol=None`` or ``atol="legacy"`` (removed from SciPy, which raises the same).
    TypeError
        Non-numeric or boolean ``b`` or ``x0``, arrays of mixed kinds, options passed
        positionally.

    See Also
    --------
    physnet.solvers.solve : the same iteration, returning a :class:`SolveResult`.
    physnet.solvers.fcg : flexible CG, for nonlinear or variable preconditioners.

    Notes
    -----
    With ``z_k = M r_k`` and ``rho_k = r_k^H z_k`` the iteration is (Saad, Alg. 9.1)

    .. math::

        p_k = z_k + \\frac{\\rho_k}{\\rho_{k-1}} p_{k-1}, \\qquad
        \\alpha_k = \\frac{\\rho_k}{p_k^H A p_k}, \\qquad
        x_{k+1} = x_k + \\alpha_k p_k, \\qquad
        r_{k+1} = r_k - \\alpha_k A p_k,

    in SciPy's order of operations, with SciPy's test of the recursive residual at the
    top of each iteration. Three differences, all on the side of safety:

    - convergence is only reported on the *true* residual: when the recursive residual
      meets the rule, ``||b - A x||`` is computed (one more product with ``A``); if it
      fails, CG restarts from the true residual. The test is ``<=``
      (SciPy's is ``<``), and after the last iteration it is applied too, so a solve
      that converges on its last allowed iteration reports ``info = 0``, not ``maxiter``;
    - a breakdown stops the iteration with the last valid iterate: ``p^H A p <= 0``
      (``A`` is not positive definite), ``r^H M r <= 0`` (``M`` is not), or NaN/Inf.
      SciPy would divide on and return a meaningless ``x``;
    - a tolerance below what the dtype can reach (float32 with ``rtol=1e-6`` on a large
      grid) stops after three failed convergence checks whose true residual did not
      halve, with the best iterate seen and ``info > 0``, instead of running to
      ``maxiter`` (see :class:`~physnet.solvers._system.Monitor`).

    Scalars stay on the device; the host reads them once per iteration, together with
    the residual norm.

    References
    ----------
    .. [1] Y. Saad, *Iterative Methods for Sparse Linear Systems*, 2nd ed., SIAM, 2003,
       Algorithm 9.1 (preconditioned conjugate gradient).
    .. [2] M. R. Hestenes and E. Stiefel, "Methods of conjugate gradients for solving
       linear systems", J. Res. Nat. Bur. Standards 49 (1952).

    Examples
    --------
    >>> import numpy as np
    >>> import scipy.sparse as sp
    >>> from physnet.solvers import cg
    >>> n = 50
    >>> A = sp.diags([-1.0, 2.0, -1.0], [-1, 0, 1], shape=(n, n), format="csr")
    >>> b = np.ones(n)
    >>> x, info = cg(A, b, rtol=1e-10)
    >>> info, bool(np.linalg.norm(b - A @ x) <= 1e-10 * np.linalg.norm(b))
    (0, True)
    """
    system = make_system(
        "cg", A, b, x0, rtol=rtol, atol=atol, maxiter=maxiter, callback=callback, allow_mb=True
    )
    preconditioner = as_preconditioner("cg", M, system.A.shape)
    result = cg_iterate(system, preconditioner, callback)
    return result.x, info_code(result)


@single_threaded_blas
def cg_iterate(
    system: KrylovSystem,
    preconditioner: Callable[[Any], Any] | None = None,
    callback: Callable[[Any], Any] | None = None,
) -> Iteration:
    """The CG iteration on a validated system: the core of :func:`cg` and ``solve``."""
    if system.rhs_norm == 0:
        return zero_solution(system)
    start_from_mb(system, preconditioner)
    be, A, x = system.backend, system.A, system.x
    dot = dot_function(be, system.dtype)
    work = None if be.kind == "torch" else be.empty(x.shape, system.dtype)

    r = be.copy(system.b) if system.x0_is_zero else system.b - A.matvec(x)
    residual_norm = be.norm(r)
    residuals = [residual_norm]
    status, iterations = Status.MAX_ITERATIONS, 0
    monitor = Monitor(system, residual_norm)
    p = rho_previous = None
    for _ in range(system.maxiter):
        if meets_tolerance(residual_norm, system.threshold):
            true_r, true_norm = true_residual(system, x)
            if meets_tolerance(true_norm, system.threshold):
                return conclude(
                    system, x, Status.CONVERGED, iterations, residuals, true_norm, monitor.info()
                )
            # The recursion drifted: restart CG from the true residual. The old direction
            # is dropped: continuing it from a residual it is not conjugate to made
            # float32 AMG-PCG diverge after such a restart.
            stop = monitor.true_residual(x, true_norm, residual_norm, check=True)
            r, residual_norm = true_r, true_norm
            residuals[-1] = true_norm
            p = None
            if stop is not None:
                status = stop
                break

        z = r if preconditioner is None else preconditioner(r)
        rho = dot(r, z)
        if p is None:
            p = be.copy(z)
        else:
            scale_add(be, p, rho / rho_previous, z)
        q = A.matvec(p)
        curvature = dot(p, q)
        alpha, valid = guarded_step(be, rho, curvature, numerator_positive=True)
        if valid is not False:
            add_scaled(be, x, alpha, p, work)
            add_scaled(be, r, alpha, q, work, subtract=True)

        residual_norm, rho_host, curvature_host = to_host(be, device_norm(be, r), rho, curvature)
        breakdown = classify_breakdown(
            curvature=curvature_host,
            numerator=rho_host,
            residual_norm=residual_norm,
            preconditioned=preconditioner is not None,
        )
        if breakdown is not None:
            status = breakdown
            break
        rho_previous = rho
        iterations += 1
        residuals.append(residual_norm)
        if callback is not None:
            callback(x)
        stop = monitor.iteration(iterations, residual_norm)
        if stop is not None:
            status = stop
            break
    return conclude(
        system, monitor.solution(x, status), status, iterations, residuals, info=monitor.info()
    )
