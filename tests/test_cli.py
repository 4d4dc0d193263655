"""The ``physnet`` command: inputs, outputs, and one-line errors with exit status 2."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from physnet.cli import main
from physnet.datasets import make_scene, save_system
from physnet.operators import GridPoisson


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_solve_scene_json(capsys):
    code, out, _ = run(
        capsys,
        "solve",
        "--scene",
        "sphere",
        "--size",
        "16",
        "--method",
        "cg",
        "--rtol",
        "1e-8",
        "--json",
    )
    assert code == 0
    record = json.loads(out)
    for key in ("converged", "iterations", "setup_time", "solve_time", "residual"):
        assert key in record
    assert record["converged"] is True
    # The reported residual is the true one and meets the stopping rule.
    scene = make_scene("sphere", 16)
    assert record["residual"] <= 1e-8 * np.linalg.norm(scene.rhs_vector())
    assert record["iterations"] > 5


def test_solve_several_methods_prints_a_table_and_plot(capsys, tmp_path):
    plot = tmp_path / "conv.png"
    code, out, _ = run(
        capsys,
        "solve",
        "--scene",
        "box",
        "--size",
        "16",
        "--method",
        "cg,jacobi,amg",
        "--plot",
        str(plot),
    )
    assert code == 0
    for method in ("cg", "jacobi", "amg"):
        assert f"\n{method} " in out
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_solve_flags_and_rhs_writes_full_grid_solution(capsys, tmp_path):
    flags = np.zeros((12, 10), dtype=np.int8)
    flags[:, -1] = 2
    flags[4:7, 3:6] = 1
    rhs = np.random.default_rng(1).standard_normal(flags.shape)
    np.save(tmp_path / "flags.npy", flags)
    np.save(tmp_path / "rhs.npy", rhs)
    out_path = tmp_path / "x.npy"
    code, _, _ = run(
        capsys,
        "solve",
        "--flags",
        str(tmp_path / "flags.npy"),
        "--rhs",
        str(tmp_path / "rhs.npy"),
        "--method",
        "amg",
        "--rtol",
        "1e-10",
        "--out",
        str(out_path),
    )
    assert code == 0
    x_grid = np.load(out_path)
    assert x_grid.shape == flags.shape
    assert np.all(x_grid[flags != 0] == 0)
    A = GridPoisson(flags)
    x = A.gather(x_grid)
    b = A.gather(rhs)
    assert np.linalg.norm(A.to_csr() @ x - b) <= 1e-10 * np.linalg.norm(b)


def test_solve_system_file(capsys, tmp_path):
    n = 30
    A = sp.diags([-np.ones(n - 1), 2.5 * np.ones(n), -np.ones(n - 1)], [-1, 0, 1], format="csr")
    b = np.arange(n, dtype=float)
    save_system(tmp_path / "system.npz", A, b)
    code, out, _ = run(
        capsys,
        "solve",
        str(tmp_path / "system.npz"),
        "--method",
        "ic",
        "--rtol",
        "1e-12",
        "--json",
        "--out",
        str(tmp_path / "x.npy"),
    )
    assert code == 0
    assert json.loads(out)["converged"]
    np.testing.assert_allclose(
        np.load(tmp_path / "x.npy"), sp.linalg.spsolve(A.tocsc(), b), rtol=1e-10
    )


def test_maxiter_reached_exits_1(capsys):
    code, out, _ = run(
        capsys, "solve", "--scene", "sphere", "--size", "16", "--maxiter", "3", "--json"
    )
    assert code == 1
    record = json.loads(out)
    assert record["converged"] is False and record["iterations"] == 3


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["solve", "missing.mtx"], "missing.mtx"),
        (["solve", "--flags", "missing.npy"], "missing.npy"),
        (["solve"], "exactly one input"),
        (["solve", "--scene", "sphere", "--size", "16", "--method", "nope"], "nope"),
        (["solve", "--scene", "sphere", "--size", "16", "--rtol", "-1"], "rtol"),
        (["bench", "no-such-benchmark"], "no-such-benchmark"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(capsys, argv, message):
    code, _, err = run(capsys, *argv)
    assert code == 2
    assert message in err
    assert len(err.strip().splitlines()) == 1
    assert "Traceback" not in err


def test_wrong_rhs_shape(capsys, tmp_path):
    np.save(tmp_path / "flags.npy", np.zeros((6, 6), dtype=np.int8))
    np.save(tmp_path / "rhs.npy", np.ones(7))
    code, _, err = run(
        capsys, "solve", "--flags", str(tmp_path / "flags.npy"), "--rhs", str(tmp_path / "rhs.npy")
    )
    assert code == 2
    assert "(7,)" in err and "(6, 6)" in err


def test_corrupt_file(capsys, tmp_path):
    path = tmp_path / "broken.npz"
    path.write_bytes(b"this is not a zip archive")
    code, _, err = run(capsys, "solve", str(path))
    assert code == 2
    assert "broken.npz" in err and "Traceback" not in err


def test_console_script_has_no_traceback(tmp_path):
    executable = Path(sys.executable).with_name("physnet")
    assert executable.exists(), "the physnet console script is installed beside the interpreter"
    proc = subprocess.run(
        [str(executable), "solve", str(tmp_path / "nothing.npz")], capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "nothing.npz" in proc.stderr


def test_solve_with_a_dcdm_checkpoint(capsys, tmp_path):
    torch = pytest.importorskip("torch")
    from physnet.nn import create, save

    torch.manual_seed(0)
    path = tmp_path / "dcdm.safetensors"
    save(create("dcdm-multigrid", ndim=2), path)
    code, out, _ = run(
        capsys,
        "solve",
        "--scene",
        "sphere",
        "--size",
        "32",
        "--ndim",
        "2",
        "--method",
        "cg,dcdm",
        "--model",
        str(path),
        "--rtol",
        "1e-8",
        "--json",
    )
    assert code == 0
    cg_record, dcdm_record = json.loads(out)
    assert dcdm_record["converged"] and dcdm_record["iterations"] < cg_record["iterations"]


def test_dcdm_without_weights_is_a_one_line_error(capsys, monkeypatch, tmp_path):
    import physnet.pretrained

    manifest = tmp_path / "manifest.json"
    manifest.write_text("[]")
    monkeypatch.setattr(physnet.pretrained, "_MANIFEST", manifest)
    code, _, err = run(
        capsys, "solve", "--scene", "sphere", "--size", "16", "--ndim", "2", "--method", "dcdm"
    )
    from physnet.solvers.dcdm import PRETRAINED_MODELS

    assert code == 2 and PRETRAINED_MODELS[2] in err and "Traceback" not in err
