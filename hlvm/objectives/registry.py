"""The objectives by name, their presets, and :class:`Objective`, what hlvm.train calls.

hlvm's own: the papers each train with their own script; here one
:class:`Objective` (built by :func:`build_objective` from a name of
:data:`OBJECTIVES` and options) checks that a run can train it, attaches the
networks it trains beside the model, and returns ``(total_loss, parts)``.
Each objective's terms and options live in a module of its own
(:mod:`~hlvm.objectives.mae`, :mod:`~hlvm.objectives.umae`,
:mod:`~hlvm.objectives.mmae`, :mod:`~hlvm.objectives.mimae`,
:mod:`~hlvm.objectives.cmim`).

Presets (:data:`PRESETS`, usable wherever an objective name is):
``umae_official`` and ``mmae_official`` are the official code's settings;
``mimae_views`` is MI-MAE's control, the multi-view MAE without the
information terms (``infonce`` and ``club`` 0).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from hlvm.errors import ConfigError, HlvmError

from . import cmim, mae, mimae, mmae, umae
from .options import Opt, check_value

__all__ = ["OBJECTIVES", "PRESETS", "Objective", "build_objective", "objective_options"]

# Each objective's module: its OPTIONS, its MIN_BATCH and its terms().
_MODULES = {"mae": mae, "umae": umae, "mmae": mmae, "mimae": mimae, "cmim": cmim}
_SPECS: dict[str, dict[str, Opt]] = {kind: mod.OPTIONS for kind, mod in _MODULES.items()}

#: Named settings of an objective: ``name -> (objective, options)``.
PRESETS: dict[str, tuple[str, dict[str, Any]]] = {
    # zhangq327/U-MAE: pretrain.sh (--lamb 0.01), loss_func.py (whole N x N mean, GatherLayer),
    # models_mae.py (class token after a second final norm; global_pool False).
    "umae_official": ("umae", {"coef": 0.01, "diagonal": True, "feature": "cls", "ddp_grad": "local"}),
    # yifanzhang-pro/M-MAE: pretrain.sh (--lamb 1e-2, and 3 for mu written --uniformity_lamda 3), centering off
    # (the script's --centering False does not parse, --centering being a store-true flag: off is the code's
    # default; see hlvm.objectives.mmae), loss_func.py::uniformity_loss_TCR, models_mae.py as U-MAE's.
    "mmae_official": ("mmae", {"coef": 0.01, "mu": 3.0, "centering": False, "feature": "cls", "ddp_grad": "local"}),
    # MI-MAE's control (ours): the same complementary views in one pass and MAE's loss on each, without the
    # information terms; CLUB's q is still fitted (it touches only q), so the runs draw and train exactly alike.
    "mimae_views": ("mimae", {"infonce": 0.0, "club": 0.0}),
}

OBJECTIVES: frozenset[str] = frozenset(_SPECS) | frozenset(PRESETS)


def objective_options(name: str) -> dict[str, Any]:
    """The options ``name`` takes, with their defaults (a preset's own values included)."""
    kind, preset = PRESETS.get(name, (name, {}))
    if kind not in _SPECS:
        raise ConfigError(f"unknown objective {name!r}; known: {', '.join(sorted(OBJECTIVES))}")
    return {**{k: s.default for k, s in _SPECS[kind].items()}, **preset}


@dataclass(frozen=True)
class Objective:
    """``objective(output, model=None) -> (total_loss, parts)``; build with :func:`build_objective`.

    ``name`` is the name asked for (a preset's included), ``kind`` the
    objective it is (``mae``, ``umae``, ``mmae``, ``mimae``, ``cmim``),
    ``options`` every option resolved. ``parts`` maps each term's name to
    its detached scalar value (``"mae"``, the masked MSE, always), for
    logging.
    """

    name: str
    kind: str
    options: Mapping[str, Any] = field(default_factory=dict)

    @property
    def coefs(self) -> dict[str, Any]:
        """The resolved options (the name they had when every option was a coefficient)."""
        return dict(self.options)

    @property
    def views(self) -> int:
        """Masked views of each image per step: K complementary masks for ``mimae``, else 1."""
        return int(self.options["views"]) if self.kind == "mimae" else 1

    @property
    def disjoint(self) -> str:
        """What the views keep apart (``mimae``): ``"visible"`` or ``"masked"`` sets."""
        return str(self.options.get("disjoint", "visible"))

    @property
    def posterior(self) -> str | None:
        """The kind of code the model needs: ``"gaussian"`` for ``cmim``, else None (any)."""
        return "gaussian" if self.kind == "cmim" else None

    @property
    def min_batch(self) -> int:
        """The smallest batch its batch terms can work with."""
        return _MODULES[self.kind].MIN_BATCH

    # -- what the run must allow
    def check(self, mcfg: Any, *, mask_ratio: float, fixed_mask: bool = False, batch_size: int | None = None) -> None:
        """Raise :class:`ConfigError` if a run of model config ``mcfg`` cannot train this objective."""
        if batch_size is not None and batch_size < self.min_batch:
            raise ConfigError(
                f"objective {self.name!r} needs a batch of at least {self.min_batch} images for its batch term, "
                f"got batch_size {batch_size}"
            )
        if self.options.get("feature") == "cls" and mcfg.arch != "vit":
            raise ConfigError(f"objective {self.name!r} takes the class token (feature 'cls'): it needs a ViT, not the {mcfg.arch} MAE")
        if self.posterior is not None and mcfg.posterior != self.posterior:
            raise ConfigError(f"objective {self.name!r} needs a model with a {self.posterior} posterior (MAEConfig.posterior)")
        if self.views > 1:
            if fixed_mask:
                raise ConfigError(f"objective {self.name!r} draws {self.views} complementary masks per image: it cannot train on one fixed mask")
            from hlvm.models.masking import check_complementary

            try:
                check_complementary(mcfg.num_units, mask_ratio, self.views, self.disjoint)
            except HlvmError as e:
                raise ConfigError(f"objective {self.name!r}: {e}") from None

    def attach(self, model: nn.Module) -> None:
        """Give ``model`` the networks this objective trains beside it (``model.objective_heads``).

        ``mimae``: CLUB's approximation network (:func:`hlvm.objectives.mimae.attach`).
        Its weights are drawn from torch's global generator, after the
        model's (hlvm.train seeds it first), and it is saved and loaded with
        the model's state dict. Nothing for the other objectives; idempotent.
        """
        if self.kind == "mimae":
            mimae.attach(self, model)

    # -- the loss
    def __call__(self, output: Any, model: nn.Module | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        total, terms = self.terms(output, model)
        return total, {"mae": output.loss.detach(), **{k: v.detach() for k, v in terms.items()}}

    def terms(self, output: Any, model: nn.Module | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``(total_loss, {term: value})`` with every term still in the graph (for inspecting gradients).

        ``model`` is needed by objectives with networks of their own
        (``mimae``: the model :meth:`attach` gave them to).
        """
        if self.kind == "mae":  # MAE's loss alone: nothing to compute outside autocast
            terms, total = mae.terms(self, output, model)
            return total, terms
        # Every extra term in float32 outside autocast: logdet, squared cosines and log-densities lose
        # too much in bf16.
        with torch.autocast(device_type=output.loss.device.type, enabled=False):
            terms, total = _MODULES[self.kind].terms(self, output, model)
        return total, terms


def build_objective(name: str, **options: Any) -> Objective:
    """The objective ``name`` (:data:`OBJECTIVES`) with its options (each objective's module docstring).

    A preset (:data:`PRESETS`) resolves to its objective with the preset's
    values, which ``options`` may override. Unknown names or options, and
    values of the wrong kind, negative or non-finite weights, ``views < 2``
    or a non-positive ``mu`` / ``temperature`` / ``recon_std``, raise
    :class:`ConfigError` with one line naming the problem.
    """
    if name not in OBJECTIVES:
        raise ConfigError(f"unknown objective {name!r}; known: {', '.join(sorted(OBJECTIVES))}")
    kind, preset = PRESETS.get(name, (name, {}))
    allowed = _SPECS[kind]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        what = "takes no coefficients" if not allowed else f"takes {', '.join(allowed)}"
        raise ConfigError(f"objective {name!r} {what}; got {unknown[0]!r}")
    resolved = {**{k: s.default for k, s in allowed.items()}, **preset, **options}
    checked = {k: check_value(kind, k, allowed[k], v) for k, v in resolved.items()}
    return Objective(name, kind, checked)
