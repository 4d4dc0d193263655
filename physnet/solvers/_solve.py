"""``solve``: the research API over every registered method, and the method registry."""

from __future__ import annotations

import dataclasses
import functools
import inspect
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from physnet import backend
from physnet.solvers._result import SolveResult, Status
from physnet.solvers._system import (
    Iteration,
    KrylovSystem,
    as_preconditioner,
    make_system,
    research_maxiter,
)
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
    progress: Callable[[int, float], Any] | None = None,
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
        ``min(10 n, max(1000, 20 sqrt(n)))`` by default
        (:func:`~physnet.solvers._system.research_maxiter`): SciPy's ``10 n`` (kept by
        :func:`cg` and :func:`fcg`) is millions of iterations on a ``64^3`` grid, while
        CG needs about ``sqrt(cond(A)) <= sqrt(n)`` on a 2-D or 3-D grid operator.
    callback : callable, optional
        ``callback(xk)`` after each iteration.
    progress : callable, optional
        ``progress(iterations, residual_norm)`` after each iteration, with the norm of
        the (recursively updated) residual the method already holds; for progress bars.
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
        "solve",
        A,
        b,
        x0,
        rtol=rtol,
        atol=atol,
        maxiter=maxiter,
        callback=callback,
        default_maxiter=research_maxiter,
    )
    if progress is not None and not callable(progress):
        raise TypeError(f"solve: progress must be callable, got {type(progress).__name__}")
    system.progress = progress
    _check_options(method, setup, options)
    null_space = NullSpace.of(system.A)

    start = time.perf_counter()
    prepared = setup(system.A, **options)
    setup_time = time.perf_counter() - start

    start = time.perf_counter()
    singular: dict[str, Any] = {}
    if null_space is None:
        result = prepared.iterate(system, callback)
    else:
        result, singular = null_space.solve(system, prepared, callback)
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
        info={**prepared.info, **result.info, **singular},
    )


class NullSpace:
    """The null space of a singular grid operator: its floating fluid regions.

    Parameters
    ----------
    regions : numpy.ndarray of int, shape (n,)
        For each unknown, ``1..count`` for the floating region it lies in, ``0`` if its
        region touches air.
    count : int
        The number of floating regions (the null space's dimension).
    """

    def __init__(self, regions: np.ndarray, count: int) -> None:
        self.regions = regions
        self.count = count
        self.sizes = np.bincount(regions, minlength=count + 1)[1:]

    @classmethod
    def of(cls, A: Any) -> NullSpace | None:
        """The null space of ``A`` if it is a singular :class:`GridPoisson`, else None.

        Fluid cells sharing a face are connected (the operator couples them with a
        positive coefficient); a region is floating when none of its cells has an air
        cell as a face neighbour.
        """
        from physnet.operators.poisson import AIR, GridPoisson

        if not isinstance(A, GridPoisson):
            return None
        import scipy.ndimage

        faces = scipy.ndimage.generate_binary_structure(A.ndim, 1)
        labels, count = scipy.ndimage.label(A.fluid_mask, structure=faces)
        near_air = scipy.ndimage.binary_dilation(A.flags == AIR, structure=faces)
        grounded = np.unique(labels[near_air & A.fluid_mask])
        floating = np.setdiff1d(np.arange(1, count + 1), grounded)
        if floating.size == 0:
            return None
        renumber = np.zeros(count + 1, dtype=np.int64)
        renumber[floating] = np.arange(1, floating.size + 1)
        return cls(renumber[labels[A.fluid_mask]], int(floating.size))

    def component(self, v: Any) -> tuple[Any, float]:
        """``v``'s projection onto the null space (its mean on each floating region), as
        an array like ``v``, and the projection's norm."""
        host = backend.to_numpy(v)

        def region_sums(values: np.ndarray) -> np.ndarray:
            return np.bincount(self.regions, weights=values, minlength=self.count + 1)[1:]

        sums = region_sums(host.real)
        if np.iscomplexobj(host):
            sums = sums + 1j * region_sums(host.imag)
        means = np.concatenate([[0.0], sums / self.sizes])
        norm = float(np.sqrt(np.sum(np.abs(sums) ** 2 / self.sizes)))
        projection = means[self.regions].astype(host.dtype, copy=False)
        return backend.as_like(projection, v), norm

    def solve(
        self, system: KrylovSystem, prepared: Method, callback: Any
    ) -> tuple[Iteration, dict[str, Any]]:
        """Iterate on ``b``'s range component; project ``x``; judge compatibility."""
        null_b, null_norm = self.component(system.b)
        x = system.x
        if not system.x0_is_zero:
            null_x0, _ = self.component(x)
            x = x - null_x0
        projected = dataclasses.replace(system, b=system.b - null_b, x=x)
        result = prepared.iterate(projected, callback)
        null_x, _ = self.component(result.x)
        x = result.x - null_x
        rounding = math.sqrt(system.b.shape[0]) * np.finfo(system.dtype).eps * system.rhs_norm
        compatible = null_norm <= max(system.threshold, rounding)
        relative = null_norm / system.rhs_norm if system.rhs_norm > 0 else 0.0
        info: dict[str, Any] = {
            "singular": (
                f"{self.count} fluid region(s) touch no air cell, so A is singular; "
                "x is determined up to a constant on each, and the one returned has "
                "zero mean on each (the minimum-norm solution)"
            ),
            "floating_regions": self.count,
            "null_space_component": relative,
        }
        status = result.status
        if not compatible:
            info["projected_status"] = str(result.status)
            status = Status.INCOMPATIBLE
        # b - A x splits into orthogonal parts: (b_range - A x) in the range, b_null.
        residual = math.hypot(result.residual, null_norm)
        iteration = dataclasses.replace(result, x=x, status=status, residual=residual)
        return iteration, info


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
