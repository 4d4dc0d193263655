"""The deep conjugate direction method (DCDM): a network's search directions inside FCG(m).

:func:`dcdm` solves a grid Poisson system with the conjugate-direction iteration of Kaneda
et al. (ICML 2023): at each step a CNN maps the normalised residual, on the full grid, to
a search direction, which is ``A``-orthogonalised against the last ``m`` directions and
taken with an exact line search. That is flexible CG with the network as its (nonlinear)
preconditioner, so the iteration is :func:`~physnet.solvers.fcg.fcg_iterate` itself; this
module only turns a network into the preconditioner callable and registers the method
``"dcdm"`` of :func:`~physnet.solvers.solve`.
"""

from __future__ import annotations

import contextlib
import copy
import os
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from physnet import backend
from physnet.operators.poisson import GridPoisson
from physnet.solvers._solve import Method, register_method
from physnet.solvers._system import Iteration, KrylovSystem, info_code, make_system
from physnet.solvers.fcg import check_fcg_options, fcg_iterate

__all__ = ["PRETRAINED_MODELS", "dcdm"]

PRETRAINED_MODELS = {2: "dcdm-galerkin2d", 3: "dcdm-galerkin3d"}
"""The shipped network ``model=None`` stands for, by the grid's number of dimensions."""


