r"""The near-field MIMO radar operator (Born approximation), computed on the fly.

A multiple-input multiple-output radar with transmitters at ``p_t`` and receivers at
``p_r`` illuminates a volume of voxels ``r_v`` at the wavenumbers ``k = 2 pi f / c``. In
the Born (single-scattering) approximation the measurement of the pair ``(t, r)`` at
frequency ``f_k`` is linear in the complex reflectivity ``x``:

.. math::

    y_{k,t,r} = \sum_v A_{k,t,r,v}\, x_v, \qquad
    A_{k,t,r,v} = \frac{\exp(-j k (|r_v - p_t| + |r_v - p_r|))}
                       {4\pi\, |r_v - p_t|\, |r_v - p_r|}.

:class:`NearFieldMIMO` never forms ``A`` (``K T R N`` entries: 547 MiB in complex64 for
the reference setting). Each entry factorises as ``a_k(v, t) b_k(v, r)`` with
``a_k(v, t) = exp(-j k d_vt) / (4 pi d_vt)`` and ``b_k(v, r) = exp(-j k d_vr) / d_vr``, so
for each frequency the forward map is a product of two thin matrices through the voxels,

.. math::

    y_k = (a_k^T \operatorname{diag}(x)) \, b_k, \qquad
    (A^H y)_v = \sum_k \sum_t \overline{a_k(v, t)} \sum_r \overline{b_k(v, r)} y_{k,t,r},

evaluated over voxel chunks whose workspace is bounded by ``workspace_bytes``. The factor
tables ``a_k`` and ``b_k`` (``K (T + R) N`` entries: ``(T + R) / (T R)`` of the dense
operator, 16 % for the cross array) are computed from the distance tables ``d_vt``
``(N, T)`` and ``d_vr`` ``(N, R)`` and kept while they fit in ``table_bytes``; otherwise
they are recomputed chunk by chunk at every apply.

NumPy arrays are computed by Numba kernels and BLAS (:mod:`physnet.operators._nearfield`):
batches of fewer than 8 volumes (16 for the adjoint) by kernels that contract the
factored form directly, larger batches by writing the columns of ``A`` of one voxel chunk
at a time into tiles that stay in cache and applying them with three real matrix products
(the 3M method), which for a batch of 32 is faster than multiplying by the stored dense
matrix. Where rotations or reflections of the plane map the array and the voxels onto
themselves, only one voxel per orbit is computed, for the batch stacked with its
row-permuted copies (:meth:`NearFieldMIMO.symmetry`). Torch tensors are computed with
torch (CPU or CUDA, and differentiable), CuPy arrays by CUDA kernels that generate the
phases in registers (:mod:`physnet.operators._cuda.radar`).

References
----------
I. Manisali, O. Oral, F. S. Oktem, "Efficient physics-based learned reconstruction methods
for real-time 3D near-field MIMO radar imaging", Digital Signal Processing 144 (2024)
104274, doi:10.1016/j.dsp.2023.104274.

Examples
--------
>>> import numpy as np
>>> from physnet.operators import NearFieldMIMO
>>> A = NearFieldMIMO(n_frequencies=5, grid_shape=(5, 5, 7))
>>> A.measurement_shape, A.grid_shape, A.shape
((5, 12, 13), (5, 5, 7), (780, 175))
>>> x = np.zeros((2, 175), dtype=np.complex64)
>>> (A @ x).shape, (A.H @ (A @ x)).shape
((2, 5, 12, 13), (2, 175))
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np

from physnet import backend
from physnet.operators import _nearfield
from physnet.operators.base import LinearOperator, _AdjointOperator

__all__ = [
    "SPEED_OF_LIGHT",
    "NearFieldMIMO",
    "cross_array",
    "linear_frequencies",
    "voxel_grid",
]

SPEED_OF_LIGHT = 299_792_458.0
"""Speed of light in vacuum, m/s."""

_NAME = "NearFieldMIMO"
_DEFAULT_GRID_SHAPE = (25, 25, 49)
_DEFAULT_EXTENT = ((-0.15, 0.15), (-0.15, 0.15), (0.35, 0.65))
_MIB = 1 << 20


def cross_array(
    width: float = 0.3, n_transmitters: int = 12, n_receivers: int = 13
) -> tuple[np.ndarray, np.ndarray]:
    """The reference cross array in the plane ``z = 0``: TX on one diagonal, RX on the other.

    Receivers are evenly spaced on the diagonal from ``(-w/2, -w/2, 0)`` to
    ``(w/2, w/2, 0)``, transmitters on the anti-diagonal from ``(-w/2, w/2, 0)`` to
    ``(w/2, -w/2, 0)`` (end points included).

    Parameters
    ----------
    width : float, default 0.3
        Side of the square aperture, metres.
    n_transmitters, n_receivers : int, default 12 and 13

    Returns
    -------
    transmitters : numpy.ndarray, shape (n_transmitters, 3)
    receivers : numpy.ndarray, shape (n_receivers, 3)
        Positions in metres.

    Examples
    --------
    >>> tx, rx = cross_array()
    >>> tx.shape, rx.shape, rx[6].tolist()
    ((12, 3), (13, 3), [0.0, 0.0, 0.0])
    """
    if not isinstance(width, numbers.Real) or not width > 0:
        raise ValueError(f"cross_array: width={width!r}, expected a positive number of metres")
    for name, value in (("n_transmitters", n_transmitters), ("n_receivers", n_receivers)):
        if not _is_int(value) or value < 1:
            raise ValueError(f"cross_array: {name}={value!r}, expected a positive integer")
    half = width / 2
    s_tx = np.linspace(-half, half, n_transmitters) if n_transmitters > 1 else np.zeros(1)
    s_rx = np.linspace(-half, half, n_receivers) if n_receivers > 1 else np.zeros(1)
    transmitters = np.stack([s_tx, -s_tx, np.zeros_like(s_tx)], axis=1)
    receivers = np.stack([s_rx, s_rx, np.zeros_like(s_rx)], axis=1)
    return transmitters, receivers


def linear_frequencies(
    n_frequencies: int = 15, start_hz: float = 4e9, stop_hz: float = 16e9
) -> np.ndarray:
    """``n_frequencies`` evenly spaced frequencies from ``start_hz`` to ``stop_hz`` (inclusive).

    Examples
    --------
    >>> linear_frequencies(5).tolist()
    [4000000000.0, 7000000000.0, 10000000000.0, 13000000000.0, 16000000000.0]
    """
    if not _is_int(n_frequencies) or n_frequencies < 1:
        raise ValueError(
            f"linear_frequencies: n_frequencies={n_frequencies!r}, expected a positive integer"
        )
    if not 0 < start_hz <= stop_hz:
        raise ValueError(
            f"linear_frequencies: band [{start_hz}, {stop_hz}] Hz, expected 0 < start <= stop"
        )
    if n_frequencies == 1:
        return np.array([0.5 * (start_hz + stop_hz)])
    return np.linspace(start_hz, stop_hz, n_frequencies)


def voxel_grid(
    grid_shape: Sequence[int] = _DEFAULT_GRID_SHAPE,
    extent: Sequence[Sequence[float]] = _DEFAULT_EXTENT,
) -> np.ndarray:
    """Voxel centres of a regular grid, in C order (``z`` fastest), shape ``(N, 3)``.

    Parameters
    ----------
    grid_shape : sequence of 3 int, default (25, 25, 49)
        Voxels along ``x``, ``y`` and ``z``.
    extent : sequence of 3 (min, max) pairs, default x, y in [-0.15, 0.15], z in [0.35, 0.65]
        The first and last voxel centres along each axis, metres.

    Examples
    --------
    >>> points = voxel_grid()
    >>> points.shape, points[0].tolist(), points[-1].tolist()
    ((30625, 3), [-0.15, -0.15, 0.35], [0.15, 0.15, 0.65])
    """
    grid_shape = _check_grid_shape("voxel_grid", grid_shape)
    extent = np.asarray(extent, dtype=np.float64)
    if extent.shape != (3, 2) or not np.all(np.isfinite(extent)):
        raise ValueError(
            f"voxel_grid: extent has shape {extent.shape}, expected three (min, max) pairs"
        )
    axes = [
        np.linspace(lo, hi, n) if n > 1 else np.array([0.5 * (lo + hi)])
        for (lo, hi), n in zip(extent, grid_shape, strict=True)
    ]
    mesh = np.meshgrid(*axes, indexing="ij")
    return np.stack([m.reshape(-1) for m in mesh], axis=1)


class NearFieldMIMO(LinearOperator):
    r"""Near-field MIMO radar forward operator ``A``: reflectivity -> measurements.

    ``A`` maps complex voxel reflectivities ``x`` (``N`` voxels) to the measurements
    ``y[k, t, r]`` of every frequency ``k``, transmitter ``t`` and receiver ``r``; its
    entries are given in the module docstring. Without arguments it is the reference
    setting: the 12 x 13 cross array of width 0.3 m, ``n_frequencies`` frequencies evenly
    spaced over 4-16 GHz, and the 25 x 25 x 49 voxel grid over x, y in [-0.15, 0.15] m,
    z in [0.35, 0.65] m.

    Two calling conventions:

    - ``A @ x`` maps ``(..., N)`` to ``(..., K, T, R)`` (the voxel axis last, any leading
      batch axes), and ``A.H @ y`` maps ``(..., K, T, R)`` (or ``(..., K T R)``) back to
      ``(..., N)``;
    - :meth:`matvec`, :meth:`rmatvec`, :meth:`matmat` and :meth:`rmatmat` keep the
      column-vector protocol of :class:`~physnet.operators.LinearOperator` on flat vectors
      of length ``M = K T R`` and ``N`` (for SciPy and the Krylov solvers).

    Parameters
    ----------
    transmitters, receivers : array_like, shape (T, 3) and (R, 3), optional
        Antenna positions in metres; the cross array (:func:`cross_array`) by default.
    frequencies : array_like, shape (K,), optional
        Frequencies in Hz (any, not necessarily evenly spaced);
        ``linear_frequencies(n_frequencies)`` by default.
    points : array_like, shape (N, 3), optional
        Voxel centres in metres; ``voxel_grid(grid_shape)`` by default. No voxel may
        coincide with an antenna.
    n_frequencies : int, default 15
        Number of default frequencies (only without ``frequencies``).
    grid_shape : sequence of 3 int, optional
        The shape of the voxel grid, so that volumes can be reshaped; (25, 25, 49) for the
        default points. With explicit ``points`` it is only recorded (its product must be
        ``N``).
    dtype : {numpy.complex64, numpy.complex128}, default numpy.complex64
        The dtype of the operator's entries. Applies compute in
        ``numpy.result_type(dtype, x.dtype)`` (complex128 for complex128 input).
    workspace_bytes : int, default 64 MiB
        Bound on the temporary arrays of one apply (voxels are processed in chunks).
    table_bytes : int, default 256 MiB
        The factor tables are kept (per dtype and device) when they fit in this; with 0
        they are recomputed from the distance tables at every apply.
    symmetric : bool, default True
        On NumPy arrays, use the symmetries of the geometry: the rotations and reflections
        of the x-y plane about the z axis that map the transmitters, the receivers and the
        voxels each onto themselves (rotation by 180 degrees and the two diagonal
        reflections for the cross array and a square grid centred on the axis). See Notes.

    Attributes
    ----------
    transmitters, receivers, frequencies, points : numpy.ndarray (float64, read-only)
    wavenumbers : numpy.ndarray
        ``2 pi f / c`` in rad/m.
    transmitter_distances, receiver_distances : numpy.ndarray, shape (N, T) and (N, R)
        ``|r_v - p_t|`` and ``|r_v - p_r|`` in metres.
    measurement_shape : tuple of int
        ``(K, T, R)``.
    grid_shape : tuple of int or None
    shape : tuple of int
        ``(K T R, N)``.

    Raises
    ------
    ValueError
        For positions that are not ``(n, 3)`` finite arrays, non-positive frequencies, a
        voxel on an antenna, or a ``grid_shape`` that does not match ``N``.
    TypeError
        For a dtype other than complex64 or complex128.

    Notes
    -----
    Cost of one apply: ``K T R N`` complex multiply-adds (72 M for the reference setting
    at ``K = 15``), as for the dense matrix, but without reading a 0.5-1.5 GB matrix from
    memory. Applying a batch amortises the table reads over its volumes; from 8 volumes
    on (16 for the adjoint; NumPy), also the writing of each chunk's columns of ``A``,
    which three real BLAS products then apply in ``3/4`` of the arithmetic of a complex
    one. Results agree with the dense matrix to rounding in the operand's precision, but
    batches below and above 8 (16) volumes round differently; below, a volume's result
    does not depend on the batch it is in.

    Symmetries (``symmetric=True``, NumPy): an isometry ``g`` that permutes the
    transmitters by ``pi_t`` and the receivers by ``pi_r`` keeps every distance, so the
    column of ``A`` at the voxel ``g(v)`` is the column at ``v`` with its rows permuted,
    ``A[(k, pi_t t, pi_r r), g(v)] = A[(k, t, r), v]``. The applies then run on one voxel
    per orbit (8,281 of 30,625 for the reference setting, whose group has 4 elements)
    with the batch stacked with its ``|G| - 1`` row-permuted copies: the same arithmetic,
    but a quarter of the tables to keep and of the tiles to write, and a 4x larger batch
    for BLAS. The batch thresholds above then apply to ``|G|`` times the batch.
    ``symmetric=False`` applies the operator as given.

    Examples
    --------
    >>> import numpy as np
    >>> from physnet.operators import NearFieldMIMO
    >>> from physnet.testing import dot_product_test
    >>> A = NearFieldMIMO(n_frequencies=4, grid_shape=(6, 6, 8), dtype=np.complex128)
    >>> bool(dot_product_test(A) < 1e-12)
    True
    """

    def __init__(
        self,
        transmitters: Any = None,
        receivers: Any = None,
        frequencies: Any = None,
        points: Any = None,
        *,
        n_frequencies: int = 15,
        grid_shape: Sequence[int] | None = None,
        dtype: Any = np.complex64,
        workspace_bytes: int = 64 * _MIB,
        table_bytes: int = 256 * _MIB,
        symmetric: bool = True,
    ) -> None:
        if (transmitters is None) != (receivers is None):
            raise ValueError(f"{_NAME}: give both transmitters and receivers, or neither")
        if transmitters is None:
            transmitters, receivers = cross_array()
        self.transmitters = _positions("transmitters", transmitters)
        self.receivers = _positions("receivers", receivers)
        if frequencies is None:
            frequencies = linear_frequencies(n_frequencies)
        frequencies = np.asarray(backend.to_numpy(frequencies), dtype=np.float64)
        if frequencies.ndim != 1 or frequencies.size == 0:
            raise ValueError(
                f"{_NAME}: frequencies has shape {frequencies.shape}, expected (K,) with K >= 1"
            )
        if not np.all(np.isfinite(frequencies)) or np.any(frequencies <= 0):
            raise ValueError(f"{_NAME}: frequencies must be finite and positive (Hz)")
        self.frequencies = _read_only(frequencies)
        if points is None:
            grid_shape = _DEFAULT_GRID_SHAPE if grid_shape is None else grid_shape
            grid_shape = _check_grid_shape(_NAME, grid_shape)
            points = voxel_grid(grid_shape)
        self.points = _positions("points", points)
        n = self.points.shape[0]
        if grid_shape is not None:
            grid_shape = _check_grid_shape(_NAME, grid_shape)
            if math.prod(grid_shape) != n:
                raise ValueError(
                    f"{_NAME}: grid_shape {grid_shape} has {math.prod(grid_shape)} voxels, "
                    f"but points has {n}"
                )
        self.grid_shape = grid_shape
        dtype = np.dtype(dtype)
        if dtype not in (np.complex64, np.complex128):
            raise TypeError(f"{_NAME}: dtype={dtype}, expected complex64 or complex128")
        self.dtype = dtype
        for name, value in (("workspace_bytes", workspace_bytes), ("table_bytes", table_bytes)):
            if not _is_int(value) or value < 0:
                raise ValueError(f"{_NAME}: {name}={value!r}, expected a non-negative integer")
        self.workspace_bytes = max(int(workspace_bytes), _MIB)
        self.table_bytes = int(table_bytes)

        self.wavenumbers = _read_only(2 * np.pi * self.frequencies / SPEED_OF_LIGHT)
        self.transmitter_distances = _read_only(_distances(self.points, self.transmitters))
        self.receiver_distances = _read_only(_distances(self.points, self.receivers))
        closest = min(self.transmitter_distances.min(), self.receiver_distances.min())
        if not closest > 0:
            raise ValueError(f"{_NAME}: a voxel coincides with an antenna (distance 0)")
        k, t, r = frequencies.size, self.transmitters.shape[0], self.receivers.shape[0]
        self.measurement_shape = (k, t, r)
        self.shape = (k * t * r, n)
        if not isinstance(symmetric, bool):
            raise TypeError(f"{_NAME}: symmetric={symmetric!r}, expected True or False")
        self.symmetric = symmetric
        self._symmetry: _Symmetry | bool | None = symmetric  # resolved at the first apply
        self._tables: dict[tuple[str, str, str], tuple[Any, Any]] = {}
        self._device_data: dict[tuple[str, str], dict[str, Any]] = {}

    # --- the batched applies ------------------------------------------------------------
    def forward(self, x: Any) -> Any:
        """``A x`` for reflectivities ``x`` of shape ``(..., N)``: measurements ``(..., K, T, R)``.

        Same as ``A @ x``. Returns the caller's array kind on the caller's device.
        """
        x, batch_shape = self._batch_operand(x, self.shape[1], "forward")
        y = self._apply(x, adjoint=False)
        return y.reshape(*batch_shape, *self.measurement_shape)

    def backproject(self, y: Any) -> Any:
        """``A^H y`` for measurements ``y`` of shape ``(..., K, T, R)`` or ``(..., K T R)``.

        Same as ``A.H @ y``; returns reflectivities of shape ``(..., N)``.
        """
        kind = backend.array_kind(y)
        y = np.asarray(y) if kind == "numpy" else y
        shape = tuple(y.shape)
        if len(shape) >= 3 and shape[-3:] == self.measurement_shape:
            y = y.reshape(*shape[:-3], self.shape[0])
        y, batch_shape = self._batch_operand(y, self.shape[0], "backproject")
        return self._apply(y, adjoint=True).reshape(*batch_shape, self.shape[1])

    def __matmul__(self, x: Any) -> Any:
        if isinstance(x, LinearOperator):
            return NotImplemented
        return self.forward(x)

    @property
    def H(self) -> LinearOperator:
        """The adjoint ``A^H``: ``A.H @ y`` maps ``(..., K, T, R)`` to ``(..., N)``."""
        return _NearFieldAdjoint(self)

    def volume(self, x: Any) -> Any:
        """Reshape ``(..., N)`` reflectivities to ``(..., *grid_shape)`` volumes."""
        if self.grid_shape is None:
            raise ValueError(f"{_NAME}.volume: the operator has no grid_shape")
        return x.reshape(*tuple(x.shape)[:-1], *self.grid_shape)

    # --- the column-vector protocol --------------------------------------------------
    def _matvec(self, x: Any) -> Any:
        return self._apply(x.reshape(1, -1), adjoint=False).reshape(-1)

    def _rmatvec(self, y: Any) -> Any:
        return self._apply(y.reshape(1, -1), adjoint=True).reshape(-1)

    def _matmat(self, x: Any) -> Any:
        return self._apply(x.T, adjoint=False).T

    def _rmatmat(self, y: Any) -> Any:
        return self._apply(y.T, adjoint=True).T

    # --- implementation ------------------------------------------------------------------
    def _batch_operand(self, x: Any, n: int, method: str) -> tuple[Any, tuple[int, ...]]:
        kind = backend.array_kind(x)
        if kind == "numpy":
            x = np.asarray(x)
        shape = tuple(int(s) for s in x.shape)
        if len(shape) == 0 or shape[-1] != n:
            expected = (
                f"(..., {n})"
                if method == "forward"
                else f"(..., {self.measurement_shape}) or (..., {n})"
            )
            raise ValueError(f"{_NAME}.{method}: operand has shape {shape}, expected {expected}")
        dtype = backend.numpy_dtype(x.dtype)
        if dtype.kind not in "iufc":
            raise TypeError(f"{_NAME}.{method}: operand has dtype {dtype}, expected numeric")
        return x.reshape(-1, n), shape[:-1]

    def _compute_dtype(self, x: Any) -> np.dtype:
        dtype = np.result_type(self.dtype, backend.numpy_dtype(x.dtype))
        return np.dtype(np.complex128 if dtype == np.complex128 else np.complex64)

    def _apply(self, x: Any, adjoint: bool) -> Any:
        """Rows of ``x`` (``(B, N)`` forward, ``(B, M)`` adjoint) -> rows of the result."""
        kind = backend.array_kind(x)
        dtype = self._compute_dtype(x)
        if kind == "cupy":
            from physnet.operators._cuda import radar as cuda_radar

            data = self._cuda_data(x, dtype)
            apply = cuda_radar.adjoint if adjoint else cuda_radar.forward
            return apply(x, data)
        if kind == "torch":
            return _TorchCore(self, x.device, dtype).apply(x, adjoint)
        symmetry = self.symmetry()
        if symmetry is not None:
            return symmetry.apply(np.asarray(x).astype(dtype, copy=False), adjoint)
        return _NumpyCore(self, dtype).apply(np.asarray(x), adjoint)

    def symmetry(self) -> _Symmetry | None:
        """The symmetry reduction that the NumPy applies use, or ``None`` (see Notes).

        Found at the first call (a nearest-neighbour match of the mapped positions, to
        ``1e-9`` of the geometry's size) and kept; ``None`` with ``symmetric=False`` or
        when only the identity maps the geometry onto itself.

        Examples
        --------
        >>> A = NearFieldMIMO(n_frequencies=2, grid_shape=(5, 5, 3))
        >>> len(A.symmetry()), A.symmetry().reduced.shape  # 4 maps, 9 orbits per z layer
        (4, (312, 27))
        >>> NearFieldMIMO(n_frequencies=2, grid_shape=(5, 5, 3), symmetric=False).symmetry()
        """
        if self._symmetry is True:
            self._symmetry = _Symmetry.find(self)
        elif self._symmetry is False:
            self._symmetry = None
        return self._symmetry

    def _cached_table_bytes(self) -> int:
        """Bytes of the factor tables kept by this operator and its symmetry reduction."""
        total = sum(a.nbytes + b.nbytes for a, b in self._tables.values())
        if isinstance(self._symmetry, _Symmetry):
            total += self._symmetry.reduced._cached_table_bytes()
        return int(total)

    def _chunk(self, batch: int, dtype: np.dtype) -> int:
        """Voxels per chunk so that the largest temporary fits the workspace."""
        k, t, r = self.measurement_shape
        per_voxel = k * max(batch * max(t, r), t + r) * np.dtype(dtype).itemsize
        return int(max(1, min(self.shape[1], self.workspace_bytes // per_voxel)))

    def _tables_fit(self, dtype: np.dtype) -> bool:
        k, t, r = self.measurement_shape
        return k * (t + r) * self.shape[1] * np.dtype(dtype).itemsize <= self.table_bytes

    def factor_tables(
        self, start: int = 0, stop: int | None = None, dtype: Any = np.complex128
    ) -> tuple[np.ndarray, ...]:
        """The factor tables of the voxels ``start:stop``, computed in float64, stored in ``dtype``.

        Returns
        -------
        a : numpy.ndarray, shape (K, n, T)
            ``exp(-j k d_vt) / (4 pi d_vt)``.
        b : numpy.ndarray, shape (K, n, R)
            ``exp(-j k d_vr) / d_vr``.
        """
        stop = self.shape[1] if stop is None else stop
        d_t = self.transmitter_distances[start:stop]
        d_r = self.receiver_distances[start:stop]
        k, t, r = self.measurement_shape
        a = np.empty((k, d_t.shape[0], t), dtype=dtype)
        b = np.empty((k, d_r.shape[0], r), dtype=dtype)
        for index, wavenumber in enumerate(self.wavenumbers):  # one frequency at a time
            a[index] = np.exp(-1j * wavenumber * d_t) / (4 * np.pi * d_t)
            b[index] = np.exp(-1j * wavenumber * d_r) / d_r
        return a, b

    def _factor_planes(
        self, start: int, stop: int, real_dtype: np.dtype
    ) -> tuple[np.ndarray, np.ndarray]:
        """The factor tables of the voxels ``start:stop`` as real and imaginary planes.

        Voxels last: ``(2, K, T, n)`` and ``(2, K, R, n)`` in ``real_dtype`` (computed in
        float64).
        """
        n_frequencies = self.measurement_shape[0]
        tables = []
        for distances, scale in (
            (self.transmitter_distances, 4 * np.pi),
            (self.receiver_distances, 1.0),
        ):
            d = np.ascontiguousarray(distances[start:stop].T)  # (T or R, n)
            planes = np.empty((2, n_frequencies, *d.shape), dtype=real_dtype)
            for index, wavenumber in enumerate(self.wavenumbers):  # one frequency at a time
                value = np.exp(-1j * wavenumber * d) / (scale * d)
                planes[0, index] = value.real
                planes[1, index] = value.imag
            tables.append(planes)
        return tables[0], tables[1]

    def _cuda_data(self, x: Any, dtype: np.dtype) -> dict[str, Any]:
        key = (str(x.device), dtype.name)
        if key not in self._device_data:
            cupy = backend.require_cupy()
            real = np.float32 if dtype == np.complex64 else np.float64
            with cupy.cuda.Device(x.device.id):
                self._device_data[key] = {
                    "transmitter_distances": cupy.asarray(
                        np.ascontiguousarray(self.transmitter_distances.T), dtype=real
                    ),
                    "receiver_distances": cupy.asarray(
                        np.ascontiguousarray(self.receiver_distances.T), dtype=real
                    ),
                    "wavenumbers": cupy.asarray(self.wavenumbers, dtype=real),
                    "measurement_shape": self.measurement_shape,
                    "n_voxels": self.shape[1],
                    "dtype": dtype,
                }
        return self._device_data[key]

    def dense(self) -> np.ndarray:
        """The dense matrix ``(K T R, N)`` in the operator's dtype: for tests and benchmarks only.

        It has ``K T R N`` entries (547 MiB in complex64 for the reference setting, 1.1 GiB
        in complex128 while it is built): build it for small settings or on purpose.
        """
        a, b = self.factor_tables()
        dense = np.einsum("knt,knr->ktrn", a, b).astype(self.dtype)
        return dense.reshape(self.shape)

    def __repr__(self) -> str:
        k, t, r = self.measurement_shape
        return (
            f"<{_NAME}: {k} frequencies x {t} TX x {r} RX, {self.shape[1]} voxels, "
            f"dtype={self.dtype}>"
        )


class _NearFieldAdjoint(_AdjointOperator):
    """``A^H`` of a :class:`NearFieldMIMO`, with the batched ``@`` convention."""

    def __matmul__(self, y: Any) -> Any:
        if isinstance(y, LinearOperator):
            return NotImplemented
        return self.operator.backproject(y)

    def __repr__(self) -> str:
        return f"<adjoint of {self.operator!r}>"


_PLANE_MAPS = (
    ((-1, 0), (0, -1)),  # rotation by 180 degrees
    ((0, 1), (1, 0)),  # reflection in the diagonal x = y
    ((0, -1), (-1, 0)),  # reflection in the diagonal x = -y
    ((-1, 0), (0, 1)),  # reflection in x = 0
    ((1, 0), (0, -1)),  # reflection in y = 0
    ((0, -1), (1, 0)),  # rotation by 90 degrees
    ((0, 1), (-1, 0)),  # rotation by -90 degrees
)
"""The symmetries of the square about the z axis other than the identity, on (x, y)."""


class _Symmetry:
    """The symmetry reduction of a :class:`NearFieldMIMO` on NumPy arrays.

    For the group ``G`` of the plane isometries (:data:`_PLANE_MAPS` and the identity)
    that map the transmitters, the receivers and the voxels each onto themselves: the
    voxels ``S``, one per orbit (its smallest index), and for each ``g``, ``images[g]``,
    the indices of the voxels ``g(S)``, and ``rows[g]``, the index of the measurement
    ``(k, pi_t t, pi_r r)`` for each row ``(k, t, r)``. ``reduced`` is the operator on
    the voxels ``S`` alone. Since ``A[rows[g], images[g]] = A[:, S]``,

    - adjoint: ``(A^H y)[images[g]] = A_S^H y[rows[g]]``;
    - forward: ``(A x)[rows[g]] += A_S (w x[images[g]])`` summed over ``g``, with ``w``
      the inverse of each representative's stabiliser size (a voxel that some ``g``
      fixes appears in several images and must count once).
    """

    def __init__(
        self, reduced: NearFieldMIMO, images: np.ndarray, rows: np.ndarray, weights: np.ndarray
    ) -> None:
        self.reduced = reduced
        self.images = images
        self.rows = rows
        self.weights = weights
        self.n_voxels = int(images.max()) + 1

    @classmethod
    def find(cls, operator: NearFieldMIMO) -> _Symmetry | None:
        from scipy.spatial import cKDTree

        sets = (operator.points, operator.transmitters, operator.receivers)
        size = max(float(np.abs(positions).max()) for positions in sets)
        tolerance = 1e-9 * size
        trees = [cKDTree(positions) for positions in sets]
        maps = [tuple(np.arange(len(positions)) for positions in sets)]  # the identity
        for matrix in _PLANE_MAPS:
            matches = []
            for positions, tree in zip(sets, trees, strict=True):
                mapped = positions.copy()
                mapped[:, :2] = positions[:, :2] @ np.asarray(matrix, dtype=np.float64).T
                distance, index = tree.query(mapped)
                if distance.max() > tolerance or np.unique(index).size != index.size:
                    break
                matches.append(index)
            else:
                maps.append(tuple(matches))
        if len(maps) == 1:
            return None
        voxel_maps = np.stack([voxels for voxels, _, _ in maps])  # (G, N)
        representatives = np.flatnonzero(voxel_maps.min(axis=0) == np.arange(voxel_maps.shape[1]))
        images = np.ascontiguousarray(voxel_maps[:, representatives])
        stabiliser = (images == representatives).sum(axis=0)
        k, t, r = operator.measurement_shape
        frequency_rows = np.arange(k)[:, None, None] * (t * r)
        rows = np.stack(
            [
                (frequency_rows + tx[None, :, None] * r + rx[None, None, :]).reshape(-1)
                for _, tx, rx in maps
            ]
        )
        reduced = NearFieldMIMO(
            operator.transmitters,
            operator.receivers,
            operator.frequencies,
            operator.points[representatives],
            dtype=operator.dtype,
            workspace_bytes=operator.workspace_bytes,
            table_bytes=operator.table_bytes,
            symmetric=False,
        )
        return cls(reduced, images, rows, 1.0 / stabiliser)

    def __len__(self) -> int:
        return len(self.images)

    def apply(self, x: np.ndarray, adjoint: bool) -> np.ndarray:
        """Rows of ``x`` (``(B, N)`` forward, ``(B, M)`` adjoint) in the compute dtype."""
        batch = x.shape[0]
        core = _NumpyCore(self.reduced, x.dtype)
        if adjoint:
            stacked = core.apply(np.concatenate([x[:, rows] for rows in self.rows]), True)
            out = np.empty((batch, self.n_voxels), dtype=x.dtype)
            for index, images in enumerate(self.images):
                out[:, images] = stacked[index * batch : (index + 1) * batch]
            return out
        weights = self.weights.astype(x.real.dtype)
        stacked = np.concatenate([x[:, images] * weights for images in self.images])
        stacked = core.apply(stacked, False)
        out = np.zeros((batch, self.rows.shape[1]), dtype=x.dtype)
        for index, rows in enumerate(self.rows):
            out[:, rows] += stacked[index * batch : (index + 1) * batch]
        return out


class _NumpyCore:
    """The applies on NumPy arrays: Numba kernels for small batches, 3M tiles for large ones.

    The factor tables are kept as split real and imaginary planes with the voxels last
    (``a`` as ``(2, K, T, N)``, ``b`` as ``(2, K, R, N)``), the layout of
    :mod:`physnet.operators._nearfield`. Below ``TILE_BATCH`` rows (``ADJOINT_TILE_BATCH``
    for the adjoint) the fused kernels apply the factored operator directly; from it on,
    each chunk of voxels gets its columns of the dense operator written to three
    cache-sized real tiles that three BLAS products apply to the whole batch (module
    docstring of :mod:`physnet.operators._nearfield`).
    """

    TILE_BATCH = 8
    """Batch size from which the tiles win (measured 1 thread, N_f = 15, 25 x 25 x 49)."""

    ADJOINT_TILE_BATCH = 16
    """The same for the adjoint, whose fused kernel applies each read of a table row to up
    to 8 volumes (measured 1 thread, N_f = 15, ms per volume, fused against tiles: 16.2
    and 16.6 at 8 volumes, 15.8 and 10.4 at 16; at 2 threads on a loaded machine the tiles
    took 20x longer at 8 volumes, BLAS's threads competing with Numba's)."""

    TILE_BYTES = 4 * _MIB
    """Target size of the three tiles of one chunk: they stay in L3 between the build and
    the products, and the chunk is wide enough that BLAS's packing of the batch operand
    (once per product) stays small beside that of the tile. Measured at 1 thread, batch
    32, N_f = 15, ms per volume beside the dense GEMM in the same run: chunks of 128 voxels
    (3.6 MiB) 7.8 against 9.0 for the GEMM, where the former 8 MiB (288 voxels) took 9.3;
    32-64 and 192-512 voxels were slower. At N_f = 5 and 30, widths of 64-256 voxels were
    within 5-15 % of each other."""

    def __init__(self, operator: NearFieldMIMO, dtype: np.dtype) -> None:
        self.operator = operator
        self.dtype = dtype
        self.real = np.dtype(np.float32 if dtype == np.complex64 else np.float64)

    def planes(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        """The tables of the voxels ``start:stop``: ``(2, K, T, n)`` and ``(2, K, R, n)``."""
        op = self.operator
        if op._tables_fit(self.dtype):
            key = ("numpy", "cpu", self.dtype.name)
            if key not in op._tables:
                op._tables[key] = op._factor_planes(0, op.shape[1], self.real)
            a, b = op._tables[key]
            return a[..., start:stop], b[..., start:stop]
        return op._factor_planes(start, stop, self.real)

    def _chunks(self, per_voxel_bytes: int, preferred: int | None = None):
        """``(start, stop)`` voxel ranges, one for all voxels when the tables are cached."""
        op = self.operator
        n = op.shape[1]
        if preferred is None:
            if op._tables_fit(self.dtype):
                yield 0, n
                return
            preferred = n
        chunk = max(1, min(preferred, op.workspace_bytes // max(per_voxel_bytes, 1), n))
        for start in range(0, n, chunk):
            yield start, min(n, start + chunk)

    def apply(self, x: np.ndarray, adjoint: bool) -> np.ndarray:
        x = x.astype(self.dtype, copy=False)
        if x.shape[0] >= (self.ADJOINT_TILE_BATCH if adjoint else self.TILE_BATCH):
            return self._apply_tiles(x, adjoint)
        return self._apply_fused(x, adjoint)

    def _table_bytes_per_voxel(self) -> int:
        k, t, r = self.operator.measurement_shape
        return 2 * k * (t + r) * self.real.itemsize

    def _apply_fused(self, x: np.ndarray, adjoint: bool) -> np.ndarray:
        op = self.operator
        n = op.shape[1]
        batch = x.shape[0]
        shape = (batch, *op.measurement_shape)
        if adjoint:
            # A^H y = conj(A_plain(conj y)) with the plain product sum_(k,t,r) a b y.
            y_real = np.ascontiguousarray(x.real).reshape(shape)
            y_imag = np.negative(x.imag).reshape(shape)
            out = np.empty((batch, n), dtype=self.dtype)
            for start, stop in self._chunks(self._table_bytes_per_voxel()):
                (ar, ai), (br, bi) = self.planes(start, stop)
                part_real = np.empty((batch, stop - start), dtype=self.real)
                part_imag = np.empty((batch, stop - start), dtype=self.real)
                _nearfield.adjoint_fused(ar, ai, br, bi, y_real, y_imag, part_real, part_imag)
                out.real[:, start:stop] = part_real
                np.negative(part_imag, out=out.imag[:, start:stop])
            return out
        y_real = np.zeros(shape, dtype=self.real)
        y_imag = np.zeros(shape, dtype=self.real)
        for start, stop in self._chunks(self._table_bytes_per_voxel()):
            (ar, ai), (br, bi) = self.planes(start, stop)
            x_real = np.ascontiguousarray(x.real[:, start:stop])
            x_imag = np.ascontiguousarray(x.imag[:, start:stop])
            _nearfield.forward_fused(ar, ai, br, bi, x_real, x_imag, y_real, y_imag)
        out = np.empty((batch, op.shape[0]), dtype=self.dtype)
        out.real = y_real.reshape(batch, -1)
        out.imag = y_imag.reshape(batch, -1)
        return out

    def _apply_tiles(self, x: np.ndarray, adjoint: bool) -> np.ndarray:
        r"""The 3M products with the tiles ``Re D``, ``Im D``, ``Re D + Im D`` of each chunk.

        With ``P_1 = u_r T_1``, ``P_2 = u_i T_2`` and ``P_3 = u_s T_3``: the adjoint
        ``y \bar D`` is ``P_1 + P_2 + i (P_3 + P_1 - P_2)`` for ``u_s = y_i - y_r``, the
        forward map ``x D^T`` is ``P_1 - P_2 + i (P_3 - P_1 - P_2)`` for ``u_s = x_r + x_i``
        (and the transposed tiles).
        """
        op = self.operator
        m, n = op.shape
        batch = x.shape[0]
        real = np.ascontiguousarray(x.real)
        imag = np.ascontiguousarray(x.imag)
        mixed = imag - real if adjoint else real + imag
        operands = (real, imag, mixed)
        tile_bytes = 3 * m * self.real.itemsize
        preferred = max(16, self.TILE_BYTES // tile_bytes // 16 * 16)
        per_voxel = tile_bytes + 3 * batch * self.real.itemsize
        if not op._tables_fit(self.dtype):
            per_voxel += self._table_bytes_per_voxel()
        if adjoint:
            out = np.empty((batch, n), dtype=self.dtype)
        else:
            sums = np.zeros((3, batch, m), dtype=self.real)
            product = np.empty((batch, m), dtype=self.real)
        tiles = None
        for start, stop in self._chunks(per_voxel, preferred):
            width = stop - start
            if tiles is None or tiles.shape[2] != width:
                tiles = np.empty((3, m, width), dtype=self.real)
            if op._tables_fit(self.dtype):
                (ar, ai), (br, bi) = self.planes(0, n)
                _nearfield.build_tiles(ar, ai, br, bi, start, stop, tiles)
            else:
                (ar, ai), (br, bi) = self.planes(start, stop)
                _nearfield.build_tiles(ar, ai, br, bi, 0, width, tiles)
            if adjoint:
                p1, p2, p3 = (u @ tile for u, tile in zip(operands, tiles, strict=True))
                np.add(p1, p2, out=out.real[:, start:stop])
                p3 += p1
                np.subtract(p3, p2, out=out.imag[:, start:stop])
            else:
                # (BLAS with beta = 1 through scipy.linalg.blas measured slower than this.)
                for operand, tile, total in zip(operands, tiles, sums, strict=True):
                    np.matmul(operand[:, start:stop], tile.T, out=product)
                    total += product
        if adjoint:
            return out
        p1, p2, p3 = sums
        out = np.empty((batch, m), dtype=self.dtype)
        np.subtract(p1, p2, out=out.real)
        p3 -= p1
        np.subtract(p3, p2, out=out.imag)
        return out


class _TorchCore:
    """The same applies on torch tensors (CPU or CUDA; differentiable)."""

    def __init__(self, operator: NearFieldMIMO, device: Any, dtype: np.dtype) -> None:
        self.operator = operator
        self.device = device
        self.dtype = dtype
        self.torch = backend.require_torch()
        self.torch_dtype = backend.torch_dtype(dtype)

    def tables(self, start: int, stop: int) -> tuple[Any, Any]:
        op, torch = self.operator, self.torch
        key = ("torch", str(self.device), self.dtype.name)
        if op._tables_fit(self.dtype):
            if key not in op._tables:
                a, b = op.factor_tables(dtype=self.dtype)
                op._tables[key] = tuple(torch.from_numpy(v).to(self.device) for v in (a, b))
            a, b = op._tables[key]
            return a[:, start:stop], b[:, start:stop]
        a, b = op.factor_tables(start, stop, dtype=self.dtype)
        return tuple(torch.from_numpy(v).to(self.device) for v in (a, b))

    def apply(self, x: Any, adjoint: bool) -> Any:
        op, torch = self.operator, self.torch
        k, t, r = op.measurement_shape
        n = op.shape[1]
        batch = x.shape[0]
        x = x.to(self.torch_dtype)
        chunk = op._chunk(batch, self.dtype)
        if adjoint:
            y = x.conj().reshape(batch, k, t, r).permute(1, 3, 0, 2).reshape(k, r, batch * t)
            parts = []
            for start in range(0, n, chunk):
                stop = min(n, start + chunk)
                a, b = self.tables(start, stop)
                z = torch.matmul(b, y).reshape(k, stop - start, batch, t)
                parts.append(torch.matmul(z, a[..., None])[..., 0].sum(dim=0).T)
            return torch.cat(parts, dim=1).conj().resolve_conj()
        y = None
        for start in range(0, n, chunk):
            stop = min(n, start + chunk)
            a, b = self.tables(start, stop)
            weighted = a[:, :, None, :] * x[:, start:stop].T[None, :, :, None]
            weighted = weighted.reshape(k, stop - start, batch * t)
            part = torch.matmul(weighted.transpose(1, 2), b)
            y = part if y is None else y + part
        return y.reshape(k, batch, t, r).permute(1, 0, 2, 3).reshape(batch, k * t * r)


def _positions(name: str, value: Any) -> np.ndarray:
    array = np.asarray(backend.to_numpy(value), dtype=np.float64)
    if array.ndim != 2 or array.shape[1] != 3 or array.shape[0] == 0:
        raise ValueError(f"{_NAME}: {name} has shape {array.shape}, expected (n, 3) positions")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{_NAME}: {name} has NaN or Inf entries")
    return _read_only(array)


def _distances(points: np.ndarray, antennas: np.ndarray) -> np.ndarray:
    return np.sqrt(((points[:, None, :] - antennas[None, :, :]) ** 2).sum(axis=-1))


def _check_grid_shape(where: str, grid_shape: Any) -> tuple[int, int, int]:
    shape = tuple(grid_shape) if isinstance(grid_shape, (tuple, list)) else None
    if shape is None or len(shape) != 3 or not all(_is_int(s) and s >= 1 for s in shape):
        raise ValueError(f"{where}: grid_shape={grid_shape!r}, expected three positive integers")
    return tuple(int(s) for s in shape)


def _read_only(array: np.ndarray) -> np.ndarray:
    array = np.ascontiguousarray(array)
    array.setflags(write=False)
    return array


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)
