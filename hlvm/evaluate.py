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
  noises included (docs/theory.md's ``s_m`` holds them): a floor, near 0 for any
  encoder since ``s_m`` is independent of ``x_mc``; it checks the metric, not
  the model;
- ``r2_private_visible_noise``: over ``s_mc``'s noises, the visible pixels'
  own noises included: the leak, near 0 only for a ``dim_c``-wide
  bottleneck (Assumption 2), kept apart from identifiability;
- ``r2_private_masked_latent_noise``, ``r2_private_visible_latent_noise``:
  the same over latent nodes only (NaN when no latent has that role);
- ``*_linear``: the same three figures from the linear probe alone (linear
  accessibility: Kong et al. judge what a level holds by linear probing; a
  wide code may hold a latent yet not make it linearly readable);
- ``selectivity`` (and ``selectivity_linear``): ``r2_ca_noise -
  r2_private_visible_noise``, what the code holds of the shared side beyond
  what it keeps of the visible side's private noise: about 1 for Theorem 2's
  ``dim_c``-wide code, about 0 for the raw visible pixels (they hold both);
- ``agreement``: ``mean_CA clip(R^2) - mean_{s_m} clip(R^2) - mean_{s_mc}
  clip(R^2)``, each mean over that class's noise dims (a class with no dims
  adds 0), R^2 clipped to [0, 1] since a negative held-out R^2 means no
  information. It rewards exactly what Theorem 2 asks of a ``dim_c``-wide
  code: all of ``CA`` and nothing private to either side. The oracle (the true
  ``c``) scores 1; pure noise and the raw visible pixels both score 0 (the
  pixels hold all of ``CA`` and all of ``s_mc``); a code that holds only the
  root scores the root's share of ``CA``. It is the old "1 - class-balanced
  mean error" score rescaled so that noise gives 0 instead of 2/3;
- ``agreement_ca_vs_masked``: ``mean_CA clip(R^2) - mean_{s_m} clip(R^2)``,
  the part that does not ask for a bottleneck (a wide encoder may keep
  ``s_mc``): 1 for the oracle and for the pixels, 0 for noise;
- ``cca_c``: the canonical correlations of ``c_hat`` with ``c``'s values,
  summed over the first ``dim_c`` and divided by ``dim_c`` (correlations a
  narrower code cannot have count as 0), only when ``c_hat`` is at most twice
  as wide as ``dim_c`` (a wide code scores a high CCA against anything; NaN
  otherwise);
- ``effective_rank``: of ``c_hat`` (Roy and Vetterli);
- counts and sizes: ``n_samples``, ``code_dim``, ``dim_c``, ``n_c``,
  ``n_ca``, ``n_private_masked``, ``n_private_visible``, ``mask_ratio``,
  ``mask_unit``.

Rows cover latent nodes; the pixels' own noises enter the summary (the
private classes), not the rows.

:func:`evaluate_encoder` needs no trained model (any ``encode_fn``);
:func:`evaluate_run` loads a run folder, draws held-out samples from its data
source, and encodes them with the trained model or a control.

