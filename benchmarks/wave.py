"""Wave surrogate benchmark: dense vs a-priori compressed (CP) WaveCNN, and tensorly-torch.

Run from the repository root after training (solvers/wave-cp/card.md)::

    python benchmarks/wave.py

For every model: trainable parameters, activation memory (bytes autograd saves for the
backward pass of one training step at batch 1), CPU latency of one surrogate step at batch
1 and 32 (medians, ``--threads`` torch threads), and the nRMSE ``||pred - true||_2 /
||true||_2`` per sample (mean over the test trajectories of
``$PHYSNET_DATA/wave2d-rollout.h5``) of one step (teacher-forced) and of an autoregressive
rollout at steps 1, 10 and 50. Rows:

* ``dense``: the dense baseline (``runs/wave-dense/best.safetensors``);
* ``cp-r<R>``: trained CP models (the pretrained ``wave-cp`` and ``runs/wave-cp-r<R>``);
  ``cp-r<R> reconstructed``: the same weights run as one dense convolution per layer;
* ``tltorch-cp-r<R>``: the same trained CP weights copied into tensorly-torch's
  ``FactorizedConv`` (CP, ``implementation="factorized"``), when tensorly-torch is
  installed: same function, tensorly-torch's execution;
* ``cp-r<R> (untrained)`` for ``--ranks`` without a checkpoint: size and speed only.

The FE solver's time per frame on one test scene is printed for scale.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, os.fspath(Path(__file__).resolve().parent))
from _common import machine, write_results

import physnet.nn
from physnet.nn import CPConv2d, WaveCNN

RESULTS = Path(__file__).resolve().parent / "results"
ROOT = Path(__file__).resolve().parents[1]
ROLLOUT_STEPS = (1, 10, 50)


def parameter_count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def activation_bytes(model: WaveCNN, size: int) -> int:
    """Bytes of the distinct tensors autograd saves in one training step at batch 1."""
    seen: dict[int, int] = {}
    parameters = {p.data_ptr() for p in model.parameters()}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        pointer = tensor.untyped_storage().data_ptr()
        if pointer not in parameters:
            seen[pointer] = max(seen.get(pointer, 0), tensor.untyped_storage().nbytes())
        return tensor

    speed = torch.rand(1, size, size)
    frames = torch.randn(1, model.history, size, size)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        model.step(speed, frames).sum()
    return sum(seen.values())


def latency_s(model: WaveCNN, batch: int, size: int, repeats: int) -> tuple[float, float]:
    """Medians of one step's wall time and of the CPU time of the calling thread.

    With one torch thread the step runs in the calling thread, so its CPU time is the
    latency the step would have on an idle core: robust on a shared machine, where the
    wall time also counts the time other processes hold the core.
    """
    speed = torch.rand(batch, size, size)
    frames = torch.randn(batch, model.history, size, size)
    wall, cpu = [], []
    with torch.inference_mode():
        for _ in range(3):
            model.step(speed, frames)
        for _ in range(repeats):
            start, start_cpu = time.perf_counter(), time.thread_time()
            model.step(speed, frames)
            cpu.append(time.thread_time() - start_cpu)
            wall.append(time.perf_counter() - start)
    return statistics.median(wall), statistics.median(cpu)


def relative_errors(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per sample and frame: ``||pred - true|| / ||true||`` over the grid."""
    difference = (prediction - target).flatten(-2).norm(dim=-1)
    return difference / target.flatten(-2).norm(dim=-1)


@torch.inference_mode()
def accuracy(model: WaveCNN, speed: torch.Tensor, frames: torch.Tensor, batch: int) -> dict:
    history, n_frames = model.history, frames.shape[1]
    steps = min(max(ROLLOUT_STEPS), n_frames - history)
    starts = list(range(history, n_frames, 10))
    one_step, rollout = [], []
    for begin in range(0, len(frames), batch):
        c, u = speed[begin : begin + batch], frames[begin : begin + batch]
        for t in starts:
            predicted = model.step(c, u[:, t - history : t])[:, 0]
            one_step.append(relative_errors(predicted, u[:, t]))
        predicted = model.rollout(c, u[:, :history], steps)
        rollout.append(relative_errors(predicted, u[:, history : history + steps]))
    rollout = torch.cat(rollout)
    result = {"one_step_nrmse": torch.cat(one_step).mean().item()}
    for step in ROLLOUT_STEPS:
        if step <= steps:
            result[f"rollout_nrmse_{step}"] = rollout[:, step - 1].mean().item()
    return result


