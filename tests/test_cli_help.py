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


def test_version_and_short_help():
    from hlvm import __version__

    r = runner.invoke(app, ["--version"])
    assert r.exit_code == 0 and r.output.startswith(f"hlvm {__version__} (Python ")
    r = runner.invoke(app, ["sweep", "-h"])
    assert r.exit_code == 0 and "Usage: hlvm sweep" in r.output and "--batch-size" in r.output


def test_old_option_names_still_work_with_a_warning_and_are_not_in_the_help(tmp_path):
    import hlvm.cli.main as M

    assert M._renamed(["sweep", "--batch", "64", "--out=o"]) == ["sweep", "--batch-size", "64", "--out=o"]
    assert M._renamed(["predict", "--kinds=random"]) == ["predict", "--mask-kinds=random"]
    assert M._renamed(["train", "--batch", "8"]) == ["train", "--batch", "8"]  # another command: untouched
    r = runner.invoke(app, ["predict", "--kinds", "random", "--ratios", "0.5", "--k", "3", "-q", "--out", str(tmp_path / "p")])
    assert r.exit_code == 0, r.output
    assert "warning: --kinds is now --mask-kinds" in r.output
    assert "--kinds " not in runner.invoke(app, ["predict", "--help"]).output
    assert "--batch " not in runner.invoke(app, ["sweep", "--help"]).output


def test_options_show_what_they_take_by_name_not_by_python_type():
    r = runner.invoke(app, ["sweep", "--help"], env={"COLUMNS": "100"})
    assert "--ratios RATIOS" in r.output and "--out OUT" in r.output
    assert "<str>" not in r.output and "<int>" not in r.output and "<path>" not in r.output
