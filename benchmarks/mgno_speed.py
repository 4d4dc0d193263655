"""MgNO training-step speed: the original code against the optimised default.

Builds the shipped MgNO configuration (``solvers/mgno-darcy/train.toml``: 4 layers, 24
channels, 6 levels, 572,661 parameters) and times one training step (forward, relative-H1
loss, backward, AdamW step) at the training batch size on one torch thread: the original
code (contiguous weights), the new default (:class:`~physnet.nn.MgNO` keeps its weights
channels-last, so oneDNN runs every convolution on channels-last activations) and
optionally the latter under ``torch.compile`` (``--compile``; the first step, which
compiles, is reported separately). FNO (``solvers/mgno-darcy/fno.toml``) is timed
alongside when neuraloperator is installed. The variants run interleaved, round after
round, in one process, so that other jobs on a shared machine slow them alike; reported are
medians over the rounds of the calling thread's CPU time (``time.thread_time``) and of the
wall time.

Each variant's floating-point operations per step are counted once
(``torch.utils.flop_counter``: convolutions and matrix products, forward and backward; FFTs
are not counted, so FNO's figure is a lower bound), so the
table also gives the arithmetic rate a step reaches, against what one core can do at most.
``--two-threads`` adds the new default on two torch threads (wall time is then the measure:
the calling thread's CPU time no longer covers the step).

Run ``OMP_NUM_THREADS=1 python benchmarks/mgno_speed.py`` (``--sizes 64 128``,
``--repeats 7``, ``--compile`` to add the compiled variant). Results go to
``benchmarks/results/mgno-speed.{json,md}`` with the machine described.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from pathlib import Path

import torch
from _common import machine, write_results

import physnet.nn
import physnet.training
from physnet.training import load_config

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
CONFIGS = {
    "mgno": ROOT / "solvers" / "mgno-darcy" / "train.toml",
    "fno": ROOT / "solvers" / "mgno-darcy" / "fno.toml",
}
REFERENCE = "MgNO reference (contiguous weights, the original code)"
TWO_THREADS = "MgNO, channels-last weights, 2 threads (wall time)"
TRAIN_SAMPLES = 1000  # datasets/darcy-smooth/generate.toml: 1000 train / 100 val / 100 test


def make_step(
    config, model: torch.nn.Module, inputs, targets, compiled: bool = False, threads: int = 1
):
    """A closure running one training step of ``model`` (compiled by ``torch.compile`` if
    ``compiled``) on ``threads`` torch threads."""
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=config.optim.lr, weight_decay=config.optim.weight_decay
    )
    loss_function = physnet.training.get_loss(config.training.loss)
    network = torch.compile(model) if compiled else model

    def step() -> None:
        torch.set_num_threads(threads)
        try:
            optimizer.zero_grad()
            loss_function(network(inputs), targets).backward()
            optimizer.step()
        finally:
            torch.set_num_threads(1)

    return step


def count_flops(step) -> int:
    """Floating-point operations of one call of ``step`` (it runs once)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        step()
    return counter.get_total_flops()


def variants(size: int, batch: int, with_compile: bool, two_threads: bool = False) -> dict:
    """``{label: (step closure, parameter count)}`` for every variant at ``size``."""
    generator = torch.Generator().manual_seed(0)
    inputs = torch.where(torch.rand(batch, 1, size, size, generator=generator) > 0.5, 12.0, 3.0)
    targets = 0.01 * torch.rand(batch, 1, size, size, generator=generator)
    config = load_config(CONFIGS["mgno"])
    torch.manual_seed(0)
    base = physnet.nn.create(config.model.name, **config.model.kwargs)
    count = sum(p.numel() for p in base.parameters())
    # The original code: the same modules with contiguous weights.
    reference = copy.deepcopy(base).to(memory_format=torch.contiguous_format)
    rows = {REFERENCE: (make_step(config, reference, inputs, targets), count)}
    rows["MgNO, channels-last weights (new default)"] = (
        make_step(config, copy.deepcopy(base), inputs, targets),
        count,
    )
    if two_threads:
        rows[TWO_THREADS] = (
            make_step(config, copy.deepcopy(base), inputs, targets, threads=2),
            count,
        )
    if with_compile:
        rows["MgNO, channels-last weights + torch.compile"] = (
            make_step(config, copy.deepcopy(base), inputs, targets, compiled=True),
            count,
        )
    try:
        fno_config = load_config(CONFIGS["fno"])
        torch.manual_seed(0)
        fno = physnet.nn.create(fno_config.model.name, **fno_config.model.kwargs)
    except ImportError:
        fno = None
    if fno is not None:
        rows["FNO (neuraloperator)"] = (
            make_step(fno_config, fno, inputs, targets),
            sum(p.numel() for p in fno.parameters()),
        )
    return rows


