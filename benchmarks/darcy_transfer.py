"""Darcy resolution transfer: trained operators evaluated on grids they were not trained on.

Every model is evaluated without retraining on the smooth-Darcy test sets at 64² (the test
split of ``darcy-smooth-64.h5``), 128² and 256² (``generate-128.toml``, ``generate-256.toml``:
fresh samples, seeds 1 and 2), relative L2 and relative H1 (physnet's non-periodic
finite-difference H1), mean over the samples, then mean ± std over the checkpoints given for
a model (its seeds). Rows:

- ``--model LABEL=CKPT[,CKPT...]``: checkpoints as they are (an MgNO trained with
  ``reference_grid`` transfers by itself; one without runs the reference network);
- ``--consistent LABEL=CKPT[,...]``: MgNO checkpoints switched to resolution-consistent
  mode after training (``set_reference_grid(64)``), the zero-shot twin of mixed training;
- ``--coarsen LABEL=CKPT[,...]``: the trivial transfer baseline: the fine input sampled at
  the model's 64² nodes (nearest node), the prediction interpolated back (bicubic);
- ``--symmetrize LABEL=CKPT[,...]``: checkpoints as they are, averaged over the eight
  symmetries of the square (``physnet.nn.SymmetryAverage``, exact for this Darcy problem;
  8 forward passes per sample).

The ratio column is the 128² and 256² error over the model's own 64² error (the issue-16
target: ≤ 2 for the resolution-consistent model). Run, e.g.::

    python benchmarks/darcy_transfer.py --model mgno=mgno-darcy-smooth-64 \\
        --coarsen mgno-coarsened=mgno-darcy-smooth-64

Results go to ``benchmarks/results/darcy-transfer.{md,json}`` (``--out`` for another stem).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

from _common import machine, write_results

ROOT = Path(__file__).resolve().parents[1]
RECIPES = {
    64: ("darcy-smooth-64.h5", "generate.toml", "test"),
    128: ("darcy-smooth-128-test.h5", "generate-128.toml", None),
    256: ("darcy-smooth-256-test.h5", "generate-256.toml", None),
}
TRAINED_GRID = 64
KINDS = ("model", "consistent", "coarsen", "symmetrize")


def data_directory() -> Path:
    return Path(os.environ.get("PHYSNET_DATA", Path("~/.cache/physnet").expanduser()))


def load_sets(limit: int | None) -> dict:
    import torch

    from physnet.datasets import open as open_dataset
    from physnet.datasets.generate import generate

    sets = {}
    for grid, (name, recipe, split) in RECIPES.items():
        path = data_directory() / name
        if not path.exists():
            print(f"generating {path}", flush=True)
            path.parent.mkdir(parents=True, exist_ok=True)
            generate(ROOT / "datasets" / "darcy-smooth" / recipe, path, workers=2)
        data = open_dataset(path, split=split)
        count = len(data) if limit is None else min(limit, len(data))
        samples = [data[i] for i in range(count)]
        x = torch.stack([torch.as_tensor(s["coefficient"]) for s in samples]).float()
        y = torch.stack([torch.as_tensor(s["solution"]) for s in samples]).float()
        sets[grid] = (x.reshape(count, 1, grid, grid), y.reshape(count, 1, grid, grid))
    return sets


class Coarsened:
    """Sample the input at the trained grid's nodes, predict, interpolate back (bicubic)."""

    def __init__(self, model) -> None:
        self.model = model

    def __call__(self, x):
        import torch
        import torch.nn.functional as F

        n = x.shape[-1]
        if n == TRAINED_GRID:
            return self.model(x)
        nodes = torch.round(torch.linspace(0, n - 1, TRAINED_GRID)).long()
        coarse = self.model(x[..., nodes, :][..., nodes])
        fine = F.interpolate(coarse, size=x.shape[-2:], mode="bicubic", align_corners=True)
        return F.pad(fine[..., 1:-1, 1:-1], (1, 1, 1, 1))  # the Dirichlet boundary stays 0


