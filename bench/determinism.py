"""How far two runs of one sweep agree: rows value for value, the largest differences, and every verdict.

The same config run twice (on one machine, or on two) should give the same verdicts; floating point across
CPUs may move the trained and untrained rows in their last digits and, through training, further. This prints,
per encoder, how many rows are identical and the largest difference of each R^2 column, then whether the two
reports' verdicts (``verdicts.json``: claims, Theorem 2 per cell and control, arms compared) are the same,
and the largest difference of the numbers those verdicts rest on (every number of ``verdicts.json``).

    python bench/determinism.py studies/mask-sweep/results runs/mask-sweep [--json OUT.json]
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections import defaultdict
from pathlib import Path

KEY = ("point_id", "mask_kind", "mask_index", "representation", "node")
NUMBERS = ("r2_ca_noise", "r2_private_visible_noise", "r2_private_masked_noise", "r2_noise", "r2_value", "r2_noise_linear")


def rows(folder: Path) -> dict[tuple, dict[str, str]]:
    with open(folder / "results.csv", newline="") as f:
        return {tuple(r.get(k, "") for k in KEY): r for r in csv.DictReader(f)}


def _verdicts(obj, path=""):  # noqa: ANN001, ANN202 - every verdict and label of a verdicts.json, by its path
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k in ("verdict", "verdicts", "label") and not isinstance(v, list):
                yield from (((f"{path}/{k}/{e}", x) for e, x in v.items()) if isinstance(v, dict) else [(f"{path}/{k}", v)])
            else:
                yield from _verdicts(v, f"{path}/{k}")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _verdicts(v, f"{path}[{i}]")


def _numbers(obj, path=""):  # noqa: ANN001, ANN202 - every number of a verdicts.json but its provenance, by path
    if isinstance(obj, bool):
        return
    if isinstance(obj, (int, float)):
        yield path, float(obj)
    elif isinstance(obj, dict):
        for k, v in obj.items():
            if "provenance" not in k:
                yield from _numbers(v, f"{path}/{k}")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _numbers(v, f"{path}[{i}]")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("a", type=Path)
    p.add_argument("b", type=Path)
    p.add_argument("--json", type=Path, help="also write the figures here")
    args = p.parse_args()
    ra, rb = rows(args.a), rows(args.b)
    if set(ra) != set(rb):
        print(f"error: the two folders hold different rows ({len(set(ra) ^ set(rb))} keys differ)", file=sys.stderr)
        return 2
    per: dict[str, dict] = defaultdict(lambda: {"rows": 0, "identical": 0, "max_abs_diff": {}})
    for k, x in ra.items():
        y, e = rb[k], per[ra[k]["encoder"]]
        e["rows"] += 1
        e["identical"] += x == y
        for col in NUMBERS:
            if x.get(col) not in (None, "") and y.get(col) not in (None, ""):
                d = abs(float(x[col]) - float(y[col]))
                e["max_abs_diff"][col] = max(e["max_abs_diff"].get(col, 0.0), d)
    ja, jb = (json.loads((f / "verdicts.json").read_text()) for f in (args.a, args.b))
    va, vb = dict(_verdicts(ja)), dict(_verdicts(jb))
    changed = sorted(k for k in set(va) | set(vb) if va.get(k) != vb.get(k))
    na, nb = dict(_numbers(ja)), dict(_numbers(jb))
    diffs = sorted(((abs(na[k] - nb[k]), k) for k in set(na) & set(nb)), reverse=True)
    summary = {"numbers": len(diffs), "identical": sum(d == 0 for d, _ in diffs),
               "max_abs_diff": diffs[0][0] if diffs else 0.0, "largest": [[k, d] for d, k in diffs[:10]]}
    out = {"a": str(args.a), "b": str(args.b), "encoders": dict(per), "summaries": summary, "verdicts": len(va),
           "verdicts_changed": changed}
    for enc, e in sorted(per.items()):
        worst = max(e["max_abs_diff"].values(), default=0.0)
        print(f"{enc:18s} {e['identical']:6d} of {e['rows']:6d} rows identical; largest R^2 difference {worst:.2e}")
    print(f"summaries (every number of the reports' verdicts.json: d, SE, R^2(CA), leak, ...): "
          f"{summary['identical']} of {summary['numbers']} identical; largest difference {summary['max_abs_diff']:.2e}"
          + (f" at {diffs[0][1]}" if diffs and diffs[0][0] else ""))
    print(f"verdicts: {len(va)} in each; {len(changed)} differ" + (f": {changed[:10]}" if changed else ""))
    for k in changed[:10]:
        print(f"  {k}: {va.get(k)!r} -> {vb.get(k)!r}")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
