"""The training loop: loss reduction, files, schedules, clipping, divergence, early stopping."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_pre_hook
from training_data import Smoothing, make_model

import physnet.nn
from physnet.datasets._base import FieldDataset
from physnet.training import History, Trainer, TrainingDiverged, relative_lp
from physnet.training.evaluate import assemble

FAST = {"batch_size": 4, "lr": 1e-2, "progress": False}


@pytest.fixture
def data():
    return Smoothing(16, seed=1), Smoothing(6, seed=2)


@pytest.fixture
def record_steps():
    """Calls ``inspect(optimizer)`` before every optimizer step of any optimizer."""
    handles = []

    def register(inspect):
        hook = register_optimizer_step_pre_hook(lambda optimizer, args, kwargs: inspect(optimizer))
        handles.append(hook)

    yield register
    for handle in handles:
        handle.remove()


def test_loss_decreases(data):
    train, val = data
    history = Trainer(make_model(), epochs=8, schedule="constant", **FAST).fit(train, val)
    assert isinstance(history, History)
    assert history.stop_reason == "completed"
    assert len(history) == 8
    assert history["train_loss"][-1] < 0.3 * history["train_loss"][0]
    assert history["val_loss"][-1] < 0.3 * history["val_loss"][0]
    # the default loss is the relative L2 error, also logged as a metric
    assert history["val_relative_l2"] == pytest.approx(history["val_loss"])


def test_checkpoints_and_metric_files(tmp_path, data):
    train, val = data
    trainer = Trainer(
        make_model(), epochs=3, metrics=("relative_l2", "mse"), out_dir=tmp_path, **FAST
    )
    history = trainer.fit(train, val)

    x = torch.from_numpy(val.a[:2, None])
    last = physnet.nn.load(tmp_path / "last.safetensors")
    assert torch.equal(last(x), trainer.model.eval()(x))
    best = physnet.nn.load(tmp_path / "best.safetensors")
    assert best.config == trainer.model.config
    metadata = physnet.nn.read_metadata(tmp_path / "best.safetensors")
    assert json.loads(metadata["epoch"]) == history.best_epoch
    assert json.loads(metadata["val_loss"]) == history.best_value == min(history["val_loss"])

    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == history.records
    with open(tmp_path / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3
    assert list(rows[0]) == [
        "epoch", "step", "lr", "train_loss", "val_loss", "val_relative_l2", "val_mse", "time_s"
    ]  # fmt: skip
    assert [int(row["epoch"]) for row in rows] == [1, 2, 3]
    assert [int(row["step"]) for row in rows] == [4, 8, 12]
    assert float(rows[-1]["val_mse"]) == pytest.approx(history.records[-1]["val_mse"])
    assert (tmp_path / "last.state.safetensors").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporaries left


def test_out_dir_holding_a_run_needs_resume(tmp_path, data):
    train, _ = data
    Trainer(make_model(), epochs=1, out_dir=tmp_path, **FAST).fit(train)
    with pytest.raises(ValueError, match=r"already holds a training run.*resume=True"):
        Trainer(make_model(), epochs=1, out_dir=tmp_path, **FAST).fit(train)


def test_without_validation_monitors_the_training_loss(tmp_path, data):
    train, _ = data
    history = Trainer(make_model(), epochs=2, out_dir=tmp_path, **FAST).fit(train)
    assert history.monitor == "train_loss"
    assert "val_loss" not in history.records[0]
    assert history.best_value == min(history["train_loss"])


class _NaNAfter:
    """The relative L2 loss, until ``calls`` calls; NaN from then on."""

    def __init__(self, calls: int) -> None:
        self.calls, self.count = calls, 0

    def __call__(self, prediction, target):
        self.count += 1
        loss = relative_lp(prediction, target)
        return loss * math.nan if self.count > self.calls else loss


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, data):
    train, _ = data
    # 4 steps per epoch, no validation: the 10th loss is in epoch 3, step 10
    trainer = Trainer(make_model(), loss=_NaNAfter(9), epochs=5, out_dir=tmp_path, **FAST)
    with pytest.raises(TrainingDiverged, match=r"non-finite .* epoch 3, step 10") as caught:
        trainer.fit(train)
    assert "epoch 2" in str(caught.value) and "clip_grad_norm" in str(caught.value)
    assert (caught.value.epoch, caught.value.step) == (3, 10)
    assert len(caught.value.history) == 2

    last = physnet.nn.load(tmp_path / "last.safetensors")
    assert all(torch.isfinite(p).all() for p in last.parameters())
    assert json.loads(physnet.nn.read_metadata(tmp_path / "last.safetensors")["epoch"]) == 2
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 2


def test_nan_in_the_data_stops_training(data):
    train, _ = data
    train.a[5, 3] = np.nan
    with pytest.raises(TrainingDiverged, match="epoch 1"):
        Trainer(make_model(), epochs=2, log_every=1, **FAST).fit(train)


def test_early_stopping(data):
    train, val = data
    # a learning rate too small to change a float32 weight: the validation loss stays put
    trainer = Trainer(make_model(), epochs=10, patience=2, schedule="constant", **FAST)
    trainer.lr = 1e-30
    history = trainer.fit(train, val)
    assert history.stop_reason == "early_stopping"
    assert len(history) == 3
    assert history.best_epoch == 1


def _expected_one_cycle(lr, total, pct_start, div_factor, final_div_factor):
    peak = pct_start * total - 1
    initial, final = lr / div_factor, lr / div_factor / final_div_factor

    def cosine(start, end, fraction):
        return end + (start - end) / 2 * (1 + math.cos(math.pi * fraction))

    return [
        cosine(initial, lr, step / peak)
        if step <= peak
        else cosine(lr, final, (step - peak) / (total - 1 - peak))
        for step in range(total)
    ]


@pytest.mark.parametrize("schedule", ["one-cycle", "cosine", "step", "constant"])
def test_schedules_follow_their_curves(schedule, data, record_steps):
    train, _ = data
    lrs: list[float] = []
    record_steps(lambda optimizer: lrs.append(optimizer.param_groups[0]["lr"]))
    trainer = Trainer(
        make_model(), epochs=6, schedule=schedule, step_size=2, gamma=0.1, min_lr=1e-4, **FAST
    )
    history = trainer.fit(train)
    lr, steps = trainer.lr, 4
    assert len(lrs) == 6 * steps
    if schedule == "one-cycle":  # stepped per batch
        expected = _expected_one_cycle(lr, 6 * steps, 0.3, 25.0, 1e4)
        assert lrs == pytest.approx(expected, rel=1e-9)
        assert max(lrs) == pytest.approx(lr, rel=1e-2)
        assert (lrs[0], lrs[-1]) == pytest.approx((lr / 25, lr / 25 / 1e4), rel=1e-9)
        return
    per_epoch = {
        "cosine": [1e-4 + (lr - 1e-4) * (1 + math.cos(math.pi * e / 6)) / 2 for e in range(6)],
        "step": [lr * 0.1 ** (e // 2) for e in range(6)],
        "constant": [lr] * 6,
    }[schedule]
    assert history["lr"] == pytest.approx(per_epoch, rel=1e-9)
    assert lrs == pytest.approx(np.repeat(per_epoch, steps).tolist(), rel=1e-9)


def _gradient_norm(optimizer) -> float:
    grads = [p.grad for group in optimizer.param_groups for p in group["params"]]
    return float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads if g is not None])))


@pytest.mark.parametrize("clip", [None, 1e-3])
def test_gradient_clipping_bounds_the_norm(clip, data, record_steps):
    train, _ = data
    norms: list[float] = []
    record_steps(lambda optimizer: norms.append(_gradient_norm(optimizer)))
    Trainer(make_model(), epochs=1, clip_grad_norm=clip, **FAST).fit(train)
    assert len(norms) == 4
    if clip is None:
        assert min(norms) > 1e-2  # so that the clipped run below does clip
    else:
        assert max(norms) <= clip * (1 + 1e-5)


def test_amp_needs_cuda(data):
    with pytest.raises(ValueError, match="amp='bf16' needs a CUDA device"):
        Trainer(make_model(), amp="bf16", device="cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="needs a CUDA device"):
            Trainer(make_model(), amp="fp16", epochs=1, **FAST).fit(data[0])


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"schedule": "linear"}, "schedule='linear', expected one of"),
        ({"epochs": 0}, "epochs=0, expected an int >= 1"),
        ({"lr": -1.0}, "lr=-1.0, expected a finite number > 0"),
        ({"loss": "l2"}, "unknown loss 'l2'"),
        ({"metrics": ["relative_l2", "nope"]}, "metric 'nope'"),
        ({"amp": "fp8"}, "amp='fp8'"),
    ],
)
def test_invalid_settings(options, message):
    with pytest.raises(ValueError, match=message):
        Trainer(make_model(), **options)


def test_unknown_fields_are_named(data):
    train, _ = data
    with pytest.raises(ValueError, match=r"inputs: field\(s\) \['b'\] not in the dataset"):
        Trainer(make_model(), inputs=["b"], epochs=1, **FAST).fit(train)


def test_a_plain_module_trains_but_cannot_be_checkpointed(tmp_path, data):
    train, _ = data
    model = torch.nn.Conv1d(1, 1, 3, padding=1)
    history = Trainer(model, epochs=1, **FAST).fit(train)
    assert len(history) == 1
    with pytest.raises(TypeError, match=r"not a registered physnet\.nn\.Model"):
        Trainer(model, epochs=1, out_dir=tmp_path, **FAST).fit(train)


class _TwoInputs(FieldDataset):
    fields = ("velocity", "density", "u")
    inputs = ("velocity", "density")
    targets = ("u",)

    def __init__(self) -> None:
        self.attrs = {}

    def __len__(self) -> int:
        return 8

    def _sample(self, index):
        velocity = np.full((2, 16), index, dtype=np.float32)  # has a channel axis
        density = np.arange(16, dtype=np.float64) + index  # has none
        return {"velocity": velocity, "density": density, "u": density.astype(np.float32)}


def test_fields_are_stacked_along_channels():
    from torch.utils.data import default_collate

    dataset = _TwoInputs()
    batch = default_collate([dataset[0], dataset[3]])
    x = assemble(batch, ("velocity", "density"), 1, dtype=torch.float32, device=torch.device("cpu"))
    assert x.shape == (2, 3, 16) and x.dtype == torch.float32
    assert torch.equal(x[1, 0], torch.full((16,), 3.0))
    assert torch.equal(x[1, 2], torch.arange(16.0) + 3)

    model = physnet.nn.create("conv-net", in_channels=3, hidden_channels=4, n_layers=1, ndim=1)
    assert len(Trainer(model, epochs=1, **FAST).fit(dataset)) == 1


def test_scalar_fields_become_constant_channels():
    batch = {"image": torch.arange(12.0).reshape(2, 2, 3), "count": torch.tensor([5.0, 30.0])}
    cpu = torch.device("cpu")
    x = assemble(batch, ("image", "count"), 2, dtype=torch.float64, device=cpu)
    assert x.shape == (2, 2, 2, 3) and x.dtype == torch.float64
    assert torch.equal(x[:, 0], batch["image"].double())
    assert torch.equal(x[0, 1], torch.full((2, 3), 5.0, dtype=torch.float64))
    assert torch.equal(x[1, 1], torch.full((2, 3), 30.0, dtype=torch.float64))
    with pytest.raises(ValueError, match="all scalars"):
        assemble(batch, ("count",), 2, dtype=torch.float32, device=cpu)


def test_progress_bars_run(capsys, data):
    train, val = data
    Trainer(make_model(), epochs=1, batch_size=4, progress=True).fit(train, val)
    assert "epoch 1" in capsys.readouterr().out
