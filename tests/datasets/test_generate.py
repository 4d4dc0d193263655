"""Dataset generation: configuration errors, determinism, resume, sharding, built-in generators."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import scipy.sparse.linalg

from physnet._io import FileFormatError
from physnet.datasets import make_scene
from physnet.datasets.generate import (
    generate,
    get_generator,
    merge_shards,
    plan_generation,
    register_generator,
    sample_of,
    shard_path,
    split_indices,
)
from physnet.datasets.store import StoreDataset, partial_path, verify_store

h5py = pytest.importorskip("h5py")

SMALL = {"size": 16, "length_scale": 0.1}


def sha256(path) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def write_toml(path, text):
    path.write_text(textwrap.dedent(text))
    return path


# --- configuration ------------------------------------------------------------------------


def test_unknown_config_key_lists_the_valid_ones():
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['sise'\]; valid keys: .*'size'"):
        plan_generation("gaussian-fields", overrides={"sise": 32})


def test_wrong_type_names_the_key_path(tmp_path):
    config = write_toml(
        tmp_path / "bad.toml",
        """
        generator = "poisson-scenes"
        samples = 4
        [config]
        size = "large"
        """,
    )
    with pytest.raises(
        TypeError, match=r"bad\.toml: config\.size: expected an integer, got 'large'"
    ):
        plan_generation(config)
    with pytest.raises(TypeError, match=r"config\.names\[1\]: expected a string, got 3"):
        plan_generation("poisson-scenes", overrides={"names": ["sphere", 3]})


def test_out_of_range_values_name_the_key():
    with pytest.raises(ValueError, match=r"config\.size: 4, expected at least 8"):
        plan_generation("poisson-scenes", overrides={"size": 4})
    with pytest.raises(ValueError, match=r"config\.names.*'cube'"):
        plan_generation("poisson-scenes", overrides={"names": ["cube"]})
    with pytest.raises(ValueError, match="samples: 0"):
        plan_generation("gaussian-fields", samples=0)


@pytest.mark.parametrize(
    ("text", "error", "message"),
    [
        ('generator = "gaussian-fields"\nsamples = 4\nseeds = 1\n', ValueError, r"\['seeds'\]"),
        ('generator = "no-such"\nsamples = 4\n', ValueError, "unknown generator 'no-such'"),
        ("samples = 4\n", ValueError, "no 'generator' key"),
        (
            'generator = "gaussian-fields"\nsamples = 4\n[splits]\ntrain = 0.5\ntest = 0.4\n',
            ValueError,
            "sum to 0.9",
        ),
        (
            'generator = "gaussian-fields"\nsamples = 4\n[splits]\ntrain = 0.9\nvalid = 0.1\n',
            ValueError,
            r"unknown split\(s\) \['valid'\]",
        ),
        ('generator = "gaussian-fields"\nsamples = "4"\n', TypeError, "samples: expected an int"),
        ('generator = "gaussian-fields"\nsamples = 4\nseed = -1\n', ValueError, "seed: -1"),
        ('generator = "gaussian-fields"\nsamples = [4\n', ValueError, "invalid TOML"),
    ],
)
def test_toml_errors(tmp_path, text, error, message):
    path = tmp_path / "generate.toml"
    path.write_text(text)
    with pytest.raises(error, match=message):
        plan_generation(path)


def test_catalogued_dataset_and_overrides():
    plan = plan_generation("poisson-scenes", seed=3, overrides={"ndim": 3})
    assert plan.generator == "poisson-scenes"
    assert plan.samples == 64 and plan.seed == 3
    assert plan.config["ndim"] == 3 and plan.config["size"] == 32
    assert plan.splits == {"train": 0.75, "val": 0.125, "test": 0.125}
    assert plan.source.endswith(os.path.join("datasets", "poisson-scenes", "generate.toml"))


def test_unknown_name_and_missing_file(tmp_path):
    with pytest.raises(ValueError, match="unknown dataset or generator 'nothing'"):
        plan_generation("nothing")
    with pytest.raises(FileFormatError, match=r"missing\.toml"):
        plan_generation(tmp_path / "missing.toml")


def test_split_indices_are_contiguous_blocks():
    splits = split_indices(64, {"train": 0.75, "val": 0.125, "test": 0.125})
    assert [len(v) for v in splits.values()] == [48, 8, 8]
    np.testing.assert_array_equal(np.concatenate(list(splits.values())), np.arange(64))


# --- registry -----------------------------------------------------------------------------


def test_registry_refuses_duplicates_and_incomplete_generators():
    with pytest.raises(ValueError, match="already registered"):
        register_generator("gaussian-fields", object())
    with pytest.raises(TypeError, match=r"lacks \['sample', 'fields'"):
        register_generator("test-incomplete", object(), overwrite=True)


def _flaky_fields(config):
    return {"x": ((config["n"],), np.float64)}


_FAIL_AT = {"index": 5}


def _flaky_sample(config, index, rng):
    if index == _FAIL_AT["index"]:
        raise RuntimeError(f"sample {index} failed")
    return {"x": rng.standard_normal(config["n"])}


register_generator(
    "test-flaky",
    _flaky_sample,
    fields=_flaky_fields,
    inputs=["x"],
    default_config={"n": 3},
    overwrite=True,
)


def test_custom_generator_needs_a_sample_count(tmp_path):
    with pytest.raises(ValueError, match="number of samples is not given"):
        generate("test-flaky", tmp_path / "x.h5", progress=False)


def test_failed_generation_leaves_no_final_file_and_resumes(tmp_path, monkeypatch):
    out = tmp_path / "flaky.h5"
    with pytest.raises(RuntimeError, match="sample 5 failed"):
        generate("test-flaky", out, samples=8, progress=False)
    assert not out.exists()
    with h5py.File(partial_path(out), "r") as file:
        assert file["_written"][:5].all() and not file["_written"][5:].any()

    monkeypatch.setitem(_FAIL_AT, "index", -1)
    assert generate("test-flaky", out, samples=8, progress=False) == out
    assert not partial_path(out).exists()
    verify_store(out)
    whole = generate("test-flaky", tmp_path / "whole.h5", samples=8, progress=False)
    assert sha256(out) == sha256(whole)


def test_resume_refuses_a_partial_file_of_another_generation(tmp_path, monkeypatch):
    out = tmp_path / "flaky.h5"
    with pytest.raises(RuntimeError):
        generate("test-flaky", out, samples=8, progress=False, seed=0)
    monkeypatch.setitem(_FAIL_AT, "index", -1)
    with pytest.raises(ValueError, match="seed: file has 0, expected 1"):
        generate("test-flaky", out, samples=8, progress=False, seed=1)


def test_finished_file_is_kept_or_refused(tmp_path):
    out = generate("gaussian-fields", tmp_path / "g.h5", samples=4, overrides=SMALL, progress=False)
    modified = os.path.getmtime(out)
    assert generate("gaussian-fields", out, samples=4, overrides=SMALL, progress=False) == out
    assert os.path.getmtime(out) == modified
    with pytest.raises(FileExistsError, match="differs in seed"):
        generate("gaussian-fields", out, samples=4, overrides=SMALL, progress=False, seed=1)


# --- determinism, workers, sharding -------------------------------------------------------


def test_samples_depend_only_on_config_seed_and_index():
    generator = get_generator("gaussian-fields")
    config = generator.check_config(SMALL)
    a = sample_of(generator, config, 0, 5)
    b = sample_of(generator, config, 0, 5)
    c = sample_of(generator, config, 0, 6)
    np.testing.assert_array_equal(a["forcing"], b["forcing"])
    assert not np.array_equal(a["forcing"], c["forcing"])


def test_workers_give_byte_identical_files(tmp_path):
    options = {"samples": 24, "overrides": SMALL, "progress": False}
    serial = generate("gaussian-fields", tmp_path / "serial.h5", workers=1, **options)
    parallel = generate("gaussian-fields", tmp_path / "parallel.h5", workers=2, **options)
    assert sha256(serial) == sha256(parallel)


def test_shards_merge_into_the_single_process_file(tmp_path, monkeypatch):
    options = {"samples": 11, "overrides": SMALL, "progress": False}
    single = generate("gaussian-fields", tmp_path / "single.h5", **options)
    out = tmp_path / "sharded.h5"
    shard = generate("gaussian-fields", out, rank=0, world_size=2, **options)
    assert shard == shard_path(out, 0, 2)
    assert len(StoreDataset(shard)) == 6
    with pytest.raises(FileNotFoundError, match=r"shard-1-of-2"):
        merge_shards(out, 2)
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert generate("gaussian-fields", out, **options) == shard_path(out, 1, 2)
    assert merge_shards(out, 2) == out
    assert sha256(out) == sha256(single)
    assert not shard_path(out, 0, 2).exists() and not shard_path(out, 1, 2).exists()


def test_rank_without_world_size(monkeypatch, tmp_path):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.delenv("RANK", raising=False)
    with pytest.raises(ValueError, match="rank=1 is given without world_size"):
        generate("gaussian-fields", tmp_path / "x.h5", samples=2, rank=1, progress=False)
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(ValueError, match="WORLD_SIZE='two'"):
        generate("gaussian-fields", tmp_path / "x.h5", samples=2, progress=False)


_SLOW_SCRIPT = """
import sys, time
import numpy as np
from physnet.datasets.generate import generate, register_generator

