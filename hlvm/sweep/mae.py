"""The MAE backend of a sweep: simulate each seed's data, train an MAE per trained point, probe every point.

Every point of a (ratio, unit, seed) is probed on the same held-out samples
(fresh noise from the training data's simulator, seeded by ``(data_seed,
seed)``) under the same evaluation masks (seeded by ``(data_seed, seed, kind,
unit, ratio)``), with the same probe splits (seeded by each mask's seed): a
trained model and its controls differ in the encoder alone.

Controls: ``pixels`` and ``oracle`` read the held-out samples; ``untrained``
is the point's architecture at the seed's initialisation; ``pca`` and
``linear_mae`` are fitted, per evaluation mask, on the moments of the seed's
training images (the very samples the trained points of the seed train on,
never the held-out ones) at the width of the trained code they stand beside;
``random_projection`` is drawn from the seed.

Representations (the ``representation`` column): ``code`` (``c_hat``);
``plain`` (the input of the projection to a bottleneck code, with a
bottleneck); ``decoder`` (the decoder's hidden states when it decodes the
code under the evaluation mask: Livne's *informative embeddings*, for
``cmim`` points and, in a sweep with ``cmim``, for the untrained control of
each width, so that they have a control).
"""

from __future__ import annotations

import functools
import hashlib
import json
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from hlvm.controls import LINEAR_CONTROLS
from hlvm.errors import ConfigError

from .grid import SUMMARY_COLUMNS, SweepConfig, SweepPoint

__all__ = ["MAEBackend", "eval_masks", "point_masks", "rows_of", "decoder_encoder", "SUMMARY_TO_ROW"]

_KIND_CODE = {"random": 0, "aligned": 1, "block": 2}


def _damage(data_dir: Path, sim: Any) -> str | None:
    """Why the simulated folder ``data_dir`` is not ``sim``'s data (a truncated array, garbled JSON, another
    config), or ``None`` if it reads as it should."""
    from hlvm.errors import HlvmError
    from hlvm.simulate import load_dataset

    try:
        ds = load_dataset(data_dir, mmap=True)
    except (HlvmError, OSError, ValueError, KeyError, TypeError) as e:
        return " ".join(str(e).split())
    if len(ds) != sim.n or ds.config.to_dict() != sim.to_dict():
        return "it holds another simulate config"
    return None


def _sim_config(cfg: SweepConfig, n: int, seed: int | None = None):
    """The simulate config of the sweep's data; ``seed`` draws a replicate's samples of the same process."""
    from hlvm.simulate import SimulateConfig

    data = {**cfg.simulate, "grid": dict(cfg.graph), "n": n, "seed": cfg.data_seed, "sample_seed": seed}
    try:
        return SimulateConfig.from_dict(data)
    except TypeError as e:
        raise ConfigError(f"simulate: {e}") from None


def eval_masks(
    kind: str, k: int, graph: Any, ratio: float, unit: int, rng: np.random.Generator
) -> list[tuple[int, Any]]:
    """``k`` held-out evaluation masks of ``kind`` as ``(mask_seed, Mask)``.

    Each mask is drawn from its own ``mask_seed`` (taken from ``rng``), so a
    row's mask can be rebuilt from the seed alone: ``Mask.random(H, W, ratio,
    unit, seed=mask_seed)`` for random masks, ``aligned_unit_masks(1, ...,
    np.random.default_rng(mask_seed))`` for aligned ones.
    """
    from hlvm.graphs import image_shape
    from hlvm.masks import Mask, unit_masks

    _, h, w = image_shape(graph)
    branching = int(graph.graph.get("branching", 2))
    out = []
    for _ in range(k):
        s = int(rng.integers(2**31))
        if kind == "random":
            m = Mask.random(h, w, ratio=ratio, unit=unit, seed=s)
        else:
            m = Mask(unit_masks(kind, 1, h, w, ratio, unit, np.random.default_rng(s), branching=branching)[0], unit)
        out.append((s, m))
    return out


def decoder_encoder(model: Any, *, batch_size: int = 1024) -> Any:
    """``model.decoder_features`` of the visible part, in batches, as an ``hlvm.evaluate.EncodeFn``.

    The decoder sees only the code and the mask, so this too is a function
    of ``x_mc`` alone, as an encoder of the theory must be.
    """
    import torch

    @torch.no_grad()
    def encode(images: np.ndarray, mask: Any) -> np.ndarray:
        out = []
        for s in range(0, len(images), batch_size):
            batch = torch.as_tensor(np.asarray(images[s : s + batch_size]), dtype=torch.float32)
            out.append(model.decoder_features(batch, mask).float())  # (B, F)
        return torch.cat(out).double().numpy()

    return encode


