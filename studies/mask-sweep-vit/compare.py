"""The MLP and ViT verdicts of the mask sweep side by side: one markdown table, claim x panel.

Reads the ``verdicts.json`` that ``hlvm report`` writes for the MLP study
(``studies/mask-sweep``) and for each ViT sweep of this study (token patch 1
and 2), and writes a table with, per claim of docs/theory.md and panel (evaluation
mask kind; trained arm; the ``code`` representation): the MLP's verdict, the
pixels control's (from the MLP study: the same held-out samples and masks as
the patch-1 ViT, whose pixels verdict is therefore the same), each ViT's
verdict, and for each trained model whether it differs from the pixels
(``hlvm.rules.evidence``: only that counts as evidence about MAE). The
patch-2 sweep runs units 2 and 4, so its own pixels verdict is shown beside
its trained one. Each source's model, token patch, units, steps and seeds
come from the ``sweep.json`` beside its ``verdicts.json``.

Run from the repository root (after the sweeps, README.md)::

    python studies/mask-sweep-vit/compare.py [--mlp studies/mask-sweep/results]
        [--vit studies/mask-sweep-vit/results-p1 --vit studies/mask-sweep-vit/results-p2]
        [--out studies/mask-sweep-vit/comparison.md]

Each source is a results folder or its ``verdicts.json``. A missing or
unreadable file, or an old ``verdicts.json`` without controls, is a one-line
error and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any, NoReturn

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
#: Claims in report order, with what each says (hlvm.report.claims.CLAIMS, abridged).
CLAIMS = {
    "1": "recovers Algorithm 1's c",
    "2": "extreme ratios give a lower c",
    "3": "larger units give a higher c",
    "T2": "Theorem 2 (dim_c code)",
}


class CompareError(Exception):
    """Bad input; printed as one line, exit 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        print(f"error: {message}", file=sys.stderr)
        sys.exit(2)


