"""`hlvm simulate`: defaults equal the library's, options reach the config, summary, bad input as one line + exit 2."""

from __future__ import annotations

import hashlib
import json

import pytest
from typer.testing import CliRunner

from hlvm import simulate as simulate_lib
from hlvm.cli.main import app
from hlvm.graphs import GridSpec, graph_to_json, grid_hierarchy, read_graph, write_graph
from hlvm.mixing import MixingSpec
from hlvm.simulate import SimulateConfig, load_dataset
from _cli import assert_one_line_error

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, ["simulate", *args])



def test_defaults_are_the_library_defaults(tmp_path):
    result = invoke("--n", "30", "--out", str(tmp_path / "out"))
    assert result.exit_code == 0, result.output
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert SimulateConfig.from_dict(config) == SimulateConfig(n=30)
    assert config["grid"] == GridSpec().to_dict() and config["mixing"] == MixingSpec().to_dict()
    # The graph `hlvm locate-c` assumes for "the default hlvm simulate graph".
    assert graph_to_json(read_graph(tmp_path / "out" / "graph.json")) == graph_to_json(grid_hierarchy(GridSpec()))


def test_summary_names_levels_dims_image_shape_and_size(tmp_path):
    result = invoke("--n", "30", "--out", str(tmp_path / "out"))
    out = result.output
    assert "Hierarchy" in out and "observed" in out
    rows = {line.split("│")[1].strip(): line for line in out.splitlines() if line.count("│") >= 6}
    assert set(rows) >= {"0", "1", "2", "3", "4"}
    cells = [c.strip() for c in rows["3"].split("│")[1:-1]]
    assert cells == ["3", "latent", "64", "5", "1", "320"]  # level, kind, nodes, dim, noise dim, total
    assert "(6, 16, 16)" in out
    assert "MiB on disk" in out or "KiB on disk" in out
    assert str(tmp_path / "out") in out.replace("\n", "")


