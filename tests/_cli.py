"""What every CLI test checks of bad input: the contract of DESIGN.md."""

from __future__ import annotations


def assert_one_line_error(result, *words: str) -> None:
    """Exit code 2, exactly one non-blank line of output, ``error: ...``, naming every one of ``words``; no traceback."""
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    for w in words:
        assert w in lines[0], lines[0]
    assert "Traceback" not in result.output
