"""The bad-input contract shared by every command: one line, exit code 2."""

import subprocess
import sys
import warnings

import pytest
import typer
from torch.utils.data import DataLoader, Dataset
from typer.testing import CliRunner

from hlvm.cli._common import one_line, user_errors
from hlvm.errors import DataError


class _BadImages(Dataset):
    def __len__(self):
        return 2

    def __getitem__(self, i):
        raise DataError("cannot read image /data/cls/bad.jpg: image file is truncated")


def test_worker_errors_reduce_to_the_original_message():
    with pytest.raises(DataError) as info:
        next(iter(DataLoader(_BadImages(), num_workers=1)))
    assert "Traceback" in str(info.value)  # what torch hands back from a worker
    assert one_line(str(info.value)) == "cannot read image /data/cls/bad.jpg: image file is truncated"


def test_plain_messages_are_joined_onto_one_line():
    assert one_line("graph has a cycle:\n  a -> b") == "graph has a cycle: a -> b"


def test_user_errors_prints_one_line_and_exits_2():
    app = typer.Typer()

    @app.command()
    def boom() -> None:
        with user_errors():
            raise DataError("first line\nsecond line")

    result = CliRunner().invoke(app, [])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == ["error: first line second line"]


def test_a_warning_inside_a_command_prints_as_one_line():
    # In a fresh interpreter: pytest records warnings instead of printing them.
    code = (
        "import warnings\n"
        "from hlvm.cli._common import user_errors\n"
        "with user_errors():\n"
        "    warnings.warn('the decoder is not loaded\\nand keeps its random init', UserWarning)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines() == ["warning: the decoder is not loaded and keeps its random init"]


def test_user_errors_leaves_the_warning_format_as_it_found_it():
    before = warnings.formatwarning
    with pytest.raises(typer.Exit), user_errors():
        assert warnings.formatwarning is not before
        raise DataError("bad")
    assert warnings.formatwarning is before
