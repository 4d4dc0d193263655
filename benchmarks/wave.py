"""Wave surrogate benchmark: learned surrogates against what a user would run instead.

Run from the repository root after generating the test sets and training
(solvers/wave-stencil/card.md, solvers/wave-cp/card.md)::

    python benchmarks/wave.py --model wave-cp=wave-cp --model stencil=RUN/best.safetensors

Every method starts from the first 4 frames of each test trajectory (a model with a shorter
history gets the last of them) and predicts the following 200 frames. Rows per test set:

* ``persistence`` (``u_{n+1} = u_n``) and ``extrapolation`` (leapfrog extrapolation
  ``u_{n+1} = 2 u_n - u_{n-1}``): the trivial floors;
* ``FE h x<f>``: the finite-element simulator that made the data, run from the same scene on
  a mesh ``f`` times coarser and gridded the same way: the classical method at lower cost
  (error vs cost curve); ``FE h x1`` is the reference simulator itself (its cost only);
* each ``--model LABEL=CKPT[,CKPT...]``: one checkpoint per seed, reported as mean +- std
  over the seeds of the per-seed means over the trajectories;
* ``--symmetrize LABEL`` adds the row ``LABEL-d4``: the same checkpoints with every step
  averaged over the eight symmetries of the square (speed and frames moved alike, the
  predictions moved back; the wave equation on the square commutes with them), at 8x the
  cost.

Metrics: nRMSE ``||pred - true||_2 / ||true||_2`` per trajectory and frame, mean over the
trajectories; ``one step`` is teacher-forced (true input frames, every 10th frame of the
first 64); rollout errors at steps 1, 10, 50, 100, 200 and the largest over the 200 steps;
the energy ratio ``E_pred / E_true`` per frame, with ``E = sum (du/dt)^2 + c^2 |grad u|^2``
(finite differences on the grid, hole cells excluded), reported as its range over the 200
steps, and two measures on the scale of the first frame (the field leaves through the
absorbing sides, to ~0.2 % of its norm by step 200, so late nRMSEs divide by almost
nothing): the largest error norm over the rollout divided by the true first frame's norm,
and the peak predicted energy over the peak true energy. Cost: CPU time per frame and
scene (the calling thread's, 1 torch thread), for a 200-frame rollout at batch 1 and
batch 32 (network, stencils and steps included), against the reference FE
simulator's wall time per frame (mesh, assembly, CFL estimate, time stepping and
gridding, one scene at a time: it has no batched mode).

Outputs: ``<out>.json`` and ``<out>.md`` (the tables and the verdicts on the issue's
targets), ``<out>-curves.png`` (nRMSE per step, one panel per test set) and
``<out>.cache.json`` (each checkpoint's scores, reused by a rerun; ``--no-cache`` ignores it).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, os.fspath(Path(__file__).resolve().parent))
from _common import ResultCache, machine, write_results

import physnet.nn

RESULTS = Path(__file__).resolve().parent / "results"
GIVEN = 4
STEPS = 200
REPORTED_STEPS = (1, 10, 50, 100, 200)
SETS = ("rollout", "heldout-speed", "heldout-frequency", "heldout-holes", "domain128")
SET_NOTES = {
    "rollout": "in distribution (training ranges, new scenes)",
    "heldout-speed": "background 1.2-1.5, inclusions 2.0-2.5 (training 0.8-1.2, 0.5-2.0)",
    "heldout-frequency": "Ricker peaks 8-10 Hz (training 5-8 Hz)",
    "heldout-holes": "ellipse and square holes (training: circles)",
    "domain128": "[0, 2]^2 on 128^2 at the training resolution, more holes and sources",
}
FE_FACTORS = (1.25, 1.5, 2.0)  # coarser than 2x, scenes placed 2h apart no longer mesh
DEFAULT_MODELS = ("wave-cp=wave-cp",)
CACHE_VERSION = 2  # 2: scores carry the per-step curve


def nrmse(prediction: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Per trajectory and frame: ``||pred - true|| / ||true||`` over the grid."""
    axes = (-2, -1)
    difference = np.sqrt(np.square(prediction - truth).sum(axes))
    return difference / np.maximum(np.sqrt(np.square(truth).sum(axes)), 1e-30)


