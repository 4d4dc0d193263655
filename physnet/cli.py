"""The ``physnet`` command.

Every command has ``--json`` for machine-readable output. Bad input is reported in
one line naming what was wrong, without a traceback, with exit status 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["main"]

EXIT_USAGE = 2


class CommandError(Exception):
    """A user-facing error: printed as one line, exit status 2."""


@dataclass
class _Problem:
    """What ``physnet solve`` was asked to solve."""

    operator: Any
    rhs: Any
    description: str
    grid_operator: Any = None  # a GridPoisson when the input was a grid: --out scatters to it


def _add_json(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="machine-readable output")


def _add_overrides(parser: argparse.ArgumentParser, what: str, example: str) -> None:
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"override {what}, e.g. --set {example} (repeatable)",
    )


# --- physnet solve ---------------------------------------------------------------------
def _add_solve_parser(subparsers: Any) -> None:
    from physnet.datasets import available_scenes
    from physnet.solvers import available_methods

    parser = subparsers.add_parser(
        "solve",
        help="solve a Poisson system: a generated scene, a cell-flag grid or a system file",
        description=(
            "Solve A x = b for a generated scene (--scene NAME --size N), a cell-flag grid "
            "(--flags FLAGS.npy [--rhs RHS.npy]) or a system file (SYSTEM.mtx|.npz [--rhs FILE]). "
            "Every method stops on the same rule: ||b - A x|| <= max(rtol ||b||, atol)."
        ),
    )
    source = parser.add_argument_group("input (exactly one)")
    source.add_argument("system", nargs="?", help="Matrix Market (.mtx) or .npz system file")
    source.add_argument("--scene", choices=available_scenes(), help="generated smoke-box scene")
    source.add_argument("--flags", help=".npy cell-flag grid: 0 fluid, 1 solid, 2 air")
    parser.add_argument(
        "--coefficients",
        help="diffusion coefficients of --flags: a .npy of cell values (the grid's shape) or "
        "an .npz of one face array per axis (arr_0, arr_1[, arr_2]: axis d has n_d - 1 "
        "entries along d); positive and finite",
    )
    parser.add_argument("--size", type=int, default=64, help="scene cells per axis (default 64)")
    parser.add_argument("--ndim", type=int, default=3, choices=(2, 3), help="scene dimension")
    parser.add_argument("--seed", type=int, default=0, help="scene seed (default 0)")
    parser.add_argument(
        "--rhs",
        help="right-hand side (.npy/.mtx): on the full grid or on the fluid cells for --flags; "
        "defaults to the scene's standard right-hand side (or the one stored with the system)",
    )
    parser.add_argument(
        "--method",
        default="cg",
        help=f"method, or a comma-separated list to compare: {', '.join(available_methods())} "
        "(default cg)",
    )
    parser.add_argument(
        "--model",
        default=None,
        help="network of --method dcdm: a checkpoint (.safetensors) or pretrained name "
        "(default: the pretrained dcdm-galerkin3d / dcdm-galerkin2d)",
    )
    parser.add_argument("--rtol", type=float, default=1e-6, help="relative tolerance (1e-6)")
    parser.add_argument("--atol", type=float, default=0.0, help="absolute tolerance (0)")
    parser.add_argument(
        "--maxiter",
        type=int,
        default=None,
        help="iteration limit (default min(10 n, max(1000, 20 sqrt(n)))); a solve also "
        "stops when the residual reaches the dtype's accuracy floor or a plateau",
    )
    parser.add_argument("--dtype", choices=("float64", "float32"), default="float64")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    parser.add_argument(
        "--backend",
        choices=("numpy", "torch", "cupy"),
        default=None,
        help="array library (default: numpy on cpu, cupy on cuda when installed, else torch)",
    )
    parser.add_argument("--out", help="write the solution as .npy (full grid for grid inputs)")
    parser.add_argument("--plot", help="write a convergence plot (PNG)")
    parser.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress line (shown on a terminal for solves longer than 2 s)",
    )
    _add_json(parser)
    parser.set_defaults(handler=_solve_command)


def _load_array(path: str) -> np.ndarray:
    from physnet._io import load_npy
    from physnet.datasets import load_vector

    return load_npy(path) if path.endswith(".npy") else load_vector(path)


def _build_problem(args: argparse.Namespace) -> _Problem:
    from physnet.datasets import load_system, make_scene
    from physnet.operators import GridPoisson

    given = [name for name in ("system", "scene", "flags") if getattr(args, name)]
    if len(given) != 1:
        raise CommandError(
            "give exactly one input: a system file, --scene NAME or --flags FLAGS.npy"
            + (f" (got {', '.join(given)})" if given else "")
        )
    if args.coefficients and not args.flags:
        raise CommandError("--coefficients belongs to a cell-flag grid: give --flags FLAGS.npy")
    dtype = np.dtype(args.dtype)
    if args.scene:
        scene = make_scene(args.scene, args.size, ndim=args.ndim, seed=args.seed)
        operator = scene.operator(dtype=dtype)
        rhs = scene.rhs_vector() if args.rhs is None else _grid_rhs(operator, args.rhs)
        shape = "x".join(str(s) for s in scene.flags.shape)
        return _Problem(operator, rhs, f"scene {args.scene} {shape} (seed {args.seed})", operator)
    if args.flags:
        flags = _load_array(args.flags)
        coefficients = None if args.coefficients is None else _load_coefficients(args)
        try:
            operator = GridPoisson(flags, coefficients=coefficients, dtype=dtype)
        except (TypeError, ValueError) as error:
            source = f"{args.flags}" + (f", {args.coefficients}" if args.coefficients else "")
            raise CommandError(f"{source}: {error}") from None
        if args.rhs is None:
            from physnet.datasets.scenes import standard_rhs

            rhs = operator.gather(standard_rhs(flags, seed=args.seed))
        else:
            rhs = _grid_rhs(operator, args.rhs)
        shape = "x".join(str(s) for s in flags.shape)
        return _Problem(operator, rhs, f"flag grid {args.flags} ({shape})", operator)
    if args.system.lower().endswith(".npz") and _is_dense_npz(args.system):
        matrix, rhs = _load_dense_npz(args.system, args.rhs)
    else:
        matrix, rhs = load_system(args.system, rhs=args.rhs)
    if rhs is None:
        raise CommandError(f"{args.system}: the system has no right-hand side; give one with --rhs")
    _check_symmetric(args.system, matrix)
    from physnet.operators import MatrixOperator

    return _Problem(MatrixOperator(matrix.astype(dtype)), rhs, f"system {args.system}")


def _load_coefficients(args: argparse.Namespace) -> Any:
    """The cell array (.npy) or the per-axis face arrays (.npz) of --coefficients."""
    from physnet._io import FileFormatError, check_readable, load_npy

    path = args.coefficients
    if path.endswith(".npy"):
        return load_npy(path)
    if not path.endswith(".npz"):
        raise CommandError(f"--coefficients {path}: expected a .npy (cell values) or .npz file")
    check_readable(path)
    try:
        with np.load(path, allow_pickle=False) as archive:
            names = sorted(archive.files)
            arrays = {name: archive[name] for name in names}
    except (ValueError, OSError, EOFError) as error:
        raise FileFormatError(path, f"not a readable .npz archive ({error})") from None
    expected = [f"arr_{d}" for d in range(len(names))]
    if names != expected:
        raise FileFormatError(
            path,
            f"holds arrays {names}, expected one face array per axis named "
            f"arr_0, arr_1[, arr_2] (as np.savez(path, faces_0, faces_1, ...) writes them)",
        )
    return [arrays[name] for name in expected]


def _is_dense_npz(path: str) -> bool:
    """Whether an .npz lacks SciPy's sparse layout (then it should hold a dense matrix)."""
    from physnet._io import check_readable

    check_readable(path)
    try:
        with np.load(path, allow_pickle=False) as archive:
            return "format" not in getattr(archive, "files", ["format"])
    except (ValueError, OSError, EOFError):
        return False  # load_system reports the unreadable archive


