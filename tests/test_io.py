"""Atomic writes, the unreadable-file error, and the rank/shard helpers."""

from __future__ import annotations

import os
import pickle
import stat

import numpy as np
import pytest

from physnet._io import (
    FileFormatError,
    atomic_path,
    atomic_write,
    check_readable,
    load_npy,
    rank_and_world_size,
    save_npy,
    shard_path,
    write_text,
)


class Interrupted(Exception):
    pass


def _names(folder):
    return sorted(p.name for p in folder.iterdir())


def test_atomic_write_binary_and_text(tmp_path):
    target = tmp_path / "out.bin"
    with atomic_write(target) as f:
        f.write(b"\x00\x01")
        assert not target.exists()  # nothing visible until the block ends
    assert target.read_bytes() == b"\x00\x01"
    with atomic_write(tmp_path / "out.txt", mode="w") as f:
        f.write("résumé\n")
    assert (tmp_path / "out.txt").read_text(encoding="utf-8") == "résumé\n"
    assert _names(tmp_path) == ["out.bin", "out.txt"]


@pytest.mark.parametrize("error", [Interrupted, KeyboardInterrupt])
def test_atomic_write_keeps_old_file_when_the_body_raises(tmp_path, error):
    target = tmp_path / "result.npy"
    target.write_bytes(b"old")
    with pytest.raises(error), atomic_write(target) as f:
        f.write(b"partial new content")
        raise error
    assert target.read_bytes() == b"old"
    assert _names(tmp_path) == ["result.npy"]


def test_atomic_write_leaves_nothing_when_the_first_write_fails(tmp_path):
    target = tmp_path / "new.txt"
    with pytest.raises(Interrupted), atomic_write(target, "w"):
        raise Interrupted
    assert _names(tmp_path) == []


def test_atomic_write_rejects_other_modes(tmp_path):
    with pytest.raises(ValueError, match="mode='a'"), atomic_write(tmp_path / "x", "a"):
        pass
    assert _names(tmp_path) == []


def test_new_files_get_the_usual_permissions_and_old_ones_keep_theirs(tmp_path):
    umask = os.umask(0o022)
    try:
        with atomic_write(tmp_path / "new") as f:
            f.write(b"x")
        assert stat.S_IMODE((tmp_path / "new").stat().st_mode) == 0o644
        existing = tmp_path / "existing"
        existing.write_bytes(b"old")
        existing.chmod(0o600)
        with atomic_write(existing) as f:
            f.write(b"new")
        assert stat.S_IMODE(existing.stat().st_mode) == 0o600
    finally:
        os.umask(umask)


def test_atomic_path_for_writers_that_open_the_file(tmp_path):
    target = tmp_path / "a.npy"
    with atomic_path(target) as temporary:
        assert temporary.endswith(".npy")
        assert os.path.dirname(temporary) == str(tmp_path)
        np.save(temporary, np.arange(3))
    np.testing.assert_array_equal(np.load(target), np.arange(3))

    with pytest.raises(Interrupted), atomic_path(target) as temporary:
        np.save(temporary, np.zeros(5))
        raise Interrupted
    np.testing.assert_array_equal(np.load(target), np.arange(3))
    assert _names(tmp_path) == ["a.npy"]


def test_save_npy_and_write_text(tmp_path):
    array = np.arange(12, dtype=np.int8).reshape(3, 4)
    save_npy(tmp_path / "flags", array)  # written under the name given, no suffix added
    np.testing.assert_array_equal(load_npy(tmp_path / "flags"), array)
    with pytest.raises(TypeError, match="object"):
        save_npy(tmp_path / "objects.npy", np.array([None, 1], dtype=object))
    write_text(tmp_path / "r.json", "{}")
    assert _names(tmp_path) == ["flags", "r.json"]


def test_load_npy_reports_bad_files(tmp_path):
    cases = {
        "missing.npy": (None, "no such file"),
        "text.npy": (b"hello", "not a .npy file"),
        "archive.npy": (None, "is an .npz archive"),
        "truncated.npy": (None, "truncated or corrupt"),
        "objects.npy": (None, "holds Python objects"),
    }
    (tmp_path / "text.npy").write_bytes(b"hello")
    with open(tmp_path / "archive.npy", "wb") as f:
        np.savez(f, x=np.ones(2))
    np.save(tmp_path / "full.npy", np.ones(100))
    (tmp_path / "truncated.npy").write_bytes((tmp_path / "full.npy").read_bytes()[:-80])
    np.save(tmp_path / "objects.npy", np.array([{}], dtype=object), allow_pickle=True)
    for name, (_, expected) in cases.items():
        path = tmp_path / name
        with pytest.raises(FileFormatError) as info:
            load_npy(path)
        message = str(info.value)
        assert message == f"{path}: {info.value.reason}"
        assert expected in message
        assert "\n" not in message
    with pytest.raises(FileFormatError, match="not a regular file"):
        check_readable(tmp_path)


def test_file_format_error():
    error = FileFormatError("data/A.npz", "field 'b'\nhas length 3")
    assert isinstance(error, ValueError)
    assert str(error) == "data/A.npz: field 'b' has length 3"
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is FileFormatError
    assert str(copy) == str(error)
    assert (copy.path, copy.reason) == (error.path, error.reason)


def test_rank_and_world_size_from_arguments_or_environment(monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert rank_and_world_size(None, None, "job") == (0, 1)
    assert rank_and_world_size(0, None, "job") == (0, 1)
    assert rank_and_world_size(2, 3, "job") == (2, 3)
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert rank_and_world_size(None, None, "job") == (1, 4)
    assert rank_and_world_size(3, None, "job") == (3, 4)  # arguments win
    assert (
        shard_path("out/v.h5", 1, 4) == shard_path("out/v.h5", 1, 4).parent / "v.h5.shard-1-of-4.h5"
    )


@pytest.mark.parametrize(
    ("rank", "world_size", "environment", "error", "message"),
    [
        (1, None, {}, ValueError, "job: rank=1 is given without world_size"),
        (None, 2, {}, ValueError, r"job: world_size=2 is given without rank \(or RANK\)"),
        (2, 2, {}, ValueError, r"job: rank: 2, expected an integer in \[0, 1\]"),
        (0, 0, {}, ValueError, "job: world_size: 0, expected an integer >= 1"),
        (0, 2.0, {}, TypeError, "job: world_size: expected an integer, got 2.0"),
        (
            None,
            None,
            {"RANK": "x", "WORLD_SIZE": "2"},
            ValueError,
            "job: environment variable RANK='x'",
        ),
    ],
)
def test_rank_and_world_size_errors(monkeypatch, rank, world_size, environment, error, message):
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(error, match=message):
        rank_and_world_size(rank, world_size, "job")
