"""Linear probing of a frozen encoder, as MAE does it, plus a full-batch L-BFGS probe.

MAE's linear probe (``main_linprobe.py``) puts ``BatchNorm1d(affine=False)``
in front of one ``Linear`` layer: the BatchNorm whitens each feature with
batch statistics (running statistics at test time), so the learning rate does
not depend on the feature scale, and having no affine parameters it stays a
linear classifier. Large runs train it with LARS (:class:`LARS`, as MAE's
``util/lars.py``: layer-wise trust ratio, no weight decay or adaptation for
biases and 1-d parameters), base lr 0.1 scaled by ``batch / 256``.

For small data, :func:`fit_lbfgs` solves the same model full-batch: features
standardised with the training split's mean and variance (what
``BatchNorm1d(affine=False)`` converges to), then multinomial logistic
regression with an L2 penalty by L-BFGS; a convex problem, so no schedule to
tune.

Everything here acts on arrays of features, ``(n_samples, n_features)``;
:func:`extract_features` and :func:`probe_run` connect it to a trained run.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from hlvm.errors import ConfigError, DataError

__all__ = [
    "LARS",
    "LinearProbe",
    "ProbeConfig",
    "ProbeResult",
    "stratified_split",
    "fit_lbfgs",
    "fit_sgd",
    "fit_probe",
    "extract_features",
    "load_encoder",
    "probe_run",
    "MIN_HELD_OUT",
    "SmallHeldOutWarning",
]

Method = Literal["lbfgs", "lars", "sgd"]
Pool = Literal["cls", "mean"]


class LARS(torch.optim.Optimizer):
    """SGD with momentum and layer-wise adaptive rate scaling (You et al., 2017), as MAE uses it.

    For each parameter with more than one dimension, the update
    ``g + weight_decay * w`` is rescaled by the trust ratio
    ``trust_coefficient * ||w|| / ||g + weight_decay * w||`` (1 where either norm
    is 0), then goes through momentum. Biases and other 1-d parameters get plain
    momentum SGD without weight decay, as in MAE's ``util/lars.py``.
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 0.0,
        weight_decay: float = 0.0,
        momentum: float = 0.9,
        trust_coefficient: float = 0.001,
    ) -> None:
        if lr < 0 or weight_decay < 0 or not 0 <= momentum < 1 or trust_coefficient <= 0:
            raise ConfigError(
                f"LARS needs lr >= 0, weight_decay >= 0, momentum in [0, 1), trust_coefficient > 0; got "
                f"lr={lr}, weight_decay={weight_decay}, momentum={momentum}, trust_coefficient={trust_coefficient}"
            )
        defaults = dict(lr=lr, weight_decay=weight_decay, momentum=momentum, trust_coefficient=trust_coefficient)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                d_p = p.grad
                if p.ndim > 1:
                    d_p = d_p.add(p, alpha=group["weight_decay"])
                    param_norm = torch.norm(p)
                    update_norm = torch.norm(d_p)
                    one = torch.ones_like(param_norm)
                    q = torch.where(
                        param_norm > 0.0,
                        torch.where(update_norm > 0, group["trust_coefficient"] * param_norm / update_norm, one),
                        one,
                    )
                    d_p = d_p.mul(q)
                state = self.state[p]
                if "mu" not in state:
                    state["mu"] = torch.zeros_like(p)
                mu = state["mu"]
                mu.mul_(group["momentum"]).add_(d_p)
                p.add_(mu, alpha=-group["lr"])
        return loss


