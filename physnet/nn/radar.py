"""The two-stage (Deep2S) radar reconstructor: normalised backprojection -> CNN -> ``|x|``.

Stage one is physics: the backprojection ``A^H y`` of the measurements (computed by
:class:`physnet.operators.NearFieldMIMO`, outside the network). Stage two is this module:
:class:`Deep2S` divides its input by **each sample's own** maximum magnitude (never the
batch's: the reference code's batch-wide maximum made a volume depend on its batch
mates) and maps it with a registered backbone (``unet3d`` by default) to the magnitude
``|x|`` in [0, 1].

Inputs: ``"magnitude"`` takes ``|A^H y|`` as one channel ``(B, 1, X, Y, Z)`` (or
``(B, X, Y, Z)``); ``"complex"`` (CV-Deep2S) takes ``A^H y`` as real and imaginary
channels ``(B, 2, X, Y, Z)``.
"""

from __future__ import annotations

from typing import Any

import torch

from physnet.nn._registry import Model, create

__all__ = ["Deep2S", "normalize_per_sample"]

_INPUTS = {"magnitude": 1, "complex": 2}


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
    ) -> None:
        super().__init__()
        if input not in _INPUTS:
            raise ValueError(f"Deep2S: input {input!r} is unknown; expected one of {list(_INPUTS)}")
        if ndim != 3:
            raise ValueError(f"Deep2S: ndim must be 3, got {ndim!r}")
        config = dict(backbone_config or {})
        if config.get("in_channels", _INPUTS[input]) != _INPUTS[input]:
            raise ValueError(
                f"Deep2S: backbone_config.in_channels={config['in_channels']} does not fit "
                f"input={input!r} ({_INPUTS[input]} channel(s))"
            )
        config["in_channels"] = _INPUTS[input]
        if backbone == "deep2s":
            raise ValueError("Deep2S: the backbone cannot be another deep2s")
        self.input = input
        self.backbone = create(backbone, **config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map backprojections to magnitudes ``(B, 1, X, Y, Z)``."""
        channels = _INPUTS[self.input]
        if x.ndim == 4 and channels == 1:
            x = x.unsqueeze(1)
        if x.ndim != 5 or x.shape[1] != channels:
            raise ValueError(
                f"Deep2S.forward: input={self.input!r} expects a backprojection of shape "
                f"(batch, {channels}, X, Y, Z), got {tuple(x.shape)}"
            )
        if self.input == "magnitude":
            x = x.abs()
        return self.backbone(normalize_per_sample(x, self.input))
