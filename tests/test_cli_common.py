"""The bad-input contract shared by every command: one line, exit code 2."""

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
