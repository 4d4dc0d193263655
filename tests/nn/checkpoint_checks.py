"""A check the layout tests share (imported by them): a pretrained file resaves unchanged."""

from __future__ import annotations

import os
from pathlib import Path

import safetensors.torch
import torch

import physnet
import physnet.nn


def load_pretrained_and_check_resave(name: str, parameters: int, tmp_path) -> torch.nn.Module:
    """Load ``name``, check its parameter count, that the file's tensors are the model's
    parameters and that saving writes them back unchanged; return the model (eval mode)."""
    model = physnet.nn.load(name).eval()
    assert sum(p.numel() for p in model.parameters()) == parameters
    path = Path(physnet.__file__).parent / "pretrained" / f"{name}.safetensors"
    shipped = safetensors.torch.load_file(path)
    resaved = os.path.join(tmp_path, "resaved.safetensors")
    physnet.nn.save(model, resaved)
    again = safetensors.torch.load_file(resaved)
    assert shipped.keys() == again.keys() == model.state_dict().keys()
    for key, value in shipped.items():
        assert torch.equal(again[key], value) and torch.equal(model.state_dict()[key], value)
    return model
