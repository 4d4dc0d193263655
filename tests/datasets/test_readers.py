"""FNO .mat (MATLAB v5 and v7.3) and PDEBench Darcy readers: exact samples, workers, bad files.

The ``write_*`` helpers build tiny files in exactly the layouts the real files have; the
dispatch tests in ``test_open.py`` use them too.
"""

from __future__ import annotations

import pickle

import h5py
import numpy as np
import pytest
import scipy.io

from physnet._io import FileFormatError
from physnet.datasets.readers import FNODarcyDataset, PDEBenchDarcyDataset

N, S = 5, 9  # samples, grid points per side: stride 2 gives 5 per side, stride 4 gives 3


def write_mat_v5(path, **arrays):
    """A MATLAB v5 file, as ``scipy.io.savemat`` (and MATLAB's ``save -v7``) write it."""
    scipy.io.savemat(path, arrays)


def write_mat_v73(path, **arrays):
    """A MATLAB v7.3 file: HDF5 behind a 512-byte MATLAB header, arrays column-major.

    MATLAB writes an ``(N, s, s)`` array so that h5py reads it as ``(s, s, N)``, with a
    ``MATLAB_class`` attribute; the header is the file's HDF5 user block.
    """
    with h5py.File(path, "w", userblock_size=512) as f:
        for name, array in arrays.items():
            dataset = f.create_dataset(name, data=np.asarray(array).T, chunks=True)
            dataset.attrs["MATLAB_class"] = np.bytes_("double")
    text = (
        b"MATLAB 7.3 MAT-file, Platform: GLNXA64, "
        b"Created on: Mon Jan  1 00:00:00 2018 HDF5 schema 1.00 ."
    )
    header = text.ljust(116, b" ") + b" " * 8 + b"\x00\x02" + b"IM"
    with open(path, "r+b") as f:
        f.write(header.ljust(512, b"\x00"))


def write_pdebench(path, nu, tensor):
    """A PDEBench 2D Darcy file: ``nu`` (N, X, Y), ``tensor`` (N, 1, X, Y), coordinates."""
    with h5py.File(path, "w") as f:
        f.create_dataset("nu", data=nu)
        f.create_dataset("tensor", data=tensor)
        f.create_dataset("x-coordinate", data=np.linspace(0.0, 1.0, nu.shape[1]))
        f.create_dataset("y-coordinate", data=np.linspace(0.0, 1.0, nu.shape[2]))


@pytest.fixture
def darcy():
    """Distinct values everywhere and an asymmetric grid, so transposes and strides show."""
    rng = np.random.default_rng(3)
    coeff = np.where(rng.standard_normal((N, S, S)) >= 0, 12.0, 3.0)
    coeff += np.arange(S)[None, :, None] * 0.001 + np.arange(S)[None, None, :] * 0.1
    sol = rng.random((N, S, S))
    return coeff, sol


@pytest.fixture
def mat_v5(tmp_path, darcy):
    path = tmp_path / "darcy_v5.mat"
    write_mat_v5(path, coeff=darcy[0], sol=darcy[1], Kcoeff=darcy[0][:, :3, :3])
    return path


@pytest.fixture
def mat_v73(tmp_path, darcy):
    path = tmp_path / "darcy_v73.mat"
    write_mat_v73(path, coeff=darcy[0], sol=darcy[1], Kcoeff=darcy[0][:, :3, :3])
    return path


@pytest.fixture
def pdebench(tmp_path, darcy):
    path = tmp_path / "2D_DarcyFlow_beta1.0_Train.hdf5"
    write_pdebench(path, darcy[0].astype(np.float32), darcy[1][:, None].astype(np.float32))
    return path


def _equal_samples(a, b):
    assert len(a) == len(b)
    for i in range(len(a)):
        sa, sb = a[i], b[i]
        assert sa.keys() == sb.keys()
        for name in sa:
            np.testing.assert_array_equal(sa[name], sb[name])


# --- the layouts, read exactly ------------------------------------------------------------


def test_v73_file_is_what_matlab_writes(mat_v73):
    with open(mat_v73, "rb") as f:
        assert f.read(19) == b"MATLAB 7.3 MAT-file"
    with h5py.File(mat_v73, "r") as f:
        assert f["coeff"].shape == (S, S, N)
        assert f.userblock_size == 512
    with pytest.raises(NotImplementedError):  # what SciPy says about v7.3 files
        scipy.io.loadmat(mat_v73)


@pytest.mark.parametrize("version", ["v5", "v73"])
def test_fno_reader_gives_the_matlab_arrays(request, darcy, version):
    dataset = FNODarcyDataset(request.getfixturevalue(f"mat_{version}"))
    coeff, sol = darcy
    assert len(dataset) == N
    assert dataset.fields == ("coefficient", "solution")
    assert (dataset.inputs, dataset.targets) == (("coefficient",), ("solution",))
    for i in range(N):
        sample = dataset[i]
        assert sample["coefficient"].dtype == np.float32
        assert sample["coefficient"].flags.c_contiguous
        np.testing.assert_array_equal(sample["coefficient"], coeff[i].astype(np.float32))
        np.testing.assert_array_equal(sample["solution"], sol[i].astype(np.float32))
    expected_format = {"v5": "fno-mat-v5", "v73": "fno-mat-v7.3"}[version]
    assert dataset.attrs == {
        "source": str(request.getfixturevalue(f"mat_{version}")),
        "format": expected_format,
        "stride": 1,
        "original_resolution": (S, S),
        "resolution": (S, S),
        "n_samples_in_file": N,
    }


