"""The reconstruction pipeline: arrays and files, batch independence, sharding by rank,
conditioned models, errors."""

from __future__ import annotations

import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")
h5py = pytest.importorskip("h5py")

import physnet.nn  # noqa: E402
from physnet._io import FileFormatError, shard_path  # noqa: E402
from physnet.datasets.generate import generate  # noqa: E402
from physnet.operators import NearFieldMIMO  # noqa: E402
from physnet.reconstruction import (  # noqa: E402
    Reconstructor,
    merge_shards,
    reconstruct,
    reconstruct_file,
)

GRID = (8, 8, 12)
SMALL = {"n_frequencies": 3, "grid_shape": list(GRID)}


def tiny_model(input="magnitude"):
    torch.manual_seed(0)
    model = physnet.nn.create(
        "deep2s", input=input, backbone_config={"channels": [4, 8], "head_channels": 4}
    )
    model.train()
    model(torch.rand(4, 2 if input == "complex" else 1, *GRID))  # non-trivial BN statistics
    return model.eval()


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    path = tmp_path_factory.mktemp("radar") / "radar.h5"
    return generate("radar-mimo", path, samples=5, progress=False, overrides=SMALL)


@pytest.fixture
def measurements(rng):
    A = NearFieldMIMO(n_frequencies=3, grid_shape=GRID)
    x = rng.uniform(size=(5, A.shape[1])) * np.exp(2j * np.pi * rng.uniform(size=(5, A.shape[1])))
    return A, (A @ x.astype(np.complex64))


def test_matches_the_stages_done_by_hand(measurements):
    A, y = measurements
    model = tiny_model()
    volumes = reconstruct(y, model, operator=A, batch_size=2)
    assert volumes.shape == (5, *GRID) and volumes.dtype == np.float32
    back = np.abs(A.H @ y).reshape(5, 1, *GRID)
    back /= back.reshape(5, -1).max(axis=1).reshape(5, 1, 1, 1, 1)
    with torch.no_grad():
        expected = model.backbone(torch.from_numpy(back.astype(np.float32)))[:, 0].numpy()
    np.testing.assert_allclose(volumes, expected, rtol=1e-5, atol=1e-6)
    one = reconstruct(y[0], model, operator=A, batch_size=2)
    assert one.shape == GRID


@pytest.mark.parametrize("batch_size", [3, 8])
@pytest.mark.parametrize("input_kind", ["magnitude", "complex"])
def test_a_volume_does_not_depend_on_its_batch(measurements, input_kind, batch_size):
    A, y = measurements
    reconstructor = Reconstructor(
        tiny_model(input_kind), operator=A, batch_size=batch_size, progress=False
    )
    alone = reconstructor(y[2])
    with_mates = reconstructor(y[[0, 1, 2]])[2]
    other_mates = reconstructor(np.stack([y[2], 1e3 * y[4], y[3]]))[0]
    np.testing.assert_array_equal(alone, with_mates)
    np.testing.assert_array_equal(alone, other_mates)


def test_reconstruct_file(store, tmp_path):
    model = tiny_model()
    checkpoint = tmp_path / "model.safetensors"
    physnet.nn.save(model, checkpoint)
    out = tmp_path / "volumes.h5"
    report = reconstruct_file(store, out, checkpoint, batch_size=2, progress=False)
    assert report["volumes"] == 5 and report["grid_shape"] == list(GRID)
    assert os.listdir(tmp_path) == sorted(os.listdir(tmp_path)) and len(os.listdir(tmp_path)) == 2
    with h5py.File(store, "r") as f:
        y = f["measurements"][...]
    with h5py.File(out, "r") as f:
        volumes = f["reconstruction"][...]
        assert f.attrs["n_frequencies"] == 3 and list(f.attrs["grid_shape"]) == list(GRID)
    A = NearFieldMIMO(n_frequencies=3, grid_shape=GRID)
    np.testing.assert_array_equal(volumes, reconstruct(y, checkpoint, operator=A, batch_size=2))


