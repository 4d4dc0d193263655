"""``solve``: the research API over every registered method, and the method registry."""

from __future__ import annotations

import functools
import inspect
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from physnet.solvers._result import SolveResult
from physnet.solvers._system import Iteration, KrylovSystem, as_preconditioner, make_system
from physnet.solvers.cg import cg_iterate
from physnet.solvers.fcg import check_fcg_options, fcg_iterate
from physnet.solvers.preconditioners import AMG, IncompleteCholesky, Jacobi

__all__ = ["Method", "available_methods", "register_method", "solve"]


@dataclass
class Method:
    """A method of :func:`solve`, set up for one operator.

    Attributes
    ----------
    iterate : callable
        ``iterate(system, callback) -> Iteration``: runs the iteration on a validated
        :class:`~physnet.solvers._system.KrylovSystem` (the cores
        :func:`~physnet.solvers.cg.cg_iterate` and :func:`~physnet.solvers.fcg.fcg_iterate`
        have this form once their preconditioner is bound).
    info : dict
        Method-specific extras copied into :attr:`SolveResult.info` (AMG levels...).
    """

    iterate: Callable[[KrylovSystem, Callable[[Any], Any] | None], Iteration]
    info: dict = field(default_factory=dict)


SetupFunction = Callable[..., Method]
_METHODS: dict[str, SetupFunction] = {}


def register_method(
    name: str, setup: SetupFunction | None = None, *, overwrite: bool = False
) -> Any:
    """Register a method of :func:`solve` under ``name``; usable as a decorator.

    Parameters
    ----------
    name : str
        The value of ``solve(..., method=name)``.
    setup : callable
        ``setup(A, **options) -> Method``, called by :func:`solve` with the validated
        operator ``A`` (a :class:`~physnet.operators.LinearOperator`) and the options the
        user passed to :func:`solve`. Its keyword parameters are the method's options:
        :func:`solve` rejects any other with a :class:`TypeError` (unless ``setup`` takes
        ``**options``, then it must check them itself). Everything it does is timed as
        ``setup_time``; the returned :meth:`Method.iterate` is timed as ``solve_time``.
    overwrite : bool, default False
        Replace an existing method of that name instead of raising.

    Returns
    -------
    callable
        ``setup`` (or, without ``setup``, a decorator registering its argument).

    Raises
    ------
    ValueError
        If ``name`` is already registered and ``overwrite`` is False.

    Examples
    --------
    A CG preconditioned by a fixed polynomial, as a method of :func:`solve`:

    >>> import numpy as np
    >>> import scipy.sparse as sp
    >>> from physnet.solvers import Method, register_method, solve
    >>> from physnet.solvers.cg import cg_iterate
    >>> @register_method("example-scaled-cg", overwrite=True)
    ... def setup(A, *, scale=0.5):
    ...     return Method(lambda system, callback: cg_iterate(
    ...         system, lambda r: scale * r, callback), info={"scale": scale})
    >>> A = sp.diags([2.0, 3.0, 4.0], format="csr")
    >>> result = solve(A, np.ones(3), method="example-scaled-cg", scale=0.25)
    >>> result.converged, result.info
    (True, {'scale': 0.25})
    """

    def register(function: SetupFunction) -> SetupFunction:
        if not callable(function):
            raise TypeError(f"register_method: setup for {name!r} must be callable")
        if name in _METHODS and not overwrite:
            raise ValueError(
                f"register_method: a method named {name!r} is already registered; "
                "pass overwrite=True to replace it"
            )
        _METHODS[name] = function
        return function

    return register if setup is None else register(setup)


def available_methods() -> tuple[str, ...]:
    """Names of the methods :func:`solve` accepts, sorted."""
    return tuple(sorted(_METHODS))