def dcdm(
    A,
    b,
    x0=None,
    *,
    model=None,
    rtol=1e-5,
    atol=0.0,
    maxiter=None,
    m=2,
    refresh=50,
    callback=None,
    device=None,
):
    """Solve a grid Poisson system ``A x = b`` by the deep conjugate direction method.

    A convolutional network proposes each search direction from the current residual;
    the direction is made ``A``-orthogonal to the last ``m`` ones and the step along it is
    the exact line search, so the ``A``-norm of the error never increases. The network
    need only approximate ``A^{-1}`` up to a scale factor, which the line search absorbs.

    Parameters
    ----------
    A : GridPoisson
        The operator: the network reads the residual on its grid (and, for networks
        that take them, its cell flags).
    b : array, shape (n,) or (n, 1)
        The right-hand side on the fluid cells (``A.n`` unknowns): NumPy array, torch
        tensor (CPU or CUDA) or CuPy array.
    x0 : array, optional
        Initial guess (zeros by default); never modified.
    model : torch.nn.Module or str or os.PathLike, optional
        The network, mapping ``(1, C, *grid)`` to ``(1, 1, *grid)``: a module (a
        :class:`physnet.nn.Model` or any :class:`torch.nn.Module`), a checkpoint file or
        the name of a pretrained model (both read with :func:`physnet.nn.load`). By
        default the shipped pretrained network for the grid's dimension
        (:data:`PRETRAINED_MODELS`: ``"dcdm-galerkin3d"``, or ``"dcdm-galerkin2d"`` on 2-D
        grids), a learned smoother inside Galerkin aggregation multigrid that reads the
        operator's coefficients and geometry on every level (:class:`physnet.nn.DCDMGalerkinNet`;
        its hierarchy is built once per operator). Other networks map the residual on the
        grid to a direction: their input channels are the residual alone, or the residual
        and the flags (as floats) when they declare ``uses_flags = True`` or
        ``input_channels = 2``.
    rtol, atol : float, default 1e-5 and 0.0
        Stopping rule ``||b - A x||_2 <= max(rtol * ||b||_2, atol)``, on the true residual.
    maxiter : int, optional
        Maximum number of iterations; ``10 n`` by default.
    m : int, default 2
        Number of previous directions each new one is ``A``-orthogonalised against (the
        reference implementation uses 2).
    refresh : int or None, default 50
        Recompute the true residual every ``refresh`` iterations (see
        :func:`~physnet.solvers.fcg`).
    callback : callable, optional
        Called as ``callback(xk)`` after each iteration.
    device : str or torch.device, optional
        Where the network runs. By default the device of the module's parameters; a
        network loaded from a name or a file (or one without parameters) runs where
        ``b`` lives (its CUDA device, or the CPU). A module given on another device is
        copied there, never moved.

    Returns
    -------
    x : array, shape (n,)
        The approximate solution, of the kind, device and dtype of ``b`` (promoted as in
        :func:`~physnet.solvers.cg`).
    info : int
        ``0`` converged, ``> 0`` iterations done without convergence, ``-1`` breakdown.

    Raises
    ------
    TypeError
        If ``A`` is not a :class:`~physnet.operators.GridPoisson`, ``model`` is of
        another type, or the system is complex; and as for :func:`~physnet.solvers.cg`.
    ValueError
        If ``model`` is None and the pretrained network for the grid is not installed
        (the message names it), the model's declared input channels or dimension do not
        fit, it returns a direction of the wrong shape, or ``m``/``refresh`` are invalid;
        and as for :func:`~physnet.solvers.cg`.

    Notes
    -----
    With :math:`f` the network, :math:`S` the scatter of the unknowns onto the full grid
    (zero on solid and air cells) and :math:`G = S^T` the gather of the fluid cells, step
    :math:`k` is FCG(m) [2]_ with the preconditioner

    .. math::

        z_k = G\\, f\\!\\left(S\\, \\frac{r_k}{\\|r_k\\|_2}\\right), \\qquad
        p_k = z_k - \\sum_{j=k-m}^{k-1} \\frac{(A p_j)^T z_k}{p_j^T A p_j}\\, p_j, \\qquad
        x_{k+1} = x_k + \\frac{p_k^T r_k}{p_k^T A p_k}\\, p_k ,

    as in the reference code of [1]_, except that the residual is updated by the
    recurrence :math:`r_{k+1} = r_k - \\alpha_k A p_k` (one product with ``A`` per
    iteration instead of two) and recomputed as :math:`b - A x` every ``refresh``
    iterations and before convergence is reported. Each step costs one network
    inference, one product with ``A`` and ``m + 3`` inner products; the network runs in
    evaluation mode under :func:`torch.inference_mode`, in the dtype of its parameters,
    and the residual crosses between the solver's arrays and torch through DLPack
    (without a copy where kinds, devices and dtypes allow). A network with methods
    ``prepare(flags)`` and ``apply_prepared(residual, state)`` has its geometry-dependent state
    computed once per solve: ``prepare`` gets the flags as a float tensor of shape
    ``(1, 1, *grid)``, ``apply_prepared`` the normalised residual of the same shape.

    A network has no convergence guarantee: the exact line search only ensures that the
    error never grows. A direction that is not usable ends the solve with a status
    instead of falling back to another direction, so a failing network is reported,
    never hidden: NaN or Inf in the network's output gives ``Status.NON_FINITE``, a
    direction with ``p^T A p <= 0`` (possible only on a singular ``A``, a domain without
    air) ``Status.NOT_POSITIVE_DEFINITE``, and a direction that vanishes once
    orthogonalised (a zero output, or one in the span of the stored directions)
    ``Status.STAGNATION``; ``info`` is ``-1`` and ``x`` is the last valid iterate. Use
    :func:`~physnet.solvers.solve` with ``method="dcdm"`` to read the status.

    References
    ----------
    .. [1] A. Kaneda, O. Akar, J. Chen, V. A. T. Kala, D. Hyde and J. Teran, "A deep
       conjugate direction method for iteratively solving linear systems", ICML 2023,
       PMLR 202:15720–15736.
    .. [2] Y. Notay, "Flexible conjugate gradients", SIAM J. Sci. Comput. 22(4),
       1444–1460 (2000).

    Examples
    --------
    A fixed smoothing convolution standing in for a trained network, on a box with an
    air row on top:

    >>> import numpy as np
    >>> import torch
    >>> from physnet.operators import AIR, GridPoisson
    >>> from physnet.solvers.dcdm import dcdm
    >>> flags = np.zeros((32, 32), dtype=np.int8)
    >>> flags[0, :] = AIR
    >>> A = GridPoisson(flags)
    >>> b = np.random.default_rng(0).standard_normal(A.n)
    >>> network = torch.nn.Conv2d(1, 1, 3, padding=1, bias=False, dtype=torch.float64)
    >>> kernel = torch.tensor([[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]]) / 16
    >>> _ = network.weight.data.copy_(kernel)
    >>> x, info = dcdm(A, b, model=network, rtol=1e-6)
    >>> info, bool(np.linalg.norm(b - A @ x) <= 1e-6 * np.linalg.norm(b))
    (0, True)

    ``model=None`` would use the shipped network ``"dcdm-galerkin2d"`` here.
    """
    operator = _grid_operator("dcdm", A)
    system = make_system(
        "dcdm", operator, b, x0, rtol=rtol, atol=atol, maxiter=maxiter, callback=callback
    )
    m, refresh = check_fcg_options("dcdm", m, refresh)
    network = NetworkDirections.resolve("dcdm", model, operator.ndim, device)
    result = network.iterate(system, operator, m=m, refresh=refresh, callback=callback)
    return result.x, info_code(result)