def errors(model, sets: dict) -> dict:
    import torch

    from physnet.training import relative_h1, relative_l2

    result = {}
    with torch.no_grad():
        for grid, (x, y) in sets.items():
            prediction = torch.cat([model(batch) for batch in x.split(10)])
            result[grid] = {
                "relative_l2": relative_l2(prediction, y).item(),
                "relative_h1": relative_h1(prediction, y).item(),
            }
    return result


def build(kind: str, checkpoint: str):
    import physnet.nn

    model = physnet.nn.load(checkpoint).eval()
    if kind == "consistent":
        model.set_reference_grid(TRAINED_GRID)
    if kind == "symmetrize":
        return physnet.nn.SymmetryAverage(model, "d4")
    return Coarsened(model) if kind == "coarsen" else model


def summarise(runs: list[dict]) -> dict:
    summary = {}
    for grid in runs[0]:
        for metric in runs[0][grid]:
            values = [run[grid][metric] for run in runs]
            spread = statistics.stdev(values) if len(values) > 1 else 0.0
            summary[f"{grid}_{metric}"] = (statistics.mean(values), spread)
    return summary


def markdown(report: dict) -> str:
    lines = [
        "# Darcy resolution transfer (smooth Darcy, zero-shot at 128² and 256²)",
        "",
        "Relative errors ×10⁻², mean ± std over the checkpoints (seeds) of a row; test sets: "
        f"{report['samples']} samples per grid. Ratio: error at 128² / 256² over the 64² "
        "error.",
        "",
        "| model | seeds | 64² L2 | 64² H1 | 128² L2 | 128² H1 | 256² L2 | 256² H1 | "
        "L2 ratio 128² / 256² |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in report["rows"]:
        s = row["summary"]

        def cell(key, s=s, seeds=row["seeds"]):
            mean, spread = s[key]
            return f"{100 * mean:.2f} ± {100 * spread:.2f}" if seeds > 1 else f"{100 * mean:.2f}"

        ratios = [s[f"{g}_relative_l2"][0] / s["64_relative_l2"][0] for g in (128, 256)]
        cells = [cell(f"{g}_{m}") for g in (64, 128, 256) for m in ("relative_l2", "relative_h1")]
        lines.append(
            f"| {row['label']} ({row['kind']}) | {row['seeds']} | {' | '.join(cells)} | "
            f"{ratios[0]:.2f} / {ratios[1]:.2f} |"
        )
    m = report["machine"]
    lines += ["", f"Machine: {m['cpu']}, {m['cores']} cores; torch threads {report['threads']}."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for kind in KINDS:
        parser.add_argument(f"--{kind}", action="append", default=[], metavar="LABEL=CKPT,...")
    parser.add_argument("--samples", type=int, default=None, help="per grid (default: all)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "darcy-transfer"))
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    entries = [(kind, spec) for kind in KINDS for spec in getattr(args, kind)]
    if not entries:
        parser.error("give at least one of " + ", ".join(f"--{kind}" for kind in KINDS))
    sets = load_sets(args.samples)
    rows = []
    for kind, spec in entries:
        label, _, paths = spec.partition("=")
        if not paths:
            parser.error(f"--{kind} {spec!r}: expected LABEL=CKPT[,CKPT...]")
        runs = []
        for checkpoint in paths.split(","):
            runs.append(errors(build(kind, checkpoint), sets))
            print(
                f"{label} ({kind}) {checkpoint}: "
                + ", ".join(f"{g}² L2 {100 * r['relative_l2']:.2f}%" for g, r in runs[-1].items()),
                flush=True,
            )
        rows.append(
            {
                "label": label,
                "kind": kind,
                "checkpoints": paths.split(","),
                "seeds": len(runs),
                "runs": runs,
                "summary": summarise(runs),
            }
        )
    report = {
        "samples": len(next(iter(sets.values()))[0]),
        "threads": args.threads,
        "machine": machine(),
        "rows": rows,
    }
    write_results(args.out, report, markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
