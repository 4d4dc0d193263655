"""Darcy benchmark: MgNO against neuraloperator's FNO on smooth Darcy flow, at equal compute.

Every model trains through physnet's one :class:`~physnet.training.Trainer` on the same data
(``darcy-smooth`` at 64x64: 1000 train / 100 val / 100 test, the splits of the store), each
with the loss, optimiser and learning-rate schedule of its own configuration
(``solvers/mgno-darcy/train.toml`` for MgNO, ``solvers/mgno-darcy/fno.toml`` for FNO: FNO
with domain padding and neuraloperator's step schedule, or what ``--tune-fno`` selected), for
several seeds.

**Equal budget.** Each model gets the same compute budget, ``--budget-s`` seconds of *process
CPU time* (``time.process_time``) on ``--threads`` torch threads (default one): on a shared
machine CPU time is far less sensitive to other jobs than wall time. A calibration run per
model (two epochs, not counted; the second one, free of one-time costs, is timed) measures
its CPU seconds per epoch, training plus validation; every run of that model then trains
for ``floor(budget / seconds per epoch)`` epochs, so that its schedule (one-cycle, cosine or
step, sized by the number of epochs) completes within the budget. A step schedule keeps the
decays at the same fractions of the run: its ``step_size`` is rescaled by
``epochs / training.epochs`` of the configuration. The CPU time each run actually used is
reported next to the budget. ``--epochs N`` instead trains every model for N epochs (an
equal-epoch comparison).

**Curves.** After every epoch the validation and test relative L2 errors are recorded
against the CPU time spent so far (the test evaluation itself is not counted), and drawn to
``OUT-curves.png``, one line per model and seed. The test curve is for reading only: model
selection uses the validation loss.

**Evaluation.** The weights of the epoch with the best validation loss are evaluated
(relative L2 and H1) on the 64x64 test split and, without retraining, on 128x128 and 256x256
test sets of the same distribution (resolution transfer). Reported per model: mean ± standard
deviation over the seeds, the parameter count, the epochs, the CPU seconds per epoch and the
median inference time per sample (64x64, batches of 25, no gradient, wall time).

**FNO tuning.** ``--tune-fno`` trains FNO (seed: the first of ``--seeds``) for
``--tune-budget-s`` CPU seconds per setting over the grid learning rate
{1e-3, 2e-3, 5e-3, 1e-2, 2e-2} x schedule {step (neuraloperator's: x0.5 every fifth of the
run), one-cycle (MgNO's settings), cosine (to 0)}, and ranks the settings by the validation
relative L2 of their best-validation weights (the test split is never read). It writes
``darcy-fno-tuning.{json,md}`` next to OUT, with the lines to put in ``fno.toml``.

Run ``python benchmarks/darcy.py`` (missing data files are generated first, from
``datasets/darcy-smooth/generate.toml``, ``generate-128.toml`` and ``generate-256.toml``).
Models: ``--models mgno,fno`` (names of known configurations; the default when no
``--model`` is given) and ``--model LABEL=PATH`` for any other training configuration. Every
model validates on the 64x64 val split and trains on the 64x64 train split, except a
configuration whose ``[data] train`` lists several files (mixed-resolution training), which
trains on those. Other data sets: ``--data FILE`` (its train / val / test splits) with
``--resolutions 64`` where no transfer sets exist, e.g. the configurations in
``solvers/mgno-darcy-rough``, ``solvers/mgno-darcy-multiscale`` and
``solvers/mgno-helmholtz`` passed as ``--model mgno=... --model fno=...`` (the labels
``mgno`` and ``fno`` give the MgNO / FNO ratio line, as do ``mgno<suffix>`` and
``fno<suffix>``, e.g. ``mgno-d4`` and ``fno-d4``). ``--symmetrize`` also evaluates
each run's best weights averaged over the eight symmetries of the square
(:class:`physnet.nn.SymmetryAverage`) at 64². ``--quick`` is a smoke run (a few
samples, one seed, a few CPU seconds per model) writing ``OUT-quick``. ``--merge A.json
B.json --out OUT`` combines reports of the same data into one, with the MgNO / FNO ratio: on
a machine with two cores, run one process per model or per seed side by side (``--models
mgno --out A``, ``--models fno --out B``); the CPU-time budget keeps the comparison fair. A
model's runs must share its configuration and its epochs: seed 0 sized by ``--budget-s``,
then seeds 1 and 2 with ``--epochs`` of the count it printed. Results go to
``benchmarks/results/darcy.{json,md}`` with the machine described. ``--keep-weights DIR``
saves every run's best-validation weights as ``DIR/LABEL-seedK.safetensors``; they are bit
for bit those of ``physnet train CONFIG --set training.seed=K --set training.epochs=N``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from _common import machine, write_results

import physnet.nn
import physnet.training
from physnet.datasets import open as open_dataset
from physnet.datasets.generate import generate
from physnet.training import Trainer, TrainingDiverged, evaluate, load_config
from physnet.training.augment import DIHEDRAL_2D

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
RECIPES = ROOT / "datasets" / "darcy-smooth"
CONFIGS = {
    "mgno": ROOT / "solvers" / "mgno-darcy" / "train.toml",
    "fno": ROOT / "solvers" / "mgno-darcy" / "fno.toml",
    "mgno-rc": ROOT / "solvers" / "mgno-darcy" / "train-rc.toml",
}
LABELS = {
    "mgno": "MgNO (physnet)",
    "fno": "FNO (neuraloperator)",
    "mgno-rc": "MgNO, resolution-consistent (physnet)",
}
RESOLUTIONS = (64, 128, 256)
METRICS = ("relative_l2", "relative_h1")
SYMMETRIZED = "64-d4"  # the key of the symmetry-averaged 64² errors (--symmetrize)

# --quick: samples per split (train, val, test, each transfer set) and CPU seconds per model.
QUICK_SAMPLES = {"train": 16, "val": 8, "test": 8, "transfer": 4}
QUICK_BUDGET_S = 5.0

# --tune-fno: the grid. Each schedule is a set of configuration overrides; the step
# schedule's training.epochs only fixes the shape (decays every fifth of the run), the run's
# epochs come from the budget.
TUNING_LRS = (1e-3, 2e-3, 5e-3, 1e-2, 2e-2)  # 1e-2 and 2e-2: the best of the first run was 5e-3
TUNING_SCHEDULES = {
    "step": {
        "optim.schedule": "step",
        "optim.step_size": 3,
        "optim.gamma": 0.5,
        "training.epochs": 15,
    },
    "one-cycle": {
        "optim.schedule": "one-cycle",
        "optim.pct_start": 0.2,
        "optim.div_factor": 2.0,
        "optim.final_div_factor": 100.0,
    },
    "cosine": {"optim.schedule": "cosine", "optim.min_lr": 0.0},
}


def data_directory() -> Path:
    return Path(os.environ.get("PHYSNET_DATA", Path("~/.cache/physnet").expanduser()))


def ensure(path: Path, recipe: Path) -> Path:
    if not path.exists():
        print(f"generating {path} from {recipe.relative_to(ROOT)}", flush=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        generate(recipe, path, workers=2)
    return path


def config_path(name: str, config) -> Path:
    """A data file named in a configuration: ``$PHYSNET_DATA`` expanded (this script's
    default where unset), relative to the configuration's folder."""
    text = name.replace("${PHYSNET_DATA}", "$PHYSNET_DATA")
    text = text.replace("$PHYSNET_DATA", str(data_directory()))
    path = Path(os.path.expanduser(os.path.expandvars(text)))
    if not path.is_absolute() and config.path is not None:
        path = Path(config.path).resolve().parent / path
    return path


