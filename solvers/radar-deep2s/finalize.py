"""Tune the output threshold of a trained radar-deep2s on validation data, then write the model.

The network's sigmoid output is never exactly zero; on sparse scenes a faint background
costs much slice-SSIM (its constants are tiny). This script runs the trained checkpoint
once over the validation split of the training file, tries each threshold of a grid (a
voxel below it is set to zero), and keeps the one with the best mean slice-SSIM among
those whose mean PSNR is within 0.1 dB of the best PSNR on the grid. It prints the table
(per compression level too) and writes the model with that ``threshold`` in its config (a
complex-input model reads the file's ``backprojection_complex``)::

    python solvers/radar-deep2s/finalize.py runs/radar-deep2s/best.safetensors \\
        $PHYSNET_DATA/radar-mimo-mixed-complex.h5 --out physnet/pretrained/radar-deep2s.safetensors
"""

from __future__ import annotations

import argparse

import numpy as np

import physnet.datasets
import physnet.nn
from physnet.metrics import psnr, ssim
from physnet.nn.checkpoint import save

THRESHOLDS = (0.0, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.25)
PSNR_SLACK_DB = 0.1


def predict(model, data, batch_size: int = 8) -> tuple[np.ndarray, ...]:
    """Unthresholded outputs, targets and compression levels of every sample of ``data``."""
    import torch

    outputs, targets, levels = [], [], []
    for start in range(0, len(data), batch_size):
        samples = [data[i] for i in range(start, min(len(data), start + batch_size))]
        if model.input == "complex":  # (B, 2, X, Y, Z) real and imaginary channels
            backprojection = torch.from_numpy(
                np.stack([s["backprojection_complex"] for s in samples])
            )
        else:
            backprojection = torch.from_numpy(np.stack([s["backprojection"] for s in samples]))
            backprojection = backprojection[:, None]
        n_frequencies = torch.tensor([float(s["n_frequencies"]) for s in samples])
        grid = backprojection.shape[2:]
        channels = [backprojection]
        if "n_frequencies" in model.conditions:
            channels.append(n_frequencies.reshape(-1, 1, 1, 1, 1).expand(-1, 1, *grid))
        with torch.no_grad():
            outputs.append(model(torch.cat(channels, dim=1))[:, 0].numpy())
        targets.append(np.stack([s["target"] for s in samples]))
        levels.append(n_frequencies.numpy())
    return np.concatenate(outputs), np.concatenate(targets), np.concatenate(levels)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("data", help="the training file (its validation split is used)")
    parser.add_argument("--split", default="val")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    model = physnet.nn.load(args.checkpoint).eval()
    model.threshold = 0.0
    data = physnet.datasets.open(args.data, split=args.split)
    outputs, targets, levels = predict(model, data)
    rows = []
    for threshold in THRESHOLDS:
        cut = np.where(outputs >= threshold, outputs, 0.0)
        rows.append(
            (threshold, float(np.mean(psnr(cut, targets))), float(np.mean(ssim(cut, targets))))
        )
    best_psnr = max(row[1] for row in rows)
    chosen = max((row for row in rows if row[1] >= best_psnr - PSNR_SLACK_DB), key=lambda r: r[2])
    print(f"{len(data)} {args.split} volumes; threshold | PSNR | slice-SSIM")
    for threshold, p, s in rows:
        mark = "  <- chosen" if threshold == chosen[0] else ""
        print(f"{threshold:6.3f} | {p:6.2f} | {s:.3f}{mark}")
    print("per compression level at the chosen threshold (N_f | volumes | PSNR | slice-SSIM):")
    cut = np.where(outputs >= chosen[0], outputs, 0.0)
    for level in np.unique(levels):
        index = levels == level
        level_psnr = np.mean(psnr(cut[index], targets[index]))
        level_ssim = np.mean(ssim(cut[index], targets[index]))
        print(f"{int(level):3d} | {int(index.sum()):4d} | {level_psnr:6.2f} | {level_ssim:.3f}")
    config = dict(model.config, threshold=float(chosen[0]))
    final = physnet.nn.create(model.name, **config)
    final.load_state_dict(model.state_dict())
    save(final, args.out, metadata={"threshold_search": repr(THRESHOLDS), "tuned_on": args.split})
    print(f"wrote {args.out} (threshold {chosen[0]})")


if __name__ == "__main__":
    main()
