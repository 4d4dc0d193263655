"""Metrics of a trained model on a dataset: :func:`evaluate`, and the batch plumbing it shares
with the :class:`~physnet.training.Trainer` (field assembly, the per-sample metric loop)."""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch

from physnet.training import distributed
from physnet.training.losses import get_loss

__all__ = ["evaluate"]

LossFunction = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def resolve_loss(
    loss: str | LossFunction, what: str = "loss", options: Mapping[str, Any] | None = None
) -> LossFunction:
    """A loss/metric function from its name (see ``get_loss``) or a callable.

    ``options`` are keyword arguments bound to it (``functools.partial``), e.g. the number
    of unrolled steps of :func:`~physnet.training.dcdm_loss.dcdm_unrolled_loss`.
    """
    if callable(loss):
        function = loss
    elif isinstance(loss, str):
        try:
            function = get_loss(loss)
        except (KeyError, ValueError) as error:
            raise ValueError(f"{what}: {error.args[0] if error.args else error}") from None
    else:
        raise TypeError(f"{what}: expected a loss name or a callable, got {type(loss).__name__}")
    if options:
        if not isinstance(options, Mapping):
            raise TypeError(f"{what}: options must be a mapping, got {type(options).__name__}")
        function = functools.partial(function, **options)
    return function


def needs_model(function: Callable[..., Any]) -> bool:
    """Whether a loss is called as ``loss(model, inputs, targets)``.

    A loss that must run the model itself (an unrolled solver, a loss that differentiates
    through several applications) declares ``needs_model = True``; the others are called
    as ``loss(model(inputs), targets)``.
    """
    while isinstance(function, functools.partial):
        function = function.func
    return bool(getattr(function, "needs_model", False))


def apply_losses(
    model: Callable[[torch.Tensor], torch.Tensor],
    functions: Iterable[Callable[..., torch.Tensor]],
    x: torch.Tensor,
    y: torch.Tensor,
    autocast: Callable[[], Any] | None = None,
) -> list[torch.Tensor]:
    """Every function's value on one batch; the model runs once for the plain losses."""
    functions = list(functions)
    context = autocast if autocast is not None else contextlib.nullcontext
    prediction = None
    if not all(needs_model(fn) for fn in functions):
        with context():
            prediction = model(x)
        prediction = prediction.to(y.dtype)
    values = []
    for fn in functions:
        if needs_model(fn):
            with context():
                values.append(fn(model, x, y))
        else:
            values.append(fn(prediction, y))
    return values


def field_names(
    names: str | Sequence[str] | None, default: Sequence[str], dataset: Any, what: str
) -> tuple[str, ...]:
    """Validate the fields a model reads (``what`` = "inputs") or predicts ("targets")."""
    if names is None:
        names = tuple(default)
        if not names:
            raise ValueError(
                f"{what}: the dataset names no {what} fields; pass {what}=[...] (fields: "
                f"{list(getattr(dataset, 'fields', ()))})"
            )
    elif isinstance(names, str):
        names = (names,)
    names = tuple(names)
    available = tuple(getattr(dataset, "fields", ()) or ())
    unknown = [name for name in names if available and name not in available]
    if unknown:
        raise ValueError(
            f"{what}: field(s) {unknown} not in the dataset; available fields: {list(available)}"
        )
    return names


def spatial_ndim(model: torch.nn.Module, sample: Mapping[str, Any], names: Iterable[str]) -> int:
    """Number of grid axes of a sample's fields.

    The model's ``config["ndim"]`` where it declares one; otherwise the smallest number of
    axes among the named non-scalar fields (a field without a channel axis is all grid).
    """
    config = getattr(model, "config", None)
    if isinstance(config, Mapping) and isinstance(config.get("ndim"), int):
        return int(config["ndim"])
    axes = [len(getattr(sample[name], "shape", ())) for name in names]
    return min((n for n in axes if n > 0), default=0)


