"""Radar benchmark: every reconstruction method on the same held-out test volumes, the
iterative baselines tuned on a separate validation split.

Settings (``--settings``, names ``nf<N_f>-snr<dB>[-heldout]``): N_f in {5, 10, 15, 20, 30}
at 30 dB; N_f = 15 at 10 and 20 dB; N_f = 5 and 10 at 10 dB; and the held-out scene family
(cylinders, pipes and clusters of balls, up to 6 targets; the training family is
ellipsoids, boxes and blobs, up to 3) at N_f = 15 and 10, 30 dB. Each setting's data is
one ``radar-mimo`` generation, ``$PHYSNET_DATA/radar-bench/<setting>.h5`` (made on first
use, reused afterwards; seed ``1000 + crc32(setting) % 10^6``, disjoint from the training
seed 0), split into ``val`` (60 volumes) and ``test`` (120 volumes).

Methods, all scored on the same test volumes: the all-zero volume (the floor: these
scenes are sparse), backprojection ``|A^H y| / max`` (the network's input), Tikhonov by
CG and ADMM with TV on the magnitude (:mod:`physnet.solvers.inverse`, batched),
and the learned models (``--models``, default the shipped ``radar-deep2s``) through
:class:`physnet.reconstruction.Reconstructor`.

Tuning, on the first ``--tune-volumes`` (16) validation volumes, maximising the criterion
``(mean slice-SSIM + mean PSNR / 40 dB) / 2``: Tikhonov's ``lambda`` on a log grid with
the CG iteration cap read off one run per ``lambda`` (the iterates of a shorter run are
the first ones of a longer run); ADMM's ``tv_weight`` then ``penalty`` (and ``l1_weight``,
a single value 0 by default) coordinate-wise from a start point, one sweep per
parameter, the iteration count read off each run the same way. Every baseline output
goes through the post-processing a user applies to get ``|x|`` in [0, 1],
``clip(c |x| / max |x|, 0, 1)`` zeroed below ``tau``, with ``(c, tau)`` searched on a
grid for every candidate. The learned models get a ``tau`` search too; their untuned
output is kept as its own row.

Scores per volume (``physnet.metrics``): PSNR (peak 1), slice-averaged SSIM, 3-D SSIM,
PSNR on the target support and the false-alarm energy and fraction off it (support =
``truth > 0`` dilated by one voxel, 26-neighbourhood; fraction above 0.1), and the wall
time per volume (the network's includes its backprojection; the baselines run in batches
of ``--batch-size``; the one-off ``||A||`` is reported apart). Baseline searches and test
scores are cached in ``<out>/radar.cache.json`` (keyed by the dataset file and the
parameters), so a rerun with another model only runs the model; ``--time-baselines N``
re-times the cached baselines on N test volumes in the run itself, so that a runtime ratio
compares methods timed side by side at equal threads.

Run ``python benchmarks/radar.py`` (hours on 2 cores: see the results' timings; ``--quick``
for a smoke run). Results go to ``benchmarks/results/radar.{json,md}`` and the figure
``radar-slices.png``.
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import json
import math
import os
import re
import sys
import time
import zlib
from pathlib import Path
from typing import Any

import numpy as np
from _common import ResultCache, machine, write_results

from physnet.datasets.generate import generate, get_generator
from physnet.datasets.store import StoreDataset
from physnet.metrics import (
    false_alarm_energy,
    false_alarm_fraction,
    psnr,
    ssim,
    ssim3d,
    support_psnr,
)
from physnet.operators import LinearOperator, NearFieldMIMO
from physnet.reconstruction import DEFAULT_MODEL, Reconstructor
from physnet.solvers.inverse import admm_tv, backprojection, operator_norm, tikhonov

RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT_SETTINGS = (  # in the order they run: the headline settings first
    "nf15-snr30",
    "nf15-snr30-heldout",
    "nf10-snr30",
    "nf5-snr30",
    "nf20-snr30",
    "nf30-snr30",
    "nf15-snr10",
    "nf15-snr20",
    "nf5-snr10",
    "nf10-snr10",
    "nf10-snr30-heldout",
)
TRAINING_FAMILY = {"shapes": ["ellipsoid", "box", "blob"], "max_targets": 3}
HELD_OUT_FAMILY = {"shapes": ["cylinder", "pipe", "cluster"], "max_targets": 6}
COUNTS = {"val": 60, "test": 120, "tune": 16}
QUICK_COUNTS = {"val": 4, "test": 6, "tune": 4}
PSNR_SCALE_DB = 40.0
SUPPORT_DILATION = 1
FALSE_ALARM_LEVEL = 0.1
CACHE_VERSION = 2

# The searches (log-spaced grids; the quick run uses a corner of each).
GAINS = [round(2 ** (k / 2), 4) for k in range(-2, 5)]  # 0.5 ... 4
THRESHOLDS = [0.0, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5]
TIKHONOV_SEARCH = {
    "regularization": [1e-4, 1e-3, 1e-2, 1e-1, 1.0],
    "maxiter": [5, 10, 20, 50],
    "rtol": 1e-4,
}
# On 8 validation-like volumes at N_f = 15 (a trial of a wider search with 60 iterations,
# tv_weight 1e-6..1e-3, penalty 1e-3..1e-2 and l1_weight in {0, 1e-4, 1e-3}): the best
# penalty was the largest tried (1e-2), l1 did not help, and the score rose only a little
# from 30 to 60 iterations (0.721 -> 0.728). This CPU affords about 4 ADMM runs per
# setting, so the search starts at penalty 1e-2, tries three TV weights and one larger
# penalty, and stops at 30 iterations (a compute limit, stated in the results).
ADMM_SEARCH = {
    "start": {"tv_weight": 1e-5, "penalty": 1e-2, "l1_weight": 0.0},
    "tv_weight": [1e-5, 1e-4, 1e-3],
    "penalty": [1e-2, 1e-1],
    "l1_weight": [0.0],
    "iterations": [10, 20, 30],
    "cg_iterations": 5,
    "tv_iterations": 10,
}
QUICK_TIKHONOV = {"regularization": [1e-3, 1e-1], "maxiter": [5, 10], "rtol": 1e-4}
QUICK_ADMM = {
    **ADMM_SEARCH,
    "tv_weight": [1e-5, 1e-4],
    "penalty": [1e-3],
    "l1_weight": [0.0],
    "iterations": [3, 6],
}
METRICS = ("psnr", "ssim", "ssim3d", "support_psnr", "false_alarm_energy", "false_alarm_fraction")
BASELINES = ("backprojection-tuned", "tikhonov-cg", "admm-tv")


# --- settings and data ----------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Setting:
    name: str
    n_frequencies: int
    snr_db: float
    held_out: bool

    @classmethod
    def parse(cls, name: str) -> Setting:
        match = re.fullmatch(r"nf(\d+)-snr(\d+)(-heldout)?", name)
        if not match:
            raise argparse.ArgumentTypeError(
                f"setting {name!r}: expected nf<N_f>-snr<dB>[-heldout], e.g. nf15-snr30"
            )
        return cls(name, int(match[1]), float(match[2]), bool(match[3]))

    @property
    def seed(self) -> int:
        return 1000 + zlib.crc32(self.name.encode()) % 1_000_000

    @property
    def config(self) -> dict[str, Any]:
        family = HELD_OUT_FAMILY if self.held_out else TRAINING_FAMILY
        return {
            "n_frequencies": self.n_frequencies,
            "snr_db": [self.snr_db, self.snr_db],
            **family,
        }

    @property
    def family(self) -> str:
        family = HELD_OUT_FAMILY if self.held_out else TRAINING_FAMILY
        kind = "held-out" if self.held_out else "training"
        return f"{kind} ({', '.join(family['shapes'])}; up to {family['max_targets']} targets)"


def data_root() -> Path:
    root = os.environ.get("PHYSNET_DATA", os.path.join("~", ".cache", "physnet"))
    return Path(root).expanduser() / "radar-bench"


def ensure_dataset(setting: Setting, counts: dict[str, int]) -> Path:
    """The setting's generation with its val/test splits, written once and reused."""
    samples = counts["val"] + counts["test"]
    suffix = "" if counts == COUNTS else f"-{counts['val']}v{counts['test']}t"
    root = data_root()
    root.mkdir(parents=True, exist_ok=True)
    plan = root / f"{setting.name}{suffix}.toml"
    lines = [
        'generator = "radar-mimo"',
        f"samples = {samples}",
        f"seed = {setting.seed}",
        "[config]",
        *(f"{key} = {json.dumps(value)}" for key, value in setting.config.items()),
        "[splits]",
        f"val = {counts['val'] / samples!r}",
        f"test = {counts['test'] / samples!r}",
    ]
    text = "\n".join(lines) + "\n"
    if not plan.exists() or plan.read_text() != text:
        plan.write_text(text)
    return generate(plan, root / f"{setting.name}{suffix}.h5", progress=True)


