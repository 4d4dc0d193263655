"""``physnet generate``, ``physnet train`` and ``physnet evaluate`` end to end, and their errors."""

import json

import pytest

from physnet.cli import main

pytest.importorskip("torch")
pytest.importorskip("h5py")


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def store(tmp_path, capsys):
    path = tmp_path / "data" / "fields.h5"
    code, out, _ = run(
        capsys,
        "generate",
        "gaussian-fields",
        "--out",
        path,
        "--samples",
        20,
        "--set",
        "size=16",
        "--workers",
        1,
        "--json",
    )
    assert code == 0
    assert json.loads(out)["path"] == str(path)
    return path


def test_generate_train_evaluate(tmp_path, capsys, store):
    from physnet.datasets import open as open_dataset
    from physnet.training import evaluate

    config = tmp_path / "train.toml"
    config.write_text(
        '[model]\nname = "conv-net"\nhidden_channels = 8\nn_layers = 2\n\n'
        f'[data]\ntrain = "{store}"\ntrain_split = "train"\nval_split = "val"\n\n'
        "[training]\nepochs = 2\nbatch_size = 4\nprogress = false\n"
    )
    code, out, _ = run(capsys, "train", config, "--out", tmp_path / "run", "--json")
    assert code == 0
    summary = json.loads(out)
    assert summary["epochs"] == 2 and summary["stop_reason"] == "completed"
    checkpoint = tmp_path / "run" / "best.safetensors"
    assert checkpoint.exists()

    code, out, _ = run(capsys, "evaluate", checkpoint, store, "--split", "test", "--json")
    assert code == 0
    report = json.loads(out)
    expected = evaluate(checkpoint, open_dataset(store, split="test"))
    assert report["n_samples"] == expected["n_samples"] == 2
    assert report["relative_l2"] == pytest.approx(expected["relative_l2"], rel=1e-6)
    # --symmetrize averages the loaded model over the square's symmetries.
    code, out, _ = run(
        capsys, "evaluate", checkpoint, store, "--split", "test", "--symmetrize", "d4", "--json"
    )
    assert code == 0
    from physnet.nn import SymmetryAverage, load

    averaged = evaluate(SymmetryAverage(load(checkpoint)), open_dataset(store, split="test"))
    assert json.loads(out)["relative_l2"] == pytest.approx(averaged["relative_l2"], rel=1e-6)
    assert averaged["relative_l2"] != pytest.approx(expected["relative_l2"], rel=1e-6)
    code, _, err = run(capsys, "evaluate", checkpoint, store, "--symmetrize", "d5")
    assert code == 2 and "d5" in err and len(err.strip().splitlines()) == 1

    # The same command again refuses to overwrite the run, in one line.
    code, _, err = run(capsys, "train", config, "--out", tmp_path / "run")
    assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1
    # --resume of a finished run has nothing left to do; with other settings it is refused.
    code, out, err = run(capsys, "train", config, "--out", tmp_path / "run", "--resume", "--json")
    assert code == 0, err
    assert json.loads(out)["epochs"] == 2
    code, _, err = run(
        capsys, "train", config, "--out", tmp_path / "run", "--resume", "--set", "training.epochs=3"
    )
    assert code == 2 and "epochs=2 (now 3)" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["generate", "no-such-generator", "--out", "x.h5"], "no-such-generator"),
        (["generate", "gaussian-fields", "--out", "x.h5", "--set", "bogus=1"], "bogus"),
        (["generate", "gaussian-fields", "--out", "x.h5", "--merge"], "--world-size"),
        (["train", "missing.toml"], "missing.toml"),
        (["evaluate", "missing.safetensors", "data.h5"], "missing.safetensors"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, monkeypatch, argv, message):
    monkeypatch.chdir(tmp_path)
    code, _, err = run(capsys, *argv)
    assert code == 2
    assert message in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_config_type_error_names_the_key_path(tmp_path, capsys, store):
    config = tmp_path / "train.toml"
    config.write_text(
        f'[model]\nname = "conv-net"\n\n[data]\ntrain = "{store}"\n\n[training]\nepochs = "ten"\n'
    )
    code, _, err = run(capsys, "train", config, "--out", tmp_path / "run")
    assert code == 2
    assert "training.epochs" in err
