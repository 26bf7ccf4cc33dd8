"""Reading a sweep's ``results.csv`` into typed rows."""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any

from hlvm.errors import DataError

__all__ = ["REQUIRED_COLUMNS", "OPTIONAL_DEFAULTS", "ROLES", "load_results"]

REQUIRED_COLUMNS = ("point_id", "mask_ratio", "mask_unit", "seed", "mask_index", "node", "level", "role", "r2_noise")
# Optional columns and the value a results file without them implies.
OPTIONAL_DEFAULTS = {
    "mask_kind": "random",
    "objective": "mae",
    "bottleneck": "",
    "representation": "code",
    "noise_dim": "1",
    "agreement": "",
    "r2_value": "",
}
ROLES = ("c", "shared", "private_masked", "private_visible")




def _float(v: str) -> float:
    return float(v) if v not in ("", None) else float("nan")


def load_results(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Rows of a sweep's ``results.csv`` (a folder holding one, or the file), typed.

    Raises :class:`DataError` for a missing or empty file, missing required
    columns (named), or a value that does not parse.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "results.csv"
    if not path.is_file():
        raise DataError(f"results file not found: {path}")
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames or []
        missing = [c for c in REQUIRED_COLUMNS if c not in header]
        if missing:
            raise DataError(f"{path} lacks column(s) {', '.join(missing)}; is it a sweep's results.csv?")
        raw = list(reader)
    if not raw:
        raise DataError(f"{path} has no rows yet; run the sweep first")
    rows = []
    for i, r in enumerate(raw, start=2):
        try:
            d = {k: (r.get(k) if r.get(k) is not None else OPTIONAL_DEFAULTS.get(k, "")) for k in header}
            for k, v in OPTIONAL_DEFAULTS.items():
                d.setdefault(k, v)
            d["mask_ratio"] = float(d["mask_ratio"])
            d["mask_unit"] = int(d["mask_unit"])
            d["seed"] = int(d["seed"])
            d["mask_index"] = int(d["mask_index"])
            d["level"] = int(d["level"])
            d["noise_dim"] = int(d["noise_dim"] or 1)
            d["r2_noise"] = _float(d["r2_noise"])
            d["r2_value"] = _float(d["r2_value"])
            d["agreement"] = _float(d["agreement"])
        except (TypeError, ValueError) as e:
            raise DataError(f"{path}: line {i}: {e}") from None
        if d["role"] not in ROLES:
            raise DataError(f"{path}: line {i}: unknown role {d['role']!r}; expected one of {', '.join(ROLES)}")
        rows.append(d)
    return rows


