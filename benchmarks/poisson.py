"""Poisson benchmark: physnet's Krylov solvers and matrix-free stencil against SciPy and pyamg.

For each grid size, one smoke-box scene (a sphere obstacle, Dirichlet top, its standard
right-hand side) is solved by CG, Jacobi-PCG, IC(0)-PCG and pyamg smoothed-aggregation
AMG-PCG, all with the one stopping rule ``||b - A x|| <= rtol ||b||``, and by
``scipy.sparse.linalg.cg`` for the iteration-count check. Setup and solve are timed
apart (medians of repeats); peak memory is measured in a separate traced run. Then the
matrix-free ``GridPoisson`` apply is timed against SciPy's CSR matvec.

Run ``python benchmarks/poisson.py`` (64^3 and 128^3; add ``--with-256`` for 256^3).
Results go to ``benchmarks/results/poisson.{json,md}`` with the machine described.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
import scipy
import scipy.sparse.linalg
from _common import machine
from tqdm import tqdm

import physnet
from physnet.datasets import make_scene
from physnet.solvers import solve

RESULTS = Path(__file__).resolve().parent / "results"
METHODS = ("cg", "jacobi", "ic", "amg")


def median_time(function, repeats: int) -> tuple[float, list[float]]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times), times


def bench_solvers(operator, rhs, rtol: float, repeats: int, progress) -> list[dict]:
    rows = []
    csr = operator.to_csr()
    for method in METHODS:
        setups, solves, last = [], [], None
        for _ in range(repeats):
            last = solve(operator, rhs, method=method, rtol=rtol)
            setups.append(last.setup_time)
            solves.append(last.solve_time)
            progress.update()
        tracemalloc.start()
        solve(operator, rhs, method=method, rtol=rtol)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        rows.append(
            {
                "method": method,
                "iterations": last.iterations,
                "converged": last.converged,
                "relative_residual": last.relative_residual,
                "setup_s": statistics.median(setups),
                "solve_s": statistics.median(solves),
                "total_s": statistics.median(np.add(setups, solves)),
                "peak_mib": peak / 2**20,
                "info": {k: v for k, v in last.info.items() if isinstance(v, (int, float, str))},
            }
        )
    # SciPy's CG on the same CSR matrix, same rtol: the iteration-count reference.
    count = [0]

    def scipy_cg():
        count[0] = 0
        scipy.sparse.linalg.cg(
            csr, rhs, rtol=rtol, callback=lambda _: count.__setitem__(0, count[0] + 1)
        )

    seconds, _ = median_time(scipy_cg, repeats)
    progress.update(repeats)
    rows.append(
        {
            "method": "scipy-cg",
            "iterations": count[0],
            "setup_s": 0.0,
            "solve_s": seconds,
            "total_s": seconds,
            "converged": None,
        }
    )
    return rows


def bench_matvec(operator, repeats: int) -> list[dict]:
    rows = []
    rng = np.random.default_rng(0)
    for dtype in (np.float64, np.float32):
        op = (
            physnet.GridPoisson(operator.flags, dtype=dtype)
            if dtype != operator.dtype
            else operator
        )
        csr = op.to_csr().astype(dtype)
        x = rng.standard_normal(op.shape[0]).astype(dtype)
        op @ x  # compile / warm up
        csr @ x
        assert np.allclose(op @ x, csr @ x, rtol=1e-5 if dtype == np.float32 else 1e-12, atol=1e-4)
        t_free, _ = median_time(lambda op=op, x=x: op @ x, repeats)
        t_csr, _ = median_time(lambda csr=csr, x=x: csr @ x, repeats)
        itemsize = np.dtype(dtype).itemsize
        n, nnz = csr.shape[0], csr.nnz
        # Bytes each method must at least move: CSR reads values, column indices, row
        # pointers and x, writes y; the stencil reads x and the flag grid, writes y.
        csr_bytes = (
            nnz * (itemsize + csr.indices.itemsize)
            + (n + 1) * csr.indptr.itemsize
            + 2 * n * itemsize
        )
        stencil_bytes = 2 * n * itemsize + op.flags.size
        rows.append(
            {
                "dtype": np.dtype(dtype).name,
                "unknowns": n,
                "matrix_free_ms": 1e3 * t_free,
                "scipy_csr_ms": 1e3 * t_csr,
                "speedup": t_csr / t_free,
                "matrix_free_gbs": stencil_bytes / t_free / 1e9,
                "scipy_csr_gbs": csr_bytes / t_csr / 1e9,
            }
        )
    return rows


def to_markdown(report: dict) -> str:
    lines = ["# Poisson benchmark", ""]
    m = report["machine"]
    lines.append(
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB; Python {m['python']}, "
        f"NumPy {m['numpy']}, SciPy {m['scipy']}, pyamg {m['pyamg']}, numba {m['numba']} "
        f"({m['numba_threads']} threads), physnet {m['physnet']}."
    )
    lines += ["", f"Command: `{report['command']}`", ""]
    lines.append(
        f"Scene `{report['scene']}` (seed {report['seed']}), standard right-hand side, "
        f"rtol {report['rtol']:g} on the true residual; times are medians of "
        f"{report['repeats']} runs; peak memory from one traced run."
    )
    for size in report["sizes"]:
        lines += ["", f"## {size['grid']} ({size['unknowns']:,} unknowns)", ""]
        lines.append("| method | iterations | setup s | solve s | total s | peak MiB |")
        lines.append("|---|---:|---:|---:|---:|---:|")
        for r in size["solvers"]:
            peak = f"{r['peak_mib']:.0f}" if "peak_mib" in r else "–"
            lines.append(
                f"| {r['method']} | {r['iterations']} | {r['setup_s']:.3f} | {r['solve_s']:.3f} "
                f"| {r['total_s']:.3f} | {peak} |"
            )
        lines += [
            "",
            "| matvec dtype | matrix-free ms | SciPy CSR ms | speed-up "
            "| matrix-free GB/s | CSR GB/s |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for r in size["matvec"]:
            lines.append(
                f"| {r['dtype']} | {r['matrix_free_ms']:.2f} | {r['scipy_csr_ms']:.2f} | "
                f"{r['speedup']:.2f}x | {r['matrix_free_gbs']:.1f} | {r['scipy_csr_gbs']:.1f} |"
            )
    lines += [
        "",
        "GB/s counts the bytes each method must move at least (CSR: values, indices, "
        "row pointers, x and y; stencil: x, y and the 1-byte flag grid).",
    ]
    return "\n".join(lines) + "\n"


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--with-256", action="store_true", help="add the 256^3 grid")
    parser.add_argument("--scene", default="sphere")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rtol", type=float, default=1e-6)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--matvec-repeats", type=int, default=21)
    parser.add_argument("--out", default=str(RESULTS / "poisson"), help="output stem (.json, .md)")
    args = parser.parse_args(argv)
    sizes = list(args.sizes) + ([256] if args.with_256 else [])

    report = {
        "machine": machine(),
        "command": " ".join(
            ["python benchmarks/poisson.py", *(sys.argv[1:] if argv is None else argv)]
        ),
        "scene": args.scene,
        "seed": args.seed,
        "rtol": args.rtol,
        "repeats": args.repeats,
        "sizes": [],
    }
    steps = len(sizes) * (len(METHODS) + 1) * args.repeats
    with tqdm(total=steps, desc="poisson benchmark", unit="solve") as progress:
        for size in sizes:
            scene = make_scene(args.scene, size, seed=args.seed)
            operator = scene.operator()
            rhs = scene.rhs_vector()
            progress.set_postfix(grid=f"{size}^3")
            solvers = bench_solvers(operator, rhs, args.rtol, args.repeats, progress)
            matvec = bench_matvec(operator, args.matvec_repeats)
            report["sizes"].append(
                {
                    "grid": f"{size}^3",
                    "unknowns": operator.shape[0],
                    "solvers": solvers,
                    "matvec": matvec,
                }
            )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    from physnet._io import atomic_write

    with atomic_write(out.with_suffix(".json"), "w") as handle:
        json.dump(report, handle, indent=2)
    markdown = to_markdown(report)
    with atomic_write(out.with_suffix(".md"), "w") as handle:
        handle.write(markdown)
    print(markdown)
    return report


if __name__ == "__main__":
    main()
