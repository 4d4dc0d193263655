"""Every bad input to ``physnet`` is one line on stderr, exit status 2, and nothing written."""

from __future__ import annotations

import json
import typing

import numpy as np
import pytest
import scipy.io
import scipy.sparse as sp

from physnet.cli import main
from physnet.operators import AIR, GridPoisson


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code, err, *fragments):
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in err, err


def _no_cuda() -> bool:
    try:
        import torch
    except ImportError:
        return True
    return not torch.cuda.is_available()


needs_no_cuda = pytest.mark.skipif(not _no_cuda(), reason="this machine has a CUDA device")


# --- devices ----------------------------------------------------------------------------


@needs_no_cuda
@pytest.mark.parametrize(
    "argv",
    [
        ["solve", "--scene", "sphere", "--size", "8"],
        ["evaluate", "model.safetensors", "data.h5"],
        ["reconstruct", "measurements.h5", "--out", "volumes.h5"],
    ],
    ids=["solve", "evaluate", "reconstruct"],
)
def test_cuda_without_cuda_is_one_line(capsys, tmp_path, monkeypatch, argv):
    pytest.importorskip("torch")
    monkeypatch.chdir(tmp_path)
    code, _, err = run(capsys, *argv, "--device", "cuda")
    assert_one_line_error(code, err, "--device cuda", "no CUDA support", "'cpu'")
    assert list(tmp_path.iterdir()) == []


@needs_no_cuda
def test_train_on_cuda_without_cuda_is_one_line(capsys, tmp_path):
    pytest.importorskip("torch")
    config = tmp_path / "train.toml"
    config.write_text('[model]\nname = "conv-net"\n\n[data]\ntrain = "data.h5"\n')
    code, _, err = run(capsys, "train", config, "--device", "cuda", "--out", tmp_path / "run")
    assert_one_line_error(code, err, "--device cuda", "no CUDA support")
    code, _, err = run(capsys, "train", config, "--set", "training.device=cuda:1")
    assert_one_line_error(code, err, "training.device", "cuda:1")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("command", ["solve", "evaluate"])
def test_unknown_device_is_one_line(capsys, command):
    pytest.importorskip("torch")
    argv = ["--scene", "sphere", "--size", "8"] if command == "solve" else ["m.safetensors", "d"]
    code, _, err = run(capsys, command, *argv, "--device", "tpu")
    assert_one_line_error(code, err, "--device tpu", "expected 'cpu', 'cuda' or 'cuda:N'")


# --- outputs ----------------------------------------------------------------------------


@pytest.mark.parametrize("option", ["--plot", "--out"])
def test_output_in_a_missing_folder_is_refused_before_solving(capsys, tmp_path, option):
    target = tmp_path / "nonexistent" / "dir" / "c.png"
    code, _, err = run(capsys, "solve", "--scene", "sphere", "--size", "8", option, target)
    assert_one_line_error(code, err, f"{option} {target}", "does not exist")
    assert ".tmp" not in err
    assert list(tmp_path.iterdir()) == []


def test_output_that_is_a_folder_is_refused(capsys, tmp_path):
    code, _, err = run(capsys, "solve", "--scene", "sphere", "--size", "8", "--out", tmp_path)
    assert_one_line_error(code, err, "is a folder")


# --- system files -----------------------------------------------------------------------


def test_non_symmetric_matrix_market_is_refused(capsys, tmp_path):
    A = sp.diags([-1.0, 2.5, -0.5], [-1, 0, 1], shape=(12, 12), format="csr")
    scipy.io.mmwrite(tmp_path / "A.mtx", A)
    np.save(tmp_path / "b.npy", np.ones(12))
    code, _, err = run(capsys, "solve", tmp_path / "A.mtx", "--rhs", tmp_path / "b.npy")
    assert_one_line_error(code, err, "A.mtx", "not symmetric", "symmetric positive definite")


def test_dense_npz_is_accepted(capsys, tmp_path):
    n = 15
    A = np.diag(np.arange(1.0, n + 1)) + 0.1 * (np.eye(n, k=1) + np.eye(n, k=-1))
    b = np.ones(n)
    np.savez(tmp_path / "dense.npz", A=A, b=b)
    out_path = tmp_path / "x.npy"
    code, out, err = run(
        capsys, "solve", tmp_path / "dense.npz", "--rtol", "1e-12", "--json", "--out", out_path
    )
    assert code == 0, err
    assert json.loads(out)["converged"]
    np.testing.assert_allclose(np.load(out_path), np.linalg.solve(A, b), rtol=1e-10)


