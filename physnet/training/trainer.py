"""The one supervised training loop of physnet: :class:`Trainer`, :class:`History`,
:class:`TrainingDiverged`."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from physnet._io import atomic_write
from physnet.training import distributed
from physnet.training._state import load_state, save_state
from physnet.training.augment import augment_batch, check_symmetries, parse_symmetry
from physnet.training.evaluate import (
    apply_losses,
    assemble,
    field_names,
    metric_sums,
    model_dtype,
    needs_model,
    resolve_loss,
    spatial_ndim,
)
from physnet.training.mixed import GroupedBatchSampler

__all__ = ["History", "Trainer", "TrainingDiverged"]

SCHEDULES = ("one-cycle", "cosine", "step", "constant")
AMP_MODES = ("bf16", "fp16")
STOP_REASONS = ("running", "completed", "early_stopping")

BEST = "best.safetensors"
LAST = "last.safetensors"
STATE = "last.state.safetensors"
METRICS_CSV = "metrics.csv"
METRICS_JSONL = "metrics.jsonl"

# Settings a resumed run must share with the run it continues (the trajectory depends on them).
_RESUME_SETTINGS = (
    "loss_options",
    "batch_size",
    "lr",
    "weight_decay",
    "schedule",
    "step_size",
    "gamma",
    "pct_start",
    "div_factor",
    "final_div_factor",
    "min_lr",
    "clip_grad_norm",
    "amp",
    "seed",
)


class TrainingDiverged(RuntimeError):
    """The training loss (or the validation loss) became NaN or infinite.

    Raised by :meth:`Trainer.fit` before any non-finite weights are written: ``last`` and
    ``best`` checkpoints and the training state in ``out_dir`` are those of the last epoch
    that finished with finite losses, so ``fit(..., resume=True)`` with a lower learning
    rate or gradient clipping continues from there.

    Attributes
    ----------
    epoch : int
        The epoch (counted from 1) in which the loss became non-finite.
    step : int
        The global optimizer step (counted from 1) of the first non-finite training loss,
        or the step count at the end of the epoch for a non-finite validation loss.
    history : History
        The records of the epochs that completed.
    """

    def __init__(self, message: str, *, epoch: int, step: int, history: History) -> None:
        super().__init__(message)
        self.epoch = epoch
        self.step = step
        self.history = history


@dataclass
class History:
    """Per-epoch records of a training run.

    Attributes
    ----------
    records : list of dict
        One dict per completed epoch: ``epoch`` (from 1), ``step`` (optimizer steps so far),
        ``lr`` (the learning rate of the epoch's last step), ``train_loss`` (mean over the
        epoch's samples, before each update), ``val_loss`` and ``val_<metric>`` (means over
        the validation samples, when there is a validation set), ``time_s`` (wall time of
        the epoch, validation included).
    monitor : str
        The record key that selects the best epoch and drives early stopping:
        ``"val_loss"`` with a validation set, else ``"train_loss"``.
    best_epoch : int or None
        The epoch with the lowest ``monitor`` value (the weights in ``best.safetensors``).
    best_value : float
        That lowest value (``inf`` before the first epoch).
    stop_reason : {"running", "completed", "early_stopping"}
        Why the run ended.

    Examples
    --------
    >>> history = History(records=[
    ...     {"epoch": 1, "train_loss": 0.5}, {"epoch": 2, "train_loss": 0.2}
    ... ])
    >>> history["train_loss"], len(history)
    ([0.5, 0.2], 2)
    """

    records: list[dict[str, float]] = field(default_factory=list)
    monitor: str = "val_loss"
    best_epoch: int | None = None
    best_value: float = math.inf
    stop_reason: str = "running"

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, key: str) -> list[float]:
        """The values of one record key over the epochs (``None`` where a record lacks it)."""
        if not any(key in record for record in self.records):
            keys = sorted({k for record in self.records for k in record})
            raise KeyError(f"History has no column {key!r}; columns: {keys}")
        return [record.get(key) for record in self.records]

    def to_dict(self) -> dict[str, Any]:
        return {
            "records": [dict(record) for record in self.records],
            "monitor": self.monitor,
            "best_epoch": self.best_epoch,
            "best_value": self.best_value,
            "stop_reason": self.stop_reason,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> History:
        return cls(**data)


@dataclass
class Trainer:
    """Supervised training of a field-to-field model: the loop every learned solver uses.

    ``fit`` minimises ``loss(model(inputs), targets)`` over the samples of a dataset with
    AdamW, validates every epoch, and writes checkpoints, a resumable training state and
    metric logs to ``out_dir``. Samples are dicts of arrays (a
    :class:`physnet.datasets.FieldDataset`); the fields named by ``inputs`` are stacked along
    a channel axis into the model's input ``(batch, channels, *grid)``, likewise ``targets``
    for the reference the prediction is compared with. A field without a channel axis
    (``(*grid)`` per sample) contributes one channel.

    Parameters
    ----------
    model : torch.nn.Module
        The network. Checkpoints (``out_dir`` set) need a registered :class:`physnet.nn.Model`,
        so that :func:`physnet.nn.load` can rebuild it.
    loss : str or callable, default "relative_l2"
        A name for :func:`physnet.training.get_loss` (``"relative_l2"``, ``"relative_l1"``,
        ``"relative_h1"``, ``"mse"``) or ``loss(prediction, target) -> scalar`` that averages
        over the samples of the batch. A loss that declares ``needs_model = True`` (such as
        ``"dcdm_unrolled"``) is called as ``loss(model, inputs, targets)`` instead: it runs
        the model itself (not supported under ``torchrun``).
    loss_options : mapping, optional
        Keyword arguments of the loss (e.g. ``{"steps": 4}`` for ``"dcdm_unrolled"``).
    metrics : sequence of str, default ("relative_l2",)
        Names of extra validation metrics, logged as ``val_<name>``.
    inputs, targets : sequence of str, optional
        Field names; default the dataset's ``inputs`` and ``targets``.
    epochs : int, default 100
    batch_size : int, default 8
        Samples per optimizer step *per process*: under ``torchrun`` the global batch is
        ``batch_size * WORLD_SIZE``.
    lr : float, default 1e-3
        The (peak) learning rate of AdamW.
    weight_decay : float, default 1e-4
        AdamW's decoupled weight decay.
    schedule : {"one-cycle", "cosine", "step", "constant"}, default "one-cycle"
        The learning-rate schedule (see Notes).
    step_size : int, default 50
        ``"step"``: epochs between decays.
    gamma : float, default 0.5
        ``"step"``: the decay factor.
    pct_start, div_factor, final_div_factor : float, default 0.3, 25, 1e4
        ``"one-cycle"``: fraction of the steps spent warming up, ``lr / initial lr`` and
        ``initial lr / final lr`` (torch's ``OneCycleLR``; MgNO uses 0.2, 2 and 100).
    min_lr : float, default 0.0
        ``"cosine"``: the learning rate reached at the last epoch.
    clip_grad_norm : float, optional
        Rescale the gradient so that its global 2-norm is at most this before each step.
    augment : sequence of str, default ()
        Exact symmetries of the data (:mod:`physnet.training.augment`: ``"flip0"``,
        ``"rot180_01"``, ``"transpose_01"``, ...): each training sample, inputs and targets
        alike, is mapped by one of them or the identity, drawn uniformly per sample and step
        from a generator seeded by ``seed``, the epoch and the step (so resume stays exact).
        Validation data is not augmented.
    amp : {"bf16", "fp16"}, optional
        Mixed precision on CUDA (autocast; ``"fp16"`` adds a ``GradScaler``). Requesting it
        on another device is an error, not a silent no-op.
    seed : int, default 0
        Seeds the data order (a fresh permutation per epoch from ``seed + epoch``), the
        data-loader workers, and the global torch/NumPy/``random`` generators at the start
        of a new run.
    device : str, optional
        Default ``"cuda"`` when available, else ``"cpu"``; under ``torchrun`` a CUDA run uses
        ``cuda:LOCAL_RANK``.
    num_workers : int, default 0
        Data-loader worker processes (the result does not depend on it).
    out_dir : str or os.PathLike, optional
        Where checkpoints and logs go (created if needed); ``None`` writes nothing.
    patience : int, optional
        Stop after this many epochs without improvement of the monitored loss
        (``val_loss``, or ``train_loss`` without a validation set).
    log_every : int, default 10
        Steps between progress-bar updates and checks for a non-finite loss.
    progress : bool, default True
        Show tqdm progress bars and a line per epoch (rank 0 only).

    Notes
    -----
    **Schedules.** ``"one-cycle"`` (``torch.optim.lr_scheduler.OneCycleLR``, cosine
    annealing, ``max_lr = lr``, also cycling AdamW's ``beta1`` between 0.85 and 0.95) is
    stepped after every optimizer step over ``epochs * steps_per_epoch`` steps. The others
    are stepped once per epoch: ``"cosine"`` anneals from ``lr`` at the first epoch to
    ``min_lr`` after ``epochs`` epochs, ``"step"`` multiplies by ``gamma`` every
    ``step_size`` epochs, ``"constant"`` keeps ``lr``.

    **Files in** ``out_dir``, all written atomically by rank 0 at the end of each epoch:

    * ``last.safetensors`` — the weights after the epoch; ``best.safetensors`` — those of
      the best epoch. Both are :func:`physnet.nn.save` checkpoints (``physnet.nn.load``).
    * ``last.state.safetensors`` — everything ``fit(..., resume=True)`` needs: weights,
      optimizer, scheduler and grad-scaler state, RNG states, epoch, step, best value,
      history and settings. Tensors are safetensors tensors; the rest is JSON in the
      header (no pickles).
    * ``metrics.csv`` and ``metrics.jsonl`` — the history, one row per epoch.

    **Resume** is exact: the data order of epoch ``e`` depends only on ``seed`` and ``e``,
    and the state restores the rest, so a run stopped after ``k`` epochs and resumed ends
    with weights bit-identical to an uninterrupted run (same device, same number of
    processes). Runs resume at epoch boundaries: a killed run repeats its interrupted epoch.

    **Non-finite losses** raise :class:`TrainingDiverged` (checked every ``log_every``
    steps and at the end of each epoch, before anything is written), leaving the last good
    checkpoints in place.

    **Data parallelism.** Under ``torchrun`` each process trains on its share of every
    epoch's permutation (a ``DistributedSampler``), gradients are averaged across processes
    by ``DistributedDataParallel`` (``gloo`` on CPU, ``nccl`` on CUDA), validation metrics
    are summed over processes, and only rank 0 writes files. Because every process shares
    the permutation, one process with ``batch_size * WORLD_SIZE`` sees the same global
    batches. ``out_dir`` must be readable by every rank for a resume.

    Examples
    --------
    >>> import numpy as np
    >>> from physnet.datasets._base import FieldDataset
    >>> from physnet.nn import create
    >>> from physnet.training import Trainer
    >>> class Doubling(FieldDataset):
    ...     fields, inputs, targets = ("a", "u"), ("a",), ("u",)
    ...     def __init__(self, n):
    ...         self.n, self.attrs = n, {}
    ...     def __len__(self):
    ...         return self.n
    ...     def _sample(self, i):
    ...         a = np.random.default_rng(i).standard_normal((8, 8)).astype(np.float32)
    ...         return {"a": a, "u": 2 * a}
    >>> model = create("conv-net", hidden_channels=8, n_layers=1)
    >>> trainer = Trainer(model, epochs=3, batch_size=4, lr=1e-2, progress=False)
    >>> history = trainer.fit(Doubling(16), Doubling(4))
    >>> len(history), history.stop_reason, history["val_loss"][-1] < history["val_loss"][0]
    (3, 'completed', True)
    """

    model: torch.nn.Module
    loss: str | Callable[..., torch.Tensor] = "relative_l2"
    loss_options: Mapping[str, Any] = field(default_factory=dict)
    metrics: Sequence[str] = ("relative_l2",)
    inputs: Sequence[str] | None = None
    targets: Sequence[str] | None = None
    epochs: int = 100
    batch_size: int = 8
    lr: float = 1e-3
    weight_decay: float = 1e-4
    schedule: str = "one-cycle"
    step_size: int = 50
    gamma: float = 0.5
    pct_start: float = 0.3
    div_factor: float = 25.0
    final_div_factor: float = 1e4
    min_lr: float = 0.0
    clip_grad_norm: float | None = None
    augment: Sequence[str] = ()
    amp: str | None = None
    seed: int = 0
    device: str | None = None
    num_workers: int = 0
    out_dir: str | os.PathLike | None = None
    patience: int | None = None
    log_every: int = 10
    progress: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.model, torch.nn.Module):
            raise TypeError(
                f"Trainer: model must be a torch.nn.Module, got {type(self.model).__name__}"
            )
        for name in ("epochs", "batch_size", "step_size", "log_every"):
            _check_int(name, getattr(self, name), minimum=1)
        _check_int("num_workers", self.num_workers, minimum=0)
        _check_int("seed", self.seed, minimum=0)
        if self.patience is not None:
            _check_int("patience", self.patience, minimum=1)
        for name in ("lr", "gamma", "div_factor", "final_div_factor"):
            _check_float(name, getattr(self, name), positive=True)
        for name in ("weight_decay", "min_lr"):
            _check_float(name, getattr(self, name), positive=False)
        if not 0.0 < self.pct_start < 1.0:
            raise ValueError(f"Trainer: pct_start={self.pct_start!r}, expected 0 < pct_start < 1")
        if self.clip_grad_norm is not None:
            _check_float("clip_grad_norm", self.clip_grad_norm, positive=True)
        if self.schedule not in SCHEDULES:
            raise ValueError(f"Trainer: schedule={self.schedule!r}, expected one of {SCHEDULES}")
        if isinstance(self.augment, str):
            self.augment = (self.augment,)
        self.augment = tuple(self.augment)
        for name in self.augment:
            parse_symmetry(name)
        if self.amp is not None and self.amp not in AMP_MODES:
            raise ValueError(f"Trainer: amp={self.amp!r}, expected None or one of {AMP_MODES}")
        if isinstance(self.metrics, str):
            self.metrics = (self.metrics,)
        self.metrics = tuple(self.metrics)
        # Resolve names now: an unknown loss or metric fails before any data is read.
        if not isinstance(self.loss_options, Mapping):
            raise TypeError(
                "Trainer: loss_options must be a mapping of keyword arguments, got "
                f"{type(self.loss_options).__name__}"
            )
        self.loss_options = dict(self.loss_options)
        self._loss_function = resolve_loss(self.loss, "Trainer: loss", self.loss_options)
        self._metric_functions = {
            name: resolve_loss(name, f"Trainer: metric {name!r}") for name in self.metrics
        }
        if self.amp is not None and self.device is not None and "cuda" not in str(self.device):
            raise ValueError(_amp_error(self.amp, self.device))

    # ------------------------------------------------------------------ public

    def fit(self, train_dataset: Any, val_dataset: Any = None, *, resume: bool = False) -> History:
        """Train, validating and checkpointing every epoch.

        Parameters
        ----------
        train_dataset : FieldDataset or map-style dataset of dicts
        val_dataset : same, optional
            Validated after every epoch; without it the best epoch is the one with the
            lowest training loss.
        resume : bool, default False
            Continue the run whose state is in ``out_dir`` (a run with no saved state yet
            starts from the beginning). Without it, an ``out_dir`` that already holds a
            run is an error, never silently overwritten.

        Returns
        -------
        History
            Also when the run stopped early (``stop_reason == "early_stopping"``). The
            trainer's ``model`` holds the weights of the last epoch; the best ones are in
            ``out_dir/best.safetensors``.

        Raises
        ------
        TrainingDiverged
            If a loss became NaN or infinite (the last good checkpoints are kept).
        ValueError
            For fields the datasets lack, an empty dataset, a resume whose settings differ
            from the saved run's, an ``out_dir`` holding a run without ``resume``.
        """
        device_hint = self.device or ("cuda" if torch.cuda.is_available() else "cpu")
        context = distributed.init_distributed(device_hint)
        try:
            return self._fit(context, train_dataset, val_dataset, resume=resume)
        finally:
            context.shutdown()

    # ----------------------------------------------------------------- private

    def _device(self, context: distributed.DistributedContext) -> torch.device:
        device = torch.device(self.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        if device.type == "cuda" and context.is_distributed and device.index is None:
            device = torch.device("cuda", context.local_rank)
        if self.amp is not None and device.type != "cuda":
            raise ValueError(_amp_error(self.amp, device))
        return device

    def _fit(
        self,
        context: distributed.DistributedContext,
        train_dataset: Any,
        val_dataset: Any,
        *,
        resume: bool,
    ) -> History:
        from torch.nn.parallel import DistributedDataParallel
        from torch.utils.data import DataLoader, DistributedSampler

        device = self._device(context)
        if context.is_distributed and needs_model(self._loss_function):
            raise ValueError(
                f"Trainer.fit: the loss {self.loss!r} runs the model itself "
                "(needs_model), which is not supported under torchrun yet; train in one process"
            )
        if len(train_dataset) == 0:
            raise ValueError("Trainer.fit: the training dataset has no samples")
        if val_dataset is not None and len(val_dataset) == 0:
            raise ValueError("Trainer.fit: the validation dataset has no samples")
        inputs = field_names(
            self.inputs, getattr(train_dataset, "inputs", ()), train_dataset, "inputs"
        )
        targets = field_names(
            self.targets, getattr(train_dataset, "targets", ()), train_dataset, "targets"
        )
        if val_dataset is not None:
            field_names(inputs, (), val_dataset, "inputs")
            field_names(targets, (), val_dataset, "targets")

        out_dir = None if self.out_dir is None else Path(self.out_dir)
        if out_dir is not None:
            _check_checkpointable(self.model)
        state_path = None if out_dir is None else out_dir / STATE
        if state_path is not None and state_path.exists() and not resume:
            raise ValueError(
                f"Trainer.fit: {out_dir} already holds a training run ({STATE}); pass "
                "resume=True (physnet train --resume) to continue it, or choose another "
                "out_dir (--out)"
            )
        if out_dir is not None and context.is_main:
            out_dir.mkdir(parents=True, exist_ok=True)

        model = self.model.to(device)
        model.train()
        ndim = spatial_ndim(model, train_dataset[0], (*inputs, *targets))
        if self.augment:
            first = train_dataset[0]
            for name in (*inputs, *targets):
                shape = np.shape(first[name])
                if len(shape) >= ndim:  # a scalar (a condition's constant channel) is invariant
                    check_symmetries(self.augment, shape[-ndim:])
        augment_generator = torch.Generator()

        loader_generator = torch.Generator()
        pin = device.type == "cuda"
        train_groups = getattr(train_dataset, "groups", None)
        if train_groups is not None:  # samples of several shapes: batches never mix them
            sampler = GroupedBatchSampler(
                train_groups,
                self.batch_size,
                seed=self.seed,
                rank=context.rank,
                world_size=context.world_size,
            )
            loader_options = {"batch_sampler": sampler}
        else:
            sampler = DistributedSampler(
                train_dataset,
                num_replicas=context.world_size,
                rank=context.rank,
                shuffle=True,
                seed=self.seed,
                drop_last=False,
            )
            loader_options = {"batch_size": self.batch_size, "sampler": sampler}
        train_loader = DataLoader(
            train_dataset,
            num_workers=self.num_workers,
            generator=loader_generator,
            pin_memory=pin,
            **loader_options,
        )
        val_loader = None
        if val_dataset is not None:
            # Each sample exactly once over all ranks, so summed metrics are exact means.
            val_groups = getattr(val_dataset, "groups", None)
            if val_groups is not None:
                val_options: dict[str, Any] = {
                    "batch_sampler": GroupedBatchSampler(
                        val_groups,
                        self.batch_size,
                        shuffle=False,
                        rank=context.rank,
                        world_size=context.world_size,
                    )
                }
            else:
                val_options = {
                    "batch_size": self.batch_size,
                    "sampler": range(context.rank, len(val_dataset), context.world_size),
                }
            val_loader = DataLoader(
                val_dataset, num_workers=self.num_workers, pin_memory=pin, **val_options
            )
        steps_per_epoch = len(train_loader)

        optimizer = torch.optim.AdamW(
            model.parameters(), lr=self.lr, weight_decay=self.weight_decay
        )
        scheduler = self._scheduler(optimizer, steps_per_epoch)
        scaler = torch.amp.GradScaler("cuda") if self.amp == "fp16" else None
        autocast = None
        if self.amp is not None:
            amp_dtype = torch.bfloat16 if self.amp == "bf16" else torch.float16

            def autocast() -> Any:
                return torch.autocast(device_type="cuda", dtype=amp_dtype)

        history = History(monitor="val_loss" if val_dataset is not None else "train_loss")
        epoch, step, epochs_without_improvement = 0, 0, 0
        if resume and state_path is not None and state_path.exists():
            state = load_state(state_path)
            self._check_resumable(state, context, state_path)
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            if scheduler is not None:
                scheduler.load_state_dict(state["scheduler"])
            if scaler is not None and state.get("scaler"):
                scaler.load_state_dict(state["scaler"])
            if context.rank == 0:
                _set_rng_states(state["rng"])
            else:  # only rank 0's generators are saved; the others reseed deterministically
                _seed_everything(_mix(self.seed, context.rank, state["epoch"]))
            history = History.from_dict(state["history"])
            epoch, step = state["epoch"], state["step"]
            epochs_without_improvement = state["epochs_without_improvement"]
            if history.stop_reason == "early_stopping" or epoch >= self.epochs:
                return history
            history.stop_reason = "running"
        else:
            _seed_everything(self.seed + context.rank)

        train_model: torch.nn.Module = model
        if context.is_distributed:
            train_model = DistributedDataParallel(
                model, device_ids=[device.index] if device.type == "cuda" else None
            )

        functions = {"loss": self._loss_function, **self._metric_functions}
        show = self.progress and context.is_main
        dtype = model_dtype(model)
        parameters = [p for p in model.parameters() if p.requires_grad]

        while epoch < self.epochs:
            started = time.perf_counter()
            sampler.set_epoch(epoch)
            loader_generator.manual_seed(_mix(self.seed, epoch))
            train_model.train()
            totals = torch.zeros(2, dtype=torch.float64, device=device)
            first_bad_step = torch.full((), -1, dtype=torch.int64, device=device)
            lr_used = optimizer.param_groups[0]["lr"]
            bar = _progress_bar(show, steps_per_epoch, f"epoch {epoch + 1}/{self.epochs}")
            for index, batch in enumerate(train_loader, start=1):
                x = assemble(batch, inputs, ndim, dtype=dtype, device=device)
                y = assemble(batch, targets, ndim, dtype=dtype, device=device)
                if self.augment:
                    augment_generator.manual_seed(_mix(self.seed, context.rank, epoch, index))
                    x, y = augment_batch((x, y), self.augment, augment_generator)
                optimizer.zero_grad(set_to_none=True)
                (loss,) = apply_losses(train_model, [self._loss_function], x, y, autocast)
                if scaler is not None:
                    scaler.scale(loss).backward()
                    scaler.unscale_(optimizer)
                else:
                    loss.backward()
                if self.clip_grad_norm is not None:
                    torch.nn.utils.clip_grad_norm_(parameters, self.clip_grad_norm)
                lr_used = optimizer.param_groups[0]["lr"]
                if scaler is not None:
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    optimizer.step()
                if self.schedule == "one-cycle":
                    scheduler.step()
                step += 1
                loss = loss.detach()
                totals += torch.stack(
                    [loss.double() * x.shape[0], loss.new_tensor(x.shape[0]).double()]
                )
                first_bad_step = torch.where(
                    (first_bad_step < 0) & ~torch.isfinite(loss),
                    torch.full_like(first_bad_step, step),
                    first_bad_step,
                )
                if index % self.log_every == 0 or index == steps_per_epoch:
                    self._check_finite(first_bad_step, epoch, history, out_dir)
                    if bar is not None:
                        bar.set_postfix(
                            loss=f"{(totals[0] / totals[1]).item():.4g}", lr=f"{lr_used:.3g}"
                        )
                if bar is not None:
                    bar.update()
            if bar is not None:
                bar.close()
            distributed.all_reduce_sum(totals)
            record: dict[str, float] = {
                "epoch": epoch + 1,
                "step": step,
                "lr": lr_used,
                "train_loss": (totals[0] / totals[1]).item(),
            }
            if scheduler is not None and self.schedule != "one-cycle":
                scheduler.step()
            if val_loader is not None:
                sums, count = metric_sums(
                    model,
                    val_loader,
                    functions,
                    inputs=inputs,
                    targets=targets,
                    ndim=ndim,
                    device=device,
                    autocast=autocast,
                )
                for name, total in sums.items():
                    record[f"val_{name}"] = total / count
                if not math.isfinite(record["val_loss"]):
                    raise TrainingDiverged(
                        f"training diverged: the validation loss is {record['val_loss']} after "
                        f"epoch {epoch + 1} (step {step}); " + _advice(out_dir, history),
                        epoch=epoch + 1,
                        step=step,
                        history=history,
                    )
            record["time_s"] = time.perf_counter() - started
            epoch += 1

            value = record[history.monitor]
            improved = value < history.best_value
            if improved:
                history.best_value, history.best_epoch = value, epoch
                epochs_without_improvement = 0
            else:
                epochs_without_improvement += 1
            history.records.append(record)
            if self.patience is not None and epochs_without_improvement >= self.patience:
                history.stop_reason = "early_stopping"
            elif epoch >= self.epochs:
                history.stop_reason = "completed"

            if out_dir is not None and context.is_main:
                self._write_epoch(
                    out_dir,
                    model,
                    improved=improved,
                    record=record,
                    state={
                        "epoch": epoch,
                        "step": step,
                        "epochs_without_improvement": epochs_without_improvement,
                        # the next epoch's order is the permutation seeded by seed + epoch,
                        # read from its start (runs resume at epoch boundaries)
                        "sampler": {"seed": self.seed, "epoch": epoch, "position": 0},
                        "history": history.to_dict(),
                        "model": model.state_dict(),
                        "optimizer": optimizer.state_dict(),
                        "scheduler": None if scheduler is None else scheduler.state_dict(),
                        "scaler": None if scaler is None else scaler.state_dict(),
                        "rng": _rng_states(),
                        "settings": self._settings(context),
                    },
                    history=history,
                )
            if show:
                _print_record(record)
            if history.stop_reason != "running":
                break
        distributed.barrier()
        return history

    def _scheduler(self, optimizer: torch.optim.Optimizer, steps_per_epoch: int) -> Any:
        schedulers = torch.optim.lr_scheduler
        if self.schedule == "one-cycle":
            return schedulers.OneCycleLR(
                optimizer,
                max_lr=self.lr,
                total_steps=self.epochs * steps_per_epoch,
                pct_start=self.pct_start,
                div_factor=self.div_factor,
                final_div_factor=self.final_div_factor,
            )
        if self.schedule == "cosine":
            return schedulers.CosineAnnealingLR(optimizer, T_max=self.epochs, eta_min=self.min_lr)
        if self.schedule == "step":
            return schedulers.StepLR(optimizer, step_size=self.step_size, gamma=self.gamma)
        return None

    def _settings(self, context: distributed.DistributedContext) -> dict[str, Any]:
        settings = {name: getattr(self, name) for name in _RESUME_SETTINGS}
        settings["epochs"] = self.epochs
        settings["augment"] = list(self.augment)
        settings["world_size"] = context.world_size
        return settings

    def _check_resumable(
        self, state: dict[str, Any], context: distributed.DistributedContext, path: Path
    ) -> None:
        saved = state["settings"]
        current = self._settings(context)
        saved = {"augment": [], **saved}  # runs saved before augmentation existed had none
        names = [*_RESUME_SETTINGS, "world_size", "augment"]
        if self.schedule in ("one-cycle", "cosine"):
            names.append("epochs")  # the schedule's length is part of its shape
        differences = [
            f"{name}={saved.get(name)!r} (now {current[name]!r})"
            for name in names
            if saved.get(name) != current[name]
        ]
        if differences:
            raise ValueError(
                f"Trainer.fit(resume=True): {path} was trained with different settings: "
                f"{', '.join(differences)}; resume with the same settings or start a new out_dir"
            )

    def _check_finite(
        self, first_bad_step: torch.Tensor, epoch: int, history: History, out_dir: Path | None
    ) -> None:
        bad = distributed.all_reduce_max(first_bad_step.clone())
        bad_step = int(bad.item())
        if bad_step >= 0:
            raise TrainingDiverged(
                f"training diverged: the training loss became non-finite (NaN or Inf) at "
                f"epoch {epoch + 1}, step {bad_step}; " + _advice(out_dir, history),
                epoch=epoch + 1,
                step=bad_step,
                history=history,
            )

    def _write_epoch(
        self,
        out_dir: Path,
        model: torch.nn.Module,
        *,
        improved: bool,
        record: dict[str, float],
        state: dict[str, Any],
        history: History,
    ) -> None:
        from physnet.nn import save

        metadata = {
            key: json.dumps(value)
            for key, value in record.items()
            if key in ("epoch", "step") or key.startswith(("train_", "val_"))
        }
        # The state is written last: if the process dies before, a resume repeats this
        # epoch and rewrites the same files.
        if improved:
            save(model, out_dir / BEST, metadata=metadata)
        save(model, out_dir / LAST, metadata=metadata)
        _write_metrics(out_dir, history.records)
        save_state(out_dir / STATE, state)


def _check_int(name: str, value: Any, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"Trainer: {name}={value!r}, expected an int >= {minimum}")


def _check_float(name: str, value: Any, *, positive: bool) -> None:
    ok = isinstance(value, (int, float, np.floating)) and not isinstance(value, bool)
    ok = ok and math.isfinite(value) and (value > 0 if positive else value >= 0)
    if not ok:
        raise ValueError(
            f"Trainer: {name}={value!r}, expected a finite number {'> 0' if positive else '>= 0'}"
        )


def _amp_error(amp: str, device: Any) -> str:
    return (
        f"Trainer: amp={amp!r} needs a CUDA device, but the device is {str(device)!r}; "
        "mixed precision is not emulated on the CPU (pass amp=None)"
    )


def _check_checkpointable(model: torch.nn.Module) -> None:
    from physnet.nn import Model

    if not isinstance(model, Model) or model.name is None:
        raise TypeError(
            f"Trainer: out_dir is set but the model ({type(model).__name__}) is not a registered "
            "physnet.nn.Model, so its checkpoints could not be loaded with physnet.nn.load; "
            "subclass physnet.nn.Model with a name=..., or pass out_dir=None"
        )


def _advice(out_dir: Path | None, history: History) -> str:
    if out_dir is None:
        kept = "no checkpoints were written (out_dir=None)"
    elif not history.records:
        kept = f"no epoch completed, so nothing was written to {out_dir}"
    else:
        kept = (
            f"the checkpoints of epoch {history.records[-1]['epoch']} in {out_dir} are kept "
            "(continue with resume=True, or physnet train --resume)"
        )
    return f"{kept}. Lower the learning rate, set clip_grad_norm, or check the data for NaN/Inf."


def _mix(*numbers: int) -> int:
    """A 63-bit seed from several integers (independent streams for (seed, epoch) pairs)."""
    return int(np.random.SeedSequence(list(numbers)).generate_state(1, np.uint64)[0] >> 1)


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 - the legacy global state user code draws from
    torch.manual_seed(seed)


def _rng_states() -> dict[str, Any]:
    states: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),  # noqa: NPY002
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def _set_rng_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    np.random.set_state(states["numpy"])  # noqa: NPY002
    version, internal, gauss_next = states["python"]
    random.setstate((version, tuple(internal), gauss_next))
    cuda = states.get("cuda")
    if cuda is not None and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


def _progress_bar(show: bool, total: int, description: str) -> Any:
    if not show:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=description, leave=False, dynamic_ncols=True)


def _print_record(record: dict[str, float]) -> None:
    from tqdm.auto import tqdm

    parts = [f"epoch {record['epoch']}"]
    parts += [f"{key} {value:.4g}" for key, value in record.items() if key not in ("epoch", "step")]
    tqdm.write("  ".join(parts))


def _write_metrics(out_dir: Path, records: list[dict[str, float]]) -> None:
    columns: list[str] = []
    for record in records:
        columns += [key for key in record if key not in columns]
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(records)
    with atomic_write(out_dir / METRICS_CSV, "w") as f:
        f.write(text.getvalue())
    with atomic_write(out_dir / METRICS_JSONL, "w") as f:
        f.writelines(json.dumps(record) + "\n" for record in records)