def tltorch_copy(model: WaveCNN) -> torch.nn.Module | None:
    """``model`` with each CPConv2d replaced by tensorly-torch's CP FactorizedConv holding the
    same factors (None without tensorly-torch)."""
    try:
        import tltorch
    except ImportError:
        return None
    clone = copy.deepcopy(model)
    for name, child in list(clone.named_modules()):
        if not isinstance(child, CPConv2d):
            continue
        conv = tltorch.FactorizedConv(
            child.in_channels,
            child.out_channels,
            child.kernel_size,
            order=2,
            rank=child.rank,
            factorization="cp",
            implementation="factorized",
            stride=child.stride,
            padding=child.padding,
            bias=child.bias is not None,
        )
        with torch.no_grad():
            conv.weight.weights.fill_(1.0)
            conv.weight.factors[0].copy_(child.output_factor)
            conv.weight.factors[1].copy_(child.input_factor.T)
            for index, factor in enumerate(child.spatial_factors):
                conv.weight.factors[2 + index].copy_(factor.T)
            if child.bias is not None:
                conv.bias.copy_(child.bias)
        parent = clone
        *path, last = name.split(".")
        for part in path:
            parent = getattr(parent, part)
        setattr(parent, last, conv)
    return clone


def reconstructed_copy(model: WaveCNN) -> WaveCNN:
    clone = copy.deepcopy(model)
    for module in clone.modules():
        if isinstance(module, CPConv2d):
            module.implementation = "reconstructed"
    return clone


def fe_time_per_frame(path: Path) -> dict:
    """Wall time of the FE solver (mesh, assembly, CFL estimate, leapfrog, gridding)."""
    from physnet.datasets import StoreDataset
    from physnet.datasets._wave import draw_wave_scene, simulate_wave_scene

    with StoreDataset(path) as store:
        config = store.attrs["config"]
        seed = int(store.attrs["seed"])
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(0,)))
    scene = draw_wave_scene(config, rng)
    start = time.perf_counter()
    solution, interpolator, _ = simulate_wave_scene(config, scene)
    interpolator(solution.values)
    elapsed = time.perf_counter() - start
    return {
        "fe_seconds_per_frame": elapsed / config["n_frames"],
        "fe_time_steps_per_frame": solution.n_steps
        / (config["n_frames"] - 1 + scene["start"] / config["frame_interval"]),
        "fe_nodes": solution.mesh.n_nodes,
    }