def assemble(
    batch: Mapping[str, torch.Tensor],
    names: Sequence[str],
    ndim: int,
    *,
    dtype: torch.dtype,
    device: torch.device,
) -> torch.Tensor:
    """Stack the fields ``names`` of a collated batch along a channel axis.

    Each field is ``(batch, *grid)`` (one channel is added) or ``(batch, channels, *grid)``;
    a scalar field ``(batch,)`` (a condition such as a sample's number of frequencies)
    becomes a constant channel on the grid of the others. The result is
    ``(batch, total channels, *grid)`` in ``dtype`` on ``device``.
    """
    parts: list[torch.Tensor | None] = []
    scalars: dict[int, torch.Tensor] = {}
    for name in names:
        tensor = batch[name]
        if not isinstance(tensor, torch.Tensor):
            tensor = torch.as_tensor(tensor)
        if tensor.ndim == 1:
            scalars[len(parts)] = tensor
            parts.append(None)
            continue
        if tensor.ndim == ndim + 1:
            tensor = tensor.unsqueeze(1)
        elif tensor.ndim != ndim + 2:
            raise ValueError(
                f"field {name!r}: a batch of shape {tuple(tensor.shape)}, expected (batch, "
                f"*grid) or (batch, channels, *grid) with {ndim} grid axes, or (batch,)"
            )
        parts.append(tensor)
    grids = {tuple(part.shape[2:]) for part in parts if part is not None}
    if len(grids) > 1:
        raise ValueError(f"fields {list(names)} lie on different grids {sorted(grids)}")
    if not grids:
        raise ValueError(f"fields {list(names)} are all scalars: no grid to put them on")
    (grid,) = grids
    for index, tensor in scalars.items():
        parts[index] = tensor.reshape(-1, 1, *([1] * ndim)).expand(-1, 1, *grid)
    stacked = parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)
    return stacked.to(device=device, dtype=dtype, non_blocking=True)


def model_dtype(model: torch.nn.Module) -> torch.dtype:
    for parameter in model.parameters():
        if parameter.is_floating_point():
            return parameter.dtype
    return torch.get_default_dtype()


@torch.no_grad()
def metric_sums(
    model: torch.nn.Module,
    loader: Iterable[Mapping[str, torch.Tensor]],
    functions: Mapping[str, LossFunction],
    *,
    inputs: Sequence[str],
    targets: Sequence[str],
    ndim: int,
    device: torch.device,
    autocast: Callable[[], Any] | None = None,
    reduce: bool = True,
) -> tuple[dict[str, float], int]:
    """Sample-weighted sums of batch-mean metrics over ``loader`` (summed over ranks if ``reduce``).

    Every function reduces a batch by its mean over samples, so ``mean * batch size`` summed
    over batches and divided by the total count is the mean over samples, independent of the
    batch size and of how the samples are split between ranks.

    Returns
    -------
    sums : dict
        Metric name → sum over samples.
    count : int
        Number of samples.
    """
    was_training = model.training
    model.eval()
    dtype = model_dtype(model)
    totals = torch.zeros(len(functions) + 1, dtype=torch.float64, device=device)
    try:
        for batch in loader:
            x = assemble(batch, inputs, ndim, dtype=dtype, device=device)
            y = assemble(batch, targets, ndim, dtype=dtype, device=device)
            n = x.shape[0]
            values = [
                value.detach().double() * n
                for value in apply_losses(model, functions.values(), x, y, autocast)
            ]
            totals += torch.stack([*values, torch.tensor(float(n), device=device).double()])
    finally:
        model.train(was_training)
    if reduce:
        distributed.all_reduce_sum(totals)
    totals = totals.tolist()
    return dict(zip(functions, totals[:-1], strict=True)), round(totals[-1])


