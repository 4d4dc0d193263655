"""The pressure Poisson operator on a 2-D or 3-D grid of flagged cells.

Cells are fluid (an unknown), solid (a Neumann wall) or air (Dirichlet zero), as in
MAC-grid fluid solvers; :class:`GridPoisson` applies the resulting 5- or 7-point
operator matrix-free on NumPy arrays (a parallel Numba kernel), torch tensors (a
differentiable vectorised stencil, CPU or CUDA) and CuPy arrays (a CUDA kernel),
and assembles the same matrix exactly with :meth:`GridPoisson.to_csr`.
"""

from __future__ import annotations

import copy
import functools
import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.sparse

from physnet import backend
from physnet.operators import _stencil
from physnet.operators.base import LinearOperator, _result_dtype

__all__ = ["AIR", "FLUID", "SOLID", "GridPoisson"]

FLUID = 0
"""Flag of a fluid cell: one unknown of the system."""
SOLID = 1
"""Flag of a solid cell: a Neumann (zero-flux) wall. Everything outside the grid is solid."""
AIR = 2
"""Flag of an air cell: a Dirichlet condition, the unknown is zero there."""

_NAME = "GridPoisson"


class GridPoisson(LinearOperator):
    r"""The negative Laplacian ``-∇·(a ∇u)`` on the fluid cells of a flagged grid.

    Parameters
    ----------
    flags : array of int, shape (nx, ny) or (nx, ny, nz)
        Cell flags: :data:`FLUID` (0) marks an unknown, :data:`SOLID` (1) a Neumann
        wall, :data:`AIR` (2) a Dirichlet cell where the solution is zero. Everything
        outside the array is solid wall. NumPy arrays, torch tensors and CuPy arrays
        are accepted (the operator keeps a host copy).
    h : float or sequence of float, default 1.0
        The grid spacing, one number for all axes or one per axis.
    coefficients : array or sequence of arrays, optional
        The diffusion coefficient ``a``; 1 everywhere when omitted. Either

        - a cell-centred array of the grid's shape; the coefficient of the face
          between two cells is the arithmetic mean of theirs, or
        - a sequence of ``ndim`` face arrays, the one for axis ``d`` with
          ``n_d - 1`` entries along axis ``d`` (the interior face between cells
          ``i`` and ``i + 1``) and the grid's size along the others.

        Coefficients must be finite, and positive on every face the operator uses
        (between two fluid cells, or a fluid and an air cell).
    dtype : {numpy.float64, numpy.float32}, default numpy.float64
        The dtype of the operator's entries and of its matrix-free applies.

    Attributes
    ----------
    grid_shape : tuple of int
    ndim : int
        2 or 3.
    h : tuple of float
        The spacing along each axis.
    fluid_mask : numpy.ndarray of bool
        ``flags == FLUID`` (read-only); the unknowns are its true cells in C order.
    n : int
        The number of unknowns; ``shape == (n, n)``.

    Raises
    ------
    TypeError
        If ``flags`` is not an integer array or ``dtype`` is not float32 or float64.
    ValueError
        If ``flags`` is not 2-D or 3-D, holds values other than 0, 1 and 2 or has no
        fluid cell; if ``h`` is not positive and finite; if ``coefficients`` has the
        wrong shape, non-finite values or a non-positive value on a used face.

    Notes
    -----
    With face weights :math:`w_f = a_f / h_d^2` for the face :math:`f` between a
    fluid cell :math:`c` and its neighbour :math:`c'` along axis :math:`d`, row
    :math:`c` of the operator is

    .. math::

        (A u)_c = \sum_{c' \notin \mathrm{solid}} w_f \, u_c
                  - \sum_{c' \in \mathrm{fluid}} w_f \, u_{c'} ,

    that is, a solid neighbour (or the outside of the grid) drops its term, an air
    neighbour adds its weight to the diagonal and has no off-diagonal entry, and a
    fluid neighbour adds its weight to the diagonal and ``-w_f`` off the diagonal.
    This is the MAC-grid pressure Poisson matrix of DCDM [1]_ without the empty rows
    of non-fluid cells. The operator is symmetric positive semi-definite, and
    definite when every connected fluid region touches an air cell; otherwise its
    null space is spanned by the indicator vectors of the regions that do not.

    References
    ----------
    .. [1] A. Kaneda, O. Akar, J. Chen, V. A. T. Kala, D. Hyde and J. Teran, "A deep
       conjugate direction method for iteratively solving linear systems", ICML 2023.

    Examples
    --------
    A 4×5 box with an air row on top and a two-cell obstacle:

    >>> import numpy as np
    >>> from physnet.operators import AIR, SOLID, GridPoisson
    >>> flags = np.zeros((4, 5), dtype=np.int8)
    >>> flags[0, :] = AIR
    >>> flags[2, 1:3] = SOLID
    >>> A = GridPoisson(flags, h=0.25)
    >>> A.shape
    (13, 13)
    >>> x = np.arange(A.n, dtype=float)
    >>> bool(np.allclose(A @ x, A.to_csr() @ x))
    True
    >>> A.scatter(np.ones(A.n))
    array([[0., 0., 0., 0., 0.],
           [1., 1., 1., 1., 1.],
           [1., 0., 0., 1., 1.],
           [1., 1., 1., 1., 1.]])
    >>> A.diagonal()[:3]
    array([48., 48., 48.])
    """

    hermitian = True

    def __init__(
        self,
        flags: Any,
        *,
        h: float | Sequence[float] = 1.0,
        coefficients: Any = None,
        dtype: Any = np.float64,
    ) -> None:
        self._flags = _validate_flags(flags)
        self.grid_shape = tuple(int(s) for s in self._flags.shape)
        self.ndim = self._flags.ndim
        self.h = _validate_spacing(h, self.ndim)
        self.dtype = _validate_dtype(dtype)
        fluid_mask = self._flags == FLUID
        fluid_mask.flags.writeable = False
        self.fluid_mask = fluid_mask
        self.n = int(np.count_nonzero(fluid_mask))
        self.shape = (self.n, self.n)
        # Validated face weights a_f / h_d^2, zero on faces the operator does not use;
        # None for a constant coefficient, whose weights are 1 / h_d^2 per axis.
        self._variable_weights = _face_weights_from(coefficients, self._flags, self.h)
        # Per-dtype and per-device data, shared by the copies astype() makes.
        self._cache: dict[Any, Any] = {}

    # --- description --------------------------------------------------------------
    def __repr__(self) -> str:
        grid = "x".join(str(s) for s in self.grid_shape)
        return f"<{self.n}x{self.n} GridPoisson on a {grid} grid with dtype={self.dtype}>"

    @property
    def flags(self) -> np.ndarray:
        """The cell flags (a read-only int8 view): 0 fluid, 1 solid, 2 air."""
        view = self._flags.view()
        view.flags.writeable = False
        return view

    @property
    def variable_coefficients(self) -> bool:
        """Whether the operator has a coefficient other than 1."""
        return self._variable_weights is not None

    def astype(self, dtype: Any) -> GridPoisson:
        """The same operator with entries of another dtype (float32 or float64).

        The copy shares the validated grid data with this operator.
        """
        dtype = _validate_dtype(dtype)
        if dtype == self.dtype:
            return self
        other = copy.copy(self)
        other.dtype = dtype
        return other

    # --- grid data ----------------------------------------------------------------
    @functools.cached_property
    def _cell_indices(self) -> np.ndarray:
        """Flat grid index (C order) of every unknown."""
        return np.flatnonzero(self.fluid_mask)

    @functools.cached_property
    def _numbers(self) -> np.ndarray:
        """Unknown number of every cell, -1 for non-fluid cells."""
        index_dtype = np.int32 if self.n < np.iinfo(np.int32).max else np.int64
        numbers = np.full(self.grid_shape, -1, dtype=index_dtype)
        numbers[self.fluid_mask] = np.arange(self.n, dtype=index_dtype)
        return numbers

    def face_weights(self) -> tuple[np.ndarray, ...]:
        """The weight :math:`a_f / h_d^2` of every interior face, one float64 array per axis.

        The array for axis ``d`` has ``n_d - 1`` entries along ``d`` (the face between
        cells ``i`` and ``i + 1``) and the grid's size along the others; it is zero on
        the faces the operator does not use (those that touch a solid cell, or join two
        air cells). A face between a fluid and an air cell is a Dirichlet term of the
        fluid cell's diagonal. Multigrid methods read the operator from these arrays.

        Examples
        --------
        >>> import numpy as np
        >>> from physnet.operators import GridPoisson
        >>> flags = np.array([[0, 0, 2]], dtype=np.int8)
        >>> GridPoisson(flags, coefficients=np.array([[1.0, 3.0, 5.0]])).face_weights()[1]
        array([[2., 4.]])
        """
        return tuple(w.copy() for w in self._face_weights())

    def _face_weights(self) -> tuple[np.ndarray, ...]:
        """Float64 weight of every interior face, zero where the operator does not use it."""
        if self._variable_weights is not None:
            return self._variable_weights
        return tuple(
            np.where(_used_faces(self._flags, d), 1.0 / self.h[d] ** 2, 0.0)
            for d in range(self.ndim)
        )

    @property
    def _shape3(self) -> tuple[int, int, int]:
        """The grid as the kernels see it: a 2-D grid ``(n0, n1)`` as ``(n0, 1, n1)``."""
        return _to_3d(np.empty(self.grid_shape, dtype=bool)).shape

    def _axis_weights(self) -> tuple[float, float, float]:
        """The constant-coefficient weights ``1 / h_d^2`` along the kernels' three axes."""
        weights = [1.0 / h**2 for h in self.h]
        return tuple(weights) if self.ndim == 3 else (weights[0], 0.0, weights[1])

    @functools.cached_property
    def _diagonal64(self) -> np.ndarray:
        diagonal = np.zeros(self.grid_shape)
        for d, weights in enumerate(self._face_weights()):
            diagonal[_lower(d, self.ndim)] += weights
            diagonal[_upper(d, self.ndim)] += weights
        return diagonal[self.fluid_mask]

    def diagonal(self) -> np.ndarray:
        """The diagonal of the operator, a NumPy array of length ``n``."""
        return self._diagonal64.astype(self.dtype)

    # --- assembly -----------------------------------------------------------------
    def to_csr(self) -> scipy.sparse.csr_matrix:
        """The operator as an exact SciPy CSR matrix (sorted indices, no duplicates).

        The assembly is vectorised over the grid: every row gets its entries in
        increasing column order (lower neighbours, the diagonal, upper neighbours),
        one neighbour direction at a time.
        """
        numbers = self._numbers
        face_weights = self._face_weights()
        # One "slot" per stencil position, in increasing column order within a row.
        lower_slots, upper_slots = [], []
        for d, weights in enumerate(face_weights):
            low = numbers[_lower(d, self.ndim)]
            high = numbers[_upper(d, self.ndim)]
            both = (low >= 0) & (high >= 0)
            low, high, values = low[both], high[both], -weights[both]
            lower_slots.append((high, low, values))  # row `high` meets `low` below it
            upper_slots.append((low, high, values))
        rows = np.arange(self.n, dtype=numbers.dtype)
        slots = [*lower_slots, (rows, rows, self._diagonal64), *reversed(upper_slots)]

        counts = np.zeros(self.n, dtype=np.int64)
        for slot_rows, _, _ in slots:
            counts[slot_rows] += 1  # a row appears at most once per slot
        indptr = np.zeros(self.n + 1, dtype=np.int64)
        np.cumsum(counts, out=indptr[1:])
        nnz = int(indptr[-1])
        index_dtype = np.int32 if nnz < np.iinfo(np.int32).max else np.int64
        indices = np.empty(nnz, dtype=index_dtype)
        data = np.empty(nnz, dtype=self.dtype)
        position = indptr[:-1].copy()
        for slot_rows, slot_columns, slot_values in slots:
            where = position[slot_rows]
            indices[where] = slot_columns
            data[where] = slot_values
            position[slot_rows] += 1
        matrix = scipy.sparse.csr_matrix(
            (data, indices, indptr.astype(index_dtype)), shape=self.shape
        )
        matrix.has_sorted_indices = True
        return matrix

    # --- grid <-> unknowns ----------------------------------------------------------
    def scatter(self, x: Any, fill: float = 0.0) -> Any:
        """Put unknowns back on the grid: ``u[fluid_mask] = x``, ``fill`` elsewhere.

        Parameters
        ----------
        x : array, shape (n,) or (n, k)
            NumPy, torch (differentiable) or CuPy.
        fill : float, default 0.0
            The value of the non-fluid cells.

        Returns
        -------
        array of shape ``grid_shape`` or ``grid_shape + (k,)``
            Of the kind, device and dtype of ``x``.
        """
        shape = tuple(x.shape)
        if len(shape) not in (1, 2) or shape[0] != self.n:
            raise ValueError(
                f"{_NAME}.scatter: x has shape {shape}, expected ({self.n},) or ({self.n}, k)"
            )
        trailing = shape[1:]
        cells = int(np.prod(self.grid_shape))
        kind = backend.array_kind(x)
        if kind == "torch":
            index = self._torch_index(x.device)
            grid = x.new_full((cells, *trailing), fill).index_copy(0, index, x)
        elif kind == "cupy":
            cupy = backend.require_cupy()
            grid = cupy.full((cells, *trailing), fill, dtype=x.dtype)
            grid[self._cupy_data(x.device.id, None)["cells"]] = x
        else:
            x = np.asarray(x)
            grid = np.full((cells, *trailing), fill, dtype=x.dtype)
            grid[self._cell_indices] = x
        return grid.reshape(self.grid_shape + trailing)

    def gather(self, u: Any) -> Any:
        """Take the unknowns from a grid array: ``u[fluid_mask]``.

        Parameters
        ----------
        u : array, shape ``grid_shape`` or ``grid_shape + (k,)``
            NumPy, torch (differentiable) or CuPy.

        Returns
        -------
        array of shape (n,) or (n, k), of the kind, device and dtype of ``u``.
        """
        shape = tuple(u.shape)
        if shape[: self.ndim] != self.grid_shape or len(shape) > self.ndim + 1:
            raise ValueError(
                f"{_NAME}.gather: u has shape {shape}, expected {self.grid_shape} "
                f"or {(*self.grid_shape, 'k')}"
            )
        trailing = shape[self.ndim :]
        cells = int(np.prod(self.grid_shape))
        kind = backend.array_kind(u)
        if kind == "torch":
            return u.reshape(cells, *trailing).index_select(0, self._torch_index(u.device))
        if kind == "cupy":
            return u.reshape(cells, *trailing)[self._cupy_data(u.device.id, None)["cells"]]
        return np.asarray(u).reshape(cells, *trailing)[self._cell_indices]

    # --- matrix-free apply ----------------------------------------------------------
    def _matvec(self, x: Any) -> Any:
        kind = backend.array_kind(x)
        if kind == "torch":
            return self._apply_torch(x)
        if kind == "cupy":
            return self._apply_cupy(x)
        return self._apply_numpy(np.asarray(x))

    def _matmat(self, x: Any) -> Any:
        kind = backend.array_kind(x)
        if kind == "torch":
            return self._apply_torch(x)
        if kind == "cupy":
            return super()._matmat(x)
        x = np.asarray(x)
        out = np.empty(x.shape, dtype=_result_dtype(self.dtype, x.dtype))
        for j in range(x.shape[1]):
            out[:, j] = self._apply_numpy(x[:, j])
        return out

    # NumPy: the Numba kernels of physnet.operators._stencil.
    def _stencil_data(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        data = self._cache.get("stencil")
        if data is None:
            padded_flags = np.pad(_to_3d(self._flags), 1, constant_values=SOLID)
            padded_numbers = np.pad(_to_3d(self._numbers), 1, constant_values=-1)
            row_start = _stencil.row_starts(_to_3d(self.fluid_mask))
            data = self._cache["stencil"] = (padded_flags, padded_numbers, row_start)
        return data

    def _numpy_data(self, dtype: np.dtype) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
        key = ("numpy", dtype)
        data = self._cache.get(key)
        if data is None:
            diagonal = self._diagonal64.astype(dtype)
            if self._variable_weights is None:
                weights = (np.array(self._axis_weights(), dtype=dtype),)
            else:
                faces = [
                    np.ascontiguousarray(_to_3d(w), dtype=dtype) for w in self._variable_weights
                ]
                if self.ndim == 2:  # no faces along the kernels' middle axis of length one
                    n0, _, n2 = self._shape3
                    faces.insert(1, np.zeros((n0, 0, n2), dtype=dtype))
                weights = tuple(faces)
            data = self._cache[key] = (diagonal, weights)
        return data

    def _apply_numpy(self, x: np.ndarray) -> np.ndarray:
        dtype = _result_dtype(self.dtype, x.dtype)
        if dtype.kind == "c":
            real = self._apply_numpy(x.real)
            return real + 1j * self._apply_numpy(x.imag) if np.iscomplexobj(x) else real
        x = np.ascontiguousarray(x, dtype=dtype)
        y = np.empty_like(x)
        padded_flags, padded_numbers, row_start = self._stencil_data()
        diagonal, weights = self._numpy_data(dtype)
        if len(weights) == 1:
            _stencil.matvec_constant(
                x, y, padded_flags, padded_numbers, row_start, diagonal, weights[0]
            )
        else:
            _stencil.matvec_variable(
                x, y, padded_flags, padded_numbers, row_start, diagonal, *weights
            )
        return y

    # torch: a vectorised, differentiable stencil on the full grid.
    def _torch_index(self, device: Any) -> Any:
        key = ("torch-index", str(device))
        index = self._cache.get(key)
        if index is None:
            torch = backend.require_torch()
            index = torch.from_numpy(self._cell_indices).to(device)
            self._cache[key] = index
        return index

    def _torch_weights(self, device: Any, dtype: np.dtype) -> tuple[Any, ...]:
        key = ("torch-weights", str(device), dtype)
        weights = self._cache.get(key)
        if weights is None:
            torch = backend.require_torch()
            weights = tuple(
                torch.from_numpy(w.astype(dtype)).to(device) for w in self._face_weights()
            )
            self._cache[key] = weights
        return weights

    def _apply_torch(self, x: Any) -> Any:
        r"""``A @ x`` for ``x`` of shape (n,) or (n, k), differentiable.

        With ``u`` the unknowns on the grid (zero off the fluid cells) and ``F = w ∂u``
        the weighted difference across every interior face, ``(A u)_c`` is the sum of
        the fluxes leaving cell ``c``: ``-∑_d (F_d[c] - F_d[c - 1])``, with no flux
        through the grid's boundary (a wall). Faces touching a solid cell have ``w = 0``.
        """
        torch = backend.require_torch()
        dtype = _result_dtype(self.dtype, x.dtype)
        real_dtype = np.dtype(dtype.char.lower()) if dtype.kind == "c" else dtype
        x = x.to(backend.torch_dtype(dtype))
        index = self._torch_index(x.device)
        weights = self._torch_weights(x.device, real_dtype)
        columns = x.reshape(self.n, -1).T  # (k, n): batch first, so grid axes are 1..ndim
        k = columns.shape[0]
        cells = int(np.prod(self.grid_shape))
        u = columns.new_zeros((k, cells)).index_copy(1, index, columns)
        u = u.reshape((k, *self.grid_shape))
        result = None
        for d, w in enumerate(weights):
            flux = w * torch.diff(u, dim=d + 1)
            boundary = flux.new_zeros((*flux.shape[: d + 1], 1, *flux.shape[d + 2 :]))
            term = torch.diff(flux, dim=d + 1, prepend=boundary, append=boundary)
            result = -term if result is None else result - term
        out = result.reshape(k, cells).index_select(1, index).T
        return out.reshape(self.n) if x.ndim == 1 else out.contiguous()

    # CuPy: the RawKernels of physnet.operators._cuda.poisson.
    def _cupy_data(self, device_id: int, dtype: np.dtype | None) -> dict[str, Any]:
        """Device arrays for one device; ``dtype`` None gives only the index arrays."""
        cupy = backend.require_cupy()
        key = ("cupy", device_id, dtype)
        data = self._cache.get(key)
        if data is not None:
            return data
        with cupy.cuda.Device(device_id):
            if dtype is None:
                data = {"cells": cupy.asarray(self._cell_indices)}
            else:
                index = self._cupy_data(device_id, None)
                shape3 = self._shape3
                padded_numbers = np.pad(
                    _to_3d(self._numbers).astype(np.int32), 1, constant_values=-1
                )
                data = {
                    "cells": index["cells"],
                    "numbers": cupy.asarray(padded_numbers),
                    "diagonal": cupy.asarray(self._diagonal64.astype(dtype)),
                    "grid_shape": shape3,
                    "axis_weights": self._axis_weights(),
                    "face_weights": None,
                }
                if self._variable_weights is not None:
                    faces = []
                    for d, w in enumerate(self._variable_weights):
                        pad = [(0, 0)] * self.ndim
                        pad[d] = (1, 1)  # the two boundary faces, weight zero (a wall)
                        with_boundary = np.ascontiguousarray(_to_3d(np.pad(w, pad)), dtype=dtype)
                        faces.append(cupy.asarray(with_boundary))
                    if self.ndim == 2:  # the kernels' middle axis has only its two wall faces
                        faces.insert(1, cupy.zeros((shape3[0], 2, shape3[2]), dtype=dtype))
                    data["face_weights"] = tuple(faces)
        self._cache[key] = data
        return data

    def _apply_cupy(self, x: Any) -> Any:
        cupy = backend.require_cupy()
        from physnet.operators._cuda import poisson as cuda_poisson

        dtype = _result_dtype(self.dtype, x.dtype)
        if dtype.kind == "c":
            real = self._apply_cupy(x.real)
            return real + 1j * self._apply_cupy(x.imag) if x.dtype.kind == "c" else real
        with cupy.cuda.Device(x.device.id):
            x = cupy.ascontiguousarray(x, dtype=dtype)
            return cuda_poisson.matvec(x, self._cupy_data(x.device.id, dtype))


# --- validation and face weights -------------------------------------------------------


def _to_3d(array: Any) -> Any:
    """A 2-D grid array ``(n0, n1)`` as ``(n0, 1, n1)``; 3-D arrays unchanged."""
    return array if array.ndim == 3 else array[:, None, :]


def _lower(axis: int, ndim: int) -> tuple[slice, ...]:
    """The cells below each interior face along ``axis``."""
    index = [slice(None)] * ndim
    index[axis] = slice(None, -1)
    return tuple(index)


def _upper(axis: int, ndim: int) -> tuple[slice, ...]:
    """The cells above each interior face along ``axis``."""
    index = [slice(None)] * ndim
    index[axis] = slice(1, None)
    return tuple(index)


def _used_faces(flags: np.ndarray, axis: int) -> np.ndarray:
    """Interior faces along ``axis`` that enter the operator: fluid-fluid or fluid-air."""
    low = flags[_lower(axis, flags.ndim)]
    high = flags[_upper(axis, flags.ndim)]
    return ((low == FLUID) | (high == FLUID)) & (low != SOLID) & (high != SOLID)


def _validate_flags(flags: Any) -> np.ndarray:
    if backend.array_kind(flags) != "numpy":
        flags = backend.to_numpy(flags)
    flags = np.asarray(flags)
    if flags.dtype.kind not in "iu":
        raise TypeError(
            f"{_NAME}: flags has dtype {flags.dtype}, expected an integer array with "
            f"FLUID={FLUID}, SOLID={SOLID} and AIR={AIR}"
        )
    if flags.ndim not in (2, 3):
        raise ValueError(
            f"{_NAME}: flags has shape {flags.shape} ({flags.ndim} dimensions), "
            "expected a 2-D or 3-D grid"
        )
    bad = (flags < FLUID) | (flags > AIR)
    if bad.any():
        values = np.unique(flags[bad])
        shown = ", ".join(str(v) for v in values[:10]) + (", ..." if values.size > 10 else "")
        raise ValueError(
            f"{_NAME}: flags holds the values {shown}, expected only "
            f"FLUID={FLUID}, SOLID={SOLID} and AIR={AIR}"
        )
    if not (flags == FLUID).any():
        raise ValueError(f"{_NAME}: flags of shape {flags.shape} has no fluid cell (no unknown)")
    return np.ascontiguousarray(flags, dtype=np.int8)


def _validate_spacing(h: Any, ndim: int) -> tuple[float, ...]:
    if (isinstance(h, numbers.Real) and not isinstance(h, bool)) or (
        isinstance(h, np.ndarray) and h.ndim == 0
    ):
        spacing = (float(h),) * ndim
    else:
        try:
            spacing = tuple(float(v) for v in np.asarray(h, dtype=np.float64).reshape(-1))
        except (TypeError, ValueError):
            raise ValueError(
                f"{_NAME}: h={h!r} is not a number or a sequence of {ndim} numbers"
            ) from None
        if np.ndim(h) != 1 or len(spacing) != ndim:
            raise ValueError(
                f"{_NAME}: h has shape {np.shape(h)}, expected a number or {ndim} spacings "
                f"(one per axis of the {ndim}-D grid)"
            )
    if not all(np.isfinite(v) and v > 0 for v in spacing):
        raise ValueError(f"{_NAME}: h={h!r}, expected positive finite spacings")
    return spacing


def _validate_dtype(dtype: Any) -> np.dtype:
    try:
        resolved = backend.numpy_dtype(dtype) if dtype is not None else None
    except TypeError:
        resolved = None
    # Compare by name: numpy equates the dtype float64 with None.
    if resolved is None or resolved.name not in ("float32", "float64"):
        raise TypeError(f"{_NAME}: dtype {dtype!r}, expected numpy.float32 or numpy.float64")
    return resolved


def _real_array(value: Any, what: str) -> np.ndarray:
    if backend.array_kind(value) != "numpy":
        value = backend.to_numpy(value)
    array = np.asarray(value)
    if array.dtype.kind not in "iuf":
        raise TypeError(f"{_NAME}: {what} has dtype {array.dtype}, expected real numbers")
    return array.astype(np.float64, copy=False)


def _face_weights_from(
    coefficients: Any, flags: np.ndarray, h: tuple[float, ...]
) -> tuple[np.ndarray, ...] | None:
    """Validated float64 face weights ``a_f / h_d^2``, zero on unused faces (None if no a)."""
    if coefficients is None:
        return None
    ndim, grid_shape = flags.ndim, flags.shape
    face_shapes = [
        tuple(s - 1 if axis == d else s for axis, s in enumerate(grid_shape)) for d in range(ndim)
    ]
    is_sequence = isinstance(coefficients, (list, tuple))
    if is_sequence:
        if len(coefficients) != ndim:
            raise ValueError(
                f"{_NAME}: coefficients is a sequence of {len(coefficients)} arrays, expected "
                f"either one face array per axis ({ndim}, of shapes "
                f"{', '.join(map(str, face_shapes))}) or one cell array of shape {grid_shape}"
            )
        faces = []
        for d, (given, expected) in enumerate(zip(coefficients, face_shapes, strict=True)):
            what = f"coefficients[{d}] (faces along axis {d})"
            array = _real_array(given, what)
            if array.shape != expected:
                raise ValueError(f"{_NAME}: {what} has shape {array.shape}, expected {expected}")
            if not np.isfinite(array).all():
                raise ValueError(f"{_NAME}: {what} has NaN or Inf values")
            faces.append((array, what))
    else:
        what = "coefficients (cell values)"
        array = _real_array(coefficients, what)
        if array.shape != grid_shape:
            raise ValueError(
                f"{_NAME}: coefficients has shape {array.shape}, expected the grid's shape "
                f"{grid_shape} (cell values) or a sequence of {ndim} face arrays of shapes "
                f"{', '.join(map(str, face_shapes))}"
            )
        if not np.isfinite(array).all():
            raise ValueError(f"{_NAME}: {what} has NaN or Inf values")
        faces = [
            (
                0.5 * (array[_lower(d, ndim)] + array[_upper(d, ndim)]),
                f"{what}, faces along axis {d}",
            )
            for d in range(ndim)
        ]
    weights = []
    for d, (face_values, what) in enumerate(faces):
        used = _used_faces(flags, d)
        if not (face_values[used] > 0).all():
            smallest = float(face_values[used].min())
            raise ValueError(
                f"{_NAME}: {what} has the value {smallest:g} on a face between fluid cells or "
                "a fluid and an air cell, expected positive values there"
            )
        weights.append(np.where(used, face_values / h[d] ** 2, 0.0))
    return tuple(weights)
