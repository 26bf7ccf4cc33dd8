"""Every command's --help reads whole at 80 columns: no line longer, no text cut short with an ellipsis."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from hlvm.cli.main import app

runner = CliRunner()
COMMANDS = [name for name in (c.name for c in app.registered_commands)]


@pytest.mark.parametrize("command", ["", *COMMANDS])
@pytest.mark.parametrize("columns", [80, 200])
def test_help_fits_80_columns_without_cutting_a_text(command, columns):
    r = runner.invoke(app, [*([command] if command else []), "--help"], env={"COLUMNS": str(columns)})
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert len(lines) > 3
    too_long = [line for line in lines if len(line) > 80]
    assert not too_long, too_long
    # "[ARGS]..." in the usage line is click's notation, not a cut text
    cut = [line for line in lines if not line.startswith("Usage:") and (line.rstrip().endswith("...") or "…" in line)]
    assert not cut, cut


def test_every_option_of_train_has_its_whole_help_text():
    import click
    import typer.main

    r = runner.invoke(app, ["train", "--help"], env={"COLUMNS": "80"})
    flat = " ".join(r.output.split())
    cmd = typer.main.get_command(app).commands["train"]
    for p in cmd.params:
        if isinstance(p, click.Option) and p.help:
            assert " ".join(p.help.split()) in flat.replace("- ", "-"), p.name


@pytest.mark.parametrize("args, words", [
    (["train", "--no-such-option"], ["No such option: --no-such-option", "hlvm train --help"]),
    (["probe", "--batch-size", "abc", "--run", "r", "--data", "d"], ["Invalid value for '--batch-size'", "hlvm probe --help"]),
    (["evaluate", "--mask", "m.json"], ["Missing option '--run'"]),
    (["no-such-command"], ["No such command 'no-such-command'"]),
])
def test_usage_errors_are_one_line_too(args, words):
    from _cli import assert_one_line_error

    assert_one_line_error(runner.invoke(app, args), *words)


def test_no_arguments_still_show_the_help():
    r = runner.invoke(app, [])
    assert "Commands:" in r.output and "error" not in r.output
