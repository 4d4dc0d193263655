"""Neural networks and the model registry (needs torch).

Every physnet network subclasses :class:`Model` with a registered name, so
``create(name, **config)`` builds it and a checkpoint (one ``.safetensors`` file: weights
plus name and config, never a pickle) rebuilds it with :func:`load`.

Examples
--------
>>> import os, tempfile
>>> import torch
>>> import physnet.nn
>>> model = physnet.nn.create("conv-net", in_channels=1, out_channels=1, hidden_channels=8)
>>> path = os.path.join(tempfile.mkdtemp(), "conv.safetensors")
>>> physnet.nn.save(model, path)
>>> physnet.nn.load(path)(torch.zeros(2, 1, 16, 16)).shape
torch.Size([2, 1, 16, 16])
"""

from physnet.nn._registry import Model, available_models, create
from physnet.nn.checkpoint import load, read_metadata, save
from physnet.nn.convnet import ConvNet
from physnet.nn.cpconv import CPConv2d, CPConv3d, SeparableConv2d, compress_convs
from physnet.nn.dcdm import DCDMMultigridNet, DCDMPaperNet, MultigridState
from physnet.nn.dcdm_galerkin import DCDMGalerkinNet
from physnet.nn.fno import FNO
from physnet.nn.mgno import MgNO, MultigridCycle
from physnet.nn.radar import Deep2S
from physnet.nn.symmetry import SymmetryAverage
from physnet.nn.unet3d import ResNet3D, UNet3D
from physnet.nn.wave import WaveCNN, WaveCNN3d
from physnet.nn.wave_latent import WaveLatentLeapfrog
from physnet.nn.wave_leapfrog import WaveLeapfrog
from physnet.nn.wave_stencil import WaveStencil

__all__ = [
    "FNO",
    "CPConv2d",
    "CPConv3d",
    "ConvNet",
    "DCDMGalerkinNet",
    "DCDMMultigridNet",
    "DCDMPaperNet",
    "Deep2S",
    "MgNO",
    "Model",
    "MultigridCycle",
    "MultigridState",
    "ResNet3D",
    "SeparableConv2d",
    "SymmetryAverage",
    "UNet3D",
    "WaveCNN",
    "WaveCNN3d",
    "WaveLatentLeapfrog",
    "WaveLeapfrog",
    "WaveStencil",
    "available_models",
    "compress_convs",
    "create",
    "load",
    "read_metadata",
    "save",
]