class LinearProbe(nn.Module):
    """``BatchNorm1d(affine=False)`` then ``Linear``: MAE's linear-probe head on frozen features.

    The linear weight starts as ``trunc_normal(std=0.01)`` and the bias at 0,
    as in MAE.
    """

    def __init__(self, in_features: int, num_classes: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm1d(in_features, affine=False, eps=1e-6)
        self.linear = nn.Linear(in_features, num_classes)
        nn.init.trunc_normal_(self.linear.weight, std=0.01)
        nn.init.zeros_(self.linear.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, F) features -> (B, num_classes) logits."""
        return self.linear(self.bn(x))


@dataclass(frozen=True)
class ProbeConfig:
    """How to fit a probe.

    ``method``: ``"lbfgs"`` (full batch, small data), ``"lars"`` (MAE's recipe:
    LARS, blr 0.1, weight decay 0, cosine schedule with warmup) or ``"sgd"``
    (momentum SGD, same schedule). ``lr = blr * batch / 256``. ``l2`` is the
    L-BFGS penalty on the weights (mean loss + ``l2 * ||W||^2``).
    """

    method: Method = "lbfgs"
    pool: Pool = "cls"
    epochs: int = 90
    batch: int = 256
    blr: float = 0.1
    weight_decay: float = 0.0
    warmup_epochs: int = 10
    l2: float = 1e-4
    max_iter: int = 500
    test_fraction: float = 0.2
    seed: int = 0

    def __post_init__(self) -> None:
        if self.method not in ("lbfgs", "lars", "sgd"):
            raise ConfigError(f"probe method must be lbfgs, lars or sgd, got {self.method!r}")
        if self.pool not in ("cls", "mean"):
            raise ConfigError(f"probe pool must be cls or mean, got {self.pool!r}")
        for name in ("epochs", "batch", "max_iter"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"probe {name} must be a positive integer, got {v!r}")
        if not isinstance(self.warmup_epochs, int) or not 0 <= self.warmup_epochs <= self.epochs:
            raise ConfigError(f"probe warmup_epochs must be in [0, epochs], got {self.warmup_epochs!r}")
        for name in ("blr", "weight_decay", "l2"):
            v = getattr(self, name)
            if not isinstance(v, int | float) or not math.isfinite(v) or v < 0:
                raise ConfigError(f"probe {name} must be a finite number >= 0, got {v!r}")
        if not 0.0 < self.test_fraction < 1.0:
            raise ConfigError(f"probe test_fraction must be in (0, 1), got {self.test_fraction!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ProbeResult:
    """Top-1 accuracies (fractions in [0, 1]) and what produced them."""

    top1: float
    train_top1: float
    n_train: int
    n_test: int
    n_features: int
    n_classes: int
    config: ProbeConfig

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["config"] = self.config.to_dict()
        return d


def stratified_split(labels: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Train and test indices with ``round(test_fraction * n_c)`` test samples per class (at least 1
    where a class has 2 or more), drawn by ``np.random.default_rng(seed)``; both sorted."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        k = int(round(test_fraction * len(idx)))
        if len(idx) >= 2:
            k = min(max(k, 1), len(idx) - 1)
        else:
            k = 0
        test.append(idx[:k])
        train.append(idx[k:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def _as_tensors(x: Any, y: Any) -> tuple[torch.Tensor, torch.Tensor]:
    xt = torch.as_tensor(np.asarray(x), dtype=torch.float32)
    yt = torch.as_tensor(np.asarray(y), dtype=torch.long)
    if xt.ndim != 2 or yt.ndim != 1 or len(xt) != len(yt):
        raise DataError(f"probe needs features (n, F) and labels (n,), got {tuple(xt.shape)} and {tuple(yt.shape)}")
    if len(xt) == 0:
        raise DataError("probe got no samples")
    if not torch.isfinite(xt).all():
        raise DataError("probe features contain NaN or inf")
    return xt, yt


def _accuracy(logits: torch.Tensor, y: torch.Tensor) -> float:
    return float((logits.argmax(1) == y).float().mean()) if len(y) else float("nan")


def fit_lbfgs(
    x_train: Any, y_train: Any, num_classes: int, *, l2: float = 1e-4, max_iter: int = 500, seed: int = 0
) -> LinearProbe:
    """Full-batch L-BFGS on standardised features: the small-data probe.

    Returns a :class:`LinearProbe` in eval mode whose BatchNorm holds the
    training mean and (biased) variance, so ``probe(x)`` applies exactly the
    fitted classifier.
    """
    x, y = _as_tensors(x_train, y_train)
    x, y = x.double(), y
    mean = x.mean(0)
    var = x.var(0, unbiased=False)
    z = (x - mean) / torch.sqrt(var + 1e-6)  # (n, F), what BatchNorm1d(affine=False, eps=1e-6) computes
    g = torch.Generator().manual_seed(seed)
    w = (torch.randn(z.shape[1], num_classes, generator=g, dtype=torch.float64) * 0.01).requires_grad_()
    b = torch.zeros(num_classes, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=max_iter, history_size=20, line_search_fn="strong_wolfe",
                            tolerance_grad=1e-9, tolerance_change=1e-12)

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = nn.functional.cross_entropy(z @ w + b, y) + l2 * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    probe = LinearProbe(z.shape[1], num_classes)
    with torch.no_grad():
        probe.bn.running_mean.copy_(mean.float())
        probe.bn.running_var.copy_(var.float())
        probe.linear.weight.copy_(w.detach().T.float())
        probe.linear.bias.copy_(b.detach().float())
    return probe.eval()


def _cosine_lr(step: int, total: int, warmup: int, lr: float) -> float:
    # MAE's schedule: linear warmup, then half-cycle cosine to 0 (min_lr 0 for linear probing).
    if step < warmup:
        return lr * step / warmup
    return lr * 0.5 * (1.0 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def fit_sgd(x_train: Any, y_train: Any, num_classes: int, cfg: ProbeConfig, progress: bool = False) -> LinearProbe:
    """Minibatch training of :class:`LinearProbe` with LARS (or momentum SGD), MAE's schedule."""
    x, y = _as_tensors(x_train, y_train)
    g = torch.Generator().manual_seed(cfg.seed)
    torch.manual_seed(cfg.seed)  # the head's trunc_normal init draws from the global generator
    probe = LinearProbe(x.shape[1], num_classes)
    batch = min(cfg.batch, len(x))
    lr = cfg.blr * batch / 256
    params = list(probe.parameters())
    opt: torch.optim.Optimizer
    if cfg.method == "lars":
        opt = LARS(params, lr=lr, weight_decay=cfg.weight_decay)
    else:
        opt = torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=cfg.weight_decay)
    steps_per_epoch = max(1, len(x) // batch)  # drop_last, as MAE's loader: BatchNorm needs > 1 sample
    total = cfg.epochs * steps_per_epoch
    warmup = cfg.warmup_epochs * steps_per_epoch
    step = 0
    epochs: Iterable[int] = range(cfg.epochs)
    if progress:
        from rich.progress import track

        epochs = track(epochs, description=f"probe ({cfg.method})", transient=True)
    probe.train()
    for _ in epochs:
        perm = torch.randperm(len(x), generator=g)
        for i in range(steps_per_epoch):
            idx = perm[i * batch : (i + 1) * batch]
            for group in opt.param_groups:
                group["lr"] = _cosine_lr(step, total, warmup, lr)
            loss = nn.functional.cross_entropy(probe(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
    return probe.eval()


def fit_probe(
    x_train: Any, y_train: Any, x_test: Any, y_test: Any, cfg: ProbeConfig | None = None, progress: bool = False
) -> ProbeResult:
    """Fit a linear probe on the training split and report top-1 on both splits."""
    cfg = cfg or ProbeConfig()
    xtr, ytr = _as_tensors(x_train, y_train)
    xte, yte = _as_tensors(x_test, y_test)
    if xtr.shape[1] != xte.shape[1]:
        raise DataError(f"train and test features differ in width: {xtr.shape[1]} vs {xte.shape[1]}")
    num_classes = int(max(ytr.max(), yte.max())) + 1
    if cfg.method == "lbfgs":
        probe = fit_lbfgs(xtr, ytr, num_classes, l2=cfg.l2, max_iter=cfg.max_iter, seed=cfg.seed)
    else:
        if len(xtr) < 2:
            raise DataError("a minibatch probe needs at least 2 training samples (BatchNorm)")
        probe = fit_sgd(xtr, ytr, num_classes, cfg, progress=progress)
    with torch.no_grad():
        top1 = _accuracy(probe(xte), yte)
        train_top1 = _accuracy(probe(xtr), ytr)
    return ProbeResult(top1, train_top1, len(xtr), len(xte), xtr.shape[1], num_classes, cfg)


# --- frozen encoders -------------------------------------------------------------

_ENCODER_PREFIXES = ("patch_embed.", "blocks.", "cls_token", "pos_embed", "encoder")


def _state_dict_of(obj: Any) -> dict[str, Any] | None:
    if isinstance(obj, dict):
        for key in ("model", "state_dict"):
            if isinstance(obj.get(key), dict):
                return obj[key]
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return obj
    return None


def load_encoder(run: str | os.PathLike[str]) -> tuple[nn.Module, Any]:
    """Load a trained run's model for probing; raise :class:`DataError` if it holds no encoder.

    ``run`` is a run folder written by ``hlvm train`` (read by
    :func:`hlvm.train.load_run`). The checkpoint must contain encoder weights
    (``patch_embed.*``, ``blocks.*``, ``encoder*``, ...): a decoder-only or
    empty state dict is refused rather than probed at random initialisation.
    Returns ``(model in eval mode, TrainConfig)``.
    """
    path = Path(run)
    if not path.exists():
        raise DataError(f"run {path} does not exist")
    ckpt = path / "checkpoint.pt" if path.is_dir() else path
    if not ckpt.is_file():
        raise DataError(f"run {path} has no checkpoint.pt")
    try:
        raw = torch.load(ckpt, map_location="cpu", weights_only=False)
    except Exception as e:  # a truncated or foreign file: name it, one line
        raise DataError(f"cannot read checkpoint {ckpt}: {' '.join(str(e).split())[:200]}") from None
    state = _state_dict_of(raw)
    if state is None:
        raise DataError(f"checkpoint {ckpt} holds no model state dict")
    if not any(k.removeprefix("module.").startswith(_ENCODER_PREFIXES) for k in state):
        raise DataError(f"checkpoint {ckpt} has no encoder weights (no patch_embed/blocks/encoder keys); nothing to probe")
    from hlvm.train import load_run

    model, tcfg = load_run(path if path.is_dir() else path.parent)
    return model.eval(), tcfg


def _pool(tokens: torch.Tensor, pool: Pool) -> torch.Tensor:
    """(B, 1+L, D) encoder tokens, cls first -> (B, D)."""
    return tokens[:, 0] if pool == "cls" else tokens[:, 1:].mean(1)


@torch.no_grad()
def extract_features(
    model: nn.Module, loader: Iterable[tuple[torch.Tensor, torch.Tensor]], pool: Pool = "cls", progress: bool = False,
    total: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Frozen features of every batch: ``forward_features`` (nothing masked) pooled by cls token or mean.

    Models without ``forward_features`` (arch "mlp", whose encoder needs a
    non-empty mask) raise :class:`DataError`. Returns ``(features (n, D)
    float32, labels (n,))``.
    """
    model.eval()
    feats, labels = [], []
    it: Iterable[Any] = loader
    if progress:
        from rich.progress import track

        it = track(loader, description="features", total=total, transient=True)
    for imgs, y in it:
        imgs = imgs.float()
        if not hasattr(model, "forward_features"):
            raise DataError("linear probing needs a ViT encoder; an arch 'mlp' model only encodes masked images")
        f = _pool(model.forward_features(imgs), pool)  # (B, D)
        feats.append(f.float().cpu().numpy())
        labels.append(np.asarray(y))
    if not feats:
        raise DataError("no images to extract features from")
    return np.concatenate(feats), np.concatenate(labels)


def _model_cfg(model: nn.Module, tcfg: Any) -> Any:
    """The run's MAEConfig: the model's own ``cfg`` attribute, else the TrainConfig's model field."""
    for obj, name in ((model, "cfg"), (model, "config"), (tcfg, "model")):
        c = getattr(obj, name, None)
        if c is not None and hasattr(c, "img_size"):
            return c
    from hlvm.models import get_config

    return get_config(tcfg.model) if isinstance(getattr(tcfg, "model", None), str) else None


def parse_imagefolder(spec: str) -> Path:
    """``imagefolder:PATH`` (or a bare folder path) -> PATH; anything else is a :class:`DataError`."""
    if spec.startswith("imagefolder:"):
        return Path(spec.removeprefix("imagefolder:"))
    if ":" in spec.split(os.sep, 1)[0] and not Path(spec).exists():
        raise DataError(f"--data must be imagefolder:PATH for probing/reconstruction, got {spec!r}")
    return Path(spec)


#: Fewer held-out images than this make a top-1 too noisy to mean anything: the probe warns.
MIN_HELD_OUT = 20


class SmallHeldOutWarning(UserWarning):
    """A probe scored on fewer than :data:`MIN_HELD_OUT` held-out images."""


def labelled_splits(root: Path, img_size: int, in_chans: int, test_fraction: float, seed: int) -> tuple[Any, Any]:
    """(train, test) evaluation-transform datasets: ``root/train`` and ``root/val`` if both exist
    (ImageNet's layout), else one ImageFolder split per class by :func:`stratified_split`."""
    from torch.utils.data import Subset

    from hlvm.data import eval_dataset

    if (root / "train").is_dir() and (root / "val").is_dir():
        return eval_dataset(root / "train", img_size, in_chans), eval_dataset(root / "val", img_size, in_chans)
    ds = eval_dataset(root, img_size, in_chans)
    tr, te = stratified_split(np.asarray(ds.targets), test_fraction, seed)
    if len(te) == 0:
        raise DataError(f"image folder {root} is too small for a held-out split (one image per class)")
    return Subset(ds, tr.tolist()), Subset(ds, te.tolist())


def probe_run(
    run: str | os.PathLike[str], data: str, cfg: ProbeConfig | None = None, *, batch_size: int = 64,
    num_workers: int = 0, progress: bool = True,
) -> ProbeResult:
    """Linear-probe top-1 of a trained run's frozen encoder on an image folder's held-out split."""
    cfg = cfg or ProbeConfig()
    for name, value, low in (("batch size", batch_size, 1), ("num_workers", num_workers, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ConfigError(f"{name} must be an integer >= {low}, got {value!r}")
    root = parse_imagefolder(data)
    model, tcfg = load_encoder(run)
    mcfg = _model_cfg(model, tcfg)
    if mcfg is None:
        raise DataError(f"cannot tell the image size and channels of run {run}")
    train_ds, test_ds = labelled_splits(root, mcfg.img_size, mcfg.in_chans, cfg.test_fraction, cfg.seed)
    if len(test_ds) < MIN_HELD_OUT:
        import warnings

        warnings.warn(
            f"top-1 on {len(test_ds)} held-out images is noise (its SE can reach {50 / len(test_ds) ** 0.5:.0f} points); "
            f"a probe needs at least {MIN_HELD_OUT}: add images or raise --test-fraction",
            SmallHeldOutWarning, stacklevel=2)
    from torch.utils.data import DataLoader

    feats = []
    for ds in (train_ds, test_ds):
        loader = DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=num_workers)
        feats.append(extract_features(model, loader, cfg.pool, progress=progress, total=len(loader)))
    (xtr, ytr), (xte, yte) = feats
    return fit_probe(xtr, ytr, xte, yte, cfg, progress=progress)
