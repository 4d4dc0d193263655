"""Checkpoints: safetensors round trips, metadata, errors, no pickles, pretrained names."""

from __future__ import annotations

import ast
import hashlib
import json
import os
from pathlib import Path

import pytest
import safetensors.torch
import torch

import physnet
import physnet.pretrained
from physnet._io import FileFormatError
from physnet.nn import Model, create, load, read_metadata, save

PACKAGE = Path(physnet.__file__).parent


class _Tied(Model, name="test-checkpoint-tied"):
    """Tied weights (one Parameter in two modules) and buffers viewing one storage."""

    def __init__(self, size=4):
        super().__init__()
        self.encoder = torch.nn.Linear(size, size, bias=False)
        self.decoder = torch.nn.Linear(size, size, bias=False)
        self.decoder.weight = self.encoder.weight
        base = torch.arange(2.0 * size)
        self.register_buffer("low", base[:size])
        self.register_buffer("high", base[size:])

    def forward(self, x):
        return self.decoder(self.encoder(x)) + self.low - self.high


class _Other(Model, name="test-checkpoint-other"):
    def __init__(self, size=4):
        super().__init__()
        self.linear = torch.nn.Linear(size, size)

    def forward(self, x):
        return self.linear(x)


@pytest.fixture
def model():
    return create("conv-net", in_channels=2, out_channels=1, hidden_channels=8, n_layers=2)


@pytest.fixture
def saved(tmp_path, model):
    path = tmp_path / "model.safetensors"
    save(model, path)
    return path


def _rewrite(source, target, *, metadata=None, tensors=None):
    """Write a copy of checkpoint ``source`` with metadata entries or tensors replaced.

    The copy has no data checksum, like a checkpoint of an older physnet.
    """
    header = read_metadata(source)
    header.pop("physnet_data_sha256")
    header["config"] = json.dumps(header["config"])
    header.update(metadata or {})
    weights = safetensors.torch.load_file(source)
    weights.update(tensors or {})
    safetensors.torch.save_file(weights, target, metadata=header)
    return target


# -- round trips -------------------------------------------------------------------------


def test_round_trip_gives_identical_weights_and_outputs(model, saved):
    restored = load(saved)
    assert type(restored) is type(model)
    assert restored.name == "conv-net"
    assert restored.config == model.config
    assert not restored.training
    original, loaded = model.state_dict(), restored.state_dict()
    assert original.keys() == loaded.keys()
    for key in original:
        assert torch.equal(original[key], loaded[key]), key
    x = torch.randn(3, 2, 12, 12)
    with torch.no_grad():
        assert torch.equal(restored(x), model.eval()(x))


def test_round_trip_keeps_dtype_3d(tmp_path):
    model = create("conv-net", ndim=3, hidden_channels=4).double()
    save(model, tmp_path / "m.safetensors")
    restored = load(tmp_path / "m.safetensors")
    assert all(p.dtype == torch.float64 for p in restored.parameters())
    x = torch.randn(1, 1, 5, 6, 7, dtype=torch.float64)
    with torch.no_grad():
        assert torch.equal(restored(x), model.eval()(x))


def test_tied_weights_are_stored_once_and_stay_tied(tmp_path):
    model = _Tied()
    with torch.no_grad():
        model.encoder.weight.normal_()
    path = tmp_path / "tied.safetensors"
    save(model, path)
    stored = safetensors.torch.load_file(path)
    assert sorted(stored) == ["encoder.weight", "high", "low"]
    assert read_metadata(path)["physnet_aliases"] == {"decoder.weight": "encoder.weight"}
    restored = load(path)
    assert restored.decoder.weight is restored.encoder.weight
    assert torch.equal(restored.high, torch.arange(4.0, 8.0))
    x = torch.randn(2, 4)
    with torch.no_grad():
        assert torch.equal(restored(x), model(x))


