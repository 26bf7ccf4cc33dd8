"""What every command shares: consoles and the bad-input contract.

Bad input of any kind ends with a one-line ``error: ...`` on stderr and exit
code 2, never a traceback. Library code raises :class:`hlvm.errors.HlvmError`
for such input; :func:`user_errors` turns it into that line.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import typer
from rich.console import Console

from hlvm.errors import HlvmError

# soft_wrap: paths and ids are printed whole, never broken across lines at the terminal width.
console = Console(highlight=False, soft_wrap=True)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)


def one_line(message: str) -> str:
    """The user-facing line of an error message.

    An error raised in a DataLoader worker reaches the main process re-raised
    by torch with the worker's whole traceback as its message; its last line
    (``module.ErrorType: the original message``) is what the user needs.
    """
    text = str(message)
    if "Original Traceback" in text:
        last = text.strip().splitlines()[-1]
        kind, sep, rest = last.partition(": ")
        text = rest if sep and "Error" in kind else last
    return " ".join(text.split())


def fail(message: str) -> typer.Exit:
    """Print ``error: message`` on one line to stderr; return the exit-2 exception to raise."""
    err_console.print(f"error: {one_line(message)}", markup=False)
    return typer.Exit(code=2)


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Turn :class:`HlvmError` raised inside the block into a one-line error and exit 2."""
    try:
        yield
    except HlvmError as e:
        raise fail(str(e)) from None