def _grid_operator(name: str, A: Any) -> GridPoisson:
    if not isinstance(A, GridPoisson):
        raise TypeError(
            f"{name}: DCDM needs A to be a physnet.operators.GridPoisson (the network reads "
            f"the residual on its grid), got {type(A).__name__}; build one from the cell "
            "flags with physnet.operators.GridPoisson(flags, h=...)"
        )
    return A


class NetworkDirections:
    """A network as DCDM's source of search directions, ``r -> G f(S r / ||r||)``.

    Built once per model (:meth:`resolve`, which may load it); :meth:`iterate` runs the
    iteration on one system, with the per-geometry data (flags on the device, the
    network's ``prepare`` state) made once for that solve.

    Parameters
    ----------
    model : torch.nn.Module
    description : str
        How the model was given (its pretrained name, its file, its registered name).
    owned : bool
        Whether physnet loaded the model, so it may be moved to another device in place.
    device : torch.device or None
        Where the network must run; None decides per solve (see :func:`dcdm`).
    """

    def __init__(self, model: Any, description: str, *, owned: bool, device: Any) -> None:
        self.model = model
        self.description = description
        self.owned = owned
        self.device = device
        self.multigrid = callable(getattr(model, "multigrid_options", None))
        self.uses_flags = False if self.multigrid else _uses_flags(model)
        self.prepared = _has_prepare(model)
        self._prepared: tuple[Any, Any] | None = None

    @classmethod
    def resolve(cls, name: str, model: Any, ndim: int, device: Any) -> NetworkDirections:
        """Validate ``model`` and ``device``; load a named or stored network (on the CPU)."""
        torch = backend.require_torch()
        if device is not None:
            try:
                device = _canonical_device(torch.device(device))
            except (RuntimeError, TypeError) as error:
                raise ValueError(
                    f"{name}: device={device!r} is not a torch device ({error})"
                ) from None
        if isinstance(model, torch.nn.Module):
            description = getattr(model, "name", None) or type(model).__name__
            network = cls(model, str(description), owned=False, device=device)
        elif model is None or isinstance(model, (str, os.PathLike)):
            import physnet.nn
            import physnet.pretrained

            if model is None:
                model = PRETRAINED_MODELS[ndim]
                if model not in physnet.pretrained.available():
                    installed = ", ".join(physnet.pretrained.available()) or "none"
                    raise ValueError(
                        f"{name}: model=None uses the pretrained network {model!r} for "
                        f"{ndim}-D grids, which is not installed (installed pretrained models: "
                        f"{installed}); pass model= a torch module, a checkpoint file "
                        "(.safetensors, see physnet.nn.save) or an installed pretrained name"
                    )
            loaded = physnet.nn.load(model, device="cpu")
            network = cls(loaded, os.fspath(model), owned=True, device=device)
        else:
            raise TypeError(
                f"{name}: model must be a torch.nn.Module, a checkpoint path or a pretrained "
                f"model name (or None for the shipped network), got {type(model).__name__}"
            )
        config = getattr(network.model, "config", None)
        model_ndim = config.get("ndim") if isinstance(config, dict) else None
        if isinstance(model_ndim, int) and model_ndim != ndim:
            raise ValueError(
                f"{name}: the model {network.description!r} works on {model_ndim}-D grids, "
                f"but A's grid is {ndim}-D"
            )
        return network

    def iterate(
        self,
        system: KrylovSystem,
        operator: GridPoisson,
        *,
        m: int,
        refresh: int,
        callback: Callable[[Any], Any] | None,
    ) -> Iteration:
        """Run FCG(m) on ``system`` with this network's directions."""
        if system.dtype.kind == "c":
            raise TypeError(
                f"{system.name}: DCDM solves real systems; the system has dtype {system.dtype}"
            )
        if self.multigrid:
            preconditioner = self.prepare(operator)
            return fcg_iterate(system, preconditioner, m=m, refresh=refresh, callback=callback)
        with self.directions(system, operator) as preconditioner:
            return fcg_iterate(system, preconditioner, m=m, refresh=refresh, callback=callback)

    def prepare(self, operator: GridPoisson) -> Any:
        """The per-geometry work of a multigrid network, done once per operator (setup).

        For a network with ``multigrid_options()`` (such as ``dcdm-galerkin``) this is
        the :class:`~physnet.solvers.AggregationMultigrid` hierarchy with the network's
        smoother; it is kept for the operator, so a later :meth:`iterate` on it reuses it.
        Other networks prepare per solve, on the device of the right-hand side.
        """
        if self._prepared is not None and self._prepared[0] is operator:
            return self._prepared[1]
        if self.multigrid:
            from physnet.solvers.multigrid import AggregationMultigrid

            preconditioner = AggregationMultigrid(operator, **self.model.multigrid_options())
            self._prepared = (operator, preconditioner)
            return preconditioner
        if self.prepared:
            # A network with prepare(flags): its geometry state on the CPU (or the device
            # it was asked for), reused by a solve whose right-hand side lives there.
            torch = backend.require_torch()
            device = self.device or _module_device(self.model) or torch.device("cpu")
            model = self._model_on(device)
            dtype = _module_dtype(model) or torch.float64
            with _evaluating(model):
                self._geometry_state(model, operator, device, dtype)
        return None

    def _model_on(self, device: Any) -> Any:
        """The network on ``device``: moved if physnet owns it, else a copy is moved."""
        model = self.model
        if _module_device(model) not in (None, device):
            model = model.to(device) if self.owned else copy.deepcopy(model).to(device)
            if self.owned:
                self.model = model
        return model

    def _geometry_state(self, model: Any, operator: GridPoisson, device: Any, dtype: Any) -> Any:
        """``model.prepare(flags)`` for ``operator``, kept for the next solve on it."""
        cached = self._prepared
        if cached is not None and cached[0] is operator and cached[1][:2] == (device, dtype):
            return cached[1][2]
        torch = backend.require_torch()
        with torch.inference_mode():
            state = model.prepare(_grid_flags(operator, device, dtype))
        self._prepared = (operator, (device, dtype, state))
        return state

    @contextlib.contextmanager
    def directions(self, system: KrylovSystem, operator: GridPoisson) -> Iterator[Any]:
        """The preconditioner callable for one solve, with the network in evaluation mode."""
        torch = backend.require_torch()
        device = self._device(system, torch)
        model = self._model_on(device)
        dtype = _module_dtype(model) or backend.torch_dtype(system.dtype)
        with _evaluating(model):
            state = self._geometry_state(model, operator, device, dtype) if self.prepared else None
            yield _Preconditioner(
                model=model,
                operator=operator,
                flags=_grid_flags(operator, device, dtype) if self.uses_flags else None,
                state=state,
                prepared=self.prepared,
                device=device,
                dtype=dtype,
                description=self.description,
                name=system.name,
            )

    def _device(self, system: KrylovSystem, torch: Any) -> Any:
        if self.device is not None:
            return self.device
        own = _module_device(self.model)
        if own is not None and not self.owned:
            return own
        be = system.backend
        if be.kind == "torch":
            return torch.device(be.device)
        if be.kind == "cupy":
            return torch.device("cuda", be.device.id)
        return torch.device("cpu")


