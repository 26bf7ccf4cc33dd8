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


def check_keys(data: object, known: object, what: str, *, ignore: tuple[str, ...] = ()) -> None:
    """The one rule for every config object: a key it does not know is a :class:`ConfigError`.

    The message names the first unknown key and the nearest known one (by
    :func:`difflib.get_close_matches`), else every known key. Keys starting
    with ``_`` (``"_comment"``) and the names in ``ignore`` (bookkeeping a saved
    config carries, such as ``provenance``) are allowed.

    >>> check_keys({"nosie": "laplace"}, ["noise", "n", "seed"], "simulate config")
    Traceback (most recent call last):
    ...
    hlvm.errors.ConfigError: unknown simulate config key 'nosie'; did you mean 'noise'?
    """
    import difflib

    names = sorted(str(k) for k in known)  # type: ignore[attr-defined]
    unknown = sorted(k for k in data if not str(k).startswith("_") and k not in names and k not in ignore)  # type: ignore[attr-defined]
    if not unknown:
        return
    key = unknown[0]
    near = difflib.get_close_matches(str(key), names, n=1, cutoff=0.7)
    hint = f"did you mean {near[0]!r}?" if near else f"known: {', '.join(names)}"
    raise ConfigError(f"unknown {what} key {key!r}; {hint}")
