"""Train and compare the paper's Deep2S variants at the same data and budget, 3 seeds each.

Each variant is ``variants.toml`` (the 3-D U-Net of the shipped model) with overrides:

- ``unet3d``: 3-D U-Net, 16/32/64, magnitude input;
- ``unet2d``: the same U-Net with 3x3x1 kernels (2-D convolutions per depth slice);
- ``resnet``: the ResNet variant (9 convolutions 3x3x3 at 16 channels, input skip);
- ``cv-unet3d``: the 3-D U-Net on ``A^H y`` as real and imaginary channels (CV-Deep2S).

All of them see the same 1,200 training scenes (``datasets/radar-mimo-mixed/variants.toml``)
for one epoch (300 steps of batch 4), conditioned on N_f. Runs that finished are reused and
interrupted ones resumed. The checkpoints are copied to ``<out>/models/<variant>-s<seed>``
and scored together by ``benchmarks/radar.py`` (same test volumes, tuned baselines from its
cache); the per-variant mean +- std over seeds goes to
``benchmarks/results/radar-variants.md``::

    python solvers/radar-deep2s/variants.py --out $PHYSNET_DATA/runs/radar-variants
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
CONFIG = HERE / "variants.toml"
VARIANTS = {
    "unet3d": [],
    "unet2d": [
        "model.backbone_config={channels = [16, 32, 64], head_channels = 32, kernel = '2d', "
        "batch_norm = true, output = 'sigmoid'}"
    ],
    "resnet": [
        "model.backbone='resnet3d'",
        "model.backbone_config={hidden_channels = 16, n_layers = 9}",
    ],
    "cv-unet3d": [
        "model.input='complex'",
        "data.inputs=['backprojection_complex', 'n_frequencies']",
    ],
}
SEEDS = (0, 1, 2)
SETTINGS = "nf15-snr30,nf15-snr30-heldout"
METRICS = ("psnr", "ssim", "support_psnr", "false_alarm_energy")


def train(variant: str, seed: int, out: Path, threads: int) -> Path:
    """Train (or resume, or reuse) one run; return its best checkpoint."""
    run = out / "runs" / f"{variant}-s{seed}"
    best = run / "best.safetensors"
    finished = run / "metrics.jsonl"
    if best.exists() and finished.exists() and _epochs_done(finished) >= 1:
        return best
    command = [
        sys.executable, "-m", "physnet.cli", "train", str(CONFIG), "--out", str(run),
        "--set", f"training.seed={seed}", *[f"--set={item}" for item in VARIANTS[variant]],
    ]  # fmt: skip
    if (run / "last.state.safetensors").exists():
        command.append("--resume")
    environment = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    print("$", " ".join(command), flush=True)
    subprocess.run(command, check=True, env=environment)
    return best


def _epochs_done(metrics: Path) -> int:
    lines = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    return sum(1 for line in lines if "val_loss" in line or line.get("kind") == "epoch")


def summarise(results: dict, labels: dict[str, list[str]]) -> str:
    """Markdown: one row per variant and setting, mean +- std over the seeds' means."""
    seeds = len(next(iter(labels.values())))
    lines = [
        f"# Deep2S variants at equal data and budget ({seeds} seeds)",
        "",
        f"Machine: {results['machine']['cpu']}, {results['machine']['cores']} cores, torch "
        f"{results['machine'].get('torch')}; threads: {results['threads']}.",
        "",
        "Command: `python solvers/radar-deep2s/variants.py` (training: 1,200 mixed scenes, "
        "N_f 5-30, 10-30 dB, 1 epoch = 300 steps of batch 4, L1 + slice-SSIM; scoring: "
        f"`{results['command']}`). Each cell is the mean +- std over {seeds} seeds of the "
        "per-seed mean over the test volumes.",
        "",
        "| setting | variant | PSNR dB | slice-SSIM | support PSNR dB | FA energy | ms/volume |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for name, report in results["settings"].items():
        methods = report["methods"]
        for reference in ("zeros", "admm-tv", "tikhonov-cg"):
            row = methods[reference]["metrics"]
            cells = " | ".join(f"{row[m]['mean']:.3f}" for m in METRICS)
            time = methods[reference]["ms_per_volume"]
            label = reference if reference == "zeros" else f"{reference} (tuned)"
            lines.append(f"| {name} | {label} | {cells} | {time:.1f} |")
        for variant, members in labels.items():
            rows = [methods[f"learned:{label}"] for label in members]
            cells = []
            for metric in METRICS:
                values = np.array([row["metrics"][metric]["mean"] for row in rows])
                cells.append(f"{values.mean():.3f} ± {values.std():.3f}")
            time = np.median([row["ms_per_volume"] for row in rows])
            lines.append(f"| {name} | {variant} | {' | '.join(cells)} | {time:.1f} |")
    return "\n".join(lines) + "\n"


def labels_of(variants: list[str], seeds: list[int]) -> dict[str, list[str]]:
    return {variant: [f"{variant}-s{seed}" for seed in seeds] for variant in variants}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="run folder")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--seeds", default=",".join(map(str, SEEDS)), help="seeds (0,1,2)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--bench-out", type=Path, default=None,
        help="benchmarks/radar.py --out (its cache of tuned baselines; default <out>/bench)",
    )  # fmt: skip
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks/results")
    args = parser.parse_args()
    variants = [name for name in args.variants.split(",") if name]
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        parser.error(f"unknown variants {unknown}; expected among {list(VARIANTS)}")
    models = args.out / "models"
    models.mkdir(parents=True, exist_ok=True)
    labels: dict[str, list[str]] = {}
    seeds = [int(seed) for seed in args.seeds.split(",") if seed]
    for seed in seeds:  # seed-major: every variant has a first seed early
        for variant in variants:
            best = train(variant, seed, args.out, args.threads)
            label = f"{variant}-s{seed}"
            shutil.copyfile(best, models / f"{label}.safetensors")
            labels.setdefault(variant, []).append(label)
    bench = args.bench_out or args.out / "bench"
    paths = [str(models / f"{label}.safetensors") for group in labels.values() for label in group]
    command = [
        sys.executable, str(ROOT / "benchmarks/radar.py"), "--settings", SETTINGS,
        "--models", ",".join(paths), "--out", str(bench), "--threads", str(args.threads),
    ]  # fmt: skip
    print("$", " ".join(command), flush=True)
    subprocess.run(command, check=True)
    results = json.loads((bench / "radar.json").read_text())
    from physnet._io import write_text

    args.results.mkdir(parents=True, exist_ok=True)
    write_text(args.results / "radar-variants.md", summarise(results, labels))
    print((args.results / "radar-variants.md").read_text())


if __name__ == "__main__":
    main()
