"""The physnet HDF5 store: round trips, splits, resume, worker safety, damaged files."""

from __future__ import annotations

import hashlib
import os
import pickle

import numpy as np
import pytest

from physnet.datasets.store import (
    FileFormatError,
    StoreDataset,
    StoreWriter,
    check_splits,
    is_store,
    partial_path,
    verify_store,
)

h5py = pytest.importorskip("h5py")

FIELDS = {
    "coefficient": ((6, 5), np.float32),
    "flags": ((6, 5), np.int8),
    "label": ((), np.int64),
    "mask": ((3,), np.bool_),
    "spectrum": ((4,), np.complex128),
}
N_SAMPLES = 10
ATTRS = {"generator": "test-fields", "config": {"size": 6, "names": ["a", "b"]}, "seed": 7}


def make_sample(index: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(index)
    return {
        "coefficient": rng.standard_normal((6, 5)).astype(np.float32),
        "flags": rng.integers(0, 3, (6, 5)).astype(np.int8),
        "label": np.int64(index * 10),
        "mask": rng.random(3) > 0.5,
        "spectrum": rng.standard_normal(4) + 1j * rng.standard_normal(4),
    }


def write_store(path, order=None, *, splits=None, finalize=True, **options):
    writer = StoreWriter(
        path,
        FIELDS,
        N_SAMPLES,
        attrs=ATTRS,
        inputs=["coefficient", "flags"],
        targets=["label"],
        splits=splits,
        **options,
    )
    for index in range(N_SAMPLES) if order is None else order:
        writer.write(index, make_sample(index))
    if finalize:
        return writer.finalize()
    writer.close()
    return partial_path(path)


SPLITS = {"train": list(range(7)), "val": [7, 8], "test": [9]}


@pytest.fixture
def store(tmp_path):
    return write_store(tmp_path / "store.h5", splits=SPLITS)


def sha256(path) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


# --- round trip ---------------------------------------------------------------------------


def test_round_trip_fields_dtypes_and_attributes(store):
    dataset = StoreDataset(store)
    assert len(dataset) == N_SAMPLES
    assert dataset.fields == tuple(FIELDS)
    assert dataset.inputs == ("coefficient", "flags")
    assert dataset.targets == ("label",)
    for index in (0, 4, N_SAMPLES - 1):
        sample = dataset[index]
        expected = make_sample(index)
        assert sample.keys() == expected.keys()
        for name, value in expected.items():
            assert sample[name].dtype == np.dtype(FIELDS[name][1])
            assert sample[name].shape == FIELDS[name][0]
            np.testing.assert_array_equal(sample[name], value)
    assert dataset.attrs["generator"] == "test-fields"
    assert dataset.attrs["config"] == ATTRS["config"]
    assert dataset.attrs["seed"] == 7
    assert dataset.attrs["n_samples"] == N_SAMPLES
    assert isinstance(dataset.attrs["physnet_version"], str)
    assert is_store(store)
    with h5py.File(store, "r") as file:
        assert file.attrs["physnet_format"] == "physnet-store"
        assert file.attrs["format_version"] == 1
        assert file["coefficient"].chunks == (1, 6, 5)
        assert file["coefficient"].compression is None
        assert file["_written"][...].all()


def test_splits_restrict_and_are_recorded(store):
    train = StoreDataset(store, split="train")
    test = StoreDataset(store, split="test")
    assert len(train) == 7 and len(test) == 1
    np.testing.assert_array_equal(test[0]["coefficient"], make_sample(9)["coefficient"])
    assert sorted(train.splits) == ["test", "train", "val"]
    np.testing.assert_array_equal(train.splits["val"], [7, 8])
    with pytest.raises(ValueError, match=r"split='validation'.*\['test', 'train', 'val'\]"):
        StoreDataset(store, split="validation")


def test_field_selection(store):
    dataset = StoreDataset(store, fields=["label", "flags"])
    assert dataset.fields == ("label", "flags")
    assert dataset.inputs == ("flags",) and dataset.targets == ("label",)
    assert sorted(dataset[3]) == ["flags", "label"]
    with pytest.raises(ValueError, match="'pressure'"):
        StoreDataset(store, fields=["pressure"])


def test_extra_attributes_round_trip(tmp_path):
    path = tmp_path / "extra.h5"
    writer = StoreWriter(
        path,
        {"u": ((2,), np.float64)},
        1,
        attrs={**ATTRS, "fractions": {"train": 1.0}, "note": "x", "rtol": 1e-8, "ok": True},
    )
    writer.write(0, {"u": np.ones(2)})
    attrs = StoreDataset(writer.finalize()).attrs
    assert attrs["fractions"] == {"train": 1.0}
    assert (attrs["note"], attrs["rtol"], attrs["ok"]) == ("x", 1e-8, True)


def test_compressed_store_round_trip(tmp_path):
    path = write_store(tmp_path / "gzip.h5", compression="gzip")
    dataset = StoreDataset(path)
    np.testing.assert_array_equal(dataset[5]["coefficient"], make_sample(5)["coefficient"])
    verify_store(path)


def test_bytes_do_not_depend_on_write_order(tmp_path):
    forward = write_store(tmp_path / "forward.h5", splits=SPLITS)
    order = np.random.default_rng(1).permutation(N_SAMPLES)
    shuffled = write_store(tmp_path / "shuffled.h5", order, splits=SPLITS, flush_interval=0)
    assert sha256(forward) == sha256(shuffled)


def test_verify_store_report(store):
    report = verify_store(store)
    assert report["n_samples"] == N_SAMPLES
    assert report["splits"] == {"test": 1, "train": 7, "val": 2}
    assert report["fields"]["label"] == {"shape": [], "dtype": "<i8"}
    assert report["generator"] == "test-fields" and report["seed"] == 7


# --- writer checks ------------------------------------------------------------------------


@pytest.fixture
def writer(tmp_path):
    writer = StoreWriter(tmp_path / "w.h5", FIELDS, N_SAMPLES, attrs=ATTRS)
    yield writer
    writer.close()


def test_write_rejects_wrong_shape_and_dtype(writer):
    sample = make_sample(0)
    sample["coefficient"] = sample["coefficient"].astype(np.float64)
    with pytest.raises(ValueError, match=r"'coefficient'.*float64.*expected.*float32"):
        writer.write(0, sample)
    sample = make_sample(0)
    sample["flags"] = sample["flags"][:, :4]
    with pytest.raises(ValueError, match=r"'flags'.*\(6, 4\).*expected shape \(6, 5\)"):
        writer.write(0, sample)
    sample = make_sample(0)
    del sample["mask"]
    with pytest.raises(ValueError, match="has fields"):
        writer.write(0, sample)
    with pytest.raises(ValueError, match="out of range"):
        writer.write(N_SAMPLES, make_sample(0))
    assert not writer.written.any()


def test_finalize_requires_every_sample(tmp_path, writer):
    for index in range(N_SAMPLES - 2):
        writer.write(index, make_sample(index))
    with pytest.raises(ValueError, match=r"2 of 10 samples .* not written \(first: \[8, 9\]\)"):
        writer.finalize()
    assert not (tmp_path / "w.h5").exists()
    assert partial_path(tmp_path / "w.h5").exists()


def test_existing_files_are_not_replaced_silently(tmp_path, writer):
    with pytest.raises(FileExistsError, match="resume"):
        StoreWriter(tmp_path / "w.h5", FIELDS, N_SAMPLES)


def test_bad_field_names_and_specs(tmp_path):
    with pytest.raises(ValueError, match="'_hidden'"):
        StoreWriter(tmp_path / "a.h5", {"_hidden": ((2,), np.float32)}, 2)
    with pytest.raises(ValueError, match=r"'text'.*numeric"):
        StoreWriter(tmp_path / "b.h5", {"text": ((2,), np.str_)}, 2)
    with pytest.raises(ValueError, match=r"targets \['pressure'\]"):
        StoreWriter(tmp_path / "c.h5", {"u": ((2,), np.float32)}, 2, targets=["pressure"])
    assert not list(tmp_path.iterdir())


# --- splits -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("splits", "message"),
    [
        ({"train": [0, 1, 2], "test": [2, 3]}, "'train' and 'test' share 1 sample"),
        ({"train": [0, 10]}, "out of range for 10 samples"),
        ({"train": [-1, 0]}, "out of range"),
        ({"train": [1, 1]}, "sample 1 appears more than once"),
        ({"train": [0.5]}, "1-D sequence of sample indices"),
        ({"my split": [0]}, "identifier"),
    ],
)
def test_invalid_splits_are_rejected(tmp_path, splits, message):
    with pytest.raises(ValueError, match=message):
        check_splits(splits, N_SAMPLES)
    with pytest.raises(ValueError, match=message):
        write_store(tmp_path / "s.h5", splits=splits)
    path = write_store(tmp_path / "late.h5", finalize=False)
    writer = StoreWriter.resume(tmp_path / "late.h5")
    with pytest.raises(ValueError, match=message):
        writer.finalize(splits=splits)
    writer.close()
    assert path.exists() and not (tmp_path / "late.h5").exists()