def load(source: str | Path) -> dict[str, Any]:
    """A sweep's verdicts and the settings that name it: ``{"verdicts", "label", "path"}``."""
    path = Path(source)
    if path.is_dir():
        path = path / "verdicts.json"
    try:
        verdicts = json.loads(path.read_text())
    except FileNotFoundError:
        raise CompareError(f"{path} not found (run the sweep, or hlvm report on its results folder)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CompareError(f"cannot read {path}: {e}") from None
    if not isinstance(verdicts, dict) or not isinstance(verdicts.get("claims"), list) or "theorem2" not in verdicts:
        raise CompareError(f"{path} is not a verdicts.json of this hlvm (no list of claims with controls); "
                           f"re-run `hlvm report {path.parent}`")
    name, label = _label(path.parent, verdicts)
    return {"verdicts": verdicts, "name": name, "label": label, "path": path, "units": _units(path.parent)}


def _units(folder: Path) -> list[int] | None:
    try:
        return list(json.loads((folder / "sweep.json").read_text())["config"]["mask_units"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _label(folder: Path, verdicts: dict[str, Any]) -> tuple[str, str]:
    """``(column name, description)`` from the folder's sweep.json: model, token patch, units, steps, seeds."""
    seeds = verdicts.get("seeds", [])
    try:
        cfg = json.loads((folder / "sweep.json").read_text())["config"]
    except (OSError, ValueError, KeyError, TypeError):
        return folder.name, f"{len(seeds)} seed(s); no sweep.json beside it"
    model = cfg.get("model", "?")
    patch = cfg.get("model_options", {}).get("patch_size")
    if patch is None:
        try:
            from hlvm.models import get_config

            patch = get_config(model).patch_size
        except Exception:  # noqa: BLE001 - an unknown or old config name: say so in the label
            patch = "?"
    units = ", ".join(str(u) for u in cfg.get("mask_units", []))
    name = "MLP" if model == "mlp" else f"{model} p={patch}"
    return name, f"{model}, token patch {patch}, units {units}, {cfg.get('steps')} steps x {cfg.get('batch')}, {len(seeds)} seed(s)"


def claim_rows(verdicts: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    """``(claim, panel) -> {"trained", "pixels", "theory", "evidence"}`` for the code representation (A, not A_linear)."""
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for c in verdicts["claims"]:
        if c.get("representation") != "code" or c.get("measure") == "A_linear":
            continue
        v = c.get("verdicts", {})
        out[(str(c["claim"]), c["panel"])] = {
            "trained": v.get("trained", "-"), "pixels": v.get("pixels", "-"),
            "theory": v.get("theory", "n/a") if str(c["claim"]) != "1" else "n/a", "evidence": _evidence(c),
        }  # fmt: skip
    from hlvm import rules

    cells: dict[str, list[dict[str, Any]]] = {}
    for t in verdicts["theorem2"]:
        cells.setdefault(t["panel"], []).append(t)
    for panel, ts in cells.items():
        row: dict[str, Any] = {"theory": "hold (predicted)"}
        for enc in ("trained", "pixels"):
            vs = [t["verdicts"][enc] for t in ts if enc in t.get("verdicts", {})]
            row[enc] = rules.overall(vs) if vs else "-"
        ev = [t.get("trained_vs_pixels") for t in ts if t.get("trained_vs_pixels")]
        k = sum(e == rules.EVIDENCE for e in ev)
        row["evidence"] = f"{rules.EVIDENCE if k else rules.EXPLAINED} ({k}/{len(ev)} cells)" if ev else "no pixels control"
        out[("T2", panel)] = row
    return out


def _evidence(claim: dict[str, Any]) -> str:
    """The report's trained-vs-pixels summary, shortened, with claim 1's difference of medians (trained - pixels)."""
    text = claim.get("trained_vs_pixels", "-")
    m = re.fullmatch(r"(.*?) \((\d+) of (\d+) parts differ from the pixels\)", text) or re.fullmatch(
        r"(.*?) in (\d+) of (\d+) parts", text
    )
    if m:
        text = f"{m.group(1)} ({m.group(2)}/{m.group(3)} parts)"
    if str(claim["claim"]) == "1" and claim.get("evidence"):
        e = claim["evidence"][0]
        se = "" if e.get("se") is None else f" ± {e['se']:.3f}"
        text += f", Δ R^2(CA) {e['d']:+.3f}{se}"
    return text


def table(mlp: dict[str, Any], vits: list[dict[str, Any]]) -> list[str]:
    """The markdown table: a row per (claim, panel) found in any source, claims in order, panels sorted.

    Columns: the pixels control and the theory (both from the MLP study), then per trained model its
    verdict and whether it differs from the pixels; a ViT on other units than the MLP's shows its own pixels.
    """
    rows = [claim_rows(mlp["verdicts"]), *(claim_rows(v["verdicts"]) for v in vits)]
    keys = sorted({k for r in rows for k in r}, key=lambda k: (list(CLAIMS).index(k[0]), k[1]))
    same_units = [v["units"] == mlp["units"] for v in vits]
    head = ["claim", "panel (eval masks; arm)", "pixels", "theory", f"{mlp['name']} trained"]
    head += [f"{v['name']} trained" + ("" if same else " (its pixels)") for v, same in zip(vits, same_units)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for k in keys:
        claim, panel = k
        m = rows[0].get(k, {})
        cols = [f"{claim}. {CLAIMS[claim]}", panel, m.get("pixels", "-"), m.get("theory", "-")]
        for r, same in zip(rows, [True, *same_units]):
            got = r.get(k)
            if got is None:
                cols.append("-")
                continue
            own = "" if same else f" ({got['pixels']})"
            ev = "" if got["evidence"] == "nothing testable" else f": {got['evidence']}"
            cols.append(f"{_b(got['trained'])}{own}{ev}")
        lines.append("| " + " | ".join(cols) + " |")
    return lines


def _b(verdict: str) -> str:
    return f"**{verdict}**" if verdict in ("hold", "fail", "mixed") else verdict


def render(mlp: dict[str, Any], vits: list[dict[str, Any]]) -> str:
    def rel(p: Path) -> str:
        try:
            return str(p.resolve().relative_to(ROOT))
        except ValueError:
            return str(p)

    lines = ["# MLP and ViT verdicts of the mask sweep, side by side", "",
             "Written by `studies/mask-sweep-vit/compare.py` from the reports' `verdicts.json` (rules: `hlvm/rules.py`, "
             "printed in every report). Sources:", "",
             f"- {mlp['name']}: `{rel(mlp['path'])}` ({mlp['label']})"]
    lines += [f"- {v['name']}: `{rel(v['path'])}` ({v['label']})" for v in vits]
    lines += ["",
              "Every verdict is its own study's, on that study's held-out samples and masks. *pixels* (the visible "
              "pixels as the code) and *theory* (Algorithm 1 on the same masks) are the MLP study's; a sweep on the "
              "same units has the same samples and masks, so the same verdicts, and a sweep on other units shows "
              "its own pixels verdict in brackets. After each trained verdict: whether it differs from the pixels "
              "(`hlvm.rules.evidence`); only *evidence about MAE* counts as such, *explained without training* "
              "means the pixels show the same. One seed decides nothing (claims 2, 3 and T2 are then inconclusive).",
              ""]
    lines += table(mlp, vits)
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = _Parser(description=__doc__.split("\n\n")[0])
    p.add_argument("--mlp", default=str(ROOT / "studies" / "mask-sweep" / "results"),
                   help="the MLP study's results folder or verdicts.json")
    p.add_argument("--vit", action="append", default=None,
                   help="a ViT sweep's results folder or verdicts.json (repeat; default results-p1 and results-p2 here)")
    p.add_argument("--out", default=str(HERE / "comparison.md"), help="the markdown file to write")
    args = p.parse_args(argv)
    vit_paths = args.vit or [str(HERE / "results-p1"), str(HERE / "results-p2")]
    try:
        mlp = load(args.mlp)
        vits = [load(v) for v in vit_paths]
        text = render(mlp, vits)
        out = Path(args.out)
        if out.is_dir():
            raise CompareError(f"--out {out} is a folder; name the markdown file")
        tmp = out.with_name(f".{out.name}.tmp")
        tmp.write_text(text)
        tmp.replace(out)
    except (CompareError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
