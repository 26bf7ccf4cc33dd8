"""What an encoder recovers under a fixed mask, set beside what Algorithm 1 predicts.

For a mask ``m`` and an encoder ``E``, the code is ``c_hat = E(x_mc)`` (the
visible part only). :func:`hlvm.locate.locate` gives every latent node a
role: ``"c"`` (the lowest shared latents), ``"shared"`` (the rest of ``CA``),
``"private_masked"`` (its noise is part of ``s_m``), ``"private_visible"``
(part of ``s_mc``). Each latent node's value and its own noise ``eps_v`` are
probed from ``c_hat`` with :func:`hlvm.metrics.r2_probes` (held-out linear
and RBF kernel ridge; the row's headline R^2 is the larger of the two).

Rows (:data:`ROW_COLUMNS`, one plain dict per latent node, raw numbers):

- ``node``, ``level``, ``role``, ``in_ca``, ``dim``, ``noise_dim``;
- ``r2_value`` / ``r2_noise``: mean over the node's value / noise dims of
  ``max(linear, kernel)`` held-out R^2, and the same per probe
  (``*_linear``, ``*_kernel``).

Summary (:data:`SUMMARY_KEYS`), every mean taken over noise dims (each dim
weighs the same) with R^2 as measured (unclipped):

- ``r2_ca_noise``: over the noises of ``CA`` (``c`` and ``shared``):
  identifiability, should be high (Theorem 2);
- ``r2_c_noise``, ``r2_c_value``: over ``c``'s own noises / values;
- ``r2_private_masked_noise``: over ``s_m``'s noises, the masked pixels' own
  noises included (THEORY.md's ``s_m`` holds them): a floor, near 0 for any
  encoder since ``s_m`` is independent of ``x_mc``; it checks the metric, not
  the model;
- ``r2_private_visible_noise``: over ``s_mc``'s noises, the visible pixels'
  own noises included: the leak, near 0 only for a ``dim_c``-wide
  bottleneck (Assumption 2), kept apart from identifiability;
- ``r2_private_masked_latent_noise``, ``r2_private_visible_latent_noise``:
  the same over latent nodes only (NaN when no latent has that role);
- ``agreement``: how well the measured recovery matches the theory's
  membership (``c_hat`` holds exactly the information of ``CA``), defined as
  ``1 - mean_k mean_{j in class k} |clip(R^2_j, 0, 1) - t_k|`` over the
  non-empty classes ``k`` of noise dims: ``CA`` (target ``t = 1``),
  ``s_m`` (``t = 0``) and ``s_mc`` (``t = 0``). 1 = perfect: every ``CA``
  noise fully recovered and nothing private. Why this one: an encoder that is
  an invertible function of ``c`` (Theorem 2) holds all of ``CA``'s noise and
  no private noise from either side, so both kinds of error count; a
  magnitude score (unlike a rank score such as AUC, which is 1 as soon as
  ``CA`` noise merely scores above private noise) rewards only full recovery;
  the classes are balanced so the many low-level private nodes do not swamp
  the few shared ones; negative held-out R^2 means no information, hence
  the clip;
- ``agreement_ca_vs_masked``: the same over ``CA`` and ``s_m`` only, the part
  of the prediction that does not ask for a bottleneck (a wide encoder may
  keep ``s_mc``, THEORY.md);
- ``cca_c``: mean canonical correlation of ``c_hat`` with ``c``'s values,
  only when ``c_hat`` is at most twice as wide as ``dim_c`` (a wide code
  scores a high CCA against anything; NaN otherwise);
- ``effective_rank``: of ``c_hat`` (Roy and Vetterli);
- counts and sizes: ``n_samples``, ``code_dim``, ``dim_c``, ``n_c``,
  ``n_ca``, ``n_private_masked``, ``n_private_visible``, ``mask_ratio``,
  ``mask_unit``.

Rows cover latent nodes; the pixels' own noises enter the summary (the
private classes), not the rows.

:func:`evaluate_encoder` needs no trained model (any ``encode_fn``);
:func:`evaluate_run` loads a run folder, draws held-out samples from its data
source, and encodes them with the trained model.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import networkx as nx
import numpy as np

from hlvm import graphs
from hlvm.errors import ConfigError, DataError, MaskError
from hlvm.locate import SharedLatents, locate
from hlvm.masks import Mask, load_spec, mask_from_spec
from hlvm.metrics import cca, effective_rank, r2_probes

__all__ = [
    "ROW_COLUMNS",
    "SUMMARY_KEYS",
    "EvaluationResult",
    "EncodeFn",
    "evaluate_encoder",
    "agreement_score",
    "heldout_dataset",
    "resolve_mask",
    "evaluate_run",
    "result_json",
    "EVAL_SPAWN_KEY",
]

#: ``encode_fn(images (N, C, H, W), mask) -> c_hat (N, d)``: the encoder sees the visible part only.
EncodeFn = Callable[[np.ndarray, Mask], np.ndarray]

ROW_COLUMNS = (
    "node",
    "level",
    "role",
    "in_ca",
    "dim",
    "noise_dim",
    "r2_value",
    "r2_noise",
    "r2_value_linear",
    "r2_value_kernel",
    "r2_noise_linear",
    "r2_noise_kernel",
)

SUMMARY_KEYS = (
    "n_samples",
    "code_dim",
    "dim_c",
    "n_c",
    "n_ca",
    "n_private_masked",
    "n_private_visible",
    "mask_ratio",
    "mask_unit",
    "r2_ca_noise",
    "r2_c_noise",
    "r2_c_value",
    "r2_private_masked_noise",
    "r2_private_visible_noise",
    "r2_private_masked_latent_noise",
    "r2_private_visible_latent_noise",
    "agreement",
    "agreement_ca_vs_masked",
    "cca_c",
    "effective_rank",
)

#: Held-out samples come from noise seeded ``SeedSequence(seed, spawn_key=EVAL_SPAWN_KEY)``:
#: a stream apart from the simulator's mixing ``(0,)`` and stored-sample blocks ``(1, k)``.
EVAL_SPAWN_KEY = (0xE7A1,)

CA_ROLES = ("c", "shared")


@dataclass(frozen=True, eq=False)
class EvaluationResult:
    """Rows (one plain dict per latent node, :data:`ROW_COLUMNS`), the summary, and what produced them.

    ``by_level`` maps each latent level to the mean noise R^2 of its nodes
    (all roles). ``located`` is Algorithm 1's answer for the mask; ``meta``
    says where the code came from (filled by :func:`evaluate_run`).
    """

    rows: list[dict[str, Any]]
    summary: dict[str, float | int]
    by_level: dict[int, float]
    located: SharedLatents
    mask: Mask
    meta: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """JSON-ready: NaN becomes ``null``."""
        return _nan_to_none(
            {
                "summary": self.summary,
                "by_level": {str(k): x for k, x in self.by_level.items()},
                "c": list(self.located.c),
                "shared": list(self.located.shared),
                "mask": self.mask.to_spec()["grid"],
                "meta": self.meta,
                "rows": self.rows,
            }
        )


def _nan_to_none(obj: Any) -> Any:
    if isinstance(obj, float) and math.isnan(obj):
        return None
    if isinstance(obj, dict):
        return {k: _nan_to_none(x) for k, x in obj.items()}
    if isinstance(obj, list | tuple):
        return [_nan_to_none(x) for x in obj]
    return obj


def _mean(a: np.ndarray) -> float:
    return float(np.mean(a)) if a.size else float("nan")


def agreement_score(r2: np.ndarray, classes: np.ndarray, targets: Mapping[Any, float]) -> float:
    """``1 - mean over non-empty classes k of mean_{j in k} |clip(r2_j, 0, 1) - targets[k]|``.

    ``r2`` and ``classes`` are per-dimension; dimensions whose class is not in
    ``targets`` are ignored. NaN if no class is present.

    >>> agreement_score(np.array([1.0, 0.9, 0.0, -0.1]), np.array(["ca", "ca", "m", "m"]), {"ca": 1, "m": 0})
    0.975
    """
    r2 = np.clip(np.asarray(r2, dtype=float), 0.0, 1.0)
    errors = [np.abs(r2[classes == k] - t).mean() for k, t in targets.items() if (classes == k).any()]
    return float(1.0 - np.mean(errors)) if errors else float("nan")


def evaluate_encoder(
    encode_fn: EncodeFn,
    dataset: Any,
    graph: nx.DiGraph,
    mask: Mask,
    rng: np.random.Generator | int,
    *,
    test_size: float = 0.25,
    **probe_options: Any,
) -> EvaluationResult:
    """Probe every latent node's value and noise from ``encode_fn``'s code of the visible part.

    Parameters
    ----------
    encode_fn : ``(images (N, C, H, W), mask) -> (N, d)``; must use only the
        visible pixels (the caller's contract; an oracle may cheat on purpose).
    dataset : samples with ``.images`` (N, C, H, W) and ``.latent(v)`` /
        ``.noise(v)`` for every latent ``v`` (a :class:`hlvm.simulate.Dataset`).
    graph : the generating graph (Algorithm 1 runs on it).
    mask : the fixed evaluation mask, the same for every sample.
    rng : seed or Generator of the probes' train/test split.
    test_size, probe_options : passed to :func:`hlvm.metrics.r2_probes`.

    Returns
    -------
    :class:`EvaluationResult` (module docstring for rows and summary).
    """
    if not isinstance(mask, Mask):
        raise MaskError(f"mask must be a hlvm.masks.Mask, got {type(mask).__name__}")
    _, h, w = graphs.image_shape(graph)
    images = dataset.images
    if tuple(images.shape[2:]) != (h, w):
        raise DataError(f"images are {images.shape[2]}x{images.shape[3]} but the graph's image is {h}x{w}")
    if mask.shape != (h, w):
        raise MaskError(f"mask is {mask.shape[0]}x{mask.shape[1]} but the images are {h}x{w}")
    located = locate(graph, mask)
    code = np.asarray(encode_fn(images, mask), dtype=np.float64)
    n = len(images)
    if code.ndim != 2 or code.shape[0] != n:
        raise DataError(f"encoder output must be (n_samples={n}, d), got shape {code.shape}")

    nodes = graphs.latent_nodes(graph)
    # One target matrix for all values and noises, so both probes share one split and one kernel per gamma.
    blocks, value_cols, noise_cols, start = [], {}, {}, 0
    for kind, cols, get in (("value", value_cols, dataset.latent), ("noise", noise_cols, dataset.noise)):
        for v in nodes:
            arr = np.asarray(get(v), dtype=np.float64).reshape(n, -1)  # (N, dim or noise_dim)
            cols[v] = (start, start + arr.shape[1])
            start += arr.shape[1]
            blocks.append(arr)
    # The pixels' own noises belong to s_m / s_mc too: they make the floor and the leak defined for every mask.
    pixels = graphs.observed_nodes(graph)
    for v in pixels:
        arr = np.asarray(dataset.noise(v), dtype=np.float64).reshape(n, -1)  # (N, noise_dim)
        noise_cols[v] = (start, start + arr.shape[1])
        start += arr.shape[1]
        blocks.append(arr)
    targets = np.concatenate(blocks, axis=1)  # (N, latent dims + latent and pixel noise dims)
    probes = r2_probes(code, targets, random_state=rng, test_size=test_size, **probe_options)

    rows = []
    for v in nodes:
        a = graph.nodes[v]
        vs, ns = slice(*value_cols[v]), slice(*noise_cols[v])
        rows.append(
            {
                "node": v,
                "level": int(a["level"]),
                "role": located.roles[v],
                "in_ca": located.roles[v] in CA_ROLES,
                "dim": int(a["dim"]),
                "noise_dim": int(a["noise_dim"]),
                "r2_value": _mean(probes.best[vs]),
                "r2_noise": _mean(probes.best[ns]),
                "r2_value_linear": _mean(probes.linear[vs]),
                "r2_value_kernel": _mean(probes.kernel[vs]),
                "r2_noise_linear": _mean(probes.linear[ns]),
                "r2_noise_kernel": _mean(probes.kernel[ns]),
            }
        )

    def dims(roles: tuple[str, ...], cols: dict[str, tuple[int, int]], among: list[str] = nodes) -> np.ndarray:
        idx = [np.arange(*cols[v]) for v in among if v in cols and located.roles[v] in roles]
        return probes.best[np.concatenate(idx)] if idx else np.zeros(0)

    # Per noise dim (latents and pixels): which class of the theory's membership it belongs to.
    every = nodes + pixels
    noise_r2 = np.concatenate([probes.best[slice(*noise_cols[v])] for v in every])
    noise_class = np.concatenate(
        [np.full(noise_cols[v][1] - noise_cols[v][0], "ca" if located.roles[v] in CA_ROLES else located.roles[v]) for v in every]
    )
    c_values = np.concatenate([np.asarray(dataset.latent(v), dtype=np.float64).reshape(n, -1) for v in located.c], axis=1) if located.c else None
    cca_c = float("nan")
    if c_values is not None and code.shape[1] <= 2 * located.dim_c:
        cca_c = cca(code, c_values).mean
    try:
        erank = effective_rank(code)
    except DataError:  # an all-constant code has no directions
        erank = float("nan")
    count = {r: sum(1 for v in nodes if located.roles[v] == r) for r in ("c", "shared", "private_masked", "private_visible")}
    summary: dict[str, float | int] = {
        "n_samples": int(n),
        "code_dim": int(code.shape[1]),
        "dim_c": int(located.dim_c),
        "n_c": count["c"],
        "n_ca": count["c"] + count["shared"],
        "n_private_masked": count["private_masked"],
        "n_private_visible": count["private_visible"],
        "mask_ratio": float(mask.ratio),
        "mask_unit": int(mask.unit),
        "r2_ca_noise": _mean(dims(CA_ROLES, noise_cols)),
        "r2_c_noise": _mean(dims(("c",), noise_cols)),
        "r2_c_value": _mean(dims(("c",), value_cols)),
        "r2_private_masked_noise": _mean(dims(("private_masked",), noise_cols, every)),
        "r2_private_visible_noise": _mean(dims(("private_visible",), noise_cols, every)),
        "r2_private_masked_latent_noise": _mean(dims(("private_masked",), noise_cols)),
        "r2_private_visible_latent_noise": _mean(dims(("private_visible",), noise_cols)),
        "agreement": agreement_score(noise_r2, noise_class, {"ca": 1.0, "private_masked": 0.0, "private_visible": 0.0}),
        "agreement_ca_vs_masked": agreement_score(noise_r2, noise_class, {"ca": 1.0, "private_masked": 0.0}),
        "cca_c": cca_c,
        "effective_rank": erank,
    }
    by_level: dict[int, list[float]] = {}
    for v in nodes:
        by_level.setdefault(int(graph.nodes[v]["level"]), []).extend(probes.best[slice(*noise_cols[v])].tolist())
    return EvaluationResult(
        rows=rows,
        summary=summary,
        by_level={lvl: float(np.mean(x)) for lvl, x in sorted(by_level.items())},
        located=located,
        mask=mask,
    )


# ----------------------------------------------------------------------------- trained runs


def heldout_dataset(data: str, n: int, seed: int) -> Any:
    """``n`` samples the run never trained on, from the simulator behind its data spec.

    ``data`` is a :class:`hlvm.train.TrainConfig` data spec. A ``hlvm simulate``
    folder or ``online[:config.json]`` names a simulator (graph, mixing drawn
    from its config's seed, noise law); training used the folder's stored
    samples or the online stream, so the held-out samples are fresh ones from
    the same simulator, with noise seeded by ``SeedSequence(seed,
    spawn_key=EVAL_SPAWN_KEY)``, a stream neither ever draws from.
    Real-image data has no known latents: :class:`DataError`.
    """
    from hlvm import simulate

    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 8:
        raise ConfigError(f"n must be an integer >= 8 (held-out samples), got {n!r}")
    if data.startswith("imagefolder:"):
        raise DataError(f"run data {data!r} are real images without known latents; evaluate needs simulated data")
    if data == "online" or data.startswith("online:"):
        from hlvm.train import open_data

        sim = open_data(data).simulator
    else:
        ds = simulate.load_dataset(data, mmap=True)
        if ds.config is None:
            raise DataError(f"{data}: no simulate config to draw held-out samples from")
        sim = simulate.Simulator.from_config(ds.config, graph=ds.graph)
    rng = np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=EVAL_SPAWN_KEY))
    return sim.sample(int(n), rng)


def resolve_mask(mask: Mask | Mapping[str, Any] | str | os.PathLike[str], graph: nx.DiGraph) -> Mask:
    """A :class:`Mask` over ``graph``'s image from a Mask, a spec dict, or a spec file path.

    A spec that names its own ``"graph"`` must describe an image of the same
    shape as ``graph``'s (the run's data); otherwise :class:`MaskError`.
    """
    c, h, w = graphs.image_shape(graph)
    if isinstance(mask, str | os.PathLike):
        mask = load_spec(mask)
    if isinstance(mask, Mapping):
        spec = mask
        if "graph" in spec:
            try:
                other = graphs.read_graph(spec["graph"])
            except Exception as e:  # noqa: BLE001 - any unreadable graph is a mask-spec problem here
                raise MaskError(f"mask spec's graph: {e}") from None
            if graphs.image_shape(other)[1:] != (h, w):
                oh, ow = graphs.image_shape(other)[1:]
                raise MaskError(f"mask spec's graph has {oh}x{ow} images but the run's data are {h}x{w}")
        mask = mask_from_spec(spec, graphs.id_grid(graph), graphs.latent_nodes(graph))
    if not isinstance(mask, Mask):
        raise MaskError(f"mask must be a Mask, a spec dict or a spec file, got {type(mask).__name__}")
    if mask.shape != (h, w):
        raise MaskError(f"mask is {mask.shape[0]}x{mask.shape[1]} but the run's images are {h}x{w}")
    return mask


def _model_encoder(model: Any, batch_size: int, device: str) -> EncodeFn:
    import torch

    def encode(images: np.ndarray, mask: Mask) -> np.ndarray:
        out = []
        with torch.no_grad():
            for s in range(0, len(images), batch_size):
                batch = torch.as_tensor(np.asarray(images[s : s + batch_size]), dtype=torch.float32, device=device)
                out.append(model.encode(batch, mask).float().cpu().numpy())  # (B, d)
        return np.concatenate(out).astype(np.float64)

    return encode


def evaluate_run(
    run_dir: str | os.PathLike[str],
    mask: Mask | Mapping[str, Any] | str | os.PathLike[str],
    *,
    n: int = 2000,
    seed: int = 0,
    batch_size: int = 256,
    device: str = "cpu",
    **probe_options: Any,
) -> EvaluationResult:
    """:func:`evaluate_encoder` for the trained model of a run folder.

    Loads the run (:func:`hlvm.train.load_run`; :class:`DataError` without a
    checkpoint), draws ``n`` held-out samples (:func:`heldout_dataset`),
    resolves ``mask`` against the data's graph (:func:`resolve_mask`;
    :class:`MaskError` if its image shape differs from the run's), encodes the
    visible part with ``model.encode(imgs, mask)`` and probes it. The probes'
    split is seeded by ``seed`` too.
    """
    from hlvm.train import load_run

    model, cfg = load_run(run_dir)
    data = heldout_dataset(cfg.data, n, seed)
    mask = resolve_mask(mask, data.graph)
    model_hw = tuple(model.cfg.img_hw)
    if tuple(data.images.shape[2:]) != model_hw:
        raise DataError(f"the run's model takes {model_hw[0]}x{model_hw[1]} images but its data are {data.images.shape[2]}x{data.images.shape[3]}")
    model = model.to(device)
    result = evaluate_encoder(_model_encoder(model, batch_size, device), data, data.graph, mask, seed, **probe_options)
    meta = {
        "run": str(run_dir),
        "data": cfg.data,
        "model": cfg.model if isinstance(cfg.model, str) else cfg.model.arch,
        "objective": cfg.objective,
        "train_mask_ratio": cfg.mask_ratio,
        "mask_unit_model": int(model.cfg.mask_unit),
        "patch_size": int(model.cfg.patch_size),
        "bottleneck": model.cfg.bottleneck,
        "train_seed": cfg.seed,
        "eval_seed": int(seed),
    }
    return EvaluationResult(result.rows, result.summary, result.by_level, result.located, result.mask, meta)


def result_json(result: EvaluationResult) -> str:
    """The result as one JSON document (NaN as ``null``)."""
    return json.dumps(result.to_json(), indent=2)
