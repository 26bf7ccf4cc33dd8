"""The ``hlvm`` app: one command per module of this package, assembled here."""

from __future__ import annotations

import sys
from typing import Any

import typer
from typer.core import TyperGroup


def _is(e: BaseException, name: str) -> bool:
    # By name: typer may ship its own copy of click, whose classes are not click's.
    return any(c.__name__ == name for c in type(e).__mro__)


#: Old option spellings, per command, kept as hidden aliases for one release: one name per concept across
#: every command (--batch-size for a batch, --mask-kinds for a list of mask kinds).
RENAMED = {
    "sweep": {"--batch": "--batch-size"},
    "predict": {"--kinds": "--mask-kinds", "--mask-kind": "--mask-kinds"},
}


def _renamed(args: list[str]) -> list[str]:
    """``args`` with old option spellings (:data:`RENAMED`) replaced by the current ones, each with a warning."""
    command = next((a for a in args if not a.startswith("-")), None)
    table = RENAMED.get(command or "", {})
    if not table:
        return args
    out = []
    for a in args:
        name, eq, value = a.partition("=")
        if name in table:
            from hlvm.cli._common import err_console

            err_console.print(f"warning: {name} is now {table[name]}; the old name goes in a later release",
                              markup=False)
            a = table[name] + eq + value
        out.append(a)
    return out


def _name_metavars(group: Any) -> None:
    """Options show what they take by name (``--ratios RATIOS``, ``--out OUT``), not by Python type (``<str>``)."""
    for command in getattr(group, "commands", {}).values():
        for param in command.params:
            if getattr(param, "is_flag", False) or param.metavar is not None or not getattr(param, "opts", None):
                continue
            if getattr(param, "param_type_name", "") == "option" and param.name:
                param.metavar = param.name.upper()


def _show_version(value: bool) -> None:
    if value:
        import platform

        from hlvm import __version__

        typer.echo(f"hlvm {__version__} (Python {platform.python_version()})")
        raise typer.Exit()


class _OneLineUsageErrors(TyperGroup):
    """Click's usage errors (an unknown option, a value of the wrong type) as one ``error:`` line and exit 2.

    Bad input of every kind gets the same contract (cli/_common.py): click's
    own form is a usage block, a hint and the message, over four lines.
    """

    def main(self, args: Any = None, prog_name: Any = None, complete_var: Any = None, standalone_mode: bool = True,
             **extra: Any) -> Any:
        args = _renamed(list(sys.argv[1:] if args is None else args))
        _name_metavars(self)
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            rv = super().main(args, prog_name, complete_var, False, **extra)
        except Exception as e:
            if not _is(e, "UsageError") or _is(e, "NoArgsIsHelpError"):
                if _is(e, "ClickException"):
                    e.show()  # type: ignore[attr-defined]
                    sys.exit(e.exit_code)  # type: ignore[attr-defined]
                raise
            from hlvm.cli._common import err_console, one_line

            ctx = getattr(e, "ctx", None)
            hint = f" (see {ctx.command_path} --help)" if ctx is not None else ""
            err_console.print(f"error: {one_line(e.format_message())}{hint}", markup=False)  # type: ignore[attr-defined]
            sys.exit(2)
        except BaseException as e:
            if _is(e, "Abort"):
                sys.exit(1)
            raise
        sys.exit(rv if isinstance(rv, int) else 0)


app = typer.Typer(
    name="hlvm",
    cls=_OneLineUsageErrors,
    help="Hierarchical latent-variable simulator and identifiability bench for masked autoencoders.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
    # Plain click help: option texts wrap at word boundaries to the terminal width. Rich's panels gave the
    # option names (--norm-pix-loss / --no-norm-pix-loss) most of 80 columns and cut the help texts short.
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", "-V", help="Print hlvm's version and exit.", is_eager=True,
                                 callback=_show_version),
) -> None:
    """Hierarchical latent-variable simulator and identifiability bench for masked autoencoders."""

# Each module defines one command function; library imports happen inside it,
# so that `hlvm --help` and graph-only commands never pay for importing torch.
from hlvm.cli import train as _train  # noqa: E402

app.command("train", short_help="Train one MAE on simulated, online or image-folder data.")(_train.train)
from hlvm.cli import locate as _locate  # noqa: E402

app.command("locate-c", short_help="Which latents a mask shares: c, CA, s_m, s_mc (Alg. 1, 2).")(_locate.locate_c)
from hlvm.cli import predict as _predict  # noqa: E402

app.command("predict", short_help="The theory's c over mask ratio x unit, from the graph.")(_predict.predict)
from hlvm.cli import probe as _probe  # noqa: E402

app.command("probe", short_help="Linear-probe top-1 of a run's frozen encoder.")(_probe.probe)
from hlvm.cli import recon as _recon  # noqa: E402

app.command("recon", short_help="Reconstruction metrics, effective rank, figures of a run.")(_recon.recon)

from hlvm.cli import evaluate as _evaluate  # noqa: E402

app.command("evaluate", short_help="What a trained MAE recovers under one mask.")(_evaluate.evaluate)
from hlvm.cli import simulate as _simulate  # noqa: E402

app.command("simulate", short_help="Sample a hierarchy's images, latents and noises to disk.")(_simulate.simulate)
from hlvm.cli import sweep as _sweep  # noqa: E402

app.command("sweep", short_help="Train and probe MAEs over a grid of masks, with controls.")(_sweep.sweep)
from hlvm.cli import report as _report  # noqa: E402

app.command("report", short_help="Figures and claim verdicts from a sweep's results.")(_report.report)
from hlvm.cli import score as _score  # noqa: E402

app.command("score", short_help="A versioned identifiability suite on any encoder: a scorecard.")(_score.score)
from hlvm.cli import realmask as _realmask  # noqa: E402

app.command("realmask", short_help="Mask study on real images: MAEs over a grid, probed.")(_realmask.realmask)
app.command("realmask-report", short_help="A realmask study's report from its results.json.")(
    _realmask.realmask_report)


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover - python -m hlvm.cli.main, as the tests run it in a subprocess
    main()