def load_split(path: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    with StoreDataset(path, split=split, fields=["measurements", "target"]) as data:
        samples = [data[i] for i in range(len(data))]
    return (
        np.stack([s["measurements"] for s in samples]),
        np.stack([s["target"] for s in samples]).astype(np.float64),
    )


def dataset_identity(path: Path) -> dict[str, Any]:
    with StoreDataset(path, verify_checksums=False) as data:
        attrs = data.attrs
        return {
            "file": path.name,
            "bytes": path.stat().st_size,
            "seed": attrs.get("seed"),
            "config": attrs.get("config"),
            "n_samples": attrs.get("n_samples"),
            "splits": {name: len(indices) for name, indices in data.splits.items()},
        }


class DenseRadar(LinearOperator):
    """The matrix of a :class:`NearFieldMIMO` held in memory and applied by BLAS.

    Faster than the on-the-fly operator at large batches on some machines; the
    benchmark gives the baselines whichever is faster (``--operator auto``).
    """

    def __init__(self, operator: NearFieldMIMO) -> None:
        self.matrix = operator.dense()
        self.shape = operator.shape
        self.dtype = self.matrix.dtype
        self.grid_shape = operator.grid_shape
        self.measurement_shape = operator.measurement_shape

    def _matvec(self, x: np.ndarray) -> np.ndarray:
        return self.matrix @ x

    def _rmatvec(self, y: np.ndarray) -> np.ndarray:
        return (y.conj() @ self.matrix).conj()

    def _matmat(self, x: np.ndarray) -> np.ndarray:
        return self.matrix @ x

    def _rmatmat(self, y: np.ndarray) -> np.ndarray:
        return (y.T.conj() @ self.matrix).conj().T


def normal_seconds(A: LinearOperator, batch: int, repeats: int = 2) -> float:
    """Seconds per volume of one ``A^H A`` apply at ``batch`` volumes (the baselines' unit)."""
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((A.shape[1], batch)) + 0j).astype(np.complex64)
    A.rmatmat(A.matmat(x))
    start = time.perf_counter()
    for _ in range(repeats):
        A.rmatmat(A.matmat(x))
    return (time.perf_counter() - start) / repeats / batch