@pytest.mark.parametrize("stride", [1, 2, 3, 4])
def test_v5_and_v73_give_identical_samples(mat_v5, mat_v73, stride):
    _equal_samples(FNODarcyDataset(mat_v5, stride=stride), FNODarcyDataset(mat_v73, stride=stride))


@pytest.mark.parametrize("version", ["v5", "v73"])
def test_fno_stride_takes_every_rth_point(request, darcy, version):
    dataset = FNODarcyDataset(request.getfixturevalue(f"mat_{version}"), stride=4)
    coeff = darcy[0]
    sample = dataset[2]["coefficient"]
    assert sample.shape == (3, 3)
    assert dataset.attrs["resolution"] == (3, 3)
    expected = [[coeff[2, i, j] for j in (0, 4, 8)] for i in (0, 4, 8)]
    np.testing.assert_array_equal(sample, np.float32(expected))


def test_fno_stride_follows_the_fno_resolutions(tmp_path):
    path = tmp_path / "r421.mat"
    write_mat_v5(path, coeff=np.zeros((1, 421, 421)), sol=np.zeros((1, 421, 421)))
    for stride, side in [(2, 211), (3, 141), (4, 106), (5, 85)]:
        assert FNODarcyDataset(path, stride=stride)[0]["solution"].shape == (side, side)


def test_pdebench_reader(pdebench, darcy):
    dataset = PDEBenchDarcyDataset(pdebench, stride=2)
    coeff, sol = darcy
    assert len(dataset) == N
    assert (dataset.inputs, dataset.targets) == (("coefficient",), ("solution",))
    for i in range(N):
        np.testing.assert_array_equal(dataset[i]["coefficient"], np.float32(coeff[i, ::2, ::2]))
        np.testing.assert_array_equal(dataset[i]["solution"], np.float32(sol[i, ::2, ::2]))
    np.testing.assert_array_equal(dataset.attrs["x_coordinate"], np.linspace(0, 1, S)[::2])
    assert dataset.attrs["format"] == "pdebench-darcy"
    assert dataset.attrs["resolution"] == (5, 5)


def test_pdebench_equals_fno_on_the_same_data(pdebench, mat_v73):
    _equal_samples(PDEBenchDarcyDataset(pdebench, stride=3), FNODarcyDataset(mat_v73, stride=3))


@pytest.mark.parametrize(
    "reader, fixture",
    [(FNODarcyDataset, "mat_v73"), (FNODarcyDataset, "mat_v5"), (PDEBenchDarcyDataset, "pdebench")],
)
def test_n_samples_and_fields(request, reader, fixture):
    path = request.getfixturevalue(fixture)
    full = reader(path)
    head = reader(path, n_samples=2, fields=["solution"])
    assert len(head) == 2
    assert head.fields == ("solution",)
    assert (head.inputs, head.targets) == ((), ("solution",))
    assert list(head[1]) == ["solution"]
    np.testing.assert_array_equal(head[1]["solution"], full[1]["solution"])
    assert head.attrs["n_samples_in_file"] == N
    with pytest.raises(IndexError):
        head[2]


@pytest.mark.parametrize(
    "kwargs, error, words",
    [
        ({"stride": 0}, ValueError, "stride=0"),
        ({"stride": 1.5}, TypeError, "stride"),
        ({"n_samples": N + 1}, ValueError, f"n_samples={N + 1}"),
        ({"fields": ["pressure"]}, ValueError, "pressure"),
    ],
)
def test_bad_arguments(mat_v73, kwargs, error, words):
    with pytest.raises(error, match=words):
        FNODarcyDataset(mat_v73, **kwargs)


# --- workers --------------------------------------------------------------------------------


@pytest.mark.parametrize("fixture", ["mat_v73", "pdebench"])
def test_pickled_dataset_reopens_its_file(request, fixture):
    reader = PDEBenchDarcyDataset if fixture == "pdebench" else FNODarcyDataset
    dataset = reader(request.getfixturevalue(fixture), stride=2)
    dataset[0]  # opens the file in this process
    copy = pickle.loads(pickle.dumps(dataset))
    _equal_samples(dataset, copy)
    dataset.close()
    _equal_samples(dataset, copy)  # reopened on demand


