import os

import matplotlib

matplotlib.use("Agg")
# Tests run two xdist workers on two cores; one torch thread each avoids oversubscription.
os.environ.setdefault("OMP_NUM_THREADS", "1")


import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tree(tmp_path_factory):
    """A small ImageFolder of real photos (tests/_imagetree.py); tests must not write into it."""
    from _imagetree import build_tree

    return build_tree(tmp_path_factory.mktemp("imgs"))


@pytest.fixture(scope="session")
def run(tree, tmp_path_factory):
    """A tiny trained ViT run on :func:`tree`, shared by the probe and recon CLI tests (one training per worker)."""
    from _tinyrun import tiny_run

    return tiny_run(tree, tmp_path_factory.mktemp("runs") / "r")


@pytest.fixture(scope="session")
def online_spec(tmp_path_factory) -> str:
    """A ``--data online:<simulate.json>`` spec: a depth-2 hierarchy sampled fresh at every step."""
    from hlvm.graphs import GridSpec
    from hlvm.simulate import SimulateConfig

    path = tmp_path_factory.mktemp("sim") / "simulate.json"
    path.write_text(SimulateConfig(grid=GridSpec(depth=2)).to_json())
    return f"online:{path}"


def _can_create_in(folder) -> bool:
    import os

    probe = folder / ".hlvm-can-write"
    try:
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except OSError:
        return False
    os.unlink(probe)
    return True


@pytest.fixture
def unwritable(tmp_path):
    """A folder in which no file can be created: a read-only folder, or (as root, who ignores modes) /sys."""
    from pathlib import Path

    ro = tmp_path / "read-only"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        if not _can_create_in(ro):
            yield ro
            return
        sysfs = Path("/sys")  # sysfs refuses new files even to root
        if sysfs.is_dir() and not _can_create_in(sysfs):
            yield sysfs
            return
        pytest.skip("no folder here refuses new files (root without a read-only sysfs)")
    finally:
        ro.chmod(0o755)