def test_options_reach_the_config(tmp_path):
    result = invoke(
        "--depth", "2", "--branching", "3", "--n", "17", "--root-dim", "3", "--noise-dim", "2",
        "--obs-noise-dim", "2", "--extra-parent-prob", "0.4", "--graph-seed", "5", "--mixing", "linear",
        "--layers", "3", "--slope", "0.3", "--noise", "laplace", "--seed", "8", "--dtype", "float64",
        "--out", str(tmp_path / "out"),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    cfg = load_dataset(tmp_path / "out").config
    assert cfg.grid == GridSpec(depth=2, branching=3, root_dim=3, noise_dim=2, obs_noise_dim=2,
                                extra_parent_prob=0.4, seed=5)
    assert cfg.mixing == MixingSpec(kind="linear", layers=3, slope=0.3)
    assert (cfg.noise, cfg.seed, cfg.n, cfg.dtype) == ("laplace", 8, 17, "float64")
    data = load_dataset(tmp_path / "out")
    assert data.images.shape == (17, data.images.shape[1], 9, 9) and data.images.dtype == "float64"


def test_out_defaults_to_a_new_folder_under_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for _ in range(2):
        assert invoke("--depth", "1", "--n", "5").exit_code == 0
    made = sorted((tmp_path / "runs").iterdir())
    assert len(made) == 2 and all(p.name.startswith("simulate-") for p in made)
    assert all((p / "images.npy").is_file() for p in made)


def test_same_options_same_bytes(tmp_path):
    for name in ("a", "b"):
        assert invoke("--depth", "2", "--n", "1500", "--seed", "4", "--out", str(tmp_path / name)).exit_code == 0
    for f in ("images.npy", "latents.npy", "noises.npy", "index.json", "graph.json"):
        assert hashlib.sha256((tmp_path / "a" / f).read_bytes()).digest() == hashlib.sha256(
            (tmp_path / "b" / f).read_bytes()
        ).digest(), f


def test_progress_bar_only_for_large_n(tmp_path, monkeypatch):
    seen = []
    real = simulate_lib.simulate_to_dir

    def record(cfg, out, overwrite=False, progress=True, **kw):
        seen.append(progress)
        return real(cfg, out, overwrite, progress, **kw)

    monkeypatch.setattr(simulate_lib, "simulate_to_dir", record)
    assert invoke("--depth", "1", "--n", "100", "--out", str(tmp_path / "small")).exit_code == 0
    assert invoke("--depth", "1", "--n", "60000", "--out", str(tmp_path / "large")).exit_code == 0
    assert seen == [False, True]


def test_overwrite_replaces_an_existing_folder(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    result = invoke("--depth", "1", "--n", "5", "--out", str(out))
    assert_one_line_error(result, "not empty", "--overwrite")
    assert (out / "keep.txt").read_text() == "mine"
    assert invoke("--depth", "1", "--n", "5", "--out", str(out), "--overwrite").exit_code == 0
    assert not (out / "keep.txt").exists()


def test_a_user_graph_is_simulated(tmp_path):
    write_graph(grid_hierarchy(depth=2, branching=3), tmp_path / "g.json")
    result = invoke("--graph", str(tmp_path / "g.json"), "--n", "12", "--out", str(tmp_path / "out"))
    assert result.exit_code == 0, result.output
    assert load_dataset(tmp_path / "out").images.shape == (12, 4, 9, 9)


BAD = [
    (["--depth", "0"], ["depth must be >= 1"]),
    (["--branching", "1"], ["branching must be >= 2"]),
    (["--n", "0"], ["n must be an integer >= 1"]),
    (["--root-dim", "0"], ["root_dim must be >= 1"]),
    (["--noise-dim", "0"], ["noise_dim must be >= 1"]),
    (["--obs-noise-dim", "0"], ["obs_noise_dim must be >= 1"]),
    (["--extra-parent-prob", "1.5"], ["extra_parent_prob must be in [0, 1]"]),
    (["--extra-parent-prob", "-0.1"], ["extra_parent_prob must be in [0, 1]"]),
    (["--noise", "cauchy"], ["noise must be one of"]),
    (["--mixing", "relu"], ["mixing kind must be one of"]),
    (["--slope", "0"], ["slope must be in (0, 1]"]),
    (["--layers", "0"], ["layers must be an integer >= 1"]),
    (["--dtype", "int8"], ["dtype must be one of"]),
    (["--seed", "-1"], ["seed must be an integer >= 0"]),
]


@pytest.mark.parametrize("args,words", BAD, ids=lambda x: " ".join(x) if isinstance(x, list) else "")
def test_bad_options_are_one_line_errors_and_leave_no_folder(tmp_path, args, words):
    result = invoke(*args, "--out", str(tmp_path / "out"))
    assert_one_line_error(result, *words)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "content,words",
    [
        (None, ["graph file not found"]),
        ("{oops", ["is not valid JSON"]),
        ("cyclic", ["graph has a cycle"]),
        ("dims", ["dims do not add up"]),
    ],
)
def test_an_invalid_user_graph_is_one_line_and_leaves_no_folder(tmp_path, content, words):
    path = tmp_path / "g.json"
    if content in ("cyclic", "dims"):
        data = graph_to_json(grid_hierarchy(depth=1))
        if content == "dims":
            data["nodes"][0]["dim"] = 5
        else:
            data["nodes"].append({"id": "w", "kind": "latent", "level": 0, "dim": 2, "noise_dim": 0})
            data["nodes"][0]["noise_dim"] = 0
            data["links"] += [{"source": "z_0_0_0", "target": "w"}, {"source": "w", "target": "z_0_0_0"}]
        path.write_text(json.dumps(data))
    elif content is not None:
        path.write_text(content)
    result = invoke("--graph", str(path), "--n", "5", "--out", str(tmp_path / "out"))
    assert_one_line_error(result, *words)
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_the_size_is_stated_first_and_an_absurd_run_needs_yes(tmp_path, monkeypatch):
    built = []
    monkeypatch.setattr(SimulateConfig, "build_graph", lambda self: built.append(1) or grid_hierarchy(self.grid))
    r = invoke("--depth", "12", "--out", str(tmp_path / "big"))
    assert_one_line_error(r, "10,000 samples of 14x4096x4096 images", "22,369,621 nodes", "TiB", "pass --yes")
    assert built == [] and list(tmp_path.iterdir()) == []  # refused before the graph was built
    r = invoke("--depth", "2", "--n", "100000000000", "--out", str(tmp_path / "many"))
    assert_one_line_error(r, "100,000,000,000 samples", "more than 64.0 GiB", "pass --yes")
    r = invoke("--depth", "2", "--n", "100000000000", "--yes", "--out", str(tmp_path / "many"))
    assert_one_line_error(r, "the output needs", "free; lower --n")
    assert list(tmp_path.iterdir()) == []
    r = invoke("--depth", "2", "--n", "10", "--out", str(tmp_path / "ok"))
    assert r.exit_code == 0 and r.output.startswith("simulating 10 samples of 4x4x4 images")


def test_a_full_disk_is_one_line_and_leaves_nothing(tmp_path):
    # A file-size limit makes the writes fail after the free-space check passed, as a disk that fills up during
    # the run would (EFBIG there, ENOSPC here: the same path): one line, exit 2, no folder or temp folder left.
    import os
    import resource
    import subprocess
    import sys

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))

    out = tmp_path / "o"
    proc = subprocess.run([sys.executable, "-m", "hlvm.cli.main", "simulate", "--depth", "3", "--n", "20000", "--out", str(out)],
                          capture_output=True, text=True, preexec_fn=limit, env={**os.environ, "NO_COLOR": "1"},
                          timeout=120)
    assert proc.returncode == 2, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith("error: writing") and "file-size limit" in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert list(tmp_path.iterdir()) == []
