"""Iterations of the deep conjugate direction solver for one network across sizes and scenes.

    python benchmarks/dcdm_iterations.py CHECKPOINT|PRETRAINED|untrained [--sizes 32 64]
        [--scenes ...] [--ndim 3] [--compare amg cg]

Prints, for each grid size and scene (standard right-hand side, rtol 1e-6 on the true
residual), the DCDM iteration count, convergence and solve time, and the iteration counts of
the ``--compare`` methods on the same system. ``untrained`` is the ``dcdm-multigrid``
network at its (seeded) initialisation.
"""

from __future__ import annotations

import argparse

import physnet
from physnet.datasets import make_scene


def load_network(spec: str, ndim: int = 3):
    import torch

    from physnet.nn import create, load

    if spec == "untrained":
        torch.manual_seed(0)
        return create("dcdm-multigrid", ndim=ndim)
    return load(spec)


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model", help="checkpoint path, pretrained name or 'untrained'")
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 64])
    parser.add_argument("--scenes", nargs="+", default=["sphere", "boxes", "torus"])
    parser.add_argument("--ndim", type=int, default=3, choices=(2, 3))
    parser.add_argument("--compare", nargs="*", default=[], help="methods to count too")
    parser.add_argument("--rtol", type=float, default=1e-6)
    parser.add_argument("--maxiter", type=int, default=300)
    args = parser.parse_args(argv)
    network = load_network(args.model, args.ndim)
    rows = []
    header = f"{'grid':>7} {'scene':<8} {'iterations':>10} {'converged':>9} {'solve s':>8}"
    print(header + "".join(f" {name:>8}" for name in args.compare))
    for size in args.sizes:
        for name in args.scenes:
            scene = make_scene(name, size, ndim=args.ndim)
            A, b = scene.operator(), scene.rhs_vector()
            options = {"rtol": args.rtol, "maxiter": args.maxiter}
            result = physnet.solve(A, b, method="dcdm", model=network, **options)
            others = {m: physnet.solve(A, b, method=m, **options).iterations for m in args.compare}
            rows.append({"size": size, "scene": name, **result.summary(), "compare": others})
            grid = f"{size}^{args.ndim}"
            print(
                f"{grid:>7} {name:<8} {result.iterations:>10} {result.converged!s:>9} "
                f"{result.solve_time:>8.3f}" + "".join(f" {others[m]:>8}" for m in args.compare)
            )
    return rows


if __name__ == "__main__":
    main()
