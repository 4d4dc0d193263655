"""The model registry: registration, captured configs, create() and its errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import physnet.nn
from physnet.nn import ConvNet, Model, available_models, create

CONVNET_DEFAULTS = {
    "in_channels": 1,
    "out_channels": 1,
    "hidden_channels": 32,
    "n_layers": 4,
    "ndim": 2,
    "kernel_size": 3,
    "activation": "gelu",
    "padding_mode": "zeros",
    "input_shift": 0.0,
    "input_scale": 1.0,
    "output_scale": 1.0,
}


class _Affine(Model, name="test-registry-affine"):
    def __init__(self, size, scale=1.0, shape=(2, 3), options=None):
        super().__init__()
        self.weight = torch.nn.Parameter(scale * torch.ones(size))

    def forward(self, x):
        return self.weight * x


class _Wide(ConvNet, name="test-registry-wide"):
    """A registered subclass whose constructor calls the parent's with other arguments."""

    def __init__(self, width=8):
        super().__init__(hidden_channels=width, n_layers=1)


class _Inherited(ConvNet, name="test-registry-inherited"):
    """A registered subclass that keeps the parent's constructor."""


class _Abstract(Model):
    """An unregistered intermediate class."""


def test_available_models_lists_registered_names_sorted():
    names = available_models()
    assert isinstance(names, tuple)
    assert "conv-net" in names
    assert "test-registry-affine" in names
    assert list(names) == sorted(names)


def test_config_captures_defaults():
    model = ConvNet()
    assert model.name == "conv-net"
    assert model.config == CONVNET_DEFAULTS


def test_config_captures_positional_and_keyword_arguments_as_json():
    model = _Affine(3, scale=2.0, shape=(4, 5), options={"a": [1, (2, 3)]})
    assert model.config == {
        "size": 3,
        "scale": 2.0,
        "shape": [4, 5],  # tuples become lists, as they come back from JSON
        "options": {"a": [1, [2, 3]]},
    }


def test_config_is_a_copy():
    model = _Affine(3, options={"a": [1]})
    config = model.config
    config["options"]["a"].append(2)
    config["size"] = 7
    assert model.config == {"size": 3, "scale": 1.0, "shape": [2, 3], "options": {"a": [1]}}


def test_config_does_not_alias_caller_arguments():
    options = {"a": [1]}
    model = _Affine(3, options=options)
    options["a"].append(2)
    assert model.config["options"] == {"a": [1]}


def test_create_round_trips_config():
    model = create("conv-net", in_channels=2, hidden_channels=8, ndim=3)
    again = create(model.name, **model.config)
    assert type(again) is ConvNet
    assert again.config == model.config
    assert {k: v.shape for k, v in again.state_dict().items()} == {
        k: v.shape for k, v in model.state_dict().items()
    }


def test_subclass_config_records_the_outermost_constructor():
    assert _Wide(width=4).config == {"width": 4}
    assert _Wide().name == "test-registry-wide"
    assert create("test-registry-wide", width=4).config == {"width": 4}


def test_subclass_without_own_init_records_parent_arguments():
    model = create("test-registry-inherited", hidden_channels=4)
    assert type(model) is _Inherited
    assert model.config == {**CONVNET_DEFAULTS, "hidden_channels": 4}


def test_unregistered_subclass_has_no_name():
    assert _Abstract.name is None
    assert _Abstract().config == {}
    assert "_Abstract" not in available_models()


def test_duplicate_name_is_an_error():
    with pytest.raises(ValueError, match=r"'conv-net' is already registered by .*ConvNet"):

        class Other(Model, name="conv-net"):
            pass


def test_empty_name_is_an_error():
    with pytest.raises(ValueError, match="non-empty string"):

        class Nameless(Model, name=""):
            pass


def test_redefining_the_same_class_replaces_it():
    def define():
        class Redefined(Model, name="test-registry-redefined"):
            pass

        return Redefined

    first, second = define(), define()
    assert first is not second
    assert type(create("test-registry-redefined")) is second


def test_varargs_constructor_is_refused_at_definition():
    with pytest.raises(TypeError, match=r"\*args"):

        class Variadic(Model, name="test-registry-variadic"):
            def __init__(self, *sizes):
                super().__init__()

    assert "test-registry-variadic" not in available_models()


def test_var_keyword_arguments_are_captured():
    class Flexible(Model, name="test-registry-flexible"):
        def __init__(self, a=1, **options):
            super().__init__()

    assert create("test-registry-flexible", b=2).config == {"a": 1, "b": 2}


@pytest.mark.parametrize(
    ("value", "match"),
    [
        (np.int64(3), r"argument 'scale' = .*3\)? of type int64 is not a JSON value \(convert"),
        (torch.tensor(1.0), "of type Tensor is not a JSON value"),
        (object(), "of type object is not a JSON value"),
        (float("nan"), "finite numbers only"),
    ],
)
def test_non_json_argument_is_refused_at_construction(value, match):
    with pytest.raises(TypeError, match=match):
        _Affine(2, scale=value)


def test_non_string_dict_key_is_refused():
    with pytest.raises(TypeError, match="string keys"):
        _Affine(2, options={1: "a"})


def test_create_unknown_name_lists_available():
    with pytest.raises(
        ValueError, match=r"unknown model 'no-such-net'; available models: .*conv-net"
    ):
        create("no-such-net")


def test_create_unknown_arguments_are_named_with_valid_ones():
    with pytest.raises(TypeError) as info:
        create("conv-net", hidden=8, depth=2)
    message = str(info.value)
    assert "'depth', 'hidden'" in message
    assert "valid arguments: in_channels, out_channels, hidden_channels" in message


def test_create_missing_required_argument():
    with pytest.raises(TypeError, match=r"needs the argument\(s\) 'size'"):
        create("test-registry-affine")


def test_public_namespace():
    assert set(physnet.nn.__all__) >= {
        "Model",
        "ConvNet",
        "available_models",
        "create",
        "load",
        "read_metadata",
        "save",
    }


def test_config_is_readable_inside_the_constructor():
    class Reader(Model, name="test-registry-reader"):
        def __init__(self, width=3):
            super().__init__()
            self.seen = self.config

    assert Reader(width=5).seen == {"width": 5}
