"""The study's grid: its config (checked), the items of work it makes, and each item's estimated cost.

An item is one committed piece of work (:mod:`hlvm.realmask.runner`): the
raw-pixel probe, the PCA control (``eval.pca``: the pixels' top principal
components, as many as the encoder's width), the untrained encoder of a
seed, or one training run per (grid point, seed). The grid is the ratios at the token-patch unit, then the
other units at ratio 0.75. The cost model (multiply-adds per phase) only
drives the progress bar's ETA.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hlvm.errors import ConfigError
from hlvm.io import read_json


def load_config(path: Path) -> dict[str, Any]:
    """The study config, checked: every key the runner reads, every model field, the grid's feasibility."""
    from hlvm.masks import num_masked
    from hlvm.models import MAEConfig

    cfg = read_json(path, "study config", ConfigError)
    for key in ("dataset", "model", "train", "grid", "eval"):
        if not isinstance(cfg.get(key), dict):
            raise ConfigError(f"study config {path} lacks the object {key!r}")
    g = cfg["grid"]
    try:
        ratios, unit0 = g["mask_ratios_at_unit"]["ratios"], g["mask_ratios_at_unit"]["unit"]
        units, ratio0 = g["mask_units_at_ratio"]["units"], g["mask_units_at_ratio"]["ratio"]
        seeds = g["seeds"]
        t = cfg["train"]
        _ = (t["steps"], t["batch_size"], t["blr"], t["warmup"], t["weight_decay"])
        e = cfg["eval"]
        _ = (e["crop_fraction"], e["probe"]["l2"], e["probe"]["max_iter"], e["recon_images"], e["recon_seed"],
             e["n_examples"])
    except (KeyError, TypeError) as err:
        raise ConfigError(f"study config {path} lacks {err}") from None
    for key in ("heldout_every", "heldout_n"):
        v = t.get(key, 0)
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise ConfigError(f"study config {path}: train.{key} must be an integer >= 0, got {v!r}")
    if bool(t.get("heldout_every", 0)) != bool(t.get("heldout_n", 0)):
        raise ConfigError(f"study config {path}: give train.heldout_every and train.heldout_n together (both > 0)")
    if not isinstance(e.get("pca", False), bool):
        raise ConfigError(f"study config {path}: eval.pca must be true or false, got {e['pca']!r}")
    if not seeds or len(set(seeds)) != len(seeds) or not all(isinstance(s, int) and s >= 0 for s in seeds):
        raise ConfigError(f"grid seeds must be distinct integers >= 0, got {seeds!r}")
    if "mask_unit" in cfg["model"]:
        raise ConfigError("model.mask_unit is set by the grid; remove it from the model")
    for r, u in [(r, unit0) for r in ratios] + [(ratio0, u) for u in units]:
        try:
            mcfg = MAEConfig(**cfg["model"], mask_unit=u)
        except TypeError as err:
            raise ConfigError(f"study config {path}: bad model field ({err})") from None
        num_masked(mcfg.num_units, r)  # MaskError (one line) for a ratio this unit grid cannot take
    return cfg


@dataclass(frozen=True)
class Item:
    """One committed piece of work."""

    kind: str  # "pixels", "pca", "untrained" or "run"
    name: str  # grid-point name (runs), else the kind
    seed: int | None
    mask_ratio: float | None = None
    mask_unit: int | None = None

    @property
    def folder(self) -> str:
        if self.kind in ("pixels", "pca"):
            return self.kind
        if self.kind == "untrained":
            return f"untrained-s{self.seed}"
        return f"runs/{self.name}-s{self.seed}"


def grid_points(cfg: dict[str, Any]) -> list[tuple[str, float, int]]:
    """``[(name, ratio, unit)]``: the ratios at the token-patch unit, then the other units at ratio 0.75."""
    g = cfg["grid"]
    pts = [(r, g["mask_ratios_at_unit"]["unit"]) for r in g["mask_ratios_at_unit"]["ratios"]]
    pts += [(g["mask_units_at_ratio"]["ratio"], u) for u in g["mask_units_at_ratio"]["units"]]
    out, seen = [], set()
    for r, u in pts:
        if (r, u) not in seen:
            seen.add((r, u))
            out.append((f"r{r:g}-u{u}", float(r), int(u)))
    return out


def items(cfg: dict[str, Any]) -> list[Item]:
    out = [Item("pixels", "pixels", None)]
    if cfg["eval"].get("pca", False):
        out.append(Item("pca", "pca", None))
    for seed in cfg["grid"]["seeds"]:
        out.append(Item("untrained", "untrained", seed))
        out += [Item("run", n, seed, r, u) for n, r, u in grid_points(cfg)]
    return out


def model_config(cfg: dict[str, Any], unit: int) -> Any:
    from hlvm.models import MAEConfig

    return MAEConfig(**cfg["model"], mask_unit=unit)


# --- cost model for the progress bar -------------------------------------------------------


def _encoder_cost(mcfg: Any, tokens: int) -> float:
    d, L = mcfg.embed_dim, tokens
    return mcfg.depth * (12 * d * d * L + 2 * L * L * d)


def _decoder_cost(mcfg: Any) -> float:
    d, L = mcfg.decoder_embed_dim, mcfg.num_tokens + 1
    return mcfg.decoder_depth * (12 * d * d * L + 2 * L * L * d)


#: L-BFGS in float64 runs far below the ViT's rate per multiply-add; this puts a probe's units on the same clock.
PROBE_SLOWDOWN = 8.0


def cost(item: Item, cfg: dict[str, Any], n_train: int, n_test: int) -> dict[str, float]:
    """Estimated multiply-adds of an item's phases: ``{"train": per step, "eval": all}`` (the bar's units)."""
    from hlvm.masks import num_masked

    mcfg = model_config(cfg, item.mask_unit or cfg["grid"]["mask_ratios_at_unit"]["unit"])
    ev = cfg["eval"]
    iters = ev["probe"]["max_iter"] * 1.25  # line searches: about 1.25 evaluations per iteration
    if item.kind == "pixels":
        dim = mcfg.in_chans * mcfg.img_hw[0] * mcfg.img_hw[1]
        return {"train": 0.0, "eval": PROBE_SLOWDOWN * 3 * n_train * dim * 10 * iters}
    if item.kind == "pca":
        dim = mcfg.in_chans * mcfg.img_hw[0] * mcfg.img_hw[1]
        return {"train": 0.0, "eval": n_train * dim * dim + PROBE_SLOWDOWN * 3 * n_train * mcfg.embed_dim * 10 * iters}
    feats = (n_train + n_test) * _encoder_cost(mcfg, mcfg.num_tokens + 1)
    probes = 2 * PROBE_SLOWDOWN * 3 * n_train * mcfg.embed_dim * 10 * iters
    recon = 3 * ev["recon_images"] * (_encoder_cost(mcfg, mcfg.num_tokens + 1) + _decoder_cost(mcfg)) * 20
    ev_cost = feats + probes + recon
    if item.kind == "untrained":
        return {"train": 0.0, "eval": ev_cost}
    per_unit = (item.mask_unit // mcfg.patch_size) ** 2
    visible = mcfg.num_tokens - num_masked(mcfg.num_units, item.mask_ratio) * per_unit
    step = 3 * cfg["train"]["batch_size"] * (_encoder_cost(mcfg, visible + 1) + _decoder_cost(mcfg))
    return {"train": step, "eval": ev_cost}