def test_real_pairs_and_any_hdf5(tmp_path, measurements):
    A, y = measurements
    source = tmp_path / "pairs.h5"
    with h5py.File(source, "w") as f:
        f["echo"] = np.stack([y.real, y.imag], axis=-1)
    model = tiny_model()
    out = tmp_path / "out.h5"
    reconstruct_file(source, out, model, field="echo", operator=A, progress=False)
    with h5py.File(out, "r") as f:
        np.testing.assert_array_equal(
            f["reconstruction"][...], reconstruct(y, model, operator=A, batch_size=8)
        )


def test_errors(tmp_path, store, measurements):
    A, y = measurements
    model = tiny_model()
    with pytest.raises(FileFormatError, match="no field 'echo'"):
        reconstruct_file(store, tmp_path / "o.h5", model, field="echo")
    with pytest.raises(FileFormatError, match="no such file"):
        reconstruct_file(tmp_path / "missing.h5", tmp_path / "o.h5", model)
    with pytest.raises(ValueError, match="the operator expects"):
        reconstruct(y[:, :2], model, operator=A)
    with pytest.raises(ValueError, match="reference cross array"):
        reconstruct(np.ones((1, 3, 4, 5), complex), model)
    with pytest.raises(ValueError, match="batch_size"):
        Reconstructor(model, batch_size=0)
    with pytest.raises(ValueError, match="expected complex"):
        reconstruct(np.ones((1, 3, 12, 13)), model)
    assert not (tmp_path / "o.h5").exists()


def test_pretrained_deep2s_loads():
    from physnet.pretrained import available

    if "radar-deep2s" not in available():
        pytest.skip("radar-deep2s is not installed")
    model = physnet.nn.load("radar-deep2s")
    assert model.name == "deep2s" and not model.training
    assert model.config["conditions"] == ["n_frequencies"]
    assert model.config["trained_n_frequencies"] == [5, 10, 15, 20, 30]
    n_frequencies = torch.full((2, 1, 9, 9, 17), 15.0)
    channels = 2 if model.input == "complex" else 1
    with torch.no_grad():
        output = model(torch.cat([torch.rand(2, channels, 9, 9, 17), n_frequencies], dim=1))
    assert output.shape == (2, 1, 9, 9, 17) and float(output.min()) >= 0


@pytest.mark.slow
@pytest.mark.parametrize(("n_frequencies", "gain_db"), [(15, 2.0), (5, 0.5)])
def test_pretrained_deep2s_beats_backprojection_and_zeros(n_frequencies, gain_db):
    """The shipped model on fresh 30 dB scenes (a seed training never used)."""
    from physnet.datasets.generate import get_generator, sample_of
    from physnet.metrics import psnr, ssim
    from physnet.pretrained import available

    if "radar-deep2s" not in available():
        pytest.skip("radar-deep2s is not installed")
    generator = get_generator("radar-mimo")
    config = generator.check_config({"n_frequencies": n_frequencies})
    samples = [sample_of(generator, config, 777, i) for i in range(8)]
    y = np.stack([s["measurements"] for s in samples])
    truth = np.stack([s["target"] for s in samples])
    volumes = reconstruct(y, "radar-deep2s", batch_size=8)
    back = np.abs(NearFieldMIMO(n_frequencies=n_frequencies).H @ y).reshape(truth.shape)
    back /= back.max(axis=(1, 2, 3), keepdims=True)
    zeros = np.zeros_like(truth)
    assert np.mean(psnr(volumes, truth)) > np.mean(psnr(back, truth)) + 3.0
    assert np.mean(psnr(volumes, truth)) > np.mean(psnr(zeros, truth)) + gain_db
    assert np.mean(ssim(volumes, truth)) > np.mean(ssim(zeros, truth))


