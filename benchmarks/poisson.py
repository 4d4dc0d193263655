"""Poisson benchmark: physnet's Krylov solvers and matrix-free stencil against SciPy and pyamg.

For each grid size and scene (smoke boxes with a Dirichlet top and their standard right-hand
side: ``sphere``, a geometry like the DCDM training data, and ``torus``, a family held out of
it) the system is solved by CG, Jacobi-PCG, IC(0)-PCG, pyamg smoothed-aggregation AMG-PCG and
the deep conjugate direction solver (physnet's network; the paper's with ``--paper-model``),
all with the one stopping rule ``||b - A x|| <= rtol ||b||``, and by
``scipy.sparse.linalg.cg`` for the iteration-count check. Setup and solve are timed apart
(medians of repeats); peak memory is measured in a forked process. Then the matrix-free
``GridPoisson`` apply is timed against SciPy's CSR matvec.

Run ``python benchmarks/poisson.py`` (32^3, 64^3 and 128^3; ``--with-256`` adds 256^3).
Results go to ``benchmarks/results/poisson.{json,md}`` with the machine described.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import sys
from pathlib import Path

import numpy as np
import scipy
import scipy.sparse.linalg
from _common import high_water_bytes, machine, median_time, reset_high_water, write_results
from tqdm import tqdm

import physnet
from physnet.datasets import make_scene
from physnet.solvers import solve

RESULTS = Path(__file__).resolve().parent / "results"
CLASSICAL = (("cg", "cg", {}), ("jacobi", "jacobi", {}), ("ic", "ic", {}), ("amg", "amg", {}))


def _rss_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _peak_child(spec: dict, queue) -> None:
    scene = make_scene(spec["scene"], spec["size"], seed=spec["seed"])
    operator, rhs = scene.operator(), scene.rhs_vector()
    options = {k: _model(v) if k == "model" else v for k, v in spec["options"].items()}
    # Load the compiled kernels on a small problem: a warm-up solve of the full size would
    # leave freed blocks in the heap that the measured solve then reuses unseen.
    small = make_scene(spec["scene"], 16, seed=spec["seed"])
    solve(small.operator(), small.rhs_vector(), method=spec["method"], rtol=spec["rtol"], **options)
    # Reset the kernel's high-water mark (Linux >= 4.0), so that imports, the problem,
    # the model and compiled kernels are not counted, only what the solve adds.
    reset_high_water()
    start = _rss_bytes()
    solve(operator, rhs, method=spec["method"], rtol=spec["rtol"], **options)
    queue.put(high_water_bytes() - start)


def peak_memory(spec: dict) -> float:
    """Peak resident memory (bytes) one solve adds, measured in a fresh (spawned) process.

    Counts every allocation (NumPy, SciPy, pyamg's C++ and torch alike), which
    tracemalloc would not; a fresh process keeps other measurements' peaks out (and a
    fork of a process running OpenMP threads could hang).
    """
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_peak_child, args=(spec, queue))
    process.start()
    added = queue.get()
    process.join()
    return float(added)


def _model(spec):
    """A DCDM network from a checkpoint path, a pretrained name or "untrained"."""
    import torch

    from physnet.nn import create, load

    if spec == "untrained":
        torch.manual_seed(0)
        return create("dcdm-multigrid", ndim=3)
    return load(spec)


def bench_solvers(problem: dict, methods, rtol: float, repeats: int, progress) -> list[dict]:
    rows = []
    scene = make_scene(problem["scene"], problem["size"], seed=problem["seed"])
    operator, rhs = scene.operator(), scene.rhs_vector()
    csr = operator.to_csr()
    for label, method, spec_options in methods:
        spec_options = dict(spec_options)
        runs = spec_options.pop("repeats", repeats)
        options = {k: _model(v) if k == "model" else v for k, v in spec_options.items()}
        setups, solves, last = [], [], None
        for _ in range(runs):
            last = solve(operator, rhs, method=method, rtol=rtol, **options)
            setups.append(last.setup_time)
            solves.append(last.solve_time)
            progress.update()
        peak = peak_memory({**problem, "method": method, "options": spec_options, "rtol": rtol})
        rows.append(
            {
                "method": label,
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
        f"({m['numba_threads']} threads), torch {m.get('torch', '-')}, physnet {m['physnet']}; "
        f"1-minute load average at the start {m.get('load_average_1min', '-')}."
    )
    lines += ["", f"Command: `{report['command']}`", ""]
    lines.append(
        f"Scenes {', '.join(f'`{s}`' for s in report['scenes'])} (seed {report['seed']}), "
        f"standard right-hand side, rtol {report['rtol']:g} on the true residual; times are "
        f"medians of {report['repeats']} runs; peak memory is the resident memory one solve "
        "adds, measured in a fresh process. " + report.get("note", "")
    )
    for size in report["sizes"]:
        for case in size["scenes"]:
            lines += [
                "",
                f"## {size['grid']}, {case['scene']} ({case['unknowns']:,} unknowns)",
                "",
                "| method | iterations | rel. residual | setup s | solve s | total s | peak MiB |",
                "|---|---:|---:|---:|---:|---:|---:|",
            ]
            for r in case["solvers"]:
                peak = f"{r['peak_mib']:.0f}" if "peak_mib" in r else "–"
                residual = f"{r['relative_residual']:.2e}" if "relative_residual" in r else "–"
                lines.append(
                    f"| {r['method']} | {r['iterations']} | {residual} | {r['setup_s']:.3f} "
                    f"| {r['solve_s']:.3f} | {r['total_s']:.3f} | {peak} |"
                )
        if size.get("matvec"):
            lines += [
                "",
                f"Matrix-free matvec at {size['grid']} ({size['scenes'][0]['scene']}):",
                "",
                "| dtype | matrix-free ms | SciPy CSR ms | speed-up "
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


def learned_methods(args) -> tuple[list, str]:
    """The DCDM entries to run, and a note on what was left out and why."""
    import physnet.pretrained

    methods, notes = [], []
    model = args.dcdm_model
    if model is None and "dcdm-poisson3d" in physnet.pretrained.available():
        model = "dcdm-poisson3d"
    if model is not None:
        methods.append(
            ("dcdm" if model != "untrained" else "dcdm (untrained init)", "dcdm", {"model": model})
        )
    else:
        notes.append("dcdm left out: no pretrained dcdm-poisson3d and no --dcdm-model.")
    if args.paper_model is not None:
        methods.append(
            (
                "dcdm-paper",
                "dcdm",
                {"model": args.paper_model, "maxiter": args.paper_maxiter, "repeats": 1},
            )
        )
        left_out = sorted(set(args.sizes) - set(args.paper_sizes))
        if left_out:
            notes.append(
                f"dcdm-paper runs at {', '.join(f'{n}^3' for n in args.paper_sizes)} only "
                f"(--paper-sizes; one application of its 15 dense 16-channel 3^3 convolutions "
                f"costs ~1.2e5 FLOP per voxel, seconds per iteration on this CPU at 128^3), "
                f"capped at {args.paper_maxiter} iterations, timed once."
            )
    return methods, " ".join(notes)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 64, 128])
    parser.add_argument("--with-256", action="store_true", help="add the 256^3 grid")
    parser.add_argument(
        "--scenes",
        nargs="+",
        default=["sphere", "torus"],
        help="scenes (sphere: a training-like geometry; torus: a family held out of training)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rtol", type=float, default=1e-6)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--matvec-repeats", type=int, default=21)
    parser.add_argument(
        "--dcdm-model",
        default=None,
        help="DCDM checkpoint, pretrained name or 'untrained' (default: the pretrained one)",
    )
    parser.add_argument("--paper-model", default=None, help="a trained dcdm-paper checkpoint")
    parser.add_argument(
        "--paper-sizes", type=int, nargs="+", default=[32, 64], help="grids for --paper-model"
    )
    parser.add_argument("--paper-maxiter", type=int, default=100)
    parser.add_argument("--classical-only", action="store_true", help="skip the learned solvers")
    parser.add_argument("--out", default=str(RESULTS / "poisson"), help="output stem (.json, .md)")
    args = parser.parse_args(argv)
    sizes = list(args.sizes) + ([256] if args.with_256 else [])
    learned, note = ([], "") if args.classical_only else learned_methods(args)
    methods = list(CLASSICAL) + learned

    report = {
        "machine": machine(),
        "command": " ".join(
            ["python benchmarks/poisson.py", *(sys.argv[1:] if argv is None else argv)]
        ),
        "scenes": args.scenes,
        "seed": args.seed,
        "rtol": args.rtol,
        "repeats": args.repeats,
        "note": note,
        "sizes": [],
    }
    steps = len(sizes) * len(args.scenes) * (len(methods) + 1) * args.repeats
    with tqdm(total=steps, desc="poisson benchmark", unit="solve") as progress:
        for size in sizes:
            entry = {"grid": f"{size}^3", "scenes": [], "matvec": None}
            for name in args.scenes:
                problem = {"scene": name, "size": size, "seed": args.seed}
                progress.set_postfix(grid=f"{size}^3", scene=name)
                here = [m for m in methods if m[0] != "dcdm-paper" or size in args.paper_sizes]
                solvers = bench_solvers(problem, here, args.rtol, args.repeats, progress)
                operator = make_scene(name, size, seed=args.seed).operator()
                entry["scenes"].append(
                    {"scene": name, "unknowns": operator.shape[0], "solvers": solvers}
                )
                if entry["matvec"] is None:
                    entry["matvec"] = bench_matvec(operator, args.matvec_repeats)
            report["sizes"].append(entry)
    write_results(args.out, report, to_markdown(report))
    return report


if __name__ == "__main__":
    main()
