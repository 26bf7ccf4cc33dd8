"""Small I/O helpers shared by every command: atomic outputs and provenance.

Nothing a command writes should ever be half there: files are written to a
temporary name and renamed; output folders are built under a temporary name
beside their destination and renamed when complete.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from hlvm.errors import ConfigError, HlvmError

__all__ = ["atomic_dir", "write_json", "read_json", "provenance", "new_run_dir", "nan_to_none"]


def read_json(
    path: str | os.PathLike[str], what: str, error: type[HlvmError], *, require_object: bool = True
) -> Any:
    """Parse the JSON file ``path``, a ``what`` (e.g. "mask spec"), for a user-facing command.

    A missing file, a file that is not JSON, or (with ``require_object``) JSON
    that is not an object raises ``error`` with one line naming ``what`` and
    the path.
    """
    path = Path(path)
    if not path.is_file():
        raise error(f"{what} not found: {path}")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise error(f"{what} {path} is not valid JSON: {e}") from None
    if require_object and not isinstance(data, dict):
        raise error(f"{what} {path} must be a JSON object, got {type(data).__name__}")
    return data


def nan_to_none(obj: Any) -> Any:
    """``obj`` with every float NaN (in nested dicts, lists and tuples) replaced by ``None``: JSON has no NaN."""
    if isinstance(obj, float) and math.isnan(obj):
        return None
    if isinstance(obj, dict):
        return {k: nan_to_none(x) for k, x in obj.items()}
    if isinstance(obj, list | tuple):
        return [nan_to_none(x) for x in obj]
    return obj


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically (temporary file, then rename)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=2, sort_keys=False)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def check_out_dir(out: Path, overwrite: bool) -> None:
    """Raise :class:`ConfigError` if ``out`` exists non-empty and ``overwrite`` is off, or is a file."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise ConfigError(f"--out {out} exists and is not empty; pass --overwrite to replace it")


@contextlib.contextmanager
def atomic_dir(out: str | os.PathLike[str], overwrite: bool = False) -> Iterator[Path]:
    """Build a folder under a temporary name beside ``out``; rename it to ``out`` on success.

    On any exception (Ctrl-C included) the temporary folder is removed and
    ``out`` is left as it was. An existing non-empty ``out`` needs ``overwrite``.
    """
    out = Path(out)
    check_out_dir(out, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp"))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.replace(out, old)
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out)


def new_run_dir(root: str | os.PathLike[str], prefix: str) -> Path:
    """A fresh, not-yet-existing path ``root/prefix-YYYYmmdd-HHMMSS[-n]``."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    base = Path(root) / f"{prefix}-{stamp}"
    path, n = base, 1
    while path.exists():
        path, n = Path(f"{base}-{n}"), n + 1
    return path


def _git_commit() -> str | None:
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5, check=True
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=here, capture_output=True, text=True, timeout=5
        )
        return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def provenance() -> dict[str, Any]:
    """What produced a result: hlvm version, git commit, Python, platform, time (UTC)."""
    from hlvm import __version__

    return {
        "hlvm_version": __version__,
        "git_commit": _git_commit(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "argv": sys.argv,
        "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
