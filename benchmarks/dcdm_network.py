"""DCDM networks: parameters, FLOP per voxel and forward times at 32³, 64³ and 128³.

Batch 1, float32, torch CPU with 2 threads, ``torch.inference_mode``; medians of repeats
(the paper network once at 128³: ~1.2e5 FLOP per voxel is its published cost). For the
multigrid network ``prepare`` (once per geometry) and ``apply_prepared`` (once per iteration) are
timed apart. Run ``python benchmarks/dcdm_network.py``.
"""

from __future__ import annotations

import statistics
import time

import torch

from physnet.nn import DCDMMultigridNet, DCDMPaperNet


def median_time(function, repeats: int) -> float:
    function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    torch.set_num_threads(2)
    paper, multigrid = DCDMPaperNet(), DCDMMultigridNet()
    paper_flops = 2 * 27 * 16 * 16 * (4 + 4 + 6 / 8) + 2 * 27 * 16
    print(
        f"dcdm-paper     params {sum(p.numel() for p in paper.parameters()):>7}  "
        f"FLOP/voxel ~{paper_flops:.3g}"
    )
    print(
        f"dcdm-multigrid params {sum(p.numel() for p in multigrid.parameters()):>7}  "
        f"FLOP/voxel {multigrid.flops_per_voxel()}"
    )
    with torch.inference_mode():
        for n in (32, 64, 128):
            r = torch.randn(1, 1, n, n, n)
            flags = torch.zeros(1, 1, n, n, n)
            flags[..., 0, :, :] = 2.0
            prepare = median_time(lambda flags=flags: multigrid.prepare(flags), 3)
            state = multigrid.prepare(flags)
            apply = median_time(lambda r=r, state=state: multigrid.apply_prepared(r, state), 7)
            repeats = 1 if n == 128 else 3
            forward = median_time(lambda r=r: paper(r), repeats) if n <= 128 else float("nan")
            print(
                f"{n:>4}^3  multigrid prepare {prepare:8.4f} s  apply {apply:8.4f} s  "
                f"levels {len(state.levels)}  |  paper forward {forward:8.3f} s"
            )


if __name__ == "__main__":
    main()
