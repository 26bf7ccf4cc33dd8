"""Append-only, crash-safe results of a sweep folder (:class:`ResultsStore`).

- ``results.csv`` and ``results.jsonl`` hold the rows (same rows, two formats);
- ``points.jsonl`` holds one *commit record* per finished point, written after
  its rows were appended and fsynced, with the byte length both row files had
  at that moment and the checksum of the bytes it appended to each.

A point counts as finished only once its commit record is on disk. On resume
the row files are cut back to the last commit's lengths (dropping the rows of a
point that died mid-append, which is never a finished point) and a torn last
line of ``points.jsonl`` is ignored and cut. Finished rows are never rewritten; a finished row edited in place
(its bytes no longer match their commit's checksum) is refused on resume.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hlvm.errors import ConfigError, DataError

from .grid import ROW_COLUMNS

__all__ = ["ResultsStore", "write_csv_atomic", "sweep_lock", "LOCK"]

#: The sweep folder's lock file: held (``flock``) by the one process that writes the folder.
LOCK = ".sweep.lock"


@contextlib.contextmanager
def sweep_lock(out: Path) -> Iterator[None]:
    """Hold the exclusive lock of the sweep folder ``out`` (an OS file lock, gone with its process).

    A second writer, in this process or another, gets a :class:`ConfigError`
    at once: two sweeps appending to one folder would interleave their rows.
    The lock file stays (empty of meaning once released); it names the last
    holder's process.
    """
    import fcntl
    import socket

    path = Path(out) / LOCK
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            raise ConfigError(
                f"another hlvm sweep ({holder}) is writing to {out}; wait for it to finish, or use another --out"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


def _fsync_append(path: Path, data: bytes) -> int:
    """Append ``data`` in one write, flush and fsync; return the file's new length."""
    with open(path, "ab") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
        return f.tell()


def _truncate(path: Path, size: int) -> None:
    with open(path, "r+b") as f:
        f.truncate(size)
        f.flush()
        os.fsync(f.fileno())


class ResultsStore:
    """Append-only results of a sweep folder; see the module docstring for the protocol."""

    CSV = "results.csv"
    JSONL = "results.jsonl"
    COMMITS = "points.jsonl"

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.csv_path = self.root / self.CSV
        self.jsonl_path = self.root / self.JSONL
        self.commits_path = self.root / self.COMMITS
        self._header: list[str] | None = None

    def recover(self) -> dict[str, dict[str, Any]]:
        """Finished points (``point_id`` -> commit record); cut torn or uncommitted tails.

        Raises :class:`DataError` if a row file is shorter than its commits
        say (edited or truncated by hand) or a line before the last is corrupt.
        """
        self.root.mkdir(parents=True, exist_ok=True)
        for p in (self.csv_path, self.jsonl_path, self.commits_path):
            p.touch(exist_ok=True)
        raw = self.commits_path.read_bytes()
        commits: dict[str, dict[str, Any]] = {}
        good_end = 0
        last: dict[str, Any] | None = None
        ordered: list[dict[str, Any]] = []
        pos = 0
        while pos < len(raw):
            nl = raw.find(b"\n", pos)
            line = raw[pos:] if nl < 0 else raw[pos:nl]
            try:
                rec = json.loads(line) if nl >= 0 else None
            except (json.JSONDecodeError, UnicodeDecodeError):
                rec = None
            if rec is None or not isinstance(rec, dict) or "point_id" not in rec:
                if nl >= 0 and raw[nl + 1 :].strip():
                    raise DataError(f"{self.commits_path}: corrupt line at byte {pos}, followed by more records")
                break  # a torn last line: the point it described was not committed
            commits[rec["point_id"]] = rec
            ordered.append(rec)
            last = rec
            pos = good_end = nl + 1
        if good_end < len(raw):
            _truncate(self.commits_path, good_end)
        csv_end = last["csv_end"] if last else 0
        jsonl_end = last["jsonl_end"] if last else 0
        for path, end in ((self.csv_path, csv_end), (self.jsonl_path, jsonl_end)):
            size = path.stat().st_size
            if size < end:
                raise DataError(f"{path} has {size} bytes but its committed rows end at byte {end}; was it edited?")
            if size > end:
                _truncate(path, end)  # rows of a point that never committed
        _verify(ordered, self.csv_path, self.jsonl_path)
        self._header = None
        if csv_end:
            with open(self.csv_path, newline="") as f:
                self._header = next(csv.reader(f))
        return commits

    def append(self, point_id: str, rows: Sequence[Mapping[str, Any]], meta: Mapping[str, Any]) -> dict[str, Any]:
        """Append one finished point's rows to both files, then its commit record."""
        if self._header is None:
            extra = sorted({k for r in rows for k in r} - set(ROW_COLUMNS))
            self._header = ROW_COLUMNS + extra
            header = True
        else:
            header = False
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=self._header, restval="", extrasaction="ignore", lineterminator="\n")
        if header:
            writer.writeheader()
        for r in rows:
            writer.writerow({k: _csv_value(v) for k, v in r.items()})
        csv_bytes = buf.getvalue().encode()
        csv_end = _fsync_append(self.csv_path, csv_bytes)
        blob = "".join(json.dumps(_json_value(dict(r)), allow_nan=True) + "\n" for r in rows).encode()
        jsonl_end = _fsync_append(self.jsonl_path, blob)
        rec = {"point_id": point_id, "rows": len(rows), "csv_end": csv_end, "jsonl_end": jsonl_end,
               "csv_sha256": _digest(csv_bytes), "jsonl_sha256": _digest(blob), **meta}
        _fsync_append(self.commits_path, (json.dumps(_json_value(rec)) + "\n").encode())
        return rec


def _digest(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()[:16]


def _verify(commits: Sequence[Mapping[str, Any]], csv_path: Path, jsonl_path: Path) -> None:
    """Each commit's rows are the bytes it wrote: a value edited in place in a row file is a :class:`DataError`.

    A commit record holds the checksum of the bytes its point appended to each row file (records written before
    checksums existed are not checked).
    """
    for path, end_key, sum_key in ((csv_path, "csv_end", "csv_sha256"), (jsonl_path, "jsonl_end", "jsonl_sha256")):
        if not any(sum_key in c for c in commits):
            continue
        data = path.read_bytes()
        start = 0
        for c in commits:
            end = c[end_key]
            if sum_key in c and _digest(data[start:end]) != c[sum_key]:
                raise DataError(f"{path}: the rows of point {c['point_id']} (bytes {start}-{end}) differ from what "
                                "the sweep wrote (their checksum in points.jsonl); was the file edited? Restore it "
                                "(results.jsonl holds the same rows) or start another --out")
            start = end


def _csv_value(v: Any) -> Any:
    if v is None:
        return ""
    if isinstance(v, float | np.floating):
        return repr(float(v))  # full precision, round-trips
    if isinstance(v, np.integer):
        return int(v)
    return v


def _json_value(d: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        if isinstance(v, np.floating):
            v = float(v)
        elif isinstance(v, np.integer):
            v = int(v)
        if isinstance(v, float) and not math.isfinite(v):
            v = None  # JSON has no NaN; an undefined number is null
        out[k] = v
    return out


def write_csv_atomic(path: Path, rows: Sequence[Mapping[str, Any]]) -> None:
    keys: list[str] = []
    for r in rows:
        keys.extend(k for k in r if k not in keys)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys, restval="", lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: _csv_value(v) for k, v in r.items()})
    from hlvm.io import atomic_file

    with atomic_file(path) as f:
        f.write(buf.getvalue())
