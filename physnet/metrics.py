"""Image-quality metrics of reconstructed volumes, as the radar literature defines them.

``psnr``
    ``10 log10(peak^2 / mean((estimate - reference)^2))`` over the whole volume, with a
    fixed ``peak`` (1 for magnitudes in [0, 1]: TensorFlow's ``tf.image.psnr(max_val=1)``
    that Deep2S reports).
``ssim``
    Deep2S's SSIM: ``tf.image.ssim`` on ``(X, Y, Z)`` volumes reads them as ``X x Y`` images
    with ``Z`` channels, so it is the **2-D SSIM of each x-y slice** (11 x 11 Gaussian window,
    sigma 1.5, ``k1 = 0.01``, ``k2 = 0.03``, valid filtering: a 25 x 25 slice gives a 15 x 15
    map) **averaged over the z slices**.
``ssim3d``
    A true 3-D SSIM: the same statistics with an 11 x 11 x 11 Gaussian window, valid
    filtering, averaged over the map.

Whole-volume figures are dominated by the empty background of sparse scenes (an all-zero
volume scores well on both). Three figures separate the target from the background, with
the *support* the voxels where the reference is positive, optionally dilated by
``dilation`` voxels (26-neighbourhood: a voxel joins if any of the 3 x 3 x 3 voxels around
it is in the support), so that blur at a target's rim is not counted as a false alarm:

``support_psnr``
    PSNR over the support only.
``false_alarm_energy``
    ``sum(estimate^2)`` off the support divided by ``sum(reference^2)``: energy put where
    there is nothing, relative to the scene's energy.
``false_alarm_fraction``
    The fraction of off-support voxels whose estimate exceeds a threshold (0.1).

Each takes NumPy arrays (or anything :func:`numpy.asarray` accepts) with the volume in the
last three axes and returns one value per volume (a float for a single volume).

Examples
--------
>>> import numpy as np
>>> from physnet.metrics import psnr, ssim
>>> reference = np.zeros((25, 25, 49)); reference[10:15, 10:15, 20:30] = 1.0
>>> float(ssim(reference, reference)), round(psnr(0.9 * reference, reference), 2)
(1.0, 40.88)
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.ndimage import binary_dilation, correlate1d

__all__ = [
    "false_alarm_energy",
    "false_alarm_fraction",
    "gaussian_window",
    "psnr",
    "ssim",
    "ssim3d",
    "support",
    "support_psnr",
]

K1, K2 = 0.01, 0.03


def gaussian_window(size: int = 11, sigma: float = 1.5) -> np.ndarray:
    """The normalised 1-D Gaussian window of ``size`` taps (TensorFlow's SSIM filter).

    Examples
    --------
    >>> w = gaussian_window()
    >>> w.shape, round(float(w.sum()), 12), int(np.argmax(w))
    ((11,), 1.0, 5)
    """
    if not isinstance(size, int) or size < 1:
        raise ValueError(f"gaussian_window: size={size!r}, expected a positive integer")
    if not sigma > 0:
        raise ValueError(f"gaussian_window: sigma={sigma!r}, expected a positive number")
    offsets = np.arange(size, dtype=np.float64) - (size - 1) / 2
    window = np.exp(-(offsets**2) / (2 * sigma**2))
    return window / window.sum()


def _pair(function: str, estimate: Any, reference: Any) -> tuple[np.ndarray, np.ndarray]:
    estimate = np.asarray(estimate, dtype=np.float64)
    reference = np.asarray(reference, dtype=np.float64)
    if estimate.shape != reference.shape:
        raise ValueError(
            f"{function}: estimate has shape {estimate.shape} and reference {reference.shape}; "
            "expected equal shapes"
        )
    if estimate.ndim < 3:
        raise ValueError(
            f"{function}: arrays have shape {estimate.shape}, expected (..., X, Y, Z) volumes"
        )
    if np.iscomplexobj(estimate) or not (
        np.all(np.isfinite(estimate)) and np.all(np.isfinite(reference))
    ):
        raise ValueError(f"{function}: arrays must be real and finite (take magnitudes first)")
    return estimate, reference


def _scalar(values: np.ndarray) -> Any:
    return float(values) if values.ndim == 0 else values


def psnr(estimate: Any, reference: Any, *, peak: float = 1.0) -> Any:
    """Peak signal-to-noise ratio in dB over each volume, with a fixed ``peak``.

    Parameters
    ----------
    estimate, reference : array_like, shape (..., X, Y, Z)
    peak : float, default 1.0
        The peak value (``max_val`` of ``tf.image.psnr``).

    Returns
    -------
    float or numpy.ndarray
        One value per volume; ``inf`` for identical volumes.
    """
    estimate, reference = _pair("psnr", estimate, reference)
    if not peak > 0:
        raise ValueError(f"psnr: peak={peak!r}, expected a positive number")
    mse = np.mean((estimate - reference) ** 2, axis=(-3, -2, -1))
    with np.errstate(divide="ignore"):
        return _scalar(10 * np.log10(peak**2 / mse))


def _ssim_map(x: np.ndarray, y: np.ndarray, axes: tuple[int, ...], window: np.ndarray, peak: float):
    def blur(a: np.ndarray) -> np.ndarray:
        for axis in axes:
            a = correlate1d(a, window, axis=axis, mode="constant")
            # keep the "valid" part: centres at least half a window from either edge
            half = window.size // 2
            index = [slice(None)] * a.ndim
            index[axis] = slice(half, a.shape[axis] - (window.size - 1 - half))
            a = a[tuple(index)]
        return a

    c1, c2 = (K1 * peak) ** 2, (K2 * peak) ** 2
    mu_x, mu_y = blur(x), blur(y)
    sigma_xx = blur(x * x) - mu_x**2
    sigma_yy = blur(y * y) - mu_y**2
    sigma_xy = blur(x * y) - mu_x * mu_y
    luminance = (2 * mu_x * mu_y + c1) / (mu_x**2 + mu_y**2 + c1)
    structure = (2 * sigma_xy + c2) / (sigma_xx + sigma_yy + c2)
    return luminance * structure


def _check_window(function: str, shape: tuple[int, ...], axes, size: int) -> None:
    small = [shape[a] for a in axes if shape[a] < size]
    if small:
        raise ValueError(
            f"{function}: volumes of shape {shape[-3:]} are smaller than the {size}-point "
            "window along an axis"
        )


def ssim(
    estimate: Any,
    reference: Any,
    *,
    peak: float = 1.0,
    window_size: int = 11,
    sigma: float = 1.5,
) -> Any:
    """Deep2S's SSIM: 2-D SSIM of every x-y slice, averaged over z (``tf.image.ssim``).

    Parameters
    ----------
    estimate, reference : array_like, shape (..., X, Y, Z)
    peak : float, default 1.0
        Dynamic range ``L`` (``max_val``): ``C1 = (0.01 L)^2``, ``C2 = (0.03 L)^2``.
    window_size : int, default 11
    sigma : float, default 1.5

    Returns
    -------
    float or numpy.ndarray
        One value per volume.

    Notes
    -----
    Per slice: local means, variances and covariance under the Gaussian window (valid
    positions only, population statistics), ``SSIM = l * cs`` averaged over the map; then
    the mean over the slices, exactly TensorFlow's per-channel mean.
    """
    estimate, reference = _pair("ssim", estimate, reference)
    _check_window("ssim", estimate.shape, (-3, -2), window_size)
    window = gaussian_window(window_size, sigma)
    axes = (estimate.ndim - 3, estimate.ndim - 2)
    values = _ssim_map(estimate, reference, axes, window, peak)
    return _scalar(values.mean(axis=(-3, -2, -1)))


def ssim3d(
    estimate: Any,
    reference: Any,
    *,
    peak: float = 1.0,
    window_size: int = 11,
    sigma: float = 1.5,
) -> Any:
    """3-D SSIM: the SSIM statistics under a separable 3-D Gaussian window, averaged.

    Same parameters as :func:`ssim`; the window spans ``window_size`` voxels along each
    axis (valid positions only).
    """
    estimate, reference = _pair("ssim3d", estimate, reference)
    _check_window("ssim3d", estimate.shape, (-3, -2, -1), window_size)
    window = gaussian_window(window_size, sigma)
    axes = tuple(estimate.ndim - 3 + i for i in range(3))
    values = _ssim_map(estimate, reference, axes, window, peak)
    return _scalar(values.mean(axis=(-3, -2, -1)))


def support(reference: Any, *, dilation: int = 0) -> np.ndarray:
    """The target support: ``reference > 0``, dilated by ``dilation`` voxels per volume.

    Parameters
    ----------
    reference : array_like, shape (..., X, Y, Z)
    dilation : int, default 0
        Voxels added around the support (each step adds the 26 neighbours, the
        3 x 3 x 3 cube, of every support voxel; volumes are dilated independently).

    Returns
    -------
    numpy.ndarray of bool, shape of ``reference``

    Examples
    --------
    >>> reference = np.zeros((1, 5, 5, 5)); reference[0, 2, 2, 2] = 0.5
    >>> int(support(reference).sum()), int(support(reference, dilation=1).sum())
    (1, 27)
    """
    reference = np.asarray(reference, dtype=np.float64)
    if reference.ndim < 3:
        raise ValueError(
            f"support: reference has shape {reference.shape}, expected (..., X, Y, Z) volumes"
        )
    if isinstance(dilation, bool) or not isinstance(dilation, (int, np.integer)) or dilation < 0:
        raise ValueError(f"support: dilation={dilation!r}, expected a non-negative integer")
    mask = reference > 0
    if dilation == 0:
        return mask
    structure = np.ones((1,) * (reference.ndim - 3) + (3, 3, 3), dtype=bool)
    return binary_dilation(mask, structure=structure, iterations=int(dilation))


def _support_pair(function: str, estimate: Any, reference: Any, dilation: int):
    estimate, reference = _pair(function, estimate, reference)
    return estimate, reference, support(reference, dilation=dilation)


def support_psnr(estimate: Any, reference: Any, *, peak: float = 1.0, dilation: int = 0) -> Any:
    """PSNR in dB over the target support only (see :func:`support`).

    ``10 log10(peak^2 / mean((estimate - reference)^2 over the support))``: how well the
    targets themselves are reconstructed, whatever happens in the background.

    Parameters
    ----------
    estimate, reference : array_like, shape (..., X, Y, Z)
    peak : float, default 1.0
    dilation : int, default 0
        Dilate the support by this many voxels (26-neighbourhood).

    Returns
    -------
    float or numpy.ndarray
        One value per volume; ``inf`` where the estimate is exact on the support, ``nan``
        for a reference without support.

    Examples
    --------
    >>> reference = np.zeros((4, 4, 4)); reference[1:3, 1:3, 1:3] = 1.0
    >>> estimate = 0.9 * reference; estimate[0, 0, 0] = 1.0   # off-support error ignored
    >>> round(support_psnr(estimate, reference), 2)
    20.0
    """
    estimate, reference, mask = _support_pair("support_psnr", estimate, reference, dilation)
    if not peak > 0:
        raise ValueError(f"support_psnr: peak={peak!r}, expected a positive number")
    axes = (-3, -2, -1)
    count = mask.sum(axis=axes)
    squared = np.where(mask, (estimate - reference) ** 2, 0.0).sum(axis=axes)
    with np.errstate(divide="ignore", invalid="ignore"):
        mse = squared / count
        return _scalar(np.where(count > 0, 10 * np.log10(peak**2 / mse), np.nan))


def false_alarm_energy(estimate: Any, reference: Any, *, dilation: int = 0) -> Any:
    """Energy off the target support relative to the scene's energy.

    ``sum(estimate^2 off the support) / sum(reference^2)``, the support as in
    :func:`support`: 0 for a clean background, 1 when the background holds as much
    energy as the whole scene.

    Parameters
    ----------
    estimate, reference : array_like, shape (..., X, Y, Z)
    dilation : int, default 0
        Dilate the support by this many voxels (26-neighbourhood) before taking its
        complement.

    Returns
    -------
    float or numpy.ndarray
        One value per volume (``nan`` or ``inf`` for an all-zero reference).

    Examples
    --------
    >>> reference = np.zeros((4, 4, 4)); reference[1:3, 1:3, 1:3] = 1.0   # energy 8
    >>> estimate = reference.copy(); estimate[0, 0, 0] = 2.0; estimate[3, 3, 3] = 1.0
    >>> false_alarm_energy(estimate, reference)
    0.625
    >>> false_alarm_energy(estimate, reference, dilation=1)   # the rim is not background
    0.0
    """
    estimate, reference, mask = _support_pair("false_alarm_energy", estimate, reference, dilation)
    axes = (-3, -2, -1)
    off = np.where(mask, 0.0, estimate**2).sum(axis=axes)
    with np.errstate(divide="ignore", invalid="ignore"):
        return _scalar(off / (reference**2).sum(axis=axes))


def false_alarm_fraction(
    estimate: Any, reference: Any, *, threshold: float = 0.1, dilation: int = 0
) -> Any:
    """The fraction of off-support voxels whose estimate exceeds ``threshold``.

    Parameters
    ----------
    estimate, reference : array_like, shape (..., X, Y, Z)
    threshold : float, default 0.1
        In the units of the estimate (10 % of the peak for magnitudes in [0, 1]).
    dilation : int, default 0
        Dilate the support by this many voxels (26-neighbourhood) before taking its
        complement.

    Returns
    -------
    float or numpy.ndarray
        One value per volume (``nan`` if the support fills the volume).

    Examples
    --------
    >>> reference = np.zeros((4, 4, 4)); reference[1:3, 1:3, 1:3] = 1.0   # 56 voxels off
    >>> estimate = reference.copy(); estimate[0, 0, :] = [0.05, 0.2, 0.5, 0.1]
    >>> round(false_alarm_fraction(estimate, reference), 6) == round(2 / 56, 6)
    True
    """
    estimate, reference, mask = _support_pair("false_alarm_fraction", estimate, reference, dilation)
    axes = (-3, -2, -1)
    alarms = (~mask & (estimate > threshold)).sum(axis=axes)
    with np.errstate(divide="ignore", invalid="ignore"):
        return _scalar(alarms / (~mask).sum(axis=axes))
