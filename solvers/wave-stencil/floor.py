"""How accurate can a linear stencil surrogate be? Least-squares stencils on the data.

For each of the first scenes of a ``wave2d`` store, fit by least squares (in sample, frames
``0 .. frames - 1``) the stencils that map the last ``history`` frames to the next one:
one ``k x k`` stencil per history frame for the whole scene, and one per ``tile x tile``
tile of the grid. The one-step nRMSE of the fits bounds what a perfect hypernetwork of
``physnet.nn.WaveStencil`` could reach (solvers/wave-stencil/card.md)::

    python solvers/wave-stencil/floor.py $PHYSNET_DATA/wave2d-rollout.h5 --scenes 4
"""

from __future__ import annotations

import argparse

import numpy as np


def floors(frames: np.ndarray, history: int, k: int, tile: int) -> tuple[float, float]:
    """One-step nRMSE of the per-scene and the per-tile least-squares stencils."""
    import torch
    import torch.nn.functional as F

    u = torch.from_numpy(frames).double()
    n, size = u.shape[0], u.shape[-1]
    patches = torch.stack(
        [F.unfold(u[None, t - history : t], k, padding=k // 2)[0] for t in range(history, n)]
    )  # (steps, history * k * k, size * size)
    target = u[history:].reshape(n - history, -1)

    def error(prediction) -> float:
        return ((prediction - target).norm(dim=1) / target.norm(dim=1)).mean().item()

    rows = patches.permute(0, 2, 1).reshape(-1, patches.shape[1])
    scene = (rows @ torch.linalg.lstsq(rows, target.reshape(-1)).solution).reshape(target.shape)
    tiled = torch.zeros_like(target)
    index = torch.arange(size * size).reshape(size, size)
    for a in range(0, size, tile):
        for b in range(0, size, tile):
            pixels = index[a : a + tile, b : b + tile].reshape(-1)
            X = patches[:, :, pixels].permute(0, 2, 1).reshape(-1, patches.shape[1])
            y = target[:, pixels].reshape(-1)
            tiled[:, pixels] = (X @ torch.linalg.lstsq(X, y).solution).reshape(n - history, -1)
    return error(scene), error(tiled)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", help="a wave2d store, e.g. $PHYSNET_DATA/wave2d-rollout.h5")
    parser.add_argument("--scenes", type=int, default=4)
    parser.add_argument("--frames", type=int, default=64)
    parser.add_argument("--histories", default="2,4")
    parser.add_argument("--stencil", type=int, default=9)
    parser.add_argument("--tile", type=int, default=8)
    args = parser.parse_args()
    import h5py

    with h5py.File(args.data, "r") as store:
        frames = store["frames"][: args.scenes, : args.frames]
    print("history | per-scene stencil | per-tile stencils   (one-step nRMSE per scene)")
    for history in (int(h) for h in args.histories.split(",")):
        results = [floors(f, history, args.stencil, args.tile) for f in frames]
        scene = " ".join(f"{r[0]:.3f}" for r in results)
        tiled = " ".join(f"{r[1]:.3f}" for r in results)
        print(f"{history} | {scene} | {tiled}", flush=True)


if __name__ == "__main__":
    main()