def energy(frames: np.ndarray, speed: np.ndarray, interval: float, spacing: float) -> np.ndarray:
    """``sum (du/dt)^2 + c^2 |grad u|^2`` over the non-hole cells, per trajectory and frame
    ``1 ..`` (the time derivative is the backward difference)."""
    inside = (speed > 0)[:, None]
    velocity = np.diff(frames, axis=1) / interval
    u = frames[:, 1:]
    gy = np.diff(u, axis=-2, append=u[..., -1:, :]) / spacing
    gx = np.diff(u, axis=-1, append=u[..., :, -1:]) / spacing
    density = velocity**2 + speed[:, None] ** 2 * (gx**2 + gy**2)
    return (density * inside).sum(axis=(-2, -1))


class TestSet:
    """The trajectories of one ``wave2d`` store, with its config."""

    def __init__(self, name: str, path: Path, samples: int | None) -> None:
        from physnet.datasets import StoreDataset

        with StoreDataset(path) as store:
            self.config = dict(store.attrs["config"])
            self.seed = int(store.attrs["seed"])
            count = len(store) if samples is None else min(samples, len(store))
            rows = [store[i] for i in range(count)]
        self.name, self.path = name, path
        self.speed = np.stack([row["speed"] for row in rows])
        self.frames = np.stack([row["frames"] for row in rows])
        if self.frames.shape[1] < GIVEN + STEPS:
            raise SystemExit(
                f"{path}: {self.frames.shape[1]} frames per trajectory, the benchmark needs "
                f"{GIVEN + STEPS}; regenerate it from datasets/wave2d/"
            )
        self.truth = self.frames[:, GIVEN : GIVEN + STEPS]
        spacing = self.config["length"] / self.config["size"]
        self.true_energy = energy(
            self.frames[:, GIVEN - 1 : GIVEN + STEPS],
            self.speed,
            self.config["frame_interval"],
            spacing,
        )

    def score(self, rollout: np.ndarray, one_step: np.ndarray | None) -> dict:
        """Per-trajectory means of the metrics of a ``(n, STEPS, H, W)`` rollout."""
        errors = nrmse(rollout, self.truth)
        spacing = self.config["length"] / self.config["size"]
        frames = np.concatenate([self.frames[:, GIVEN - 1 : GIVEN], rollout], axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = energy(frames, self.speed, self.config["frame_interval"], spacing) / (
                self.true_energy
            )
        result = {f"rollout_{s}": float(errors[:, s - 1].mean()) for s in REPORTED_STEPS}
        result["rollout_max"] = float(errors.mean(axis=0).max())
        result["curve"] = [float(e) for e in errors.mean(axis=0)]  # nRMSE per step, for the plot
        # The field leaves through the absorbing sides (its norm is ~2 % of the first
        # frame's by step 100, ~0.2 % by step 200), so late nRMSEs divide by almost nothing;
        # these two see a blow-up on the scale of the initial field instead.
        initial = np.sqrt(np.square(self.truth[:, :1]).sum(axis=(-2, -1)))
        absolute = np.sqrt(np.square(rollout - self.truth).sum(axis=(-2, -1)))
        result["error_vs_initial_max"] = float((absolute / initial).mean(axis=0).max())
        result["energy_ratio_min"] = float(np.nanmin(ratio.mean(axis=0)))
        result["energy_ratio_max"] = float(np.nanmax(ratio.mean(axis=0)))
        result["energy_peak_ratio"] = float(
            np.mean(np.nanmax(ratio * self.true_energy, axis=1) / self.true_energy.max(axis=1))
        )
        result["finite"] = bool(np.isfinite(rollout).all())
        if one_step is not None:
            result["one_step"] = float(one_step.mean())
        return result


def one_step_targets(n_frames: int) -> list[int]:
    return list(range(GIVEN, min(n_frames, 64), 10))


def baselines(data: TestSet) -> dict[str, dict]:
    rows = {}
    u = data.frames
    starts = one_step_targets(u.shape[1])
    last = u[:, GIVEN - 1 : GIVEN]
    persistence_one = np.stack([nrmse(u[:, t - 1], u[:, t]) for t in starts])
    rows["persistence"] = data.score(np.repeat(last, STEPS, axis=1), persistence_one)
    velocity = u[:, GIVEN - 1] - u[:, GIVEN - 2]
    steps = np.arange(1, STEPS + 1, dtype=np.float32)[None, :, None, None]
    extrapolated = last + steps * velocity[:, None]
    extrapolation_one = np.stack([nrmse(2 * u[:, t - 1] - u[:, t - 2], u[:, t]) for t in starts])
    with np.errstate(over="ignore", invalid="ignore"):
        rows["extrapolation"] = data.score(extrapolated, extrapolation_one)
    return rows


def fe_rows(data: TestSet, factors: tuple[float, ...], limit: int) -> dict[str, dict]:
    """The FE simulator on coarser meshes (and the reference's cost), same scenes."""
    from physnet.datasets._wave import draw_wave_scene, simulate_wave_scene

    count = min(limit, len(data.frames))
    rows: dict[str, dict] = {}
    for factor in (1.0, *factors):
        config = dict(data.config)
        config["mesh_size"] = data.config["mesh_size"] * factor
        config["n_frames"] = GIVEN + STEPS
        predictions, seconds, nodes = [], 0.0, []
        for index in range(count):
            rng = np.random.default_rng(np.random.SeedSequence(data.seed, spawn_key=(index,)))
            scene = draw_wave_scene(data.config, rng)
            start = time.perf_counter()
            solution, interpolator, _ = simulate_wave_scene(config, scene)
            frames = interpolator(solution.values)
            seconds += time.perf_counter() - start
            nodes.append(solution.mesh.n_nodes)
            predictions.append(frames[GIVEN:])
        row = {
            "ms_per_frame": 1e3 * seconds / (count * (GIVEN + STEPS)),
            "nodes": float(np.mean(nodes)),
            "trajectories": count,
        }
        if factor != 1.0:
            subset = _subset(data, count)
            row.update(subset.score(np.stack(predictions).astype(np.float32), None))
        rows[f"FE h x{factor:g}"] = row
    return rows


def _subset(data: TestSet, count: int) -> TestSet:
    subset = object.__new__(TestSet)
    subset.__dict__.update(data.__dict__)
    subset.speed, subset.frames = data.speed[:count], data.frames[:count]
    subset.truth, subset.true_energy = data.truth[:count], data.true_energy[:count]
    return subset


@torch.inference_mode()
def model_scores(model, data: TestSet, batch: int) -> dict:
    history = model.history
    rollouts, one_step = [], []
    starts = one_step_targets(data.frames.shape[1])
    for begin in range(0, len(data.frames), batch):
        c = torch.from_numpy(data.speed[begin : begin + batch])
        u = torch.from_numpy(data.frames[begin : begin + batch])
        one_step.append(
            np.stack(
                [nrmse(model.step(c, u[:, t - history : t])[:, 0].numpy(), u[:, t].numpy())
                 for t in starts]
            )
        )  # fmt: skip
        rollouts.append(model.rollout(c, u[:, GIVEN - history : GIVEN], STEPS).numpy())
    with np.errstate(over="ignore", invalid="ignore"):
        return data.score(np.concatenate(rollouts), np.concatenate(one_step, axis=1))


@torch.inference_mode()
def model_cost(model, size: int, batch: int, frames: int = STEPS, repeats: int = 3) -> float:
    """Median CPU seconds of the calling thread per frame and scene of a rollout."""
    speed = torch.rand(batch, size, size) + 0.5
    given = torch.randn(batch, model.history, size, size)
    model.rollout(speed, given, 2)
    times = []
    for _ in range(repeats):
        start = time.thread_time()
        model.rollout(speed, given, frames)
        times.append(time.thread_time() - start)
    return float(np.median(times)) / (frames * batch)


def on_domain(model, length: float):
    """The model in evaluation mode on a square of side ``length``: a model whose grid
    spacing is its configuration's ``length`` over the grid size (``wave-leapfrog``) is
    rebuilt with the test set's side, so that a larger grid keeps the training spacing."""
    config = getattr(model, "config", {})
    if "length" in config and config["length"] != length:
        moved = physnet.nn.create(model.name, **{**config, "length": length})
        moved.load_state_dict(model.state_dict())
        model = moved
    return model.eval()


def path_of(name: str | os.PathLike) -> Path | None:
    """The file behind a checkpoint argument (a path, or a pretrained model's name)."""
    from physnet import pretrained

    if Path(name).is_file():
        return Path(name)
    return pretrained.resolve(str(name)) if str(name) in pretrained.available() else None


def file_identity(path: Path | None) -> list | None:
    """What identifies a file's content for the cache: its resolved path, size and time."""
    if path is None:
        return None
    status = path.stat()
    return [str(path.resolve()), status.st_size, status.st_mtime_ns]


class _StepOfClip(torch.nn.Module):
    """``(batch, 1 + history, H, W)`` (speed, then frames) -> the surrogate's next frame."""

    def __init__(self, model) -> None:
        super().__init__()
        self.model = model

    def forward(self, clip: torch.Tensor) -> torch.Tensor:
        return self.model.step(clip[:, 0], clip[:, 1:])


class GroupAveraged:
    """A wave surrogate whose every step is the mean over the eight symmetries ``g`` of the
    square of ``g⁻¹ step(g speed, g frames)`` (``physnet.nn.SymmetryAverage`` on the step)."""

    def __init__(self, model) -> None:
        self.model, self.history = model, model.history
        self.average = physnet.nn.SymmetryAverage(_StepOfClip(model), "d4")

    def parameters(self):
        return self.model.parameters()

    def step(self, speed: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
        return self.average(torch.cat([speed[:, None].to(frames.dtype), frames], dim=1))

    def rollout(self, speed: torch.Tensor, frames: torch.Tensor, steps: int) -> torch.Tensor:
        frames, out = frames[:, -self.history :], []
        for _ in range(steps):
            out.append(self.step(speed, frames))
            frames = torch.cat([frames[:, 1:], out[-1]], dim=1)
        return torch.cat(out, dim=1)


def parameters(model) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def aggregate(rows: list[dict]) -> dict:
    """Mean and std over seeds of every numeric entry."""
    keys = [
        k for k, v in rows[0].items() if isinstance(v, (int, float)) and not isinstance(v, bool)
    ]
    out = {k: float(np.mean([row[k] for row in rows])) for k in keys}
    out.update({f"{k}_std": float(np.std([row[k] for row in rows])) for k in keys})
    if all("curve" in row for row in rows):
        out["curve"] = np.mean([row["curve"] for row in rows], axis=0).tolist()
    out["seeds"] = len(rows)
    out["finite"] = all(row.get("finite", True) for row in rows)
    return out


def _cell(row: dict, key: str, digits: int = 4) -> str:
    if key not in row:
        return "–"
    value = row[key]
    text = f"{value:.{digits}g}" if abs(value) < 1e4 else f"{value:.3g}"
    std = row.get(f"{key}_std")
    return f"{text} ± {std:.2g}" if std is not None and row.get("seeds", 1) > 1 else text


def plot_curves(report: dict, path: Path) -> None:
    """nRMSE per rollout step, one panel per test set, one line per method (the mean over
    its seeds and trajectories)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sets = report["sets"]
    figure, axes = plt.subplots(
        1, len(sets), figsize=(5.5 * len(sets), 4.2), squeeze=False, constrained_layout=True
    )
    for axis, (name, result) in zip(axes[0], sets.items(), strict=True):
        for label, row in result["methods"].items():
            if "curve" in row and label != "extrapolation":
                steps = np.arange(1, len(row["curve"]) + 1)
                axis.plot(steps, row["curve"], label=label, lw=1.2)
        axis.set_yscale("log")
        axis.set_ylim(1e-2, 1e2)
        axis.axhline(1.0, color="k", lw=0.6, ls=":")
        axis.set_xlabel("rollout step (0.02 time units each)")
        axis.set_title(f"{name} ({result['trajectories']} trajectories)")
        axis.grid(True, which="both", alpha=0.3)
    axes[0][0].set_ylabel("nRMSE (mean over trajectories and seeds)")
    axes[0][-1].legend(fontsize="small")
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)


def to_markdown(report: dict) -> str:
    m = report["machine"]
    lines = [
        "# Wave surrogate benchmark: learned surrogates vs the FE simulator and trivial floors",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB; Python {m['python']}, "
        f"torch {m['torch']}, physnet {m['physnet']}; torch threads: 1 (models), FE: "
        "SciPy/NumPy on 1 thread.",
        "",
        f"Command: `{report['command']}`",
        "",
        "Protocol: every method gets the first 4 frames of each test trajectory and predicts "
        f"{STEPS} frames (0.02 s apart). nRMSE per trajectory and frame, mean over the "
        "trajectories; models with several checkpoints: mean ± std over the seeds. One step: "
        "teacher-forced. Energy: E_pred / E_true per frame (range over the rollout). Cost: CPU "
        "ms per frame and scene of a 200-frame rollout (models: 1 thread, batch 1 and 32, "
        "network included; FE: wall ms per frame, mesh to gridded frames, one scene at a "
        "time). Load average at the start: "
        f"{report.get('load_average')} (a shared 2-core machine: other jobs ran beside it).",
    ]
    for name, result in report["sets"].items():
        lines += [
            "",
            f"## {name}: {SET_NOTES.get(name, '')}",
            "",
            f"{result['trajectories']} trajectories, {result['grid']}^2 grid; "
            f"reference FE: {result['fe_ms_per_frame']:.2f} ms per frame.",
            "",
            "| method | params | one step | step 1 | step 10 | step 50 | step 100 | step 200 "
            "| max | max err / ‖u₁‖ | energy ratio | peak energy ratio | ms/frame b=1 "
            "| ms/frame b=32 | × FE (b=32) |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|",
        ]
        for label, row in result["methods"].items():
            energy_range = (
                f"{row['energy_ratio_min']:.2g}–{row['energy_ratio_max']:.2g}"
                if "energy_ratio_min" in row
                else "–"
            )
            parameters_text = f"{row['parameters']:,.0f}" if "parameters" in row else "–"
            cost_key = "ms_per_frame_b32" if "ms_per_frame_b32" in row else "ms_per_frame"
            fe_ratio = row.get("ms_per_frame_b32", row.get("ms_per_frame"))
            ratio = "–" if fe_ratio is None else f"{fe_ratio / result['fe_ms_per_frame']:.3f}"
            lines.append(
                f"| {label} | {parameters_text} | {_cell(row, 'one_step')} "
                + " ".join(f"| {_cell(row, f'rollout_{s}')}" for s in REPORTED_STEPS)
                + f" | {_cell(row, 'rollout_max')} | {_cell(row, 'error_vs_initial_max')} "
                f"| {energy_range} | {_cell(row, 'energy_peak_ratio', 3)} "
                f"| {_cell(row, 'ms_per_frame_b1', 3)} "
                f"| {_cell(row, cost_key, 3)} "
                f"| {ratio} |"
            )
    if report.get("targets"):
        lines += ["", "## Targets", ""] + [f"- {line}" for line in report["targets"]]
    return "\n".join(lines) + "\n"


def check_targets(report: dict, chosen: str | None) -> list[str]:
    sets = report["sets"]
    if chosen is None or "rollout" not in sets or chosen not in sets["rollout"]["methods"]:
        return []
    row = sets["rollout"]["methods"][chosen]
    fe = sets["rollout"]["fe_ms_per_frame"]

    def verdict(ok: bool) -> str:
        return "met" if ok else "MISSED"

    bounded = (
        row["rollout_max"] <= 1 and row["energy_ratio_min"] >= 0.5 and row["energy_ratio_max"] <= 2
    )
    out = [
        f"{chosen}: one-step nRMSE {row['one_step']:.4f} (target <= 0.03): "
        f"{verdict(row['one_step'] <= 0.03)}",
        f"{chosen}: rollout nRMSE at step 10 {row['rollout_10']:.4f} (target <= 0.10): "
        f"{verdict(row['rollout_10'] <= 0.10)}",
        f"{chosen}: rollout nRMSE at step 50 {row['rollout_50']:.4f} (target <= 0.30): "
        f"{verdict(row['rollout_50'] <= 0.30)}",
        f"{chosen}: to step 200 max nRMSE {row['rollout_max']:.3f} (<= 1) and energy ratio "
        f"{row['energy_ratio_min']:.2f}–{row['energy_ratio_max']:.2f} (within 2x): "
        f"{verdict(bounded)}"
        f" (on the first frame's scale: largest error {row['error_vs_initial_max']:.3f} x "
        f"the first frame's norm, peak energy {row['energy_peak_ratio']:.2f} x the true peak)",
    ]
    if "ms_per_frame_b32" in row:  # absent with --no-cost
        out.append(
            f"{chosen}: cost per frame at batch 32 {row['ms_per_frame_b32']:.3f} ms = "
            f"{row['ms_per_frame_b32'] / fe:.3f} x FE {fe:.2f} ms (target <= 0.2): "
            f"{verdict(row['ms_per_frame_b32'] / fe <= 0.2)}"
        )
    if "domain128" in sets and chosen in sets["domain128"]["methods"]:
        big = sets["domain128"]["methods"][chosen]
        worst = max(big[f"rollout_{s}"] / row[f"rollout_{s}"] for s in (10, 50))
        worst = max(worst, big["one_step"] / row["one_step"])
        out.append(
            f"{chosen}: 128^2 errors / 64^2 errors, worst of one step, steps 10 and 50: "
            f"{worst:.2f} (target <= 1.5): {verdict(worst <= 1.5)}"
        )
    # Compressed models (labels "cp-..." or "separable...") against their dense twin
    # (label "dense"), on 3-seed means: parameters <= 0.33x at <= 1.05x the rollout error
    # at steps 10 and 50 (step 1 shown too).
    dense = sets["rollout"]["methods"].get("dense")
    for label, compressed in sets["rollout"]["methods"].items():
        if dense is None or not label.startswith(("cp-", "separable")):
            continue
        p = compressed["parameters"] / dense["parameters"]
        r = {s: compressed[f"rollout_{s}"] / dense[f"rollout_{s}"] for s in (1, 10, 50)}
        out.append(
            f"{label}: {p:.3f} x dense parameters (<= 0.33), rollout error {r[1]:.3f} / "
            f"{r[10]:.3f} / {r[50]:.3f} x dense at steps 1 / 10 / 50 (<= 1.05 at 10 and 50): "
            f"{verdict(p <= 0.33 and r[10] <= 1.05 and r[50] <= 1.05)}"
        )
    return out


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    data_root = Path(os.environ.get("PHYSNET_DATA", Path.home() / ".cache" / "physnet"))
    parser.add_argument("--data-root", type=Path, default=data_root)
    parser.add_argument("--sets", default=",".join(SETS), help="comma-separated test sets")
    parser.add_argument(
        "--model",
        action="append",
        default=None,
        help="LABEL=CKPT[,CKPT...]: one checkpoint (or pretrained name) per seed; repeatable",
    )
    parser.add_argument(
        "--symmetrize",
        action="append",
        default=[],
        metavar="LABEL",
        help="also score the --model LABEL with every step averaged over the square's 8 "
        "symmetries (row LABEL-d4); repeatable",
    )
    parser.add_argument("--chosen", default="wave-cp", help="the label the targets judge")
    parser.add_argument("--samples", type=int, default=None, help="trajectories per set")
    parser.add_argument("--fe-samples", type=int, default=16, help="trajectories for FE rows")
    parser.add_argument("--batch", type=int, default=16, help="batch of the accuracy runs")
    parser.add_argument("--out", default=str(RESULTS / "wave"), help="output stem (.json, .md)")
    parser.add_argument(
        "--no-cache",
        action="store_true",
        help="score every checkpoint again (default: reuse <out>.cache.json, keyed by the test "
        "set, the checkpoint file's size and time, the trajectories and the batch)",
    )
    parser.add_argument(
        "--no-cost", action="store_true", help="skip the models' cost timings (accuracy only)"
    )
    args = parser.parse_args(argv)
    cache = ResultCache(Path(f"{args.out}.cache.json"), CACHE_VERSION, enabled=not args.no_cache)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    specs = []
    for item in args.model or DEFAULT_MODELS:
        label, _, paths = item.partition("=")
        specs.append((label, [p for p in paths.split(",") if p], False))
        if label in args.symmetrize:
            specs.append((f"{label}-d4", specs[-1][1], True))
    unknown = set(args.symmetrize) - {label for label, _, _ in specs}
    if unknown:
        parser.error(f"--symmetrize {sorted(unknown)}: not a --model label")
    report = {
        "command": "python benchmarks/wave.py "
        + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": machine(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "sets": {},
    }
    for name in [n for n in args.sets.split(",") if n]:
        path = args.data_root / f"wave2d-{name}.h5"
        if not path.exists():
            print(f"{name}: {path} is missing; generate it from datasets/wave2d/{name}.toml")
            continue
        data = TestSet(name, path, args.samples)
        size = data.frames.shape[-1]
        print(f"{name}: {len(data.frames)} trajectories, {size}^2", flush=True)
        methods = baselines(data)
        fe = fe_rows(data, FE_FACTORS, args.fe_samples)
        reference = fe.pop("FE h x1")
        methods.update(fe)
        for label, paths, averaged in specs:
            rows = []
            for checkpoint in paths:
                model = on_domain(physnet.nn.load(checkpoint), data.config["length"])
                model = GroupAveraged(model) if averaged else model
                key = ResultCache.key(
                    set=name, data=file_identity(path_of(data.path)), samples=len(data.frames),
                    batch=args.batch, checkpoint=file_identity(path_of(checkpoint)) or checkpoint,
                    **({"symmetrize": "d4"} if averaged else {}),
                )  # fmt: skip
                row = cache.get(key)
                if row is None:
                    row = model_scores(model, data, args.batch)
                    cache.put(key, row)
                row = {**row, "parameters": parameters(model)}
                rows.append(row)
            methods[label] = aggregate(rows)
            # The cost depends on the architecture, not on the weights: timed once per
            # label (its last checkpoint), in this run, beside the other rows.
            if not args.no_cost:
                methods[label]["ms_per_frame_b1"] = 1e3 * model_cost(model, size, 1)
                methods[label]["ms_per_frame_b32"] = 1e3 * model_cost(model, size, 32, repeats=1)
            methods[label]["checkpoints"] = paths
            print(f"  {label}: {json.dumps(methods[label])}", flush=True)
        report["sets"][name] = {
            "path": str(path),
            "trajectories": len(data.frames),
            "grid": size,
            "fe_ms_per_frame": reference["ms_per_frame"],
            "fe_nodes": reference["nodes"],
            "methods": methods,
        }
    report["targets"] = check_targets(report, args.chosen)
    write_results(args.out, report, to_markdown(report))
    if report["sets"]:
        plot_curves(report, Path(f"{args.out}-curves.png"))
    return report


if __name__ == "__main__":
    main()
