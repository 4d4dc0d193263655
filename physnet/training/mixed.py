"""Training on several grids at once: datasets whose samples differ in shape.

:class:`MixedResolution` concatenates datasets (for example the same PDE sampled at 64² and
at 128²) and records which samples share a shape; the :class:`~physnet.training.Trainer`
then draws every batch from one group (:class:`GroupedBatchSampler`), in an order that
depends only on the seed and the epoch, so runs stay reproducible and resumable. This is
how a resolution-consistent operator (``MgNO(reference_grid=...)``) learns to mean the same
map on every grid (``physnet train`` with ``[data] train = [file, file, ...]``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

__all__ = ["GroupedBatchSampler", "MixedResolution"]


class MixedResolution:
    """The samples of several datasets, one after the other, grouped by dataset.

    Parameters
    ----------
    datasets : sequence of datasets
        Each indexable with a length, like those :func:`physnet.datasets.open` returns.
        Within a dataset all samples must share their shapes (they are batched together);
        the field names (``inputs``, ``targets``) are those of the first.

    Raises
    ------
    ValueError
        For an empty list or an empty dataset.

    Examples
    --------
    >>> import torch
    >>> from physnet.training import MixedResolution
    >>> coarse = [{"x": torch.zeros(1, 8, 8)}] * 3
    >>> fine = [{"x": torch.zeros(1, 16, 16)}] * 2
    >>> data = MixedResolution([coarse, fine])
    >>> len(data), data.groups, tuple(data[4]["x"].shape)
    (5, [(0, 3), (3, 5)], (1, 16, 16))
    """

    def __init__(self, datasets: Sequence[Any]) -> None:
        self.datasets = list(datasets)
        if not self.datasets:
            raise ValueError("MixedResolution: needs at least one dataset")
        self.groups: list[tuple[int, int]] = []
        start = 0
        for index, dataset in enumerate(self.datasets):
            if len(dataset) == 0:
                raise ValueError(f"MixedResolution: dataset {index} has no samples")
            self.groups.append((start, start + len(dataset)))
            start += len(dataset)
        first = self.datasets[0]
        self.inputs = getattr(first, "inputs", ())
        self.targets = getattr(first, "targets", ())

    def __len__(self) -> int:
        return self.groups[-1][1]

    def __getitem__(self, index: int) -> Any:
        index = int(index)
        if not -len(self) <= index < len(self):
            raise IndexError(f"MixedResolution: index {index} out of range for {len(self)}")
        index %= len(self)
        for dataset, (start, stop) in zip(self.datasets, self.groups, strict=True):
            if index < stop:
                return dataset[index - start]
        raise AssertionError("unreachable")  # pragma: no cover

    def __repr__(self) -> str:
        sizes = ", ".join(str(stop - start) for start, stop in self.groups)
        return f"MixedResolution({len(self.datasets)} datasets: {sizes} samples)"


class GroupedBatchSampler:
    """Batches of indices that never mix groups, shuffled per epoch, split over ranks.

    Each epoch permutes every group's indices, cuts them into batches of ``batch_size``
    (the last of a group may be smaller) and, with ``shuffle``, permutes the batches; all
    from a generator seeded by ``(seed, epoch)``. Rank ``r`` of ``world_size`` takes batches
    ``r, r + world_size, ...``; when training (``shuffle``) the list is first extended
    cyclically to a multiple of ``world_size`` so every rank runs as many steps.

    Examples
    --------
    >>> from physnet.training import GroupedBatchSampler
    >>> sampler = GroupedBatchSampler([(0, 3), (3, 5)], batch_size=2, shuffle=False)
    >>> list(sampler)
    [[0, 1], [2], [3, 4]]
    """

    def __init__(
        self,
        groups: Sequence[tuple[int, int]],
        batch_size: int,
        *,
        shuffle: bool = True,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"GroupedBatchSampler: batch_size must be >= 1, got {batch_size}")
        self.groups = [(int(start), int(stop)) for start, stop in groups]
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _batches(self) -> list[list[int]]:
        generator = np.random.default_rng([self.seed, self.epoch])
        batches = []
        for start, stop in self.groups:
            indices = np.arange(start, stop)
            if self.shuffle:
                indices = generator.permutation(indices)
            batches += [
                indices[i : i + self.batch_size].tolist()
                for i in range(0, len(indices), self.batch_size)
            ]
        if self.shuffle:
            batches = [batches[i] for i in generator.permutation(len(batches))]
            extra = -len(batches) % self.world_size
            batches += batches[:extra]
        return batches[self.rank :: self.world_size]

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self._batches())

    def __len__(self) -> int:
        return len(self._batches())
