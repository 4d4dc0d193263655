"""Dataset generation benchmark: samples/s at 1 and 2 worker processes, same bytes either way.

Generates the cheap ``gaussian-fields`` dataset (and, with ``--dataset``, any other) into
physnet's HDF5 store with 1 and 2 workers, several repeats each, and checks that every
file has the same SHA-256 whatever the number of workers.

Run ``python benchmarks/generate.py``; results go to ``benchmarks/results/generate.{json,md}``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from _common import machine

from physnet._io import atomic_write
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
    parser.add_argument("--dataset", default="gaussian-fields")
    parser.add_argument("--samples", type=int, default=512)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(RESULTS / "generate"), help="output stem")
    args = parser.parse_args(argv)

    rows, hashes = [], set()
    with tempfile.TemporaryDirectory() as folder:
        for workers in args.workers:
            times = []
            for repeat in range(args.repeats):
                path = Path(folder) / f"w{workers}-r{repeat}.h5"
                start = time.perf_counter()
                generate(args.dataset, path, samples=args.samples, workers=workers, progress=False)
                times.append(time.perf_counter() - start)
                hashes.add(sha256(path))
                path.unlink()
            seconds = statistics.median(times)
            rows.append(
                {
                    "workers": workers,
                    "median_s": seconds,
                    "samples_per_s": args.samples / seconds,
                    "times_s": times,
                }
            )
    base = rows[0]["samples_per_s"]
    for row in rows:
        row["speedup"] = row["samples_per_s"] / base
    report = {
        "machine": machine(),
        "command": " ".join(
            ["python benchmarks/generate.py", *(sys.argv[1:] if argv is None else argv)]
        ),
        "dataset": args.dataset,
        "samples": args.samples,
        "repeats": args.repeats,
        "identical_bytes": len(hashes) == 1,
        "sha256": sorted(hashes),
        "rows": rows,
    }
    lines = [
        "# Generation benchmark",
        "",
        f"Machine: {report['machine']['cpu']}, {report['machine']['cores']} cores. "
        f"Command: `{report['command']}`.",
        "",
        f"Dataset `{args.dataset}`, {args.samples} samples, median of {args.repeats} runs. "
        f"Files byte-identical across worker counts and repeats: "
        f"{'yes' if report['identical_bytes'] else 'NO'}.",
        "",
        "| workers | median s | samples/s | speed-up |",
        "|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['workers']} | {row['median_s']:.2f} | {row['samples_per_s']:.1f} "
            f"| {row['speedup']:.2f}x |"
        )
    markdown = "\n".join(lines) + "\n"
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(out.with_suffix(".json"), "w") as handle:
        json.dump(report, handle, indent=2)
    with atomic_write(out.with_suffix(".md"), "w") as handle:
        handle.write(markdown)
    print(markdown)
    return report


if __name__ == "__main__":
    main()
