"""The ``hlvm`` app: one command per module of this package, assembled here."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="hlvm",
    help="Hierarchical latent-variable simulator and identifiability bench for masked autoencoders.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)

# Each module defines one command function; library imports happen inside it,
# so that `hlvm --help` and graph-only commands never pay for importing torch.
from hlvm.cli import train as _train  # noqa: E402

app.command("train")(_train.train)
from hlvm.cli import locate as _locate  # noqa: E402

app.command("locate-c")(_locate.locate_c)
from hlvm.cli import predict as _predict  # noqa: E402

app.command("predict")(_predict.predict)
from hlvm.cli import probe as _probe  # noqa: E402

app.command("probe")(_probe.probe)
from hlvm.cli import recon as _recon  # noqa: E402

app.command("recon")(_recon.recon)

from hlvm.cli import evaluate as _evaluate  # noqa: E402

app.command("evaluate")(_evaluate.evaluate)
from hlvm.cli import simulate as _simulate  # noqa: E402

app.command("simulate")(_simulate.simulate)
from hlvm.cli import sweep as _sweep  # noqa: E402

app.command("sweep")(_sweep.sweep)
from hlvm.cli import report as _report  # noqa: E402

app.command("report")(_report.report)


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover - python -m hlvm.cli.main, as the tests run it in a subprocess
    main()
