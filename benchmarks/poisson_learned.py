"""Does learning earn its place? The learned Poisson solver beside its classical twin and AMG.

For every scene and size, in one run with the same thread settings and the same stopping
rule (``||b - A x|| <= rtol ||b||`` on the true residual):

- ``dcdm``: physnet's default learned solver (``dcdm-galerkin``: trained smoother in Galerkin
  aggregation multigrid, flexible CG);
- ``multigrid``: the same cycle with its learned parts reset to their classical values
  (damped Jacobi, a constant damping: 0.8 unless ``--twin-damping``), the *untrained twin*;
- ``amg``: pyamg smoothed aggregation as a CG preconditioner; ``amg-rs``: pyamg Ruge–Stüben;
- ``ic``: IC(0)-PCG; ``cg``: plain CG (capped at ``--cg-maxiter``);
- ``dcdm-poisson3d``: the previous default network (geometric V-cycle that sees only flags).

Scenes: ``two-phase`` (density ratio 1000, held-out interface shapes), ``thin-walls`` (thin
hollow cylinder, small balls, a baffle with a small hole; held out), the smoke boxes
``sphere`` and ``torus``, and optionally systems dumped by ``examples/smoke_plume.py
--dump-systems DIR`` (``--systems DIR``). Setup (hierarchy, factorisation, per-geometry work)
and solve are timed separately; the table reports medians over ``--repeats`` runs.

Usage::

    python benchmarks/poisson_learned.py                      # 64^3 and 128^3, all methods
    python benchmarks/poisson_learned.py --sizes 64 --repeats 3 --systems out/smoke_plume/systems
"""

from __future__ import annotations

import argparse
import glob
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common

import physnet
from physnet.datasets import make_scene
from physnet.operators import GridPoisson

METHODS = ("dcdm", "multigrid", "amg", "amg-rs", "ic", "cg", "dcdm-poisson3d")


def _ruge_stuben(A, b, rtol, maxiter):
    """pyamg's Ruge–Stüben hierarchy as the preconditioner of physnet.cg (same stopping rule)."""
    import pyamg

    start = time.perf_counter()
    hierarchy = pyamg.ruge_stuben_solver(A.to_csr(), max_coarse=500)
    preconditioner = hierarchy.aspreconditioner(cycle="V")
    setup = time.perf_counter() - start
    iterations = []
    start = time.perf_counter()
    x, info = physnet.cg(
        A, b, rtol=rtol, M=preconditioner, maxiter=maxiter, callback=lambda xk: iterations.append(1)
    )
    solve = time.perf_counter() - start
    return x, info == 0, len(iterations), setup, solve


def physnet_threads() -> int:
    import numba

    return numba.get_num_threads()


def run_method(method, A, b, *, rtol, cg_maxiter, twin_damping):
    if method == "amg-rs":
        x, converged, iterations, setup, solve = _ruge_stuben(A, b, rtol, 200)
    else:
        options = {}
        maxiter = 200
        if method == "multigrid":
            options["damping"] = twin_damping
        elif method == "dcdm-poisson3d":
            options["model"] = "dcdm-poisson3d" if A.ndim == 3 else "dcdm-poisson2d"
        elif method in ("cg", "ic"):
            maxiter = cg_maxiter
        name = "dcdm" if method == "dcdm-poisson3d" else method
        result = physnet.solve(A, b, method=name, rtol=rtol, maxiter=maxiter, **options)
        x, converged, iterations = result.x, result.converged, result.iterations
        setup, solve = result.setup_time, result.solve_time
    residual = float(np.linalg.norm(b - A @ x) / np.linalg.norm(b))
    return {
        "iterations": iterations,
        "converged": bool(converged),
        "setup_s": setup,
        "solve_s": solve,
        "total_s": setup + solve,
        "relative_residual": residual,
    }


def validation(path, ndim):
    """Mean ``log10`` residual reduction per iteration (6 steps), trained vs untrained."""
    import torch

    import physnet.nn
    from physnet.solvers.dcdm import PRETRAINED_MODELS
    from physnet.training.multigrid_loss import multigrid_es_loss

    data = physnet.datasets.open(path, split="val")
    models = {
        "untrained twin": physnet.nn.DCDMGalerkinNet(ndim=ndim),
        PRETRAINED_MODELS[ndim]: physnet.nn.load(PRETRAINED_MODELS[ndim]),
    }
    values = {name: [] for name in models}
    for index in range(len(data)):
        sample = data[index]
        flags = torch.as_tensor(sample["flags"]).float()
        coefficients = torch.as_tensor(sample["coefficients"]).float()
        inputs = torch.stack([flags, coefficients])[None]
        target = torch.as_tensor(sample["rhs"]).float()[None, None]
        with torch.no_grad():
            for name, model in models.items():
                values[name].append(float(multigrid_es_loss(model, inputs, target, iterations=6)))
    for name, value in values.items():
        print(
            f"{name}: mean log10 residual reduction per iteration {np.mean(value):.4f} "
            f"(± {np.std(value) / np.sqrt(len(value)):.4f}, {len(value)} systems)"
        )