def point_masks(cfg: SweepConfig, point: SweepPoint, kind: str, graph: Any) -> list[tuple[int, Any]]:
    """The evaluation masks of ``kind`` for every point of ``point``'s (seed, ratio, unit)."""
    entropy = [cfg.data_seed, point.seed, _KIND_CODE[kind], point.mask_unit, int(round(point.mask_ratio * 1_000_000))]
    return eval_masks(kind, cfg.eval_masks, graph, point.mask_ratio, point.mask_unit, np.random.default_rng(entropy))


class MAEBackend:
    """Simulate each seed's training data (cached by config hash), train an MAE per trained point, probe every point.

    A trained point trains on masks of its ``train_mask_kind`` (MAE's random
    masks or hierarchy-aligned ones) with its ratio and unit; ``mask_kinds``
    choose the *evaluation* masks. An aligned mask of the same ratio and unit
    masks the same number of whole units as a random one, so both kinds lie in
    the support of random training masks. Control points train nothing.
    """

    def prepare(self, cfg: SweepConfig, out: Path) -> dict[str, Any]:
        from hlvm.graphs import image_shape
        from hlvm.train import resolve_model_config

        shape = image_shape(_sim_config(cfg, cfg.n_train).build_graph())
        # Every model a point will build must be valid before anything is written.
        for p in cfg.points():
            if p.encoder in ("trained", "untrained"):
                resolve_model_config(self._train_config(cfg, p, "online", out), shape)
        return {"data_dirs": self._data(cfg, cfg.seeds, out), "out": str(out)}

    def prepare_point(self, cfg: SweepConfig, point: SweepPoint, out: Path) -> dict[str, Any]:
        """``prepare`` for one point, in a folder of its own (a Ray node without the sweep folder): its seed's data."""
        return {"data_dirs": self._data(cfg, [point.seed], out), "out": str(out)}

    @staticmethod
    def _data(cfg: SweepConfig, seeds: Any, out: Path) -> dict[str, str]:
        """Each seed's training data under ``out/data/``, simulated unless there and intact."""
        from hlvm.simulate import simulate_to_dir

        data_dirs = {}
        for seed in seeds:
            sim = _sim_config(cfg, cfg.n_train, seed)
            key = hashlib.sha256(json.dumps(sim.to_dict(), sort_keys=True, default=str).encode()).hexdigest()[:12]
            data_dir = out / "data" / f"sim-{key}"
            damage = _damage(data_dir, sim) if data_dir.exists() else None
            if damage is not None:  # the data are derived from seeds: make them again rather than fail every point
                warnings.warn(f"the sweep's data {data_dir} are damaged ({damage}); simulating them again", stacklevel=2)
            if not data_dir.exists() or damage is not None:
                data_dir.parent.mkdir(parents=True, exist_ok=True)
                simulate_to_dir(sim, data_dir, overwrite=True, progress=False)
            data_dirs[str(seed)] = str(data_dir)
        return data_dirs

    @staticmethod
    def _train_config(cfg: SweepConfig, point: SweepPoint, data: str, out: Path):  # noqa: ANN205
        from hlvm.train import TrainConfig

        extra = {"ckpt_every": 0, "log_every": 50, "device": "cpu", **cfg.train}
        model: Any = cfg.model
        if cfg.model_options:
            from hlvm.graphs import image_shape
            from hlvm.models import get_config

            c, h, _ = image_shape(cfg.grid_spec_graph())
            opts = {k: (tuple(v) if isinstance(v, list) else v) for k, v in cfg.model_options.items()}
            # The point's unit, as the TrainConfig below sets it: a patch in model_options larger than the
            # named config's own unit (vit_tiny_synth's 1) would otherwise fail before that override.
            opts["mask_unit"] = point.mask_unit
            model = get_config(cfg.model, img_size=h, in_chans=c, **opts)
        return TrainConfig(
            model=model,
            data=data,
            objective=point.objective or "mae",
            mask_ratio=point.mask_ratio,
            mask_kind=point.train_mask_kind or "random",
            boundary_ignore=point.boundary_ignore,
            mask_unit=point.mask_unit,
            bottleneck=point.width,
            steps=cfg.steps,
            batch_size=cfg.batch,
            blr=cfg.blr,
            seed=point.seed,
            out=str(out / "runs" / point.point_id),
            **extra,
        )

    def predict(self, cfg: SweepConfig, context: Mapping[str, Any]) -> list[dict[str, Any]]:
        from hlvm.predict import predict

        graph = _sim_config(cfg, cfg.n_train).build_graph()
        # The evaluation kinds, then every training distribution: what each would share, mask by mask.
        kinds = tuple(dict.fromkeys([*cfg.mask_kinds, *(a["train_mask_kind"] for a in cfg.trained_arms())]))
        spread = float(cfg.train.get("mask_spread", 0.2))
        return predict(graph, cfg.mask_ratios, cfg.mask_units, cfg.predict_masks, cfg.data_seed, kinds=kinds, spread=spread)

    def run_point(self, cfg: SweepConfig, point: SweepPoint, context: Mapping[str, Any]) -> list[dict[str, Any]]:
        from hlvm.evaluate import control_encoder, evaluate_encoder, model_encoder

        out = Path(context["out"])
        data_dir = context["data_dirs"][str(point.seed)]
        tc = self._train_config(cfg, point, data_dir, out)
        data = _heldout(data_dir, cfg.n_eval, cfg.data_seed, point.seed)
        graph = data.graph
        run_dir = None
        if point.encoder in ("trained", "untrained"):
            if point.trained:
                from hlvm.train import load_run, train

                run_dir = train(tc, progress=False, overwrite=True)
                model, _ = load_run(run_dir)
            else:
                from hlvm.graphs import image_shape
                from hlvm.train import init_model, resolve_model_config

                model = init_model(resolve_model_config(tc, image_shape(graph)), point.seed)
                model.eval()
            # With a bottleneck, the plain representation (the input of the projection to the code) too.
            reps = ["code"] + (["plain"] if point.width is not None else [])
            encoders = {rep: model_encoder(model, representation=rep) for rep in reps}
            # cMIM's informative embeddings; the untrained decoder's too, as their control.
            if point.objective == "cmim" or (not point.trained and "cmim" in cfg.objectives):
                encoders["decoder"] = decoder_encoder(model)
        elif point.encoder in LINEAR_CONTROLS:
            from hlvm.graphs import image_shape
            from hlvm.train import resolve_model_config

            # The width of the trained code it stands beside: a bottleneck's, else the model's own code width.
            width = point.width if point.width is not None else resolve_model_config(tc, image_shape(graph)).code_dim
            moments = _training_moments(data_dir) if point.encoder != "random_projection" else None
            encoders = {"code": control_encoder(point.encoder, dataset=data, graph=graph, seed=point.seed,
                                                width=width, moments=moments)}
        else:
            encoders = {"code": control_encoder(point.encoder, dataset=data, graph=graph)}

        rows: list[dict[str, Any]] = []
        for kind in cfg.mask_kinds:
            for j, (mseed, mask) in enumerate(point_masks(cfg, point, kind, graph)):
                for rep, encode in encoders.items():
                    res = evaluate_encoder(encode, data, graph, mask, mseed)
                    rows.extend(rows_of(res, mask_kind=kind, mask_index=j, mask_seed=mseed, representation=rep))
        if run_dir is not None and not cfg.keep_checkpoints:
            from hlvm.train import CHECKPOINT

            (Path(run_dir) / CHECKPOINT).unlink(missing_ok=True)
        return rows