def _load_dense_npz(path: str, rhs_path: str | None) -> tuple[Any, Any]:
    """A dense matrix ``A`` (and optionally ``b``) from an .npz, as a CSR matrix."""
    import scipy.sparse

    from physnet._io import FileFormatError
    from physnet.datasets import load_vector

    layout = (
        "expected SciPy's sparse layout (format, shape, data, indices, indptr[, b]: "
        "scipy.sparse.save_npz or physnet.datasets.save_system) or a dense square matrix "
        "named 'A' (with an optional right-hand side 'b')"
    )
    with np.load(path, allow_pickle=False) as archive:
        names = sorted(archive.files)
        if "A" not in names:
            raise FileFormatError(path, f"holds arrays {names}; {layout}")
        try:
            dense = archive["A"]
            b = archive["b"] if "b" in names else None
        except ValueError as error:
            raise FileFormatError(path, f"unreadable array ({error})") from None
    if dense.ndim != 2 or dense.shape[0] != dense.shape[1] or dense.dtype.kind not in "iufc":
        raise FileFormatError(path, f"field 'A' is {dense.dtype} of shape {dense.shape}; {layout}")
    if not np.all(np.isfinite(dense)):
        raise FileFormatError(path, "field 'A' has NaN or Inf entries")
    matrix = scipy.sparse.csr_matrix(dense.astype(np.result_type(dense.dtype, np.float64)))
    if rhs_path is not None:
        b = load_vector(rhs_path)
    elif b is not None:
        b = np.asarray(b).reshape(-1)
        if b.shape != (matrix.shape[0],) or not np.all(np.isfinite(b)):
            raise FileFormatError(
                path, f"field 'b' has shape {b.shape}, expected ({matrix.shape[0]},) finite values"
            )
    if b is not None and b.shape != (matrix.shape[0],):
        raise FileFormatError(
            rhs_path, f"right-hand side has length {b.size}, expected {matrix.shape[0]}"
        )
    return matrix, b


