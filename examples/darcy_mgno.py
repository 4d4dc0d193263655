"""Predict Darcy flow with the pretrained MgNO and plot coefficient, truth, prediction, error.
===========================================================================================

A fresh permeability field is drawn with the ``darcy-smooth`` generator (a thresholded
Gaussian random field, a ∈ {3, 12}; a seed the shipped model never saw), the reference
pressure is solved by finite differences (``physnet.datasets._darcy.darcy_solve``), and the
shipped ``mgno-darcy-smooth-64`` network predicts it in one forward pass. Runs in a few
seconds on a laptop CPU, and writes ``out/darcy_mgno/darcy_mgno.png``::

    python examples/darcy_mgno.py [--size 64] [--seed 2024] [--out out/darcy_mgno]

``--size 128`` evaluates the same network, trained at 64², on a 128² grid.
"""

import argparse
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch

import physnet.nn
from physnet.datasets.generate import get_generator, sample_of
from physnet.training.losses import relative_h1, relative_l2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=64, help="grid points per side")
    parser.add_argument("--seed", type=int, default=2024, help="seed of the fresh sample")
    parser.add_argument("--model", default="mgno-darcy-smooth-64", help="pretrained name or file")
    parser.add_argument("--out", default="out/darcy_mgno", help="output folder")
    args = parser.parse_args()

    generator = get_generator("darcy-smooth")
    config = generator.check_config({"size": args.size})
    start = time.perf_counter()
    sample = sample_of(generator, config, seed=args.seed, index=0)
    solve_s = time.perf_counter() - start

    model = physnet.nn.load(args.model).eval()
    coefficient = torch.from_numpy(sample["coefficient"])[None, None]
    truth = torch.from_numpy(sample["solution"])[None, None]
    with torch.no_grad():
        model(coefficient)  # warm-up: the first call allocates
        start = time.perf_counter()
        prediction = model(coefficient)
        predict_s = time.perf_counter() - start
    l2 = relative_l2(prediction, truth).item()
    h1 = relative_h1(prediction, truth).item()
    print(
        f"{args.size}x{args.size}: relative L2 {l2:.4f}, relative H1 {h1:.4f}; finite-difference "
        f"solve (with the field) {1000 * solve_s:.1f} ms, MgNO prediction {1000 * predict_s:.1f} ms"
    )

    panels = [
        ("coefficient a", sample["coefficient"], "viridis"),
        ("truth u (finite differences)", sample["solution"], "magma"),
        ("MgNO prediction", prediction[0, 0].numpy(), "magma"),
        ("error (prediction − truth)", (prediction - truth)[0, 0].numpy(), "RdBu_r"),
    ]
    figure, axes = plt.subplots(1, 4, figsize=(16, 4), constrained_layout=True)
    limits = (0.0, float(max(sample["solution"].max(), panels[2][1].max())))
    for axis, (title, image, colormap) in zip(axes, panels, strict=True):
        if colormap == "RdBu_r":
            bound = float(np.abs(image).max())
            shown = axis.imshow(image, cmap=colormap, vmin=-bound, vmax=bound, origin="lower")
        elif colormap == "magma":
            shown = axis.imshow(
                image, cmap=colormap, vmin=limits[0], vmax=limits[1], origin="lower"
            )
        else:
            shown = axis.imshow(image, cmap=colormap, origin="lower")
        axis.set_title(title)
        axis.set_xticks([])
        axis.set_yticks([])
        figure.colorbar(shown, ax=axis, shrink=0.8)
    figure.suptitle(
        f"Darcy flow, {args.size}×{args.size}, fresh sample (seed {args.seed}): relative L2 "
        f"{100 * l2:.2f}%, H1 {100 * h1:.2f}%"
    )
    out = Path(args.out) / "darcy_mgno.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=100)
    print(f"figure: {out}")


if __name__ == "__main__":
    main()
