"""Small in-memory datasets for the training tests (imported by the tests and the DDP script)."""

from __future__ import annotations

import numpy as np

from physnet.datasets._base import FieldDataset


class Smoothing(FieldDataset):
    """``u`` = a three-point average of ``a`` on a periodic 1D grid: a linear map a
    small convolutional network learns in a few epochs."""

    fields = ("a", "u")
    inputs = ("a",)
    targets = ("u",)

    def __init__(self, n_samples: int, *, seed: int = 0, grid: int = 16) -> None:
        rng = np.random.default_rng(seed)
        self.a = rng.standard_normal((n_samples, grid)).astype(np.float32)
        self.u = (np.roll(self.a, 1, axis=1) + self.a + np.roll(self.a, -1, axis=1)) / 3
        self.u = self.u + 0.5
        self.attrs = {"generator": "test-smoothing"}

    def __len__(self) -> int:
        return len(self.a)

    def _sample(self, index: int) -> dict[str, np.ndarray]:
        return {"a": self.a[index], "u": self.u[index]}


MODEL = {"in_channels": 1, "out_channels": 1, "hidden_channels": 8, "n_layers": 1, "ndim": 1}


def make_model(seed: int = 0):
    import torch

    from physnet.nn import create

    torch.manual_seed(seed)
    return create("conv-net", **MODEL)


class Killed(Exception):
    """Raised by :class:`KilledAfter`: a training run stopped from outside."""


class KilledAfter:
    """The relative L2 loss; raises :class:`Killed` after ``calls`` calls, like a killed
    process (for the resume tests)."""

    def __init__(self, calls: int) -> None:
        self.calls, self.count = calls, 0

    def __call__(self, prediction, target):
        from physnet.training import relative_lp

        self.count += 1
        if self.count > self.calls:
            raise Killed
        return relative_lp(prediction, target)
