"""Training-step time of each objective beside plain MAE's, measured interleaved in one run.

One training step as ``hlvm.train`` runs it: the run's masker (MI-MAE's K
complementary views stacked along the batch), the forward pass, the
objective (with MI-MAE's approximation network attached, cMIM's Gaussian
posterior in the model), backward, AdamW and zero_grad. The data are a fixed
set of pre-drawn simulator batches, cycled, so that simulation is not timed.

Objectives run round-robin, ``mae, umae, mmae, mimae, cmim, mae, ...``,
``--repeats`` times (after one untimed warm-up of each), every measurement
``--iters`` consecutive steps, so that a change in the machine's load falls on
all of them alike. It prints, per objective, the min and the median seconds
per step and their ratios to MAE's min and median. Speed lives here only;
the tests time nothing.

Default: the MLP MAE of ``studies/objectives/config.json`` (encoder and
decoder 256-256, 64-wide code) on the depth-3 hierarchy (8x8 images, 5
channels), batch 256, mask ratio 0.5, one torch thread (as each sweep worker
runs on a 2-core machine with 2 workers).

Run: ``python bench/objectives.py [--repeats 5] [--iters 10] [--batch 256] [--model mlp|vit_small_synth]``.
Bad options are one ``error: ...`` line and exit code 2.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from typing import NoReturn

import numpy as np
import torch


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, exit 2, like the hlvm CLI
        print(f"error: {message}", file=sys.stderr)
        sys.exit(2)


def step_fn(objective: str, args: argparse.Namespace, batches: list[torch.Tensor], graph: object) -> Callable[[], None]:
    """One training step of ``objective`` as the training loop runs it (hlvm.train's own pieces)."""
    from hlvm.models import get_config
    from hlvm.objectives import build_objective
    from hlvm.train import TrainConfig, _masker, _Source, init_model, mask_generator, param_groups, resolve_model_config

    c, h = batches[0].shape[1], batches[0].shape[2]
    if args.model == "mlp":
        model = get_config("mlp", img_size=h, in_chans=c, mlp_hidden=(256, 256), mlp_decoder_hidden=(256, 256))
    else:
        model = get_config(args.model, img_size=h, in_chans=c, patch_size=1, mask_unit=1)
    cfg = TrainConfig(model=model, objective=objective, mask_ratio=args.ratio, batch_size=args.batch, device="cpu")
    mcfg = resolve_model_config(cfg, (c, h, h))
    obj = build_objective(objective)
    masker = _masker(cfg, mcfg, _Source("online", (c, h, h), graph=graph), None, obj)
    net = init_model(mcfg, 0)
    obj.attach(net)
    opt = torch.optim.AdamW(param_groups(net, 0.05), lr=1e-3, betas=(0.9, 0.95))
    gen = mask_generator(0, 0)
    state = {"i": 0}

    def step() -> None:
        x = batches[state["i"] % len(batches)]
        state["i"] += 1
        x_in, kwargs = masker(x, gen)
        out = net(x_in, **kwargs)
        loss, _ = obj(out, net)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def main(argv: list[str] | None = None) -> None:
    p = _Parser(description=__doc__.split("\n\n")[0])
    p.add_argument("--objectives", default="mae,umae,mmae,mimae,cmim", help="comma-separated; mae is always the baseline")
    p.add_argument("--model", default="mlp", choices=["mlp", "vit_small_synth"])
    p.add_argument("--depth", type=int, default=3, help="depth of the grid hierarchy (3: 8x8 images, 5 channels)")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--ratio", type=float, default=0.5)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--iters", type=int, default=10, help="steps per measurement")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    for name in ("depth", "batch", "repeats", "iters", "threads"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be a positive integer")
    from hlvm.errors import HlvmError
    from hlvm.objectives import OBJECTIVES

    names = [s.strip() for s in args.objectives.split(",") if s.strip()]
    for n in names:
        if n not in OBJECTIVES:
            p.error(f"unknown objective {n!r}; known: {', '.join(sorted(OBJECTIVES))}")
    names = ["mae"] + [n for n in names if n != "mae"]
    torch.set_num_threads(args.threads)

    from hlvm.graphs import GridSpec
    from hlvm.simulate import SimulateConfig, Simulator

    sim = Simulator.from_config(SimulateConfig(grid=GridSpec(depth=args.depth)))
    rng = np.random.default_rng(0)
    batches = [torch.from_numpy(np.asarray(sim.sample(args.batch, rng).images, dtype=np.float32)) for _ in range(4)]
    try:
        steps = {n: step_fn(n, args, batches, sim.graph) for n in names}
    except HlvmError as e:
        p.error(str(e))

    def measure(step: Callable[[], None]) -> float:
        t = time.perf_counter()
        for _ in range(args.iters):
            step()
        return (time.perf_counter() - t) / args.iters

    for n in names:  # untimed warm-up of each
        measure(steps[n])
    times: dict[str, list[float]] = {n: [] for n in names}
    for _ in range(args.repeats):
        for n in names:
            times[n].append(measure(steps[n]))

    c, hw = batches[0].shape[1], batches[0].shape[2]
    print(f"== training step, {args.model} on {hw}x{hw}x{c} images (depth {args.depth}), batch {args.batch}, "
          f"ratio {args.ratio}, {args.threads} thread(s): {args.repeats} interleaved repeats of {args.iters} steps")
    base_min, base_med = min(times["mae"]), statistics.median(times["mae"])
    for n in names:
        lo, mid = min(times[n]), statistics.median(times[n])
        print(f"   {n:<14} s/step  min {lo:8.4f} median {mid:8.4f} | x MAE: min {lo / base_min:5.2f} median {mid / base_med:5.2f}")


if __name__ == "__main__":
    main()
