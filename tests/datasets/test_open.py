"""physnet.datasets.open: the format is recognised by content; split, stride and fields apply."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from test_readers import write_mat_v5, write_mat_v73, write_pdebench

from physnet._io import FileFormatError
from physnet.datasets._open import detect_format, open
from physnet.datasets.readers import FNODarcyDataset, PDEBenchDarcyDataset
from physnet.datasets.store import StoreDataset, StoreWriter

N, S = 6, 5


@pytest.fixture
def darcy():
    rng = np.random.default_rng(5)
    return rng.random((N, S, S)), rng.random((N, S, S))


@pytest.fixture
def files(tmp_path, darcy):
    """One file per format, with suffixes that do not give the format away."""
    coeff, sol = darcy
    paths = {
        "fno-mat-v5": tmp_path / "v5.bin",
        "fno-mat-v7.3": tmp_path / "v73.h5",
        "fno-hdf5": tmp_path / "plain.mat",
        "pdebench-darcy": tmp_path / "pdebench.mat",
    }
    write_mat_v5(paths["fno-mat-v5"], coeff=coeff, sol=sol)
    write_mat_v73(paths["fno-mat-v7.3"], coeff=coeff, sol=sol)
    with h5py.File(paths["fno-hdf5"], "w") as f:
        f["coeff"], f["sol"] = coeff, sol
    write_pdebench(paths["pdebench-darcy"], coeff, sol[:, None])
    return paths


@pytest.mark.parametrize(
    "file_format", ["fno-mat-v5", "fno-mat-v7.3", "fno-hdf5", "pdebench-darcy"]
)
def test_open_recognises_each_reader_format(files, darcy, file_format):
    path = files[file_format]
    assert detect_format(path) == file_format
    dataset = open(path)
    reader = PDEBenchDarcyDataset if file_format == "pdebench-darcy" else FNODarcyDataset
    assert type(dataset) is reader
    assert dataset.attrs["format"] == file_format
    assert len(dataset) == N
    np.testing.assert_array_equal(dataset[4]["coefficient"], np.float32(darcy[0][4]))
    np.testing.assert_array_equal(dataset[4]["solution"], np.float32(darcy[1][4]))


@pytest.mark.parametrize("file_format", ["fno-mat-v5", "fno-mat-v7.3", "pdebench-darcy"])
def test_open_split_stride_fields_and_reader_options(files, darcy, file_format):
    path = files[file_format]
    picked = open(path, split=[4, 1], stride=2, fields=["solution"], n_samples=5)
    assert len(picked) == 2
    assert picked.fields == ("solution",)
    assert list(picked[0]) == ["solution"]
    np.testing.assert_array_equal(picked[0]["solution"], np.float32(darcy[1][4, ::2, ::2]))
    np.testing.assert_array_equal(picked[1]["solution"], np.float32(darcy[1][1, ::2, ::2]))

    test = open(path, split=slice(3, None))
    assert len(test) == N - 3
    np.testing.assert_array_equal(test[0]["coefficient"], np.float32(darcy[0][3]))


def test_open_split_errors(files):
    path = files["fno-mat-v7.3"]
    with pytest.raises(ValueError, match="no named splits"):
        open(path, split="train")
    with pytest.raises(IndexError):
        open(path, split=[0, N])
    with pytest.raises(TypeError, match="split"):
        open(path, split=[0.5])


def _raises(path, *words):
    with pytest.raises(FileFormatError) as info:
        open(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ") and "\n" not in message
    for word in words:
        assert word in message
    return message


def test_open_unknown_hdf5_lists_its_keys(tmp_path):
    path = tmp_path / "other.h5"
    with h5py.File(path, "w") as f:
        f["velocity"] = np.zeros(3)
        f["pressure"] = np.zeros(3)
    message = _raises(path)
    assert message == (
        f"{path}: not a physnet store, FNO .mat or PDEBench HDF5 file "
        "(found keys ['pressure', 'velocity'])"
    )


def test_open_unknown_mat_lists_its_keys(tmp_path):
    path = tmp_path / "other.mat"
    write_mat_v5(path, a=np.zeros(3), u=np.zeros(3))
    _raises(path, "not a physnet store, FNO .mat or PDEBench HDF5 file", "['a', 'u']")


@pytest.mark.parametrize("content", [b"", b"hello world\n" * 100, bytes(range(256)) * 20])
def test_open_garbage(tmp_path, content):
    path = tmp_path / "data.h5"
    path.write_bytes(content)
    _raises(path, "not a physnet store, FNO .mat or PDEBench HDF5 file")


def test_open_truncated_hdf5(tmp_path, files):
    path = tmp_path / "truncated.hdf5"
    path.write_bytes(files["pdebench-darcy"].read_bytes()[:1500])
    _raises(path, "truncated or corrupt HDF5")


def test_open_missing_file(tmp_path):
    _raises(tmp_path / "absent.h5", "no such file")


# --- physnet stores -------------------------------------------------------------------------


@pytest.fixture
def store(tmp_path, darcy):
    path = tmp_path / "darcy_store.mat"  # the content decides, not the suffix
    coeff, sol = darcy
    fields = {"coefficient": ((S, S), np.float32), "solution": ((S, S), np.float32)}
    with StoreWriter(path, fields, N, inputs=["coefficient"], targets=["solution"]) as writer:
        for i in range(N):
            writer.write(i, {"coefficient": np.float32(coeff[i]), "solution": np.float32(sol[i])})
        writer.finalize(splits={"train": [0, 1, 2, 3], "test": [4, 5]})
    return path


def test_open_reads_stores(store, darcy):
    assert detect_format(store) == "physnet-store"
    dataset = open(store)
    assert type(dataset) is StoreDataset
    assert len(dataset) == N
    np.testing.assert_array_equal(dataset[5]["solution"], np.float32(darcy[1][5]))


def test_open_store_named_split_and_fields(store, darcy):
    test = open(store, split="test", fields=["solution"])
    assert (len(test), test.fields, test.targets) == (2, ("solution",), ("solution",))
    np.testing.assert_array_equal(test[1]["solution"], np.float32(darcy[1][5]))
    with pytest.raises(ValueError, match="split='val'"):
        open(store, split="val")


def test_open_store_index_split(store, darcy):
    picked = open(store, split=slice(1, 3))
    assert len(picked) == 2
    np.testing.assert_array_equal(picked[0]["coefficient"], np.float32(darcy[0][1]))


def test_open_store_refuses_stride(store):
    with pytest.raises(ValueError, match="stride=2"):
        open(store, stride=2)


def test_store_attribute_may_be_bytes(tmp_path):
    path = tmp_path / "bytes_attribute.h5"
    with h5py.File(path, "w") as f:
        f.attrs["physnet_format"] = np.bytes_("physnet-store")
    assert detect_format(path) == "physnet-store"
    with pytest.raises(FileFormatError, match=r"bytes_attribute\.h5"):  # the store's own checks
        open(path)


def test_other_physnet_format_attribute_is_not_a_store(tmp_path):
    path = tmp_path / "not_a_store.h5"
    with h5py.File(path, "w") as f:
        f.attrs["physnet_format"] = "something-else"
        f["coefficient"] = np.zeros((2, 3, 3))
    _raises(path, "found keys ['coefficient']")