def baseline_operator(on_the_fly: NearFieldMIMO, choice: str, batch: int) -> tuple[Any, dict]:
    if choice == "on-the-fly":
        return on_the_fly, {"operator": "on-the-fly"}
    dense = DenseRadar(on_the_fly)
    if choice == "dense":
        return dense, {"operator": "dense"}
    timings = {
        "on-the-fly": normal_seconds(on_the_fly, batch),
        "dense": normal_seconds(dense, batch),
    }
    chosen = min(timings, key=timings.get)
    info = {
        "operator": chosen,
        "normal_ms_per_volume": {k: round(1e3 * v, 2) for k, v in timings.items()},
    }
    return (dense if chosen == "dense" else on_the_fly), info


# --- scores ---------------------------------------------------------------------------


def scores(estimate: np.ndarray, truth: np.ndarray) -> dict[str, list[float]]:
    """Every figure per volume."""
    support = {"dilation": SUPPORT_DILATION}
    values = {
        "psnr": psnr(estimate, truth),
        "ssim": ssim(estimate, truth),
        "ssim3d": ssim3d(estimate, truth),
        "support_psnr": support_psnr(estimate, truth, **support),
        "false_alarm_energy": false_alarm_energy(estimate, truth, **support),
        "false_alarm_fraction": false_alarm_fraction(
            estimate, truth, threshold=FALSE_ALARM_LEVEL, **support
        ),
    }
    return {name: np.atleast_1d(v).astype(float).tolist() for name, v in values.items()}


