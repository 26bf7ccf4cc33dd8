"""A user's encoder as an :data:`hlvm.evaluate.EncodeFn`: from a Python callable, a ``hlvm train`` run, or timm.

What an encoder is handed (the theory's ``E(x_mc)``): a batch of images
``(B, C, H, W)`` with the masked pixels set to 0, and, if it takes a second
argument, the mask as an ``(H, W)`` bool array (``True`` = masked). What it
must return: codes ``(B, D)``, finite, ``D >= 1``, one row per image.

- a ``torch.nn.Module`` gets float32 tensors on the scoring device (it is put
  in ``eval()`` mode and run under ``no_grad``; its parameters must already be
  on that device) and the mask as a bool tensor;
- a plain function gets numpy float32 arrays and a numpy bool mask, and may
  return a numpy array or a tensor.

Every way an encoder can be wrong is an :class:`hlvm.errors.ConfigError`
(the module cannot be imported, the callable is missing, the code has the
wrong shape, holds NaN or infinity, or has width 0, the model sits on another
device), with one line naming it.
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hlvm.errors import ConfigError, DataError, HlvmError

__all__ = ["Encoder", "load_callable", "from_object", "from_run", "from_timm"]


@dataclass
class Encoder:
    """An encode function with what is known about it: how it was given, and its architecture when there is one.

    ``untrained`` builds the same architecture at a seeded initialisation
    (``untrained(seed) -> EncodeFn``), the ``untrained`` control; ``None``
    when the architecture is unknown (a plain function).
    """

    encode: Callable[[np.ndarray, Any], np.ndarray]
    info: dict[str, Any]
    untrained: Callable[[int], Callable[[np.ndarray, Any], np.ndarray]] | None = None


def load_callable(spec: str) -> Any:
    """``"MODULE:CALLABLE"`` -> the object ``CALLABLE()`` returns; the module is imported from the current folder or PYTHONPATH."""
    if not isinstance(spec, str) or spec.count(":") != 1 or not all(spec.split(":")):
        raise ConfigError(f"--encoder must be MODULE:CALLABLE (e.g. mymod:make), got {spec!r}")
    mod_name, attr = spec.split(":")
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(mod_name)
    except ModuleNotFoundError as e:
        if e.name == mod_name or mod_name.startswith(f"{e.name}."):
            raise ConfigError(f"--encoder {spec}: no module {mod_name!r} in the current folder or on PYTHONPATH") from None
        raise ConfigError(f"--encoder {spec}: importing {mod_name!r} failed: no module {e.name!r}") from None
    except HlvmError:
        raise
    except BaseException as e:  # noqa: BLE001 - any failure inside the user's module is the user's input
        if isinstance(e, KeyboardInterrupt):
            raise
        raise ConfigError(f"--encoder {spec}: importing {mod_name!r} failed: {type(e).__name__}: {e}") from None
    fn = getattr(module, attr, None)
    if fn is None:
        raise ConfigError(f"--encoder {spec}: module {mod_name!r} has no {attr!r}")
    if not callable(fn):
        raise ConfigError(f"--encoder {spec}: {attr!r} is not callable")
    try:
        return fn()
    except Exception as e:  # noqa: BLE001
        raise ConfigError(f"--encoder {spec}: {attr}() failed: {type(e).__name__}: {e}") from None


def _takes_mask(fn: Any) -> bool:
    """Whether ``fn`` accepts a second positional argument (the mask)."""
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return False
    if any(p.kind is p.VAR_POSITIONAL for p in params):
        return True
    pos = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return len(pos) >= 2


def _check_code(code: Any, n: int, what: str) -> np.ndarray:
    try:
        import torch

        if isinstance(code, torch.Tensor):
            code = code.detach().float().cpu().numpy()
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    try:
        arr = np.asarray(code, dtype=np.float64)
    except (TypeError, ValueError):
        raise ConfigError(f"{what} returned {type(code).__name__}, not an array of codes (B, D)") from None
    if arr.ndim != 2 or arr.shape[0] != n:
        raise ConfigError(f"{what} returned shape {tuple(arr.shape)} for a batch of {n} images; it must be (B, D) = ({n}, D)")
    if arr.shape[1] == 0:
        raise ConfigError(f"{what} returned codes of width 0; a code needs at least one dimension")
    if not np.isfinite(arr).all():
        bad = "NaN" if np.isnan(arr).any() else "infinite"
        raise ConfigError(f"{what} returned {bad} codes")
    return arr


def from_object(obj: Any, *, device: str = "cpu", batch_size: int = 256, info: dict[str, Any] | None = None,
                pass_mask: bool | None = None) -> Encoder:
    """An :class:`Encoder` of a ``torch.nn.Module`` or a plain function (module docstring).

    ``pass_mask``: hand the mask as a second argument; ``None`` decides from
    the signature (a second positional parameter). A library model whose
    second parameter means something else (timm's ``attn_mask``) needs
    ``False``.
    """
    import torch

    info = dict(info or {})
    if isinstance(obj, torch.nn.Module):
        params = list(obj.parameters()) + list(obj.buffers())
        where = {str(p.device) for p in params}
        want = str(torch.device(device))
        if where and where != {want} and not (want == "cuda" and all(w.startswith("cuda") for w in where)):
            raise ConfigError(f"the encoder's model is on {', '.join(sorted(where))} but scoring runs on {want}; "
                              f"move it (model.to({want!r})) or pass --device")
        obj.eval()
        takes = _takes_mask(obj.forward) if pass_mask is None else pass_mask

        @torch.no_grad()
        def encode(images: np.ndarray, mask: Any) -> np.ndarray:
            vis = torch.as_tensor(np.asarray(mask.visible), device=device)
            m = ~vis
            out = []
            for s in range(0, len(images), batch_size):
                x = torch.as_tensor(np.asarray(images[s : s + batch_size]), dtype=torch.float32, device=device)
                x = x * vis.to(x.dtype)  # (B, C, H, W), masked pixels zeroed
                try:
                    code = obj(x, m) if takes else obj(x)
                except Exception as e:  # noqa: BLE001
                    raise ConfigError(f"the encoder failed on a batch {tuple(x.shape)}: {type(e).__name__}: {e}") from None
                out.append(_check_code(code, len(x), "the encoder"))
            return np.concatenate(out)

        info.setdefault("kind", "torch.nn.Module")
        info.setdefault("class", type(obj).__qualname__)
        return Encoder(encode, info)
    if not callable(obj):
        raise ConfigError(f"the encoder must be a torch.nn.Module or a function of the images, got {type(obj).__name__}")
    takes = _takes_mask(obj) if pass_mask is None else pass_mask

    def encode_fn(images: np.ndarray, mask: Any) -> np.ndarray:
        vis = np.asarray(mask.visible)
        out = []
        for s in range(0, len(images), batch_size):
            x = np.asarray(images[s : s + batch_size], dtype=np.float32) * vis  # (B, C, H, W), masked pixels zeroed
            try:
                code = obj(x, ~vis) if takes else obj(x)
            except HlvmError:
                raise
            except Exception as e:  # noqa: BLE001
                raise ConfigError(f"the encoder failed on a batch {x.shape}: {type(e).__name__}: {e}") from None
            out.append(_check_code(code, len(x), "the encoder"))
        return np.concatenate(out)

    info.setdefault("kind", "function")
    info.setdefault("name", getattr(obj, "__qualname__", type(obj).__name__))
    return Encoder(encode_fn, info)


def from_run(run_dir: str | os.PathLike[str], *, device: str = "cpu", batch_size: int = 256) -> Encoder:
    """The trained model of a ``hlvm train`` run folder (``model.encode(images, mask)``), with its untrained twin."""
    from hlvm.evaluate import model_encoder
    from hlvm.train import init_model, load_run

    model, cfg = load_run(run_dir)
    mcfg = model.cfg

    def untrained(seed: int) -> Any:
        m = init_model(mcfg, seed)
        m.eval()
        return model_encoder(m, batch_size=batch_size)

    info = {"kind": "run", "run": str(Path(run_dir)), "model": mcfg.arch, "code_dim": int(mcfg.code_dim),
            "img_size": list(mcfg.img_hw), "in_chans": int(mcfg.in_chans), "train_seed": cfg.seed}
    return Encoder(model_encoder(model.to(device), batch_size=batch_size, device=device), info, untrained)


def from_timm(name: str, checkpoint: str | os.PathLike[str] | None, *, img_size: int, in_chans: int, device: str = "cpu",
              batch_size: int = 256, options: dict[str, Any] | None = None) -> Encoder:
    """A timm architecture at the suite's image size (``num_classes=0``: its pooled features), weights from ``checkpoint``.

    A checkpoint is a state dict, or a dict holding one under ``"model"`` or
    ``"state_dict"`` (mae's ``main_pretrain.py`` writes ``"model"``); the
    encoder's keys must all be there (a head or decoder beyond them is left
    out and named). Without a checkpoint the architecture is scored at its
    seeded initialisation.
    """
    try:
        import timm
    except ImportError:  # pragma: no cover - timm is a dependency
        raise ConfigError("--timm needs the timm package") from None
    import torch

    opts = dict(options or {})

    def build(seed: int) -> Any:
        torch.manual_seed(seed)
        try:
            return timm.create_model(name, pretrained=False, num_classes=0, img_size=img_size, in_chans=in_chans, **opts)
        except Exception as e:  # noqa: BLE001 - an unknown name or a size the architecture cannot take
            raise ConfigError(f"--timm {name}: cannot build it at {img_size}x{img_size} with {in_chans} channels: {e}") from None

    model = build(0)
    dropped: list[str] = []
    if checkpoint is not None:
        path = Path(checkpoint)
        if not path.is_file():
            raise ConfigError(f"--checkpoint {path}: no such file")
        try:
            blob = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001
            raise DataError(f"--checkpoint {path}: not a readable torch checkpoint ({type(e).__name__})") from None
        sd = blob.get("model", blob.get("state_dict", blob)) if isinstance(blob, dict) else None
        if not isinstance(sd, dict):
            raise DataError(f"--checkpoint {path}: holds no state dict")
        own = model.state_dict()
        missing = sorted(k for k in own if k not in sd)
        if missing:
            raise DataError(f"--checkpoint {path}: lacks {len(missing)} of the encoder's weights (first: {missing[0]})")
        for k in own:
            if tuple(sd[k].shape) != tuple(own[k].shape):
                raise DataError(f"--checkpoint {path}: {k} is {tuple(sd[k].shape)}, the model's {tuple(own[k].shape)}")
        dropped = sorted(k for k in sd if k not in own)
        model.load_state_dict({k: sd[k] for k in own})
    model.to(device)
    enc = from_object(model, device=device, batch_size=batch_size, pass_mask=False,
                      info={"kind": "timm", "timm": name, "checkpoint": None if checkpoint is None else str(checkpoint),
                            "options": opts, "dropped_keys": len(dropped)})

    def untrained(seed: int) -> Any:
        return from_object(build(seed).to(device), device=device, batch_size=batch_size, pass_mask=False).encode

    enc.untrained = untrained
    return enc