def ensure_file(path: Path) -> Path:
    """``path``, generated first if missing from the ``datasets/darcy-smooth`` recipe whose
    header command writes ``$PHYSNET_DATA/<its name>``."""
    if path.exists():
        return path
    for recipe in sorted(RECIPES.glob("*.toml")):
        words = recipe.read_text().splitlines()[0].split()
        if f"$PHYSNET_DATA/{path.name}" in words[words.index("--out") + 1 :][:1]:
            return ensure(path, recipe)
    raise FileNotFoundError(
        f"{path}: no such data file, and no recipe in {_relative(RECIPES)} writes it"
    )


def _relative(path: Path) -> str:
    path = Path(path).resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


class CurveTrainer(Trainer):
    """physnet's :class:`~physnet.training.Trainer`, calling ``on_epoch_end(model, record)``
    after each epoch's checkpoints are written.

    The Trainer has no public per-epoch hook; this wraps its private ``_write_epoch``, which
    runs once per completed epoch when ``out_dir`` is set.
    """

    on_epoch_end = None

    def _write_epoch(self, out_dir, model, **kwargs):
        super()._write_epoch(out_dir, model, **kwargs)
        if self.on_epoch_end is not None:
            self.on_epoch_end(model, kwargs["record"])


class Clock:
    """Process CPU time and wall time since creation, less the intervals spent in
    ``excluded()``."""

    def __init__(self) -> None:
        self._cpu, self._wall = time.process_time(), time.perf_counter()

    @contextlib.contextmanager
    def excluded(self):
        cpu, wall = time.process_time(), time.perf_counter()
        try:
            yield
        finally:
            self._cpu += time.process_time() - cpu
            self._wall += time.perf_counter() - wall

    def cpu_s(self) -> float:
        return time.process_time() - self._cpu

    def wall_s(self) -> float:
        return time.perf_counter() - self._wall


class Data:
    """The datasets of one benchmark: the 64x64 store's splits and the transfer test sets,
    cut to their first few samples in a quick run."""

    def __init__(self, paths: dict[int, Path], quick: bool) -> None:
        self.paths = paths
        self.quick = quick
        self.train = self._open(paths[64], "train", "train")
        self.val = self._open(paths[64], "val", "val")
        self.test = {64: self._open(paths[64], "test", "test")}
        for size in sorted(paths)[1:]:
            self.test[size] = self._open(paths[size], "test", "transfer")

    def _open(self, path: Path, split, role: str, stride: int = 1):
        dataset = open_dataset(path, split=split, stride=stride)
        if self.quick:
            dataset = dataset.subset(range(min(len(dataset), QUICK_SAMPLES[role])))
        return dataset

    def training_set(self, config):
        """The training samples of a model: the 64x64 train split, or, for a configuration
        whose ``[data] train`` lists several files (mixed-resolution training), those files
        (generated first from their recipe in ``datasets/darcy-smooth`` where missing)."""
        if isinstance(config.data.train, str):
            return self.train
        from physnet.training import MixedResolution

        return MixedResolution(
            [
                self._open(
                    ensure_file(config_path(name, config)),
                    config.data.train_split,
                    "train",
                    config.data.stride,
                )
                for name in config.data.train
            ]
        )

    def describe_training_set(self, config) -> str:
        if isinstance(config.data.train, str):
            return f"64² train split ({len(self.train)})"
        files = [Path(config_path(name, config)).name for name in config.data.train]
        return f"{' + '.join(files)} ({len(self.training_set(config))}, mixed resolution)"