def systems(args):
    for name in args.scenes:
        for size in args.sizes:
            scene = make_scene(name, size, ndim=args.ndim)
            yield f"{name} {size}^{args.ndim}", scene.operator(), scene.rhs_vector()
    if args.systems:
        files = sorted(glob.glob(os.path.join(args.systems, "*.npz")))[:: args.systems_stride]
        for path in files:
            with np.load(path) as data:
                flags = data["flags"]
                coefficients = data.get("coefficients", None)
                A = GridPoisson(flags, h=float(data["h"]), coefficients=coefficients)
                b = A.gather(data["rhs"])
            yield f"smoke-plume {os.path.basename(path)}", A, b


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--ndim", type=int, default=3, choices=(2, 3))
    parser.add_argument(
        "--scenes", nargs="*", default=["two-phase", "thin-walls", "sphere", "torus"]
    )
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--rtol", type=float, default=1e-6)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--cg-maxiter", type=int, default=2000)
    parser.add_argument("--twin-damping", type=float, default=0.8)
    parser.add_argument("--systems", help="folder of .npz systems from examples/smoke_plume.py")
    parser.add_argument("--systems-stride", type=int, default=10)
    parser.add_argument("--out", default="benchmarks/results/poisson-learned")
    parser.add_argument(
        "--validation",
        metavar="DATA",
        help="instead: the multigrid_es value of the trained network and its untrained twin "
        "on the val split of a poisson-systems file",
    )
    args = parser.parse_args(argv)
    if args.validation:
        validation(args.validation, args.ndim)
        return

    from threadpoolctl import threadpool_limits

    # BLAS only serves small dense products here (pyamg's spectral-radius estimates, the
    # dense coarsest solves); its threads busy-wait against numba's on 2 shared cores and
    # turned pyamg's 0.3 s setup at 32^3 into 8 s. One BLAS thread for every method.
    blas = threadpool_limits(limits=1, user_api="blas")
    # Warm-up: import torch, load the networks, load numba's compiled kernels, so that no
    # method pays a one-time cost inside its timed setup.
    warm = make_scene("two-phase", 16, ndim=args.ndim)
    for method in args.methods:
        run_method(
            method,
            warm.operator(),
            warm.rhs_vector(),
            rtol=args.rtol,
            cg_maxiter=args.cg_maxiter,
            twin_damping=args.twin_damping,
        )
    rows = []
    for label, A, b in systems(args):
        for method in args.methods:
            if method == "cg" and A.n > 3_000_000:
                continue
            runs = [
                run_method(
                    method,
                    A,
                    b,
                    rtol=args.rtol,
                    cg_maxiter=args.cg_maxiter,
                    twin_damping=args.twin_damping,
                )
                for _ in range(args.repeats)
            ]
            row = {"system": label, "unknowns": A.n, "method": method, **runs[-1]}
            for key in ("setup_s", "solve_s", "total_s"):
                row[key] = statistics.median(run[key] for run in runs)
            rows.append(row)
            print(
                f"{label:28s} {method:15s} it {row['iterations']:5d} "
                f"{'ok ' if row['converged'] else 'NO '} setup {row['setup_s']:7.2f} s "
                f"solve {row['solve_s']:7.2f} s  res {row['relative_residual']:.1e}",
                flush=True,
            )

    lines = [
        "# Learned Poisson solver vs its untrained twin and AMG",
        "",
        f"`python benchmarks/poisson_learned.py {' '.join(argv or sys.argv[1:])}`; rtol "
        f"{args.rtol:g} on the true residual; medians of {args.repeats} run(s); numba kernels on "
        f"{physnet_threads()} threads, BLAS on 1, SciPy CSR single-threaded; untrained twin "
        f"damping {args.twin_damping}; CG capped at {args.cg_maxiter} iterations. "
        f"Load average at the end: {os.getloadavg()[0]:.1f}.",
        "",
        "| system | unknowns | method | iterations | converged | setup s | solve s | total s |",
        "|---|---:|---|---:|---|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['system']} | {row['unknowns']} | {row['method']} | {row['iterations']} | "
            f"{'yes' if row['converged'] else 'no'} | {row['setup_s']:.2f} | "
            f"{row['solve_s']:.2f} | {row['total_s']:.2f} |"
        )
    lines += ["", "Ratios (same system, same run):", ""]
    lines += [
        "| system | dcdm / untrained twin iterations | dcdm / pyamg SA wall |",
        "|---|---:|---:|",
    ]
    by_system = {}
    for row in rows:
        by_system.setdefault(row["system"], {})[row["method"]] = row
    for system, methods in by_system.items():
        learned = methods.get("dcdm")
        twin, amg = methods.get("multigrid"), methods.get("amg")
        if learned is None:
            continue
        iteration_ratio = learned["iterations"] / twin["iterations"] if twin else float("nan")
        wall_ratio = learned["total_s"] / amg["total_s"] if amg else float("nan")
        lines.append(f"| {system} | {iteration_ratio:.2f} | {wall_ratio:.3f} |")
    lines.append("")
    blas.restore_original_limits()
    report = {"machine": _common.machine(), "arguments": vars(args), "rows": rows}
    _common.write_results(args.out, report, "\n".join(lines))


if __name__ == "__main__":
    main()
