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