def test_npz_of_an_unknown_layout_says_what_is_expected(capsys, tmp_path):
    np.savez(tmp_path / "other.npz", M=np.eye(3))
    code, _, err = run(capsys, "solve", tmp_path / "other.npz")
    assert_one_line_error(code, err, "other.npz", "['M']", "format, shape, data", "named 'A'")


def test_dense_npz_that_is_not_square_is_refused(capsys, tmp_path):
    np.savez(tmp_path / "rect.npz", A=np.ones((3, 4)), b=np.ones(3))
    code, _, err = run(capsys, "solve", tmp_path / "rect.npz")
    assert_one_line_error(code, err, "rect.npz", "field 'A'", "(3, 4)")


# --- singular grids ---------------------------------------------------------------------


def test_all_fluid_grid_with_incompatible_rhs_is_one_line(capsys, tmp_path):
    np.save(tmp_path / "flags.npy", np.zeros((10, 10), dtype=np.int8))
    np.save(tmp_path / "rhs.npy", np.ones((10, 10)))
    out_path = tmp_path / "x.npy"
    code, _, err = run(
        capsys,
        "solve",
        "--flags",
        tmp_path / "flags.npy",
        "--rhs",
        tmp_path / "rhs.npy",
        "--out",
        out_path,
    )
    assert_one_line_error(code, err, "incompatible", "touch no air", "air cell (flag 2)")
    assert not out_path.exists()


def test_all_fluid_grid_with_compatible_rhs_is_solved_up_to_a_constant(capsys, tmp_path):
    rhs = np.random.default_rng(0).standard_normal((10, 10))
    rhs -= rhs.mean()
    np.save(tmp_path / "flags.npy", np.zeros((10, 10), dtype=np.int8))
    np.save(tmp_path / "rhs.npy", rhs)
    code, out, err = run(
        capsys,
        "solve",
        "--flags",
        tmp_path / "flags.npy",
        "--rhs",
        tmp_path / "rhs.npy",
        "--rtol",
        "1e-10",
        "--json",
        "--out",
        tmp_path / "x.npy",
    )
    assert code == 0, err
    record = json.loads(out)
    assert record["converged"] and record["floating_regions"] == 1
    assert "zero mean" in record["singular"]
    assert abs(np.load(tmp_path / "x.npy").mean()) < 1e-12


# --- coefficients -----------------------------------------------------------------------


@pytest.fixture
def grid(tmp_path):
    flags = np.zeros((9, 8), dtype=np.int8)
    flags[0, :] = AIR
    np.save(tmp_path / "flags.npy", flags)
    rhs = np.random.default_rng(1).standard_normal(flags.shape)
    np.save(tmp_path / "rhs.npy", rhs)
    return flags, rhs


def _solve_grid(capsys, tmp_path, coefficients_path):
    return run(
        capsys,
        "solve",
        "--flags",
        tmp_path / "flags.npy",
        "--rhs",
        tmp_path / "rhs.npy",
        "--coefficients",
        coefficients_path,
        "--rtol",
        "1e-10",
        "--json",
        "--out",
        tmp_path / "x.npy",
    )


def test_cell_coefficients(capsys, tmp_path, grid):
    flags, rhs = grid
    cells = np.exp(np.random.default_rng(2).uniform(-1, 1, flags.shape))
    np.save(tmp_path / "c.npy", cells)
    code, out, err = _solve_grid(capsys, tmp_path, tmp_path / "c.npy")
    assert code == 0, err
    A = GridPoisson(flags, coefficients=cells)
    x = A.gather(np.load(tmp_path / "x.npy"))
    b = A.gather(rhs)
    assert np.linalg.norm(b - A.to_csr() @ x) <= 1e-10 * np.linalg.norm(b)
    assert "setup_time" in json.loads(out) and "solve_time" in json.loads(out)


