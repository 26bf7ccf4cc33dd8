"""What every command shares: consoles and the bad-input contract.

Bad input of any kind ends with a one-line ``error: ...`` on stderr and exit
code 2, never a traceback. Library code raises :class:`hlvm.errors.HlvmError`
for such input; :func:`user_errors` turns it into that line, and an
``OSError`` on a named path (a folder that refused a write) too. A warning the
library raises inside :func:`user_errors` prints as one ``warning: ...`` line
(Python's default adds the file, line number and source line).
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from typing import Any

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


def _format_warning(message: Any, category: Any, filename: str, lineno: int, line: str | None = None) -> str:
    return f"warning: {one_line(str(message))}\n"


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Turn :class:`HlvmError` raised inside the block into a one-line error and exit 2.

    Warnings shown inside the block print as one ``warning: ...`` line on
    stderr; the formatter is restored on the way out.
    """
    # formatwarning, not showwarning: warnings still go wherever they went (stderr, pytest's
    # recorder, a logging capture), only their text changes.
    previous = warnings.formatwarning
    warnings.formatwarning = _format_warning
    try:
        yield
    except HlvmError as e:
        raise fail(str(e)) from None
    except OSError as e:
        # A path the filesystem refused (read-only, full, not a folder) that no check caught first: still one
        # line. An OSError naming no file is not about the user's paths; it keeps its traceback.
        if e.filename is None:
            raise
        raise fail(f"{e.strerror or type(e).__name__}: {e.filename}") from None
    finally:
        warnings.formatwarning = previous