def _check_symmetric(path: str, matrix: Any) -> None:
    """Every method of ``physnet solve`` needs a symmetric (Hermitian) positive definite A."""
    largest = float(abs(matrix).max()) if matrix.nnz else 0.0
    asymmetry = abs(matrix - matrix.conj().T)
    gap = float(asymmetry.max()) if asymmetry.nnz else 0.0
    if gap > 1e3 * np.finfo(np.float64).eps * largest:
        raise CommandError(
            f"{path}: the matrix is not symmetric (max |A - A^T| = {gap:.3g}, max |A| = "
            f"{largest:.3g}); the methods of physnet solve (CG and its preconditioners, "
            "flexible CG, DCDM) need a symmetric positive definite matrix"
        )


def _grid_rhs(operator: Any, path: str) -> np.ndarray:
    """A right-hand side given on the full grid or on the fluid cells."""
    rhs = _load_array(path)
    if rhs.shape == tuple(operator.grid_shape):
        return operator.gather(rhs)
    if rhs.shape in ((operator.shape[0],), (operator.shape[0], 1)):
        return rhs.reshape(-1)
    raise CommandError(
        f"{path}: right-hand side has shape {rhs.shape}, expected the grid shape "
        f"{tuple(operator.grid_shape)} or ({operator.shape[0]},) (one value per fluid cell)"
    )


def _to_device(array: np.ndarray, args: argparse.Namespace) -> Any:
    from physnet import backend

    device = _device(args.device)
    kind = args.backend
    if kind is None:
        if device == "cpu":
            kind = "numpy"
        else:
            try:
                backend.require_cupy()
                kind = "cupy"
            except ImportError:
                kind = "torch"
    if kind == "numpy":
        if device != "cpu":
            raise CommandError(f"--backend numpy runs on the cpu, not on --device {device}")
        return array
    if kind == "torch":
        return backend.to_torch(array, device=device)
    if not device.startswith("cuda"):
        raise CommandError(f"--backend cupy needs a cuda device, not --device {device}")
    cupy = backend.require_cupy()
    index = int(device.split(":")[1]) if ":" in device else 0
    with cupy.cuda.Device(index):
        return cupy.asarray(array)


def _device(device: str) -> str:
    """``--device``, checked to name a device this machine (and its torch) has."""
    from physnet.backend import check_device

    try:
        return check_device(device)
    except ValueError as error:
        raise CommandError(f"--device {device}: {error}") from None


def _check_output(path: str | None, option: str) -> None:
    """Refuse an output path that cannot be written, before any work is done."""
    if path is None:
        return
    target = Path(path)
    folder = target.parent
    if not folder.is_dir():
        raise CommandError(f"{option} {path}: the folder {str(folder)!r} does not exist")
    if target.is_dir():
        raise CommandError(f"{option} {path}: is a folder, expected a file name")
    if not os.access(folder, os.W_OK):
        raise CommandError(f"{option} {path}: the folder {str(folder)!r} is not writable")


