"""Radar runtime: tuned ADMM-TV against the learned reconstructions, interleaved in one process.

On a shared machine the load changes between the timing of one method and the next, so a
ratio of two times measured minutes apart can be off by 1.5x. This script times the methods
in rounds: each round runs the tuned ADMM-TV on the first ``--volumes`` test volumes of a
setting (one batch, as the benchmark runs it), then every learned model on the same volumes
(its backprojection included, in batches of ``--learned-batch-size``), all at ``--threads``
threads; it reports each method's median per-volume time over ``--rounds`` rounds and the
ratio of the medians. The ADMM-TV hyper-parameters and operator are those tuned by a
``benchmarks/radar.py`` run, read from its ``radar.json``::

    python benchmarks/radar.py --settings nf15-snr30 --out runs/radar
    python benchmarks/radar_runtime.py --results runs/radar/radar.json --models radar-deep2s

Results go to ``benchmarks/results/radar-runtime.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
from _common import machine, write_results
from radar import (
    COUNTS,
    Setting,
    baseline_operator,
    ensure_dataset,
    load_split,
    model_label,
    run_baseline,
)

from physnet.operators import NearFieldMIMO
from physnet.reconstruction import Reconstructor

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", type=Path, required=True, help="a radar.py radar.json")
    parser.add_argument("--setting", default="nf15-snr30")
    parser.add_argument("--models", default="radar-deep2s", help="comma-separated models")
    parser.add_argument("--volumes", type=int, default=32, help="test volumes per round (32)")
    parser.add_argument("--learned-batch-size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=RESULTS / "radar-runtime")
    args = parser.parse_args()
    import numba
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(args.threads)
    numba.set_num_threads(min(args.threads, numba.config.NUMBA_NUM_THREADS))
    report = json.loads(args.results.read_text())["settings"][args.setting]
    admm = report["methods"]["admm-tv"]
    setting = Setting.parse(args.setting)
    path = ensure_dataset(setting, {"val": COUNTS["val"], "test": COUNTS["test"]})
    y, _ = load_split(path, "test")
    y = y[: args.volumes]
    A = NearFieldMIMO(n_frequencies=setting.n_frequencies)
    norm = report["operator_norm"]["norm"]
    models = [name for name in args.models.split(",") if name]
    times: dict[str, list[float]] = {"admm-tv": [], **{model_label(m): [] for m in models}}
    with threadpool_limits(limits=args.threads):
        operator, _ = baseline_operator(A, admm["operator"]["operator"], admm["batch_size"])
        reconstructors = {
            model_label(m): Reconstructor(
                m, batch_size=args.learned_batch_size, device="cpu", progress=False
            )
            for m in models
        }
        for reconstructor in reconstructors.values():
            reconstructor(y[: args.learned_batch_size])  # warm-up (oneDNN primitives)
        for round_ in range(args.rounds):
            _, seconds = run_baseline(
                "admm-tv", operator, norm, y, admm["tuning"]["chosen"], admm["batch_size"]
            )
            times["admm-tv"].append(1e3 * seconds / len(y))
            for label, reconstructor in reconstructors.items():
                start = time.perf_counter()
                reconstructor(y)
                times[label].append(1e3 * (time.perf_counter() - start) / len(y))
            print(f"round {round_ + 1}: " + ", ".join(f"{k} {v[-1]:.1f}" for k, v in times.items()))
    medians = {name: float(np.median(values)) for name, values in times.items()}
    result = {
        "command": "python benchmarks/radar_runtime.py " + " ".join(sys.argv[1:]),
        "machine": machine(),
        "load_average_at_end": os.getloadavg(),
        "setting": args.setting,
        "volumes": len(y),
        "threads": args.threads,
        "admm_tv": admm["tuning"]["chosen"]["params"],
        "ms_per_volume": times,
        "median_ms_per_volume": medians,
        "ratios": {name: medians["admm-tv"] / medians[name] for name in medians},
    }
    m = result["machine"]
    lines = [
        f"# Radar runtime at {args.setting}: tuned ADMM-TV against the learned models, interleaved",
        "",
        f"Command: `{result['command']}`. Machine: {m['cpu']}, {m['cores']} cores, load "
        f"average {m.get('load_average_1min')} at the start and "
        f"{result['load_average_at_end'][0]:.2f} at the end; {args.threads} thread(s). "
        f"{len(y)} test volumes per round, {args.rounds} rounds; ADMM-TV "
        f"{result['admm_tv']} on the {admm['operator']['operator']} operator in one batch, "
        f"the learned models in batches of {args.learned_batch_size}, backprojection included.",
        "",
        "| method | ms / volume per round | median | ADMM-TV / method |",
        "|---|---|---:|---:|",
    ]
    for name, values in times.items():
        rounds = ", ".join(f"{v:.1f}" for v in values)
        lines.append(f"| {name} | {rounds} | {medians[name]:.1f} | {result['ratios'][name]:.1f}x |")
    write_results(args.out, result, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
