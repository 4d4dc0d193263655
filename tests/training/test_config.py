"""TOML training configurations: parsing, errors with key paths, train_from_config, evaluate."""

from __future__ import annotations

import json
import textwrap

import numpy as np
import pytest
import torch
from training_data import Smoothing, make_model

import physnet.nn
from physnet._io import FileFormatError
from physnet.training import evaluate, load_config, relative_h1, relative_lp, train_from_config

MINIMAL = """
[model]
name = "conv-net"
ndim = 1
[data]
train = "data.h5"
"""


def _write(tmp_path, text, name="train.toml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def test_defaults_come_from_the_trainer(tmp_path):
    config = load_config(_write(tmp_path, MINIMAL))
    assert config.model.name == "conv-net" and config.model.kwargs == {"ndim": 1}
    assert config.data.train == "data.h5" and config.data.stride == 1
    options = config.trainer_options()
    assert options["lr"] == 1e-3 and options["schedule"] == "one-cycle"
    assert options["metrics"] == ("relative_l2",) and options["epochs"] == 100


def test_values_and_overrides(tmp_path):
    path = _write(
        tmp_path,
        MINIMAL
        + """
        [optim]
        lr = 1          # an int where a float is expected is fine
        clip_grad_norm = 0.5
        [training]
        metrics = ["relative_l2", "relative_h1"]
        patience = 3
        """,
    )
    config = load_config(path, overrides=["training.epochs=7", "training.device=cpu"])
    assert config.optim.lr == 1.0 and isinstance(config.optim.lr, float)
    assert config.optim.clip_grad_norm == 0.5
    assert config.training.metrics == ["relative_l2", "relative_h1"]
    assert (config.training.epochs, config.training.device, config.training.patience) == (
        7,
        "cpu",
        3,
    )
    config = load_config(
        path, overrides={"data.train_split": [0, 1, 2], "model.hidden_channels": 4}
    )
    assert config.data.train_split == [0, 1, 2] and config.model.kwargs["hidden_channels"] == 4


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("[training]\nepochs = '10'", "training.epochs: expected int, got str '10'"),
        ("[training]\nepochs = 2.5", "training.epochs: expected int, got float 2.5"),
        ("[training]\nprogress = 1", "training.progress: expected bool, got int 1"),
        ("[optim]\nlr = true", "optim.lr: expected float, got bool True"),
        (
            "[training]\nmetrics = ['relative_l2', 3]",
            r"training.metrics\[1\]: expected str, got int 3",
        ),
        ("[training]\nmetrics = 'mse'", "training.metrics: expected a list of str, got str 'mse'"),
        ("[data]\nval_split = 2", "data.val_split: expected str or a list of int, got int 2"),
        ("[optim]\nclip_grad_norm = 'no'", "optim.clip_grad_norm: expected float, got str 'no'"),
    ],
)
def test_type_errors_name_the_key_path(tmp_path, extra, message):
    text = MINIMAL.replace("[data]\n", "[data]\n" + extra.split("\n", 1)[1] + "\n")
    if not extra.startswith("[data]"):
        text = MINIMAL + extra
    with pytest.raises(ValueError, match=message):
        load_config(_write(tmp_path, text))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            MINIMAL + "[training]\nepoch = 10",
            r"training.epoch: unknown key \(did you mean 'epochs'\?\); valid keys in "
            r"\[training\]: loss, loss_options, metrics, epochs, batch_size",
        ),
        (
            MINIMAL + "[optimizer]\nlr = 1",
            r"unknown table \[optimizer\] \(did you mean 'optim'\?\)",
        ),
        (MINIMAL.replace('name = "conv-net"', ""), "model.name: missing"),
        ('[model]\nname = "conv-net"', r"\[data\]: missing table"),
        (MINIMAL.replace('train = "data.h5"', 'val = "v.h5"'), "data.train: missing"),
        ("training = 3\n" + MINIMAL, "training: expected a table"),
    ],
)
def test_structure_errors(tmp_path, text, message):
    with pytest.raises(ValueError, match=message):
        load_config(_write(tmp_path, text))


def test_file_errors(tmp_path):
    with pytest.raises(FileFormatError, match="no such file"):
        load_config(tmp_path / "missing.toml")
    with pytest.raises(FileFormatError, match="invalid TOML"):
        load_config(_write(tmp_path, "[model\nname = 1"))
    with pytest.raises(ValueError, match="expected KEY=VALUE"):
        load_config(_write(tmp_path, MINIMAL), overrides=["epochs"])
    with pytest.raises(ValueError, match=r"expected TABLE\.KEY"):
        load_config(_write(tmp_path, MINIMAL), overrides={"epochs": 3})


def _store(path, dataset: Smoothing, splits):
    from physnet.datasets.store import StoreWriter

    grid = dataset.a.shape[1]
    fields = {"a": ((grid,), np.float32), "u": ((grid,), np.float32)}
    attrs = {"generator": "test-smoothing", "config": {}, "seed": 0}
    writer = StoreWriter(path, fields, len(dataset), inputs=["a"], targets=["u"], attrs=attrs)
    for i in range(len(dataset)):
        writer.write(i, dataset[i])
    writer.finalize(splits=splits)


