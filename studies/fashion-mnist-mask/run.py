"""Fashion-MNIST mask study: Kong et al.'s Table 1 and Figure 5 trends at CPU scale, one command.

    python studies/fashion-mnist-mask/run.py --out runs/fashion-mnist-mask            # CPU, all cores
    python studies/fashion-mnist-mask/run.py --out runs/fashion-mnist-mask --resume   # continue a stopped study
    python studies/fashion-mnist-mask/run.py --out runs/fashion-mnist-mask --device cuda
    python studies/fashion-mnist-mask/run.py --out runs/fm --workers 1 --threads 1   # one core only

``hlvm realmask`` with this folder's config.json (hlvm/realmask/ holds the study; ``--help``
lists the options): one small ViT MAE per (mask ratio or unit, seed) on all of Fashion-MNIST
(installed with apt-get if missing), measured on its test images beside the raw-pixel and
untrained controls; ``results.json``, ``report.md`` and figures go into ``--out``.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(argv: list[str] | None = None) -> int:
    from hlvm.cli.main import app

    argv = list(sys.argv[1:] if argv is None else argv)
    if not any(a == "--config" or a.startswith("--config=") for a in argv):
        argv += ["--config", str(HERE / "config.json")]
    try:
        app(["realmask", *argv], prog_name="run.py")
    except SystemExit as e:
        return int(e.code or 0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