def test_face_coefficients(capsys, tmp_path, grid):
    flags, rhs = grid
    faces = [np.full((8, 8), 2.0), np.full((9, 7), 0.5)]
    np.savez(tmp_path / "faces.npz", *faces)
    code, _, err = _solve_grid(capsys, tmp_path, tmp_path / "faces.npz")
    assert code == 0, err
    A = GridPoisson(flags, coefficients=faces)
    x = A.gather(np.load(tmp_path / "x.npy"))
    b = A.gather(rhs)
    assert np.linalg.norm(b - A.to_csr() @ x) <= 1e-10 * np.linalg.norm(b)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (-np.ones((9, 8)), "expected positive values"),
        (np.full((9, 8), np.nan), "NaN"),
        (np.ones((8, 8)), "(8, 8)"),
    ],
    ids=["negative", "nan", "wrong-shape"],
)
def test_bad_coefficients_are_one_line(capsys, tmp_path, grid, values, message):
    np.save(tmp_path / "c.npy", values)
    code, _, err = _solve_grid(capsys, tmp_path, tmp_path / "c.npy")
    assert_one_line_error(code, err, "c.npy", message)
    assert not (tmp_path / "x.npy").exists()


def test_face_coefficients_with_wrong_names_are_one_line(capsys, tmp_path, grid):
    np.savez(tmp_path / "faces.npz", x=np.ones((8, 8)), y=np.ones((9, 7)))
    code, _, err = _solve_grid(capsys, tmp_path, tmp_path / "faces.npz")
    assert_one_line_error(code, err, "faces.npz", "arr_0, arr_1")


def test_coefficients_need_flags(capsys, tmp_path):
    np.save(tmp_path / "c.npy", np.ones((8, 8)))
    code, _, err = run(
        capsys, "solve", "--scene", "sphere", "--size", "8", "--coefficients", tmp_path / "c.npy"
    )
    assert_one_line_error(code, err, "--coefficients", "--flags")


# --- checkpoints ------------------------------------------------------------------------


def test_damaged_checkpoint_given_by_path_is_refused(capsys, tmp_path):
    torch = pytest.importorskip("torch")
    from physnet.nn import create, save

    torch.manual_seed(0)
    path = tmp_path / "dcdm.safetensors"
    save(create("dcdm-multigrid", ndim=2), path)
    data = bytearray(path.read_bytes())
    data[-5] ^= 0x01
    path.write_bytes(bytes(data))
    code, _, err = run(
        capsys, "solve", "--scene", "sphere", "--size", "8", "--ndim", "2", "--method", "dcdm",
        "--model", path,
    )  # fmt: skip
    assert_one_line_error(code, err, str(path), "corrupt checkpoint")


# --- training ---------------------------------------------------------------------------


def test_existing_run_names_the_resume_flag(capsys, tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("h5py")
    store = tmp_path / "fields.h5"
    code, _, err = run(
        capsys, "generate", "gaussian-fields", "--out", store, "--samples", 4, "--set", "size=8",
        "--no-progress",
    )  # fmt: skip
    assert code == 0, err
    config = tmp_path / "train.toml"
    config.write_text(
        f'[model]\nname = "conv-net"\n\n[data]\ntrain = "{store}"\ntrain_split = "train"\n'
        "\n[training]\nepochs = 1\nprogress = false\n"
    )
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "last.state.safetensors").write_bytes(b"")
    code, _, err = run(capsys, "train", config, "--out", run_dir)
    assert_one_line_error(code, err, "--resume")


# --- progress ---------------------------------------------------------------------------


class _Recorder:
    """Stands in for the tqdm line; every instance is kept in ``instances``."""

    instances: typing.ClassVar[list] = []

    def __init__(self, method, maxiter, rhs_norm):
        self.calls = []
        self.closed = False
        _Recorder.instances.append(self)

    def __call__(self, iterations, residual_norm):
        self.calls.append(iterations)

    def close(self):
        self.closed = True


@pytest.mark.parametrize(
    ("tty", "flags", "shown"),
    [(True, [], True), (True, ["--no-progress"], False), (False, [], False)],
    ids=["terminal", "no-progress", "pipe"],
)
def test_progress_line_only_on_a_terminal(capsys, monkeypatch, tty, flags, shown):
    import physnet.cli

    _Recorder.instances = []
    monkeypatch.setattr(physnet.cli, "_Progress", _Recorder)
    monkeypatch.setattr("sys.stderr.isatty", lambda: tty)
    code, _, err = run(capsys, "solve", "--scene", "sphere", "--size", "8", *flags)
    assert code == 0, err
    assert bool(_Recorder.instances) is shown
    if shown:
        (recorder,) = _Recorder.instances
        assert recorder.calls[-1] >= 1 and recorder.closed
