"""The bad-input contract of every command, as one table (DESIGN.md, cli/_common.py).

Each row is a command with one bad input. For every row: exit code 2, exactly
one line of output, starting with ``error:``, naming the problem, no
traceback, and nothing left behind in the output location (the row's own
folder is compared byte for byte before and after). A fault found later is
one new row.

The rows run through typer's CliRunner; the few cases that need a real second
process or a real signal run through subprocess at the bottom.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from _cli import assert_one_line_error
from hlvm.cli.main import app

runner = CliRunner()
HLVM = [sys.executable, "-m", "hlvm.cli.main"]
SWEEP = ["--ratios", "0.5", "--units", "1", "--seeds", "0", "--depth", "2", "--n-train", "64", "--n-eval", "32",
         "--steps", "2", "--batch-size", "16", "--eval-masks", "1", "-q", "--no-report"]


@dataclass
class Fx:
    """What the rows share: a folder no file can be created in, a tiny trained run, an image tree and its run."""

    ro: Path
    online: str
    mlp_run: Path
    vit_run: Path
    tree: Path


@pytest.fixture
def fx(unwritable, online_spec, mlp_run, run, tree) -> Fx:
    return Fx(unwritable, online_spec, mlp_run, run, tree)


@pytest.fixture(scope="module")
def mlp_run(tmp_path_factory, online_spec) -> Path:
    from hlvm.train import TrainConfig, train
    from hlvm.models import get_config

    model = get_config("mlp", img_size=4, in_chans=4, embed_dim=8, mlp_hidden=(16,), mlp_decoder_hidden=(16,))
    cfg = TrainConfig(model=model, data=online_spec, steps=2, batch_size=4, warmup=1, ckpt_every=0, log_every=1,
                      out=str(tmp_path_factory.mktemp("mlp") / "run"))
    return train(cfg, progress=False)


def _copy_run(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


def _drop_config(tmp: Path, fx: Fx) -> Path:
    run = _copy_run(fx.mlp_run, tmp / "run")
    ckpt = torch.load(run / "checkpoint.pt", weights_only=False)
    del ckpt["config"]
    torch.save(ckpt, run / "checkpoint.pt")
    return run


def _results(tmp: Path, torn: bool = False, binary: bool = False) -> Path:
    from hlvm.report import REQUIRED_COLUMNS

    folder = tmp / "sweep"
    folder.mkdir()
    if binary:
        (folder / "results.csv").write_bytes(bytes(range(256)) * 8)
        return folder
    with open(folder / "results.csv", "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(REQUIRED_COLUMNS)
        w.writerow(["p", 0.5, 1, 0, 0, "z_0_0_0", 0, "c", 0.9])
        if torn:
            f.write("p,0.5,1")
    return folder


def _locked_sweep(tmp: Path, fx: Fx) -> Path:
    """A sweep folder whose lock another writer holds (released when the test's process lets the fd go)."""
    import fcntl

    folder = tmp / "sweep"
    folder.mkdir()
    (folder / ".sweep.lock").write_text("pid 1 on elsewhere\n")
    fd = os.open(folder / ".sweep.lock", os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)
    _held.append(fd)
    return folder


_held: list[int] = []


@pytest.fixture(autouse=True)
def _release_locks():
    yield
    while _held:
        os.close(_held.pop())


def _foreign(tmp: Path) -> Path:
    folder = tmp / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("not a sweep")
    return folder


def _config(tmp: Path, obj: dict) -> Path:
    path = tmp / "config.json"
    path.write_text(json.dumps(obj))
    return path


def _mask(tmp: Path) -> Path:
    path = tmp / "mask.json"
    path.write_text(json.dumps({"ratio": 0.5, "patch_size": 1, "seed": 0}))
    return path


def _file(tmp: Path) -> Path:
    (tmp / "afile").write_text("x")
    return tmp / "afile"


@dataclass
class Row:
    name: str
    args: Callable[[Path, Fx], list[str]]
    words: tuple[str, ...]
    env: dict[str, str] = field(default_factory=dict)
    no_cuda: bool = False
    no_ray: bool = False


ROWS = [
    # simulate
    Row("simulate --out under a file", lambda t, f: ["simulate", "--n", "10", "--out", f"{_file(t)}/x"],
        ("afile is a file, not a folder",)),
    Row("simulate --out read-only", lambda t, f: ["simulate", "--n", "10", "--out", str(f.ro / "x")], ("cannot write in",)),
    Row("simulate --n 1e11", lambda t, f: ["simulate", "--depth", "2", "--n", "100000000000", "--out", str(t / "o")],
        ("100,000,000,000 samples", "pass --yes")),
    Row("simulate --n 1e11 --yes", lambda t, f: ["simulate", "--depth", "2", "--n", "100000000000", "--yes", "--out",
                                                 str(t / "o")], ("the output needs", "free")),
    Row("simulate --depth 12", lambda t, f: ["simulate", "--depth", "12", "--out", str(t / "o")],
        ("22,369,621 nodes", "pass --yes")),
    Row("simulate --out a file", lambda t, f: ["simulate", "--n", "10", "--out", str(_file(t))], ("exists and is not a folder",)),
    # predict
    Row("predict --out under a file", lambda t, f: ["predict", "--k", "5", "-q", "--out", f"{_file(t)}/x"],
        ("afile is a file, not a folder",)),
    Row("predict --out read-only", lambda t, f: ["predict", "--k", "5", "-q", "--out", str(f.ro / "x")], ("cannot write in",)),
    # train
    Row("train --out under a file", lambda t, f: ["train", "--model", "mlp", "--data", f.online, "--steps", "2", "-q",
                                                  "--out", f"{_file(t)}/x"], ("afile is a file, not a folder",)),
    Row("train --out read-only", lambda t, f: ["train", "--model", "mlp", "--data", f.online, "--steps", "2", "-q",
                                               "--out", str(f.ro / "x")], ("cannot write in",)),
    Row("train --blr 1e30", lambda t, f: ["train", "--model", "mlp", "--data", f.online, "--steps", "20", "--blr",
                                          "1e30", "--batch-size", "16", "-q", "--out", str(t / "run")],
        ("loss is nan", "lower --blr", "nothing is kept")),
    Row("train --resume without config", lambda t, f: ["train", "--resume", str(_drop_config(t, f)), "-q"],
        ("lacks config", "not a run hlvm train wrote")),
    Row("train --resume of no run", lambda t, f: ["train", "--resume", str(t / "none"), "-q"], ("run folder not found",)),
    Row("train --device cuda", lambda t, f: ["train", "--model", "mlp", "--data", f.online, "--device", "cuda", "-q",
                                             "--out", str(t / "run")], ("CUDA is not available",), no_cuda=True),
    # evaluate
    Row("evaluate --device cuda", lambda t, f: ["evaluate", "--run", str(f.mlp_run), "--mask", str(_mask(t)), "--device",
                                                "cuda"], ("CUDA is not available",), no_cuda=True),
    Row("evaluate --run missing", lambda t, f: ["evaluate", "--run", str(t / "none"), "--mask", str(_mask(t))],
        ("run folder not found",)),
    # probe
    Row("probe --batch-size 0", lambda t, f: ["probe", "--run", str(f.vit_run), "--data", f"imagefolder:{f.tree}",
                                              "--batch-size", "0", "-q"], ("batch size must be an integer >= 1",)),
    Row("probe --num-workers -1", lambda t, f: ["probe", "--run", str(f.vit_run), "--data", f"imagefolder:{f.tree}",
                                                "--num-workers", "-1", "-q"], ("num_workers must be an integer >= 0",)),
    Row("probe --out under a file", lambda t, f: ["probe", "--run", str(f.vit_run), "--data", f"imagefolder:{f.tree}",
                                                  "-q", "--out", f"{_file(t)}/p.json"], ("afile is a file, not a folder",)),
    Row("probe --out a folder", lambda t, f: ["probe", "--run", str(f.vit_run), "--data", f"imagefolder:{f.tree}", "-q",
                                              "--out", str(t)], ("is a folder; give a file name",)),
    Row("probe --out read-only", lambda t, f: ["probe", "--run", str(f.vit_run), "--data", f"imagefolder:{f.tree}",
                                               "-q", "--out", str(f.ro / "p.json")], ("cannot write in",)),
    # recon
    Row("recon --out under a file", lambda t, f: ["recon", "--run", str(f.vit_run), "--data", f"imagefolder:{f.tree}",
                                                  "-q", "--out", f"{_file(t)}/r"], ("afile is a file, not a folder",)),
    Row("recon --out read-only", lambda t, f: ["recon", "--run", str(f.vit_run), "--data", f"imagefolder:{f.tree}",
                                               "-q", "--out", str(f.ro / "r")], ("cannot write in",)),
    # sweep
    Row("sweep --out under a file", lambda t, f: ["sweep", *SWEEP, "--out", f"{_file(t)}/s"], ("afile is a file, not a folder",)),
    Row("sweep --out read-only", lambda t, f: ["sweep", *SWEEP, "--out", str(f.ro / "s")], ("cannot write in",)),
    Row("sweep on a folder another sweep writes", lambda t, f: ["sweep", *SWEEP, "--out", str(_locked_sweep(t, f))],
        ("another hlvm sweep (pid 1 on elsewhere) is writing to",)),
    Row("sweep on a folder without a sweep", lambda t, f: ["sweep", *SWEEP, "--out", str(_foreign(t))],
        ("is not empty and holds no sweep (it has notes.txt)",)),
    Row("sweep blr Infinity", lambda t, f: ["sweep", "--config", str(_config(t, {"blr": float("inf")})), *SWEEP, "--out",
                                            str(t / "s")], ("blr must be a positive finite number",)),
    Row("sweep bad train key", lambda t, f: ["sweep", "--config", str(_config(t, {"train": {"warmpu": 1}})), *SWEEP,
                                             "--out", str(t / "s")], ("unknown TrainConfig field 'warmpu'",)),
    Row("sweep train sets steps", lambda t, f: ["sweep", "--config", str(_config(t, {"train": {"steps": 1}})), *SWEEP,
                                                "--out", str(t / "s")], ("'steps' is set by the sweep",)),
    Row("sweep bad model_options", lambda t, f: ["sweep", "--config", str(_config(t, {"model_options": {"mlp_hidden": "x"}})),
                                                 *SWEEP, "--out", str(t / "s")], ("mlp_hidden",)),
    Row("sweep --backend ray without ray", lambda t, f: ["sweep", *SWEEP, "--backend", "ray", "--out", str(t / "s")],
        ("needs Ray", "pip install 'hlvm[ray]'"), no_ray=True),
    Row("sweep --retries -1", lambda t, f: ["sweep", *SWEEP, "--retries", "-1", "--out", str(t / "s")], ("--retries",)),
    # report (the first four were fixed with the report's split; verified here)
    Row("report binary results.csv", lambda t, f: ["report", str(_results(t, binary=True))], ("not a text CSV",)),
    Row("report torn last row", lambda t, f: ["report", str(_results(t, torn=True))], ("torn or corrupt row",)),
    Row("report --out a file", lambda t, f: ["report", str(_results(t)), "--out", str(_file(t))],
        ("exists and is not a folder",)),
    Row("report missing results", lambda t, f: ["report", str(t / "none")], ("results file not found",)),
    Row("report --out read-only", lambda t, f: ["report", str(_results(t)), "--out", str(f.ro / "r")], ("cannot write in",)),
    Row("report --out under a file", lambda t, f: ["report", str(_results(t)), "--out", f"{_file(t)}/r"],
        ("afile is a file, not a folder",)),
    # locate-c
    Row("locate-c malformed spec", lambda t, f: ["locate-c", "--mask", str(_config(t, []).parent / "config.json")],
        ("must be a JSON object",)),
]


def snapshot(folder: Path) -> dict[str, bytes | None]:
    """Every path under ``folder`` with its bytes (None for folders)."""
    return {str(p.relative_to(folder)): (None if p.is_dir() else p.read_bytes()) for p in sorted(folder.rglob("*"))}


@pytest.mark.parametrize("row", ROWS, ids=[r.name for r in ROWS])
def test_bad_input_is_one_error_line_exit_2_and_leaves_nothing(row, fx, tmp_path, monkeypatch):
    if row.no_cuda:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    if row.no_ray:
        monkeypatch.setitem(sys.modules, "ray", None)
    monkeypatch.chdir(tmp_path)  # a default output under runs/ would land here
    args = row.args(tmp_path, fx)
    before = snapshot(tmp_path)
    result = runner.invoke(app, args)
    assert_one_line_error(result, *row.words)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert snapshot(tmp_path) == before


# ----------------------------------------------------------------------------- faults that now succeed


def test_train_resume_with_a_torn_last_metrics_line_resumes(fx, tmp_path):
    run = _copy_run(fx.mlp_run, tmp_path / "run")
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"step": 3, "lo')
    r = runner.invoke(app, ["train", "--resume", str(run), "-q"])
    assert r.exit_code == 0, r.output
    assert [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()] == [1, 2]


def test_probe_out_into_a_missing_folder_makes_it(fx, tmp_path):
    out = tmp_path / "new" / "deeper" / "probe.json"
    r = runner.invoke(app, ["probe", "--run", str(fx.vit_run), "--data", f"imagefolder:{fx.tree}", "-q", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert json.loads(out.read_text())["top1"] >= 0


def test_report_names_a_prediction_csv_with_wrong_columns_instead_of_dropping_it(tmp_path):
    from hlvm.report import build_report
    from test_report import CLAIM2, toy_rows, write_rows

    write_rows(tmp_path / "results.csv", toy_rows(CLAIM2))
    (tmp_path / "prediction.csv").write_text("foo,bar\n1,2\n")
    text = build_report(tmp_path).read_text()
    assert "`prediction.csv` lacks the columns of `hlvm.predict`" in text and "mask_ratio" in text


# ----------------------------------------------------------------------------- real processes and signals


def _wait_for(pred: Callable[[], bool], proc: subprocess.Popen, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert proc.poll() is None, f"{what}: the process ended early ({proc.returncode})"
        assert time.monotonic() < deadline, f"{what}: timed out"
        time.sleep(0.05)


def test_a_second_sweep_process_on_the_same_folder_is_refused_while_the_first_runs(tmp_path):
    out = tmp_path / "s"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pathlib import Path; from hlvm.sweep.store import sweep_lock;\n"
         "p = Path(sys.argv[1]); p.mkdir()\nwith sweep_lock(p):\n    Path(sys.argv[2]).touch(); time.sleep(60)",
         str(out), str(tmp_path / "held")])
    try:
        _wait_for(lambda: (tmp_path / "held").exists(), holder, "lock holder")
        before = snapshot(out)
        r = subprocess.run([*HLVM, "sweep", *SWEEP, "--out", str(out)], capture_output=True, text=True, timeout=120)
        assert r.returncode == 2 and r.stdout == "", (r.stdout, r.stderr)
        assert r.stderr.count("\n") == 1 and r.stderr.startswith(f"error: another hlvm sweep (pid {holder.pid} on ")
        assert snapshot(out) == before
    finally:
        holder.kill()
        holder.wait(30)
    # the lock went with its holder: the same command now runs
    r = subprocess.run([*HLVM, "sweep", *SWEEP, "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert (out / "results.csv").stat().st_size > 0


def test_ctrl_c_in_simulate_exits_130_and_leaves_nothing(tmp_path):
    out = tmp_path / "data"
    proc = subprocess.Popen([*HLVM, "simulate", "--depth", "3", "--n", "1000000", "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(lambda: any(p.name.endswith(".tmp") for p in tmp_path.iterdir()), proc, "simulate")
        time.sleep(0.3)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert list(tmp_path.iterdir()) == []
