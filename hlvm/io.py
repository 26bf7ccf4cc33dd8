"""Small I/O helpers shared by every command: atomic outputs, output checks and provenance.

Nothing a command writes should ever be half there: files are written to a
temporary name and renamed; output folders are built under a temporary name
beside their destination and renamed when complete. Temporary names carry the
host and process id of their writer (``.NAME.HOST-PID-RANDOM.tmp``), so that
one left by a killed process can be told from one still being written and
removed by the next writer of the same target (:func:`remove_stale`). Files
and folders are created with the usual modes under the process's umask
(``0644`` / ``0755`` with the common ``022``), as ``open`` would make them.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import secrets
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from hlvm.errors import ConfigError, HlvmError

__all__ = [
    "atomic_dir",
    "atomic_file",
    "write_json",
    "read_json",
    "provenance",
    "new_run_dir",
    "check_out_dir",
    "check_writable",
    "resolve_link",
    "remove_stale",
    "temp_path",
    "nan_to_none",
]


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
    except RecursionError:
        raise error(f"{what} {path} is nested too deeply to be a {what}") from None
    if require_object and not isinstance(data, dict):
        raise error(f"{what} {path} must be a JSON object, got {type(data).__name__}")
    return data


def _host() -> str:
    # '.' and '-' would confuse the parse of a temporary name; keep the name recognisable.
    return socket.gethostname().replace(".", "_").replace("-", "_") or "host"


def temp_path(target: str | os.PathLike[str], suffix: str = ".tmp") -> Path:
    """A fresh temporary name beside ``target``: ``.NAME.HOST-PID-RANDOM.tmp`` (see the module docstring)."""
    target = Path(target)
    return target.with_name(f".{target.name}.{_host()}-{os.getpid()}-{secrets.token_hex(4)}{suffix}")


def _owner_gone(token: str) -> bool:
    """Whether ``HOST-PID-RANDOM`` names a process of this host that no longer runs."""
    host, _, rest = token.partition("-")
    pid, _, rand = rest.partition("-")
    if host != _host() or not pid.isdigit() or not rand:
        return False  # another machine's (a shared folder), or not one of ours: leave it
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # alive, another user's
    return False


def remove_stale(target: str | os.PathLike[str]) -> list[Path]:
    """Remove the temporary files and folders of ``target`` left by writers that were killed; return them.

    Only names this module makes are touched, and only those whose writer
    ran on this host and is gone; one still being written, or written from
    another machine, stays.
    """
    target = Path(target)
    prefix = f".{target.name}."
    removed = []
    try:
        entries = list(target.parent.iterdir())
    except OSError:
        return removed
    for entry in entries:
        name = entry.name
        if not name.startswith(prefix):
            continue
        token, dot, suffix = name[len(prefix) :].rpartition(".")
        if not dot or suffix not in ("tmp", "old") or not _owner_gone(token):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                entry.unlink()
        removed.append(entry)
    return removed


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike[str], mode: str = "w") -> Iterator[Any]:
    """Open a temporary file beside ``path`` for writing; rename it to ``path`` when the block ends without error.

    On any exception (Ctrl-C included) the temporary file is removed and
    ``path`` is left as it was. The file is created with mode ``0666`` under
    the umask, as ``open`` would; its contents are fsynced before the rename.
    """
    path = Path(path)
    remove_stale(path)
    tmp = temp_path(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


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
    with atomic_file(path) as f:
        json.dump(obj, f, indent=2, sort_keys=False)
        f.write("\n")


def resolve_link(out: str | os.PathLike[str], what: str = "--out") -> Path:
    """``out``, or the folder it links to: a symlinked output folder is written through (the link stays).

    A dangling link is a :class:`ConfigError` naming the link and its target.
    """
    out = Path(out)
    if out.is_symlink():
        target = out.resolve()
        if not target.exists():
            raise ConfigError(f"{what} {out} is a symlink to {target}, which does not exist; create it or give another path")
        return target
    return out


def check_out_dir(out: Path, overwrite: bool) -> None:
    """Raise :class:`ConfigError` if ``out`` exists non-empty and ``overwrite`` is off, or is a file."""
    out = resolve_link(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise ConfigError(f"--out {out} exists and is not empty; pass --overwrite to replace it")


def check_writable(out: str | os.PathLike[str], *, what: str = "--out", kind: str = "folder") -> None:
    """Raise :class:`ConfigError` unless ``out`` (a ``kind``: "folder" or "file") can be written here.

    Checks, creating nothing that stays: that ``out`` is not the wrong kind of
    thing, that no part of the path above it is a file, and that the nearest
    existing folder on the path takes a new file (a read-only folder or
    filesystem does not). Run it before any work, so that a command that
    cannot save its result fails at once. A symlink is checked where it points
    (:func:`resolve_link`).
    """
    out = resolve_link(out, what)
    if out.exists():
        if kind == "folder" and not out.is_dir():
            raise ConfigError(f"{what} {out} exists and is not a folder")
        if kind == "file" and out.is_dir():
            raise ConfigError(f"{what} {out} is a folder; give a file name")
        where = out if out.is_dir() else out.parent
    else:
        where = out.parent
        while not where.exists() and where != where.parent:
            where = where.parent
        if not where.is_dir():
            raise ConfigError(f"{what} {out}: {where} is a file, not a folder")
    probe = temp_path(where / "write-test")
    try:
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except OSError as e:
        raise ConfigError(f"{what} {out}: cannot write in {where} ({e.strerror})") from None
    with contextlib.suppress(OSError):
        os.unlink(probe)


@contextlib.contextmanager
def atomic_dir(out: str | os.PathLike[str], overwrite: bool = False) -> Iterator[Path]:
    """Build a folder under a temporary name beside ``out``; rename it to ``out`` on success.

    On any exception (Ctrl-C included) the temporary folder is removed and
    ``out`` is left as it was. An existing non-empty ``out`` needs
    ``overwrite``. Temporary folders of ``out`` left by killed processes are
    removed first (:func:`remove_stale`). A symlink ``out`` is written through:
    the folder it names gets the result and the link stays.
    """
    out = resolve_link(out)
    check_out_dir(out, overwrite)
    check_writable(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(out)
    tmp = temp_path(out)
    os.mkdir(tmp, 0o777)  # under the umask, as any folder
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if out.exists():
        old = temp_path(out, ".old")
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


def _cpu() -> str | None:
    """The CPU's model name (``/proc/cpuinfo``'s first ``model name``, else ``platform.processor()``), or None."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def provenance(config: Any = None, *, argv: bool = True) -> dict[str, Any]:
    """What produced a result: hlvm version, git commit (from a checkout), Python, numpy and torch, platform, time (UTC).

    ``cpu`` (the model name) and, where torch is imported, ``torch_cpu_capability`` (the vector instructions its
    CPU kernels use: ``AVX512``, ``AVX2``, ``DEFAULT``; ``ATEN_CPU_CAPABILITY`` lowers it) say why trained rows of
    one config can differ between two machines in their last digits (README, "Determinism").

    ``config`` (anything JSON-serialisable) adds ``config_hash``, the SHA-256 of
    its sorted JSON (first 16 hex digits): two results of one hash ran one
    configuration. ``argv=False`` leaves the command line out (it names output
    paths, which should not change a result's bytes). torch's version is given
    when torch is already imported (it is never imported for this).
    """
    import hashlib

    import numpy

    from hlvm import __version__

    torch = sys.modules.get("torch")
    out: dict[str, Any] = {
        "hlvm_version": __version__,
        "git_commit": _git_commit(),
        "python": sys.version.split()[0],
        "numpy": numpy.__version__,
        "torch": getattr(torch, "__version__", None),
        "platform": platform.platform(),
        "cpu": _cpu(),
    }
    if torch is not None:
        try:
            out["torch_cpu_capability"] = torch.backends.cpu.get_cpu_capability()
        except (AttributeError, RuntimeError):  # an older or partial torch
            pass
    if argv:
        out["argv"] = sys.argv
    if config is not None:
        blob = json.dumps(config, sort_keys=True, default=str)
        out["config_hash"] = hashlib.sha256(blob.encode()).hexdigest()[:16]
    out["created_utc"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return out

@contextlib.contextmanager
def output_lock(out: str | os.PathLike[str], command: str) -> Iterator[None]:
    """Hold an exclusive OS file lock on the output folder ``out`` while ``command`` writes it.

    A second ``hlvm simulate`` or ``hlvm train`` on the same ``out``, in this process or another, gets a
    :class:`ConfigError` at once instead of both reporting success into one folder. The lock is a file beside the
    folder (``.NAME.lock``, naming its holder), removed on release; a lock left by a killed process is no lock (the
    OS drops it with the process) and is taken over.
    """
    import fcntl

    out = resolve_link(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    path = out.parent / f".{out.name}.lock"
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise ConfigError(f"another hlvm {command} ({holder}) is writing {out}; wait for it to finish, "
                              "or use another --out") from None
        try:  # the holder before us may have removed the file after we opened it: lock the one on disk
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        yield
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)
        os.close(fd)