def to_markdown(report: dict) -> str:
    m = report["machine"]
    lines = [
        "# Wave surrogate benchmark: dense vs a-priori compressed (CP) convolutions",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB; Python {m['python']}, "
        f"torch {m['torch']}, physnet {m['physnet']}; torch threads: {report['threads']}.",
        "",
        f"Command: `{report['command']}`",
        "",
        f"Data: {report['data']['path']} ({report['data']['samples']} trajectories of "
        f"{report['data']['frames']} frames, {report['data']['grid']}^2 grid). nRMSE = "
        "||pred - true||_2 / ||true||_2 per trajectory and frame, mean over trajectories; "
        "one step is teacher-forced (true input frames), the rollout feeds back its own "
        "predictions from the first frames. Latency: median CPU time of one surrogate step "
        f"({report['repeats']} runs at batch 1, {max(5, report['repeats'] // 5)} at batch 32; "
        "the calling thread's CPU time, which is what the step takes on an idle core; wall "
        "medians, which count the time other processes held the shared core, are in the "
        f"JSON). Load average at the start: {report['load_average']}. Activation memory: "
        "bytes autograd saves in one training step at batch 1.",
        "",
        "| model | params | × dense | act. MiB | latency b=1 ms | × dense | latency b=32 ms "
        "| one-step nRMSE | rollout 1 | rollout 10 | rollout 50 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]

    def number(value, digits=4):
        return "–" if value is None else f"{value:.{digits}g}"

    for row in report["models"]:
        lines.append(
            f"| {row['name']} | {row['parameters']:,} | {row['parameter_ratio']:.3f} "
            f"| {row['activation_bytes'] / 2**20:.2f} | {1e3 * row['latency_s_batch1']:.2f} "
            f"| {row['latency_ratio_batch1']:.2f} | {1e3 * row['latency_s_batch32']:.1f} "
            f"| {number(row.get('one_step_nrmse'))} | {number(row.get('rollout_nrmse_1'))} "
            f"| {number(row.get('rollout_nrmse_10'))} | {number(row.get('rollout_nrmse_50'))} |"
        )
    fe = report.get("fe_solver")
    if fe:
        lines += [
            "",
            f"FE solver for scale: {1e3 * fe['fe_seconds_per_frame']:.1f} ms per frame "
            f"({fe['fe_nodes']:,} nodes, about {fe['fe_time_steps_per_frame']:.1f} leapfrog "
            "steps per frame, mesh + assembly + CFL estimate + gridding included).",
        ]
    targets = report.get("targets")
    if targets:
        lines += ["", "## Targets", ""]
        lines += [f"- {line}" for line in targets]
    return "\n".join(lines) + "\n"


def check_targets(rows: list[dict], shipped: str | None) -> list[str]:
    dense = next((row for row in rows if row["name"] == "dense"), None)
    cp = next((row for row in rows if row["name"] == shipped), None)
    if (
        dense is None
        or cp is None
        or "rollout_nrmse_50" not in cp
        or "rollout_nrmse_50" not in dense
    ):
        return []

    def verdict(ok: bool) -> str:
        return "met" if ok else "MISSED"

    out = []
    ratio = cp["parameters"] / dense["parameters"]
    out.append(
        f"{shipped}: parameters {ratio:.3f} x dense (target <= 0.33): {verdict(ratio <= 0.33)}"
    )
    for step in ROLLOUT_STEPS:
        key = f"rollout_nrmse_{step}"
        r = cp[key] / dense[key]
        out.append(
            f"{shipped}: rollout nRMSE at step {step} {r:.3f} x dense (target <= 1.05): "
            f"{verdict(r <= 1.05)}"
        )
    r = cp["latency_s_batch1"] / dense["latency_s_batch1"]
    out.append(
        f"{shipped}: CPU latency at batch 1 {r:.2f} x dense (target <= 1.0): {verdict(r <= 1.0)}"
    )
    return out


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    data_root = Path(os.environ.get("PHYSNET_DATA", Path.home() / ".cache" / "physnet"))
    parser.add_argument("--data", default=str(data_root / "wave2d-rollout.h5"))
    parser.add_argument("--dense", default=str(ROOT / "runs" / "wave-dense" / "best.safetensors"))
    parser.add_argument(
        "--cp",
        nargs="*",
        default=None,
        help="trained CP checkpoints (default: the pretrained wave-cp and runs/wave-cp-r*/best)",
    )
    parser.add_argument(
        "--ranks",
        type=int,
        nargs="*",
        default=[8, 16, 32, 64],
        help="CP ranks to list (untrained when no checkpoint has that rank)",
    )
    parser.add_argument("--samples", type=int, default=None, help="test trajectories to use")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--batch", type=int, default=16, help="batch of the accuracy runs")
    parser.add_argument("--out", default=str(RESULTS / "wave"), help="output stem (.json, .md)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    from physnet.datasets import StoreDataset

    with StoreDataset(args.data) as store:
        n = len(store) if args.samples is None else min(args.samples, len(store))
        samples = [store[i] for i in range(n)]
    speed = torch.as_tensor(np.stack([s["speed"] for s in samples]))
    frames = torch.as_tensor(np.stack([s["frames"] for s in samples]))
    size = frames.shape[-1]

    models: list[tuple[str, WaveCNN, bool]] = []
    dense = physnet.nn.load(args.dense)
    models.append(("dense", dense, True))
    cp_paths = args.cp
    if cp_paths is None:
        cp_paths = [
            "wave-cp",
            *sorted(str(p) for p in (ROOT / "runs").glob("wave-cp-r*/best.safetensors")),
        ]
    shipped = None
    trained_ranks = set()
    for path in cp_paths:
        model = physnet.nn.load(path)
        rank = model.config["rank"]
        if rank in trained_ranks:
            continue
        trained_ranks.add(rank)
        name = f"cp-r{rank}"
        shipped = shipped or name
        models.append((name, model, True))
        models.append((f"{name} reconstructed", reconstructed_copy(model), True))
        tl = tltorch_copy(model)
        if tl is not None:
            models.append((f"tltorch-cp-r{rank}", tl, True))
    architecture = {k: v for k, v in dense.config.items() if k not in ("conv", "rank")}
    for rank in args.ranks:
        if rank not in trained_ranks:
            models.append(
                (f"cp-r{rank} (untrained)", WaveCNN(**architecture, conv="cp", rank=rank), False)
            )

    rows = []
    for name, model, trained in models:
        model.eval()
        print(f"{name} ...", flush=True)
        row = {
            "name": name,
            "parameters": parameter_count(model),
            "activation_bytes": activation_bytes(model, size),
            "trained": trained,
        }
        row["wall_latency_s_batch1"], row["latency_s_batch1"] = latency_s(
            model, 1, size, args.repeats
        )
        row["wall_latency_s_batch32"], row["latency_s_batch32"] = latency_s(
            model, 32, size, max(5, args.repeats // 5)
        )
        if trained:
            row.update(accuracy(model, speed, frames, args.batch))
        rows.append(row)
        print(json.dumps(row), flush=True)
    for row in rows:
        row["parameter_ratio"] = row["parameters"] / rows[0]["parameters"]
        row["latency_ratio_batch1"] = row["latency_s_batch1"] / rows[0]["latency_s_batch1"]
    report = {
        "command": "python benchmarks/wave.py "
        + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": machine(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "threads": args.threads,
        "repeats": args.repeats,
        "data": {"path": args.data, "samples": n, "frames": int(frames.shape[1]), "grid": size},
        "models": rows,
        "fe_solver": fe_time_per_frame(Path(args.data)),
    }
    report["targets"] = check_targets(rows, shipped)
    write_results(args.out, report, to_markdown(report))
    return report


if __name__ == "__main__":
    main()
