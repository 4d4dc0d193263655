"""Mixed-resolution training: grouped batches, the Trainer on two grids, ``[data] train`` lists."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from training_data import Killed, KilledAfter, Smoothing, make_model

from physnet.training import GroupedBatchSampler, MixedResolution, Trainer, train_from_config


def _batches(sampler, epoch):
    sampler.set_epoch(epoch)
    return list(sampler)


def test_grouped_batches_cover_each_group_once_and_never_mix():
    groups = [(0, 10), (10, 15), (15, 22)]
    sampler = GroupedBatchSampler(groups, batch_size=4, seed=7)
    batches = _batches(sampler, 0)
    assert sorted(i for batch in batches for i in batch) == list(range(22))
    for batch in batches:
        owners = {next(g for g, (a, b) in enumerate(groups) if a <= i < b) for i in batch}
        assert len(owners) == 1 and 1 <= len(batch) <= 4
    assert len(batches) == len(sampler) == 3 + 2 + 2
    assert _batches(sampler, 0) == batches  # the epoch and seed decide the order
    assert _batches(sampler, 1) != batches
    assert _batches(GroupedBatchSampler(groups, 4, seed=8), 0) != batches


def test_grouped_batches_split_over_ranks():
    groups = [(0, 9), (9, 14)]
    ranks = [GroupedBatchSampler(groups, 2, seed=1, rank=r, world_size=2) for r in range(2)]
    parts = [_batches(s, 3) for s in ranks]
    assert len(parts[0]) == len(parts[1])  # every rank runs as many steps
    seen = [i for part in parts for batch in part for i in batch]
    assert set(seen) == set(range(14))  # 8 batches for 2 ranks: nothing repeated here
    validation = [
        GroupedBatchSampler(groups, 4, shuffle=False, rank=r, world_size=2) for r in (0, 1)
    ]
    seen = sorted(i for s in validation for batch in s for i in batch)
    assert seen == list(range(14))  # validation: each sample exactly once over the ranks


def test_mixed_resolution_indexing_and_errors():
    coarse = Smoothing(5, grid=8)
    fine = Smoothing(3, grid=16, seed=1)
    data = MixedResolution([coarse, fine])
    assert len(data) == 8 and data.groups == [(0, 5), (5, 8)]
    np.testing.assert_array_equal(data[6]["a"], fine[1]["a"])
    np.testing.assert_array_equal(data[-1]["a"], fine[2]["a"])
    assert data.inputs == ("a",) and "2 datasets" in repr(data)
    with pytest.raises(IndexError, match="out of range"):
        data[8]
    with pytest.raises(ValueError, match="at least one"):
        MixedResolution([])
    with pytest.raises(ValueError, match="dataset 1 has no samples"):
        MixedResolution([coarse, Smoothing(0)])
    with pytest.raises(ValueError, match="batch_size"):
        GroupedBatchSampler([(0, 3)], 0)


def _fit(out_dir, model, loss="relative_l2", resume=False):
    train = MixedResolution([Smoothing(12, grid=16), Smoothing(6, grid=32, seed=2)])
    val = MixedResolution([Smoothing(4, grid=16, seed=3), Smoothing(3, grid=32, seed=4)])
    options = {"epochs": 3, "batch_size": 4, "lr": 1e-2, "progress": False, "loss": loss}
    trainer = Trainer(model, out_dir=out_dir, **options)
    return trainer, trainer.fit(train, val, resume=resume)


def test_trainer_on_two_grids_learns_and_resumes_bit_exactly(tmp_path):
    trainer, history = _fit(tmp_path / "full", make_model())
    assert history.records[0]["step"] == 3 + 2  # ceil(12/4) + ceil(6/4) batches
    assert history.records[-1]["val_loss"] < 0.8 * history.records[0]["val_loss"]
    # the validation loss is the mean over the 7 samples of both grids
    model = trainer.model.eval()
    errors = []
    with torch.no_grad():
        for dataset in (Smoothing(4, grid=16, seed=3), Smoothing(3, grid=32, seed=4)):
            for i in range(len(dataset)):
                x = torch.as_tensor(dataset[i]["a"])[None, None]
                y = torch.as_tensor(dataset[i]["u"])[None, None]
                errors.append((torch.linalg.norm(model(x) - y) / torch.linalg.norm(y)).item())
    assert history.records[-1]["val_loss"] == pytest.approx(np.mean(errors), rel=1e-5)

    with pytest.raises(Killed):  # killed in epoch 2, after one saved epoch
        _fit(tmp_path / "part", make_model(), loss=KilledAfter(8))
    resumed = make_model(seed=5)
    _, again = _fit(tmp_path / "part", resumed, resume=True)
    drop_time = [{k: v for k, v in r.items() if k != "time_s"} for r in again.records]
    assert drop_time == [{k: v for k, v in r.items() if k != "time_s"} for r in history.records]
    for p, q in zip(trainer.model.parameters(), resumed.parameters(), strict=True):
        assert torch.equal(p, q)


def test_config_with_a_list_of_training_files(tmp_path):
    from test_config import _store

    (tmp_path / "data").mkdir()
    for name, grid, seed in (("coarse", 16, 0), ("fine", 32, 1)):
        _store(
            tmp_path / "data" / f"{name}.h5",
            Smoothing(10, grid=grid, seed=seed),
            {"train": range(8), "val": range(8, 10)},
        )
    config = tmp_path / "train.toml"
    config.write_text(
        '[model]\nname = "conv-net"\nin_channels = 1\nout_channels = 1\nhidden_channels = 4\n'
        'n_layers = 1\nndim = 1\n[data]\ntrain = ["data/coarse.h5", "data/fine.h5"]\n'
        'train_split = "train"\nval_split = "val"\n[training]\nepochs = 1\nbatch_size = 4\n'
        "progress = false\n"
    )
    history = train_from_config(config, out=tmp_path / "out")
    assert history.records[0]["step"] == 4  # two batches from each file
    saved = json.loads((tmp_path / "out" / "config.json").read_text())
    assert saved["data"]["train"] == [str(tmp_path / "data" / n) for n in ("coarse.h5", "fine.h5")]
    config.write_text(config.read_text().replace('["data/coarse.h5", "data/fine.h5"]', "[]"))
    with pytest.raises(ValueError, match="empty list of files"):
        train_from_config(config, out=tmp_path / "out2")