class _Progress:
    """A tqdm line on stderr for one solve, shown only once it has run for 2 seconds."""

    def __init__(self, method: str, maxiter: int, rhs_norm: float) -> None:
        from tqdm.auto import tqdm

        self.scale = 1.0 / rhs_norm if rhs_norm > 0 else 1.0
        self.bar = tqdm(
            total=maxiter, desc=method, unit="it", delay=2.0, file=sys.stderr, leave=False
        )

    def __call__(self, iterations: int, residual_norm: float) -> None:
        self.bar.set_postfix_str(f"rel. residual {residual_norm * self.scale:.2e}", refresh=False)
        self.bar.update(iterations - self.bar.n)

    def close(self) -> None:
        self.bar.close()


def _show_progress(args: argparse.Namespace) -> bool:
    return not (args.no_progress or args.json) and sys.stderr.isatty()


def _warm_up(methods: Sequence[str], model: str | None, ndim: int) -> None:
    """Run every method once on a tiny scene before the timed solves.

    Importing torch or pyamg, reading a network and loading numba's compiled kernels are
    once-per-process costs (up to a second or two), not the per-operator setup that
    ``setup_time`` reports; each method pays them here, alike. A failure is left to the
    real solve, which reports it.
    """
    from physnet.datasets import make_scene
    from physnet.solvers import solve

    small = make_scene("sphere", 8, ndim=ndim)
    for method in methods:
        options = {"model": model} if method == "dcdm" and model else {}
        try:
            solve(small.operator(), small.rhs_vector(), method=method, maxiter=2, **options)
        except Exception:  # the real solve reports any problem
            continue


def _solve_command(args: argparse.Namespace) -> int:
    from physnet import backend
    from physnet.solvers import Status, solve
    from physnet.solvers._system import research_maxiter

    methods = [m.strip() for m in args.method.split(",") if m.strip()]
    if not methods:
        raise CommandError("--method is empty")
    if args.out and len(methods) > 1:
        raise CommandError("--out writes one solution: give a single --method with it")
    _check_output(args.out, "--out")
    _check_output(args.plot, "--plot")
    problem = _build_problem(args)
    rhs = _to_device(np.asarray(problem.rhs, dtype=np.dtype(args.dtype)), args)
    n = problem.operator.shape[0]
    rhs_norm = float(np.linalg.norm(np.asarray(problem.rhs, dtype=np.float64)))
    _warm_up(methods, args.model, getattr(problem.operator, "ndim", 3))
    results = []
    for method in methods:
        options = {"model": args.model} if method == "dcdm" and args.model else {}
        progress = None
        if _show_progress(args):
            progress = _Progress(method, args.maxiter or research_maxiter(n), rhs_norm)
        try:
            result = solve(
                problem.operator,
                rhs,
                method=method,
                rtol=args.rtol,
                atol=args.atol,
                maxiter=args.maxiter,
                progress=progress,
                **options,
            )
        finally:
            if progress is not None:
                progress.close()
        if result.status is Status.INCOMPATIBLE:
            raise CommandError(
                f"{problem.description}: the right-hand side is incompatible with the singular "
                f"operator: {result.info['floating_regions']} fluid region(s) touch no air "
                "cell (no Dirichlet condition), so A x = b needs b to sum to zero over each, "
                f"and its part that does not is {result.info['null_space_component']:.2e} of "
                "||b||; add an air cell (flag 2) or subtract b's mean on each such region"
            )
        results.append(result)
    if args.out:
        from physnet._io import save_npy

        x = results[0].x
        solution = backend.to_numpy(
            problem.grid_operator.scatter(x) if problem.grid_operator is not None else x
        )
        save_npy(args.out, solution)
    if args.plot:
        from physnet.plotting import plot_convergence

        plot_convergence(
            results, args.plot, title=f"{problem.description}, n = {n}", rtol=args.rtol
        )
    records = []
    for result in results:
        record = result.summary()
        record.update(unknowns=n, problem=problem.description, rtol=args.rtol, atol=args.atol)
        record.update({k: v for k, v in result.info.items() if isinstance(v, (int, float, str))})
        records.append(record)
    if args.json:
        print(json.dumps(records[0] if len(records) == 1 else records, indent=2))
    else:
        _print_table(problem.description, n, records)
        if args.out:
            print(f"solution written to {args.out}")
        if args.plot:
            print(f"convergence plot written to {args.plot}")
    return 0 if all(r["converged"] for r in records) else 1