def test_splits_at_finalize(tmp_path):
    path = write_store(tmp_path / "late.h5", finalize=False)
    writer = StoreWriter.resume(tmp_path / "late.h5")
    final = writer.finalize(splits={"train": range(8), "test": [8, 9]})
    assert not path.exists()
    assert len(StoreDataset(final, split="test")) == 2


def test_overlapping_splits_in_a_file_are_reported(store):
    with h5py.File(store, "r+") as file:
        del file["splits/test"]
        file["splits/test"] = np.array([6, 9])
    with pytest.raises(FileFormatError, match=r"store\.h5.*splits.*share"):
        StoreDataset(store)


# --- resume -------------------------------------------------------------------------------


def test_resume_continues_a_partial_store(tmp_path):
    path = tmp_path / "resumed.h5"
    write_store(path, [0, 3, 4], splits=SPLITS, finalize=False)
    writer = StoreWriter.resume(path, fields=FIELDS, n_samples=N_SAMPLES, attrs=ATTRS)
    np.testing.assert_array_equal(writer.missing(), [1, 2, 5, 6, 7, 8, 9])
    for index in writer.missing():
        writer.write(int(index), make_sample(int(index)))
    writer.finalize()
    assert sha256(path) == sha256(write_store(tmp_path / "whole.h5", splits=SPLITS))


