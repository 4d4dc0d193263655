"""The model registry: :class:`Model`, :func:`create` and :func:`available_models`.

A model class registers itself under a name given as a class keyword, and every instance
records the keyword arguments it was constructed with (defaults included) in
:attr:`Model.config`. A checkpoint stores that name and config beside the weights, so
:func:`physnet.nn.load` can rebuild the architecture without pickling any Python object
(the pattern of neuraloperator's ``BaseModel``).
"""

from __future__ import annotations

import copy
import functools
import inspect
import math
from typing import Any, ClassVar

import torch

__all__ = ["Model", "available_models", "create"]

_REGISTRY: dict[str, type[Model]] = {}


class Model(torch.nn.Module):
    """Base class of physnet's networks: a registered name and a rebuildable config.

    Subclass it with a ``name`` class keyword to register the architecture::

        class ConvNet(Model, name="conv-net"):
            def __init__(self, in_channels=1, hidden_channels=32): ...

    The arguments each instance is constructed with are bound to the constructor's
    signature (defaults filled in) and kept in :attr:`config`, which must be JSON: numbers,
    strings, booleans, ``None``, lists (tuples become lists) and dicts with string keys.
    ``physnet.nn.create(model.name, **model.config)`` builds the same architecture again,
    and a checkpoint written by :func:`physnet.nn.save` holds exactly these two things beside
    the weights.

    A subclass without ``name`` is not registered (an abstract intermediate class); it
    cannot be saved until a registered subclass names it. Constructors take no ``*args``
    and no positional-only parameters, since a config is a set of keyword arguments.

    Attributes
    ----------
    name : str or None
        The registered name of the architecture (a class attribute).
    config : dict
        A copy of the constructor's keyword arguments, defaults included.

    Raises
    ------
    ValueError
        At class definition, if ``name`` is empty or already registered by another class.
    TypeError
        At class definition, if the constructor takes ``*args`` or positional-only
        parameters; at construction, if an argument is not a JSON value.

    Examples
    --------
    >>> import torch
    >>> from physnet.nn import Model, create
    >>> class Scale(Model, name="example-scale"):
    ...     def __init__(self, factor=2.0):
    ...         super().__init__()
    ...         self.factor = torch.nn.Parameter(torch.tensor(factor))
    ...     def forward(self, x):
    ...         return self.factor * x
    >>> model = create("example-scale", factor=3.0)
    >>> model.name, model.config
    ('example-scale', {'factor': 3.0})
    >>> Scale().config
    {'factor': 2.0}
    """

    name: ClassVar[str | None] = None
    _config: dict[str, Any]

    def __init_subclass__(cls, *, name: str | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "__init__" in cls.__dict__:
            cls.__init__ = _capturing_init(cls, cls.__dict__["__init__"])
        cls.name = name
        if name is None:
            return
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"{cls.__qualname__}: the model name must be a non-empty string")
        existing = _REGISTRY.get(name)
        # The same class defined again (a module reloaded, a notebook cell run twice)
        # replaces its earlier self; any other class with the name is a conflict.
        if existing is not None and _qualified_name(existing) != _qualified_name(cls):
            raise ValueError(
                f"{_qualified_name(cls)}: a model named {name!r} is already registered by "
                f"{_qualified_name(existing)}; choose another name"
            )
        _REGISTRY[name] = cls

    def __init__(self) -> None:
        super().__init__()

    @property
    def config(self) -> dict[str, Any]:
        """The constructor's keyword arguments (a copy), defaults included."""
        config = self.__dict__.get("_config")
        if config is None:
            raise AttributeError(
                f"{type(self).__name__}: no config recorded (was Model.__init__ bypassed?)"
            )
        return copy.deepcopy(config)


