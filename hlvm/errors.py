"""Domain exceptions.

Every error a user can cause with bad input is an :class:`HlvmError`; the CLI
turns it into a one-line message and exit code 2. Anything else is a bug and
keeps its traceback.
"""

from __future__ import annotations


class HlvmError(ValueError):
    """Bad input a user can fix: the message names the problem in one line."""


class GraphError(HlvmError):
    """A graph that violates Assumption 1 or the graph-file contract."""


class MaskError(HlvmError):
    """A mask or mask spec that cannot be used (empty, full, wrong shape, ...)."""


class ConfigError(HlvmError):
    """An option or config value outside its valid range."""


class DataError(HlvmError):
    """A data folder, file or image that is missing, malformed or unreadable."""
