"""Augmentation by exact grid symmetries: the transforms, the per-sample draw, the Trainer."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from training_data import Killed, KilledAfter, Smoothing, make_model

from physnet.training import Trainer
from physnet.training.augment import (
    DIHEDRAL_2D,
    apply_symmetry,
    augment_batch,
    check_symmetries,
    inverse_symmetry,
)

NUMPY = {  # the same maps written with NumPy on (batch, channels, *grid)
    "flip0": lambda a: a[:, :, ::-1],
    "flip2": lambda a: a[:, :, :, :, ::-1],
    "rot180_01": lambda a: a[:, :, ::-1, ::-1],
    "transpose_01": lambda a: np.swapaxes(a, 2, 3),
    "antitranspose_01": lambda a: np.swapaxes(a, 2, 3)[:, :, ::-1, ::-1],
    "transpose_12": lambda a: np.swapaxes(a, 3, 4),
}


@pytest.mark.parametrize("name", sorted(NUMPY))
def test_symmetries_match_numpy_and_are_involutions(name):
    x = torch.randn(2, 3, 4, 4, 4, dtype=torch.float64)
    y = apply_symmetry(x, name)
    np.testing.assert_array_equal(y.numpy(), NUMPY[name](x.numpy()))
    assert torch.equal(apply_symmetry(y, name), x)


@pytest.mark.parametrize(("name", "turns"), [("rot90_01", 1), ("rot270_01", 3), ("rot90_12", 1)])
def test_quarter_turns_match_numpy_and_invert_each_other(name, turns):
    x = torch.randn(2, 3, 4, 4, 4, dtype=torch.float64)
    axes = tuple(2 + int(a) for a in name[-2:])
    y = apply_symmetry(x, name)
    np.testing.assert_array_equal(y.numpy(), np.rot90(x.numpy(), turns, axes=axes))
    assert inverse_symmetry(name) != name
    assert torch.equal(apply_symmetry(y, inverse_symmetry(name)), x)
    with pytest.raises(ValueError, match="equal sizes"):
        check_symmetries([name], (4, 5, 5) if axes == (2, 3) else (4, 4, 5))


def test_dihedral_2d_is_the_eight_symmetries_of_the_square():
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    images = {tuple(apply_symmetry(x, name).flatten().tolist()) for name in DIHEDRAL_2D}
    square = x[0, 0].numpy()
    expected = {
        tuple(np.rot90(a, k).flatten().tolist()) for a in (square, square.T) for k in range(4)
    }
    assert images | {tuple(x.flatten().tolist())} == expected and len(images) == 7


def test_antitranspose_is_the_transpose_across_the_other_diagonal():
    x = torch.arange(9.0).reshape(1, 1, 3, 3)
    assert apply_symmetry(x, "antitranspose_01")[0, 0].tolist() == [
        [8.0, 5.0, 2.0],
        [7.0, 4.0, 1.0],
        [6.0, 3.0, 0.0],
    ]


def test_augment_batch_maps_inputs_and_targets_of_a_sample_alike():
    names = ["rot180_01", "transpose_01", "antitranspose_01"]
    x = torch.randn(64, 2, 5, 5, 3)
    y = 2 * x[:, :1] + 1
    generator = torch.Generator().manual_seed(3)
    ax, ay = augment_batch((x, y), names, generator)
    seen = set()
    for b in range(len(x)):
        candidates = [x[b : b + 1]] + [apply_symmetry(x[b : b + 1], n) for n in names]
        matches = [k for k, c in enumerate(candidates) if torch.equal(ax[b : b + 1], c)]
        assert matches, b
        seen.add(matches[0])
        assert torch.equal(ay[b], 2 * ax[b, :1] + 1)  # the target follows its input
    assert seen == {0, 1, 2, 3}  # identity and all three drawn among 64 samples
    again = augment_batch((x, y), names, torch.Generator().manual_seed(3))
    assert torch.equal(again[0], ax) and torch.equal(again[1], ay)
    assert augment_batch((x, y), [], generator)[0] is x  # nothing to do: the same tensors


@pytest.mark.parametrize(
    ("names", "grid", "message"),
    [
        (["mirror"], (4, 4), "unknown symmetry 'mirror'"),
        (["rot180_00"], (4, 4), "names the same axis twice"),
        (["flip2"], (4, 4), "acts on grid axis 2, but the samples have 2 grid axes"),
        (["transpose_01"], (4, 5), "swaps grid axes of sizes 4 and 5"),
    ],
)
def test_bad_symmetries_are_refused(names, grid, message):
    with pytest.raises(ValueError, match=message):
        check_symmetries(names, grid)


def test_trainer_refuses_unknown_or_unfit_symmetries():
    with pytest.raises(ValueError, match="unknown symmetry 'spin'"):
        Trainer(make_model(), augment=["spin"], progress=False)
    trainer = Trainer(make_model(), epochs=1, augment=["rot180_01"], progress=False)
    with pytest.raises(ValueError, match="acts on grid axis 1, but the samples have 1"):
        trainer.fit(Smoothing(4))


class _Recording(torch.nn.Module):
    """Wraps a model and records the training inputs it sees."""

    def __init__(self, model):
        super().__init__()
        self.model, self.seen = model, []

    def forward(self, x):
        if self.training:
            self.seen.append(x.detach().clone())
        return self.model(x)


def test_the_trainer_feeds_flipped_samples_and_unflipped_validation():
    data = Smoothing(32, seed=4)
    model = _Recording(make_model())
    Trainer(model, epochs=1, batch_size=8, augment=["flip0"], progress=False).fit(data)
    seen = torch.cat(model.seen)[:, 0].numpy()
    originals = {row.tobytes() for row in data.a}
    flipped = {row[::-1].copy().tobytes() for row in data.a}
    kinds = [
        "original" if row.tobytes() in originals else "flipped" if row.tobytes() in flipped else "?"
        for row in seen
    ]
    assert "?" not in kinds and 8 <= kinds.count("flipped") <= 24  # about half of 32


def test_augmented_training_resumes_bit_exactly(tmp_path):
    train, val = Smoothing(20, seed=1), Smoothing(6, seed=2)
    options = {"epochs": 3, "batch_size": 4, "lr": 1e-2, "progress": False, "augment": ["flip0"]}
    straight = Trainer(make_model(), out_dir=tmp_path / "straight", **options)
    straight.fit(train, val)
    killed = Trainer(make_model(), loss=KilledAfter(7), out_dir=tmp_path / "run", **options)
    with pytest.raises(Killed):
        killed.fit(train, val)
    resumed_model = make_model(seed=9)
    Trainer(resumed_model, out_dir=tmp_path / "run", **options).fit(train, val, resume=True)
    for name, parameter in straight.model.state_dict().items():
        assert torch.equal(parameter, resumed_model.state_dict()[name]), name
    unaugmented = Trainer(make_model(), out_dir=tmp_path / "plain", **{**options, "augment": ()})
    unaugmented.fit(train, val)
    assert not torch.equal(_first(unaugmented.model), _first(straight.model))  # it mattered
    with pytest.raises(ValueError, match=r"augment=\['flip0'\] \(now \[\]\)"):
        Trainer(make_model(), out_dir=tmp_path / "run", **{**options, "augment": ()}).fit(
            train, val, resume=True
        )


def _first(model):
    return next(iter(model.state_dict().values()))


def test_scalar_conditions_are_left_alone():
    """A scalar field (a condition, stacked as a constant channel) passes the symmetry
    check and stays constant under augmentation."""
    from physnet.datasets._base import FieldDataset
    from physnet.nn import create

    class WithCondition(FieldDataset):
        fields, inputs, targets = ("a", "level", "u"), ("a", "level"), ("u",)

        def __init__(self, n):
            rng = np.random.default_rng(0)
            self.a = rng.standard_normal((n, 6, 6)).astype(np.float32)
            self.attrs = {}

        def __len__(self):
            return len(self.a)

        def _sample(self, i):
            return {"a": self.a[i], "level": np.float32(i), "u": 2 * self.a[i]}

    model = _Recording(create("conv-net", in_channels=2, hidden_channels=4, n_layers=1))
    options = {"epochs": 1, "batch_size": 4, "progress": False}
    Trainer(model, augment=["rot180_01", "transpose_01"], **options).fit(WithCondition(8))
    seen = torch.cat(model.seen)
    assert torch.equal(seen[:, 1], seen[:, 1, :1, :1].expand_as(seen[:, 1]))
