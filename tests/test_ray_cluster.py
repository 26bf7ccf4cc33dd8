"""A real two-node Ray cluster on this machine, with token authentication, and a sweep on it without a shared --out.

The README's recipe, run as written: ``ray start --head`` and a second ``ray start --address`` (each node in a
working directory of its own; ``RAY_AUTH_MODE=token``, the head's ``~/.ray/auth_token``), then ``hlvm sweep
--backend ray --ray-address HOST:PORT`` from a third folder, whose default ``--ray-data worker`` sends every
point's rows back to the driver. Its rows equal the process pool's value for value. The nodes are started with
``--block`` in their own process groups, and only those are stopped. Skipped where Ray is absent.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("ray")

SWEEP = ["--ratios", "0.25,0.75", "--units", "1", "--depth", "2", "--seeds", "0", "--steps", "5", "--batch-size", "16",
         "--n-train", "200", "--n-eval", "50", "--controls", "pixels,pca", "-q", "--no-report"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ray() -> str:
    exe = shutil.which("ray", path=str(Path(sys.executable).parent)) or shutil.which("ray")
    if exe is None:
        pytest.skip("the ray command is not installed")
    return exe


def _nodes(env: dict, address: str) -> int:
    import re

    r = subprocess.run([_ray(), "status", "--address", address], capture_output=True, text=True, env=env, timeout=60)
    active = r.stdout.split("Active:")[1].split("Pending:")[0] if "Active:" in r.stdout else ""
    return len(re.findall(r"node_", active))


def _rows(path: Path) -> list[str]:
    return sorted(json.dumps(json.loads(x), sort_keys=True) for x in path.read_text().splitlines())


def test_a_two_node_cluster_runs_a_sweep_without_a_shared_out(tmp_path):
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_USAGE_STATS_ENABLED": "0", "NO_COLOR": "1"}
    port = _free_port()
    address = f"127.0.0.1:{port}"
    common = ["--num-cpus", "1", "--block", "--disable-usage-stats"]
    procs = []
    import tempfile

    ray_tmp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's socket paths must fit in 107 characters
    try:
        for name, args in (("head", ["--head", "--port", str(port), "--include-dashboard=false", "--temp-dir", ray_tmp]),
                           ("node2", ["--address", address])):
            (tmp_path / name).mkdir()
            procs.append(subprocess.Popen([_ray(), "start", *args, *common], cwd=tmp_path / name, env=env,
                                          stdout=open(tmp_path / f"{name}.log", "w"), stderr=subprocess.STDOUT,  # noqa: SIM115
                                          start_new_session=True))
            deadline = time.monotonic() + 90
            while _nodes(env, address) < len(procs):
                assert time.monotonic() < deadline, f"ray {name} did not join within 90 s"
                assert procs[-1].poll() is None, (f"ray start ({name}) exited with {procs[-1].returncode}: "
                                                  + (tmp_path / f"{name}.log").read_text()[-2000:])
                time.sleep(1)
        (tmp_path / "driver").mkdir()
        hlvm = [sys.executable, "-m", "hlvm.cli.main", "sweep", *SWEEP]
        r = subprocess.run([*hlvm, "--backend", "ray", "--ray-address", address, "--out", "out"], cwd=tmp_path / "driver",
                           env=env, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stdout + r.stderr
        r = subprocess.run([*hlvm, "--out", "pool"], cwd=tmp_path / "driver", env=env, capture_output=True, text=True,
                           timeout=300)
        assert r.returncode == 0, r.stdout + r.stderr
        rows = _rows(tmp_path / "driver" / "out" / "results.jsonl")
        assert len(rows) == 120 and rows == _rows(tmp_path / "driver" / "pool" / "results.jsonl")
        assert not any((tmp_path / n / "out").exists() for n in ("head", "node2"))  # nothing written where nodes run
    finally:
        for p in reversed(procs):  # only the Ray processes this test started: their process groups
            for sig in (signal.SIGTERM, signal.SIGKILL):
                try:
                    os.killpg(p.pid, sig)
                    p.wait(30)
                    break
                except ProcessLookupError:
                    break
                except subprocess.TimeoutExpired:
                    continue
        shutil.rmtree(ray_tmp, ignore_errors=True)
