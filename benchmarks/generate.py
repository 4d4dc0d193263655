"""Dataset generation benchmark: samples/s at 1 and 2 worker processes, same bytes either way.

Generates a cheap dataset (``gaussian-fields``: about 0.2 ms per sample) and a costly one
(``poisson-scenes``: an AMG-PCG solve per sample) into physnet's HDF5 store with 1 and 2
workers, several repeats each, and checks that each dataset's files have the same SHA-256
whatever the number of workers.

Run ``python benchmarks/generate.py``; results go to ``benchmarks/results/generate.{json,md}``.
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import sys
import tempfile
import time
from pathlib import Path

from _common import machine, write_results

from physnet._toml import parse_assignments
from physnet.datasets.generate import generate

RESULTS = Path(__file__).resolve().parent / "results"


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--datasets",
        nargs="+",
        default=["gaussian-fields:1024", "poisson-scenes:384:size=64"],
        help="NAME:SAMPLES[:KEY=VALUE,...] (generator options after the second colon)",
    )
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(RESULTS / "generate"), help="output stem")
    args = parser.parse_args(argv)

    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for item in args.datasets:
            name, _, rest = item.partition(":")
            count, _, options = rest.partition(":")
            samples = int(count or 256)
            overrides = dict(parse_assignments(options.split(","))) if options else None
            hashes = set()
            dataset_rows = []
            for workers in args.workers:
                times = []
                for repeat in range(args.repeats):
                    path = Path(folder) / f"{name}-w{workers}-r{repeat}.h5"
                    start = time.perf_counter()
                    generate(
                        name,
                        path,
                        samples=samples,
                        workers=workers,
                        progress=False,
                        overrides=overrides,
                    )
                    times.append(time.perf_counter() - start)
                    hashes.add(sha256(path))
                    path.unlink()
                seconds = statistics.median(times)
                dataset_rows.append(
                    {
                        "dataset": name + (f" ({options})" if options else ""),
                        "samples": samples,
                        "workers": workers,
                        "median_s": seconds,
                        "samples_per_s": samples / seconds,
                        "times_s": times,
                    }
                )
            for row in dataset_rows:
                row["speedup"] = row["samples_per_s"] / dataset_rows[0]["samples_per_s"]
                row["identical_bytes"] = len(hashes) == 1
            rows.extend(dataset_rows)
    report = {
        "machine": machine(),
        "command": " ".join(
            ["python benchmarks/generate.py", *(sys.argv[1:] if argv is None else argv)]
        ),
        "repeats": args.repeats,
        "rows": rows,
    }
    lines = [
        "# Generation benchmark",
        "",
        f"Machine: {report['machine']['cpu']}, {report['machine']['cores']} cores. "
        f"Command: `{report['command']}`.",
        "",
        f"Median of {args.repeats} runs each, worker start-up included; 'identical' = every "
        "file of the dataset had the same SHA-256 across worker counts and repeats.",
        "",
        "| dataset | samples | workers | median s | samples/s | speed-up | identical |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['dataset']} | {row['samples']} | {row['workers']} | {row['median_s']:.2f} "
            f"| {row['samples_per_s']:.1f} | {row['speedup']:.2f}x "
            f"| {'yes' if row['identical_bytes'] else 'NO'} |"
        )
    markdown = "\n".join(lines) + "\n"
    write_results(args.out, report, markdown)
    return report


if __name__ == "__main__":
    main()