def _print_table(description: str, n: int, records: Sequence[dict]) -> None:
    from physnet.solvers import Status

    print(f"{description}: {n} unknowns, rtol {records[0]['rtol']:g}")
    header = (
        f"{'method':<10} {'converged':>9} {'iter':>6} {'rel. residual':>13} "
        f"{'setup s':>9} {'solve s':>9}"
    )
    print(header)
    print("-" * len(header))
    for r in records:
        print(
            f"{r['method']:<10} {('yes' if r['converged'] else 'NO'):>9} {r['iterations']:>6} "
            f"{r['relative_residual']:>13.3e} {r['setup_time']:>9.3f} {r['solve_time']:>9.3f}"
        )
    for r in records:
        if not r["converged"]:
            print(f"{r['method']}: {r['status']}")
            if r["status"] == str(Status.MAX_ITERATIONS):
                print(f"{r['method']}: raise the limit with --maxiter (it was {r['iterations']})")
        if "singular" in r:
            print(f"{r['method']}: {r['singular']}")


# --- physnet generate / train / evaluate --------------------------------------------------
def _add_generate_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "generate",
        help="generate a dataset into physnet's HDF5 store",
        description=(
            "Generate a dataset (a registered generator name, a dataset folder's generate.toml "
            "or a TOML config file) into one HDF5 store. Deterministic per sample, resumable "
            "(rerun the same command after an interruption), sharded by RANK/WORLD_SIZE."
        ),
    )
    parser.add_argument("dataset", help="generator/dataset name or a generate.toml path")
    parser.add_argument("--out", required=True, help="output HDF5 file")
    parser.add_argument("--samples", type=int, default=None, help="number of samples")
    parser.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    parser.add_argument("--seed", type=int, default=None, help="seed (default: the config's)")
    parser.add_argument("--rank", type=int, default=None, help="shard index (default $RANK)")
    parser.add_argument(
        "--world-size", type=int, default=None, help="number of shards (default $WORLD_SIZE)"
    )
    _add_overrides(parser, "a generator option", "size=32")
    parser.add_argument(
        "--merge",
        action="store_true",
        help="merge the --world-size finished shard files of --out into --out (run once, "
        "after every rank has finished) instead of generating",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_json(parser)
    parser.set_defaults(handler=_generate_command)


def _generate_command(args: argparse.Namespace) -> int:
    import time

    from physnet._toml import parse_assignments
    from physnet.datasets.generate import generate, merge_shards

    if args.workers < 1:
        raise CommandError(f"--workers must be at least 1, got {args.workers}")
    start = time.perf_counter()
    if args.merge:
        if args.world_size is None:
            raise CommandError("--merge needs --world-size, the number of shards to merge")
        path = merge_shards(args.out, args.world_size)
        record = {"path": str(path), "seconds": time.perf_counter() - start}
        print(json.dumps(record, indent=2) if args.json else f"merged into {path}")
        return 0
    path = generate(
        args.dataset,
        args.out,
        samples=args.samples,
        workers=args.workers,
        seed=args.seed,
        rank=args.rank,
        world_size=args.world_size,
        progress=not (args.no_progress or args.json),
        overrides=dict(parse_assignments(args.overrides)) or None,
    )
    seconds = time.perf_counter() - start
    record = {"path": str(path), "seconds": seconds}
    if args.json:
        print(json.dumps(record, indent=2))
    else:
        print(f"wrote {path} in {seconds:.1f} s")
    return 0


def _add_train_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train a model from a TOML config (also under torchrun)",
        description=(
            "Train a registered model on a dataset as a TOML config describes ([model], "
            "[data], [training]). Under torchrun it runs DistributedDataParallel."
        ),
    )
    parser.add_argument("config", help="training config (.toml)")
    parser.add_argument("--out", default=None, help="run directory (checkpoints, metrics)")
    parser.add_argument("--resume", action="store_true", help="resume from --out's last state")
    parser.add_argument(
        "--device", default=None, help="torch device (default: the config's, else cuda if any)"
    )
    _add_overrides(parser, "a config value", "training.epochs=5")
    _add_json(parser)
    parser.set_defaults(handler=_train_command)


