"""Redraw a Fashion-MNIST study's report.md and figures from its results.json alone.

    python studies/fashion-mnist-mask/report.py OUT          # reads OUT/results.json, writes OUT/report.md and figures

The same as ``hlvm realmask-report OUT``.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    from hlvm.cli.main import app

    try:
        app(["realmask-report", *(sys.argv[1:] if argv is None else argv)], prog_name="report.py")
    except SystemExit as e:
        return int(e.code or 0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