def criterion(estimate: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """The selection criterion ``(mean SSIM + mean PSNR / 40 dB) / 2`` and its parts."""
    mean_psnr = float(np.mean(psnr(estimate, truth)))
    mean_ssim = float(np.mean(ssim(estimate, truth)))
    return {
        "score": 0.5 * (mean_ssim + mean_psnr / PSNR_SCALE_DB),
        "psnr": mean_psnr,
        "ssim": mean_ssim,
    }


def postprocess(magnitude: np.ndarray, gain: float, threshold: float) -> np.ndarray:
    """``clip(gain |x| / max |x|, 0, 1)`` per volume, zeroed below ``threshold``."""
    peak = magnitude.max(axis=(-3, -2, -1), keepdims=True)
    volume = np.clip(gain * magnitude / np.where(peak > 0, peak, 1.0), 0.0, 1.0)
    return np.where(volume >= threshold, volume, 0.0)


def threshold_only(volume: np.ndarray, threshold: float) -> np.ndarray:
    return np.where(volume >= threshold, volume, 0.0)


def search_postprocessing(
    magnitude: np.ndarray, truth: np.ndarray, gains: list[float], thresholds: list[float]
) -> dict[str, Any]:
    """The best ``(gain, threshold)`` of the grid on these volumes."""
    best: dict[str, Any] = {"score": -math.inf}
    for gain in gains:
        for threshold in thresholds:
            value = criterion(postprocess(magnitude, gain, threshold), truth)
            if value["score"] > best["score"]:
                best = {**value, "gain": gain, "threshold": threshold}
    return best


# --- the cache ------------------------------------------------------------------------


def pack_volume(volume: np.ndarray) -> str:
    """A volume as compact JSON text (float16, zlib, base64), for the figure."""
    data = zlib.compress(np.asarray(volume, dtype=np.float16).tobytes(), level=9)
    return base64.b64encode(data).decode("ascii")


def unpack_volume(text: str, shape: tuple[int, ...]) -> np.ndarray:
    data = zlib.decompress(base64.b64decode(text))
    return np.frombuffer(data, dtype=np.float16).astype(np.float64).reshape(shape)


# --- the methods ----------------------------------------------------------------------


def snapshots_of(run, counts: list[int]) -> dict[int, np.ndarray]:
    """Magnitudes after each iteration count in ``counts``, from one run of ``max(counts)``
    iterations (``run(iterations, callback)``); counts past an early stop get the final
    iterate."""
    kept: dict[int, np.ndarray] = {}

    def callback(iteration: int, x: np.ndarray) -> None:
        if iteration in counts:
            kept[iteration] = np.abs(x)

    final = np.abs(run(max(counts), callback))
    return {count: kept.get(count, final) for count in counts}


def tune_tikhonov(A, norm, y, truth, search, grids) -> dict[str, Any]:
    candidates = []
    grid = truth.shape[1:]
    for regularization in search["regularization"]:

        def run(iterations, callback, regularization=regularization):
            return tikhonov(
                A,
                y,
                regularization=regularization,
                rtol=search["rtol"],
                maxiter=iterations,
                norm=norm,
                batch_size=len(y),
                callback=callback,
            )

        for maxiter, magnitude in snapshots_of(run, search["maxiter"]).items():
            best = search_postprocessing(magnitude.reshape(-1, *grid), truth, *grids)
            params = {"regularization": regularization, "maxiter": maxiter, "rtol": search["rtol"]}
            candidates.append({"params": params, **best})
        print(f"    tikhonov lambda {regularization:g}: best {_best_line(candidates)}", flush=True)
    return _choice(candidates)


def tune_admm(A, norm, y, truth, search, grids) -> dict[str, Any]:
    """Coordinate-wise: sweep tv_weight, then penalty, then l1_weight, each from the best
    point so far; every run gives all the iteration counts of the search."""
    candidates: list[dict[str, Any]] = []
    runs: dict[tuple, float] = {}
    grid = truth.shape[1:]
    point = dict(search["start"])

    def evaluate(params: dict[str, float]) -> float:
        key = tuple(sorted(params.items()))
        if key in runs:
            return runs[key]

        def run(iterations, callback):
            return admm_tv(
                A,
                y,
                iterations=iterations,
                cg_iterations=search["cg_iterations"],
                tv_iterations=search["tv_iterations"],
                norm=norm,
                batch_size=len(y),
                callback=callback,
                **params,
            )

        score = -math.inf
        for iterations, magnitude in snapshots_of(run, search["iterations"]).items():
            best = search_postprocessing(magnitude.reshape(-1, *grid), truth, *grids)
            candidates.append({"params": {**params, "iterations": iterations}, **best})
            score = max(score, best["score"])
        runs[key] = score
        print(f"    admm {params}: best {_best_line(candidates)}", flush=True)
        return score

    for name in ("tv_weight", "penalty", "l1_weight"):
        values = search[name]
        results = {value: evaluate({**point, name: value}) for value in values}
        point[name] = max(results, key=results.get)
    choice = _choice(candidates)
    choice["runs"] = len(runs)
    return choice


def _choice(candidates: list[dict[str, Any]]) -> dict[str, Any]:
    best = max(candidates, key=lambda c: c["score"])
    return {"chosen": best, "candidates": candidates}


def _best_line(candidates: list[dict[str, Any]]) -> str:
    best = max(candidates, key=lambda c: c["score"])
    return (
        f"score {best['score']:.4f} (PSNR {best['psnr']:.2f}, SSIM {best['ssim']:.3f}) at "
        f"{best['params']}, c {best['gain']}, tau {best['threshold']}"
    )


def run_baseline(method: str, A, norm: float, y: np.ndarray, chosen: dict, batch_size: int):
    """The tuned baseline on ``y``: magnitudes before post-processing, and the wall time."""
    params = chosen["params"]
    start = time.perf_counter()
    if method == "tikhonov-cg":
        x = tikhonov(A, y, norm=norm, batch_size=batch_size, progress=True, **params)
    else:
        x = admm_tv(
            A,
            y,
            norm=norm,
            cg_iterations=ADMM_SEARCH["cg_iterations"],
            tv_iterations=ADMM_SEARCH["tv_iterations"],
            batch_size=batch_size,
            progress=True,
            **params,
        )
    magnitude = np.abs(x)
    return magnitude, time.perf_counter() - start


def summarise(per_volume: dict[str, list[float]]) -> dict[str, dict[str, float]]:
    return {
        name: {"mean": float(np.mean(values)), "std": float(np.std(values))}
        for name, values in per_volume.items()
    }


def model_label(model: str) -> str:
    return Path(model).stem if model.endswith(".safetensors") else model


# --- one setting ----------------------------------------------------------------------


def run_setting(setting: Setting, args, cache: ResultCache, figure: dict) -> dict[str, Any]:
    counts = QUICK_COUNTS if args.quick else COUNTS
    counts = {
        "val": args.val or counts["val"],
        "test": args.test or counts["test"],
        "tune": args.tune_volumes or counts["tune"],
    }
    search_tikhonov = QUICK_TIKHONOV if args.quick else TIKHONOV_SEARCH
    search_admm = QUICK_ADMM if args.quick else ADMM_SEARCH
    grids = (GAINS, THRESHOLDS)
    report: dict[str, Any] = {
        "n_frequencies": setting.n_frequencies,
        "snr_db": setting.snr_db,
        "family": setting.family,
        "seed": setting.seed,
    }
    try:
        get_generator("radar-mimo").check_config(setting.config)
    except (ValueError, TypeError) as error:
        print(f"  skipped: the generator does not take this setting ({error})", flush=True)
        return {**report, "skipped": str(error)}
    start = time.perf_counter()
    path = ensure_dataset(setting, {"val": counts["val"], "test": counts["test"]})
    report["dataset"] = dataset_identity(path)
    report["dataset_seconds"] = time.perf_counter() - start
    y_val, truth_val = load_split(path, "val")
    y_test, truth_test = load_split(path, "test")
    y_tune, truth_tune = y_val[: counts["tune"]], truth_val[: counts["tune"]]
    report["volumes"] = {"test": len(y_test), "tune": len(y_tune), "val": len(y_val)}
    grid = truth_test.shape[1:]
    identity = {"dataset": report["dataset"], "tune": len(y_tune), "test": len(y_test)}

    A = NearFieldMIMO(n_frequencies=setting.n_frequencies)
    key = ResultCache.key(kind="norm", n_frequencies=setting.n_frequencies)
    if (cached_norm := cache.get(key)) is None:
        start = time.perf_counter()
        cached_norm = {"norm": operator_norm(A), "seconds": time.perf_counter() - start}
        cache.put(key, cached_norm)
    norm = cached_norm["norm"]
    report["operator_norm"] = cached_norm

    methods: dict[str, dict[str, Any]] = {}
    outputs: dict[str, np.ndarray] = {"truth": truth_test[0]}

    def record(name, per_volume, seconds, first_volume, **extra):
        methods[name] = {
            "metrics": summarise(per_volume),
            "per_volume": per_volume,
            "ms_per_volume": 1e3 * seconds / len(y_test),
            **extra,
        }
        outputs[name] = np.asarray(first_volume, dtype=np.float64)
        row = methods[name]["metrics"]
        print(
            f"  {name:<28} PSNR {row['psnr']['mean']:6.2f}  SSIM {row['ssim']['mean']:.3f}  "
            f"support PSNR {row['support_psnr']['mean']:6.2f}  "
            f"FA energy {row['false_alarm_energy']['mean']:.3f}  "
            f"{methods[name]['ms_per_volume']:9.1f} ms/volume",
            flush=True,
        )

    def record_estimate(name, estimate, seconds, **extra):
        record(name, scores(estimate, truth_test), seconds, estimate[0], **extra)

    record_estimate("zeros", np.zeros_like(truth_test), 0.0)
    start = time.perf_counter()
    bp_test = backprojection(A, y_test, normalize=True).reshape(-1, *grid)
    seconds = time.perf_counter() - start
    record_estimate("backprojection", bp_test, seconds)
    bp_tune = backprojection(A, y_tune, normalize=True).reshape(-1, *grid)
    chosen = search_postprocessing(bp_tune, truth_tune, *grids)
    record_estimate(
        "backprojection-tuned",
        postprocess(bp_test, chosen["gain"], chosen["threshold"]),
        seconds,
        tuning={"chosen": {"params": {}, **chosen}},
    )

    operators: dict[str, tuple[Any, dict]] = {}  # built once per choice (the dense one is big)

    def operator_for(choice: str) -> tuple[Any, dict]:
        if choice not in operators:
            built = baseline_operator(A, choice, args.batch_size)
            operators[choice] = operators[built[1]["operator"]] = built
            print(f"  baselines apply the {built[1]['operator']} operator", flush=True)
        return operators[choice]

    for method, tune, search in (
        ("tikhonov-cg", tune_tikhonov, search_tikhonov),
        ("admm-tv", tune_admm, search_admm),
    ):
        key = ResultCache.key(
            kind="baseline", method=method, search=search, grids=grids, **identity
        )
        entry = cache.get(key)
        if entry is None:
            A_baseline, operator_info = operator_for(args.operator)
            print(f"  tuning {method} on {len(y_tune)} validation volumes", flush=True)
            start = time.perf_counter()
            tuning = tune(A_baseline, norm, y_tune, truth_tune, search, grids)
            tuning_seconds = time.perf_counter() - start
            print(f"  {method} on {len(y_test)} test volumes", flush=True)
            magnitude, seconds = run_baseline(
                method, A_baseline, norm, y_test, tuning["chosen"], args.batch_size
            )
            estimate = postprocess(
                magnitude.reshape(-1, *grid),
                tuning["chosen"]["gain"],
                tuning["chosen"]["threshold"],
            )
            entry = {
                "tuning": tuning,
                "tuning_seconds": tuning_seconds,
                "seconds": seconds,
                "operator": operator_info,
                "batch_size": args.batch_size,
                "per_volume": scores(estimate, truth_test),
                "first_volume": pack_volume(estimate[0]),
            }
            cache.put(key, entry)
        else:
            print(f"  {method}: from the cache", flush=True)
        seconds, timing = entry["seconds"], {}
        if args.time_baselines and len(y_test):
            # Time the tuned baseline again in this process, at this run's thread count and
            # beside the learned models, on the first volumes of the test split (the cached
            # time may come from another run, other threads or another machine load), with
            # the operator and batch it was scored with.
            count = min(args.time_baselines, len(y_test))
            _, fresh = run_baseline(
                method, operator_for(entry["operator"]["operator"])[0], norm, y_test[:count],
                entry["tuning"]["chosen"], entry["batch_size"],
            )  # fmt: skip
            timing = {
                "timed_volumes": count,
                "cached_ms_per_volume": 1e3 * entry["seconds"] / len(y_test),
            }
            seconds = fresh * len(y_test) / count  # ms_per_volume divides by len(y_test)
        record(
            method,
            entry["per_volume"],
            seconds,
            unpack_volume(entry["first_volume"], grid),
            tuning=entry["tuning"],
            tuning_seconds=entry["tuning_seconds"],
            operator=entry["operator"],
            batch_size=entry["batch_size"],
            **timing,
        )

    for model in args.models:
        label = model_label(model)
        # A model conditioned on the SNR is given the setting's (the scenes' true) SNR.
        reconstructor = Reconstructor(
            model,
            batch_size=args.learned_batch_size,
            device="cpu",
            progress=False,
            snr_db=setting.snr_db,
        )
        reconstructor(y_test[: args.learned_batch_size])  # warm-up (oneDNN primitives)
        tune_output = reconstructor(y_tune).astype(np.float64)
        start = time.perf_counter()
        output = reconstructor(y_test).astype(np.float64)
        seconds = time.perf_counter() - start
        record_estimate(f"learned:{label}", output, seconds, model=model)
        best: dict[str, Any] = {"score": -math.inf}
        for threshold in THRESHOLDS:
            value = criterion(threshold_only(tune_output, threshold), truth_tune)
            if value["score"] > best["score"]:
                best = {**value, "threshold": threshold}
        record_estimate(
            f"learned:{label}+tau",
            threshold_only(output, best["threshold"]),
            seconds,
            model=model,
            tuning={"chosen": {"params": {}, **best}},
        )

    report["methods"] = methods
    report["ratios"] = {
        f"admm-tv / {name}": methods["admm-tv"]["ms_per_volume"] / entry["ms_per_volume"]
        for name, entry in methods.items()
        if name.startswith("learned:") and not name.endswith("+tau")
    }
    report["targets"] = targets(setting, methods)
    if setting.name == "nf15-snr30" or not figure:
        figure.clear()
        figure.update(setting=setting.name, volumes=outputs, methods=methods)
    return report


# --- targets, report, figure ----------------------------------------------------------


def best_baseline(methods: dict, metric: str) -> tuple[str, float]:
    name = max(BASELINES, key=lambda m: methods[m]["metrics"][metric]["mean"])
    return name, methods[name]["metrics"][metric]["mean"]


def targets(setting: Setting, methods: dict) -> list[dict[str, Any]]:
    """The issue's targets for each learned model (its validation-tuned ``+tau`` row)."""
    checks = []
    for name in methods:
        if not (name.startswith("learned:") and name.endswith("+tau")):
            continue
        learned = methods[name]["metrics"]
        base_psnr_name, base_psnr = best_baseline(methods, "psnr")
        base_ssim_name, base_ssim = best_baseline(methods, "ssim")
        ssim_value, psnr_value = learned["ssim"]["mean"], learned["psnr"]["mean"]
        rows = []
        if setting.name == "nf15-snr30":
            zeros = methods["zeros"]["metrics"]["ssim"]["mean"]
            ratio = methods["admm-tv"]["ms_per_volume"] / methods[name]["ms_per_volume"]
            rows += [
                ("SSIM >= 0.90", ssim_value >= 0.90, f"{ssim_value:.3f}"),
                ("SSIM above zeros", ssim_value > zeros, f"{ssim_value:.3f} vs {zeros:.3f}"),
                (
                    "SSIM above the best tuned baseline",
                    ssim_value > base_ssim,
                    f"{ssim_value:.3f} vs {base_ssim:.3f} ({base_ssim_name})",
                ),
                (
                    "PSNR >= best baseline + 3 dB",
                    psnr_value >= base_psnr + 3,
                    f"{psnr_value:.2f} vs {base_psnr:.2f} + 3 ({base_psnr_name})",
                ),
                ("runtime <= ADMM-TV / 100", ratio >= 100, f"ADMM-TV / learned = {ratio:.0f}x"),
            ]
        elif setting.held_out or setting.n_frequencies in (5, 10):
            rows += [
                (
                    "PSNR >= best baseline",
                    psnr_value >= base_psnr,
                    f"{psnr_value:.2f} vs {base_psnr:.2f} ({base_psnr_name})",
                ),
                (
                    "SSIM >= best baseline",
                    ssim_value >= base_ssim,
                    f"{ssim_value:.3f} vs {base_ssim:.3f} ({base_ssim_name})",
                ),
            ]
        checks += [
            {"model": name, "target": target, "met": bool(met), "values": values}
            for target, met, values in rows
        ]
    return checks


def _cell(metric: dict[str, float], digits: int) -> str:
    return f"{metric['mean']:.{digits}f} ± {metric['std']:.{digits}f}"


def _params(tuning: dict | None) -> str:
    if not tuning:
        return "-"
    chosen = tuning["chosen"]
    parts = [
        f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in chosen["params"].items()
    ]
    if "gain" in chosen:
        parts.append(f"c={chosen['gain']:g}")
    parts.append(f"tau={chosen['threshold']:g}")
    return ", ".join(parts) + f" (val score {chosen['score']:.4f})"


def markdown(results: dict) -> str:
    info = results["machine"]
    protocol = results["protocol"]
    lines = [
        "# Radar benchmark: every method on the same test volumes, baselines tuned on validation",
        "",
        f"Machine: {info['cpu']}, {info['cores']} cores, {info.get('memory_gib')} GiB, load "
        f"average {info.get('load_average_1min')} at the start; threads used: "
        f"{results['threads']}; physnet {info['physnet']}, numpy {info['numpy']}, torch "
        f"{info['torch']}. Command: `{results['command']}`. Wall time of the run: "
        f"{results['wall_seconds'] / 60:.1f} min.",
        "",
        "## Targets",
        "",
    ]
    for name, setting in results["settings"].items():
        for check in setting.get("targets", []):
            mark = "met" if check["met"] else "**not met**"
            lines.append(
                f"- {name}, {check['model']}: {check['target']}: {mark} ({check['values']})"
            )
    lines += [
        "",
        "## Protocol",
        "",
        f"- Data: per setting one `radar-mimo` generation, {protocol['counts']['val']} "
        f"validation + {protocol['counts']['test']} test volumes; every method is scored on "
        f"the same test volumes; tuning uses the first {protocol['counts']['tune']} "
        "validation volumes.",
        f"- Selection criterion: {protocol['criterion']}.",
        f"- Post-processing searched for every baseline candidate: {protocol['postprocessing']}; "
        f"gains {protocol['gains']}, thresholds {protocol['thresholds']} (the learned models: "
        "thresholds only, on their raw output).",
        f"- Tikhonov-CG search (full grid; `maxiter` read off one run per lambda): "
        f"`{protocol['tikhonov_search']}`.",
        f"- ADMM-TV search (coordinate-wise from `start`, sweeping tv_weight, penalty, "
        f"l1_weight in turn; iterations read off each run): `{protocol['admm_search']}`.",
        f"- Support figures: {protocol['support']}.",
        "- ms/volume: wall time over the test volumes divided by their number; baselines in "
        "batches (the operator they used is listed per setting), the learned models include "
        "their backprojection; `||A||` (Lanczos, once per N_f) is not included.",
    ]
    for name, setting in results["settings"].items():
        lines += ["", f"## {name}: N_f = {setting['n_frequencies']}, {setting['snr_db']:.0f} dB"]
        if "skipped" in setting:
            lines += ["", f"Skipped: {setting['skipped']}"]
            continue
        operator = next(
            (m.get("operator") for m in setting["methods"].values() if m.get("operator")), None
        )
        norm = setting["operator_norm"]
        lines += [
            "",
            f"Scene family: {setting['family']}; {setting['volumes']['test']} test volumes "
            f"(`{setting['dataset']['file']}`, seed {setting['seed']}); `||A||` = "
            f"{norm['norm']:.4g} ({norm['seconds']:.1f} s). "
            f"Baseline operator: {operator}.",
            "",
            "| method | PSNR | SSIM | SSIM 3D | support PSNR | FA energy | FA fraction | "
            "ms / volume |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for method, entry in setting["methods"].items():
            m = entry["metrics"]
            lines.append(
                f"| {method} | {_cell(m['psnr'], 2)} | {_cell(m['ssim'], 3)} | "
                f"{_cell(m['ssim3d'], 3)} | {_cell(m['support_psnr'], 2)} | "
                f"{_cell(m['false_alarm_energy'], 3)} | {_cell(m['false_alarm_fraction'], 4)} | "
                f"{entry['ms_per_volume']:.1f} |"
            )
        for ratio, value in setting["ratios"].items():
            lines.append(f"\nRuntime ratio {ratio}: {value:.1f}x.")
        for method, entry in setting["methods"].items():
            if "timed_volumes" in entry:
                lines.append(
                    f"\n{method} was timed again in this run, at its threads, on the first "
                    f"{entry['timed_volumes']} test volumes: {entry['ms_per_volume']:.1f} ms per "
                    f"volume (the run that scored it: {entry['cached_ms_per_volume']:.1f})."
                )
        lines += ["", "| method | tuned hyper-parameters | tuning time |", "|---|---|---|"]
        for method, entry in setting["methods"].items():
            if "tuning" in entry:
                seconds = entry.get("tuning_seconds")
                when = f"{seconds / 60:.1f} min" if seconds else "-"
                lines.append(f"| {method} | {_params(entry['tuning'])} | {when} |")
    return "\n".join(lines) + "\n"


def save_figure(figure: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = figure["methods"]
    volumes = figure["volumes"]
    baseline = max(
        BASELINES, key=lambda m: methods[m]["tuning"]["chosen"]["score"] if m in methods else -1
    )
    learned = next((m for m in methods if m.startswith("learned:") and m.endswith("+tau")), None)
    columns = [("truth", "truth"), ("backprojection", "backprojection |A^H y| / max")]
    columns.append((baseline, f"best tuned baseline: {baseline}"))
    if learned:
        columns.append((learned, learned))
    truth = volumes["truth"]
    z = int(np.unravel_index(np.argmax(truth), truth.shape)[2])
    # (name, view, aspect): z voxels are half as deep as x and y voxels are wide
    rows = [
        (f"z-slice {z} (x-y)", lambda v: v[:, :, z].T, 1.0),
        ("max over z (x-y)", lambda v: v.max(axis=2).T, 1.0),
        ("max over y (x-z)", lambda v: v.max(axis=1).T, 0.5),
    ]
    fig, axes = plt.subplots(len(rows), len(columns), figsize=(3.2 * len(columns), 8.5))
    for i, (row_name, view, aspect) in enumerate(rows):
        for j, (key, title) in enumerate(columns):
            axis = axes[i, j]
            image = view(np.asarray(volumes[key]))
            axis.imshow(image, origin="lower", vmin=0, vmax=1, cmap="magma", aspect=aspect)
            axis.set_xticks([])
            axis.set_yticks([])
            if i == 0:
                axis.set_title(title, fontsize=8)
            if j == 0:
                axis.set_ylabel(row_name, fontsize=8)
    fig.suptitle(f"{figure['setting']}: first test volume", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--settings",
        default=",".join(DEFAULT_SETTINGS),
        help="comma-separated nf<N_f>-snr<dB>[-heldout] (default: the 11 settings)",
    )
    parser.add_argument(
        "--models",
        default=DEFAULT_MODEL,
        help=f"comma-separated pretrained names or checkpoints (default {DEFAULT_MODEL})",
    )
    parser.add_argument("--quick", action="store_true", help="a smoke run (tiny counts, grids)")
    parser.add_argument("--val", type=int, default=None, help="validation volumes (60)")
    parser.add_argument("--test", type=int, default=None, help="test volumes (120)")
    parser.add_argument("--tune-volumes", type=int, default=None, help="tuning volumes (16)")
    parser.add_argument("--batch-size", type=int, default=32, help="baseline batch (32)")
    parser.add_argument("--learned-batch-size", type=int, default=8)
    parser.add_argument(
        "--operator",
        choices=("auto", "on-the-fly", "dense"),
        default="auto",
        help="the baselines' operator: auto takes the faster at --batch-size (default)",
    )
    parser.add_argument(
        "--threads", type=int, default=1, help="BLAS/torch/numba threads (default 1)"
    )
    parser.add_argument(
        "--time-baselines",
        type=int,
        default=0,
        metavar="N",
        help="re-time the tuned baselines in this run on the first N test volumes, at this "
        "run's threads (default 0: the time of the run that scored them, from the cache); "
        "take N >= --batch-size, as the baselines amortise their cost over a batch",
    )
    parser.add_argument("--no-cache", action="store_true", help="ignore and do not write the cache")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    settings = [Setting.parse(name) for name in args.settings.split(",") if name]
    args.models = [name for name in args.models.split(",") if name]
    import numba
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(args.threads)
    numba.set_num_threads(min(args.threads, numba.config.NUMBA_NUM_THREADS))
    name = "radar-quick" if args.quick else "radar"
    cache = ResultCache(args.out / f"{name}.cache.json", CACHE_VERSION, enabled=not args.no_cache)
    counts = QUICK_COUNTS if args.quick else COUNTS
    results: dict[str, Any] = {
        "machine": machine(),
        "threads": args.threads,
        "command": "python benchmarks/radar.py " + " ".join(sys.argv[1:]),
        "protocol": {
            "counts": {
                "val": args.val or counts["val"],
                "test": args.test or counts["test"],
                "tune": args.tune_volumes or counts["tune"],
            },
            "criterion": f"maximise (mean slice-SSIM + mean PSNR / {PSNR_SCALE_DB:g} dB) / 2 "
            "over the tuning volumes",
            "postprocessing": "clip(c |x| / max |x|, 0, 1) per volume, then zero below tau",
            "gains": GAINS,
            "thresholds": THRESHOLDS,
            "tikhonov_search": QUICK_TIKHONOV if args.quick else TIKHONOV_SEARCH,
            "admm_search": QUICK_ADMM if args.quick else ADMM_SEARCH,
            "support": f"truth > 0 dilated by {SUPPORT_DILATION} voxel (26-neighbourhood); "
            f"false-alarm fraction: off-support voxels above {FALSE_ALARM_LEVEL}",
            "batch_size": args.batch_size,
            "learned_batch_size": args.learned_batch_size,
            "models": args.models,
        },
        "settings": {},
    }
    figure: dict[str, Any] = {}
    start = time.perf_counter()
    with threadpool_limits(limits=args.threads):
        for setting in settings:
            print(
                f"{setting.name}: N_f {setting.n_frequencies}, {setting.snr_db:.0f} dB, "
                f"{setting.family} scenes",
                flush=True,
            )
            t0 = time.perf_counter()
            report = run_setting(setting, args, cache, figure)
            report["wall_seconds"] = time.perf_counter() - t0
            results["settings"][setting.name] = report
    results["wall_seconds"] = time.perf_counter() - start
    if figure:
        args.out.mkdir(parents=True, exist_ok=True)
        save_figure(figure, args.out / f"{name}-slices.png")
    for report in results["settings"].values():  # the per-volume lists stay in the cache
        for entry in report.get("methods", {}).values():
            entry.pop("per_volume", None)
    write_results(args.out / name, results, markdown(results))


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