# One spawn run covers the pickling path (each costs seconds of worker start-up).
@pytest.mark.parametrize(
    "fixture, context",
    [("mat_v73", "fork"), ("mat_v5", "fork"), ("pdebench", "fork"), ("pdebench", "spawn")],
)
def test_dataloader_workers_give_the_same_batches(request, fixture, context):
    torch = pytest.importorskip("torch")
    reader = PDEBenchDarcyDataset if fixture == "pdebench" else FNODarcyDataset
    dataset = reader(request.getfixturevalue(fixture), stride=2)
    dataset[0]  # a handle open before the fork must not be used by the workers

    def batches(workers):
        loader = torch.utils.data.DataLoader(
            dataset,
            batch_size=2,
            num_workers=workers,
            multiprocessing_context=context if workers else None,
        )
        return list(loader)

    serial, parallel = batches(0), batches(2)
    assert len(serial) == len(parallel) == 3
    for a, b in zip(serial, parallel, strict=True):
        assert a["coefficient"].shape == b["coefficient"].shape
        for name in dataset.fields:
            assert torch.equal(a[name], b[name])


# --- bad files ------------------------------------------------------------------------------


def _raises_naming(path, reader, *words):
    with pytest.raises(FileFormatError) as info:
        reader(path)
    message = str(info.value)
    assert str(path) in message and "\n" not in message
    for word in words:
        assert word in message
    return message


@pytest.mark.parametrize("writer", [write_mat_v5, write_mat_v73])
def test_fno_missing_key(tmp_path, darcy, writer):
    path = tmp_path / "no_sol.mat"
    writer(path, coeff=darcy[0], Kcoeff=darcy[0])
    _raises_naming(path, FNODarcyDataset, "'sol'", "missing", "Kcoeff")


@pytest.mark.parametrize("writer", [write_mat_v5, write_mat_v73])
def test_fno_wrong_shape(tmp_path, darcy, writer):
    path = tmp_path / "flat.mat"
    writer(path, coeff=darcy[0], sol=darcy[1].reshape(N, S * S))
    _raises_naming(path, FNODarcyDataset, "'sol'", "(N, s, s)")


@pytest.mark.parametrize("writer", [write_mat_v5, write_mat_v73])
def test_fno_sample_counts_differ(tmp_path, darcy, writer):
    path = tmp_path / "counts.mat"
    writer(path, coeff=darcy[0], sol=darcy[1][:3])
    _raises_naming(path, FNODarcyDataset, "'coeff'", "'sol'", f"{N} samples", "3")


@pytest.mark.parametrize("writer", [write_mat_v5, write_mat_v73])
def test_fno_grids_differ(tmp_path, darcy, writer):
    path = tmp_path / "grids.mat"
    writer(path, coeff=darcy[0], sol=darcy[1][:, :4, :4])
    _raises_naming(path, FNODarcyDataset, "'sol'", "(9, 9)")


def test_fno_non_numeric(tmp_path, darcy):
    path = tmp_path / "cells.mat"
    write_mat_v5(path, coeff=darcy[0], sol=np.array(["a", "b"], dtype=object).reshape(1, 2, 1))
    _raises_naming(path, FNODarcyDataset, "'sol'")


def test_pdebench_missing_key(tmp_path, darcy):
    path = tmp_path / "no_tensor.hdf5"
    with h5py.File(path, "w") as f:
        f.create_dataset("nu", data=darcy[0])
    _raises_naming(path, PDEBenchDarcyDataset, "'tensor'", "missing", "nu")


def test_pdebench_wrong_shape(tmp_path, darcy):
    path = tmp_path / "no_time_axis.hdf5"
    write_pdebench(path, darcy[0], darcy[1])  # tensor without its singleton axis
    _raises_naming(path, PDEBenchDarcyDataset, "'tensor'", "(N, 1, X, Y)")
    write_pdebench(path, darcy[0], np.stack([darcy[1], darcy[1]], axis=1))
    _raises_naming(path, PDEBenchDarcyDataset, "'tensor'", "(N, 1, X, Y)")


@pytest.mark.parametrize("fixture", ["mat_v73", "pdebench"])
def test_truncated_hdf5(request, tmp_path, fixture):
    data = request.getfixturevalue(fixture).read_bytes()
    path = tmp_path / f"truncated_{fixture}"
    path.write_bytes(data[: len(data) // 2])
    reader = PDEBenchDarcyDataset if fixture == "pdebench" else FNODarcyDataset
    _raises_naming(path, reader, "HDF5")


@pytest.mark.parametrize("reader", [FNODarcyDataset, PDEBenchDarcyDataset])
def test_garbage_bytes(tmp_path, reader):
    path = tmp_path / "garbage.mat"
    path.write_bytes(np.random.default_rng(0).bytes(4000))
    _raises_naming(path, reader)


def test_truncated_v5(tmp_path, mat_v5):
    data = mat_v5.read_bytes()
    path = tmp_path / "truncated.mat"
    path.write_bytes(data[: len(data) // 2])
    _raises_naming(path, FNODarcyDataset, "MATLAB")


@pytest.mark.parametrize("reader", [FNODarcyDataset, PDEBenchDarcyDataset])
def test_missing_file(tmp_path, reader):
    _raises_naming(tmp_path / "absent.mat", reader, "no such file")