def _train_command(args: argparse.Namespace) -> int:
    from physnet.training import TrainingDiverged, load_config, train_from_config
    from physnet.training.distributed import is_main_process

    overrides = list(args.overrides)
    if args.device is not None:
        overrides.append(f"training.device={_device(args.device)}")
    device = load_config(args.config, overrides=overrides).training.device
    if device is not None and args.device is None:
        try:
            from physnet.backend import check_device

            check_device(device)
        except ValueError as error:
            raise CommandError(f"training.device of {args.config}: {error}") from None
    try:
        history = train_from_config(
            args.config, out=args.out, resume=args.resume, overrides=overrides
        )
    except TrainingDiverged as exc:
        print(f"physnet train: {exc}", file=sys.stderr)
        return 1
    if not is_main_process():
        return 0
    summary = {
        "epochs": len(history.records),
        "best_epoch": history.best_epoch,
        "best": history.best_value,
        "monitor": history.monitor,
        "stop_reason": history.stop_reason,
        "last": history.records[-1] if history.records else {},
    }
    if args.json:
        print(json.dumps(summary, indent=2, default=float))
    else:
        print(
            f"{summary['epochs']} epochs ({summary['stop_reason']}); best {summary['monitor']} "
            f"{summary['best']:.4g} at epoch {summary['best_epoch']}"
        )
    return 0


def _add_evaluate_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="metrics of a checkpoint (or pretrained name) on a dataset",
        description=(
            "Evaluate a checkpoint or pretrained model on any dataset physnet.datasets.open "
            "reads (physnet store, FNO .mat, PDEBench HDF5)."
        ),
    )
    parser.add_argument("checkpoint", help="model checkpoint (.safetensors) or pretrained name")
    parser.add_argument("data", help="dataset file")
    parser.add_argument("--split", default=None, help="split of a physnet store (e.g. test)")
    parser.add_argument("--stride", type=int, default=1, help="subsampling stride of readers")
    parser.add_argument(
        "--metrics", default="relative_l2,relative_h1", help="comma-separated metric names"
    )
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--symmetrize",
        default=None,
        metavar="GROUP",
        help=(
            "average the model over a group of exact grid symmetries of the task "
            "(physnet.nn.SymmetryAverage): 'd4' (the square's eight) or 'flips'; costs "
            "|G| forward passes"
        ),
    )
    _add_json(parser)
    parser.set_defaults(handler=_evaluate_command)


def _evaluate_command(args: argparse.Namespace) -> int:
    from physnet.training import evaluate

    metrics = tuple(m.strip() for m in args.metrics.split(",") if m.strip())
    device = _device(args.device)
    model: Any = args.checkpoint
    if args.symmetrize is not None:
        from physnet.nn import SymmetryAverage, load

        model = SymmetryAverage(load(args.checkpoint, device=str(device)), args.symmetrize)
    report = evaluate(
        model,
        args.data,
        metrics=metrics,
        batch_size=args.batch_size,
        split=args.split,
        stride=args.stride,
        device=device,
    )
    if args.json:
        print(json.dumps(report, indent=2, default=float))
    else:
        for key, value in report.items():
            print(f"{key:>14}: {value:.6g}" if isinstance(value, float) else f"{key:>14}: {value}")
    return 0