def test_pretrained_deep2s_matches_a_float64_rerun():
    """The float32 pipeline (batched adjoint, channels-last network with folded batch
    norms) against the same stages in float64, on fresh N_f = 15 scenes at 30 dB."""
    from physnet.datasets.generate import get_generator, sample_of
    from physnet.pretrained import available

    if "radar-deep2s" not in available():
        pytest.skip("radar-deep2s is not installed")
    generator = get_generator("radar-mimo")
    config = generator.check_config({"n_frequencies": 15})
    y = np.stack([sample_of(generator, config, 778, i)["measurements"] for i in range(2)])
    volumes = reconstruct(y, "radar-deep2s", batch_size=8)  # two volumes, six of padding
    A = NearFieldMIMO(n_frequencies=15, dtype=np.complex128)
    back = (A.H @ y.astype(np.complex128)).reshape(2, 1, *A.grid_shape)
    model = physnet.nn.load("radar-deep2s").double()
    parts = [back.real, back.imag] if model.input == "complex" else [np.abs(back)]
    x = torch.from_numpy(np.concatenate([*parts, np.full(back.shape, 15.0)], axis=1))
    with torch.no_grad():
        expected = model(x)[:, 0].numpy()
    assert expected.max() > 0.5
    np.testing.assert_allclose(volumes, expected, rtol=0, atol=1e-4 * expected.max())


# --- sharding by rank ----------------------------------------------------------------------
@pytest.fixture
def checkpoint(tmp_path):
    path = tmp_path / "model.safetensors"
    physnet.nn.save(tiny_model(), path)
    return path


def test_sharded_reconstruction_merges_to_the_single_process_file(
    store, checkpoint, tmp_path, monkeypatch
):
    single = tmp_path / "single.h5"
    reconstruct_file(store, single, checkpoint, batch_size=2, progress=False)
    out = tmp_path / "sharded.h5"
    reports = [
        reconstruct_file(store, out, checkpoint, batch_size=2, progress=False, rank=0, world_size=2)
    ]
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    reports.append(reconstruct_file(store, out, checkpoint, batch_size=2, progress=False))
    assert [(r["rank"], r["world_size"], r["volumes"]) for r in reports] == [(0, 2, 3), (1, 2, 2)]
    assert reports[1]["out"] == os.fspath(shard_path(out, 1, 2)) and not out.exists()
    summary = merge_shards(out, 2)
    assert summary["volumes"] == 5 and summary["n_frequencies"] == 3
    assert not shard_path(out, 0, 2).exists() and not shard_path(out, 1, 2).exists()
    with h5py.File(single, "r") as expected, h5py.File(out, "r") as merged:
        a, b = expected["reconstruction"], merged["reconstruction"]
        assert a.shape == b.shape and a.dtype == b.dtype and a.chunks == b.chunks
        assert a[...].tobytes() == b[...].tobytes()
        assert dict(merged.attrs).keys() == dict(expected.attrs).keys()
        for name, value in expected.attrs.items():
            np.testing.assert_array_equal(merged.attrs[name], value)


def test_sharding_errors(store, checkpoint, tmp_path, monkeypatch):
    out = tmp_path / "v.h5"
    options = {"batch_size": 2, "progress": False}
    with pytest.raises(ValueError, match="rank=1 is given without world_size"):
        reconstruct_file(store, out, checkpoint, rank=1, **options)
    with pytest.raises(
        ValueError, match=r"reconstruct_file: rank: 2, expected an integer in \[0, 1\]"
    ):
        reconstruct_file(store, out, checkpoint, rank=2, world_size=2, **options)
    with pytest.raises(ValueError, match="world_size=6 exceeds the 5 volumes"):
        reconstruct_file(store, out, checkpoint, rank=0, world_size=6, **options)
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(ValueError, match="WORLD_SIZE='two', expected an integer"):
        reconstruct_file(store, out, checkpoint, rank=0, **options)
    monkeypatch.delenv("WORLD_SIZE")
    reconstruct_file(store, out, checkpoint, rank=0, world_size=2, **options)
    with pytest.raises(FileNotFoundError, match=r"missing shard\(s\).*shard-1-of-2"):
        merge_shards(out, 2)
    reconstruct_file(store, out, checkpoint, rank=1, world_size=3, **options)
    shard_path(out, 1, 3).rename(shard_path(out, 1, 2))
    with pytest.raises(FileFormatError, match="is shard 1 of 3, expected shard 1 of 2"):
        merge_shards(out, 2)
    with pytest.raises(ValueError, match="world_size=0"):
        merge_shards(out, 0)
    assert not out.exists() and shard_path(out, 0, 2).exists()