TRAIN = """
[model]
name = "conv-net"
in_channels = 1
out_channels = 1
hidden_channels = 8
n_layers = 1
ndim = 1

[data]
train = "data/smoothing.h5"
train_split = "train"
val_split = "val"

[optim]
lr = 1e-2
schedule = "cosine"

[training]
epochs = 3
batch_size = 4
metrics = ["relative_l2", "relative_h1"]
progress = false
"""


@pytest.fixture
def store(tmp_path):
    (tmp_path / "data").mkdir()
    _store(
        tmp_path / "data" / "smoothing.h5",
        Smoothing(20, seed=3),
        {"train": range(14), "val": range(14, 17), "test": range(17, 20)},
    )
    return tmp_path / "data" / "smoothing.h5"


def test_train_from_config_then_evaluate(tmp_path, store):
    config = _write(tmp_path, TRAIN)
    out = tmp_path / "out"
    history = train_from_config(config, out=out)
    assert len(history) == 3 and history.records[0]["step"] == 4  # 14 samples, batch 4
    assert {"best.safetensors", "last.safetensors", "config.json"} <= {
        p.name for p in out.iterdir()
    }
    saved = json.loads((out / "config.json").read_text())
    assert saved["data"]["train"] == str(store) and saved["training"]["epochs"] == 3

    # evaluate on the validation split reproduces the logged metrics of the best epoch
    result = evaluate(out / "best.safetensors", store, split="val", batch_size=2)
    assert result["n_samples"] == 3
    best = history.records[history.best_epoch - 1]
    assert result["relative_l2"] == pytest.approx(best["val_relative_l2"], rel=1e-6)
    assert result["relative_h1"] == pytest.approx(best["val_relative_h1"], rel=1e-6)

    with pytest.raises(ValueError, match="already holds a training run"):
        train_from_config(config, out=out)
    again = train_from_config(config, out=out, resume=True)
    assert again.records == history.records


def test_train_from_config_errors(tmp_path, store):
    config = _write(tmp_path, TRAIN.replace("n_layers = 1", "n_layer = 1"))
    with pytest.raises(ValueError, match=r"\[model\] in .*'n_layer'"):
        train_from_config(config, out=tmp_path / "out")
    config = _write(tmp_path, TRAIN.replace('"conv-net"', '"conv-nett"'))
    with pytest.raises(ValueError, match="unknown model 'conv-nett'"):
        train_from_config(config, out=tmp_path / "out")
    config = _write(tmp_path, TRAIN.replace("epochs = 3", "epochs = 0"))
    with pytest.raises(ValueError, match="epochs=0"):
        train_from_config(config, out=tmp_path / "out")
    config = _write(tmp_path, TRAIN)
    with pytest.raises(ValueError, match="not in the dataset"):
        train_from_config(config, out=tmp_path / "out", overrides={"data.inputs": ["b"]})


def test_evaluate_matches_a_manual_computation():
    dataset = Smoothing(5, seed=4)
    model = make_model().eval()
    with torch.no_grad():
        x, y = torch.from_numpy(dataset.a[:, None]), torch.from_numpy(dataset.u[:, None])
        prediction = model(x)
        expected_l2 = relative_lp(prediction, y, reduction="none").mean().item()
        expected_h1 = relative_h1(prediction, y, reduction="none").mean().item()
    result = evaluate(model, dataset, batch_size=2)  # batches of 2, 2 and 1
    assert result == {
        "relative_l2": pytest.approx(expected_l2, rel=1e-6),
        "relative_h1": pytest.approx(expected_h1, rel=1e-6),
        "n_samples": 5,
    }


def test_evaluate_errors(tmp_path):
    model = make_model()
    with pytest.raises(ValueError, match="unknown loss 'rel_l2'"):
        evaluate(model, Smoothing(2), metrics=["rel_l2"])
    with pytest.raises(ValueError, match="split and stride apply to a file path"):
        evaluate(model, Smoothing(2), split="val")
    with pytest.raises(FileFormatError, match="no such file"):
        evaluate(tmp_path / "missing.safetensors", Smoothing(2))
    physnet.nn.save(model, tmp_path / "m.safetensors")
    with pytest.raises(FileFormatError):
        evaluate(tmp_path / "m.safetensors", tmp_path / "missing.h5")


def test_the_shipped_solver_configs_parse():
    from pathlib import Path

    configs = sorted((Path(__file__).parents[2] / "solvers").glob("*/train.toml"))
    assert configs
    for path in configs:
        config = load_config(path)
        physnet.nn.create(config.model.name, **config.model.kwargs)
        assert config.data.train_split == "train" and config.data.val_split == "val"


def test_loss_options_table_reaches_the_trainer(tmp_path):
    path = _write(
        tmp_path, MINIMAL + '[training]\nloss = "dcdm_unrolled"\nloss_options = { steps = 3 }\n'
    )
    options = load_config(path).trainer_options()
    assert options["loss"] == "dcdm_unrolled" and options["loss_options"] == {"steps": 3}
    bad = _write(tmp_path, MINIMAL + "[training]\nloss_options = 3\n", name="bad.toml")
    with pytest.raises(ValueError, match=r"training\.loss_options: expected a table"):
        load_config(bad)