def test_wrapped_model_is_unwrapped(tmp_path, model):
    save(torch.nn.DataParallel(model), tmp_path / "m.safetensors")
    assert read_metadata(tmp_path / "m.safetensors")["physnet_model"] == "conv-net"


def test_load_to_device_and_string_path(saved):
    restored = load(str(saved), device="cpu")
    assert next(restored.parameters()).device.type == "cpu"


# -- metadata ----------------------------------------------------------------------------


def test_metadata_contents(tmp_path, model):
    path = tmp_path / "m.safetensors"
    save(model, path, metadata={"epoch": "12", "dataset": "darcy-64"})
    metadata = read_metadata(path)
    checksum = metadata.pop("physnet_data_sha256")
    assert len(checksum) == 64 and set(checksum) <= set("0123456789abcdef")
    assert metadata == {
        "physnet_model": "conv-net",
        "config": model.config,
        "physnet_version": physnet.__version__,
        "format_version": "1",
        "epoch": "12",
        "dataset": "darcy-64",
    }


def test_metadata_must_be_strings_and_not_reserved(tmp_path, model):
    with pytest.raises(TypeError, match="metadata entries must be strings"):
        save(model, tmp_path / "m.safetensors", metadata={"epoch": 12})
    with pytest.raises(ValueError, match="'config' is reserved"):
        save(model, tmp_path / "m.safetensors", metadata={"config": "{}"})
    assert not (tmp_path / "m.safetensors").exists()


def test_file_is_plain_safetensors_without_pickle(saved):
    data = saved.read_bytes()
    header_length = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + header_length].decode("utf-8"))
    assert header["__metadata__"]["physnet_model"] == "conv-net"
    assert json.loads(header["__metadata__"]["config"])["hidden_channels"] == 8
    assert b"\x80\x04" not in data[:2]  # no pickle protocol marker opening the file
    assert set(safetensors.torch.load_file(saved)) == set(load(saved).state_dict())


def test_save_refuses_unregistered_models(tmp_path):
    with pytest.raises(TypeError, match=r"expected a physnet\.nn\.Model, got Linear"):
        save(torch.nn.Linear(2, 2), tmp_path / "m.safetensors")

    class Unnamed(Model):
        pass

    with pytest.raises(ValueError, match="Unnamed is not a registered model"):
        save(Unnamed(), tmp_path / "m.safetensors")