Controls (:data:`CONTROLS`), encoders that learned nothing, to judge every
trained result against, and the trained model's own encoder are in
:mod:`hlvm.encoders` (re-exported here): ``pixels``, ``untrained``,
``oracle``, and the linear controls of the same width, ``pca``,
``random_projection``, ``linear_mae`` (:mod:`hlvm.controls`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import networkx as nx
import numpy as np

from hlvm import graphs
from hlvm.controls import LINEAR_CONTROLS, PixelMoments

# The encoders (the trained model's and the controls') live in hlvm.encoders; all of these stay importable from here.
from hlvm.encoders import (
    CONTROLS,
    ENCODERS,
    WIDTH_CONTROLS,
    EncodeFn,
    control_encoder,
    model_encoder,
    oracle_encoder,
    pixels_encoder,
)
from hlvm.errors import ConfigError, DataError, MaskError
from hlvm.io import nan_to_none
from hlvm.locate import SharedLatents, locate
from hlvm.masks import Mask, load_spec, mask_from_spec
from hlvm.metrics import cca, effective_rank, r2_probes

__all__ = [
    "CONTROLS",
    "WIDTH_CONTROLS",
    "ENCODERS",
    "pixels_encoder",
    "oracle_encoder",
    "model_encoder",
    "control_encoder",
    "ROW_COLUMNS",
    "SUMMARY_KEYS",
    "EvaluationResult",
    "EncodeFn",
    "evaluate_encoder",
    "agreement_score",
    "heldout_dataset",
    "probe_dilution",
    "resolve_mask",
    "evaluate_run",
    "result_json",
    "training_moments",
    "EVAL_SPAWN_KEY",
    "TRAIN_SPAWN_KEY",
]

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
    "r2_ca_noise_linear",
    "r2_private_masked_noise_linear",
    "r2_private_visible_noise_linear",
    "selectivity",
    "selectivity_linear",
    "agreement",
    "agreement_ca_vs_masked",
    "cca_c",
    "effective_rank",
)

#: Held-out samples come from noise seeded ``SeedSequence(seed, spawn_key=EVAL_SPAWN_KEY)``:
#: a stream apart from the simulator's mixing ``(0,)`` and stored-sample blocks ``(1, k)``.
EVAL_SPAWN_KEY = (0xE7A1,)
#: Training images for the linear controls of an online run: ``SeedSequence(seed, spawn_key=TRAIN_SPAWN_KEY)``,
#: a stream apart from the held-out samples' (an online run's own batches are not stored).
TRAIN_SPAWN_KEY = (0xE7A2,)

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
        return nan_to_none(
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


def _mean(a: np.ndarray) -> float:
    return float(np.mean(a)) if a.size else float("nan")


def agreement_score(r2: np.ndarray, classes: np.ndarray, targets: Mapping[Any, float]) -> float:
    """``sum_k sign_k * mean_{j in k} clip(r2_j, 0, 1)`` with sign +1 for a class of target 1 and -1 for target 0.

    ``r2`` and ``classes`` are per-dimension; a class of ``targets`` with no
    dimension adds 0; dimensions whose class is not in ``targets`` are
    ignored. NaN if no class of ``targets`` is present. With targets
    ``{CA: 1, s_m: 0, s_mc: 0}`` this is the module docstring's agreement:
    1 for the true ``c``, 0 for noise and for the raw visible pixels.

    >>> agreement_score(np.array([1.0, 0.9, 0.2, -0.1]), np.array(["ca", "ca", "m", "m"]), {"ca": 1, "m": 0})
    0.85
    """
    r2 = np.clip(np.asarray(r2, dtype=float), 0.0, 1.0)
    present = [(k, t) for k, t in targets.items() if (classes == k).any()]
    if not present:
        return float("nan")
    return float(sum((1.0 if t else -1.0) * r2[classes == k].mean() for k, t in present))


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

    def dims(
        roles: tuple[str, ...], cols: dict[str, tuple[int, int]], among: list[str] = nodes, probe: str = "best"
    ) -> np.ndarray:
        idx = [np.arange(*cols[v]) for v in among if v in cols and located.roles[v] in roles]
        return getattr(probes, probe)[np.concatenate(idx)] if idx else np.zeros(0)

    # Per noise dim (latents and pixels): which class of the theory's membership it belongs to.
    every = nodes + pixels
    noise_r2 = np.concatenate([probes.best[slice(*noise_cols[v])] for v in every])
    noise_class = np.concatenate(
        [np.full(noise_cols[v][1] - noise_cols[v][0], "ca" if located.roles[v] in CA_ROLES else located.roles[v]) for v in every]
    )
    c_values = np.concatenate([np.asarray(dataset.latent(v), dtype=np.float64).reshape(n, -1) for v in located.c], axis=1) if located.c else None
    cca_c = float("nan")
    if c_values is not None and code.shape[1] <= 2 * located.dim_c:
        # Over dim_c correlations: those a narrower code cannot have count as 0.
        cca_c = float(cca(code, c_values).correlations[: located.dim_c].sum() / located.dim_c)
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
        "r2_ca_noise_linear": _mean(dims(CA_ROLES, noise_cols, probe="linear")),
        "r2_private_masked_noise_linear": _mean(dims(("private_masked",), noise_cols, every, "linear")),
        "r2_private_visible_noise_linear": _mean(dims(("private_visible",), noise_cols, every, "linear")),
        "selectivity": float("nan"),
        "selectivity_linear": float("nan"),
        "agreement": agreement_score(noise_r2, noise_class, {"ca": 1.0, "private_masked": 0.0, "private_visible": 0.0}),
        "agreement_ca_vs_masked": agreement_score(noise_r2, noise_class, {"ca": 1.0, "private_masked": 0.0}),
        "cca_c": cca_c,
        "effective_rank": erank,
    }
    for suffix in ("", "_linear"):
        summary[f"selectivity{suffix}"] = summary[f"r2_ca_noise{suffix}"] - summary[f"r2_private_visible_noise{suffix}"]
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


