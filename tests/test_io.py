"""hlvm.io: atomic files and folders under the umask, stale temporaries of killed writers, output checks."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time

import pytest

from hlvm.errors import ConfigError
from hlvm.io import atomic_dir, atomic_file, check_writable, remove_stale, temp_path, write_json


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def umask():
    """Set the process umask for one test, restore it after."""
    old = os.umask(0o022)
    os.umask(old)
    yield lambda m: os.umask(m)
    os.umask(old)


def dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_files_and_folders_take_the_umask_like_open_does(tmp_path, umask):
    umask(0o022)
    write_json(tmp_path / "a.json", {"x": 1})
    with atomic_file(tmp_path / "b.bin", "wb") as f:
        f.write(b"123")
    with atomic_dir(tmp_path / "d") as d:
        (d / "f").write_text("x")
    assert (mode(tmp_path / "a.json"), mode(tmp_path / "b.bin"), mode(tmp_path / "d")) == (0o644, 0o644, 0o755)
    umask(0o077)
    write_json(tmp_path / "c.json", {})
    assert mode(tmp_path / "c.json") == 0o600
    assert json.loads((tmp_path / "a.json").read_text()) == {"x": 1} and (tmp_path / "b.bin").read_bytes() == b"123"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "b.bin", "c.json", "d"]  # no temporaries left


def test_an_error_inside_leaves_the_old_file_and_no_temporary(tmp_path):
    write_json(tmp_path / "a.json", {"v": 1})
    with pytest.raises(RuntimeError):
        with atomic_file(tmp_path / "a.json") as f:
            f.write("{half")
            raise RuntimeError
    assert json.loads((tmp_path / "a.json").read_text()) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_temp_names_carry_host_and_pid(tmp_path):
    t = temp_path(tmp_path / "out")
    assert t.parent == tmp_path and t.name.startswith(".out.") and t.name.endswith(".tmp")
    assert f"-{os.getpid()}-" in t.name and socket.gethostname().split(".")[0].replace("-", "_") in t.name


def test_only_temporaries_of_dead_writers_of_this_host_and_target_are_removed(tmp_path):
    target = tmp_path / "sim-1"
    gone = dead_pid()
    mine = temp_path(target)
    dead_dir = mine.with_name(mine.name.replace(f"-{os.getpid()}-", f"-{gone}-"))
    dead_file = dead_dir.with_name(dead_dir.name.replace(".tmp", ".old"))
    other_host = tmp_path / f".sim-1.otherhost-{gone}-abcd1234.tmp"
    other_target = temp_path(tmp_path / "sim-2").with_name(dead_dir.name.replace(".sim-1.", ".sim-2."))
    legacy = tmp_path / ".sim-1.x8fk2_q1.tmp"  # mkdtemp's names: no owner to ask, left alone
    for d in (mine, dead_dir, other_host, other_target, legacy):
        d.mkdir()
        (d / "images.npy").write_bytes(b"x")
    dead_file.write_text("old")
    removed = remove_stale(target)
    assert sorted(p.name for p in removed) == sorted([dead_dir.name, dead_file.name])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([mine.name, other_host.name, other_target.name, legacy.name])


def test_a_sigkilled_simulate_leaves_a_temporary_that_the_next_run_removes(tmp_path):
    out = tmp_path / "data"
    proc = subprocess.Popen([sys.executable, "-m", "hlvm.cli.main", "simulate", "--depth", "3", "--n", "1000000",
                             "--out", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not any(p.name.endswith(".tmp") for p in tmp_path.iterdir()):
            assert proc.poll() is None, "simulate ended before it could be killed"
            time.sleep(0.05)
        time.sleep(0.3)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(30)
    left = sorted(p.name for p in tmp_path.iterdir())  # its temporary folder, and its lock file (no lock once it died)
    assert len(left) == 2 and left[0] == ".data.lock" and left[1].startswith(".data.") and not out.exists()
    r = subprocess.run([sys.executable, "-m", "hlvm.cli.main", "simulate", "--depth", "2", "--n", "100", "--out",
                        str(out)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["data"]


def test_check_writable_refuses_a_path_under_a_file_a_folder_given_as_file_and_a_read_only_folder(tmp_path, unwritable):
    (tmp_path / "f").write_text("x")
    with pytest.raises(ConfigError, match="f is a file, not a folder"):
        check_writable(tmp_path / "f" / "sub" / "out")
    with pytest.raises(ConfigError, match="exists and is not a folder"):
        check_writable(tmp_path / "f")
    with pytest.raises(ConfigError, match="is a folder; give a file name"):
        check_writable(tmp_path, kind="file")
    with pytest.raises(ConfigError, match="cannot write in"):
        check_writable(unwritable / "out")
    before = sorted(os.listdir(tmp_path))
    check_writable(tmp_path / "new" / "deeper")  # fine, and creates nothing
    check_writable(tmp_path / "g.json", kind="file")
    assert sorted(os.listdir(tmp_path)) == before


def test_a_symlinked_out_folder_is_written_through_and_the_link_stays(tmp_path):
    target, link = tmp_path / "target", tmp_path / "link"
    target.mkdir()
    link.symlink_to(target)
    with atomic_dir(link) as tmp:
        (tmp / "a.txt").write_text("x")
    assert link.is_symlink() and link.resolve() == target.resolve()
    assert (target / "a.txt").read_text() == "x"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no hidden .old or .tmp left


def test_a_dangling_symlink_out_names_the_users_path_and_its_target(tmp_path):
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "nowhere")
    for call in (lambda: check_writable(link), lambda: atomic_dir(link).__enter__()):
        with pytest.raises(ConfigError, match=rf"--out {link} is a symlink to .*nowhere, which does not exist"):
            call()
    assert not (tmp_path / "nowhere").exists()


def test_json_nested_deeper_than_python_can_parse_is_one_line(tmp_path):
    from hlvm.io import read_json

    path = tmp_path / "deep.json"
    path.write_text('{"grid": ' + "[" * 100_000 + "]" * 100_000 + "}")
    with pytest.raises(ConfigError, match="nested too deeply"):
        read_json(path, "mask spec", ConfigError)
    from typer.testing import CliRunner

    from hlvm.cli.main import app
    from _cli import assert_one_line_error

    assert_one_line_error(CliRunner().invoke(app, ["locate-c", "--mask", str(path)]), "nested too deeply")


def test_a_second_simulate_or_train_into_a_locked_folder_is_refused(tmp_path):
    # Two processes on one --out: the one that comes second gets one line at once, the first's output stands.
    from hlvm.errors import ConfigError
    from hlvm.graphs import GridSpec
    from hlvm.io import output_lock
    from hlvm.simulate import SimulateConfig, simulate_to_dir
    from hlvm.train import TrainConfig, train

    out = tmp_path / "sim"
    with output_lock(out, "simulate"):
        assert (tmp_path / ".sim.lock").read_text().startswith(f"pid {os.getpid()}")
        with pytest.raises(ConfigError, match=r"another hlvm simulate \(pid \d+ on .*\) is writing .*sim"):
            simulate_to_dir(SimulateConfig(grid=GridSpec(depth=2), n=8), out, progress=False)
    assert not out.exists() and list(tmp_path.iterdir()) == []  # released: the lock file is gone
    simulate_to_dir(SimulateConfig(grid=GridSpec(depth=2), n=8), out, progress=False)  # and the folder is free
    run = tmp_path / "run"
    with output_lock(run, "train"):
        with pytest.raises(ConfigError, match="another hlvm train"):
            train(TrainConfig(model="mlp", data=str(out), steps=1, batch_size=4, warmup=1, out=str(run)), progress=False)
    assert not run.exists()
    train(TrainConfig(model="mlp", data=str(out), steps=1, batch_size=4, warmup=1, out=str(run)), progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run", "sim"]


def test_provenance_names_the_cpu_and_the_vector_instructions_torch_uses():
    code = "import json, torch; from hlvm.io import provenance; print(json.dumps(provenance(argv=False)))"
    env = {**os.environ, "ATEN_CPU_CAPABILITY": "default"}
    out = json.loads(subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                                    check=True).stdout)
    assert out["torch_cpu_capability"] == "DEFAULT"  # lowered by the variable, as on a machine without AVX
    assert out["cpu"] is None or isinstance(out["cpu"], str) and out["cpu"]
    assert "argv" not in out