# --- conditioned models --------------------------------------------------------------------
class Recorder(torch.nn.Module):
    """A stand-in for a conditioned Deep2S: records its input, returns its first channel."""

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.scale = torch.nn.Parameter(torch.ones(()))
        self.inputs = []

    def forward(self, x):
        expected = (2 if self.config["input"] == "complex" else 1) + len(self.config["conditions"])
        assert x.shape[1] == expected
        self.inputs.append(x.clone())
        return self.scale * x[:, :1]


@pytest.mark.parametrize("input_kind", ["magnitude", "complex"])
def test_condition_channels_hold_the_raw_values(measurements, input_kind):
    A, y = measurements
    model = Recorder({"input": input_kind, "conditions": ["snr_db", "n_frequencies"]})
    volumes = reconstruct(y, model, operator=A, batch_size=4, snr_db=12.5)
    assert volumes.shape == (5, *GRID)
    channels = 2 if input_kind == "complex" else 1
    for x in model.inputs:
        assert x.shape == (4, channels + 2, *GRID)
        assert torch.all(x[:, channels] == 12.5) and torch.all(x[:, channels + 1] == 3.0)
    back = (A.H @ y[:4])[0]  # the pipeline's first batch (large batches round differently)
    first = model.inputs[0][0, 0].numpy()
    expected = back.real if input_kind == "complex" else np.abs(back)
    np.testing.assert_array_equal(first, expected.reshape(GRID).astype(np.float32))


def test_conditioned_deep2s_end_to_end(measurements, store, tmp_path):
    A, y = measurements
    torch.manual_seed(0)
    model = physnet.nn.create(
        "deep2s",
        conditions=["n_frequencies"],
        trained_n_frequencies=[3, 15],
        backbone_config={"channels": [4], "head_channels": 4},
    ).eval()
    volumes = reconstruct(y, model, operator=A, batch_size=2)
    assert volumes.shape == (5, *GRID) and np.all(np.isfinite(volumes))
    report = reconstruct_file(store, tmp_path / "v.h5", model, batch_size=2, progress=False)
    assert report["conditions"] == {"n_frequencies": 3.0} and report["n_frequencies"] == 3
    assert report["model"] == "deep2s"
    with h5py.File(tmp_path / "v.h5", "r") as f:
        assert f.attrs["conditions"] == '{"n_frequencies": 3.0}'


def test_condition_errors_and_the_training_warning(measurements):
    A, y = measurements
    with pytest.raises(ValueError, match="conditions on snr_db; pass snr_db="):
        Reconstructor(Recorder({"input": "magnitude", "conditions": ["snr_db"]}), operator=A)
    with pytest.raises(ValueError, match=r"conditions on \['depth'\]; supported"):
        Reconstructor(Recorder({"input": "magnitude", "conditions": ["depth"]}))
    with pytest.raises(ValueError, match="snr_db=nan"):
        Reconstructor(tiny_model(), snr_db=float("nan"))
    conditioned = Recorder({"input": "magnitude", "conditions": ["n_frequencies"]})
    with pytest.raises(ValueError, match="no operator is known yet"):
        Reconstructor(conditioned).network(np.ones((1, *GRID), np.complex64))
    model = Recorder(
        {"input": "magnitude", "conditions": ["n_frequencies"], "trained_n_frequencies": [15]}
    )
    reconstructor = Reconstructor(model, operator=A, batch_size=2, progress=False)
    with pytest.warns(UserWarning, match=r"trained at N_f in \[15\].*N_f = 3") as record:
        volumes = reconstructor(y)
        reconstructor(y[:1])
    assert len(record) == 1 and volumes.shape == (5, *GRID)
    unconditioned = Reconstructor(tiny_model(), operator=A, snr_db=30.0, progress=False)
    assert unconditioned.condition_values() == {} and unconditioned(y[0]).shape == GRID
