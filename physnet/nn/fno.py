"""``FNO``: neuraloperator's Fourier neural operator as a registered physnet model.

A thin wrapper, so that the FNO of the ``neuraloperator`` package trains with the
:class:`~physnet.training.Trainer`, saves to and loads from physnet checkpoints and runs
under ``physnet evaluate``, next to :class:`~physnet.nn.MgNO` on the same data. The package
is an optional extra (``pip install "physnet[neuraloperator]"``), imported when a model is
built.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from physnet.nn._checks import per_channel
from physnet.nn._registry import Model

__all__ = ["FNO"]


def _neuraloperator() -> Any:
    try:
        import neuralop.models
    except ImportError as error:
        raise ImportError(
            "physnet.nn.FNO needs the neuraloperator package: pip install "
            f'"physnet[neuraloperator]" (or pip install neuraloperator); import failed: {error}'
        ) from None
    return neuralop.models


class FNO(Model, name="fno"):
    """neuraloperator's ``FNO`` with physnet's input/output normalisation and boundary option.

    Parameters
    ----------
    in_channels, out_channels : int, default 1
    n_modes : list of int, default [16, 16]
        Fourier modes kept per axis (neuraloperator's ``n_modes``; the grid dimension is its
        length).
    hidden_channels : int, default 32
    n_layers : int, default 4
    lifting_channel_ratio, projection_channel_ratio : int, default 2
    positional_embedding : {"grid", None}, default "grid"
        Append the ``(x, y)`` coordinates of the unit square as input channels (the FNO
        convention).
    domain_padding : float, optional
        Zero-pad the grid by this fraction before the Fourier layers (for non-periodic data).
    exact_boundary : bool, default False
        Set the output to zero on the outermost grid nodes (Dirichlet data on a nodal grid).
    input_shift, input_scale, output_scale : float or list of float
        As for :class:`~physnet.nn.MgNO`: the input is normalised as
        ``(x - input_shift) / input_scale`` and the output multiplied by ``output_scale``.

    Raises
    ------
    ImportError
        If neuraloperator is not installed (naming the extra to install).
    ValueError
        For an invalid argument.

    Examples
    --------
    >>> import torch
    >>> from physnet.nn import FNO
    >>> model = FNO(n_modes=[4, 4], hidden_channels=8, n_layers=2)
    >>> model(torch.zeros(2, 1, 16, 16)).shape
    torch.Size([2, 1, 16, 16])
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 1,
        n_modes: Sequence[int] = (16, 16),
        hidden_channels: int = 32,
        n_layers: int = 4,
        lifting_channel_ratio: int = 2,
        projection_channel_ratio: int = 2,
        positional_embedding: str | None = "grid",
        domain_padding: float | None = None,
        exact_boundary: bool = False,
        input_shift: float | Sequence[float] = 0.0,
        input_scale: float | Sequence[float] = 1.0,
        output_scale: float | Sequence[float] = 1.0,
    ) -> None:
        super().__init__()
        models = _neuraloperator()
        for key, value in (
            ("in_channels", in_channels),
            ("out_channels", out_channels),
            ("hidden_channels", hidden_channels),
            ("n_layers", n_layers),
            ("lifting_channel_ratio", lifting_channel_ratio),
            ("projection_channel_ratio", projection_channel_ratio),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"FNO: {key} must be a positive integer, got {value!r}")
        modes = list(n_modes) if isinstance(n_modes, (list, tuple)) else []
        if not modes or not all(isinstance(m, int) and m >= 1 for m in modes):
            raise ValueError(f"FNO: n_modes={n_modes!r}, expected a list of positive integers")
        if positional_embedding not in ("grid", None):
            raise ValueError(
                f"FNO: positional_embedding={positional_embedding!r}, expected 'grid' or None"
            )
        if domain_padding is not None and not (
            isinstance(domain_padding, (int, float)) and domain_padding > 0
        ):
            raise ValueError(
                f"FNO: domain_padding={domain_padding!r}, expected None or a positive number"
            )
        if not isinstance(exact_boundary, bool):
            raise ValueError(f"FNO: exact_boundary must be a boolean, got {exact_boundary!r}")
        self.ndim = len(modes)
        self.in_channels = in_channels
        self.exact_boundary = exact_boundary
        self.network = models.FNO(
            n_modes=tuple(modes),
            in_channels=in_channels,
            out_channels=out_channels,
            hidden_channels=hidden_channels,
            n_layers=n_layers,
            lifting_channel_ratio=lifting_channel_ratio,
            projection_channel_ratio=projection_channel_ratio,
            positional_embedding=positional_embedding,
            domain_padding=domain_padding,
        )
        for name, value, channels, positive in (
            ("input_shift", input_shift, in_channels, False),
            ("input_scale", input_scale, in_channels, True),
            ("output_scale", output_scale, out_channels, True),
        ):
            tensor = per_channel("FNO", name, value, channels, self.ndim, positive=positive)
            self.register_buffer(name, tensor, persistent=False)

    def state_dict(self, *args: Any, **kwargs: Any) -> Any:
        # neuraloperator's BaseModel adds its constructor arguments to the state dict under
        # "_metadata", a dict rather than a tensor; physnet keeps the config in the checkpoint
        # header instead.
        state = super().state_dict(*args, **kwargs)
        for key in [key for key in state if key.endswith("_metadata")]:
            if not isinstance(state[key], torch.Tensor):
                del state[key]
        return state

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``(batch, in_channels, *grid)`` fields to ``(batch, out_channels, *grid)``."""
        if not torch.compiler.is_compiling() and (
            x.ndim != self.ndim + 2 or x.shape[1] != self.in_channels
        ):
            raise ValueError(
                f"FNO.forward: expected an input of shape (batch, {self.in_channels}, "
                f"{'*grid' if self.ndim != 2 else 'H, W'}) with {self.ndim} grid axes, got "
                f"{tuple(x.shape)}"
            )
        y = self.network((x - self.input_shift) / self.input_scale) * self.output_scale
        if self.exact_boundary:
            inner = (Ellipsis, *([slice(1, -1)] * self.ndim))
            y = F.pad(y[inner], (1, 1) * self.ndim)
        return y