def train(
    config,
    data: Data,
    *,
    seed: int,
    epochs: int,
    record_test: bool = True,
) -> dict:
    """Train one model for ``epochs`` epochs; return its best-validation weights, history
    and per-epoch curve (CPU and wall seconds, validation and test errors)."""
    options = config.trainer_options()
    options.update(epochs=epochs, seed=seed, progress=False, device="cpu", patience=None)
    options["metrics"] = tuple(dict.fromkeys([*options["metrics"], *METRICS]))
    if options["schedule"] == "step":
        # the decays stay at the same fractions of the run
        options["step_size"] = max(1, round(options["step_size"] * epochs / config.training.epochs))
    fields = {"inputs": config.data.inputs, "targets": config.data.targets}
    training_set = data.training_set(config)
    torch.manual_seed(seed)
    model = physnet.nn.create(config.model.name, **config.model.kwargs)
    curve: list[dict] = []
    clock = Clock()

    def on_epoch_end(model, record):
        point = {"epoch": record["epoch"], "cpu_s": clock.cpu_s(), "wall_s": clock.wall_s()}
        point.update({f"val_{m}": record[f"val_{m}"] for m in METRICS})
        if record_test:
            with clock.excluded():
                point["test_relative_l2"] = evaluate(
                    model, data.test[64], metrics=["relative_l2"], **fields
                )["relative_l2"]
        curve.append(point)

    diverged = None
    with tempfile.TemporaryDirectory() as out_dir:
        trainer = CurveTrainer(model, out_dir=out_dir, **fields, **options)
        trainer.on_epoch_end = on_epoch_end
        try:
            history = trainer.fit(training_set, data.val)
        except TrainingDiverged as error:
            # a result of the recipe, not of the benchmark: keep the run, scored with the
            # best weights of the epochs before the loss became non-finite
            if not error.history.records:
                raise
            history, diverged = error.history, error.epoch
            print(f"  diverged in epoch {diverged}: {error}", flush=True)
        best = physnet.nn.load(Path(out_dir) / "best.safetensors")
    return {
        "diverged_epoch": diverged,
        "best": best,
        "history": history,
        "curve": curve,
        "cpu_s": curve[-1]["cpu_s"],
        "wall_s": curve[-1]["wall_s"],
        "parameters": sum(p.numel() for p in model.parameters()),
        "options": {key: options[key] for key in ("lr", "schedule", "step_size", "batch_size")},
    }


def calibrate(config, data: Data) -> float:
    """CPU seconds of one epoch (training, validation, checkpoints) of a model, seed 0: the
    second of two epochs, so that one-time costs (first calls, allocations) do not count."""
    curve = train(config, data, seed=0, epochs=2, record_test=False)["curve"]
    return curve[1]["cpu_s"] - curve[0]["cpu_s"]


def epochs_for(budget_s: float, seconds_per_epoch: float) -> int:
    return max(1, math.floor(budget_s / seconds_per_epoch))


def inference_ms_per_sample(model: torch.nn.Module, inputs: torch.Tensor, repeats: int) -> float:
    model.eval()
    times = []
    with torch.no_grad():
        model(inputs[:2])  # warm-up
        for _ in range(repeats):
            start = time.perf_counter()
            for batch in inputs.split(25):
                model(batch)
            times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times) / len(inputs)


def benchmark_run(
    label: str,
    config,
    data: Data,
    seed: int,
    epochs: int,
    repeats: int,
    symmetrize: bool = False,
    keep_weights: Path | None = None,
) -> dict:
    trained = train(config, data, seed=seed, epochs=epochs)
    best, history = trained["best"], trained["history"]
    if keep_weights is not None:
        keep_weights.mkdir(parents=True, exist_ok=True)
        physnet.nn.save(best, keep_weights / f"{label}-seed{seed}.safetensors")
    fields = {"inputs": config.data.inputs, "targets": config.data.targets}
    errors = {
        str(size): evaluate(best, dataset, metrics=METRICS, **fields)
        for size, dataset in data.test.items()
    }
    if symmetrize:  # the same weights averaged over the square's 8 symmetries, at 64²
        averaged = physnet.nn.SymmetryAverage(best, "d4")
        errors[SYMMETRIZED] = evaluate(averaged, data.test[64], metrics=METRICS, **fields)
    test = data.test[64]
    inputs = torch.stack(
        [torch.from_numpy(test[i][config.data.inputs[0]]) for i in range(len(test))]
    )
    result = {
        "model": label,
        "seed": seed,
        "parameters": trained["parameters"],
        "epochs": epochs,
        "best_epoch": history.best_epoch,
        "diverged_epoch": trained["diverged_epoch"],
        "options": trained["options"],
        "errors": {
            size: {metric: values[metric] for metric in METRICS} for size, values in errors.items()
        },
        "cpu_s": trained["cpu_s"],
        "wall_s": trained["wall_s"],
        "cpu_s_per_epoch": trained["cpu_s"] / len(history),
        "inference_ms_per_sample": inference_ms_per_sample(best, inputs[:, None], repeats),
        "curve": trained["curve"],
        "history": history.records,
    }
    print(
        f"{label} seed {seed}: {epochs} epochs, {result['cpu_s']:.0f} CPU s | "
        + " | ".join(
            f"{size}² L2 {values['relative_l2']:.4f} H1 {values['relative_h1']:.4f}"
            for size, values in result["errors"].items()
        ),
        flush=True,
    )
    return result


def summarise(runs: list[dict], labels: list[str]) -> dict:
    summary = {}
    for label in labels:
        mine = [r for r in runs if r["model"] == label]
        entry = {
            "parameters": mine[0]["parameters"],
            "seeds": [r["seed"] for r in mine],
            "epochs": mine[0]["epochs"],
            "best_epochs": [r["best_epoch"] for r in mine],
            "cpu_s": statistics.fmean(r["cpu_s"] for r in mine),
            "cpu_s_per_epoch": statistics.median(r["cpu_s_per_epoch"] for r in mine),
            "inference_ms_per_sample": statistics.median(
                r["inference_ms_per_sample"] for r in mine
            ),
            "errors": {},
        }
        for size in mine[0]["errors"]:
            entry["errors"][size] = {}
            for metric in METRICS:
                values = [r["errors"][size][metric] for r in mine]
                entry["errors"][size][metric] = {
                    "mean": statistics.fmean(values),
                    "std": statistics.stdev(values) if len(values) > 1 else 0.0,
                    "values": values,
                }
        summary[label] = entry
    targets = []
    for mgno_label, fno_label in ratio_pairs(list(summary)):
        mgno, fno = summary[mgno_label], summary[fno_label]
        ratio = l2_ratio(summary, mgno_label, fno_label, "64")
        targets.append(
            {
                "mgno": mgno_label,
                "fno": fno_label,
                "mgno_over_fno_relative_l2": ratio,
                "l2_at_most_half_of_fno": ratio <= 0.5,
                "parameters_at_most_fno": mgno["parameters"] <= fno["parameters"],
            }
        )
    if targets:
        summary["targets"] = targets
    return summary