def test_failed_save_leaves_previous_file(tmp_path, model, saved, monkeypatch):
    before = saved.read_bytes()

    def fail(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(safetensors.torch, "save", fail)
    with pytest.raises(KeyboardInterrupt):
        save(model, saved)
    assert saved.read_bytes() == before
    assert os.listdir(tmp_path) == ["model.safetensors"]


# -- mismatches --------------------------------------------------------------------------


def test_checkpoint_with_other_config_is_a_clear_error(tmp_path, saved):
    path = _rewrite(
        saved,
        tmp_path / "edited.safetensors",
        metadata={"config": json.dumps({"in_channels": 2, "hidden_channels": 16, "n_layers": 2})},
    )
    with pytest.raises(ValueError) as info:
        load(path)
    message = str(info.value)
    assert str(path) in message
    assert "the weights do not fit 'conv-net'" in message
    assert "lift.weight: shape (8, 2, 3, 3) in the file, (16, 2, 3, 3) in the model" in message
    assert "and " in message and "more" in message  # lists the first few only


def test_checkpoint_of_another_architecture_is_a_clear_error(tmp_path, saved):
    path = _rewrite(
        saved,
        tmp_path / "other.safetensors",
        metadata={"physnet_model": "test-checkpoint-other", "config": "{}"},
    )
    with pytest.raises(ValueError, match=r"linear.weight: missing from the file") as info:
        load(path)
    assert "in the file but not in the model" in str(info.value)
    assert str(path) in str(info.value)


def test_non_strict_ignores_missing_and_unexpected_keys(tmp_path, saved):
    extra = _rewrite(saved, tmp_path / "extra.safetensors", tensors={"unused": torch.zeros(2)})
    with pytest.raises(ValueError, match="unused: in the file but not in the model"):
        load(extra)
    assert load(extra, strict=False).config["hidden_channels"] == 8


def test_unknown_architecture_names_it_and_the_file(tmp_path, saved):
    path = _rewrite(saved, tmp_path / "x.safetensors", metadata={"physnet_model": "mystery-net"})
    with pytest.raises(ValueError, match=r"unknown model architecture 'mystery-net'") as info:
        load(path)
    assert str(path) in str(info.value)
    assert "conv-net" in str(info.value)


def test_config_unknown_to_constructor(tmp_path, saved):
    path = _rewrite(saved, tmp_path / "x.safetensors", metadata={"config": '{"width": 3}'})
    with pytest.raises(ValueError, match=r"saved config of 'conv-net' does not build .*'width'"):
        load(path)


# -- corrupt files -----------------------------------------------------------------------


def test_a_flipped_byte_in_the_weights_is_refused(tmp_path, saved):
    data = bytearray(saved.read_bytes())
    data[-3] ^= 0x10  # inside the last tensor's data
    damaged = tmp_path / "damaged.safetensors"
    damaged.write_bytes(bytes(data))
    with pytest.raises(FileFormatError, match="corrupt checkpoint: the SHA-256") as info:
        load(damaged)
    assert str(damaged) in str(info.value)
    assert len(str(info.value).splitlines()) == 1


def test_checkpoints_without_a_checksum_still_load(tmp_path, saved):
    older = _rewrite(saved, tmp_path / "older.safetensors")
    assert "physnet_data_sha256" not in read_metadata(older)
    assert load(older).config == load(saved).config


def test_the_checksum_name_is_reserved(tmp_path, model):
    with pytest.raises(ValueError, match="'physnet_data_sha256' is reserved"):
        save(model, tmp_path / "m.safetensors", metadata={"physnet_data_sha256": "0"})


@pytest.mark.parametrize("keep", [0, 5, 8, 40, -1], ids=["empty", "5B", "8B", "40B", "last-1B"])
def test_truncated_file_is_a_file_format_error(tmp_path, saved, keep):
    data = saved.read_bytes()
    path = tmp_path / "truncated.safetensors"
    path.write_bytes(data[:keep])
    with pytest.raises(FileFormatError, match=str(path)):
        load(path)


def test_other_files_are_file_format_errors(tmp_path):
    text = tmp_path / "notes.safetensors"
    text.write_text("these are not weights, just a long enough line of text")
    with pytest.raises(FileFormatError, match="not a safetensors file"):
        load(text)
    pickled = tmp_path / "model.pt"
    torch.save({"w": torch.zeros(2)}, pickled)
    with pytest.raises(FileFormatError, match=r"model\.pt: not a safetensors file"):
        load(pickled)
    with pytest.raises(FileFormatError, match="no such file"):
        load(tmp_path / "missing.safetensors")
    with pytest.raises(FileFormatError, match="no such file"):
        load("runs/missing.safetensors")


def test_bare_safetensors_weights_are_refused(tmp_path):
    path = tmp_path / "bare.safetensors"
    safetensors.torch.save_file({"w": torch.zeros(2)}, path)
    with pytest.raises(FileFormatError, match="without physnet metadata"):
        load(path)
    assert read_metadata(path) == {}


def test_newer_format_version_is_refused(tmp_path, saved):
    path = _rewrite(saved, tmp_path / "v2.safetensors", metadata={"format_version": "2"})
    with pytest.raises(FileFormatError, match="format_version '2'"):
        load(path)


# -- no pickle anywhere ------------------------------------------------------------------


def _unsafe_loads(source: str) -> list[int]:
    """Lines of ``torch.load`` calls without ``weights_only=True``, and of pickle loads."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
            continue
        owner = node.func.value
        owner_name = owner.id if isinstance(owner, ast.Name) else None
        if owner_name == "torch" and node.func.attr == "load":
            safe = any(
                k.arg == "weights_only"
                and isinstance(k.value, ast.Constant)
                and k.value.value is True
                for k in node.keywords
            )
            if not safe:
                lines.append(node.lineno)
        elif owner_name in ("pickle", "cloudpickle", "dill") and node.func.attr.startswith("load"):
            lines.append(node.lineno)
    return lines


def test_unsafe_load_detector():
    assert _unsafe_loads("torch.load(f)\ntorch.load(f, weights_only=False)\npickle.loads(b)") == [
        1,
        2,
        3,
    ]
    assert _unsafe_loads("torch.load(f, map_location='cpu', weights_only=True)") == []


def test_no_pickle_loading_in_physnet():
    offenders = [
        f"{path.relative_to(PACKAGE.parent)}:{line}"
        for path in sorted(PACKAGE.rglob("*.py"))
        for line in _unsafe_loads(path.read_text(encoding="utf-8"))
    ]
    assert not offenders, f"torch.load without weights_only=True, or pickle loads: {offenders}"


# -- pretrained names --------------------------------------------------------------------


@pytest.fixture
def manifest(tmp_path, monkeypatch, model):
    folder = tmp_path / "pretrained"
    folder.mkdir()
    save(model, folder / "tiny-conv.safetensors", metadata={"trained_on": "nothing"})
    digest = hashlib.sha256((folder / "tiny-conv.safetensors").read_bytes()).hexdigest()
    entries = [
        {
            "name": "tiny-conv",
            "file": "tiny-conv.safetensors",
            "sha256": digest,
            "card": "solvers/tiny-conv/card.md",
        }
    ]
    path = folder / "manifest.json"
    path.write_text(json.dumps(entries))
    monkeypatch.setattr(physnet.pretrained, "_MANIFEST", path)
    return folder


def test_shipped_manifest_is_valid():
    entries = json.loads((PACKAGE / "pretrained" / "manifest.json").read_text())
    assert isinstance(entries, list)
    for name in physnet.pretrained.available():
        assert physnet.pretrained.resolve(name).is_file()


def test_load_by_pretrained_name(manifest, model, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # no file named "tiny-conv" here
    assert physnet.pretrained.available() == ("tiny-conv",)
    assert physnet.pretrained.resolve("tiny-conv") == manifest / "tiny-conv.safetensors"
    assert physnet.pretrained.info("tiny-conv")["card"] == "solvers/tiny-conv/card.md"
    restored = load("tiny-conv")
    x = torch.randn(1, 2, 8, 8)
    with torch.no_grad():
        assert torch.equal(restored(x), model.eval()(x))
    assert read_metadata("tiny-conv")["trained_on"] == "nothing"


def test_corrupt_pretrained_file_is_detected(manifest):
    path = manifest / "tiny-conv.safetensors"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01  # one bit of one weight: still a readable safetensors file
    path.write_bytes(bytes(data))
    expected = json.loads((manifest / "manifest.json").read_text())[0]["sha256"]
    with pytest.raises(FileFormatError, match=f"corrupt weights .*expects {expected}"):
        load("tiny-conv")


def test_unknown_pretrained_name_lists_available(manifest):
    with pytest.raises(ValueError, match=r"unknown pretrained model 'huge-conv'.*: tiny-conv"):
        load("huge-conv")


def test_missing_pretrained_file(manifest):
    (manifest / "tiny-conv.safetensors").unlink()
    with pytest.raises(FileFormatError, match="are missing"):
        physnet.pretrained.resolve("tiny-conv")


def test_invalid_manifest(manifest):
    (manifest / "manifest.json").write_text('[{"name": "x"}]')
    with pytest.raises(FileFormatError, match="entry 0 must be an object with string fields"):
        physnet.pretrained.available()