def probe_dilution(dataset: Any, graph: nx.DiGraph, mask: Mask, *, extra: int = 60, seed: int = 0) -> dict[str, float]:
    """What dimensions that carry nothing cost the probes: R^2(CA) of the true ``c`` alone and with ``extra`` noise dims.

    The oracle code (``c``'s values) is probed as it is and with ``extra``
    independent standard-normal columns appended (seeded by ``seed``); returns
    ``{"clean", "diluted", "lin_clean", "lin_diluted"}``, the mean R^2 over
    ``CA``'s noise dims (best probe, then the linear probe alone). The kernel
    probe's single length scale is what loses: irrelevant dims dilute its
    distances.
    """
    oracle = oracle_encoder(dataset, graph)
    noise = np.random.default_rng(seed).standard_normal((len(dataset.images), extra))

    def diluted(images: np.ndarray, m: Mask) -> np.ndarray:
        return np.concatenate([oracle(images, m), noise], axis=1)

    a = evaluate_encoder(oracle, dataset, graph, mask, seed).summary
    b = evaluate_encoder(diluted, dataset, graph, mask, seed).summary
    return {"clean": a["r2_ca_noise"], "diluted": b["r2_ca_noise"],
            "lin_clean": a["r2_ca_noise_linear"], "lin_diluted": b["r2_ca_noise_linear"]}


# ----------------------------------------------------------------------------- trained runs


def heldout_dataset(data: str, n: int, seed: int | Sequence[int]) -> Any:
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
    entropy = [seed] if isinstance(seed, int | np.integer) and not isinstance(seed, bool) else list(seed)
    if not entropy or any(isinstance(s, bool) or not isinstance(s, int | np.integer) or s < 0 for s in entropy):
        raise ConfigError(f"seed must be a non-negative integer or a sequence of them, got {seed!r}")
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
    rng = np.random.default_rng(np.random.SeedSequence([int(s) for s in entropy], spawn_key=EVAL_SPAWN_KEY))
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



