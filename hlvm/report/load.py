"""Reading a sweep's ``results.csv`` into typed rows.

Files written before controls existed lack the ``encoder`` column and the
per-mask summary columns: every row then reads as a trained encoder's, and
the report says that no control is there to judge it against.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from hlvm.errors import DataError
from hlvm.evaluate import ENCODERS
from hlvm.sweep.grid import SUMMARY_COLUMNS

__all__ = ["REQUIRED_COLUMNS", "OPTIONAL_DEFAULTS", "FLOAT_COLUMNS", "ROLES", "ENCODERS", "Results", "load_results"]

REQUIRED_COLUMNS = ("point_id", "mask_ratio", "mask_unit", "seed", "mask_index", "node", "level", "role", "r2_noise")
# Optional columns and the value a results file without them implies.
OPTIONAL_DEFAULTS = {
    "encoder": "trained",
    "mask_kind": "random",
    "train_mask_kind": "random",
    "objective": "mae",
    "bottleneck": "",
    "bottleneck_width": "",
    "boundary_ignore": "0",
    "representation": "code",
    "noise_dim": "1",
    "dim_c": "",
    "rep_dim": "",
    "agreement": "",
    "r2_value": "",
    "r2_noise_linear": "",
}
#: Per-node numbers and the per-mask figures of hlvm.sweep (SUMMARY_COLUMNS) read as floats; NaN when absent.
FLOAT_COLUMNS = ("r2_noise", "r2_value", "r2_noise_linear", *SUMMARY_COLUMNS)
ROLES = ("c", "shared", "private_masked", "private_visible")


class Results(list):
    """The typed rows, and what the file had: ``columns``, ``has_controls``, ``has_mask_figures``."""

    columns: tuple[str, ...] = ()
    path: Path | None = None

    @property
    def has_controls(self) -> bool:
        return any(r["encoder"] != "trained" for r in self)

    @property
    def has_mask_figures(self) -> bool:
        """Whether per-mask floor and leak (the pixels' own noises included) were stored."""
        return "r2_private_visible_noise" in self.columns


def _float(v: str) -> float:
    return float(v) if v not in ("", None) else float("nan")


def _int_or_none(v: str) -> int | None:
    return None if v in ("", None, "None") else int(float(v))


def load_results(path: str | os.PathLike[str]) -> Results:
    """Rows of a sweep's ``results.csv`` (a folder holding one, or the file), typed.

    Raises :class:`DataError` for a missing, empty or unreadable file, missing
    required columns (named), a row with more or fewer fields than the header
    (a torn or corrupt line, named), or a value that does not parse.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "results.csv"
    if not path.is_file():
        raise DataError(f"results file not found: {path}")
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f, restkey="\0extra")
            header = reader.fieldnames or []
            missing = [c for c in REQUIRED_COLUMNS if c not in header]
            if missing:
                raise DataError(f"{path} lacks column(s) {', '.join(missing)}; is it a sweep's results.csv?")
            raw = list(reader)
    except UnicodeDecodeError:
        raise DataError(f"{path} is not a text CSV file; is it a sweep's results.csv?") from None
    except csv.Error as e:
        raise DataError(f"{path} is not a readable CSV file: {e}") from None
    if not raw:
        raise DataError(f"{path} has no rows yet; run the sweep first")
    rows = Results()
    rows.columns, rows.path = tuple(header), path
    for i, r in enumerate(raw, start=2):
        if "\0extra" in r or any(v is None for v in r.values()):
            raise DataError(f"{path}: line {i} has {'more' if chr(0) + 'extra' in r else 'fewer'} fields than the header (a torn or corrupt row)")
        try:
            d = {k: (r[k] if r.get(k) is not None else OPTIONAL_DEFAULTS.get(k, "")) for k in header}
            for k, v in OPTIONAL_DEFAULTS.items():
                d.setdefault(k, v)
            d["mask_ratio"] = float(d["mask_ratio"])
            d["mask_unit"] = int(d["mask_unit"])
            d["seed"] = int(d["seed"])
            d["mask_index"] = int(d["mask_index"])
            d["level"] = int(d["level"])
            d["noise_dim"] = int(d["noise_dim"] or 1)
            d["bottleneck_width"] = _int_or_none(d["bottleneck_width"])
            d["boundary_ignore"] = int(float(d["boundary_ignore"] or 0))
            if d["bottleneck_width"] is None and d["bottleneck"] not in ("", "None", "dim_c"):
                d["bottleneck_width"] = int(float(d["bottleneck"]))  # files before bottleneck_width
            d["dim_c"] = _int_or_none(d["dim_c"])
            d["rep_dim"] = _int_or_none(d["rep_dim"])
            for k in FLOAT_COLUMNS:
                d[k] = _float(d.get(k, ""))
        except (TypeError, ValueError) as e:
            raise DataError(f"{path}: line {i}: {e}") from None
        if d["role"] not in ROLES:
            raise DataError(f"{path}: line {i}: unknown role {d['role']!r}; expected one of {', '.join(ROLES)}")
        if d["encoder"] not in ENCODERS:
            raise DataError(f"{path}: line {i}: unknown encoder {d['encoder']!r}; expected one of {', '.join(ENCODERS)}")
        rows.append(d)
    return rows
