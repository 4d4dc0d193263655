"""Linear-system files: round trips, the DCDM/Eigen dumps, and one clear error per bad file."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.io
import scipy.sparse

from physnet.datasets import (
    FileFormatError,
    load_system,
    load_vector,
    make_scene,
    read_eigen_sparse,
    read_eigen_vector,
    save_system,
)
from physnet.datasets.systems import rhs_path


@pytest.fixture
def system():
    scene = make_scene("sphere", 12, ndim=3, seed=0)
    return scene.operator().to_csr(), scene.rhs_vector()


def _same_matrix(A, B):
    return A.shape == B.shape and (A != B).nnz == 0


# --- round trips --------------------------------------------------------------------------


def test_npz_round_trip_is_exact(tmp_path, system):
    A, b = system
    path = tmp_path / "system.npz"
    save_system(path, A, b)
    A2, b2 = load_system(path)
    assert isinstance(A2, scipy.sparse.csr_matrix)
    assert A2.dtype == A.dtype
    assert _same_matrix(A, A2)
    np.testing.assert_array_equal(b, b2)
    # SciPy reads the matrix part of the archive as it is
    assert _same_matrix(A, scipy.sparse.load_npz(path))


def test_npz_without_rhs(tmp_path, system):
    A, _ = system
    save_system(tmp_path / "A.npz", A)
    A2, b2 = load_system(tmp_path / "A.npz")
    assert _same_matrix(A, A2)
    assert b2 is None


def test_npz_written_by_scipy_is_read(tmp_path, system):
    A, _ = system
    scipy.sparse.save_npz(tmp_path / "scipy.npz", A.tocsc())
    A2, b2 = load_system(tmp_path / "scipy.npz")
    assert _same_matrix(A, A2)
    assert b2 is None


def test_mtx_round_trip(tmp_path, system):
    A, b = system
    path = tmp_path / "system.mtx"
    save_system(path, A, b)
    assert rhs_path(path).exists()
    A2, b2 = load_system(path)
    assert isinstance(A2, scipy.sparse.csr_matrix)
    assert abs(A2 - A).max() <= 1e-15 * abs(A).max()
    np.testing.assert_allclose(b2, b, rtol=1e-15, atol=0)


def test_mtx_without_rhs_removes_a_stale_one(tmp_path, system):
    A, b = system
    path = tmp_path / "system.mtx"
    save_system(path, A, b)
    save_system(path, A)
    assert not rhs_path(path).exists()
    assert load_system(path)[1] is None


def test_explicit_rhs_replaces_the_stored_one(tmp_path, system):
    A, b = system
    save_system(tmp_path / "A.npz", A, b)
    np.save(tmp_path / "other.npy", 2 * b)
    _, b2 = load_system(tmp_path / "A.npz", rhs=tmp_path / "other.npy")
    np.testing.assert_array_equal(b2, 2 * b)
    scipy.io.mmwrite(tmp_path / "other.mtx", (3 * b).reshape(-1, 1))
    _, b3 = load_system(tmp_path / "A.npz", rhs=tmp_path / "other.mtx")
    np.testing.assert_allclose(b3, 3 * b, rtol=1e-15)


def test_load_vector_formats(tmp_path):
    v = np.linspace(-1.0, 1.0, 7)
    np.save(tmp_path / "v.npy", v.reshape(-1, 1))
    np.savez(tmp_path / "single.npz", anything=v)
    np.savez(tmp_path / "named.npz", x=2 * v, b=v)
    scipy.io.mmwrite(tmp_path / "v.mtx", v.reshape(1, -1))
    for name in ("v.npy", "single.npz", "named.npz", "v.mtx"):
        np.testing.assert_allclose(load_vector(tmp_path / name), v, rtol=1e-15, err_msg=name)
    np.save(tmp_path / "ints.npy", np.arange(3))
    assert load_vector(tmp_path / "ints.npy").dtype == np.float64


def test_save_system_validates_its_arguments(tmp_path, system):
    A, b = system
    with pytest.raises(ValueError, match="suffix"):
        save_system(tmp_path / "A.txt", A, b)
    with pytest.raises(ValueError, match="square"):
        save_system(tmp_path / "A.npz", scipy.sparse.random(3, 4, density=0.5))
    with pytest.raises(ValueError, match=r"b has shape \(3,\)"):
        save_system(tmp_path / "A.npz", A, b[:3])
    bad = A.copy()
    bad.data[0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        save_system(tmp_path / "A.npz", bad)
    with pytest.raises(TypeError, match="to_csr"):
        save_system(tmp_path / "A.npz", [[1.0]])
    assert list(tmp_path.iterdir()) == []


# --- bad files ----------------------------------------------------------------------------


def _write_npz(path, **overrides):
    A = scipy.sparse.csr_matrix(np.array([[2.0, -1.0], [-1.0, 2.0]]))
    arrays = {
        "format": np.array("csr"),
        "shape": np.array(A.shape),
        "data": A.data,
        "indices": A.indices,
        "indptr": A.indptr,
        "b": np.ones(2),
    }
    arrays.update(overrides)
    arrays = {key: value for key, value in arrays.items() if value is not None}
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize(
    "overrides, field",
    [
        ({"indptr": None}, "field 'indptr' is missing"),
        ({"format": np.array("coo")}, "field 'format'"),
        ({"shape": np.array([2, 3])}, "expected a square matrix"),
        ({"indptr": np.array([0, 1])}, "field 'indptr' has length 2"),
        ({"indptr": np.array([0, 3, 2])}, "field 'indptr' must rise"),
        ({"indices": np.array([0, 5, 0, 1])}, "field 'indices' has entries outside"),
        ({"data": np.array([2.0, np.nan, -1.0, 2.0])}, "field 'data' has 1 NaN or Inf"),
        ({"data": np.array([2.0, -1.0, -1.0])}, "field 'indices' has length 4, expected 3"),
        ({"b": np.ones(3)}, "field 'b' has shape (3,)"),
        ({"b": np.array([1.0, np.inf])}, "field 'b' has 1 NaN or Inf"),
        ({"b": np.array(["a", "b"])}, "field 'b' has dtype"),
    ],
)
def test_bad_npz_names_file_and_field(tmp_path, overrides, field):
    path = _write_npz(tmp_path / "bad.npz", **overrides)
    with pytest.raises(FileFormatError) as info:
        load_system(path)
    message = str(info.value)
    assert message.startswith(str(path) + ": ")
    assert field in message
    assert "\n" not in message


def test_good_npz_helper_is_good(tmp_path):
    A, b = load_system(_write_npz(tmp_path / "good.npz"))
    np.testing.assert_array_equal(A.toarray(), [[2.0, -1.0], [-1.0, 2.0]])
    np.testing.assert_array_equal(b, [1.0, 1.0])


def test_object_arrays_are_not_unpickled(tmp_path):
    path = tmp_path / "pickled.npz"
    np.savez(path, b=np.array([{"a": 1}], dtype=object))
    with pytest.raises(FileFormatError, match="field 'b' holds Python objects"):
        load_vector(path)


def _assert_file_error(call, path, *fragments):
    with pytest.raises(FileFormatError) as info:
        call(path)
    message = str(info.value)
    assert message.startswith(str(path)), message
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, message
    return message


def test_missing_and_unreadable_files(tmp_path):
    _assert_file_error(load_system, tmp_path / "missing.npz", "no such file")
    _assert_file_error(load_system, tmp_path, "not a regular file")
    (tmp_path / "text.npz").write_text("not an archive")
    _assert_file_error(load_system, tmp_path / "text.npz", "not a readable .npz archive")
    (tmp_path / "text.mtx").write_text("1 2 3\n")
    _assert_file_error(load_system, tmp_path / "text.mtx", "not a Matrix Market file")
    (tmp_path / "A.csv").write_text("1,2\n")
    _assert_file_error(load_system, tmp_path / "A.csv", "unknown system format")


def test_truncated_files(tmp_path, system):
    A, b = system
    save_system(tmp_path / "A.npz", A, b)
    raw = (tmp_path / "A.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(raw[: len(raw) // 2])
    _assert_file_error(load_system, tmp_path / "cut.npz")

    save_system(tmp_path / "A.mtx", A, b)
    text = (tmp_path / "A.mtx").read_text()
    (tmp_path / "cut.mtx").write_text(text[: len(text) // 2])
    _assert_file_error(load_system, tmp_path / "cut.mtx", "Matrix Market")

    np.save(tmp_path / "b.npy", b)
    raw = (tmp_path / "b.npy").read_bytes()
    (tmp_path / "cut.npy").write_bytes(raw[:-16])
    _assert_file_error(load_vector, tmp_path / "cut.npy", "truncated")


def test_mtx_problems(tmp_path, system):
    A, _ = system
    scipy.io.mmwrite(tmp_path / "rect.mtx", scipy.sparse.random(3, 4, density=0.5, rng=0))
    _assert_file_error(load_system, tmp_path / "rect.mtx", "square")
    save_system(tmp_path / "A.mtx", A)
    scipy.io.mmwrite(tmp_path / "A.rhs.mtx", np.ones((5, 1)))
    with pytest.raises(FileFormatError, match=r"A\.rhs\.mtx: field 'b' has length 5"):
        load_system(tmp_path / "A.mtx")
    scipy.io.mmwrite(tmp_path / "nan.mtx", scipy.sparse.csr_matrix(np.array([[np.nan]])))
    _assert_file_error(load_system, tmp_path / "nan.mtx", "NaN or Inf")


def test_vector_problems(tmp_path):
    np.save(tmp_path / "matrix.npy", np.ones((3, 3)))
    _assert_file_error(load_vector, tmp_path / "matrix.npy", "expected a vector")
    np.savez(tmp_path / "two.npz", x=np.ones(2), y=np.ones(2))
    _assert_file_error(load_vector, tmp_path / "two.npz", "'b'")
    np.save(tmp_path / "nan.npy", np.array([1.0, np.nan]))
    _assert_file_error(load_vector, tmp_path / "nan.npy", "NaN or Inf")


# --- DCDM / Eigen dumps -------------------------------------------------------------------


def _eigen_sparse_bytes(A, value_dtype):
    """The DCDM layout, written independently of the reader."""
    A = scipy.sparse.csr_matrix(A)
    header = np.array([*A.shape, A.nnz, A.shape[0], A.shape[1]], dtype="<i4")
    return b"".join(
        [
            header.tobytes(),
            A.data.astype(value_dtype).tobytes(),
            A.indptr[:-1].astype("<i4").tobytes(),
            A.indices.astype("<i4").tobytes(),
        ]
    )


@pytest.mark.parametrize("value_dtype", ["<f4", "<f8"])
def test_read_eigen_sparse(tmp_path, system, value_dtype):
    A, _ = system
    path = tmp_path / "matrixA_1.bin"
    path.write_bytes(_eigen_sparse_bytes(A, value_dtype))
    A2 = read_eigen_sparse(path)
    assert isinstance(A2, scipy.sparse.csr_matrix)
    assert A2.dtype == np.dtype(value_dtype).newbyteorder("=")
    assert _same_matrix(A.astype(value_dtype), A2)


def test_read_eigen_sparse_rejects_rectangular(tmp_path):
    A = scipy.sparse.random(4, 6, density=0.5, rng=1, format="csr")
    (tmp_path / "rect.bin").write_bytes(_eigen_sparse_bytes(A, "<f8"))
    _assert_file_error(read_eigen_sparse, tmp_path / "rect.bin", "square")


def test_read_eigen_sparse_bad_files(tmp_path, system):
    A, _ = system
    raw = _eigen_sparse_bytes(A, "<f4")
    (tmp_path / "cut.bin").write_bytes(raw[:-7])
    _assert_file_error(read_eigen_sparse, tmp_path / "cut.bin", "truncated")
    (tmp_path / "tiny.bin").write_bytes(b"\x01\x02")
    _assert_file_error(read_eigen_sparse, tmp_path / "tiny.bin", "20-byte header")
    header = np.frombuffer(raw[:20], dtype="<i4").copy()
    header[3] = 3
    (tmp_path / "outer.bin").write_bytes(header.tobytes() + raw[20:])
    _assert_file_error(read_eigen_sparse, tmp_path / "outer.bin", "outerSize=3")
    corrupt = bytearray(raw)
    corrupt[-4:] = np.array([10**6], dtype="<i4").tobytes()
    (tmp_path / "index.bin").write_bytes(bytes(corrupt))
    _assert_file_error(read_eigen_sparse, tmp_path / "index.bin", "field 'indices'")


def test_read_eigen_vector(tmp_path):
    values = np.linspace(0.0, 1.0, 9)
    path = tmp_path / "div_v_star1.bin"
    path.write_bytes(np.uint64(values.size).tobytes() + values.astype("<f8").tobytes())
    np.testing.assert_array_equal(read_eigen_vector(path), values)
    flags = np.array([0, 1, 2, 2], dtype="<i4")
    (tmp_path / "flags.bin").write_bytes(np.uint64(4).tobytes() + flags.tobytes())
    np.testing.assert_array_equal(read_eigen_vector(tmp_path / "flags.bin", np.int32), flags)
    # the same bytes read as float64 do not fit the length header
    _assert_file_error(
        lambda p: read_eigen_vector(p, np.float64), tmp_path / "flags.bin", "expected 40"
    )
    (tmp_path / "nan.bin").write_bytes(np.uint64(1).tobytes() + np.array([np.nan]).tobytes())
    _assert_file_error(read_eigen_vector, tmp_path / "nan.bin", "NaN or Inf")
    with pytest.raises(TypeError, match="dtype"):
        read_eigen_vector(path, np.complex128)
