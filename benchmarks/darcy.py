"""Darcy benchmark: MgNO against neuraloperator's FNO on smooth Darcy flow, side by side.

Both models train through physnet's one :class:`~physnet.training.Trainer` on the same data
(``darcy-smooth`` at 64x64: 1000 train / 100 val / 100 test, the splits of the store), with
the same loss, optimiser, schedule, batch size and number of epochs, for several seeds. The
architectures and training settings are those of ``solvers/mgno-darcy/train.toml`` (MgNO,
572,661 parameters) and ``solvers/mgno-darcy/fno.toml`` (FNO, 602,977 parameters); only the
epochs and the seed are set here. The weights of the epoch with the best validation loss are
evaluated on the test split (relative L2 and H1) and, without retraining, on a 128x128 test
set of the same distribution (resolution transfer). Reported per model: mean ± standard
deviation over the seeds of the errors, the parameter count, the median seconds per epoch
(training plus validation) and the median inference time per sample (batches of 25, no
gradient).

Run ``python benchmarks/darcy.py`` (missing data files are generated first, from
``datasets/darcy-smooth/generate.toml`` and ``generate-128.toml``). Results go to
``benchmarks/results/darcy.{json,md}`` with the machine described.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from _common import machine, write_results

import physnet.nn
import physnet.training
from physnet.datasets import open as open_dataset
from physnet.datasets.generate import generate
from physnet.training import Trainer, evaluate, load_config

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
CONFIGS = {
    "mgno": ROOT / "solvers" / "mgno-darcy" / "train.toml",
    "fno": ROOT / "solvers" / "mgno-darcy" / "fno.toml",
}
LABELS = {"mgno": "MgNO (physnet)", "fno": "FNO (neuraloperator)"}


def data_directory() -> Path:
    return Path(os.environ.get("PHYSNET_DATA", Path("~/.cache/physnet").expanduser()))


def ensure(path: Path, recipe: Path) -> Path:
    if not path.exists():
        print(f"generating {path} from {recipe.relative_to(ROOT)}", flush=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        generate(recipe, path, workers=2)
    return path


def inference_ms_per_sample(model: torch.nn.Module, inputs: torch.Tensor, repeats: int) -> float:
    model.eval()
    times = []
    with torch.no_grad():
        model(inputs[:2])  # warm-up
        for _ in range(repeats):
            start = time.perf_counter()
            for batch in inputs.split(25):
                model(batch)
            times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times) / len(inputs)


def run(name: str, seed: int, epochs: int, data: Path, transfer: Path, repeats: int) -> dict:
    config = load_config(CONFIGS[name])
    options = config.trainer_options()
    options.update(epochs=epochs, seed=seed, progress=False, device="cpu")
    torch.manual_seed(seed)
    model = physnet.nn.create(config.model.name, **config.model.kwargs)
    parameters = sum(p.numel() for p in model.parameters())
    train = open_dataset(data, split="train")
    val = open_dataset(data, split="val")
    with tempfile.TemporaryDirectory() as out_dir:
        trainer = Trainer(
            model,
            out_dir=out_dir,
            inputs=config.data.inputs,
            targets=config.data.targets,
            **options,
        )
        start = time.perf_counter()
        history = trainer.fit(train, val)
        training_s = time.perf_counter() - start
        best = physnet.nn.load(Path(out_dir) / "best.safetensors")
    test = evaluate(best, data, split="test")
    resolution = evaluate(best, transfer, split="test")
    test_set = open_dataset(data, split="test")
    inputs = torch.stack(
        [torch.from_numpy(test_set[i]["coefficient"]) for i in range(len(test_set))]
    )
    result = {
        "model": name,
        "seed": seed,
        "parameters": parameters,
        "epochs": epochs,
        "best_epoch": history.best_epoch,
        "test_relative_l2": test["relative_l2"],
        "test_relative_h1": test["relative_h1"],
        "transfer_relative_l2": resolution["relative_l2"],
        "transfer_relative_h1": resolution["relative_h1"],
        "seconds_per_epoch": statistics.median(history["time_s"]),
        "training_s": training_s,
        "inference_ms_per_sample": inference_ms_per_sample(best, inputs[:, None], repeats),
        "history": history.records,
    }
    print(
        f"{name} seed {seed}: test L2 {result['test_relative_l2']:.4f} H1 "
        f"{result['test_relative_h1']:.4f} | 128^2 L2 {result['transfer_relative_l2']:.4f} | "
        f"{result['seconds_per_epoch']:.1f} s/epoch | "
        f"{result['inference_ms_per_sample']:.2f} ms/sample",
        flush=True,
    )
    return result


def step_timings(name: str, inputs: torch.Tensor, targets: torch.Tensor, repeats: int) -> dict:
    """Minimum over repeats (robust to other jobs on the machine) of one optimizer step and
    one inference on a batch, per sample, without training."""
    config = load_config(CONFIGS[name])
    torch.manual_seed(0)
    model = physnet.nn.create(config.model.name, **config.model.kwargs)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    loss_function = physnet.training.get_loss(config.training.loss)
    train, infer = [], []
    for _ in range(repeats + 1):  # the first round warms up
        start = time.perf_counter()
        optimizer.zero_grad()
        loss_function(model(inputs), targets).backward()
        optimizer.step()
        train.append(time.perf_counter() - start)
        with torch.no_grad():
            start = time.perf_counter()
            model(inputs)
            infer.append(time.perf_counter() - start)
    return {
        "model": name,
        "parameters": sum(p.numel() for p in model.parameters()),
        "batch": len(inputs),
        "train_step_ms_per_sample": 1000 * min(train[1:]) / len(inputs),
        "inference_ms_per_sample": 1000 * min(infer[1:]) / len(inputs),
    }


def timing_only(args, data: Path) -> dict:
    test_set = open_dataset(data, split="test")
    samples = [test_set[i] for i in range(8)]
    inputs = torch.stack([torch.from_numpy(s["coefficient"]) for s in samples])[:, None]
    targets = torch.stack([torch.from_numpy(s["solution"]) for s in samples])[:, None]
    rows = [step_timings(name, inputs, targets, args.repeats) for name in args.models]
    load = os.getloadavg()
    report = {
        "benchmark": "darcy-timing",
        "threads": args.threads,
        "load_average": load,
        "machine": machine(),
        "rows": rows,
    }
    lines = [
        "# Darcy step timings (64x64, batch 8, minimum over repeats)",
        "",
        f"torch threads {args.threads}; load average at the end {load[0]:.1f} on "
        f"{report['machine']['cores']} cores.",
        "",
        "| model | parameters | train step ms / sample | inference ms / sample |",
        "|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {LABELS.get(row['model'], row['model'])} | {row['parameters']:,} | "
            f"{row['train_step_ms_per_sample']:.2f} | {row['inference_ms_per_sample']:.2f} |"
        )
    return report, "\n".join(lines) + "\n"


def summarise(runs: list[dict], models: list[str]) -> dict:
    summary = {}
    for name in models:
        mine = [r for r in runs if r["model"] == name]
        entry = {"parameters": mine[0]["parameters"], "seeds": [r["seed"] for r in mine]}
        for key in (
            "test_relative_l2",
            "test_relative_h1",
            "transfer_relative_l2",
            "transfer_relative_h1",
        ):
            values = [r[key] for r in mine]
            entry[key] = {
                "mean": statistics.fmean(values),
                "std": statistics.stdev(values) if len(values) > 1 else 0.0,
                "values": values,
            }
        entry["seconds_per_epoch"] = statistics.median(r["seconds_per_epoch"] for r in mine)
        entry["inference_ms_per_sample"] = statistics.median(
            r["inference_ms_per_sample"] for r in mine
        )
        summary[name] = entry
    if {"mgno", "fno"} <= set(summary):
        mgno, fno = summary["mgno"], summary["fno"]
        ratio = mgno["test_relative_l2"]["mean"] / fno["test_relative_l2"]["mean"]
        summary["targets"] = {
            "mgno_over_fno_relative_l2": ratio,
            "l2_at_most_half_of_fno": ratio <= 0.5,
            "parameters_at_most_fno": mgno["parameters"] <= fno["parameters"],
        }
    return summary


def markdown(report: dict) -> str:
    settings, summary = report["settings"], report["summary"]
    lines = [
        "# Darcy benchmark: MgNO vs FNO (smooth Darcy, 64x64)",
        "",
        f"Command: `{settings['command']}`  ",
        f"Data: `{settings['data']}` (1000 train / 100 val / 100 test), resolution transfer on "
        f"`{settings['transfer_data']}` (100 samples at 128x128).  ",
        f"{settings['epochs']} epochs, seeds {settings['seeds']}, loss "
        f"`{settings['loss']}`, batch {settings['batch_size']}, one-cycle lr "
        f"{settings['lr']}; torch threads: {settings['threads']}.  ",
        "Errors: mean ± std over the seeds, test split, weights of the best validation epoch "
        "(×10⁻²). Seconds per epoch include validation (medians).",
        "",
        "| model | parameters | rel. L2 | rel. H1 | 128² rel. L2 | 128² rel. H1 | s / epoch | "
        "inference ms / sample |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in settings["models"]:
        entry = summary[name]

        def cell(key, entry=entry):
            return f"{100 * entry[key]['mean']:.2f} ± {100 * entry[key]['std']:.2f}"

        lines.append(
            f"| {LABELS.get(name, name)} | {entry['parameters']:,} | {cell('test_relative_l2')} | "
            f"{cell('test_relative_h1')} | {cell('transfer_relative_l2')} | "
            f"{cell('transfer_relative_h1')} | {entry['seconds_per_epoch']:.1f} | "
            f"{entry['inference_ms_per_sample']:.2f} |"
        )
    targets = summary.get("targets")
    if targets:
        lines += [
            "",
            f"MgNO / FNO relative L2: {targets['mgno_over_fno_relative_l2']:.3f} (target ≤ 0.5: "
            f"{'met' if targets['l2_at_most_half_of_fno'] else 'not met'}); MgNO parameters ≤ "
            f"FNO's: {'yes' if targets['parameters_at_most_fno'] else 'no'}.",
        ]
    m = report["machine"]
    lines += [
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB; Python {m['python']}, "
        f"torch {m['torch']}, physnet {m['physnet']}; total wall time "
        f"{report['wall_s'] / 60:.1f} min; load average at the end "
        f"{report.get('load_average_at_end', [float('nan')])[0]:.1f} (other jobs on the machine "
        "inflate the timings; `--timing-only` gives minima over repeats).",
        "",
    ]
    return "\n".join(lines)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--models", nargs="+", default=["mgno", "fno"], choices=sorted(CONFIGS))
    parser.add_argument("--data", default=None, help="default $PHYSNET_DATA/darcy-smooth-64.h5")
    parser.add_argument(
        "--transfer-data", default=None, help="default $PHYSNET_DATA/darcy-smooth-128-test.h5"
    )
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--repeats", type=int, default=3, help="inference timing repeats")
    parser.add_argument("--out", default=str(RESULTS / "darcy"), help="output stem (.json, .md)")
    parser.add_argument(
        "--timing-only",
        action="store_true",
        help="only time one training step and one inference per model (no training); "
        "writes OUT.timing.json and .md",
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    data = Path(args.data) if args.data else data_directory() / "darcy-smooth-64.h5"
    transfer = (
        Path(args.transfer_data)
        if args.transfer_data
        else data_directory() / "darcy-smooth-128-test.h5"
    )
    ensure(data, ROOT / "datasets" / "darcy-smooth" / "generate.toml")
    ensure(transfer, ROOT / "datasets" / "darcy-smooth" / "generate-128.toml")
    if args.timing_only:
        report, text = timing_only(args, data)
        stem = Path(args.out)
        write_results(stem.with_name(stem.name + ".timing"), report, text)
        return report

    command = "python benchmarks/darcy.py " + " ".join(sys.argv[1:] if argv is None else argv)
    start = time.perf_counter()
    runs = [
        run(name, seed, args.epochs, data, transfer, args.repeats)
        for seed in args.seeds
        for name in args.models
    ]
    reference = load_config(CONFIGS[args.models[0]])
    report = {
        "benchmark": "darcy",
        "settings": {
            "command": command.strip(),
            "data": str(data),
            "transfer_data": str(transfer),
            "epochs": args.epochs,
            "seeds": args.seeds,
            "models": args.models,
            "threads": args.threads,
            "loss": reference.training.loss,
            "batch_size": reference.training.batch_size,
            "lr": reference.optim.lr,
            "configs": {name: str(CONFIGS[name].relative_to(ROOT)) for name in args.models},
        },
        "machine": machine(),
        "runs": runs,
        "summary": summarise(runs, args.models),
        "wall_s": time.perf_counter() - start,
        "load_average_at_end": os.getloadavg(),
    }
    write_results(args.out, report, markdown(report))
    return report


if __name__ == "__main__":
    main()
