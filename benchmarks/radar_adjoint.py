"""Radar operator benchmark: the on-the-fly near-field MIMO adjoint and forward map against the
dense matrix, at batch 1 and 32.

N_f = 15, the reference 25 x 25 x 49 grid, complex64. The adjoint ``A^H y`` of
:class:`NearFieldMIMO` (NumPy, factor tables cached, the operator of one voxel per orbit of
the geometry's 4 symmetries applied to the batch stacked with its row-permuted copies; fused
Numba kernels for small stacked batches, cache-sized tiles applied by three real BLAS
products for larger ones), the same with ``symmetric=False``, against the dense
operator ``A`` (547 MiB, built here only) applied as the reference code does,
``np.einsum('ktrxyz,Nktr->Nxyz', conj(A), y)`` (NumPy's default ``optimize=False``), and as
the best dense alternative, one BLAS matrix product (``y @ conj(A)``). The forward map
``A x`` likewise against ``np.einsum('ktrxyz,Nxyz->Nktr', A, x)`` and ``x @ A^T``.

Wall times are medians of repeats taken round robin over the methods (so that the load of a
shared machine changes them alike; the dense einsum, slow at batch 32, twice). Peak memory is
the high-water RSS above the process's baseline, each method in its own forked process, forked
before the parent runs anything (forking after Numba's OpenMP thread pool started is unsafe).

Run ``python benchmarks/radar_adjoint.py`` (about 3 minutes at 1 thread; ``--threads N``
for N BLAS and Numba threads). Results go to ``benchmarks/results/radar-adjoint.{json,md}``
with the machine described (its load average included: compare ratios within one run).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import queue as queue_module
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from _common import high_water_bytes, machine, median_time, reset_high_water, write_results

from physnet.operators import NearFieldMIMO
from physnet.operators.radar import _NumpyCore

RESULTS = Path(__file__).resolve().parent / "results"
N_FREQUENCIES = 15
BATCHES = (1, 32)
GRID = (25, 25, 49)
OURS, PLAIN, EINSUM_METHOD, GEMM = METHODS = (
    "on-the-fly (physnet)",
    "on-the-fly, symmetric=False",
    "dense einsum (reference code)",
    "dense GEMM",
)
EINSUM = {
    "adjoint": "ktrxyz,Nktr->Nxyz",
    "forward": "ktrxyz,Nxyz->Nktr",
}


def _operands(A: NearFieldMIMO, direction: str, batch: int) -> np.ndarray:
    rng = np.random.default_rng(batch)
    shape = (batch, *A.measurement_shape) if direction == "adjoint" else (batch, *GRID)
    return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64)


def _dense(A: NearFieldMIMO, direction: str) -> np.ndarray:
    """``conj(A)`` for the adjoint, ``A`` for the forward map, shaped ``(K, T, R, X, Y, Z)``."""
    dense = A.dense().reshape(*A.measurement_shape, *GRID)
    return np.conj(dense, out=dense) if direction == "adjoint" else dense


def _functions(
    operators: dict[str, NearFieldMIMO],
    dense: np.ndarray | None,
    direction: str,
    operand: np.ndarray,
):
    """The ways to apply ``A^H`` (adjoint) or ``A`` (forward): ``operators`` maps
    :data:`OURS` and :data:`PLAIN` to the operator with and without its symmetry reduction;
    ``dense`` from :func:`_dense` (``None`` when only the on-the-fly ones are called)."""
    batch = operand.shape[0]
    A, plain = operators[OURS], operators[PLAIN]
    flat = None if dense is None else dense.reshape(A.shape)
    if direction == "adjoint":
        return {
            OURS: lambda: A.H @ operand,
            PLAIN: lambda: plain.H @ operand,
            EINSUM_METHOD: lambda: np.einsum(EINSUM["adjoint"], dense, operand),
            GEMM: lambda: operand.reshape(batch, -1) @ flat,
        }
    return {
        OURS: lambda: A @ operand.reshape(batch, -1),
        PLAIN: lambda: plain @ operand.reshape(batch, -1),
        EINSUM_METHOD: lambda: np.einsum(EINSUM["forward"], dense, operand),
        GEMM: lambda: operand.reshape(batch, -1) @ flat.T,
    }


def _operators() -> dict[str, NearFieldMIMO]:
    return {
        OURS: NearFieldMIMO(n_frequencies=N_FREQUENCIES),
        PLAIN: NearFieldMIMO(n_frequencies=N_FREQUENCIES, symmetric=False),
    }


def _peak_memory_worker(
    method: str, direction: str, batch: int, threads: int, warm: bool, queue
) -> None:
    _limit_threads(threads)
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=threads):
        if warm:  # load the Numba kernels (about 80 MiB of compiled code) before the baseline
            small = NearFieldMIMO(n_frequencies=2, grid_shape=(5, 5, 5))
            for count in (1, 8):
                small.H @ (small @ np.ones((count, small.shape[1]), np.complex64))
        reset_high_water()
        baseline = high_water_bytes()
        operators = _operators()
        A = operators[OURS]
        operand = _operands(A, direction, batch)
        dense = None if method in (OURS, PLAIN) else _dense(A, direction)
        _functions(operators, dense, direction, operand)[method]()
        queue.put(high_water_bytes() - baseline)


def peak_memory(method: str, direction: str, batch: int, threads: int, warm: bool = False) -> int:
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    process = context.Process(
        target=_peak_memory_worker, args=(method, direction, batch, threads, warm, queue)
    )
    process.start()
    while True:
        try:
            value = queue.get(timeout=5)
            break
        except queue_module.Empty:
            if not process.is_alive():
                raise RuntimeError(
                    f"peak memory of {method} ({direction}, batch {batch}): the worker exited "
                    f"with status {process.exitcode}"
                ) from None
    process.join()
    return int(value)


def _limit_threads(threads: int) -> None:
    import numba

    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))


def benchmark(repeats: int, threads: int) -> dict:
    memory = {
        (direction, batch, method): peak_memory(method, direction, batch, threads)
        for direction in EINSUM
        for batch in BATCHES
        for method in METHODS
    }
    warm_memory = {
        (direction, batch): peak_memory(OURS, direction, batch, threads, warm=True)
        for direction in EINSUM
        for batch in BATCHES
    }
    _limit_threads(threads)
    operators = _operators()
    A, plain = operators[OURS], operators[PLAIN]
    for operator in operators.values():  # builds the cached factor tables
        operator.H @ np.zeros((1, *A.measurement_shape), np.complex64)
    results: dict = {
        "n_frequencies": N_FREQUENCIES,
        "grid_shape": list(GRID),
        "voxels": A.shape[1],
        "measurements": A.shape[0],
        "symmetries": len(A.symmetry()),
        "representative_voxels": A.symmetry().reduced.shape[1],
        # NearFieldMIMO uses its tiles from these batches (NumPy) on; the symmetric operator
        # stacks the batch with its permuted copies, so divides them by its group's order
        "tile_batch": {"forward": _NumpyCore.TILE_BATCH, "adjoint": _NumpyCore.ADJOINT_TILE_BATCH},
        "on_the_fly_table_bytes": A._cached_table_bytes(),
        "plain_table_bytes": plain._cached_table_bytes(),
    }
    results["distance_table_bytes"] = int(
        A.transmitter_distances.nbytes + A.receiver_distances.nbytes
    )
    rows = []
    for direction in EINSUM:
        print(f"building the dense operator for the {direction} (benchmark only) ...", flush=True)
        start = time.perf_counter()
        dense = _dense(A, direction)
        results["dense_build_s"] = time.perf_counter() - start
        results["dense_bytes"] = int(dense.nbytes)
        for batch in BATCHES:
            operand = _operands(A, direction, batch)
            functions = _functions(operators, dense, direction, operand)
            for function in functions.values():  # warm-up: Numba kernels, BLAS buffers
                if function is not functions[EINSUM_METHOD]:
                    function()
            reference = functions[GEMM]().reshape(batch, -1)
            for method, key in ((OURS, ""), (PLAIN, "_plain")):
                ours = functions[method]().reshape(batch, -1)
                difference = np.linalg.norm(ours - reference) / np.linalg.norm(reference)
                results[f"{direction}_relative_difference{key}_batch{batch}"] = float(difference)
            # Round robin, so that a change in the machine's load hits every method alike;
            # the einsum at batch > 1 (seconds per call) only twice, after the others.
            slow = {EINSUM_METHOD} if batch > 1 else set()
            times = {method: [] for method in functions}
            for _ in range(repeats):
                for method, function in functions.items():
                    if method not in slow:
                        times[method] += median_time(function, 1)[1]
            for method in slow:
                times[method] = median_time(functions[method], 2)[1]
            for method in functions:
                seconds = statistics.median(times[method])
                rows.append(
                    {
                        "direction": direction,
                        "method": method,
                        "batch": batch,
                        "seconds_per_call": seconds,
                        "ms_per_volume": 1e3 * seconds / batch,
                        "times": times[method],
                        "peak_memory_bytes": memory[direction, batch, method],
                    }
                )
                if method == OURS:
                    rows[-1]["peak_memory_warm_bytes"] = warm_memory[direction, batch]
                print(
                    f"  {direction:<7} batch {batch:>2} {method:<30} "
                    f"{1e3 * seconds / batch:9.2f} ms/volume",
                    flush=True,
                )
        del dense
    results["rows"] = rows
    return results


def markdown(results: dict) -> str:
    info = results["machine"]
    bench = results["benchmark"]
    lines = [
        "# Radar operator benchmark: on the fly vs the dense matrix",
        "",
        f"Machine: {info['cpu']}, {info['cores']} cores, {info.get('memory_gib')} GiB, "
        f"1-minute load average {info['load_average_1min_start']} at the start and "
        f"{info['load_average_1min']} at the end; threads used: "
        f"{results['threads']} (BLAS and Numba); physnet {info['physnet']}, numpy "
        f"{info['numpy']}, numba {info['numba']}. Command: `{results['command']}`.",
        "",
        f"N_f = {bench['n_frequencies']}, {'x'.join(map(str, bench['grid_shape']))} voxels, "
        f"complex64. Dense operator: {bench['dense_bytes'] / 2**20:.0f} MiB (built in "
        f"{bench['dense_build_s']:.1f} s, benchmark only). On the fly: distance tables "
        f"{bench['distance_table_bytes'] / 2**20:.1f} MiB + cached factor tables "
        f"{bench['on_the_fly_table_bytes'] / 2**20:.0f} MiB "
        f"({bench['plain_table_bytes'] / 2**20:.0f} MiB with symmetric=False). The geometry "
        f"has {bench['symmetries']} symmetries, so the on-the-fly operator applies the "
        f"operator of {bench['representative_voxels']} representative voxels to the batch "
        f"stacked with its {bench['symmetries'] - 1} row-permuted copies. Fused Numba kernels "
        f"below {bench['tile_batch']['forward']} (adjoint {bench['tile_batch']['adjoint']}) "
        "stacked volumes, 3M tiles from there on. Relative difference to the dense GEMM: "
        + ", ".join(
            f"{direction} batch {batch} "
            f"{bench[f'{direction}_relative_difference_batch{batch}']:.1e} "
            f"({bench[f'{direction}_relative_difference_plain_batch{batch}']:.1e})"
            for direction in EINSUM
            for batch in BATCHES
        )
        + " (in brackets: symmetric=False).",
        "",
        "Peak memory of the on-the-fly applies includes loading the compiled Numba kernels "
        "(about 80 MiB, once per process); in brackets, with them loaded before the baseline.",
        "",
        "| direction | method | batch | ms / volume | ms / call | peak memory (MiB) |",
        "|---|---|---|---|---|---|",
    ]
    for row in bench["rows"]:
        memory = f"{row['peak_memory_bytes'] / 2**20:.0f}"
        if "peak_memory_warm_bytes" in row:
            memory += f" ({row['peak_memory_warm_bytes'] / 2**20:.0f})"
        lines.append(
            f"| {row['direction']} | {row['method']} | {row['batch']} | "
            f"{row['ms_per_volume']:.2f} | {1e3 * row['seconds_per_call']:.1f} | {memory} |"
        )
    lines.append("")
    for direction in EINSUM:
        for batch in BATCHES:
            rows = [r for r in bench["rows"] if r["direction"] == direction and r["batch"] == batch]
            ours = next(r for r in rows if r["method"] == OURS)
            ratios = ", ".join(
                f"{r['ms_per_volume'] / ours['ms_per_volume']:.2f}x vs {r['method']}"
                for r in rows
                if r is not ours
            )
            lines.append(f"- {direction}, batch {batch}: on the fly is {ratios}.")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1, help="BLAS/Numba threads (default 1)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    from threadpoolctl import threadpool_limits

    load_at_start = round(os.getloadavg()[0], 2)
    with threadpool_limits(limits=args.threads):
        report = benchmark(args.repeats, args.threads)
    # machine() starts Numba's thread pool, after which forking is unsafe (OpenMP layer):
    # it runs after the forked memory measurements.
    results: dict = {
        "machine": {**machine(), "load_average_1min_start": load_at_start},
        "threads": args.threads,
        "command": "python benchmarks/radar_adjoint.py " + " ".join(sys.argv[1:]),
        "benchmark": report,
    }
    write_results(args.out / "radar-adjoint", results, markdown(results))


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