def l2_ratio(summary: dict, mgno_label: str, fno_label: str, key: str) -> float:
    """MgNO's mean relative L2 over FNO's on the test set ``key`` (``"64"``, ``"64-d4"``)."""
    return (
        summary[mgno_label]["errors"][key]["relative_l2"]["mean"]
        / summary[fno_label]["errors"][key]["relative_l2"]["mean"]
    )


def ratio_pairs(labels: list[str]) -> list[tuple[str, str]]:
    """The (MgNO, FNO) label pairs of the ratio lines: ``mgno`` with ``fno``, and
    ``mgno<suffix>`` with ``fno<suffix>`` (e.g. ``mgno-d4`` with ``fno-d4``)."""
    return [
        (label, "fno" + label[len("mgno") :])
        for label in labels
        if label.startswith("mgno") and "fno" + label[len("mgno") :] in labels
    ]


def plot_curves(runs: list[dict], labels: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True, constrained_layout=True)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for index, label in enumerate(labels):
        colour = colours[index % len(colours)]
        for run in (r for r in runs if r["model"] == label):
            cpu_s = [point["cpu_s"] for point in run["curve"]]
            for axis, key in zip(axes, ("val_relative_l2", "test_relative_l2"), strict=True):
                axis.plot(
                    cpu_s,
                    [point[key] for point in run["curve"]],
                    color=colour,
                    marker=".",
                    alpha=0.8,
                    label=f"{label} seed {run['seed']}",
                )
    titles = ("validation (selects the weights)", "test, 64² (not used for selection)")
    for axis, title in zip(axes, titles, strict=True):
        axis.set_yscale("log")
        axis.set_xlabel("training CPU time (s)")
        axis.set_title(title)
        axis.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("relative L2 after each epoch")
    axes[1].legend(fontsize="small")
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)


def _cell(statistic: dict) -> str:
    return f"{100 * statistic['mean']:.2f} ± {100 * statistic['std']:.2f}"