# --- physnet reconstruct ---------------------------------------------------------------
def _add_reconstruct_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "reconstruct",
        help="reconstruct radar volumes from measurements (backprojection + network)",
        description=(
            "Reconstruct |x| volumes from near-field MIMO measurements in an HDF5 file (a "
            "complex (B, K, T, R) field, e.g. a radar-mimo store) with a trained two-stage "
            "network, in batches, into VOLUMES.h5 (dataset 'reconstruction'). Sharded by "
            "RANK/WORLD_SIZE like generate: each rank writes the volumes i with "
            "i % WORLD_SIZE == RANK to OUT.shard-RANK-of-WORLD_SIZE.h5, and one run with "
            "--merge joins them into OUT (the single-process result, bit for bit)."
        ),
    )
    parser.add_argument(
        "measurements", nargs="?", help="HDF5 file with the measurements (not with --merge)"
    )
    parser.add_argument("--out", required=True, help="output HDF5 file of volumes")
    parser.add_argument(
        "--model", default="radar-deep2s", help="pretrained name or checkpoint (.safetensors)"
    )
    parser.add_argument("--field", default="measurements", help="measurement field of the input")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument(
        "--snr-db",
        type=float,
        default=None,
        help="the measurements' SNR in dB (required by models conditioned on it)",
    )
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available)")
    parser.add_argument("--rank", type=int, default=None, help="shard index (default $RANK)")
    parser.add_argument(
        "--world-size", type=int, default=None, help="number of shards (default $WORLD_SIZE)"
    )
    parser.add_argument(
        "--merge",
        action="store_true",
        help="merge the --world-size finished shard files of --out into --out (run once, "
        "after every rank has finished) instead of reconstructing",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_json(parser)
    parser.set_defaults(handler=_reconstruct_command)


def _reconstruct_command(args: argparse.Namespace) -> int:
    import time

    from physnet.reconstruction import merge_shards, reconstruct_file

    if args.merge:
        if args.world_size is None:
            raise CommandError("--merge needs --world-size, the number of shards to merge")
        if args.measurements is not None:
            raise CommandError("--merge takes no measurements file, only --out and --world-size")
        _check_output(args.out, "--out")
        start = time.perf_counter()
        record = merge_shards(args.out, args.world_size)
        record["seconds"] = time.perf_counter() - start
        if args.json:
            print(json.dumps(record, indent=2))
        else:
            print(
                f"merged {args.world_size} shards: {record['volumes']} volumes into {record['out']}"
            )
        return 0
    if args.measurements is None:
        raise CommandError("the measurements file is missing (physnet reconstruct FILE --out ...)")
    if args.batch_size < 1:
        raise CommandError(f"--batch-size {args.batch_size}: expected a positive integer")
    device = None if args.device is None else _device(args.device)
    _check_output(args.out, "--out")
    report = reconstruct_file(
        args.measurements,
        args.out,
        args.model,
        field=args.field,
        batch_size=args.batch_size,
        device=device,
        progress=not (args.no_progress or args.json),
        snr_db=args.snr_db,
        rank=args.rank,
        world_size=args.world_size,
    )
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        shard = (
            f" (shard {report['rank']} of {report['world_size']})"
            if report["world_size"] > 1
            else ""
        )
        conditions = ", ".join(
            f"{name} = {value:g}" for name, value in report["conditions"].items()
        )
        print(
            f"wrote {report['volumes']} volumes {tuple(report['grid_shape'])} to {report['out']}"
            f"{shard} in {report['seconds']:.1f} s "
            f"({1e3 * report['seconds_per_volume']:.1f} ms per volume)\n"
            f"model {report['model']}, N_f = {report['n_frequencies']}"
            + (f", conditioned on {conditions}" if conditions else " (not conditioned)")
        )
    return 0


# --- physnet bench ---------------------------------------------------------------------
def _add_bench_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "bench",
        help="run a benchmark from the source tree's benchmarks/ folder",
        description="Run benchmarks/NAME.py of a source checkout; extra arguments are passed on.",
    )
    parser.add_argument("name", help="benchmark name, e.g. poisson")
    parser.add_argument("arguments", nargs=argparse.REMAINDER, help="arguments for the benchmark")
    parser.set_defaults(handler=_bench_command)


def _bench_command(args: argparse.Namespace) -> int:
    import runpy

    folder = Path(__file__).resolve().parent.parent / "benchmarks"
    script = folder / f"{args.name}.py"
    if not script.is_file():
        available = sorted(p.stem for p in folder.glob("*.py")) if folder.is_dir() else []
        raise CommandError(
            f"no benchmark named {args.name!r}"
            + (
                f"; available: {', '.join(available)}"
                if available
                else " (benchmarks live in a source checkout of physnet)"
            )
        )
    sys.argv = [str(script), *args.arguments]
    sys.path.insert(0, str(folder))  # as `python benchmarks/NAME.py` would
    runpy.run_path(str(script), run_name="__main__")
    return 0


# --- entry point -----------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    from physnet import __version__

    parser = argparse.ArgumentParser(prog="physnet", description="physnet: learned physics solvers")
    parser.add_argument("--version", action="version", version=f"physnet {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_solve_parser(subparsers)
    _add_generate_parser(subparsers)
    _add_train_parser(subparsers)
    _add_evaluate_parser(subparsers)
    _add_reconstruct_parser(subparsers)
    _add_bench_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``physnet`` command; returns the exit status."""
    from physnet._io import FileFormatError

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except (CommandError, FileFormatError, OSError, ValueError, TypeError, ImportError) as exc:
        message = " ".join(str(exc).split())  # one line, whatever the message held
        print(f"physnet {args.command}: error: {message}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"physnet {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