def evaluate(
    checkpoint_or_model: str | os.PathLike | torch.nn.Module,
    data: str | os.PathLike | Any,
    *,
    metrics: Sequence[str] = ("relative_l2", "relative_h1"),
    batch_size: int = 16,
    split: str | None = None,
    stride: int = 1,
    inputs: Sequence[str] | None = None,
    targets: Sequence[str] | None = None,
    device: str | torch.device = "cpu",
    num_workers: int = 0,
) -> dict[str, float | int]:
    """Mean metrics of a model over every sample of a dataset.

    Parameters
    ----------
    checkpoint_or_model : str, os.PathLike or torch.nn.Module
        A checkpoint written by :func:`physnet.nn.save` (``best.safetensors`` of a training
        run), a pretrained name :func:`physnet.nn.load` resolves, or a model.
    data : str, os.PathLike or dataset
        A file :func:`physnet.datasets.open` reads (physnet HDF5 store, FNO ``.mat``,
        PDEBench HDF5), or a dataset whose samples are dicts of arrays (a ``FieldDataset``).
    metrics : sequence of str, default ("relative_l2", "relative_h1")
        Names accepted by :func:`physnet.training.get_loss`.
    batch_size : int, default 16
        Only memory and speed depend on it, not the result.
    split : str, optional
        The split of a store to read (``"test"``, ``"val"``...); passed to ``open``.
    stride : int, default 1
        Subsampling of the grid; passed to ``open``.
    inputs, targets : sequence of str, optional
        The model's input and target fields; default: the dataset's ``inputs``/``targets``.
    device : str or torch.device, default "cpu"
    num_workers : int, default 0
        Data-loader worker processes.

    Returns
    -------
    dict
        Metric name → mean over samples (a float), and ``"n_samples"`` → the number of
        samples.

    Raises
    ------
    ValueError
        For an unknown metric, a field the dataset does not have, an empty dataset, or
        fields that do not fit the model.
    physnet._io.FileFormatError
        If a file cannot be read as a checkpoint or a dataset.

    Examples
    --------
    >>> import numpy as np
    >>> from physnet.datasets._base import FieldDataset
    >>> from physnet.nn import create
    >>> from physnet.training import evaluate
    >>> class Pairs(FieldDataset):
    ...     fields, inputs, targets = ("a", "u"), ("a",), ("u",)
    ...     def __init__(self):
    ...         self.attrs = {}
    ...     def __len__(self):
    ...         return 4
    ...     def _sample(self, i):
    ...         a = np.full((8, 8), i + 1.0, dtype=np.float32)
    ...         return {"a": a, "u": 2 * a}
    >>> model = create("conv-net", hidden_channels=4, n_layers=1)
    >>> result = evaluate(model, Pairs(), metrics=["relative_l2"])
    >>> sorted(result), result["n_samples"]
    (['n_samples', 'relative_l2'], 4)
    """
    from torch.utils.data import DataLoader

    if isinstance(checkpoint_or_model, torch.nn.Module):
        model = checkpoint_or_model
    else:
        from physnet.nn import load

        model = load(checkpoint_or_model, device=str(device))
    if isinstance(data, (str, os.PathLike)):
        from physnet.datasets import open as open_dataset

        dataset = open_dataset(data, split=split, stride=stride)
    else:
        if split is not None or stride != 1:
            raise ValueError("evaluate: split and stride apply to a file path, not a dataset")
        dataset = data
    if isinstance(metrics, str):
        metrics = (metrics,)
    functions = {name: resolve_loss(name, f"evaluate: metric {name!r}") for name in metrics}
    if not functions:
        raise ValueError("evaluate: metrics is empty; name at least one (e.g. 'relative_l2')")
    if len(dataset) == 0:
        raise ValueError(f"evaluate: the dataset {dataset!r} has no samples")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"evaluate: batch_size={batch_size!r}, expected a positive int")
    input_names = field_names(inputs, getattr(dataset, "inputs", ()), dataset, "inputs")
    target_names = field_names(targets, getattr(dataset, "targets", ()), dataset, "targets")
    device = torch.device(device)
    model = model.to(device)
    ndim = spatial_ndim(model, dataset[0], (*input_names, *target_names))
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    sums, count = metric_sums(
        model,
        loader,
        functions,
        inputs=input_names,
        targets=target_names,
        ndim=ndim,
        device=device,
        reduce=False,
    )
    result: dict[str, float | int] = {name: total / count for name, total in sums.items()}
    result["n_samples"] = count
    return result