def _grid_flags(operator: GridPoisson, device: Any, dtype: Any) -> Any:
    """The cell flags as a ``(1, 1, *grid)`` float tensor, the networks' geometry input."""
    torch = backend.require_torch()
    flags = torch.from_numpy(operator.flags.astype(np.float32))
    return flags.to(device=device, dtype=dtype)[None, None]


@contextlib.contextmanager
def _evaluating(model: Any) -> Iterator[None]:
    """``model`` in evaluation mode, its training flag restored afterwards."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def _has_prepare(model: Any) -> bool:
    """Whether the network has ``prepare(flags)`` and ``apply_prepared(residual, state)``."""
    return callable(getattr(model, "prepare", None)) and callable(
        getattr(model, "apply_prepared", None)
    )


class _Preconditioner:
    """``r -> G f(S r / ||r||)`` for one solve: the residual's kind in, the same kind out."""

    def __init__(
        self,
        *,
        model: Any,
        operator: GridPoisson,
        flags: Any,
        state: Any,
        prepared: bool,
        device: Any,
        dtype: Any,
        description: str,
        name: str,
    ) -> None:
        self.torch = backend.require_torch()
        self.model = model
        self.operator = operator
        self.flags = flags
        self.state = state
        self.prepared = prepared
        self.device = device
        self.dtype = dtype
        self.description = description
        self.name = name
        self.expected_shape = (1, 1, *operator.grid_shape)

    def __call__(self, r: Any) -> Any:
        torch = self.torch
        # Normalised in the solver's precision, so a small float64 residual cannot
        # underflow in a float32 network.
        residual = backend.to_torch(r).to(device=self.device)
        residual = (residual / torch.linalg.vector_norm(residual)).to(self.dtype)
        grid = self.operator.scatter(residual)[None, None]
        with torch.inference_mode():
            if self.prepared:
                output = self.model.apply_prepared(grid, self.state)
            elif self.flags is not None:
                output = self.model(torch.cat([grid, self.flags], dim=1))
            else:
                output = self.model(grid)
        if not isinstance(output, torch.Tensor) or tuple(output.shape) != self.expected_shape:
            got = (
                f"a tensor of shape {tuple(output.shape)}"
                if isinstance(output, torch.Tensor)
                else f"an object of type {type(output).__name__}"
            )
            raise ValueError(
                f"{self.name}: the model {self.description!r} returned {got}, expected a "
                f"tensor of shape {self.expected_shape} (one direction on the grid)"
            )
        # Outside inference mode: the gathered direction is an ordinary tensor the
        # iteration may use freely.
        direction = self.operator.gather(output[0, 0])
        return _like(direction, r)


