"""Dataset generation: registered generators written to the physnet store, reproducibly.

A *generator* turns ``(config, index, rng)`` into one sample (a dict of NumPy arrays);
:func:`generate` runs it for every sample index and writes a store
(:mod:`physnet.datasets.store`). Three properties hold whatever the machine layout:

Deterministic
    Sample ``i`` is a pure function of ``(config, seed, i)``: its random generator is
    ``numpy.random.default_rng(numpy.random.SeedSequence(seed, spawn_key=(i,)))`` (the
    ``i``-th child of ``SeedSequence(seed).spawn``), and BLAS runs single-threaded while a
    sample is computed, so no summation order depends on the thread count. The file's
    bytes are therefore the same for any number of workers, ranks or interruptions.
Resumable
    The store is written as ``OUT.partial`` and renamed when complete; a rerun of the same
    command finds the partial file and computes only the missing samples.
Sharded
    With ``RANK``/``WORLD_SIZE`` (arguments or environment, as ``torchrun`` and job arrays
    set them) rank ``r`` writes the samples ``i`` with ``i % world_size == r`` to its own
    shard file (:func:`shard_path`); :func:`merge_shards` joins them into the file a
    single process would have written, byte for byte.

A generation is described by a TOML file (``datasets/<name>/generate.toml`` in the source
tree for the catalogued datasets)::

    generator = "gaussian-fields"   # a registered generator
    samples = 1024
    seed = 0
    [config]                        # the generator's own options; others keep defaults
    size = 64
    [splits]                        # fractions summing to 1; contiguous index blocks
    train = 0.8
    val = 0.1
    test = 0.1

Examples
--------
>>> import os, tempfile
>>> from physnet.datasets.generate import generate
>>> from physnet.datasets.store import StoreDataset
>>> out = os.path.join(tempfile.mkdtemp(), "fields.h5")
>>> path = generate("gaussian-fields", out, samples=10, progress=False,
...                 overrides={"size": 16})
>>> train = StoreDataset(path, split="train")
>>> len(train), train[0]["forcing"].shape, train.inputs, train.targets
(8, (16, 16), ('forcing',), ('solution',))
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import importlib
import inspect
import math
import multiprocessing
import numbers
import os
import signal
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from physnet._io import _check_integer as _check_count
from physnet._io import rank_and_world_size, shard_path
from physnet._toml import load_toml
from physnet.datasets.store import (
    StoreDataset,
    StoreWriter,
    partial_path,
)

__all__ = [
    "GenerationPlan",
    "Generator",
    "available_generators",
    "generate",
    "get_generator",
    "merge_shards",
    "plan_generation",
    "register_generator",
    "shard_path",
    "split_indices",
]

#: The catalogue of dataset folders (``datasets/<name>/generate.toml``) of a source tree.
DATASETS_DIRECTORY = Path(__file__).resolve().parents[2] / "datasets"
SPLIT_NAMES = ("train", "val", "test")
_PLAN_KEYS = ("generator", "samples", "seed", "config", "splits")
_MAX_SEED = 2**63 - 1


# --- the registry -------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Generator:
    """A registered sample generator (see :func:`register_generator`).

    Attributes
    ----------
    name : str
    sample : callable
        ``sample(config, index, rng) -> dict`` of NumPy arrays, one per field.
    fields : callable
        ``fields(config) -> dict`` name -> ``(sample_shape, dtype)``.
    inputs, targets : tuple of str
    default_config : dict
        Every option with its default; its values' types are the options' types.
    validate : callable or None
        ``validate(config)`` raising ValueError for values out of range.
    default_samples : int or None
        Number of samples when neither a TOML file nor the caller gives one.
    default_splits : dict
        Split fractions used without a TOML file.
    module : str
        The module that registers it (imported by worker processes).
    """

    name: str
    sample: Callable[[dict, int, np.random.Generator], Mapping[str, Any]]
    fields: Callable[[dict], Mapping[str, tuple[Sequence[int], Any]]]
    inputs: tuple[str, ...]
    targets: tuple[str, ...]
    default_config: Mapping[str, Any]
    validate: Callable[[dict], None] | None = None
    default_samples: int | None = None
    default_splits: Mapping[str, float] = dataclasses.field(default_factory=dict)
    module: str = ""

    def check_config(self, config: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """``config`` completed with the defaults, after checking keys, types and values.

        Raises
        ------
        ValueError
            For an unknown key (listing the valid ones) or a value out of range.
        TypeError
            For a value of the wrong type (naming its key path, e.g. ``config.size``).
        """
        merged = _merge_config(self.default_config, config or {}, "config")
        if self.validate is not None:
            self.validate(merged)
        return merged


_GENERATORS: dict[str, Generator] = {}


def register_generator(
    name: str,
    generator: Any = None,
    *,
    fields: Callable[[dict], Mapping[str, Any]] | None = None,
    inputs: Sequence[str] = (),
    targets: Sequence[str] = (),
    default_config: Mapping[str, Any] | None = None,
    validate: Callable[[dict], None] | None = None,
    overwrite: bool = False,
) -> Any:
    """Register a sample generator under ``name``; usable as a decorator.

    Two forms. A class (instantiated without arguments) or an object providing
    ``sample(config, index, rng)``, ``fields(config)``, ``inputs``, ``targets``,
    ``default_config`` and optionally ``validate(config)``, ``default_samples`` and
    ``default_splits``; or a plain ``sample`` function, with ``fields``, ``inputs``,
    ``targets`` and ``default_config`` given as keyword arguments.

    ``sample`` must draw all its randomness from ``rng`` and depend on nothing but
    ``(config, index, rng)``: that is what makes a dataset reproducible. Register at
    module level in an importable module, so worker processes find the generator.

    Parameters
    ----------
    name : str
        The name :func:`generate` and TOML files (``generator = "..."``) use.
    generator : class, object or callable, optional
        What to register (without it, a decorator is returned).
    fields, inputs, targets, default_config, validate
        For the function form only.
    overwrite : bool, default False
        Replace a generator of that name instead of raising.

    Returns
    -------
    The registered object, unchanged (or a decorator).

    Raises
    ------
    ValueError
        If ``name`` is taken and ``overwrite`` is False.
    TypeError
        If the object lacks a required attribute.

    Examples
    --------
    >>> import numpy as np
    >>> from physnet.datasets.generate import get_generator, register_generator
    >>> @register_generator("example-noise", overwrite=True,
    ...                     fields=lambda config: {"x": ((config["n"],), np.float64)},
    ...                     inputs=["x"], default_config={"n": 3})
    ... def noise(config, index, rng):
    ...     return {"x": rng.standard_normal(config["n"])}
    >>> get_generator("example-noise").check_config({"n": 5})
    {'n': 5}
    >>> get_generator("example-noise").check_config({"size": 5})
    Traceback (most recent call last):
    ...
    ValueError: config: unknown key(s) ['size']; valid keys: ['n']
    """

    def register(obj: Any) -> Any:
        if name in _GENERATORS and not overwrite:
            raise ValueError(
                f"register_generator: a generator named {name!r} is already registered; "
                "pass overwrite=True to replace it"
            )
        _GENERATORS[name] = _as_generator(
            name, obj, fields, inputs, targets, default_config, validate
        )
        return obj

    return register if generator is None else register(generator)


def _as_generator(name, obj, fields, inputs, targets, default_config, validate) -> Generator:
    module = getattr(obj, "__module__", "") or ""
    if fields is not None:  # the function form
        if not callable(obj):
            raise TypeError(f"register_generator: {name!r}: {obj!r} is not a sample function")
        source: Any = None
        sample = obj
    else:
        source = obj() if inspect.isclass(obj) else obj
        missing = [
            attribute
            for attribute in ("sample", "fields", "default_config")
            if not hasattr(source, attribute)
        ]
        if missing:
            raise TypeError(
                f"register_generator: {name!r}: {obj!r} lacks {missing}; a generator provides "
                "sample(config, index, rng), fields(config), inputs, targets and default_config"
            )
        sample, fields = source.sample, source.fields
        inputs = getattr(source, "inputs", ())
        targets = getattr(source, "targets", ())
        default_config = source.default_config
        validate = getattr(source, "validate", None)
    return Generator(
        name=name,
        sample=sample,
        fields=fields,
        inputs=(inputs,) if isinstance(inputs, str) else tuple(inputs),
        targets=(targets,) if isinstance(targets, str) else tuple(targets),
        default_config=copy.deepcopy(dict(default_config or {})),
        validate=validate,
        default_samples=getattr(source, "default_samples", None),
        default_splits=dict(getattr(source, "default_splits", {}) or {}),
        module=module,
    )


def _load_builtins() -> None:
    # Importing these modules registers the built-in generators.
    import physnet.datasets._darcy
    import physnet.datasets._dcdm_data
    import physnet.datasets._generators
    import physnet.datasets._helmholtz
    import physnet.datasets._poisson_systems
    import physnet.datasets._radar
    import physnet.datasets._wave  # noqa: F401


def check_grid(config: Mapping[str, Any], min_size: int) -> None:
    """Validate a generator config's ``size`` (at least ``min_size``) and ``ndim`` (2 or 3).

    Examples
    --------
    >>> check_grid({"size": 32, "ndim": 3}, 8)
    >>> check_grid({"size": 4, "ndim": 3}, 8)
    Traceback (most recent call last):
    ...
    ValueError: config.size: 4, expected at least 8
    """
    if config["size"] < min_size:
        raise ValueError(f"config.size: {config['size']}, expected at least {min_size}")
    if config["ndim"] not in (2, 3):
        raise ValueError(f"config.ndim: {config['ndim']}, expected 2 or 3")


def available_generators() -> tuple[str, ...]:
    """Names of the registered generators, sorted.

    Examples
    --------
    >>> {"gaussian-fields", "poisson-scenes"} <= set(available_generators())
    True
    """
    _load_builtins()
    return tuple(sorted(_GENERATORS))


def get_generator(name: str) -> Generator:
    """The generator registered under ``name``.

    Raises
    ------
    ValueError
        For an unknown name, listing the registered ones.
    """
    _load_builtins()
    if name not in _GENERATORS:
        registered = ", ".join(available_generators())
        raise ValueError(f"unknown generator {name!r}; registered generators: {registered}")
    return _GENERATORS[name]


# --- configuration ------------------------------------------------------------------------


def _type_name(default: Any) -> str:
    if isinstance(default, bool):
        return "a bool"
    if isinstance(default, numbers.Integral):
        return "an integer"
    if isinstance(default, numbers.Real):
        return "a number"
    if isinstance(default, str):
        return "a string"
    if isinstance(default, (list, tuple)):
        return "a list"
    return type(default).__name__


def _check_value(value: Any, default: Any, where: str) -> Any:
    if default is None:
        return copy.deepcopy(value)
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, numbers.Integral):
        ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
        value = int(value) if ok else value
    elif isinstance(default, numbers.Real):
        ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif isinstance(default, str):
        ok = isinstance(value, str)
    elif isinstance(default, (list, tuple)):
        ok = isinstance(value, (list, tuple))
        if ok and default:
            return [_check_value(v, default[0], f"{where}[{i}]") for i, v in enumerate(value)]
        value = list(value) if ok else value
    else:
        ok = isinstance(value, type(default))
    if not ok:
        raise TypeError(f"{where}: expected {_type_name(default)}, got {value!r}")
    return value


def _merge_config(defaults: Mapping[str, Any], given: Any, where: str) -> dict[str, Any]:
    if not isinstance(given, Mapping):
        raise TypeError(f"{where}: expected a table (dict) of options, got {given!r}")
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; valid keys: {sorted(defaults)}")
    merged = copy.deepcopy(dict(defaults))
    for key, value in given.items():
        if isinstance(defaults[key], Mapping):
            merged[key] = _merge_config(defaults[key], value, f"{where}.{key}")
        else:
            merged[key] = _check_value(value, defaults[key], f"{where}.{key}")
    return merged


def _deep_update(base: dict[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _deep_update(dict(merged[key]), value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


@dataclasses.dataclass(frozen=True)
class GenerationPlan:
    """What :func:`generate` will write: generator, sample count, seed, config and splits."""

    generator: str
    samples: int
    seed: int
    config: dict[str, Any]
    splits: dict[str, float]
    source: str


def _check_split_fractions(where: str, splits: Any) -> dict[str, float]:
    if not isinstance(splits, Mapping):
        raise TypeError(f"{where}: expected a table of fractions, got {splits!r}")
    unknown = sorted(set(splits) - set(SPLIT_NAMES))
    if unknown:
        raise ValueError(f"{where}: unknown split(s) {unknown}; valid keys: {list(SPLIT_NAMES)}")
    fractions = {}
    for name in SPLIT_NAMES:
        if name in splits:
            value = splits[name]
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                raise TypeError(f"{where}.{name}: expected a number, got {value!r}")
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{where}.{name}: {value}, expected a fraction in [0, 1]")
            fractions[name] = float(value)
    if fractions and not math.isclose(sum(fractions.values()), 1.0, abs_tol=1e-9):
        raise ValueError(f"{where}: fractions {fractions} sum to {sum(fractions.values())}, not 1")
    return fractions


def plan_generation(
    name_or_config: str | os.PathLike,
    *,
    samples: int | None = None,
    seed: int | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> GenerationPlan:
    """Resolve a dataset name or a TOML file into a checked :class:`GenerationPlan`.

    ``name_or_config`` is a path to a TOML file, the name of a catalogued dataset
    (``datasets/<name>/generate.toml`` in the source tree) or of a registered generator
    (then its defaults). ``samples``, ``seed`` and ``overrides`` (generator options,
    merged into ``[config]``) take precedence over the file.

    Raises
    ------
    ValueError, TypeError
        For an unknown name, generator, key or split, or a value of the wrong type or out
        of range; the message names the key (``config.size``) and the file.
    FileNotFoundError
        For a TOML path that does not exist.

    Examples
    --------
    >>> plan = plan_generation("poisson-scenes", samples=4, overrides={"size": 16})
    >>> plan.generator, plan.samples, plan.config["size"], plan.splits["train"]
    ('poisson-scenes', 4, 16, 0.75)
    """
    table, source = _load_table(name_or_config)
    where = source
    unknown = sorted(set(table) - set(_PLAN_KEYS))
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; valid keys: {list(_PLAN_KEYS)}")
    if "generator" not in table:
        raise ValueError(f"{where}: no 'generator' key (one of {list(available_generators())})")
    if not isinstance(table["generator"], str):
        raise TypeError(f"{where}: generator: expected a string, got {table['generator']!r}")
    generator = get_generator(table["generator"])

    if samples is None:
        samples = table.get("samples", generator.default_samples)
    if samples is None:
        raise ValueError(f"{where}: the number of samples is not given (samples = N)")
    samples = _check_count(f"{where}: samples", samples, 1)
    seed = _check_count(
        f"{where}: seed", table.get("seed", 0) if seed is None else seed, 0, _MAX_SEED
    )
    config = table.get("config", {})
    if not isinstance(config, Mapping):
        raise TypeError(f"{where}: config: expected a table of options, got {config!r}")
    if overrides:
        config = _deep_update(dict(config), overrides)
    try:
        config = generator.check_config(config)
    except (ValueError, TypeError) as error:
        raise type(error)(f"{where}: {error}") from None
    splits = _check_split_fractions(f"{where}: splits", table.get("splits", {}))
    return GenerationPlan(generator.name, samples, seed, config, splits, source)


def _load_table(name_or_config: str | os.PathLike) -> tuple[dict[str, Any], str]:
    path = Path(name_or_config)
    is_path = isinstance(name_or_config, os.PathLike) or path.suffix == ".toml" or path.exists()
    if not is_path:
        name = os.fspath(name_or_config)
        catalogued = DATASETS_DIRECTORY / name / "generate.toml"
        if catalogued.is_file():
            path = catalogued
        else:
            _load_builtins()
            if name not in _GENERATORS:
                raise ValueError(
                    f"unknown dataset or generator {name!r}; generators: "
                    f"{', '.join(available_generators())}; or give a path to a TOML file"
                )
            generator = _GENERATORS[name]
            table = {"generator": name, "config": {}, "splits": dict(generator.default_splits)}
            return table, f"generator {name!r} (defaults)"
    return load_toml(path), os.fspath(path)


def split_indices(n_samples: int, fractions: Mapping[str, float]) -> dict[str, np.ndarray]:
    """Contiguous index blocks for split ``fractions``, in the order train, val, test.

    Every split but the first gets ``round(fraction * n_samples)`` samples; the first
    gets the rest.

    Examples
    --------
    >>> split_indices(10, {"train": 0.8, "val": 0.1, "test": 0.1})
    {'train': array([0, 1, 2, 3, 4, 5, 6, 7]), 'val': array([8]), 'test': array([9])}
    """
    names = [name for name in SPLIT_NAMES if name in fractions]
    counts = {name: round(fractions[name] * n_samples) for name in names[1:]}
    if names:
        counts = {names[0]: n_samples - sum(counts.values()), **counts}
    if any(count < 0 for count in counts.values()):
        raise ValueError(f"split fractions {dict(fractions)} do not fit {n_samples} samples")
    splits, start = {}, 0
    for name in names:
        splits[name] = np.arange(start, start + counts[name], dtype=np.int64)
        start += counts[name]
    return splits


# --- running ------------------------------------------------------------------------------


def generate(
    name_or_config: str | os.PathLike,
    out: str | os.PathLike,
    *,
    samples: int | None = None,
    workers: int = 1,
    seed: int | None = None,
    rank: int | None = None,
    world_size: int | None = None,
    progress: bool = True,
    overrides: Mapping[str, Any] | None = None,
) -> Path:
    """Generate a dataset into a physnet store, deterministically and resumably.

    Parameters
    ----------
    name_or_config : str or os.PathLike
        A catalogued dataset (``datasets/<name>/generate.toml``), a registered generator
        (its defaults) or a TOML file (keys ``generator``, ``samples``, ``seed``,
        ``[config]``, ``[splits]``); see :func:`plan_generation`.
    out : str or os.PathLike
        The store to write (conventionally ``*.h5``).
    samples, seed : int, optional
        Override the TOML file's values.
    workers : int, default 1
        Processes computing samples ("spawn" start method); the calling process is the
        only one writing. 1 computes in the calling process.
    rank, world_size : int, optional
        Shard the generation: this process writes the samples ``i`` with
        ``i % world_size == rank`` to :func:`shard_path` ``(out, rank, world_size)``.
        Default: the environment variables ``RANK`` and ``WORLD_SIZE`` (``torchrun``),
        else no sharding. Join the shards with :func:`merge_shards`.
    progress : bool, default True
        Show a tqdm progress bar on stderr.
    overrides : dict, optional
        Generator options replacing those of the TOML file's ``[config]``.

    Returns
    -------
    pathlib.Path
        The finished file: ``out``, or this rank's shard.

    Raises
    ------
    ValueError, TypeError
        For an invalid configuration (naming the key and file).
    FileExistsError
        If ``out`` exists and holds a different generation (a finished file with the same
        generation is returned as it is).

    Notes
    -----
    Interrupting (Ctrl-C, a kill, a crash) leaves ``OUT.partial``; running the same
    command again computes only the samples it lacks. Byte identity across worker counts,
    interruptions and sharding holds on one machine with one software stack (the samples
    themselves can differ across NumPy/SciPy versions or CPUs).

    Examples
    --------
    >>> import os, tempfile
    >>> from physnet.datasets.store import verify_store
    >>> out = os.path.join(tempfile.mkdtemp(), "scenes.h5")
    >>> path = generate("poisson-scenes", out, samples=2, progress=False,
    ...                 overrides={"size": 12, "names": ["sphere"]})
    >>> verify_store(path)["splits"]
    {'test': 0, 'train': 2, 'val': 0}
    """
    plan = plan_generation(name_or_config, samples=samples, seed=seed, overrides=overrides)
    workers = _check_count("generate: workers", workers, 1)
    rank, world_size = rank_and_world_size(rank, world_size, "generate")
    generator = get_generator(plan.generator)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    attrs = _store_attributes(plan)
    if world_size > 1:
        if world_size > plan.samples:
            raise ValueError(
                f"generate: world_size={world_size} exceeds the {plan.samples} samples"
            )
        target = shard_path(out, rank, world_size)
        indices = np.arange(rank, plan.samples, world_size)
        attrs["shard"] = {"rank": rank, "world_size": world_size, "n_samples": plan.samples}
        splits = None
    else:
        target = out
        indices = np.arange(plan.samples)
        splits = split_indices(plan.samples, plan.splits)
    fields = generator.fields(plan.config)

    if target.exists():
        _check_existing(target, fields, indices.size, attrs)
        return target
    if partial_path(target).exists():
        writer = StoreWriter.resume(target, fields=fields, n_samples=indices.size, attrs=attrs)
    else:
        writer = StoreWriter(
            target,
            fields,
            indices.size,
            attrs=attrs,
            inputs=generator.inputs,
            targets=generator.targets,
            splits=splits,
        )
    with writer:
        _fill(writer, generator, plan, indices, workers, progress)
        return writer.finalize()


def _store_attributes(plan: GenerationPlan) -> dict[str, Any]:
    return {
        "generator": plan.generator,
        "config": plan.config,
        "seed": plan.seed,
        "split_fractions": plan.splits,
    }


def _check_existing(target: Path, fields, n_samples: int, attrs: Mapping[str, Any]) -> None:
    """Accept a finished ``target`` only if it holds exactly this generation."""
    with StoreDataset(target, verify_checksums=False) as existing:
        expected = {"n_samples": n_samples, **attrs}
        found = {name: existing.attrs.get(name) for name in expected}
        found_fields = {
            name: (existing.shapes[name], existing.dtypes[name]) for name in existing.fields
        }
    differing = [name for name in expected if found[name] != expected[name]]
    wanted = {name: (tuple(shape), np.dtype(dtype)) for name, (shape, dtype) in fields.items()}
    if found_fields != wanted:
        differing.append("fields")
    if differing:
        raise FileExistsError(
            f"generate: {target} exists and holds a different generation (differs in "
            f"{', '.join(differing)}); remove it or choose another output"
        )


def _fill(
    writer: StoreWriter,
    generator: Generator,
    plan: GenerationPlan,
    indices: np.ndarray,
    workers: int,
    progress: bool,
) -> None:
    from tqdm.auto import tqdm

    missing = writer.missing()
    bar = tqdm(
        total=indices.size,
        initial=indices.size - missing.size,
        disable=not progress,
        desc=f"generate {plan.generator}",
        unit="sample",
    )
    # closing(): an interruption in the loop body shuts the worker pool down at once.
    computed = contextlib.closing(_compute(generator, plan, indices, missing, workers))
    with _interrupt_on_sigterm(), bar, computed as samples:
        for position, sample in samples:
            try:
                writer.write(int(position), sample)
            except ValueError as error:
                raise ValueError(f"generator {generator.name!r}: {error}") from None
            bar.update(1)


def _compute(
    generator: Generator,
    plan: GenerationPlan,
    indices: np.ndarray,
    positions: np.ndarray,
    workers: int,
) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
    """Samples ``(position, sample)`` for the store positions ``positions``, in any order."""
    items = [(int(p), int(indices[p])) for p in positions]
    if workers == 1 or len(items) <= 1:
        yield from _compute_items(generator, plan.config, plan.seed, items)
        return
    # Chunks small enough to keep every worker busy and an interruption cheap, large enough
    # to amortize the transfer overhead of tiny samples.
    chunk = max(1, min(64, len(items) // (8 * workers)))
    tasks = [
        (generator.name, generator.module, plan.config, plan.seed, items[start : start + chunk])
        for start in range(0, len(items), chunk)
    ]
    # "spawn": numba's and OpenBLAS's thread pools do not survive a fork safely.
    context = multiprocessing.get_context("spawn")
    pool = context.Pool(min(workers, len(tasks)), initializer=_single_threaded_worker)
    try:
        for results in pool.imap_unordered(_worker_task, tasks):
            yield from results
        pool.close()
    except BaseException:
        # Ctrl-C, SIGTERM (see _interrupt_on_sigterm) or an error: stop the workers before
        # the pool's queues and semaphores go, so the resource tracker finds nothing leaked.
        pool.terminate()
        raise
    finally:
        pool.join()


@contextlib.contextmanager
def _interrupt_on_sigterm() -> Iterator[None]:
    """Turn SIGTERM into ``KeyboardInterrupt`` while samples are computed and written.

    The default SIGTERM action ends the process without unwinding: the workers lose their
    parent mid-write and the pool's semaphores leak. Unwinding closes the partial file
    and the pool like Ctrl-C does. A handler the caller installed is kept.
    """
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(
        signal.SIGTERM
    ) not in (signal.SIG_DFL, None):
        yield
        return

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _compute_items(
    generator: Generator, config: dict[str, Any], seed: int, items: list[tuple[int, int]]
) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        for position, index in items:
            yield position, sample_of(generator, config, seed, index)


def sample_of(generator: Generator, config: dict[str, Any], seed: int, index: int) -> dict:
    """Sample ``index`` of a generation: ``generator.sample`` with its own random stream."""
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(index,)))
    return dict(generator.sample(copy.deepcopy(config), index, rng))


def _single_threaded_worker() -> None:
    """Run each worker on one thread: the parallelism is across the worker processes.

    Multithreaded kernels in several processes oversubscribe the cores, and OpenMP
    threads (numba's threading layer) spin-wait between parallel regions: measured 4x
    slower than one thread per worker on 2 cores.
    """
    import sys

    from threadpoolctl import threadpool_limits

    # Ctrl-C reaches the whole process group: the parent alone handles it (it terminates
    # the pool), so the workers do not each print a traceback.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threadpool_limits(limits=1)
    numba = sys.modules.get("numba")
    if numba is not None:
        numba.set_num_threads(1)


def _worker_task(task: tuple) -> list[tuple[int, dict[str, np.ndarray]]]:
    name, module, config, seed, items = task
    if name not in _GENERATORS and module and module not in ("__main__", "__mp_main__"):
        importlib.import_module(module)
    return list(_compute_items(get_generator(name), config, seed, items))


def merge_shards(out: str | os.PathLike, world_size: int, *, keep_shards: bool = False) -> Path:
    """Join the finished shards of a generation into ``out``.

    Call it from one process once every rank's :func:`generate` has returned. The result
    is the file a single process would have written (byte for byte, uncompressed stores);
    an interrupted merge resumes like a generation.

    Parameters
    ----------
    out : str or os.PathLike
        The ``out`` given to :func:`generate`.
    world_size : int
    keep_shards : bool, default False
        Keep the shard files after a successful merge.

    Returns
    -------
    pathlib.Path
        ``out``.

    Raises
    ------
    FileNotFoundError
        If a shard is missing or unfinished (naming it).
    ValueError
        If the shards come from different generations.

    Examples
    --------
    >>> import os, tempfile
    >>> out = os.path.join(tempfile.mkdtemp(), "fields.h5")
    >>> for rank in range(2):
    ...     _ = generate("gaussian-fields", out, samples=5, rank=rank, world_size=2,
    ...                  progress=False, overrides={"size": 8})
    >>> merge_shards(out, 2).name, sorted(os.listdir(os.path.dirname(out)))
    ('fields.h5', ['fields.h5'])
    """
    out = Path(out)
    world_size = _check_count("merge_shards: world_size", world_size, 1)
    paths = [shard_path(out, rank, world_size) for rank in range(world_size)]
    absent = [p for p in paths if not p.exists()]
    if absent:
        unfinished = [p for p in absent if partial_path(p).exists()]
        raise FileNotFoundError(
            f"merge_shards: missing shard(s) {[os.fspath(p) for p in absent]}"
            + (f" ({len(unfinished)} still being written)" if unfinished else "")
        )
    shards = [StoreDataset(p) for p in paths]
    try:
        first = shards[0]
        keys = ("generator", "config", "seed", "split_fractions")
        attrs = {name: first.attrs.get(name) for name in keys}
        n_samples = int(first.attrs["shard"]["n_samples"])
        for rank, shard in enumerate(shards):
            expected_shard = {"rank": rank, "world_size": world_size, "n_samples": n_samples}
            if shard.attrs.get("shard") != expected_shard:
                raise ValueError(
                    f"merge_shards: {shard.path} is shard {shard.attrs.get('shard')}, "
                    f"expected {expected_shard}"
                )
            differing = [name for name in keys if shard.attrs.get(name) != attrs[name]]
            if differing or shard.attrs["fields"] != first.attrs["fields"]:
                raise ValueError(
                    f"merge_shards: {shard.path} and {first.path} come from different "
                    f"generations (differ in {differing or ['fields']})"
                )
        fields = {name: (first.shapes[name], first.dtypes[name]) for name in first.fields}
        if out.exists():
            _check_existing(out, fields, n_samples, attrs)
        else:
            if partial_path(out).exists():
                writer = StoreWriter.resume(out, fields=fields, n_samples=n_samples, attrs=attrs)
            else:
                writer = StoreWriter(
                    out,
                    fields,
                    n_samples,
                    attrs=attrs,
                    inputs=first.inputs,
                    targets=first.targets,
                    splits=split_indices(n_samples, attrs["split_fractions"] or {}),
                )
            with writer:
                for index in writer.missing():
                    writer.write(int(index), shards[index % world_size][index // world_size])
                writer.finalize()
    finally:
        for shard in shards:
            shard.close()
    if not keep_shards:
        for path in paths:
            path.unlink()
    return out
