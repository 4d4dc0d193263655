"""``physnet reconstruct``: output file, --json, one-line errors with exit status 2."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
h5py = pytest.importorskip("h5py")

import physnet.nn  # noqa: E402
from physnet.cli import main  # noqa: E402
from physnet.datasets.generate import generate  # noqa: E402


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli-radar")
    store = generate(
        "radar-mimo",
        folder / "radar.h5",
        samples=3,
        progress=False,
        overrides={"n_frequencies": 2, "grid_shape": [8, 8, 8]},
    )
    model = physnet.nn.create("deep2s", backbone_config={"channels": [4], "head_channels": 4})
    checkpoint = folder / "model.safetensors"
    physnet.nn.save(model, checkpoint)
    return store, checkpoint, folder


def test_reconstruct_json(files, capsys):
    store, checkpoint, folder = files
    out = folder / "volumes.h5"
    args = ["reconstruct", str(store), "--model", str(checkpoint), "--out", str(out)]
    assert main([*args, "--json", "--batch-size", "2"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["volumes"] == 3 and report["grid_shape"] == [8, 8, 8]
    with h5py.File(out, "r") as f:
        volumes = f["reconstruction"][...]
    assert volumes.shape == (3, 8, 8, 8) and np.all((volumes >= 0) & (volumes <= 1))
    assert main([*args, "--no-progress"]) == 0
    assert "wrote 3 volumes" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--field", "nothing"], "no field 'nothing'"),
        (["--batch-size", "0"], "--batch-size 0"),
        (["--model", "no-such-model"], "unknown pretrained model"),
    ],
)
def test_reconstruct_errors(files, capsys, extra, message):
    store, checkpoint, folder = files
    args = ["reconstruct", str(store), "--model", str(checkpoint), "--out", str(folder / "x.h5")]
    assert main([*args, *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_missing_input(files, capsys, tmp_path):
    _, checkpoint, _ = files
    code = main(
        ["reconstruct", str(tmp_path / "none.h5"), "--model", str(checkpoint), "--out", "o.h5"]
    )
    assert code == 2 and "no such file" in capsys.readouterr().err


def test_reconstruct_prints_the_model_and_its_conditions(files, capsys, tmp_path):
    store, checkpoint, _ = files
    assert (
        main(
            ["reconstruct", str(store), "--model", str(checkpoint), "--out", str(tmp_path / "a.h5")]
        )
        == 0
    )
    assert f"model {checkpoint}, N_f = 2 (not conditioned)" in capsys.readouterr().out
    model = physnet.nn.create(
        "deep2s",
        conditions=["n_frequencies", "snr_db"],
        backbone_config={"channels": [4], "head_channels": 4},
    )
    conditioned = tmp_path / "conditioned.safetensors"
    physnet.nn.save(model, conditioned)
    args = ["reconstruct", str(store), "--model", str(conditioned), "--out", str(tmp_path / "b.h5")]
    assert main(args) == 2
    assert "conditions on snr_db; pass snr_db=" in capsys.readouterr().err
    assert main([*args, "--snr-db", "20", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["conditions"] == {"n_frequencies": 2.0, "snr_db": 20.0}
    assert report["model"] == str(conditioned) and report["n_frequencies"] == 2
    assert main([*args, "--snr-db", "20", "--no-progress"]) == 0
    assert "N_f = 2, conditioned on n_frequencies = 2, snr_db = 20" in capsys.readouterr().out


def test_reconstruct_by_rank_then_merge(files, capsys, tmp_path):
    store, checkpoint, _ = files
    common = ["--model", str(checkpoint), "--batch-size", "2", "--no-progress"]
    single, sharded = tmp_path / "single.h5", tmp_path / "sharded.h5"
    assert main(["reconstruct", str(store), "--out", str(single), *common]) == 0
    for rank in ("0", "1"):
        argv = ["reconstruct", str(store), "--out", str(sharded), "--rank", rank]
        assert main([*argv, "--world-size", "2", *common]) == 0
        assert f"(shard {rank} of 2)" in capsys.readouterr().out
    assert (
        main(["reconstruct", "--merge", "--out", str(sharded), "--world-size", "2", "--json"]) == 0
    )
    assert json.loads(capsys.readouterr().out)["volumes"] == 3
    with h5py.File(single, "r") as a, h5py.File(sharded, "r") as b:
        assert a["reconstruction"][...].tobytes() == b["reconstruction"][...].tobytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sharded.h5", "single.h5"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--merge"], "--merge needs --world-size"),
        (["STORE", "--merge", "--world-size", "2"], "--merge takes no measurements file"),
        (["--world-size", "2"], "the measurements file is missing"),
        (["STORE", "--rank", "2", "--world-size", "2"], "rank: 2, expected an integer in [0, 1]"),
        (["STORE", "--rank", "0", "--world-size", "4"], "world_size=4 exceeds the 3 volumes"),
        (["--merge", "--world-size", "2"], "missing shard(s)"),
    ],
)
def test_sharding_errors(files, capsys, tmp_path, argv, message):
    store, checkpoint, _ = files
    argv = [str(store) if word == "STORE" else word for word in argv]
    out = str(tmp_path / "v.h5")
    assert main(["reconstruct", *argv, "--out", out, "--model", str(checkpoint)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
