"""Training state without pickles, and bit-exact resume after an interruption."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from training_data import Killed, KilledAfter, Smoothing, make_model

import physnet.nn
from physnet._io import FileFormatError
from physnet.training import Trainer
from physnet.training._state import load_state, save_state


def _assert_same(a, b, where="state"):
    assert type(a) is type(b), where
    if isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and np.array_equal(a, b), where
    elif isinstance(a, dict):
        assert list(a) == list(b), where
        for key in a:
            _assert_same(a[key], b[key], f"{where}/{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _assert_same(x, y, f"{where}/{i}")
    else:
        assert a == b, where


def test_optimizer_scheduler_and_rng_states_round_trip(tmp_path):
    model = make_model()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=1e-3, total_steps=10)
    for _ in range(3):
        model(torch.randn(2, 1, 16)).square().mean().backward()
        optimizer.step()
        scheduler.step()
    state = {
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "rng": {
            "torch": torch.get_rng_state(),
            "numpy": np.random.get_state(),  # noqa: NPY002
            "python": random.getstate(),
        },
        "inf": float("inf"),
        "nothing": None,
    }
    assert isinstance(state["optimizer"]["state"][0]["step"], torch.Tensor)
    save_state(tmp_path / "state.safetensors", state)
    _assert_same(state, load_state(tmp_path / "state.safetensors"))

    restored = torch.optim.AdamW(make_model(seed=1).parameters(), lr=1.0)
    restored.load_state_dict(load_state(tmp_path / "state.safetensors")["optimizer"])
    _assert_same(optimizer.state_dict(), restored.state_dict())


def test_state_refuses_pickles_and_foreign_files(tmp_path):
    with pytest.raises(TypeError, match="cannot be stored without pickles"):
        save_state(tmp_path / "s.safetensors", {"f": object()})
    physnet.nn.save(make_model(), tmp_path / "model.safetensors")
    with pytest.raises(FileFormatError, match="holds no physnet training state"):
        load_state(tmp_path / "model.safetensors")
    (tmp_path / "junk").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{garbage")
    with pytest.raises(FileFormatError, match="not a safetensors file"):
        load_state(tmp_path / "junk")


@pytest.mark.parametrize("num_workers", [0, 2])
def test_resume_is_bit_exact(tmp_path, num_workers):
    train, val = Smoothing(20, seed=1), Smoothing(6, seed=2)
    options = {"epochs": 4, "batch_size": 4, "lr": 1e-2, "progress": False}
    options["num_workers"] = num_workers

    straight = Trainer(make_model(), out_dir=tmp_path / "straight", **options)
    expected = straight.fit(train, val)

    # 5 steps per epoch: killed in the middle of epoch 3, after two saved epochs
    killed = Trainer(make_model(), loss=KilledAfter(12), out_dir=tmp_path / "run", **options)
    with pytest.raises(Killed):
        killed.fit(train, val)
    resumed_model = make_model(seed=123)  # different initial weights: the state wins
    resumed = Trainer(resumed_model, out_dir=tmp_path / "run", **options)
    history = resumed.fit(train, val, resume=True)

    for name, parameter in straight.model.state_dict().items():
        assert torch.equal(parameter, resumed_model.state_dict()[name]), name
    drop_time = [{k: v for k, v in r.items() if k != "time_s"} for r in history.records]
    assert drop_time == [{k: v for k, v in r.items() if k != "time_s"} for r in expected.records]
    assert (history.best_epoch, history.stop_reason) == (expected.best_epoch, "completed")
    for name in ("best.safetensors", "last.safetensors"):
        a = physnet.nn.load(tmp_path / "straight" / name).state_dict()
        b = physnet.nn.load(tmp_path / "run" / name).state_dict()
        assert all(torch.equal(a[key], b[key]) for key in a), name


def test_resuming_a_finished_run_returns_its_history(tmp_path):
    train = Smoothing(8)
    options = {"epochs": 2, "batch_size": 4, "progress": False, "out_dir": tmp_path}
    first = Trainer(make_model(), **options).fit(train)
    again = Trainer(make_model(), **options).fit(train, resume=True)
    assert again.records == first.records


def test_resume_without_a_saved_state_starts_afresh(tmp_path):
    history = Trainer(make_model(), epochs=1, batch_size=4, progress=False, out_dir=tmp_path).fit(
        Smoothing(8), resume=True
    )
    assert len(history) == 1


def test_resume_with_other_settings_is_refused(tmp_path):
    train = Smoothing(8)
    options = {"batch_size": 4, "progress": False, "out_dir": tmp_path}
    Trainer(make_model(), epochs=2, **options).fit(train)
    with pytest.raises(ValueError, match=r"different settings: epochs=2 \(now 5\)"):
        Trainer(make_model(), epochs=5, **options).fit(train, resume=True)
    with pytest.raises(ValueError, match=r"lr=0.001 \(now 0.1\)"):
        Trainer(make_model(), epochs=2, lr=0.1, **options).fit(train, resume=True)


def test_a_constant_schedule_can_be_extended(tmp_path):
    train = Smoothing(8)
    options = {"batch_size": 4, "progress": False, "out_dir": tmp_path, "schedule": "constant"}
    Trainer(make_model(), epochs=1, **options).fit(train)
    history = Trainer(make_model(), epochs=3, **options).fit(train, resume=True)
    assert [record["epoch"] for record in history.records] == [1, 2, 3]