@register_generator("test-slow", fields=lambda config: {"x": ((8, 8), np.float32)},
                    inputs=["x"], default_config={"scale": 2.0})
def sample(config, index, rng):
    calls.append(index)
    time.sleep(float(sys.argv[2]))  # not part of the config: the data does not depend on it
    return {"x": (config["scale"] * rng.standard_normal((8, 8))).astype(np.float32)}

calls = []
generate("test-slow", sys.argv[1], samples=60, progress=False)
print(len(calls))
"""


def test_killed_generation_resumes_to_identical_bytes(tmp_path):
    script = tmp_path / "slow.py"
    script.write_text(_SLOW_SCRIPT)
    out = tmp_path / "slow.h5"

    def run(delay, target=out):
        command = [sys.executable, str(script), str(target), str(delay)]
        return subprocess.Popen(command, stdout=subprocess.PIPE, text=True)

    process = run(0.05)
    written = 0
    deadline = time.monotonic() + 60
    try:
        while written < 10 and time.monotonic() < deadline:
            time.sleep(0.1)
            assert not out.exists()
            if partial_path(out).exists():
                # The writer holds the file; read its marks without HDF5's file lock.
                try:
                    with h5py.File(partial_path(out), "r", locking=False) as file:
                        written = int(file["_written"][...].sum())
                except (OSError, KeyError):  # created, marks not written yet
                    written = 0
            assert process.poll() is None, "the generation ended before it was killed"
    finally:
        process.send_signal(signal.SIGKILL)
        process.communicate()
    assert 10 <= written < 60
    assert not out.exists()

    rerun = run(0.01)
    computed, _ = rerun.communicate(timeout=120)
    assert rerun.returncode == 0
    assert 0 < int(computed) <= 60 - written  # only the missing samples
    verify_store(out)
    whole = run(0.0, tmp_path / "whole.h5")
    assert whole.communicate(timeout=120)[0].strip() == "60"
    assert sha256(out) == sha256(tmp_path / "whole.h5")


@pytest.mark.parametrize(
    "signum",
    [signal.SIGTERM, pytest.param(signal.SIGINT, marks=pytest.mark.slow)],
    ids=["sigterm", "ctrl-c"],
)
def test_interrupted_pool_shuts_down_cleanly(tmp_path, signum):
    # A killed multi-worker generation stops its pool: one line, no worker tracebacks, no
    # "leaked semaphore objects" from the resource tracker, and a resumable partial file.
    # Ctrl-C reaches the whole process group (the workers too); SIGTERM the parent only.
    out = tmp_path / "fields.h5"
    command = [sys.executable, "-m", "physnet.cli", "generate", "gaussian-fields"]
    command += ["--out", str(out), "--samples", "200000", "--workers", "2", "--no-progress"]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 60
    written = 0
    try:
        while written == 0 and time.monotonic() < deadline:
            time.sleep(0.1)
            assert process.poll() is None, "the generation ended before it was interrupted"
            if partial_path(out).exists():
                try:
                    with h5py.File(partial_path(out), "r", locking=False) as file:
                        written = int(file["_written"][...].sum())
                except (OSError, KeyError):  # created, marks not written yet
                    written = 0
        if signum == signal.SIGINT:
            os.killpg(process.pid, signum)
        else:
            process.send_signal(signum)
        _, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 130, stderr
    assert stderr.strip() == "physnet generate: interrupted"
    assert partial_path(out).exists() and not out.exists()


# --- built-in generators ------------------------------------------------------------------


def _periodic_screened_laplacian(u, screening):
    n = u.shape[0]
    laplacian = sum(np.roll(u, 1, axis) + np.roll(u, -1, axis) - 2 * u for axis in range(u.ndim))
    return screening**2 * u - laplacian * n**2


@pytest.mark.parametrize("ndim", [2, 3])
def test_gaussian_fields_solve_the_discrete_screened_poisson_equation(tmp_path, ndim):
    overrides = {"size": 16, "ndim": ndim, "length_scale": 0.1, "screening": 5.0}
    path = generate(
        "gaussian-fields", tmp_path / "g.h5", samples=8, overrides=overrides, progress=False
    )
    dataset = StoreDataset(path)
    variances = []
    for index in range(len(dataset)):
        sample = dataset[index]
        forcing = sample["forcing"].astype(np.float64)
        solution = sample["solution"].astype(np.float64)
        assert forcing.shape == (16,) * ndim
        residual = _periodic_screened_laplacian(solution, 5.0) - forcing
        assert np.linalg.norm(residual) <= 1e-4 * np.linalg.norm(forcing)
        variances.append(forcing.var() + forcing.mean() ** 2)
    assert 0.6 < np.mean(variances) < 1.4


def test_poisson_scenes_match_make_scene_and_a_direct_solve(tmp_path):
    overrides = {"size": 12, "ndim": 2, "names": ["boxes", "blob"]}
    path = generate(
        "poisson-scenes", tmp_path / "p.h5", samples=3, seed=4, overrides=overrides, progress=False
    )
    dataset = StoreDataset(path)
    assert dataset.inputs == ("rhs",) and dataset.targets == ("solution",)
    for index in range(3):
        sample = dataset[index]
        rng = np.random.default_rng(np.random.SeedSequence(4, spawn_key=(index,)))
        scene = make_scene(
            overrides["names"][index % 2], 12, ndim=2, seed=int(rng.integers(2**63 - 1))
        )
        np.testing.assert_array_equal(sample["flags"], scene.flags)
        np.testing.assert_array_equal(sample["rhs"], scene.rhs.astype(np.float32))
        A = scene.operator()
        reference = A.scatter(scipy.sparse.linalg.spsolve(A.to_csr().tocsc(), scene.rhs_vector()))
        error = np.linalg.norm(sample["solution"] - reference) / np.linalg.norm(reference)
        assert error < 1e-6
        assert sample["solution"].dtype == np.float32
        assert np.all(sample["solution"][scene.flags != 0] == 0)


def test_poisson_scenes_are_reproducible_across_processes(tmp_path):
    options = {"samples": 6, "overrides": {"size": 12}, "progress": False}
    serial = generate("poisson-scenes", tmp_path / "serial.h5", workers=1, **options)
    parallel = generate("poisson-scenes", tmp_path / "parallel.h5", workers=2, **options)
    assert sha256(serial) == sha256(parallel)
