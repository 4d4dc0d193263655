"""Train dcdm-multigrid on the A-norm error left after a few FCG steps (errors drawn on the fly).

The shipped ``dcdm-poisson3d`` weights (see ``card.md`` beside this file) come from

    python solvers/dcdm-poisson3d/train_energy.py --data $PHYSNET_DATA/dcdm-rhs.h5 \
        --out runs/dcdm-poisson3d/dcdm-poisson3d.safetensors --steps 200 --batch 8 \
        --lr 3e-3 --symmetric --max-damping 1.0 --unroll 4

``--unroll K`` measures the error after K steps of the conjugate-direction iteration
(differentiably) instead of one; ``--symmetric`` ties the post-smoothing damping to the
pre-smoothing one (a symmetric V-cycle) after every optimiser step; ``--max-damping``
penalises damping factors above the bound. Without the last two the learned smoother
over-relaxes: better for one step, but an indefinite preconditioner that FCG cannot use.

Each step draws, for a batch of geometries (the flags of the ``dcdm-rhs`` store's train
split), an error ``e`` on the fluid cells that spreads its ``A``-energy evenly over the
scales (white noise plus noise averaged over 2, 4, 8 and 16 cells, each part normalised to
unit ``A``-norm and weighted at random), forms ``b = A e``, and minimises
:func:`physnet.training.dcdm_loss.dcdm_energy_loss` of ``f = net([b / |b|, flags])``: the
fraction of ``|e|_A^2`` left after the exact line search along ``f``. Unlike DCDM's
one-step residual loss (dominated by the rough part of ``b``), this weighs every
frequency, as the convergence of a conjugate-direction method does. Adam, cosine decay;
the weights are saved with :func:`physnet.nn.save` (loadable by ``physnet.nn.load``).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch  # noqa: TID253 (a training script: torch is required)
import torch.nn.functional as F  # noqa: TID253

import physnet.datasets
from physnet.nn import create, save
from physnet.operators.masked import masked_poisson
from physnet.training.dcdm_loss import dcdm_energy_loss

SCALES = (1, 2, 4, 8, 16)


def load_flags(path: str, split: str = "train") -> torch.Tensor:
    """All flags of a ``dcdm-rhs`` split, ``(n, 1, *grid)`` float32."""
    store = physnet.datasets.open(path, split=split)
    flags = np.stack([store[i]["flags"] for i in range(len(store))])
    return torch.from_numpy(flags.astype(np.float32)).unsqueeze(1)


def draw_errors(flags: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Errors on the fluid cells with random weights on each scale of :data:`SCALES`."""
    fluid = (flags == 0).to(flags.dtype)
    batch, grid = flags.shape[0], flags.shape[2:]
    weights = torch.rand(batch, len(SCALES), generator=generator)
    weights = weights / weights.sum(dim=1, keepdim=True)
    error = torch.zeros_like(flags)
    for k, scale in enumerate(SCALES):
        coarse = [max(1, n // scale) for n in grid]
        noise = torch.randn(batch, 1, *coarse, generator=generator)
        if scale > 1:
            noise = F.interpolate(noise, size=grid, mode="trilinear", align_corners=False)
        noise = noise * fluid
        energy = (noise * masked_poisson(noise, flags)).flatten(1).sum(1).clamp_min(1e-12)
        error += noise * (weights[:, k] / energy).sqrt().view(-1, 1, 1, 1, 1)
    return error


def symmetrise(model) -> None:
    """Tie the post-smoothing dampings to the pre-smoothing ones in reverse order.

    Sweep ``k`` of the ``2s`` sweeps of a level uses output ``k`` of the smoother network;
    making output ``2s - 1 - k`` equal to output ``k`` makes the post-smoother the adjoint
    of the pre-smoother, so the V-cycle is a symmetric operator (restriction is the
    transpose of prolongation): the setting in which FCG's truncated orthogonalisation
    loses nothing. Applied as a projection after each optimiser step.
    """
    with torch.no_grad():
        out = model.smoother_out
        n = out.bias.shape[0]
        for k in range(n // 2):
            for tensor in (out.weight, out.bias):
                mean = 0.5 * (tensor[k] + tensor[n - 1 - k])
                tensor[k] = mean
                tensor[n - 1 - k] = mean


def damping_penalty(model, flags: torch.Tensor, cap: float) -> torch.Tensor:
    """Mean squared excess of the smoother dampings over ``cap`` on every level's fluid cells.

    Damped Jacobi with ``omega <= 1`` is convergent in the ``A``-norm (the eigenvalues of
    ``D^-1 A`` lie in ``[0, 2]``), which keeps the symmetric V-cycle positive definite; the
    one-step losses alone push ``omega`` above 1 (an overshooting, indefinite smoother that
    ruins FCG).
    """
    total = flags.new_zeros(())
    for level in model.prepare(flags).levels:
        fluid = level.fluid > 0
        for scale in level.smoother_scale:
            omega = (scale * level.diagonal)[fluid]
            total = total + torch.relu(omega - cap).square().mean()
    return total


def _dot(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return (u * v).flatten(1).sum(dim=1).view(-1, 1, 1, 1, 1)


def unrolled_energy(
    model, rhs: torch.Tensor, error: torch.Tensor, flags: torch.Tensor, steps: int, memory: int = 2
) -> torch.Tensor:
    """Mean relative ``A``-norm error after ``steps`` differentiable FCG(``memory``) steps.

    The iteration of :func:`physnet.solvers.dcdm.dcdm` from ``x = 0``: the network's
    direction for the normalised residual, A-orthogonalised against the last ``memory``
    directions, then the exact line search. ``steps=1`` is :func:`dcdm_energy_loss`.
    """
    state = model.prepare(flags)
    x = torch.zeros_like(rhs)
    r = rhs
    history: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
    for _ in range(steps):
        q = model.apply_prepared(r / _dot(r, r).sqrt().clamp_min(1e-30), state)
        for p, Ap, pAp in history:
            q = q - _dot(q, Ap) / pAp * p
        Aq = masked_poisson(q, flags)
        qAq = _dot(q, Aq).clamp_min(1e-30)
        x = x + _dot(q, r) / qAq * q
        r = r - _dot(q, r) / qAq * Aq
        history = [*history, (q, Aq, qAq)][-memory:]
    left = error - x
    return (_dot(left, masked_poisson(left, flags)) / _dot(error, rhs)).mean()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", required=True, help="a dcdm-rhs store (its flags are used)")
    parser.add_argument("--out", required=True, help="the .safetensors file to write")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--symmetric", action="store_true", help="keep the V-cycle symmetric (see symmetrise)"
    )
    parser.add_argument(
        "--max-damping",
        type=float,
        default=None,
        help="penalise smoother dampings above this (1.0 keeps the smoother convergent)",
    )
    parser.add_argument(
        "--unroll", type=int, default=1, help="FCG(2) steps inside the loss (1: one-step)"
    )
    args = parser.parse_args(argv)

    torch.manual_seed(0)  # the same initialisation as benchmarks/dcdm_iterations.py untrained
    model = create("dcdm-multigrid", ndim=3)
    generator = torch.Generator().manual_seed(args.seed)
    flags_all = load_flags(args.data)
    optimiser = torch.optim.Adam(model.parameters(), lr=args.lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, args.steps)
    if args.symmetric:
        symmetrise(model)
    start = time.perf_counter()
    running = None
    for step in range(1, args.steps + 1):
        index = torch.randint(len(flags_all), (args.batch,), generator=generator)
        flags = flags_all[index]
        error = draw_errors(flags, generator)
        rhs = masked_poisson(error, flags)
        norm = rhs.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1, 1)
        rhs, error = rhs / norm, error / norm
        if args.unroll == 1:
            prediction = model(torch.cat([rhs, flags], dim=1))
            loss = dcdm_energy_loss(prediction, torch.cat([error, flags], dim=1))
        else:
            loss = unrolled_energy(model, rhs, error, flags, args.unroll)
        if args.max_damping is not None:
            loss = loss + 100.0 * damping_penalty(model, flags, args.max_damping)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        if args.symmetric:
            symmetrise(model)
        schedule.step()
        running = loss.item() if running is None else 0.9 * running + 0.1 * loss.item()
        if step == 1 or step % 25 == 0 or step == args.steps:
            print(
                f"step {step:5d}  loss {loss.item():.4f}  smoothed {running:.4f}  "
                f"scale {model.correction_scale.item():.3f}  {time.perf_counter() - start:.0f} s",
                flush=True,
            )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    save(model, args.out, metadata={"loss": "dcdm_energy", "steps": str(args.steps)})
    print(f"wrote {args.out} after {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
