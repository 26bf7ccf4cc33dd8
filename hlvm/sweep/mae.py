"""The MAE backend of a sweep: simulate once, train an MAE per point, evaluate it on held-out masks."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from hlvm.errors import ConfigError

from .grid import SweepConfig, SweepPoint

__all__ = ["MAEBackend", "eval_masks", "rows_of", "SUMMARY_TO_ROW"]


def _sim_config(cfg: SweepConfig, n: int):
    from hlvm.simulate import SimulateConfig

    data = {**cfg.simulate, "grid": dict(cfg.graph), "n": n, "seed": cfg.data_seed}
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
    from hlvm.masks import Mask, aligned_unit_masks

    _, h, w = image_shape(graph)
    branching = int(graph.graph.get("branching", 2))
    out = []
    for _ in range(k):
        s = int(rng.integers(2**31))
        if kind == "random":
            m = Mask.random(h, w, ratio=ratio, unit=unit, seed=s)
        else:
            m = Mask(aligned_unit_masks(1, h, w, ratio, unit, branching, np.random.default_rng(s))[0], unit)
        out.append((s, m))
    return out


class MAEBackend:
    """Simulate once (cached by config hash), train an MAE per point, evaluate it on held-out masks.

    Training always uses MAE's random masks of the point's ratio and unit
    (:func:`hlvm.train.train`); ``mask_kinds`` choose the *evaluation* masks.
    An aligned mask of the same ratio and unit masks the same number of whole
    units, so it lies in the support of the training masks.
    """

    def prepare(self, cfg: SweepConfig, out: Path) -> dict[str, Any]:
        from hlvm.simulate import simulate_to_dir
        from hlvm.train import resolve_model_config

        sim = _sim_config(cfg, cfg.n_train)
        key = hashlib.sha256(json.dumps(sim.to_dict(), sort_keys=True, default=str).encode()).hexdigest()[:12]
        data_dir = out / "data" / f"sim-{key}"
        if not data_dir.is_dir():
            data_dir.parent.mkdir(parents=True, exist_ok=True)
            simulate_to_dir(sim, data_dir, progress=False)
        graph = sim.build_graph()
        from hlvm.graphs import image_shape

        shape = image_shape(graph)
        # Every (unit, bottleneck) must make a valid model before any point starts.
        for u in cfg.mask_units:
            for d in cfg.bottlenecks:
                tc = self._train_config(cfg, None, str(data_dir), out, unit=u, bottleneck=d)
                resolve_model_config(tc, shape)
        return {"data_dir": str(data_dir), "sim": sim.to_dict(), "out": str(out)}

    @staticmethod
    def _train_config(cfg, point, data, out, *, unit=None, bottleneck=None, ratio=0.5, objective="mae", seed=0):  # noqa: ANN001, ANN205
        from hlvm.train import TrainConfig

        if point is not None:
            unit, bottleneck, ratio, objective, seed = (
                point.mask_unit, point.bottleneck, point.mask_ratio, point.objective, point.seed
            )
            run = str(out / "runs" / point.point_id)
        else:
            run = None
        extra = {"ckpt_every": 0, "log_every": 50, "device": "cpu", **cfg.train}
        model: Any = cfg.model
        if cfg.model_options:
            from hlvm.graphs import image_shape
            from hlvm.models import get_config

            c, h, _ = image_shape(cfg.grid_spec_graph())
            opts = {k: (tuple(v) if isinstance(v, list) else v) for k, v in cfg.model_options.items()}
            model = get_config(cfg.model, img_size=h, in_chans=c, **opts)
        return TrainConfig(
            model=model,
            data=data,
            objective=objective,
            mask_ratio=ratio,
            mask_unit=unit,
            bottleneck=bottleneck,
            steps=cfg.steps,
            batch_size=cfg.batch,
            blr=cfg.blr,
            seed=seed,
            out=run,
            **extra,
        )

    def predict(self, cfg: SweepConfig, context: Mapping[str, Any]) -> list[dict[str, Any]]:
        from hlvm.predict import predict

        graph = _sim_config(cfg, cfg.n_train).build_graph()
        return predict(graph, cfg.mask_ratios, cfg.mask_units, cfg.predict_masks, cfg.data_seed, kinds=cfg.mask_kinds)

    def run_point(self, cfg: SweepConfig, point: SweepPoint, context: Mapping[str, Any]) -> list[dict[str, Any]]:
        import torch

        from hlvm.evaluate import evaluate_encoder, heldout_dataset
        from hlvm.train import load_run, train

        out = Path(context["out"])
        tc = self._train_config(cfg, point, context["data_dir"], out)
        run_dir = train(tc, progress=False, overwrite=True)
        model, _ = load_run(run_dir)
        # Held-out samples: fresh noise from the training data's simulator, the same for every point.
        data = heldout_dataset(context["data_dir"], cfg.n_eval, cfg.data_seed)
        graph = data.graph

        reps = {"code": None}
        if point.bottleneck is not None:
            # The plain representation: the input of the projection to the bottleneck code.
            last = getattr(model, "bottleneck_proj", None)
            if last is None and isinstance(getattr(model, "encoder", None), torch.nn.Sequential):
                last = model.encoder[-1]
            if last is not None:
                reps["plain"] = last

        def encoder_for(layer: Any):  # noqa: ANN202
            @torch.no_grad()
            def encode(images: np.ndarray, mask: Any) -> np.ndarray:
                got: list[torch.Tensor] = []
                hook = layer.register_forward_pre_hook(lambda m, a: got.append(a[0])) if layer is not None else None
                try:
                    outs = []
                    for s in range(0, len(images), 1024):
                        x = torch.as_tensor(np.asarray(images[s : s + 1024]), dtype=torch.float32)
                        code = model.encode(x, mask)  # (B, d)
                        outs.append(got.pop() if layer is not None else code)
                finally:
                    if hook is not None:
                        hook.remove()
                return torch.cat(outs).double().numpy()

            return encode

        rng = np.random.default_rng(int(point.point_id, 16))
        rows: list[dict[str, Any]] = []
        for kind in cfg.mask_kinds:
            masks = eval_masks(kind, cfg.eval_masks, graph, point.mask_ratio, point.mask_unit, rng)
            for j, (mseed, mask) in enumerate(masks):
                for rep, layer in reps.items():
                    res = evaluate_encoder(encoder_for(layer), data, graph, mask, mseed)
                    rows.extend(rows_of(res, mask_kind=kind, mask_index=j, mask_seed=mseed, representation=rep))
        if not cfg.keep_checkpoints:
            from hlvm.train import CHECKPOINT

            (Path(run_dir) / CHECKPOINT).unlink(missing_ok=True)
        return rows


#: Mask-level numbers of :class:`hlvm.evaluate.EvaluationResult` copied into every row of that mask.
SUMMARY_TO_ROW = {
    "code_dim": "rep_dim",
    "dim_c": "dim_c",
    "agreement": "agreement",
    "agreement_ca_vs_masked": "agreement_ca_vs_masked",
    "effective_rank": "effective_rank",
    "cca_c": "cca_c",
}


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
