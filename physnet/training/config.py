"""Training configurations in TOML (``physnet train CONFIG.toml``).

A configuration has four tables::

    [model]                  # name + the architecture's keyword arguments
    name = "conv-net"
    in_channels = 1
    hidden_channels = 32

    [data]                   # files physnet.datasets.open reads
    train = "$PHYSNET_DATA/darcy.h5"
    train_split = "train"
    val_split = "val"        # or val = "other-file.h5"
    inputs = ["coefficient"]
    targets = ["solution"]
    stride = 1

    [optim]                  # optimizer and learning-rate schedule (Trainer fields)
    lr = 1e-3
    schedule = "one-cycle"

    [training]               # the rest of the Trainer's fields
    epochs = 100
    batch_size = 8

``[optim]`` and ``[training]`` take the :class:`~physnet.training.Trainer` fields of the
same names, with the same defaults. Relative paths are relative to the configuration file;
``$PHYSNET_DATA`` (default ``~/.cache/physnet``), other environment variables and ``~``
are expanded. Unknown keys and values of the wrong type are errors naming the key path
(``training.epochs: expected int, got str '10'``).

Examples
--------
>>> import os, tempfile
>>> from physnet.training import load_config
>>> path = os.path.join(tempfile.mkdtemp(), "train.toml")
>>> with open(path, "w") as f:
...     _ = f.write('[model]\\nname = "conv-net"\\n[data]\\ntrain = "d.h5"\\n')
...     _ = f.write('[training]\\nepochs = 2\\n')
>>> config = load_config(path, overrides={"optim.lr": 0.01})
>>> config.model.name, config.training.epochs, config.optim.lr, config.optim.schedule
('conv-net', 2, 0.01, 'one-cycle')
>>> load_config(path, overrides=["training.epochs='2'"])
Traceback (most recent call last):
...
ValueError: training.epochs: expected int, got str '2'
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from physnet._io import write_text
from physnet._toml import load_toml, parse_assignments
from physnet.training.trainer import STATE, History, Trainer

__all__ = [
    "DataConfig",
    "ModelConfig",
    "OptimConfig",
    "TrainConfig",
    "TrainingConfig",
    "load_config",
    "train_from_config",
]

_TRAINER_DEFAULTS = {f.name: f.default for f in dataclasses.fields(Trainer)}


def _default(name: str) -> Any:
    return _TRAINER_DEFAULTS[name]


@dataclass
class ModelConfig:
    """``[model]``: a registered architecture (``physnet.nn.available_models()``) and its
    keyword arguments (every other key of the table)."""

    name: str
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass
class DataConfig:
    """``[data]``: where the samples come from.

    ``train`` is a file :func:`physnet.datasets.open` reads, restricted to ``train_split``
    when given (a split name of a physnet store, or a list of sample indices). Validation
    data is ``val`` (restricted to ``val_split``), or, without ``val``, the ``val_split``
    of the training file; neither means no validation. ``train`` and ``val`` may be lists
    of files whose grids differ (mixed-resolution training): the split applies to each
    file, and every batch comes from one file (:class:`~physnet.training.MixedResolution`).
    ``inputs``/``targets`` default to those the dataset declares; ``stride`` subsamples the
    grid of FNO and PDEBench files.
    """

    train: str | list[str]
    val: str | list[str] | None = None
    train_split: str | list[int] | None = None
    val_split: str | list[int] | None = None
    inputs: list[str] | None = None
    targets: list[str] | None = None
    stride: int = 1


@dataclass
class OptimConfig:
    """``[optim]``: AdamW and the learning-rate schedule (see :class:`Trainer`)."""

    lr: float = _default("lr")
    weight_decay: float = _default("weight_decay")
    schedule: str = _default("schedule")
    step_size: int = _default("step_size")
    gamma: float = _default("gamma")
    pct_start: float = _default("pct_start")
    div_factor: float = _default("div_factor")
    final_div_factor: float = _default("final_div_factor")
    min_lr: float = _default("min_lr")
    clip_grad_norm: float | None = _default("clip_grad_norm")


@dataclass
class TrainingConfig:
    """``[training]``: the loop (see :class:`Trainer`); ``out_dir`` is where results go."""

    loss: str = _default("loss")
    loss_options: dict[str, Any] = field(default_factory=dict)
    metrics: list[str] = field(default_factory=lambda: list(_TRAINER_DEFAULTS["metrics"]))
    epochs: int = _default("epochs")
    batch_size: int = _default("batch_size")
    augment: list[str] = field(default_factory=list)
    amp: str | None = _default("amp")
    seed: int = _default("seed")
    device: str | None = _default("device")
    num_workers: int = _default("num_workers")
    patience: int | None = _default("patience")
    log_every: int = _default("log_every")
    progress: bool = _default("progress")
    out_dir: str | None = None


@dataclass
class TrainConfig:
    """A whole training configuration, as parsed by :func:`load_config`.

    Attributes
    ----------
    model : ModelConfig
    data : DataConfig
    optim : OptimConfig
    training : TrainingConfig
    path : pathlib.Path or None
        The file it was read from (relative paths in it are relative to its folder).
    """

    model: ModelConfig
    data: DataConfig
    optim: OptimConfig = field(default_factory=OptimConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    path: Path | None = None

    def trainer_options(self) -> dict[str, Any]:
        """The :class:`Trainer` keyword arguments of ``[optim]`` and ``[training]``."""
        options = dataclasses.asdict(self.optim)
        options.update(dataclasses.asdict(self.training))
        options.pop("out_dir")
        options["metrics"] = tuple(options["metrics"])
        return options

    def to_dict(self) -> dict[str, Any]:
        """The configuration as plain data (``[model]`` flattened back into one table)."""
        return {
            "model": {"name": self.model.name, **self.model.kwargs},
            "data": dataclasses.asdict(self.data),
            "optim": dataclasses.asdict(self.optim),
            "training": dataclasses.asdict(self.training),
        }


_SECTIONS = {
    "model": ModelConfig,
    "data": DataConfig,
    "optim": OptimConfig,
    "training": TrainingConfig,
}


def load_config(
    path: str | os.PathLike,
    *,
    overrides: Mapping[str, Any] | Iterable[str] | None = None,
) -> TrainConfig:
    """Read and check a TOML training configuration.

    Parameters
    ----------
    path : str or os.PathLike
        The ``.toml`` file.
    overrides : mapping or iterable of str, optional
        Values replacing those of the file, by dotted key: ``{"training.epochs": 5}``, or
        strings ``"training.epochs=5"`` whose value is read as a TOML value (a bare word
        that is not one is taken as a string: ``"training.device=cuda"``).

    Returns
    -------
    TrainConfig

    Raises
    ------
    physnet._io.FileFormatError
        If the file is missing or is not valid TOML.
    ValueError
        For an unknown table or key (listing the valid ones), a missing required key, or a
        value of the wrong type (naming the key path, what was expected and what was given).
    """
    raw = load_toml(path)
    for key, value in parse_assignments(overrides):
        _set_dotted(raw, key, value)
    return _from_dict(raw, Path(path))


def _set_dotted(raw: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    if len(parts) != 2 or not all(parts):
        raise ValueError(
            f"override {key!r}: expected TABLE.KEY with TABLE one of {', '.join(_SECTIONS)}"
        )
    table = raw.setdefault(parts[0], {})
    if not isinstance(table, dict):
        raise ValueError(f"override {key!r}: {parts[0]} is not a table")
    table[parts[1]] = value


def _from_dict(raw: dict[str, Any], path: Path | None) -> TrainConfig:
    unknown = [name for name in raw if name not in _SECTIONS]
    if unknown:
        raise ValueError(
            f"unknown table [{unknown[0]}]{_suggest(unknown[0], _SECTIONS)}; valid tables: "
            f"{', '.join(f'[{name}]' for name in _SECTIONS)}"
        )
    for name in ("model", "data"):
        if name not in raw:
            raise ValueError(f"[{name}]: missing table (required)")
    for name, table in raw.items():
        if not isinstance(table, dict):
            raise ValueError(f"{name}: expected a table [{name}], got {_describe(table)}")
    model = dict(raw["model"])
    if "name" not in model:
        raise ValueError("model.name: missing (required): a registered architecture name")
    name = _convert(model.pop("name"), str, "model.name")
    sections: dict[str, Any] = {"model": ModelConfig(name=name, kwargs=model)}
    for section in ("data", "optim", "training"):
        sections[section] = _build(_SECTIONS[section], raw.get(section, {}), section)
    return TrainConfig(**sections, path=path)


def _build(cls: type, table: dict[str, Any], section: str) -> Any:
    hints = typing.get_type_hints(cls)
    valid = [f.name for f in dataclasses.fields(cls)]
    for key in table:
        if key not in valid:
            raise ValueError(
                f"{section}.{key}: unknown key{_suggest(key, valid)}; valid keys in "
                f"[{section}]: {', '.join(valid)}"
            )
    values = {}
    for f in dataclasses.fields(cls):
        if f.name in table:
            values[f.name] = _convert(table[f.name], hints[f.name], f"{section}.{f.name}")
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ValueError(f"{section}.{f.name}: missing (required)")
    return cls(**values)


def _convert(value: Any, expected: Any, where: str) -> Any:
    """``value`` checked against a type hint (int → float allowed), or a ValueError."""
    origin = typing.get_origin(expected)
    if origin in (typing.Union, types.UnionType):
        options = [option for option in typing.get_args(expected) if option is not type(None)]
        errors = {}
        for option in options:
            try:
                return _convert(value, option, where)
            except ValueError as error:
                errors[typing.get_origin(option) or option] = error
        if isinstance(value, list) and list in errors:
            raise errors[list]  # names the offending item
        raise ValueError(
            f"{where}: expected {' or '.join(map(_type_name, options))}, got {_describe(value)}"
        )
    if origin is dict or expected is dict:
        if not isinstance(value, dict):
            raise ValueError(f"{where}: expected a table, got {_describe(value)}")
        return dict(value)  # the values are checked by whatever receives them
    if origin is list:
        (item_type,) = typing.get_args(expected)
        if not isinstance(value, list):
            raise ValueError(
                f"{where}: expected a list of {item_type.__name__}, got {_describe(value)}"
            )
        return [_convert(item, item_type, f"{where}[{i}]") for i, item in enumerate(value)]
    if expected is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif expected is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif expected in (str, bool):
        if isinstance(value, expected):
            return value
    else:  # pragma: no cover - a hint this parser does not know
        raise TypeError(f"{where}: unsupported type hint {expected!r}")
    raise ValueError(f"{where}: expected {expected.__name__}, got {_describe(value)}")


def _type_name(hint: Any) -> str:
    if typing.get_origin(hint) is list:
        return f"a list of {_type_name(typing.get_args(hint)[0])}"
    return hint.__name__


def _describe(value: Any) -> str:
    text = repr(value)
    if len(text) > 40:
        text = text[:37] + "..."
    return f"{type(value).__name__} {text}"


def _suggest(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _resolve_paths(value: Any, base: Path | None) -> Any:
    """:func:`_resolve_path` of a path or of each path of a list."""
    if isinstance(value, list):
        return [_resolve_path(item, base) for item in value]
    return _resolve_path(value, base)


def _resolve_path(value: str | None, base: Path | None) -> str | None:
    if value is None:
        return None
    environment = dict(os.environ)
    environment.setdefault("PHYSNET_DATA", os.path.join("~", ".cache", "physnet"))
    text = value
    for name in ("PHYSNET_DATA",):
        text = text.replace(f"${{{name}}}", environment[name]).replace(
            f"${name}", environment[name]
        )
    text = os.path.expanduser(os.path.expandvars(text))
    path = Path(text)
    if not path.is_absolute() and base is not None:
        path = base / path
    return str(path)


def _default_out_dir(path: Path | None) -> Path:
    if path is None:
        return Path("runs") / "train"
    name = path.parent.name if path.stem == "train" and path.parent.name else path.stem
    return Path("runs") / (name or "train")


def train_from_config(
    path: str | os.PathLike,
    *,
    out: str | os.PathLike | None = None,
    resume: bool = False,
    overrides: Mapping[str, Any] | Iterable[str] | None = None,
) -> History:
    """Train the model a TOML configuration describes (``physnet train``).

    Builds the model with :func:`physnet.nn.create` (after seeding torch with
    ``training.seed``, so the initial weights are reproducible), opens the data with
    :func:`physnet.datasets.open`, and runs :meth:`Trainer.fit`. Works the same under
    ``torchrun``.

    Parameters
    ----------
    path : str or os.PathLike
        The configuration (see the module documentation for its tables).
    out : str or os.PathLike, optional
        The output directory; default ``training.out_dir`` of the file (relative to it),
        else ``runs/<name>`` in the working directory, where ``<name>`` is the folder of a
        file named ``train.toml`` (``solvers/conv-net-gaussian/train.toml`` →
        ``runs/conv-net-gaussian``) or the file's stem. The resolved configuration is saved
        there as ``config.json``.
    resume : bool, default False
        Continue the run in the output directory (see :meth:`Trainer.fit`).
    overrides : mapping or iterable of str, optional
        Dotted-key replacements (see :func:`load_config`).

    Returns
    -------
    History

    Raises
    ------
    physnet._io.FileFormatError
        If the configuration or a data file cannot be read.
    ValueError
        For any configuration error (naming the key path), an unknown model or argument, or
        fields the data does not have.
    TrainingDiverged
        If the loss became non-finite.
    """
    import torch

    from physnet.datasets import open as open_dataset
    from physnet.nn import create
    from physnet.training import distributed
    from physnet.training.mixed import MixedResolution

    config = load_config(path, overrides=overrides)
    base = Path(path).resolve().parent
    data = config.data
    train_path = _resolve_paths(data.train, base)
    val_path = _resolve_paths(data.val, base)

    torch.manual_seed(config.training.seed)
    try:
        model = create(config.model.name, **config.model.kwargs)
    except (TypeError, ValueError) as error:
        raise ValueError(f"[model] in {path}: {error}") from None

    def open_files(paths: str | list[str], split: Any) -> Any:
        if isinstance(paths, str):
            return open_dataset(paths, split=split, stride=data.stride)
        if not paths:
            raise ValueError(f"[data] in {path}: an empty list of files")
        return MixedResolution(
            [open_dataset(item, split=split, stride=data.stride) for item in paths]
        )

    train = open_files(train_path, data.train_split)
    if val_path is not None:
        val = open_files(val_path, data.val_split)
    elif data.val_split is not None:
        val = open_files(train_path, data.val_split)
    else:
        val = None

    if out is not None:
        out_dir = Path(out)
    elif config.training.out_dir is not None:
        out_dir = Path(_resolve_path(config.training.out_dir, base))
    else:
        out_dir = _default_out_dir(Path(path))
    options = config.trainer_options()
    options["inputs"] = data.inputs
    options["targets"] = data.targets
    try:
        trainer = Trainer(model, out_dir=out_dir, **options)
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None
    # A run already in out_dir keeps its config (fit refuses to overwrite it without resume).
    if distributed.is_main_process() and not (out_dir / STATE).exists():
        out_dir.mkdir(parents=True, exist_ok=True)
        resolved = config.to_dict()
        resolved["data"].update(train=train_path, val=val_path)
        write_text(out_dir / "config.json", json.dumps(resolved, indent=2) + "\n")
    return trainer.fit(train, val, resume=resume)
