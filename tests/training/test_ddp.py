"""Data-parallel training under torchrun (2 CPU processes, gloo) equals one process."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from training_data import Smoothing, make_model

from physnet.training import Trainer

# 24 training samples: 3 global batches of 8 per epoch (4 per rank); 7 validation samples
# do not split evenly over 2 ranks, so the summed validation metrics are checked too.
OPTIONS = {"epochs": 3, "lr": 1e-2, "schedule": "one-cycle", "clip_grad_norm": 1.0}
OPTIONS.update(progress=False, metrics=("relative_l2", "mse"))
PER_RANK_BATCH, WORLD_SIZE = 4, 2

WORKER = """
import json, os, sys
import torch
from safetensors.torch import save_file
from training_data import Smoothing, make_model
from physnet.training import Trainer

out, options = sys.argv[1], json.loads(sys.argv[2])
model = make_model()
trainer = Trainer(model, batch_size={batch}, out_dir=os.path.join(out, "run"), **options)
history = trainer.fit(Smoothing(24, seed=1), Smoothing(7, seed=2))
rank = os.environ["RANK"]
save_file(dict(model.state_dict()), os.path.join(out, f"rank{{rank}}.safetensors"))
with open(os.path.join(out, f"history{{rank}}.json"), "w") as f:
    json.dump(history.records, f)
"""


def test_two_processes_match_one_with_the_global_batch(tmp_path):
    import json

    script = tmp_path / "worker.py"
    script.write_text(textwrap.dedent(WORKER.format(batch=PER_RANK_BATCH)))
    environment = dict(os.environ)
    here = str(Path(__file__).parent)
    environment["PYTHONPATH"] = os.pathsep.join([here, environment.get("PYTHONPATH", "")])
    environment["OMP_NUM_THREADS"] = "1"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone",
        f"--nproc_per_node={WORLD_SIZE}", str(script), str(tmp_path), json.dumps(OPTIONS),
    ]  # fmt: skip
    result = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-4000:]

    rank0 = load_file(tmp_path / "rank0.safetensors")
    rank1 = load_file(tmp_path / "rank1.safetensors")
    assert all(torch.equal(rank0[name], rank1[name]) for name in rank0)

    single = make_model()
    options = {**OPTIONS, "metrics": list(OPTIONS["metrics"])}
    history = Trainer(single, batch_size=PER_RANK_BATCH * WORLD_SIZE, **options).fit(
        Smoothing(24, seed=1), Smoothing(7, seed=2)
    )
    for name, parameter in single.state_dict().items():
        torch.testing.assert_close(rank0[name], parameter, rtol=1e-5, atol=1e-6)

    distributed, other = (
        [{k: v for k, v in r.items() if k != "time_s"} for r in json.loads(p.read_text())]
        for p in (tmp_path / "history0.json", tmp_path / "history1.json")
    )
    assert distributed == other
    for a, b in zip(distributed, history.records, strict=True):
        assert (a["epoch"], a["step"]) == (b["epoch"], b["step"])
        for key in ("train_loss", "val_loss", "val_relative_l2", "val_mse"):
            assert a[key] == pytest.approx(b[key], rel=1e-5), key

    # rank 0 alone wrote the run's files
    run = tmp_path / "run"
    assert sorted(p.name for p in run.iterdir()) == [
        "best.safetensors", "last.safetensors", "last.state.safetensors",
        "metrics.csv", "metrics.jsonl",
    ]  # fmt: skip
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 3
