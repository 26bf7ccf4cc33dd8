"""Fashion-MNIST mask study: Kong et al.'s Table 1 and Figure 5 trends at CPU scale, one command.

    python studies/fashion-mnist-mask/run.py --out runs/fashion-mnist-mask            # CPU, all cores
    python studies/fashion-mnist-mask/run.py --out runs/fashion-mnist-mask --resume   # continue a stopped study
    python studies/fashion-mnist-mask/run.py --out runs/fashion-mnist-mask --device cuda
    python studies/fashion-mnist-mask/run.py --out runs/fm --workers 1 --threads 1   # one core only

``hlvm realmask --config studies/fashion-mnist-mask/config.json ...`` with
this folder's config (the default here); ``--help`` lists the options. It
trains one small ViT MAE per (mask ratio or masking unit, seed) on the full
Fashion-MNIST training set (installing Debian's ``dataset-fashion-mnist``
with apt-get when it is missing), measures each on the 10,000 test images,
beside the raw-pixel and untrained-encoder controls, and writes
``results.json``, ``report.md`` and the figures into ``--out``; ``--resume``
continues a killed study and redoes nothing that finished (hlvm/realmask/).
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