def _like(direction: Any, r: Any) -> Any:
    """``direction`` (a torch tensor) with the kind, device and dtype of the residual ``r``."""
    kind = backend.array_kind(r)
    if kind == "torch":
        return direction.to(device=r.device, dtype=r.dtype)
    dtype = backend.torch_dtype(backend.numpy_dtype(r.dtype))
    if kind == "cupy":
        torch = backend.require_torch()
        return backend.to_cupy(direction.to(device=torch.device("cuda", r.device.id), dtype=dtype))
    return direction.to(device="cpu", dtype=dtype).numpy()


def _uses_flags(model: Any) -> bool:
    """Whether the network takes the flags as a second input channel."""
    uses_flags = getattr(model, "uses_flags", None)
    if uses_flags is not None:
        return bool(uses_flags)
    channels = getattr(model, "input_channels", None)
    if channels is None:
        config = getattr(model, "config", None)
        channels = config.get("in_channels") if isinstance(config, dict) else None
    if channels is None:
        return False
    if channels not in (1, 2):
        raise ValueError(
            f"dcdm: the model takes {channels} input channels, expected 1 (the residual) or "
            "2 (the residual and the cell flags)"
        )
    return channels == 2


def _canonical_device(device: Any) -> Any:
    """``cuda`` as ``cuda:<current>``, so that equal devices compare equal."""
    if device.type == "cuda" and device.index is None:
        torch = backend.require_torch()
        return torch.device("cuda", torch.cuda.current_device())
    return device


def _module_device(model: Any) -> Any:
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return None


def _module_dtype(model: Any) -> Any:
    for tensor in (*model.parameters(), *model.buffers()):
        if tensor.is_floating_point():
            return tensor.dtype
    return None


@register_method("dcdm")
def _setup_dcdm(A, *, model=None, m=2, refresh=50, device=None) -> Method:
    operator = _grid_operator("solve", A)
    m, refresh = check_fcg_options("solve", m, refresh)
    network = NetworkDirections.resolve("solve", model, operator.ndim, device)

    info: dict[str, Any] = {"model": network.description, "m": m, "refresh": refresh}
    hierarchy = network.prepare(operator)  # the per-geometry work counts as setup
    if hierarchy is not None:
        info["levels"] = hierarchy.level_sizes
        info["operator_complexity"] = round(hierarchy.operator_complexity, 3)

    def iterate(system: KrylovSystem, callback) -> Iteration:
        return network.iterate(system, operator, m=m, refresh=refresh, callback=callback)

    return Method(iterate, info)