def test_resume_refuses_different_settings(tmp_path):
    path = tmp_path / "resumed.h5"
    write_store(path, [0], finalize=False)
    with pytest.raises(ValueError, match=r"config: file has .*'size': 6.*expected .*'size': 8"):
        StoreWriter.resume(path, attrs={**ATTRS, "config": {"size": 8, "names": ["a", "b"]}})
    with pytest.raises(ValueError, match="seed"):
        StoreWriter.resume(path, attrs={"seed": 8})
    with pytest.raises(ValueError, match="fields"):
        StoreWriter.resume(path, fields={**FIELDS, "label": ((), np.int32)})
    with pytest.raises(ValueError, match="n_samples"):
        StoreWriter.resume(path, n_samples=11)
    with pytest.raises(FileNotFoundError, match="no partial store"):
        StoreWriter.resume(tmp_path / "other.h5")
    StoreWriter.resume(path, fields=FIELDS, attrs=ATTRS).close()


# --- worker safety ------------------------------------------------------------------------


def test_dataloader_workers_give_the_same_batches(store):
    torch = pytest.importorskip("torch")
    dataset = StoreDataset(store, split="train")
    dataset[0]  # the parent holds an open handle when the workers fork

    def batches(num_workers):
        loader = torch.utils.data.DataLoader(
            dataset, batch_size=3, shuffle=False, num_workers=num_workers
        )
        return list(loader)

    serial, parallel = batches(0), batches(2)
    assert len(serial) == len(parallel) == 3
    for a, b in zip(serial, parallel, strict=True):
        assert a.keys() == b.keys()
        for name in a:
            assert torch.equal(a[name], b[name])
    assert serial[0]["coefficient"].shape == (3, 6, 5)
    assert serial[0]["coefficient"].dtype == torch.float32


def test_pickled_dataset_carries_no_handle(store):
    dataset = StoreDataset(store)
    dataset[0]
    clone = pickle.loads(pickle.dumps(dataset))
    assert clone._store._resource is None
    np.testing.assert_array_equal(clone[2]["flags"], dataset[2]["flags"])
    dataset.close()
    clone.close()


# --- damaged files ------------------------------------------------------------------------


def test_truncated_file(store):
    size = os.path.getsize(store)
    with open(store, "r+b") as f:
        f.truncate(size // 2)
    with pytest.raises(FileFormatError, match=r"store\.h5: truncated or corrupt HDF5"):
        StoreDataset(store)
    with pytest.raises(FileFormatError, match=r"store\.h5"):
        verify_store(store)


def test_flipped_bytes_in_a_sample(store):
    with h5py.File(store, "r") as file:
        offset = file["coefficient"].id.get_chunk_info_by_coord((4, 0, 0)).byte_offset
    with open(store, "r+b") as f:
        f.seek(offset + 10)
        byte = f.read(1)
        f.seek(offset + 10)
        f.write(bytes([byte[0] ^ 0xFF]))
    dataset = StoreDataset(store)
    dataset[3]
    with pytest.raises(
        FileFormatError, match=r"store\.h5: field 'coefficient', sample 4: checksum"
    ):
        dataset[4]
    with pytest.raises(FileFormatError, match="'coefficient', sample 4"):
        verify_store(store)


def test_flipped_bytes_in_the_metadata(store):
    with open(store, "r+b") as f:
        f.seek(0)
        f.write(b"\x00" * 64)
    with pytest.raises(FileFormatError, match=r"store\.h5"):
        StoreDataset(store)


def test_deleted_field(store):
    with h5py.File(store, "r+") as file:
        del file["flags"]
    with pytest.raises(FileFormatError, match=r"store\.h5: field 'flags' is missing"):
        StoreDataset(store)


def test_incomplete_store_is_not_read(tmp_path):
    partial = write_store(tmp_path / "half.h5", range(4), finalize=False)
    with pytest.raises(FileFormatError, match="incomplete store: 6 of 10 samples"):
        StoreDataset(partial)


def test_not_a_store(tmp_path):
    path = tmp_path / "plain.h5"
    with h5py.File(path, "w") as file:
        file["x"] = np.zeros(3)
    assert not is_store(path)
    with pytest.raises(FileFormatError, match="not a physnet store"):
        StoreDataset(path)
    with pytest.raises(FileFormatError, match="no such file"):
        StoreDataset(tmp_path / "missing.h5")
