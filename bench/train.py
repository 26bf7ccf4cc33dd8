"""Training throughput, each figure beside a baseline measured in the same run.

Every comparison runs its two sides interleaved, A, B, A, B, ..., ``--repeats``
times (default 5) after an untimed warm-up of each, so that a change in the
machine's load falls on both; it prints the min and the median of each side
and the ratio of each. Speed lives here only; the tests time nothing.

Default run (``--device cpu`` unless asked otherwise):

0. ``vit_tiny_synth``, the studies' ViT, on the depth-3 grid (8x8 images, 5
   channels; token patch ``--patch-size``, default 1; mask ratio
   ``--mask-ratio``, default 0.75; batch ``--batch``), one training step
   against (a) the MLP MAE of the default study (``mlp``, encoder and decoder
   256-256), (b) timm's ``VisionTransformer`` of the same width and depth on
   all tokens, (c) the thinned ``vit_small_synth`` that
   ``bench/identifiability.py --arch vit`` trains (the ViT before
   ``vit_tiny_synth``); ``--tiny-only`` runs these alone;
1. ``vit_small_synth`` (16x16x6 synthetic images, batch ``--batch``): one
   training step (forward, backward, AdamW) with timm's fused attention,
   against the same step with the fused kernel switched off;
2. the whole ``hlvm.train`` loop on online simulated data (simulation,
   masking, logging; timed from its first step to its last, so without the
   one-off setup), against the bare step. The loop runs bf16 autocast on CUDA
   and fp32 on CPU whatever ``--dtype`` says, and so does its baseline;
3. ``mae_vit_base_patch16`` at 224, batch ``--base-batch``: the MAE training
   step (75% masked) against timm's ``VisionTransformer`` of the same encoder
   size on the full images; ``--base-repeats`` sets its repeats (seconds a
   step on a 2-core CPU, 20 s under load), ``--skip-base`` leaves it out.

``--model NAME`` (a ViT config) instead measures what limits training that
model, e.g. on a GPU ``--device cuda --model mae_vit_base_patch16 --dtype bf16``:

a. images/s of the MAE training step at ``--mask-ratio`` against timm's
   ``VisionTransformer`` of the same size (full images, no decoder), batch
   ``--batch``, in ``--dtype`` (bf16: ``torch.autocast``);
b. images/s of the data path alone: ``hlvm.data.pretrain_dataset`` (MAE's
   random resized crop, flip, normalise) through a ``DataLoader`` with
   ``--num-workers`` workers, batch ``--batch``, copied to the device; on the
   ImageFolder ``--data``, or without it on a temporary folder of
   ``--synthetic-images`` smooth random 500x375 JPEGs (ImageNet's most common
   size);
c. which of the two is the lower rate, i.e. limits training.

Bad options are one ``error: ...`` line and exit code 2; ``--device cuda``
without CUDA is one of them.

``--threads N`` sets torch's threads (default torch's own: the core count).
Every comparison prints the load average before and after it: on a shared
machine the figures mean little without it.

Run: ``python bench/train.py [--repeats 5] [--batch 256] [--base-repeats 5]``,
``python bench/train.py --tiny-only --threads 1 [--patch-size 2] [--mask-ratio 0.5]``,
or ``python bench/train.py --device cuda --model mae_vit_base_patch16 --dtype bf16``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import torch

Side = Callable[[], float]  # one timed measurement: seconds per step (or per batch)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, exit 2, like the hlvm CLI
        print(f"error: {message}", file=sys.stderr)
        sys.exit(2)


class BenchError(Exception):
    """Bad input found before anything is timed; printed as one line, exit 2."""


# ----------------------------------------------------------------------------- timing


def synchronizer(device: torch.device) -> Callable[[], None]:
    """What makes a timer see finished work: CUDA kernels run asynchronously."""
    return torch.cuda.synchronize if device.type == "cuda" else (lambda: None)


def block(step: Callable[[], None], iters: int, sync: Callable[[], None]) -> Side:
    """A side that times ``iters`` consecutive calls of ``step``; returns seconds per call."""

    def measure() -> float:
        sync()
        t = time.perf_counter()
        for _ in range(iters):
            step()
        sync()
        return (time.perf_counter() - t) / iters

    return measure


def interleaved(a: Side, b: Side, repeats: int, warmup: int = 1) -> tuple[list[float], list[float]]:
    """``warmup`` untimed measurements of each side, then ``repeats`` of A, B, A, B, ...; seconds of each."""
    for _ in range(warmup):
        a()
        b()
    ta, tb = [], []
    for _ in range(repeats):
        ta.append(a())
        tb.append(b())
    return ta, tb


def load_average() -> str:
    return f"{os.getloadavg()[0]:.2f}" if hasattr(os, "getloadavg") else "n/a"


def report(title: str, per: int, a_name: str, ta: list[float], b_name: str, tb: list[float], load: str | None = None) -> None:
    """Min and median of each side as seconds and as images/s (``per`` images a step), and A's speed over B's.

    ``load``: the load average when the comparison began; the one now is printed beside it.
    """
    at = f"load average {load} -> {load_average()}" if load is not None else f"load average {load_average()}"
    print(f"== {title}: {len(ta)} interleaved repeats, {torch.get_num_threads()} torch thread(s), {at}")
    for name, ts in ((a_name, ta), (b_name, tb)):
        lo, mid = min(ts), statistics.median(ts)
        print(f"   {name:<48} s/step  min {lo:9.4f} median {mid:9.4f} | img/s max {per / lo:9.1f} median {per / mid:9.1f}")
    print(f"   speed A/B: x{min(tb) / min(ta):.2f} at the min, x{statistics.median(tb) / statistics.median(ta):.2f} at the median")


# ----------------------------------------------------------------------------- steps


def autocast(device: torch.device, dtype: str) -> Callable[[], Any]:
    """A fresh autocast context per step for bf16 (on the step's device), none for fp32."""
    if dtype == "bf16":
        return lambda: torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext


def set_fused_attn(model: torch.nn.Module, on: bool) -> int:
    """Switch timm's fused attention on or off in every attention block; returns how many."""
    n = 0
    for m in model.modules():
        if hasattr(m, "fused_attn"):
            m.fused_attn = on
            n += 1
    return n


def mae_step(model: torch.nn.Module, x: torch.Tensor, mask_ratio: float, ctx: Callable[[], Any],
             params: torch.nn.Module | None = None) -> Callable[[], None]:
    """One MAE training step on ``x`` (B, C, H, W): forward at ``mask_ratio``, backward, AdamW.

    ``params``: the module whose parameters AdamW steps, when ``model`` wraps it (``torch.compile``)."""
    from hlvm.train import param_groups

    opt = torch.optim.AdamW(param_groups(params or model, 0.05), lr=1e-4, betas=(0.9, 0.95))
    gen = torch.Generator().manual_seed(0)

    def step() -> None:
        with ctx():
            loss = model(x, mask_ratio=mask_ratio, generator=gen).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def timm_step(model: torch.nn.Module, x: torch.Tensor, ctx: Callable[[], Any],
              params: torch.nn.Module | None = None) -> Callable[[], None]:
    """One training step of a timm ViT on the full ``x``: pooled features (B, D), a squared-mean loss, AdamW."""
    from hlvm.train import param_groups

    opt = torch.optim.AdamW(param_groups(params or model, 0.05), lr=1e-4, betas=(0.9, 0.95))

    def step() -> None:
        with ctx():
            loss = model(x).float().pow(2).mean()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def timm_twin(cfg: Any) -> torch.nn.Module:
    """timm's ``VisionTransformer`` with the MAE encoder's size (no head: ``num_classes=0``)."""
    from timm.models.vision_transformer import VisionTransformer

    return VisionTransformer(
        img_size=cfg.img_hw, patch_size=cfg.patch_size, in_chans=cfg.in_chans, num_classes=0,
        embed_dim=cfg.embed_dim, depth=cfg.depth, num_heads=cfg.num_heads, mlp_ratio=cfg.mlp_ratio, qkv_bias=True,
    )  # fmt: skip


# ----------------------------------------------------------------------------- comparisons


#: The depth-3 grid of the studies (GridSpec(depth=3)): 8x8 images, 5 channels.
GRID3 = dict(img_size=8, in_chans=5)


def tiny_configs(patch_size: int) -> dict[str, Any]:
    """The models of the ``vit_tiny_synth`` comparisons on the depth-3 grid, by role."""
    from hlvm.models import get_config

    return {
        "tiny": get_config("vit_tiny_synth", patch_size=patch_size, mask_unit=patch_size, **GRID3),
        # the default study's MLP (studies/mask-sweep/config.json)
        "mlp": get_config("mlp", mlp_hidden=(256, 256), mlp_decoder_hidden=(256, 256), **GRID3),
        # bench/identifiability.py --arch vit: the ViT the README measured before vit_tiny_synth
        "before": get_config(
            "vit_small_synth", patch_size=patch_size, mask_unit=patch_size, embed_dim=64, depth=2, num_heads=4,
            decoder_embed_dim=32, decoder_depth=1, decoder_num_heads=4, **GRID3,
        ),
    }  # fmt: skip


def bench_tiny(device: torch.device, dtype: str, batch: int, ratio: float, patch: int, repeats: int, iters: int) -> None:
    """``vit_tiny_synth``'s training step against the study MLP, its timm twin and the ViT before it."""
    from hlvm.models import build_model

    cfgs = tiny_configs(patch)
    torch.manual_seed(0)
    x = torch.randn(batch, cfgs["tiny"].in_chans, *cfgs["tiny"].img_hw, device=device)
    sync = synchronizer(device)
    ctx = autocast(device, dtype)
    where = f"8x8x5 (depth-3 grid), token patch {patch}, mask ratio {ratio}, batch {batch}, {dtype}, {device.type}, {iters} step(s) a repeat"
    tiny = block(mae_step(build_model(cfgs["tiny"]).to(device), x, ratio, ctx), iters, sync)
    others = [
        ("mlp", mae_step(build_model(cfgs["mlp"]).to(device), x, ratio, ctx),
         "B: mlp MAE 256-256 (the default study's)"),
        ("timm", timm_step(timm_twin(cfgs["tiny"]).to(device), x, ctx),
         "B: timm ViT, same width and depth, all tokens"),
        ("before", mae_step(build_model(cfgs["before"]).to(device), x, ratio, ctx),
         "B: the ViT before (MLP x4, 4 heads, dec 32x1)"),
    ]  # fmt: skip
    for _, step, b_name in others:
        load = load_average()
        ta, tb = interleaved(tiny, block(step, iters, sync), repeats)
        report(f"vit_tiny_synth training step, {where}", batch, "A: vit_tiny_synth MAE", ta, b_name, tb, load)


def bench_fused(device: torch.device, dtype: str, batch: int, repeats: int, iters: int) -> None:
    from hlvm.models import build_model, get_config

    torch.manual_seed(0)
    cfg = get_config("vit_small_synth")
    x = torch.randn(batch, cfg.in_chans, *cfg.img_hw, device=device)
    fused, plain = build_model(cfg).to(device), build_model(cfg).to(device)
    set_fused_attn(plain, False)
    sync = synchronizer(device)
    ctx = autocast(device, dtype)
    ta, tb = interleaved(block(mae_step(fused, x, 0.75, ctx), iters, sync),
                         block(mae_step(plain, x, 0.75, ctx), iters, sync), repeats)
    report(f"vit_small_synth training step, batch {batch}, {dtype}, {device.type}, {iters} step(s) a repeat",
           batch, "A: fused attention (timm's default)", ta, "B: attention unfused", tb)


def bench_loop(device: torch.device, batch: int, repeats: int, steps: int) -> None:
    from hlvm.models import build_model, get_config
    from hlvm.train import TrainConfig, train

    dtype = "bf16" if device.type == "cuda" else "fp32"  # what hlvm.train runs on each device
    torch.manual_seed(0)
    cfg = get_config("vit_small_synth")
    x = torch.randn(batch, cfg.in_chans, *cfg.img_hw, device=device)
    bare = block(mae_step(build_model(cfg).to(device), x, 0.75, autocast(device, dtype)), steps - 1, synchronizer(device))
    tmp = tempfile.TemporaryDirectory()

    def loop() -> float:
        stamps: list[float] = []
        out = Path(tmp.name) / f"run{len(os.listdir(tmp.name))}"
        tc = TrainConfig(model="vit_small_synth", data="online", steps=steps, batch_size=batch, warmup=1,
                         ckpt_every=0, log_every=10, device=device.type, out=str(out))
        train(tc, progress=False, on_step=lambda step, info: stamps.append(time.perf_counter()))
        return (stamps[-1] - stamps[0]) / (steps - 1)  # first step to last: no setup, no final checkpoint

    with tmp:
        ta, tb = interleaved(loop, bare, repeats)
    report(f"hlvm.train loop vs bare step, vit_small_synth, batch {batch}, {dtype}, {device.type}, {steps - 1} steps a repeat",
           batch, "A: hlvm.train loop, online simulated data", ta, "B: bare training step, no data, no logging", tb)


def bench_vs_timm(cfg: Any, name: str, device: torch.device, dtype: str, batch: int, mask_ratio: float,
                  repeats: int, iters: int, compile: bool = False) -> float:
    """MAE training step against its timm twin; returns the MAE's median images/s."""
    from hlvm.models import build_model

    torch.manual_seed(0)
    x = torch.randn(batch, cfg.in_chans, *cfg.img_hw, device=device)
    sync = synchronizer(device)
    ctx = autocast(device, dtype)
    mae = build_model(cfg).to(device)
    twin = timm_twin(cfg).to(device)
    fmae, ftwin = (torch.compile(mae), torch.compile(twin)) if compile else (mae, twin)  # as hlvm.train --compile does
    ta, tb = interleaved(block(mae_step(fmae, x, mask_ratio, ctx, params=mae), iters, sync),
                         block(timm_step(ftwin, x, ctx, params=twin), iters, sync), repeats, warmup=3 if compile else 1)
    h, w = cfg.img_hw
    how = ", torch.compile on both sides" if compile else ""
    report(f"{name} training step at {w}x{h}, mask ratio {mask_ratio}, batch {batch}, {dtype}, {device.type}, "
           f"{iters} step(s) a repeat{how}", batch, "A: MAE: encoder on visible tokens, decoder", ta,
           "B: timm VisionTransformer, same size, all tokens", tb)
    return batch / statistics.median(ta)


def synthetic_jpegs(root: Path, n: int, seed: int = 0) -> float:
    """``n`` smooth random 500x375 JPEGs (ImageNet's most common size) in 4 class folders; returns their mean KiB."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    total = 0
    for k in range(n):
        folder = root / f"class{k % 4}"
        folder.mkdir(parents=True, exist_ok=True)
        # Low-frequency colour fields plus mild noise: photo-like JPEG sizes, unlike white noise.
        small = Image.fromarray(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)).resize((500, 375), Image.BICUBIC)
        pixels = np.asarray(small, dtype=np.float32) + rng.normal(0, 8, (375, 500, 3))
        path = folder / f"{k:05d}.jpg"
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path, quality=90)
        total += path.stat().st_size
    return total / n / 1024


def bench_loader(dataset: Any, device: torch.device, batch: int, workers: int, repeats: int, batches: int) -> float:
    """Images/s of the DataLoader alone, batches copied to ``device``; returns the median."""
    from torch.utils.data import DataLoader, RandomSampler

    # Each worker holds up to 2 batches ahead (prefetch_factor): drain that before timing, so the
    # timed batches are made while timed, not before.
    warm = 2 * max(1, workers) + 1
    sampler = RandomSampler(dataset, replacement=True, num_samples=batch * (warm + repeats * batches))
    loader = DataLoader(dataset, batch_size=batch, sampler=sampler, num_workers=workers,
                        pin_memory=device.type == "cuda", drop_last=True)
    sync = synchronizer(device)
    it = iter(loader)
    for _ in range(warm):
        next(it)[0].to(device, non_blocking=True)
    times = []
    for _ in range(repeats):
        sync()
        t = time.perf_counter()
        for _ in range(batches):
            next(it)[0].to(device, non_blocking=True)
        sync()
        times.append((time.perf_counter() - t) / batches)
    del it
    lo, mid = min(times), statistics.median(times)
    print(f"== data loading, {repeats} repeats of {batches} batches of {batch}, {workers} worker(s), to {device.type}")
    print(f"   {'hlvm.data.pretrain_dataset through a DataLoader':<48} s/batch min {lo:8.4f} median {mid:8.4f} | "
          f"img/s max {batch / lo:9.1f} median {batch / mid:9.1f}")
    return batch / mid


# ----------------------------------------------------------------------------- main


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = _Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where the models run (default cpu)")
    p.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32", help="bf16: torch.autocast on the device")
    p.add_argument("--model", default=None, help="a ViT config of hlvm.models: measure what limits training it (a-c)")
    p.add_argument("--img-size", type=int, default=None, help="override the --model config's image size")
    p.add_argument("--in-chans", type=int, default=None, help="override its channels (image folders: 1, 3 or 4)")
    p.add_argument("--mask-ratio", type=float, default=0.75, help="MAE mask ratio of the --model step (default 0.75)")
    p.add_argument("--batch", type=int, default=256, help="images per step (and per loader batch); default 256")
    p.add_argument("--repeats", type=int, default=5, help="interleaved A/B repeats of every comparison (default 5)")
    p.add_argument("--iters", type=int, default=None,
                   help="steps per timed repeat (default 10 for the vit_tiny_synth comparisons, whose step takes "
                        "tens of ms, else 2)")
    p.add_argument("--loop-steps", type=int, default=11, help="hlvm.train steps per repeat of the loop comparison")
    p.add_argument("--compile", action="store_true",
                   help="with --model: torch.compile both sides of the step comparison (hlvm train --compile)")
    p.add_argument("--base-batch", type=int, default=4, help="batch of the default run's ViT-B comparison (default 4)")
    p.add_argument("--base-repeats", type=int, default=None, help="repeats of that comparison (default --repeats)")
    p.add_argument("--skip-base", action="store_true", help="leave out the default run's ViT-B comparison")
    p.add_argument("--tiny-only", action="store_true", help="run the vit_tiny_synth comparisons (0) alone")
    p.add_argument("--patch-size", type=int, default=1, help="token patch of vit_tiny_synth and its twins: 1, 2, 4 or 8")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default torch's own, the core count)")
    p.add_argument("--data", default=None, help="ImageFolder root for the data-loading rate (--model runs)")
    p.add_argument("--synthetic-images", type=int, default=512, help="JPEGs to generate when --data is not given")
    p.add_argument("--num-workers", type=int, default=min(10, os.cpu_count() or 1),
                   help="DataLoader workers (default min(10, cores), 10 as mae)")
    p.add_argument("--loader-batches", type=int, default=8, help="batches per timed repeat of the data loading")
    args = p.parse_args(argv)
    for name, low in (("batch", 1), ("repeats", 1), ("iters", 1), ("loop_steps", 2), ("base_batch", 1),
                      ("base_repeats", 1), ("synthetic_images", 1), ("num_workers", 0), ("loader_batches", 1),
                      ("img_size", 1), ("in_chans", 1), ("threads", 1)):
        value = getattr(args, name)
        if value is not None and value < low:
            p.error(f"--{name.replace('_', '-')} must be >= {low}, got {value}")
    if not 0.0 < args.mask_ratio < 1.0:
        p.error(f"--mask-ratio must be in (0, 1), got {args.mask_ratio}")
    if args.patch_size not in (1, 2, 4, 8):
        p.error(f"--patch-size must divide the 8x8 grid (1, 2, 4 or 8), got {args.patch_size}")
    if args.tiny_only and args.model is not None:
        p.error("--tiny-only runs the vit_tiny_synth comparisons; --model runs another; give one")
    return args


def model_config(args: argparse.Namespace) -> Any:
    from hlvm.errors import HlvmError
    from hlvm.models import get_config

    overrides = {k: getattr(args, k) for k in ("img_size", "in_chans") if getattr(args, k) is not None}
    try:
        cfg = get_config(args.model, **overrides)
    except HlvmError as e:
        raise BenchError(str(e)) from None
    if cfg.arch != "vit":
        raise BenchError(f"--model {args.model} is not a ViT; the timm comparison needs one")
    from hlvm.data import channel_stats

    h, w = cfg.img_hw
    if h != w:
        raise BenchError(f"the data path crops square images; --model {args.model} takes {h}x{w}")
    try:
        channel_stats(cfg.in_chans)
    except HlvmError as e:
        raise BenchError(f"{e} (--model {args.model}; set --in-chans)") from None
    if args.data is not None and not Path(args.data).is_dir():
        raise BenchError(f"--data {args.data} is not a folder")
    return cfg


def open_images(args: argparse.Namespace, cfg: Any, tmp: Path) -> Any:
    from hlvm.data import pretrain_dataset
    from hlvm.errors import HlvmError

    root = Path(args.data) if args.data is not None else tmp / "images"
    if args.data is None:
        kib = synthetic_jpegs(root, args.synthetic_images)
        print(f"data: {args.synthetic_images} synthetic 500x375 JPEGs, mean {kib:.0f} KiB, in {root}")
    else:
        print(f"data: {root}")
    try:
        return pretrain_dataset(root, cfg.img_hw[0], cfg.in_chans)
    except HlvmError as e:
        raise BenchError(str(e)) from None


def run(args: argparse.Namespace) -> None:
    if args.device == "cuda" and not torch.cuda.is_available():
        raise BenchError("--device cuda, but CUDA is not available on this machine (use --device cpu)")
    if args.device == "cuda" and args.dtype == "bf16" and not torch.cuda.is_bf16_supported():
        raise BenchError(f"--dtype bf16, but {torch.cuda.get_device_name()} does not support bf16")
    device = torch.device(args.device)
    cfg = model_config(args) if args.model is not None else None  # a bad --model or --data fails before any timing
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    where = torch.cuda.get_device_name() if device.type == "cuda" else f"{torch.get_num_threads()} CPU threads"
    load = f", load average {os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else ""
    print(f"torch {torch.__version__}, {where} (OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}){load}")
    if cfg is None:
        bench_tiny(device, args.dtype, args.batch, args.mask_ratio, args.patch_size, args.repeats, args.iters or 10)
        if args.tiny_only:
            return
        bench_fused(device, args.dtype, args.batch, args.repeats, args.iters or 2)
        bench_loop(device, args.batch, args.repeats, args.loop_steps)
        if not args.skip_base:
            from hlvm.models import get_config

            base = get_config("mae_vit_base_patch16")
            bench_vs_timm(base, "mae_vit_base_patch16", device, args.dtype, args.base_batch, 0.75,
                          args.base_repeats or args.repeats, 1)
        return
    with tempfile.TemporaryDirectory() as tmp:
        dataset = open_images(args, cfg, Path(tmp))  # bad --data fails before any timing
        step_rate = bench_vs_timm(cfg, args.model, device, args.dtype, args.batch, args.mask_ratio, args.repeats,
                                  args.iters or 2, compile=args.compile)
        load_rate = bench_loader(dataset, device, args.batch, args.num_workers, args.repeats, args.loader_batches)
    slow, fast = ("data loading", "the training step") if load_rate < step_rate else ("the training step", "data loading")
    print(f"limit: {slow} ({min(load_rate, step_rate):.1f} img/s median) is slower than {fast} "
          f"({max(load_rate, step_rate):.1f} img/s median), so it sets the training rate")


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    try:
        run(args)
    except BenchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