def markdown(report: dict) -> str:
    settings, summary = report["settings"], report["summary"]
    sizes = list(settings["data"])
    if settings["budget_s"] is not None:
        budget = (
            f"Equal budget: {settings['budget_s']:.0f} s of process CPU time per run on "
            f"{settings['threads']} torch thread(s); each model's epochs = floor(budget / its "
            "CPU s per epoch, measured on a calibration epoch), so its schedule ends within "
            "the budget."
        )
    else:
        budget = f"Equal epochs: {settings['epochs']} per model."
    lines = [
        "# Darcy benchmark: MgNO vs FNO at equal "
        + ("CPU budget" if settings["budget_s"] is not None else "epochs")
        + f" ({Path(settings['data']['64']).stem}, tested at "
        + ", ".join(f"{size}²" for size in sizes)
        + ")",
        "",
        f"Command: `{settings['command']}`  ",
        *(
            [f"Parts, run side by side (one process each): `{'`; `'.join(settings['parts'])}`  "]
            if settings.get("parts")
            else []
        ),
        f"Data: `{settings['data']['64']}` ({settings['samples']['train']} train / "
        f"{settings['samples']['val']} val / {settings['samples']['test']} test)"
        + (
            ", resolution transfer (zero-shot) on "
            + " and ".join(f"`{settings['data'][size]}`" for size in sizes[1:])
            + f" ({settings['samples']['transfer']} samples each).  "
            if len(sizes) > 1
            else ".  "
        ),
        f"{budget} Seeds {settings['seeds']}.  ",
        "Errors: mean ± std over the seeds, test sets, weights of the best validation epoch "
        "(×10⁻²). CPU s / epoch include validation (medians); inference is wall time at 64².",
        "",
        "| model | config | training data | loss | lr | schedule | batch | augmentation |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for label in settings["models"]:
        model = settings["configs"][label]
        lines.append(
            f"| {LABELS.get(label, label)} | `{model['path']}` | {model['training_data']} | "
            f"{model['loss']} | {model['lr']:g} | {model['schedule']} | {model['batch_size']} | "
            f"{_augmentation(model.get('augment', []))} |"
        )
    header = " | ".join(f"{size}² rel. L2 | {size}² rel. H1" for size in sizes)
    lines += [
        "",
        f"| model | seeds | parameters | epochs | CPU s used | CPU s / epoch | {header} | "
        "inference ms / sample |",
        "|---|---|---|---|---|---|" + "---|" * (2 * len(sizes)) + "---|",
    ]
    for label in settings["models"]:
        entry = summary[label]
        errors = " | ".join(
            f"{_cell(entry['errors'][size]['relative_l2'])} | "
            f"{_cell(entry['errors'][size]['relative_h1'])}"
            for size in sizes
        )
        lines.append(
            f"| {LABELS.get(label, label)} | {len(entry['seeds'])} | {entry['parameters']:,} | "
            f"{entry['epochs']} | "
            f"{entry['cpu_s']:.0f} | {entry['cpu_s_per_epoch']:.1f} | {errors} | "
            f"{entry['inference_ms_per_sample']:.2f} |"
        )
    if all(SYMMETRIZED in summary[label]["errors"] for label in settings["models"]):
        lines += [
            "",
            "The same best-validation weights averaged over the eight symmetries of the square "
            "(`physnet.nn.SymmetryAverage`, 8 evaluations per sample), 64² test split:",
            "",
            "| model | 64² rel. L2, averaged | 64² rel. H1, averaged |",
            "|---|---|---|",
        ]
        for label in settings["models"]:
            averaged = summary[label]["errors"][SYMMETRIZED]
            lines.append(
                f"| {LABELS.get(label, label)} | {_cell(averaged['relative_l2'])} | "
                f"{_cell(averaged['relative_h1'])} |"
            )
        for mgno_label, fno_label in ratio_pairs(settings["models"]):
            ratio = l2_ratio(summary, mgno_label, fno_label, SYMMETRIZED)
            lines += [
                "",
                f"{_pair(mgno_label, fno_label)} relative L2 at 64², both averaged: {ratio:.3f}.",
            ]
    diverged = [run for run in report["runs"] if run.get("diverged_epoch")]
    if diverged:
        lines += [
            "",
            "Diverged (training loss non-finite; scored with the best weights before it): "
            + ", ".join(
                f"{LABELS.get(r['model'], r['model'])} seed {r['seed']} in epoch "
                f"{r['diverged_epoch']} of {r['epochs']}"
                for r in diverged
            )
            + ".",
        ]
    for targets in summary.get("targets", []):
        lines += [
            "",
            f"{_pair(targets['mgno'], targets['fno'])} relative L2 at 64²: "
            f"{targets['mgno_over_fno_relative_l2']:.3f} (target "
            f"≤ 0.5: {'met' if targets['l2_at_most_half_of_fno'] else 'not met'}); MgNO "
            f"parameters ≤ FNO's: {'yes' if targets['parameters_at_most_fno'] else 'no'}.",
        ]
    lines += [
        "",
        f"Curves (validation and test relative L2 against training CPU time, one line per model "
        f"and seed): `{settings['curves']}`.",
    ]
    m = report["machine"]
    lines += [
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB; Python {m['python']}, "
        f"torch {m['torch']}, physnet {m['physnet']}; total wall time "
        f"{report['wall_s'] / 60:.1f} min; load average at the start "
        f"{m['load_average_1min']}, at the end {report['load_average_at_end'][0]:.1f} (other "
        "jobs on the machine inflate wall times, CPU times less so; `--timing-only` gives "
        "minima over repeats).",
        "",
    ]
    return "\n".join(lines)


def _pair(mgno_label: str, fno_label: str) -> str:
    """``MgNO / FNO``, with the labels where they are not the plain ones."""
    if (mgno_label, fno_label) == ("mgno", "fno"):
        return "MgNO / FNO"
    return f"MgNO / FNO ({mgno_label} / {fno_label})"


def _augmentation(names: list[str]) -> str:
    """The augmentation column: none, the square's symmetries, or the listed ones."""
    if not names:
        return "none"
    if sorted(names) == sorted(DIHEDRAL_2D):
        return "random symmetry of the square (8)"
    return ", ".join(names)


def model_settings(config, path: Path, data: Data) -> dict:
    return {
        "path": _relative(path),
        "training_data": data.describe_training_set(config),
        "loss": config.training.loss,
        "lr": config.optim.lr,
        "schedule": config.optim.schedule,
        "batch_size": config.training.batch_size,
        "augment": list(config.training.augment),
        "model": {"name": config.model.name, **config.model.kwargs},
    }


def benchmark(args, models: dict[str, Path], data: Data, command: str) -> dict:
    start = time.perf_counter()
    configs = {label: load_config(path) for label, path in models.items()}
    calibration = {}
    if args.epochs is not None:
        epochs = dict.fromkeys(models, args.epochs)
    else:
        for label, config in configs.items():
            calibration[label] = calibrate(config, data)
            print(f"{label}: {calibration[label]:.1f} CPU s / epoch (calibration)", flush=True)
        epochs = {label: epochs_for(args.budget_s, s) for label, s in calibration.items()}
    runs = [
        benchmark_run(
            label,
            configs[label],
            data,
            seed,
            epochs[label],
            args.repeats,
            args.symmetrize,
            args.keep_weights,
        )
        for seed in args.seeds
        for label in models
    ]
    stem = Path(args.out)
    curves = stem.with_name(stem.name + "-curves.png")
    plot_curves(runs, list(models), curves)
    report = {
        "benchmark": "darcy",
        "settings": {
            "command": command,
            "data": {str(size): str(path) for size, path in data.paths.items()},
            "samples": {
                "train": len(data.train),
                "val": len(data.val),
                "test": len(data.test[64]),
                "transfer": min((len(data.test[s]) for s in data.test if s != 64), default=0),
            },
            "budget_s": None if args.epochs is not None else args.budget_s,
            "clock": "process CPU time (time.process_time)",
            "epochs": args.epochs,
            "calibration_cpu_s_per_epoch": calibration,
            "seeds": args.seeds,
            "models": list(models),
            "threads": args.threads,
            "configs": {
                label: model_settings(configs[label], models[label], data) for label in models
            },
            "curves": _relative(curves),
        },
        "machine": machine(),
        "runs": runs,
        "summary": summarise(runs, list(models)),
        "wall_s": time.perf_counter() - start,
        "load_average_at_end": os.getloadavg(),
    }
    write_results(stem, report, markdown(report))
    return report


def merge(paths: list[Path], out: Path, command: str) -> dict:
    """One report from the runs of several reports of this benchmark: e.g. one process per
    model, or per seed, run side by side on a machine with a core each.

    The parts must share the data, samples, threads and clock. A model may appear in
    several parts with different seeds and the same configuration. Parts may mix a CPU
    budget with ``--epochs N`` reruns of the epochs that budget gave (seed 0 sized by the
    budget, seeds 1 and 2 at its epoch count): every model's runs must have trained the
    same number of epochs, and the report keeps the budget of the parts that set one
    (they must agree)."""
    parts = []
    for path in paths:
        try:
            parts.append(json.loads(Path(path).read_text()))
        except (OSError, json.JSONDecodeError) as error:
            raise SystemExit(f"--merge {path}: cannot read a report ({error})") from None
        if parts[-1].get("benchmark") != "darcy":
            raise SystemExit(f"--merge {path}: not a report of benchmarks/darcy.py")
    first = parts[0]["settings"]
    for path, part in zip(paths, parts, strict=True):
        for key in ("data", "samples", "threads", "clock"):
            if part["settings"][key] != first[key]:
                raise SystemExit(
                    f"--merge {path}: settings.{key} = {part['settings'][key]!r} differs from "
                    f"{paths[0]}'s {first[key]!r}; only runs of one benchmark setting merge"
                )
    budgets = {part["settings"]["budget_s"] for part in parts} - {None}
    if len(budgets) > 1:
        raise SystemExit(f"--merge: the parts have different CPU budgets ({sorted(budgets)})")
    labels = list(dict.fromkeys(label for part in parts for label in part["settings"]["models"]))
    configs: dict[str, dict] = {}
    for path, part in zip(paths, parts, strict=True):
        for label, config in part["settings"]["configs"].items():
            if configs.setdefault(label, config) != config:
                raise SystemExit(
                    f"--merge {path}: model {label!r} has another configuration than in an "
                    "earlier part; give the models different labels"
                )
    runs = [run for part in parts for run in part["runs"]]
    for label in labels:
        mine = [run for run in runs if run["model"] == label]
        seeds = [run["seed"] for run in mine]
        if len(set(seeds)) != len(seeds):
            raise SystemExit(f"--merge: model {label!r} has seed(s) in several parts ({seeds})")
        epochs = {run["epochs"] for run in mine}
        if len(epochs) > 1:
            raise SystemExit(
                f"--merge: the runs of model {label!r} trained different epochs "
                f"({sorted(epochs)}); rerun seeds with --epochs of the budget's count"
            )
    curves = out.with_name(out.name + "-curves.png")
    plot_curves(runs, labels, curves)
    budgeted = [part["settings"] for part in parts if part["settings"]["budget_s"] is not None]
    settings = {
        **(budgeted[0] if budgeted else first),
        "command": command,
        "parts": [part["settings"]["command"] for part in parts],
        "seeds": sorted({seed for part in parts for seed in part["settings"]["seeds"]}),
        "models": labels,
        "calibration_cpu_s_per_epoch": {
            label: seconds
            for part in parts
            for label, seconds in part["settings"]["calibration_cpu_s_per_epoch"].items()
        },
        "configs": configs,
        "curves": _relative(curves),
    }
    report = {
        "benchmark": "darcy",
        "settings": settings,
        "machine": parts[0]["machine"],
        "runs": runs,
        "summary": summarise(runs, labels),
        "wall_s": max(part["wall_s"] for part in parts),  # the parts ran side by side
        "load_average_at_end": max(
            (part["load_average_at_end"] for part in parts), key=lambda load: load[0]
        ),
    }
    write_results(out, report, markdown(report))
    return report


def tune_fno(args, path: Path, data: Data, command: str) -> dict:
    """Train FNO over the tuning grid at a fixed CPU budget; rank by validation rel. L2."""
    start = time.perf_counter()
    seed = args.seeds[0]
    seconds_per_epoch = calibrate(load_config(path), data)
    epochs = epochs_for(args.tune_budget_s, seconds_per_epoch)
    print(f"fno: {seconds_per_epoch:.1f} CPU s / epoch, {epochs} epochs per setting", flush=True)
    rows = []
    for schedule, overrides in TUNING_SCHEDULES.items():
        for lr in TUNING_LRS:
            config = load_config(path, overrides={**overrides, "optim.lr": lr})
            trained = train(config, data, seed=seed, epochs=epochs, record_test=False)
            history = trained["history"]
            best = history.records[history.best_epoch - 1]
            rows.append(
                {
                    "schedule": schedule,
                    "lr": lr,
                    "overrides": {**overrides, "optim.lr": lr},
                    "epochs": epochs,
                    "best_epoch": history.best_epoch,
                    "val_relative_l2": best["val_relative_l2"],
                    "val_relative_h1": best["val_relative_h1"],
                    "cpu_s": trained["cpu_s"],
                    "curve": trained["curve"],
                }
            )
            print(
                f"  {schedule:9s} lr {lr:g}: val L2 {best['val_relative_l2']:.4f} "
                f"(epoch {history.best_epoch}/{epochs}, {trained['cpu_s']:.0f} CPU s)",
                flush=True,
            )
    rows.sort(key=lambda row: row["val_relative_l2"])
    report = {
        "benchmark": "darcy-fno-tuning",
        "settings": {
            "command": command,
            "config": _relative(path),
            "data": str(data.paths[64]),
            "samples": {"train": len(data.train), "val": len(data.val)},
            "budget_s": args.tune_budget_s,
            "clock": "process CPU time (time.process_time)",
            "calibration_cpu_s_per_epoch": seconds_per_epoch,
            "epochs": epochs,
            "seed": seed,
            "threads": args.threads,
            "lrs": list(TUNING_LRS),
            "schedules": TUNING_SCHEDULES,
        },
        "machine": machine(),
        "rows": rows,
        "best": {key: rows[0][key] for key in ("schedule", "lr", "overrides")},
        "wall_s": time.perf_counter() - start,
        "load_average_at_end": os.getloadavg(),
    }
    lines = [
        "# FNO tuning on smooth Darcy (64x64): learning rate x schedule at a fixed CPU budget",
        "",
        f"Command: `{command}`  ",
        f"`{_relative(path)}` (its architecture, loss, batch and weight decay), seed {seed}, "
        f"{len(data.train)} train / {len(data.val)} val samples; {args.tune_budget_s:.0f} s of "
        f"process CPU time per setting on {args.threads} torch thread(s) = {epochs} epochs "
        f"({seconds_per_epoch:.1f} CPU s per epoch, from a calibration epoch). Ranked by the "
        "validation relative L2 of the best-validation-loss weights; the test split is not "
        "read. Schedules: step = ×0.5 every fifth of the run (neuraloperator's Darcy "
        "StepLR(60, 0.5) over 300 epochs, rescaled), one-cycle = MgNO's settings "
        "(pct_start 0.2, div_factor 2, final_div_factor 100), cosine = to 0.",
        "",
        "| rank | schedule | lr | best epoch | val rel. L2 (×10⁻²) | val rel. H1 (×10⁻²) | CPU s |",
        "|---|---|---|---|---|---|---|",
    ]
    for rank, row in enumerate(rows, 1):
        lines.append(
            f"| {rank} | {row['schedule']} | {row['lr']:g} | {row['best_epoch']}/{epochs} | "
            f"{100 * row['val_relative_l2']:.2f} | {100 * row['val_relative_h1']:.2f} | "
            f"{row['cpu_s']:.0f} |"
        )
    lines += ["", f"Selected: {rows[0]['schedule']}, lr {rows[0]['lr']:g}; in the configuration:"]
    lines += ["", "```toml", *toml_lines(rows[0]["overrides"]), "```"]
    m = report["machine"]
    lines += [
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores; torch {m['torch']}, physnet {m['physnet']}; "
        f"total wall time {report['wall_s'] / 60:.1f} min; load average at the start "
        f"{m['load_average_1min']}, at the end {report['load_average_at_end'][0]:.1f}.",
        "",
    ]
    text = "\n".join(lines)
    stem = Path(args.out)
    name = "darcy-fno-tuning" + ("-quick" if args.quick else "")
    write_results(stem.with_name(name), report, text)
    return report


def toml_lines(overrides: dict) -> list[str]:
    """Dotted-key overrides as TOML tables: ``{"optim.lr": 1e-3}`` → ``[optim]`` ``lr = 0.001``."""
    tables: dict[str, list[str]] = {}
    for key, value in overrides.items():
        table, name = key.split(".", 1)
        text = f'"{value}"' if isinstance(value, str) else repr(value)
        tables.setdefault(table, []).append(f"{name} = {text}")
    lines = []
    for table, entries in tables.items():
        lines += [*([""] if lines else []), f"[{table}]", *entries]
    return lines


def step_timings(
    label: str, path: Path, inputs: torch.Tensor, targets: torch.Tensor, repeats: int
) -> dict:
    """Minimum over repeats (robust to other jobs on the machine) of one optimizer step and
    one inference on a batch, per sample, without training."""
    config = load_config(path)
    torch.manual_seed(0)
    model = physnet.nn.create(config.model.name, **config.model.kwargs)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    loss_function = physnet.training.get_loss(config.training.loss)
    train_times, infer_times = [], []
    for _ in range(repeats + 1):  # the first round warms up
        start = time.perf_counter()
        optimizer.zero_grad()
        loss_function(model(inputs), targets).backward()
        optimizer.step()
        train_times.append(time.perf_counter() - start)
        with torch.no_grad():
            start = time.perf_counter()
            model(inputs)
            infer_times.append(time.perf_counter() - start)
    return {
        "model": label,
        "parameters": sum(p.numel() for p in model.parameters()),
        "batch": len(inputs),
        "train_step_ms_per_sample": 1000 * min(train_times[1:]) / len(inputs),
        "inference_ms_per_sample": 1000 * min(infer_times[1:]) / len(inputs),
    }


def timing_only(args, models: dict[str, Path], data: Path) -> tuple[dict, str]:
    test_set = open_dataset(data, split="test")
    samples = [test_set[i] for i in range(8)]
    inputs = torch.stack([torch.from_numpy(s["coefficient"]) for s in samples])[:, None]
    targets = torch.stack([torch.from_numpy(s["solution"]) for s in samples])[:, None]
    rows = [
        step_timings(label, path, inputs, targets, args.repeats) for label, path in models.items()
    ]
    load = os.getloadavg()
    report = {
        "benchmark": "darcy-timing",
        "threads": args.threads,
        "load_average": load,
        "machine": machine(),
        "rows": rows,
    }
    lines = [
        "# Darcy step timings (64x64, batch 8, minimum over repeats)",
        "",
        f"torch threads {args.threads}; load average at the end {load[0]:.1f} on "
        f"{report['machine']['cores']} cores.",
        "",
        "| model | parameters | train step ms / sample | inference ms / sample |",
        "|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {LABELS.get(row['model'], row['model'])} | {row['parameters']:,} | "
            f"{row['train_step_ms_per_sample']:.2f} | {row['inference_ms_per_sample']:.2f} |"
        )
    return report, "\n".join(lines) + "\n"


def parse_models(parser: argparse.ArgumentParser, args) -> dict[str, Path]:
    """Label → configuration path, from ``--models`` names and ``--model LABEL=PATH``."""
    models: dict[str, Path] = {}
    # the default pair only when no model is named at all: --model alone means just those
    names = args.models if args.models is not None else [] if args.model else ["mgno,fno"]
    for name in (n for item in names for n in item.split(",") if n):
        if name not in CONFIGS:
            parser.error(
                f"--models: unknown model {name!r}; known: {', '.join(CONFIGS)} (or add one "
                "with --model LABEL=PATH)"
            )
        models[name] = CONFIGS[name]
    for item in args.model:
        label, separator, path = item.partition("=")
        if not separator or not label or not path:
            parser.error(f"--model {item!r}: expected LABEL=PATH to a training configuration")
        candidate = Path(path)
        if not candidate.is_absolute() and not candidate.exists():
            candidate = ROOT / path
        models[label] = candidate
    if not models:
        parser.error("no models: give --models and/or --model LABEL=PATH")
    for label, path in models.items():
        if not path.is_file():
            parser.error(f"model {label!r}: no configuration file {path}")
    return models


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--models",
        nargs="+",
        default=None,
        help=f"known model names, comma- or space-separated (default mgno,fno unless --model "
        f"is given; known: {', '.join(CONFIGS)})",
    )
    parser.add_argument(
        "--model",
        action="append",
        default=[],
        metavar="LABEL=PATH",
        help="add a model trained from the configuration PATH under LABEL (repeatable)",
    )
    parser.add_argument(
        "--budget-s",
        type=float,
        default=1800.0,
        help="process CPU seconds of training per run (default 1800); each model's epochs "
        "are sized to it",
    )
    parser.add_argument(
        "--epochs",
        type=int,
        default=None,
        help="train every model for this many epochs instead of an equal CPU budget",
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--data", default=None, help="default $PHYSNET_DATA/darcy-smooth-64.h5")
    parser.add_argument(
        "--data-128", default=None, help="default $PHYSNET_DATA/darcy-smooth-128-test.h5"
    )
    parser.add_argument(
        "--data-256", default=None, help="default $PHYSNET_DATA/darcy-smooth-256-test.h5"
    )
    parser.add_argument(
        "--resolutions",
        type=int,
        nargs="+",
        default=list(RESOLUTIONS),
        help="test grids (default 64 128 256; 64, the training grid, is always one): "
        "--resolutions 64 for a data set without transfer sets",
    )
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--repeats", type=int, default=3, help="inference timing repeats")
    parser.add_argument("--out", default=str(RESULTS / "darcy"), help="output stem (.json, .md)")
    parser.add_argument(
        "--tune-fno",
        action="store_true",
        help="instead of the benchmark, tune FNO's learning rate and schedule on the "
        "validation split; writes darcy-fno-tuning.{json,md} next to OUT",
    )
    parser.add_argument(
        "--tune-budget-s",
        type=float,
        default=300.0,
        help="process CPU seconds per tuning setting (default 300)",
    )
    parser.add_argument(
        "--symmetrize",
        action="store_true",
        help="also evaluate every run's best weights averaged over the square's 8 symmetries "
        "(physnet.nn.SymmetryAverage) on the 64² test split",
    )
    parser.add_argument(
        "--keep-weights",
        type=Path,
        metavar="DIR",
        help="save every run's best-validation weights as DIR/LABEL-seedK.safetensors "
        "(physnet.nn.load reads them)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"a smoke run: {QUICK_SAMPLES['train']} train / {QUICK_SAMPLES['val']} val / "
        f"{QUICK_SAMPLES['test']} test samples, the first seed, {QUICK_BUDGET_S:g} CPU s per "
        "run; writes OUT-quick",
    )
    parser.add_argument(
        "--timing-only",
        action="store_true",
        help="only time one training step and one inference per model (no training); "
        "writes OUT.timing.json and .md",
    )
    parser.add_argument(
        "--merge",
        nargs="+",
        default=None,
        metavar="PART.json",
        help="instead of training, combine the runs of several reports of this benchmark "
        "into one report at OUT: one process per model or per seed, on a core each (same "
        "data and threads; a model's runs must share its configuration and epochs, e.g. "
        "seed 0 sized by --budget-s, seeds 1 and 2 rerun with --epochs of its count)",
    )
    args = parser.parse_args(argv)
    if args.merge:
        command = "python benchmarks/darcy.py " + " ".join(sys.argv[1:] if argv is None else argv)
        return merge([Path(p) for p in args.merge], Path(args.out), command.strip())
    models = parse_models(parser, args)
    if args.epochs is not None and args.epochs < 1:
        parser.error(f"--epochs {args.epochs}: expected a positive integer")
    if args.budget_s <= 0 or args.tune_budget_s <= 0:
        parser.error("--budget-s and --tune-budget-s must be positive")
    if args.quick:
        args.seeds = args.seeds[:1]
        args.budget_s = args.tune_budget_s = QUICK_BUDGET_S
        args.out += "-quick"
    torch.set_num_threads(args.threads)
    if 64 not in args.resolutions or not set(args.resolutions) <= set(RESOLUTIONS):
        parser.error(f"--resolutions {args.resolutions}: 64 and a subset of {RESOLUTIONS}")
    paths = {
        64: Path(args.data) if args.data else data_directory() / "darcy-smooth-64.h5",
        128: Path(args.data_128)
        if args.data_128
        else data_directory() / "darcy-smooth-128-test.h5",
        256: Path(args.data_256)
        if args.data_256
        else data_directory() / "darcy-smooth-256-test.h5",
    }
    paths = {size: path for size, path in paths.items() if size in args.resolutions}
    ensure(paths[64], RECIPES / "generate.toml")
    if args.timing_only:
        report, text = timing_only(args, models, paths[64])
        stem = Path(args.out)
        write_results(stem.with_name(stem.name + ".timing"), report, text)
        return report
    for size in sorted(paths)[1:]:
        ensure(paths[size], RECIPES / f"generate-{size}.toml")
    data = Data(paths, quick=args.quick)
    command = "python benchmarks/darcy.py " + " ".join(sys.argv[1:] if argv is None else argv)
    if args.tune_fno:
        return tune_fno(args, models.get("fno", CONFIGS["fno"]), data, command.strip())
    return benchmark(args, models, data, command.strip())


if __name__ == "__main__":
    main()