def _qualified_name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _capturing_init(cls: type, init: Any) -> Any:
    """Wrap ``cls.__init__`` so the outermost call records its bound arguments as the config."""
    signature = inspect.signature(init)
    parameters = list(signature.parameters.values())[1:]  # drop self
    for parameter in parameters:
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.POSITIONAL_ONLY):
            raise TypeError(
                f"{cls.__qualname__}.__init__: parameter {parameter.name!r} is "
                f"{'*args' if parameter.kind == parameter.VAR_POSITIONAL else 'positional-only'}"
                "; a Model's constructor must take keyword arguments only, so its config "
                "can rebuild it"
            )

    @functools.wraps(init)
    def __init__(self: Model, *args: Any, **kwargs: Any) -> None:
        # A subclass's __init__ calls super().__init__(...): only the outermost call
        # (the class actually being built) describes the model.
        if self.__dict__.get("_physnet_building", False):
            init(self, *args, **kwargs)
            return
        bound = signature.bind(self, *args, **kwargs)
        bound.apply_defaults()
        config: dict[str, Any] = {}
        for key, value in list(bound.arguments.items())[1:]:
            if signature.parameters[key].kind == inspect.Parameter.VAR_KEYWORD:
                config.update(value)
            else:
                config[key] = value
        config = {
            key: _as_json(value, f"{cls.__name__}: argument {key!r}")
            for key, value in config.items()
        }
        object.__setattr__(self, "_config", config)  # readable inside the constructor
        object.__setattr__(self, "_physnet_building", True)
        try:
            init(self, *args, **kwargs)
        finally:
            object.__delattr__(self, "_physnet_building")

    __init__._physnet_signature = signature  # type: ignore[attr-defined]
    return __init__


# Model's own (argument-free) constructor records an empty config for subclasses without one.
Model.__init__ = _capturing_init(Model, Model.__init__)  # type: ignore[method-assign]


def _as_json(value: Any, where: str) -> Any:
    """A deep copy of ``value`` as plain JSON values (tuples become lists), or a TypeError."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise TypeError(f"{where} = {value!r}: a model config holds finite numbers only")
        return float(value)
    if isinstance(value, (list, tuple)):
        return [_as_json(item, f"{where}[{index}]") for index, item in enumerate(value)]
    if isinstance(value, dict):
        result = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"{where} has the key {key!r}; config dicts need string keys")
            result[key] = _as_json(item, f"{where}[{key!r}]")
        return result
    hint = " (convert it with int() or float())" if hasattr(value, "item") else ""
    raise TypeError(
        f"{where} = {value!r} of type {type(value).__name__} is not a JSON value{hint}; a "
        "model's constructor arguments must be numbers, strings, booleans, None, lists or "
        "dicts, so that a checkpoint can rebuild the model"
    )


def _model_class(name: str) -> type[Model]:
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown model {name!r}; available models: {', '.join(available_models())}"
        ) from None


def available_models() -> tuple[str, ...]:
    """The names of the registered model architectures, sorted.

    Examples
    --------
    >>> from physnet.nn import available_models
    >>> "conv-net" in available_models()
    True
    """
    return tuple(sorted(_REGISTRY))


def create(name: str, **config: Any) -> Model:
    """Build a new registered model from its name and keyword arguments.

    Parameters
    ----------
    name : str
        One of :func:`available_models`.
    **config
        Constructor arguments; those left out take the constructor's defaults.

    Returns
    -------
    Model
        A freshly initialised model (in training mode), whose ``config`` holds every
        constructor argument.

    Raises
    ------
    ValueError
        If ``name`` is not registered (the message lists the registered names).
    TypeError
        If an argument is unknown to the architecture or a required one is missing (the
        message lists the valid arguments), or a value is not JSON.

    Examples
    --------
    >>> from physnet.nn import create
    >>> model = create("conv-net", in_channels=2, hidden_channels=8)
    >>> model.config["in_channels"], model.config["n_layers"]
    (2, 4)
    """
    cls = _model_class(name)
    signature = getattr(cls.__init__, "_physnet_signature", None)
    if signature is not None:
        parameters = dict(list(signature.parameters.items())[1:])
        takes_any = any(p.kind == p.VAR_KEYWORD for p in parameters.values())
        valid = [key for key, p in parameters.items() if p.kind != p.VAR_KEYWORD]
        unknown = sorted(set(config) - set(valid))
        if unknown and not takes_any:
            raise TypeError(
                f"create: model {name!r} has no argument(s) {', '.join(map(repr, unknown))}; "
                f"valid arguments: {', '.join(valid)}"
            )
        missing = [
            key
            for key, p in parameters.items()
            if p.default is p.empty and p.kind != p.VAR_KEYWORD and key not in config
        ]
        if missing:
            raise TypeError(
                f"create: model {name!r} needs the argument(s) {', '.join(map(repr, missing))}; "
                f"valid arguments: {', '.join(valid)}"
            )
    return cls(**config)
