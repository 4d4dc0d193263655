"""Iterations of the deep conjugate direction solver for one network across sizes and scenes.

    python benchmarks/dcdm_iterations.py CHECKPOINT|PRETRAINED|untrained [--sizes 32 64]
        [--scenes ...] [--ndim 3] [--rtol 1e-4 1e-6] [--maxiter 100] [--maxiter-at 128=30]
        [--compare cg amg] [--compare-maxiter 5000] [--reference dcdm-poisson3d]
        [--threads 1] [--large] [--out benchmarks/results/NAME]

Prints, for each grid size and scene (the scene's standard right-hand side, ``x0 = 0``),
the DCDM iteration count to each relative tolerance ``||b - A x|| <= rtol ||b||``, the
relative residual reached, the solve time and the time per iteration, and the same for the
``--compare`` methods (classical solvers) and ``--reference`` networks on the same system.
``untrained`` is the ``dcdm-multigrid`` network at its (seeded) initialisation.

Each network is solved once, at the tightest ``--rtol``, capped at ``--maxiter`` (or the
``--maxiter-at SIZE=N`` cap for that grid: one application of a dense 3-D CNN costs seconds
at ``128^3`` on a CPU): the iterates do not depend on the tolerance, so the count for a
looser tolerance is the first iteration whose residual (the solver's residual history) is
below it, and its time is the solve's time per iteration times that count. The classical
``--compare`` methods are cheap and are solved once per tolerance (``--compare-maxiter``,
default 5000: to convergence on these grids). Grids above ``128`` need ``--large``.
``--out STEM`` writes ``STEM.json`` and ``STEM.md`` (:func:`_common.write_results`);
``--merge A.json B.json --out STEM`` joins the rows of runs made separately (e.g. one
process per grid size) into one report.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from _common import machine, write_results

import physnet
from physnet.datasets import make_scene

LARGE = 128  # grids above this need --large


def load_network(spec: str, ndim: int = 3):
    import torch

    from physnet.nn import create, load

    if spec == "untrained":
        torch.manual_seed(0)
        return create("dcdm-multigrid", ndim=ndim)
    return load(spec)


def _first_below(residuals: np.ndarray, threshold: float) -> int | None:
    """The first iteration whose residual norm is at or below ``threshold`` (None: never)."""
    hits = np.flatnonzero(np.asarray(residuals, dtype=float) <= threshold)
    return int(hits[0]) if hits.size else None


def network_rows(network, A, b, rtols, maxiter) -> dict[float, dict]:
    """One DCDM solve at the tightest tolerance; the looser ones read off its history."""
    tightest = min(rtols)
    result = physnet.solve(A, b, method="dcdm", model=network, rtol=tightest, maxiter=maxiter)
    norm = float(np.linalg.norm(np.asarray(b, dtype=float)))
    per_iteration = result.solve_time / max(result.iterations, 1)
    rows = {}
    for rtol in rtols:
        if rtol == tightest:
            count = result.iterations if result.converged else None
        else:
            count = _first_below(result.residuals, rtol * norm)
        rows[rtol] = {
            "iterations": count,
            "converged": count is not None,
            "solve_time": None if count is None else per_iteration * count,
        }
    return {
        "by_rtol": rows,
        "iterations_run": int(result.iterations),
        "relative_residual": float(result.relative_residual),
        "seconds_per_iteration": per_iteration,
        "setup_time": float(result.setup_time),
        "solve_time": float(result.solve_time),
        "maxiter": int(maxiter),
        "relative_residuals": [float(r) / norm for r in result.residuals],
    }


def classical_rows(method, A, b, rtols, maxiter) -> dict:
    rows = {}
    for rtol in rtols:
        result = physnet.solve(A, b, method=method, rtol=rtol, maxiter=maxiter)
        rows[rtol] = {
            "iterations": int(result.iterations) if result.converged else None,
            "converged": bool(result.converged),
            "solve_time": float(result.solve_time),
            "relative_residual": float(result.relative_residual),
        }
    return {"by_rtol": rows, "maxiter": int(maxiter)}


def _count(entry: dict, rtol: float) -> str:
    row = entry["by_rtol"][rtol]
    if row["iterations"] is None:
        cap = entry.get("iterations_run", entry["maxiter"])
        return f">{cap}"
    return f"{row['iterations']}"


def _seconds(entry: dict, rtol: float) -> str:
    row = entry["by_rtol"][rtol]
    return "–" if row["solve_time"] is None else f"{row['solve_time']:.2f}"


def markdown(report: dict) -> str:
    rtols = report["rtols"]
    names = [report["model"], *report["reference"], *report["compare"]]
    lines = [
        f"# DCDM iterations: `{report['model']}` across sizes",
        "",
        f"`python benchmarks/dcdm_iterations.py {' '.join(report['argv'])}`",
        "",
        f"Machine: {report['machine']['cpu']}, {report['machine']['cores']} cores (shared; "
        f"load {report['machine']['load_average_1min']} at the start), "
        f"torch threads {report['threads']}. Scene's standard right-hand side, x0 = 0; "
        "iterations to `||b - A x|| <= rtol ||b||` (`>N`: not reached in the N iterations "
        "run) and seconds. Network counts at the looser tolerance are read off the residual "
        "history of the one solve at the tightest (time pro rata).",
        "",
    ]
    for rtol in rtols:
        header = "| grid | scene | " + " | ".join(f"{n} it | s" for n in names) + " |"
        lines += [f"## rtol {rtol:g}", "", header]
        lines.append("|---|---|" + "---:|---:|" * len(names))
        for row in report["rows"]:
            cells = []
            for name in names:
                entry = row["methods"][name]
                cells += [_count(entry, rtol), _seconds(entry, rtol)]
            lines.append(f"| {row['size']}³ | {row['scene']} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += [
        "## Networks: iterations run, residual reached, seconds per iteration",
        "",
        "| grid | scene | network | iterations run (cap) | relative residual | "
        + " | ".join(f"after {k}" for k in report["at"])
        + " | s / iteration |",
        "|---|---|---|---:|---:|" + "---:|" * len(report["at"]) + "---:|",
    ]
    for row in report["rows"]:
        for name in [report["model"], *report["reference"]]:
            entry = row["methods"][name]
            lines.append(
                f"| {row['size']}³ | {row['scene']} | {name} | {entry['iterations_run']} "
                f"({entry['maxiter']}) | {entry['relative_residual']:.2e} | "
                + "".join(f"{_after(entry, k)} | " for k in report["at"])
                + f"{entry['seconds_per_iteration']:.3f} |"
            )
    return "\n".join(lines) + "\n"


def _after(entry: dict, k: int) -> str:
    history = entry["relative_residuals"]
    return f"{history[k]:.2e}" if k < len(history) else "–"


def _maxiter_at(pairs: list[str]) -> dict[int, int]:
    caps = {}
    for pair in pairs:
        size, _, cap = pair.partition("=")
        caps[int(size)] = int(cap)
    return caps


def merge(paths: list[str], out: str) -> dict:
    """Join the rows of several reports of the same model and tolerances into one."""
    import json

    reports = [json.loads(Path(path).read_text()) for path in paths]
    first = reports[0]
    for other in reports[1:]:
        for key in ("model", "reference", "compare", "rtols", "at"):
            if other[key] != first[key]:
                raise ValueError(f"--merge: {key} differs: {first[key]} vs {other[key]}")
    merged = {**first, "rows": [row for report in reports for row in report["rows"]]}
    merged["runs"] = [
        {"argv": r["argv"], "machine": r["machine"], "total_seconds": r.get("total_seconds")}
        for r in reports
    ]
    merged["argv"] = [arg for r in reports for arg in [*r["argv"], ";"]][:-1]
    for report in reports:  # float keys come back from JSON as strings
        for row in report["rows"]:
            for entry in row["methods"].values():
                entry["by_rtol"] = {float(k): v for k, v in entry["by_rtol"].items()}
    write_results(out, merged, markdown(merged))
    return merged


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model", nargs="?", help="checkpoint path, pretrained name or 'untrained'")
    parser.add_argument("--merge", nargs="+", default=None, metavar="JSON")
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 64])
    parser.add_argument("--scenes", nargs="+", default=["sphere", "boxes", "torus"])
    parser.add_argument("--ndim", type=int, default=3, choices=(2, 3))
    parser.add_argument("--compare", nargs="*", default=[], help="classical methods too")
    parser.add_argument("--reference", nargs="*", default=[], help="other DCDM networks too")
    parser.add_argument("--rtol", type=float, nargs="+", default=[1e-6])
    parser.add_argument("--maxiter", type=int, default=300, help="DCDM iteration cap")
    parser.add_argument(
        "--maxiter-at", nargs="*", default=[], metavar="SIZE=N", help="per-grid DCDM caps"
    )
    parser.add_argument("--compare-maxiter", type=int, default=5000)
    parser.add_argument(
        "--at", type=int, nargs="*", default=[10], help="report network residuals after these"
    )
    parser.add_argument("--threads", type=int, default=None, help="torch and BLAS threads")
    parser.add_argument("--large", action="store_true", help=f"allow grids above {LARGE}")
    parser.add_argument("--out", default=None, help="write OUT.json and OUT.md")
    args = parser.parse_args(argv)
    if args.merge:
        if not args.out:
            parser.error("--merge needs --out")
        return merge(args.merge, args.out)
    if args.model is None:
        parser.error("a model is required (or --merge)")
    too_large = [n for n in args.sizes if n > LARGE]
    if too_large and not args.large:
        parser.error(f"--sizes {too_large}: grids above {LARGE} need --large")
    import torch

    # machine() imports numba, which resets torch's thread count: ask it first.
    info = machine()
    if args.threads is not None:
        from threadpoolctl import threadpool_limits

        torch.set_num_threads(args.threads)
        threadpool_limits(limits=args.threads)
    caps = _maxiter_at(args.maxiter_at)
    rtols = sorted(set(args.rtol), reverse=True)
    networks = {args.model: load_network(args.model, args.ndim)}
    networks.update({name: load_network(name, args.ndim) for name in args.reference})
    report = {
        "benchmark": "dcdm_iterations",
        "argv": list(sys.argv[1:] if argv is None else argv),
        "machine": info,
        "threads": torch.get_num_threads(),
        "model": args.model,
        "reference": list(args.reference),
        "compare": list(args.compare),
        "rtols": rtols,
        "at": list(args.at),
        "rows": [],
    }
    started = time.perf_counter()
    for size in args.sizes:
        for name in args.scenes:
            scene = make_scene(name, size, ndim=args.ndim)
            A, b = scene.operator(), scene.rhs_vector()
            row = {"size": size, "scene": name, "unknowns": int(A.shape[0]), "methods": {}}
            for spec, network in networks.items():
                cap = caps.get(size, args.maxiter)
                row["methods"][spec] = network_rows(network, A, b, rtols, cap)
            for method in args.compare:
                row["methods"][method] = classical_rows(method, A, b, rtols, args.compare_maxiter)
            report["rows"].append(row)
            cells = []
            for spec, entry in row["methods"].items():
                counts = "/".join(_count(entry, rtol) for rtol in rtols)
                extra = ""
                if "seconds_per_iteration" in entry:
                    extra = f" ({entry['seconds_per_iteration']:.2f} s/it)"
                cells.append(f"{spec} {counts}{extra}")
            print(f"{size}^{args.ndim} {name}: " + "; ".join(cells), flush=True)
            if args.out:  # partial results survive an interrupted run
                write_results(args.out, report, markdown(report))
    report["total_seconds"] = time.perf_counter() - started
    if args.out:
        write_results(args.out, report, markdown(report))
    return report


if __name__ == "__main__":
    main()