def training_moments(data: str, n: int, seed: int | Sequence[int] = 0) -> PixelMoments:
    """Pixel moments of a run's *training* images, for the linear controls (:class:`hlvm.controls.PixelMoments`).

    A ``hlvm simulate`` folder: its stored images (what training read; the
    first ``n``). ``online[:config.json]``: ``n`` fresh samples of its
    simulator with noise seeded ``SeedSequence(seed, spawn_key=TRAIN_SPAWN_KEY)``,
    a stream apart from the held-out samples' (:func:`heldout_dataset`).
    """
    from hlvm import simulate

    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 2:
        raise ConfigError(f"n must be an integer >= 2 (training images for the linear controls), got {n!r}")
    if data.startswith("imagefolder:"):
        raise DataError(f"run data {data!r} are real images without known latents; evaluate needs simulated data")
    if data == "online" or data.startswith("online:"):
        from hlvm.train import open_data

        sim = open_data(data).simulator
        entropy = [seed] if isinstance(seed, int | np.integer) else list(seed)
        rng = np.random.default_rng(np.random.SeedSequence([int(s) for s in entropy], spawn_key=TRAIN_SPAWN_KEY))
        return PixelMoments.of(sim.sample(int(n), rng).images)
    ds = simulate.load_dataset(data, mmap=True)
    return PixelMoments.of(ds.images[: int(n)])


def evaluate_run(
    run_dir: str | os.PathLike[str],
    mask: Mask | Mapping[str, Any] | str | os.PathLike[str],
    *,
    n: int = 2000,
    seed: int = 0,
    batch_size: int = 256,
    device: str = "cpu",
    control: str | None = None,
    width: int | None = None,
    n_train: int = 20000,
    **probe_options: Any,
) -> EvaluationResult:
    """:func:`evaluate_encoder` for the trained model of a run folder, or for a control beside it.

    Loads the run (:func:`hlvm.train.load_run`; :class:`DataError` without a
    checkpoint), draws ``n`` held-out samples (:func:`heldout_dataset`),
    resolves ``mask`` against the data's graph (:func:`resolve_mask`;
    :class:`MaskError` if its image shape differs from the run's), encodes the
    visible part with ``model.encode(imgs, mask)`` and probes it. The probes'
    split is seeded by ``seed`` too. ``control`` (one of :data:`CONTROLS`)
    encodes the same samples under the same mask with that control instead:
    ``untrained`` is the run's architecture at its seeded initialisation; a
    linear control is ``width`` wide (default the run's code width), ``pca``
    and ``linear_mae`` fitted on ``n_train`` training images
    (:func:`training_moments`), the random projection seeded by the run's seed.
    """
    from hlvm.train import load_run

    if control is not None and control not in CONTROLS:
        raise ConfigError(f"unknown control {control!r}; choose from {', '.join(CONTROLS)}")
    if width is not None and (isinstance(width, bool) or not isinstance(width, int) or width < 1):
        raise ConfigError(f"width must be a positive integer, got {width!r}")
    if width is not None and control not in LINEAR_CONTROLS:
        raise ConfigError(f"width sets a linear control's code width ({', '.join(LINEAR_CONTROLS)}), not the {control or 'trained'} encoder's")
    model, cfg = load_run(run_dir)
    data = heldout_dataset(cfg.data, n, seed)
    mask = resolve_mask(mask, data.graph)
    model_hw = tuple(model.cfg.img_hw)
    if tuple(data.images.shape[2:]) != model_hw:
        raise DataError(f"the run's model takes {model_hw[0]}x{model_hw[1]} images but its data are {data.images.shape[2]}x{data.images.shape[3]}")
    if control is None:
        encode = model_encoder(model.to(device), batch_size=batch_size, device=device)
    else:
        moments = training_moments(cfg.data, n_train, cfg.seed) if control in ("pca", "linear_mae") else None
        encode = control_encoder(control, dataset=data, graph=data.graph, model_config=model.cfg, seed=cfg.seed,
                                 width=width, moments=moments)
    result = evaluate_encoder(encode, data, data.graph, mask, seed, **probe_options)
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
        "encoder": control or "trained",
    }
    return EvaluationResult(result.rows, result.summary, result.by_level, result.located, result.mask, meta)


def result_json(result: EvaluationResult) -> str:
    """The result as one JSON document (NaN as ``null``)."""
    return json.dumps(result.to_json(), indent=2)
