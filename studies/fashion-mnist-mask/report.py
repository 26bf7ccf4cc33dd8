"""Redraw a Fashion-MNIST study's report.md and figures from its results.json alone.

    python studies/fashion-mnist-mask/report.py OUT          # reads OUT/results.json, writes OUT/report.md and figures
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1 or argv[0].startswith("-"):
        print("usage: report.py OUT   (a folder holding results.json)", file=sys.stderr)
        return 2
    out = Path(argv[0])
    path = out / "results.json"
    if not path.is_file():
        print(f"error: {path} not found", file=sys.stderr)
        return 2
    try:
        res = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        print(f"error: {path} is not valid JSON: {e}", file=sys.stderr)
        return 2
    from hlvm.realmask.report import write_report

    print(write_report(res, out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
