"""A stable-by-construction leapfrog prior for wave surrogates, measured on the data.

The frame map ``u_{n+1} + u_{n-1} = A u_n`` is stable for any symmetric ``A`` with spectrum
in ``[-2, 2]``. This script builds the classical such ``A`` from the speed map alone (no
learning): ``M = -div(c^2 grad)`` on the 64x64 cell-centred grid in conservative form
(face coefficients the mean of ``c^2`` of the two cells, zero across hole walls: Neumann),
``A = 2 T_m(I - (tau/m)^2 M / 2)`` with ``T_m`` the Chebyshev polynomial (exactly ``m``
leapfrog sub-steps per frame; ``m`` is the smallest one whose sub-step meets the
Gershgorin bound of ``M``, so ``|A| <= 2``), and a damping band of ``--pad`` cells outside
the domain: ``(1 + g) u_{n+1} = A u_n - (1 - g) u_{n-1}`` with ``g >= 0`` rising
quadratically to ``sigma tau / 2`` at the outer edge. The discrete energy
``u_{n+1}^2 + u_n^2 - u_{n+1} A u_n`` then never grows, whatever ``c``.

It reports the teacher-forced one-step nRMSE (frames 3..39) and the rollout nRMSE from
frames 2 and 3 of each trajectory (solvers/wave-stencil/card.md)::

    python solvers/wave-stencil/fd_prior.py $PHYSNET_DATA/wave2d-rollout.h5 --scenes 16
"""

from __future__ import annotations

import argparse
import math

import numpy as np

FRAME_INTERVAL = 0.02  # datasets/wave2d: frame_interval
STEPS = (1, 10, 50, 100, 200)


def leapfrog_prior(speed, pad: int, sigma: float, spacing: float, safety: float = 0.95):
    """The frame step ``(u_{n-1}, u_n) -> u_{n+1}`` on the padded grid, and ``m``."""
    import torch
    import torch.nn.functional as F

    padded = F.pad(speed[:, None], (pad,) * 4, mode="replicate")[:, 0] if pad else speed
    hole = padded == 0
    c2 = padded**2
    wx = torch.where(hole[:, :, 1:] | hole[:, :, :-1], 0, (c2[:, :, 1:] + c2[:, :, :-1]) / 2)
    wy = torch.where(hole[:, 1:] | hole[:, :-1], 0, (c2[:, 1:] + c2[:, :-1]) / 2)
    wx, wy = wx / spacing**2, wy / spacing**2

    def operator(u):
        fx, fy = wx * (u[:, :, 1:] - u[:, :, :-1]), wy * (u[:, 1:] - u[:, :-1])
        return (
            F.pad(fx, (1, 0))
            - F.pad(fx, (0, 1))
            + F.pad(fy, (0, 0, 1, 0))
            - F.pad(fy, (0, 0, 0, 1))
        )

    diagonal = (
        F.pad(wx, (1, 0)) + F.pad(wx, (0, 1)) + F.pad(wy, (0, 0, 1, 0)) + F.pad(wy, (0, 0, 0, 1))
    )
    bound = 2 * diagonal.max().item()  # Gershgorin: the spectrum of M lies in [0, bound]
    substeps = max(1, math.ceil(FRAME_INTERVAL * math.sqrt(bound) / 2 / safety))
    dt = FRAME_INTERVAL / substeps
    n = padded.shape[-1]
    distance = torch.zeros(n, dtype=speed.dtype)
    if pad:
        r = torch.arange(pad, dtype=speed.dtype)
        distance[:pad], distance[-pad:] = ((pad - r) / pad) ** 2, ((r + 1) / pad) ** 2
    damping = sigma * torch.maximum(distance[:, None], distance[None, :]) * FRAME_INTERVAL / 2

    def half_step(u):
        return u - 0.5 * dt**2 * operator(u)

    def step(previous, current):
        t0, t1 = current, half_step(current)
        for _ in range(substeps - 1):  # Chebyshev recurrence: t1 = T_m(B) current
            t0, t1 = t1, 2 * half_step(t1) - t0
        following = (2 * t1 - (1 - damping) * previous) / (1 + damping)
        return torch.where(hole, 0, following)

    return step, substeps


def nrmse(prediction, target) -> float:
    error = (prediction - target).flatten(1).norm(dim=1)
    return (error / target.flatten(1).norm(dim=1)).mean().item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", help="a wave2d store with >= 204 frames (rollout.toml)")
    parser.add_argument("--scenes", type=int, default=16)
    parser.add_argument("--pad", type=int, nargs="+", default=[0, 16, 32])
    parser.add_argument("--sigma", type=float, default=20.0, help="damping rate at the edge")
    args = parser.parse_args()
    import h5py
    import torch

    torch.set_num_threads(1)
    with h5py.File(args.data, "r") as store:
        speed = torch.tensor(store["speed"][: args.scenes], dtype=torch.float64)
        frames = torch.tensor(store["frames"][: args.scenes], dtype=torch.float64)
    spacing = 1.0 / speed.shape[-1]
    persistence = np.mean([nrmse(frames[:, n], frames[:, n + 1]) for n in range(3, 40)])
    print(f"{len(speed)} scenes; persistence one-step nRMSE {persistence:.3f}")
    for pad in args.pad:
        step, substeps = leapfrog_prior(speed, pad, args.sigma if pad else 0.0, spacing)

        def widen(u, pad=pad):
            return torch.nn.functional.pad(u, (pad,) * 4) if pad else u

        def crop(u, pad=pad):
            return u[:, pad:-pad, pad:-pad] if pad else u

        one = [
            nrmse(crop(step(widen(frames[:, n - 1]), widen(frames[:, n]))), frames[:, n + 1])
            for n in range(3, 40)
        ]
        previous, current = widen(frames[:, 2]), widen(frames[:, 3])
        rollout = {}
        for k in range(1, max(STEPS) + 1):
            previous, current = current, step(previous, current)
            if k in STEPS:
                rollout[k] = round(nrmse(crop(current), frames[:, 3 + k]), 3)
        energy = (crop(current) ** 2).sum() / (frames[:, 3 + max(STEPS)] ** 2).sum()
        print(
            f"pad {pad:2d} (sigma {args.sigma if pad else 0:g}), {substeps} sub-steps: one-step "
            f"{np.mean(one):.3f}, rollout {rollout}, energy ratio at step 200 {energy:.3g}",
            flush=True,
        )


if __name__ == "__main__":
    main()