@functools.lru_cache(maxsize=8)
def _heldout(data_dir: str, n: int, data_seed: int, seed: int) -> Any:
    """The held-out samples of a (seed, data) pair, cached: every point of a seed probes the same ones (read-only)."""
    from hlvm.evaluate import heldout_dataset

    return heldout_dataset(data_dir, n, (data_seed, seed))


@functools.lru_cache(maxsize=4)
def _training_moments(data_dir: str) -> Any:
    """Pixel moments of a seed's training images (every stored sample), cached for the points a worker runs."""
    from hlvm.controls import PixelMoments
    from hlvm.simulate import load_dataset

    return PixelMoments.of(load_dataset(data_dir, mmap=True).images)


#: Mask-level numbers of :class:`hlvm.evaluate.EvaluationResult` copied into every row of that mask.
SUMMARY_TO_ROW = {"code_dim": "rep_dim", "dim_c": "dim_c", **{k: k for k in SUMMARY_COLUMNS}}


def rows_of(result: Any, **mask_columns: Any) -> list[dict[str, Any]]:
    """Results rows of one evaluation: its per-node rows plus the mask's columns and summary numbers."""
    loc = result.located
    mask_cols = {
        **mask_columns,
        "mask_masked_frac": float(result.mask.ratio),
        "n_eval": int(result.summary["n_samples"]),
        **{dst: result.summary[src] for src, dst in SUMMARY_TO_ROW.items()},
        "c_abstraction": loc.abstraction,
        "frac_noise_shared": loc.frac_noise_shared,
    }
    return [{**mask_cols, **r} for r in result.rows]