def _check_options(method: str, setup: SetupFunction, options: dict[str, Any]) -> None:
    parameters = list(inspect.signature(setup).parameters.values())[1:]
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return
    accepted = {
        p.name
        for p in parameters
        if p.kind in (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    }
    unknown = sorted(set(options) - accepted)
    if unknown:
        expected = ", ".join(sorted(accepted)) or "none"
        raise TypeError(
            f"solve: unknown option(s) {', '.join(map(repr, unknown))} for method {method!r}; "
            f"its options are: {expected}"
        )


def solve(
    A: Any,
    b: Any,
    *,
    method: str = "cg",
    x0: Any = None,
    rtol: float = 1e-5,
    atol: float = 0.0,
    maxiter: int | None = None,
    callback: Callable[[Any], Any] | None = None,
    **options: Any,
) -> SolveResult:
    """Solve ``A x = b`` with a named method and report how it went.

    Parameters
    ----------
    A : operator, shape (n, n)
        Anything :func:`~physnet.solvers.cg` accepts; methods that need a matrix
        (``"jacobi"``, ``"amg"``, ``"ic"``) need ``A`` with a CSR form or a diagonal
        (see :class:`Jacobi`, :class:`AMG`).
    b : array, shape (n,) or (n, 1)
        NumPy array, torch tensor or CuPy array.
    method : str, default "cg"
        One of :func:`available_methods`. Built in:

        ``"cg"``
            conjugate gradients (option ``M``: a preconditioner, as for :func:`cg`);
        ``"jacobi"``
            CG preconditioned by :class:`Jacobi`;
        ``"amg"``
            CG preconditioned by one :class:`AMG` V-cycle (options: ``max_coarse``,
            ``cycle`` and those of :func:`pyamg.smoothed_aggregation_solver`);
        ``"ic"``
            CG preconditioned by :class:`IncompleteCholesky` (option ``shift``);
        ``"fcg"``
            flexible CG (options ``M``, possibly a nonlinear callable, ``m`` and
            ``refresh``; see :func:`fcg`).
    x0 : array, optional
        Initial guess; never modified.
    rtol, atol : float
        The stopping rule ``||b - A x||_2 <= max(rtol ||b||_2, atol)``, the same for
        every method, decided on the true residual.
    maxiter : int, optional
        ``10 n`` by default.
    callback : callable, optional
        ``callback(xk)`` after each iteration.
    **options
        Options of the method.

    Returns
    -------
    SolveResult
        ``x`` (the caller's array kind and device), ``status``, ``converged``,
        ``iterations``, ``residuals`` (``||r_0||`` then one norm per iteration),
        ``residual`` (true, at exit), ``rhs_norm``, ``setup_time``, ``solve_time`` and
        method-specific ``info``.

    Raises
    ------
    ValueError
        An unknown method (listing the available ones), or invalid inputs (as for
        :func:`cg`).
    TypeError
        An option the method does not take (naming it), or inputs of the wrong type.

    Notes
    -----
    ``setup_time`` covers what depends only on ``A`` (a preconditioner's hierarchy or
    factorisation, a network's loading); ``solve_time`` covers the iteration and the
    final true-residual check. Validation of the inputs is in neither. A breakdown (see
    :class:`Status`) is reported in ``status``, never raised, and ``x`` is then the last
    valid iterate. New methods are added with :func:`register_method`.

    References
    ----------
    .. [1] Y. Saad, *Iterative Methods for Sparse Linear Systems*, 2nd ed., SIAM, 2003.

    Examples
    --------
    >>> import numpy as np
    >>> import scipy.sparse as sp
    >>> from physnet.solvers import solve
    >>> T = sp.diags([-1.0, 2.0, -1.0], [-1, 0, 1], shape=(32, 32))
    >>> A = sp.kronsum(T, T, format="csr")
    >>> b = np.ones(A.shape[0])
    >>> plain = solve(A, b, method="cg", rtol=1e-8)
    >>> amg = solve(A, b, method="amg", rtol=1e-8, max_coarse=100)
    >>> plain.converged, amg.converged, amg.iterations < plain.iterations
    (True, True, True)
    >>> len(plain.residuals) == plain.iterations + 1
    True
    """
    if method not in _METHODS:
        raise ValueError(
            f"solve: unknown method {method!r}; available methods: {', '.join(available_methods())}"
        )
    setup = _METHODS[method]
    system = make_system(
        "solve", A, b, x0, rtol=rtol, atol=atol, maxiter=maxiter, callback=callback
    )
    _check_options(method, setup, options)

    start = time.perf_counter()
    prepared = setup(system.A, **options)
    setup_time = time.perf_counter() - start

    start = time.perf_counter()
    result = prepared.iterate(system, callback)
    solve_time = time.perf_counter() - start

    return SolveResult(
        x=result.x,
        status=result.status,
        iterations=result.iterations,
        residuals=np.asarray(result.residuals, dtype=np.float64),
        setup_time=setup_time,
        solve_time=solve_time,
        method=method,
        residual=float(result.residual),
        rhs_norm=float(system.rhs_norm),
        info=dict(prepared.info),
    )


def _preconditioned_cg(preconditioner: Callable[[Any], Any] | None, info: dict) -> Method:
    return Method(functools.partial(_run_cg, preconditioner), info)


def _run_cg(preconditioner, system: KrylovSystem, callback) -> Iteration:
    return cg_iterate(system, preconditioner, callback)


@register_method("cg")
def _setup_cg(A, *, M=None) -> Method:
    return _preconditioned_cg(as_preconditioner("solve", M, A.shape), {})


@register_method("jacobi")
def _setup_jacobi(A) -> Method:
    preconditioner = Jacobi(A)
    return _preconditioned_cg(preconditioner.matvec, {"preconditioner": "jacobi"})


@register_method("amg")
def _setup_amg(A, **options) -> Method:
    preconditioner = AMG(A, **options)
    info = {
        "preconditioner": "smoothed aggregation AMG (pyamg)",
        "levels": preconditioner.levels,
        "operator_complexity": preconditioner.operator_complexity,
        "grid_complexity": preconditioner.grid_complexity,
    }
    return _preconditioned_cg(preconditioner.matvec, info)


@register_method("ic")
def _setup_ic(A, *, shift=0.0) -> Method:
    preconditioner = IncompleteCholesky(A, shift=shift)
    return _preconditioned_cg(preconditioner.matvec, {"preconditioner": "IC(0)", "shift": shift})


@register_method("fcg")
def _setup_fcg(A, *, M=None, m=2, refresh=50) -> Method:
    preconditioner = as_preconditioner("solve", M, A.shape, allow_callable=True)
    m, refresh = check_fcg_options("solve", m, refresh)

    def iterate(system: KrylovSystem, callback) -> Iteration:
        return fcg_iterate(system, preconditioner, m=m, refresh=refresh, callback=callback)

    return Method(iterate, {"m": m, "refresh": refresh})
