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





def main() -> None:  # pragma: no cover - console entry point
    app()
