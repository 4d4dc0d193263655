"""Radar benchmark: the on-the-fly near-field MIMO adjoint against the dense matrix, and every
reconstruction method's quality and runtime per volume over the compression levels.

Part 1 (N_f = 15, the reference grid): the adjoint ``A^H y`` of :class:`NearFieldMIMO` (NumPy,
factor tables cached) against the dense operator ``A`` (complex64, 547 MiB, built here only)
applied as the reference code does, ``np.einsum('ktrxyz,Nktr->Nxyz', conj(A), y)`` (NumPy's
default ``optimize=False``), and as the best dense alternative, one BLAS matrix product
(``y @ conj(A)``), at batch 1 and 32. Medians of repeats; peak memory (high-water RSS above
the process's baseline) of each, measured in a forked process.

Part 2: for N_f in {5, 10, 15, 20, 30, 40} at 30 dB and 10 dB SNR, the same test volumes
(the ``radar-mimo`` generator with seed 12345, disjoint from the training seed) reconstructed
by backprojection (``|A^H y|`` normalised to its maximum), the all-zero volume (what PSNR
with peak 1 gives a method that finds nothing, on these sparse scenes), Tikhonov (CG on the normal
equations), ADMM with 3-D TV on the magnitude, and Deep2S (the shipped ``radar-deep2s``,
trained at N_f = 15, 30 dB only: the other settings are out of its training distribution).
PSNR (peak 1), SSIM (x-y slices averaged over z) and 3-D SSIM of ``|x|`` against the truth,
and the wall time per volume (the network's includes its backprojection; the one-off
``||A||`` estimate of the iterative methods is reported apart).

Run ``python benchmarks/radar.py`` (about 20 minutes on 2 cores; ``--quick`` for a smoke
run). Results go to ``benchmarks/results/radar.{json,md}`` with the machine described.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import time
from pathlib import Path

import numpy as np
from _common import high_water_bytes, machine, median_time, reset_high_water, write_results

from physnet.datasets.generate import get_generator, sample_of
from physnet.metrics import psnr, ssim, ssim3d
from physnet.operators import NearFieldMIMO
from physnet.reconstruction import Reconstructor
from physnet.solvers.inverse import admm_tv, backprojection, operator_norm, tikhonov

RESULTS = Path(__file__).resolve().parent / "results"
FREQUENCIES = (5, 10, 15, 20, 30, 40)
SNRS = (30.0, 10.0)
SEED = 12345
TIKHONOV = {"regularization": 1e-2, "maxiter": 30, "rtol": 1e-4}
ADMM = {"tv_weight": 1e-5, "penalty": 1e-3, "iterations": 30, "cg_iterations": 5}


def _peak_memory_worker(kind: str, batch: int, queue) -> None:
    rng = np.random.default_rng(0)
    reset_high_water()
    baseline = high_water_bytes()
    A = NearFieldMIMO(n_frequencies=15)
    y = (rng.standard_normal((batch, *A.measurement_shape)) * (1 + 1j)).astype(np.complex64)
    if kind == "on-the-fly":
        A.H @ y
    else:
        dense = A.dense().reshape(15, 12, 13, 25, 25, 49).conj()
        if kind == "dense-einsum":
            np.einsum("ktrxyz,Nktr->Nxyz", dense, y)
        else:
            y.reshape(batch, -1) @ dense.reshape(15 * 156, -1)
    queue.put(high_water_bytes() - baseline)


def peak_memory(kind: str, batch: int) -> int:
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    process = context.Process(target=_peak_memory_worker, args=(kind, batch, queue))
    process.start()
    value = queue.get()
    process.join()
    return int(value)


def adjoint_benchmark(repeats: int) -> dict:
    rng = np.random.default_rng(0)
    A = NearFieldMIMO(n_frequencies=15)
    results: dict = {"n_frequencies": 15, "voxels": A.shape[1], "measurements": A.shape[0]}
    print("building the dense operator (benchmark only) ...", flush=True)
    start = time.perf_counter()
    dense = A.dense().reshape(15, 12, 13, 25, 25, 49)
    dense_conj = np.conj(dense)
    del dense
    results["dense_build_s"] = time.perf_counter() - start
    results["dense_bytes"] = int(dense_conj.nbytes)
    A.H @ np.zeros((1, *A.measurement_shape), np.complex64)  # builds the cached factor tables
    tables = sum(a.nbytes + b.nbytes for a, b in A._tables.values())
    results["on_the_fly_table_bytes"] = int(tables)
    results["distance_table_bytes"] = int(
        A.transmitter_distances.nbytes + A.receiver_distances.nbytes
    )
    rows = []
    for batch in (1, 32):
        y = (rng.standard_normal((batch, *A.measurement_shape)) * (1 + 1j)).astype(np.complex64)
        reference = np.einsum("ktrxyz,Nktr->Nxyz", dense_conj, y, optimize=True)
        ours = A.H @ y
        error = np.linalg.norm(ours.reshape(batch, -1) - reference.reshape(batch, -1))
        error /= np.linalg.norm(reference)
        flat = dense_conj.reshape(15 * 156, -1)
        candidates = {
            "on-the-fly (physnet)": lambda y=y: A.H @ y,
            "dense einsum (reference code)": lambda y=y, dense=dense_conj: np.einsum(
                "ktrxyz,Nktr->Nxyz", dense, y
            ),
            "dense GEMM (y @ conj A)": lambda y=y, flat=flat: y.reshape(len(y), -1) @ flat,
        }
        for name, function in candidates.items():
            count = repeats if not (name.startswith("dense einsum") and batch > 1) else 2
            seconds, times = median_time(function, count)
            rows.append(
                {
                    "method": name,
                    "batch": batch,
                    "seconds_per_call": seconds,
                    "ms_per_volume": 1e3 * seconds / batch,
                    "times": times,
                }
            )
            print(f"  adjoint batch {batch:>2} {name:<30} {1e3 * seconds / batch:9.2f} ms/volume")
        results[f"relative_difference_batch{batch}"] = float(error)
    del dense_conj, flat
    for row in rows:
        kind = {
            "on-the-fly (physnet)": "on-the-fly",
            "dense einsum (reference code)": "dense-einsum",
            "dense GEMM (y @ conj A)": "dense-gemm",
        }[row["method"]]
        row["peak_memory_bytes"] = peak_memory(kind, row["batch"])
    results["rows"] = rows
    return results


def reconstruction_benchmark(volumes: int, frequencies, snrs) -> dict:
    generator = get_generator("radar-mimo")
    reconstructor = Reconstructor(
        "radar-deep2s", batch_size=min(volumes, 8), device="cpu", progress=False
    )
    rows = []
    norms = {}
    for n_frequencies in frequencies:
        A = NearFieldMIMO(n_frequencies=n_frequencies)
        start = time.perf_counter()
        norm = operator_norm(A)
        norms[n_frequencies] = {"norm": norm, "seconds": time.perf_counter() - start}
        reconstructor.operator = A
        for snr in snrs:
            config = generator.check_config({"n_frequencies": n_frequencies, "snr_db": [snr, snr]})
            samples = [sample_of(generator, config, SEED, i) for i in range(volumes)]
            y = np.stack([s["measurements"] for s in samples])
            truth = np.stack([s["target"] for s in samples])
            grid = truth.shape[1:]
            estimates = {"zeros": np.zeros_like(truth)}
            seconds = {"zeros": 0.0}
            start = time.perf_counter()
            estimates["backprojection"] = backprojection(A, y, normalize=True).reshape(-1, *grid)
            seconds["backprojection"] = (time.perf_counter() - start) / volumes
            reconstructor(y[:1])  # warm-up (oneDNN primitives)
            start = time.perf_counter()
            estimates["deep2s"] = reconstructor(y)
            seconds["deep2s"] = (time.perf_counter() - start) / volumes
            start = time.perf_counter()
            x = tikhonov(A, y, norm=norm, **TIKHONOV)
            seconds["tikhonov-cg"] = (time.perf_counter() - start) / volumes
            estimates["tikhonov-cg"] = np.clip(np.abs(x), 0, 1).reshape(-1, *grid)
            start = time.perf_counter()
            x = admm_tv(A, y, norm=norm, **ADMM)
            seconds["admm-tv"] = (time.perf_counter() - start) / volumes
            estimates["admm-tv"] = np.clip(np.abs(x), 0, 1).reshape(-1, *grid)
            for method, estimate in estimates.items():
                reference = truth
                row = {
                    "method": method,
                    "n_frequencies": n_frequencies,
                    "compression_percent": 100 * A.shape[0] / A.shape[1],
                    "snr_db": snr,
                    "volumes": int(estimate.shape[0]),
                    "psnr": float(np.mean(psnr(estimate, reference))),
                    "ssim": float(np.mean(ssim(estimate, reference))),
                    "ssim3d": float(np.mean(ssim3d(estimate, reference))),
                    "seconds_per_volume": seconds[method],
                }
                rows.append(row)
                print(
                    f"  N_f {n_frequencies:>2} SNR {snr:>4.0f} dB {method:<15} PSNR "
                    f"{row['psnr']:6.2f}  SSIM {row['ssim']:.3f}  SSIM3D {row['ssim3d']:.3f}  "
                    f"{1e3 * row['seconds_per_volume']:9.1f} ms/volume",
                    flush=True,
                )
    return {"rows": rows, "operator_norm": norms, "tikhonov": TIKHONOV, "admm": ADMM}


def markdown(results: dict) -> str:
    lines = ["# Radar benchmark", ""]
    info = results["machine"]
    lines.append(
        f"Machine: {info['cpu']}, {info['cores']} cores, {info.get('memory_gib')} GiB; "
        f"threads used: {results['threads']}; physnet {info['physnet']}, numpy {info['numpy']}, "
        f"torch {info['torch']}. Command: `{results['command']}`."
    )
    if "adjoint" in results:
        adjoint = results["adjoint"]
        lines += [
            "",
            "## Adjoint A^H y, N_f = 15, 25x25x49 voxels (complex64)",
            "",
            f"Dense operator: {adjoint['dense_bytes'] / 2**20:.0f} MiB (built in "
            f"{adjoint['dense_build_s']:.1f} s, benchmark only). On-the-fly: distance tables "
            f"{adjoint['distance_table_bytes'] / 2**20:.1f} MiB + cached factor tables "
            f"{adjoint['on_the_fly_table_bytes'] / 2**20:.0f} MiB. Relative difference to the "
            f"dense result: {adjoint['relative_difference_batch1']:.1e} (batch 1).",
            "",
            "| method | batch | ms / volume | ms / call | peak memory (MiB) |",
            "|---|---|---|---|---|",
        ]
        for row in adjoint["rows"]:
            lines.append(
                f"| {row['method']} | {row['batch']} | {row['ms_per_volume']:.2f} | "
                f"{1e3 * row['seconds_per_call']:.1f} | {row['peak_memory_bytes'] / 2**20:.0f} |"
            )
        ours = {r["batch"]: r for r in adjoint["rows"] if r["method"].startswith("on-the-fly")}
        for batch, row in ours.items():
            others = [r for r in adjoint["rows"] if r["batch"] == batch and r is not row]
            ratios = ", ".join(
                f"{r['ms_per_volume'] / row['ms_per_volume']:.1f}x vs {r['method']}" for r in others
            )
            lines.append(f"\nSpeed-up at batch {batch}: {ratios}.")
    if "reconstruction" in results:
        rec = results["reconstruction"]
        lines += [
            "",
            "## Reconstruction quality and runtime per volume",
            "",
            f"Tikhonov: {rec['tikhonov']}; ADMM-TV: {rec['admm']}. `||A||` by Lanczos, once per "
            "operator (not in the per-volume times): "
            + ", ".join(f"N_f {k}: {v['seconds']:.1f} s" for k, v in rec["operator_norm"].items())
            + ". Deep2S is trained at N_f = 15, 30 dB only.",
            "",
            "| N_f | M/N (%) | SNR (dB) | method | volumes | PSNR | SSIM | SSIM 3D | ms / volume |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for row in rec["rows"]:
            lines.append(
                f"| {row['n_frequencies']} | {row['compression_percent']:.2f} | "
                f"{row['snr_db']:.0f} | {row['method']} | {row['volumes']} | {row['psnr']:.2f} | "
                f"{row['ssim']:.3f} | {row['ssim3d']:.3f} | "
                f"{1e3 * row['seconds_per_volume']:.1f} |"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="a smoke run (N_f 5 and 15, 2 volumes)"
    )
    parser.add_argument("--volumes", type=int, default=3, help="test volumes per setting")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="BLAS/torch threads (default 1)")
    parser.add_argument("--skip-adjoint", action="store_true")
    parser.add_argument("--skip-reconstruction", action="store_true")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(args.threads)
    frequencies = (5, 15) if args.quick else FREQUENCIES
    volumes = 2 if args.quick else args.volumes
    results: dict = {
        "machine": machine(),
        "threads": args.threads,
        "command": "python benchmarks/radar.py " + " ".join(sys.argv[1:]),
    }
    with threadpool_limits(limits=args.threads):
        if not args.skip_adjoint:
            print("adjoint: on-the-fly vs dense", flush=True)
            results["adjoint"] = adjoint_benchmark(args.repeats)
        if not args.skip_reconstruction:
            print("reconstruction methods", flush=True)
            results["reconstruction"] = reconstruction_benchmark(volumes, frequencies, SNRS)
    name = "radar-quick" if args.quick else "radar"
    write_results(args.out / name, results, markdown(results))


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
