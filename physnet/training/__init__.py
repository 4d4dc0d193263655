"""Training and evaluation of learned solvers (needs torch).

:class:`Trainer` is the one supervised loop (AdamW, learning-rate schedules, validation,
safetensors checkpoints, exact resume, ``torchrun`` data parallelism);
:func:`train_from_config` runs it from a TOML file (``physnet train``); :func:`evaluate`
measures a checkpoint on any dataset :func:`physnet.datasets.open` reads
(``physnet evaluate``). The losses are per-sample relative norms averaged over the batch.

Examples
--------
>>> import torch
>>> from physnet.training import relative_lp
>>> target = torch.ones(2, 1, 8, 8)
>>> relative_lp(0.5 * target, target)
tensor(0.5000)
"""

from physnet.training.augment import (
    apply_symmetry,
    augment_batch,
    check_symmetries,
    parse_symmetry,
)
from physnet.training.config import TrainConfig, load_config, train_from_config
from physnet.training.evaluate import evaluate
from physnet.training.losses import (
    LOSSES,
    get_loss,
    l1_ssim,
    mse,
    relative_h1,
    relative_l1,
    relative_l2,
    relative_lp,
    slice_ssim,
)
from physnet.training.mixed import GroupedBatchSampler, MixedResolution
from physnet.training.trainer import History, Trainer, TrainingDiverged

__all__ = [
    "LOSSES",
    "GroupedBatchSampler",
    "History",
    "MixedResolution",
    "TrainConfig",
    "Trainer",
    "TrainingDiverged",
    "apply_symmetry",
    "augment_batch",
    "check_symmetries",
    "evaluate",
    "get_loss",
    "l1_ssim",
    "load_config",
    "mse",
    "parse_symmetry",
    "relative_h1",
    "relative_l1",
    "relative_l2",
    "relative_lp",
    "slice_ssim",
    "train_from_config",
]
