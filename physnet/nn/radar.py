"""The two-stage (Deep2S) radar reconstructor: normalised backprojection -> CNN -> ``|x|``.

Stage one is physics: the backprojection ``A^H y`` of the measurements (computed by
:class:`physnet.operators.NearFieldMIMO`, outside the network). Stage two is this module:
:class:`Deep2S` divides its input by **each sample's own** maximum magnitude (never the
batch's: the reference code's batch-wide maximum made a volume depend on its batch
mates) and maps it with a registered backbone (``unet3d`` by default) to the magnitude
``|x|`` in [0, 1].

Inputs: ``"magnitude"`` takes ``|A^H y|`` as one channel ``(B, 1, X, Y, Z)`` (or
``(B, X, Y, Z)``); ``"complex"`` (CV-Deep2S) takes ``A^H y`` as real and imaginary
channels ``(B, 2, X, Y, Z)``. A model with ``conditions`` (``"n_frequencies"``,
``"snr_db"``) takes one more constant channel per condition after those, holding the raw
value (a count of frequencies, dB); one such model serves every compression level.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from physnet.nn._registry import Model, create

__all__ = ["Deep2S", "normalize_per_sample"]

_INPUTS = {"magnitude": 1, "complex": 2}
CONDITION_SCALES = {"n_frequencies": 30.0, "snr_db": 30.0}
"""The conditions a :class:`Deep2S` accepts, and the value each is divided by."""


def normalize_per_sample(x: torch.Tensor, kind: str = "magnitude") -> torch.Tensor:
    """Divide each sample of ``x`` ``(B, C, ...)`` by its own maximum magnitude.

    For ``kind="complex"`` the channels are real and imaginary parts and the magnitude is
    ``sqrt(re^2 + im^2)``; a sample that is zero everywhere stays zero.

    Examples
    --------
    >>> import torch
    >>> x = torch.tensor([[1.0, -2.0], [0.0, 8.0]])
    >>> normalize_per_sample(x).tolist()
    [[0.5, -1.0], [0.0, 1.0]]
    """
    magnitude = torch.sqrt(x[:, 0] ** 2 + x[:, 1] ** 2) if kind == "complex" else x.abs()
    peak = magnitude.reshape(x.shape[0], -1).amax(dim=1)
    peak = torch.where(peak > 0, peak, torch.ones_like(peak))
    return x / peak.reshape(-1, *([1] * (x.ndim - 1)))


class Deep2S(Model, name="deep2s"):
    """Per-sample normalisation and a backbone network: the second stage of Deep2S.

    Parameters
    ----------
    backbone : str, default "unet3d"
        A registered model name (``"unet3d"``, ``"resnet3d"``, ...).
    backbone_config : dict, optional
        The backbone's keyword arguments; ``in_channels`` is set from ``input``.
    input : {"magnitude", "complex"}, default "magnitude"
        ``|A^H y|`` as one channel, or ``A^H y`` as real/imaginary channels (CV-Deep2S).
    ndim : int, default 3
        Grid axes (recorded for the Trainer, which stacks fields into channels).
    conditions : sequence of str, default ()
        Names among :data:`CONDITION_SCALES`: each adds a constant input channel after
        the backprojection's, holding the raw value (scaled inside).
    trained_n_frequencies : sequence of int, optional
        The compression levels of the training data (recorded for the
        :class:`~physnet.reconstruction.Reconstructor`, which warns outside them).
    threshold : float, default 0.0
        In evaluation mode, output magnitudes below it are set to zero (the model's
        decision that a voxel is empty; tuned on validation data after training, see
        the ``radar-deep2s`` card). Training sees the unthresholded output.

    Notes
    -----
    In evaluation mode (batch norm with its running statistics) a sample's output does
    not depend on the other samples of its batch.

    Examples
    --------
    >>> import torch
    >>> from physnet.nn import create
    >>> model = create("deep2s", backbone_config={"channels": [4, 8], "head_channels": 4})
    >>> y = model.eval()(torch.rand(3, 1, 9, 9, 17))
    >>> y.shape, bool(((y >= 0) & (y <= 1)).all())
    (torch.Size([3, 1, 9, 9, 17]), True)
    """

    def __init__(
        self,
        backbone: str = "unet3d",
        backbone_config: dict[str, Any] | None = None,
        input: str = "magnitude",
        ndim: int = 3,
        conditions: Sequence[str] = (),
        trained_n_frequencies: Sequence[int] | None = None,
        threshold: float = 0.0,
    ) -> None:
        super().__init__()
        if input not in _INPUTS:
            raise ValueError(f"Deep2S: input {input!r} is unknown; expected one of {list(_INPUTS)}")
        if ndim != 3:
            raise ValueError(f"Deep2S: ndim must be 3, got {ndim!r}")
        unknown = [name for name in conditions if name not in CONDITION_SCALES]
        if unknown or len(set(conditions)) != len(conditions):
            raise ValueError(
                f"Deep2S: conditions {list(conditions)}, expected distinct names among "
                f"{list(CONDITION_SCALES)}"
            )
        channels = _INPUTS[input] + len(conditions)
        config = dict(backbone_config or {})
        if config.get("in_channels", channels) != channels:
            raise ValueError(
                f"Deep2S: backbone_config.in_channels={config['in_channels']} does not fit "
                f"input={input!r} with {len(conditions)} condition(s) ({channels} channel(s))"
            )
        config["in_channels"] = channels
        if backbone == "deep2s":
            raise ValueError("Deep2S: the backbone cannot be another deep2s")
        if not 0.0 <= threshold < 1.0:
            raise ValueError(f"Deep2S: threshold={threshold!r}, expected a number in [0, 1)")
        self.input = input
        self.threshold = float(threshold)
        self.conditions = tuple(conditions)
        self.trained_n_frequencies = (
            None if trained_n_frequencies is None else [int(n) for n in trained_n_frequencies]
        )
        self.register_buffer(
            "condition_scales",
            torch.tensor([CONDITION_SCALES[name] for name in self.conditions]).reshape(
                1, -1, 1, 1, 1
            ),
            persistent=False,
        )
        self.backbone = create(backbone, **config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map backprojections (and conditions) to magnitudes ``(B, 1, X, Y, Z)``."""
        channels = _INPUTS[self.input]
        total = channels + len(self.conditions)
        if x.ndim == 4 and total == 1:
            x = x.unsqueeze(1)
        if x.ndim != 5 or x.shape[1] != total:
            described = " and ".join([f"{channels} backprojection", *self.conditions])
            raise ValueError(
                f"Deep2S.forward: input={self.input!r} expects (batch, {total}, X, Y, Z) "
                f"({described} channel(s)), got {tuple(x.shape)}"
            )
        backprojection, conditions = x[:, :channels], x[:, channels:]
        if self.input == "magnitude":
            backprojection = backprojection.abs()
        parts = [normalize_per_sample(backprojection, self.input)]
        if self.conditions:
            parts.append(conditions / self.condition_scales.to(x.dtype))
        output = self.backbone(torch.cat(parts, dim=1) if len(parts) > 1 else parts[0])
        if self.threshold > 0 and not self.training:
            output = torch.where(output >= self.threshold, output, torch.zeros_like(output))
        return output
