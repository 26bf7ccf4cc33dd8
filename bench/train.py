"""Training throughput, each figure beside a baseline measured in the same run.

1. ``vit_small_synth`` (16x16x6 synthetic images, batch 256): images/s of one
   training step (forward, backward, AdamW) with timm's fused attention,
   against the same step with the fused kernel switched off; and images/s of
   the whole ``hlvm.train`` loop on online simulated data (simulation,
   masking, logging included), against the bare step.
2. ``mae_vit_base_patch16`` at 224 on CPU, a small batch: seconds per
   forward-backward of the MAE (75% masked), against timm's reference
   ``vit_base_patch16_224`` forward-backward on the full images.
3. Only with CUDA: ViT-B MAE training step images/s at batch 256 in bf16
   autocast, against the same step in fp32.

Run: ``python bench/train.py [--cpu-batch 4] [--iters N]``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch


def set_fused_attn(model: torch.nn.Module, on: bool) -> int:
    """Switch timm's fused attention on or off in every attention block; returns how many."""
    n = 0
    for m in model.modules():
        if hasattr(m, "fused_attn"):
            m.fused_attn = on
            n += 1
    return n


def timed(step: Callable[[], None], iters: int, warmup: int, sync: bool) -> float:
    """Median seconds per call of ``step`` over ``iters`` calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        step()
    if sync:
        torch.cuda.synchronize()
    times = []
    for _ in range(iters):
        t = time.perf_counter()
        step()
        if sync:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    times.sort()
    return times[len(times) // 2]


def mae_step(model: torch.nn.Module, x: torch.Tensor, amp: bool) -> Callable[[], None]:
    from hlvm.train import param_groups

    opt = torch.optim.AdamW(param_groups(model, 0.05), lr=1e-4, betas=(0.9, 0.95))
    gen = torch.Generator().manual_seed(0)
    ctx = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if amp else contextlib.nullcontext

    def step() -> None:
        with ctx():
            loss = model(x, mask_ratio=0.75, generator=gen).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def row(name: str, value: float, unit: str, base_name: str, base: float, higher_is_better: bool) -> None:
    speedup = value / base if higher_is_better else base / value
    print(f"{name:<48} {value:>10.3f} {unit:<9} | baseline {base_name:<40} {base:>10.3f} {unit:<9} | x{speedup:.2f}")


def bench_small(iters: int) -> None:
    from hlvm.models import build_model, get_config
    from hlvm.train import TrainConfig, train

    torch.manual_seed(0)
    cfg = get_config("vit_small_synth")
    x = torch.randn(256, cfg.in_chans, *cfg.img_hw)
    model = build_model(cfg)
    fused = timed(mae_step(model, x, False), iters, 3, False)
    set_fused_attn(model, False)
    plain = timed(mae_step(model, x, False), iters, 3, False)
    row("vit_small_synth step, fused attention", 256 / fused, "img/s", "same step, attention unfused", 256 / plain, True)

    with tempfile.TemporaryDirectory() as tmp:
        steps = max(iters, 10)
        tc = TrainConfig(model="vit_small_synth", data="online", steps=steps, batch_size=256, warmup=1,
                         ckpt_every=0, log_every=steps, device="cpu", out=str(Path(tmp) / "run"))
        t = time.perf_counter()
        train(tc, progress=False)
        loop = steps * 256 / (time.perf_counter() - t)
    row("hlvm.train loop, online simulated data", loop, "img/s", "bare step (fused), no data/logging", 256 / fused, True)


def bench_vit_base_cpu(batch: int, iters: int) -> None:
    import timm

    from hlvm.models import build_model, get_config

    torch.manual_seed(0)
    x = torch.randn(batch, 3, 224, 224)
    mae = build_model(get_config("mae_vit_base_patch16"))
    gen = torch.Generator().manual_seed(0)

    def mae_fb() -> None:
        mae(x, mask_ratio=0.75, generator=gen).loss.backward()
        mae.zero_grad(set_to_none=True)

    ref = timm.create_model("vit_base_patch16_224", pretrained=False, num_classes=0)

    def ref_fb() -> None:
        ref(x).pow(2).mean().backward()
        ref.zero_grad(set_to_none=True)

    s_mae = timed(mae_fb, iters, 1, False)
    s_ref = timed(ref_fb, iters, 1, False)
    row(f"mae_vit_base_patch16 fwd+bwd, CPU, batch {batch}", s_mae, "s/iter",
        "timm vit_base_patch16_224 fwd+bwd, full image", s_ref, False)


def bench_vit_base_cuda(iters: int) -> None:
    from hlvm.models import build_model, get_config

    torch.manual_seed(0)
    dev = torch.device("cuda")
    x = torch.randn(256, 3, 224, 224, device=dev)
    model = build_model(get_config("mae_vit_base_patch16")).to(dev)
    bf16 = timed(mae_step(model, x, True), iters, 3, True)
    fp32 = timed(mae_step(model, x, False), iters, 3, True)
    name = torch.cuda.get_device_name()
    row(f"ViT-B MAE step bf16, batch 256 ({name})", 256 / bf16, "img/s", "same step in fp32", 256 / fp32, True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--iters", type=int, default=5, help="timed iterations per figure (median reported)")
    p.add_argument("--cpu-batch", type=int, default=4, help="batch of the ViT-B CPU forward-backward")
    p.add_argument("--skip-cpu-base", action="store_true", help="skip the (slow) ViT-B CPU figure")
    args = p.parse_args(argv)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads (OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')})")
    bench_small(args.iters)
    if not args.skip_cpu_base:
        bench_vit_base_cpu(args.cpu_batch, max(2, args.iters // 2))
    if torch.cuda.is_available():
        bench_vit_base_cuda(args.iters * 4)
    else:
        print("no CUDA device: the bf16 ViT-B figure is skipped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