def measure(
    size: int, batch: int, repeats: int, with_compile: bool, two_threads: bool = False
) -> list[dict]:
    rows = variants(size, batch, with_compile, two_threads)
    first, flops = {}, {}
    for label, (step, _) in rows.items():  # warm-up (and compilation), timed once
        start = time.perf_counter()
        step()
        first[label] = time.perf_counter() - start
        flops[label] = count_flops(step)
    cpu = {label: [] for label in rows}
    wall = {label: [] for label in rows}
    for _ in range(repeats):
        for label, (step, _) in rows.items():
            start_cpu, start_wall = time.thread_time(), time.perf_counter()
            step()
            cpu[label].append(time.thread_time() - start_cpu)
            wall[label].append(time.perf_counter() - start_wall)
    reference = statistics.median(cpu[REFERENCE])
    results = []
    for label, (_, count) in rows.items():
        # two threads: the calling thread's CPU time misses the other thread's work
        median = statistics.median(wall[label] if label == TWO_THREADS else cpu[label])
        results.append(
            {
                "variant": label,
                "size": size,
                "batch": batch,
                "parameters": count,
                "step_s_cpu": median,
                "step_s_wall": statistics.median(wall[label]),
                "step_s_cpu_all": cpu[label],
                "first_step_s_wall": first[label],
                "speedup_vs_reference": reference / median,
                "gflop_per_step": flops[label] / 1e9,
                "gflop_per_s": flops[label] / 1e9 / median,
                "epoch_s_cpu": median * -(-TRAIN_SAMPLES // batch),
            }
        )
        print(f"{size}x{size} {label}: {median:.3f} s/step (CPU), x{reference / median:.2f}")
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--repeats", type=int, default=7, help="interleaved rounds")
    parser.add_argument("--compile", action="store_true", help="add a torch.compile variant")
    parser.add_argument(
        "--two-threads", action="store_true", help="add the new default on two torch threads"
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "mgno-speed")
    args = parser.parse_args()
    torch.set_num_threads(1)
    config = load_config(CONFIGS["mgno"])
    batch = config.training.batch_size
    info = machine()
    rows = [
        r
        for size in args.sizes
        for r in measure(size, batch, args.repeats, args.compile, args.two_threads)
    ]
    steps = -(-TRAIN_SAMPLES // batch)
    lines = [
        "# MgNO training-step speed (shipped `solvers/mgno-darcy/train.toml` model)",
        "",
        f"One step = forward + relative-H1 loss + backward + AdamW, batch {batch}, one torch "
        f"thread; medians over {args.repeats} interleaved rounds of the thread's CPU time "
        f"(wall time beside it). Epoch = {steps} steps ({TRAIN_SAMPLES} training samples), "
        "validation not included.",
        "",
        f"Machine: {info['cpu']}, {info['cores']} cores, torch {info['torch']}, 1-minute load "
        f"average {info['load_average_1min']} at the start (a shared machine: compare rows "
        "within a grid size, not across runs).",
        "",
        "The first step (wall time, untimed in the medians) includes `torch.compile`'s "
        "compilation for the compiled variant; it is much shorter when torch's inductor cache "
        "holds the graph from an earlier run.",
        "",
        "GFLOP / step counts convolutions and matrix products of the forward and backward pass "
        "(`torch.utils.flop_counter`; not FFTs, so FNO's rate is a lower bound); GFLOP/s divides "
        "it by the CPU time per step (the wall "
        "time for the two-thread row). One AVX2 core with two FMA units peaks at 32 single-"
        "precision FLOP per cycle, about 100 GFLOP/s at 3 GHz.",
        "",
        "| grid | variant | parameters | s / step (CPU) | s / step (wall) | speed-up | "
        "s / epoch (CPU) | GFLOP / step | GFLOP/s | first step (wall, s) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['size']}² | {r['variant']} | {r['parameters']:,} | {r['step_s_cpu']:.3f} | "
            f"{r['step_s_wall']:.3f} | ×{r['speedup_vs_reference']:.2f} | "
            f"{r['epoch_s_cpu']:.1f} | {r['gflop_per_step']:.2f} | {r['gflop_per_s']:.1f} | "
            f"{r['first_step_s_wall']:.2f} |"
        )
    report = {
        "benchmark": "mgno-speed",
        "batch": batch,
        "repeats": args.repeats,
        "steps_per_epoch": steps,
        "machine": info,
        "rows": rows,
    }
    write_results(args.out, report, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
