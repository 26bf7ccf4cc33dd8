"""What a plain ``pip install -e .`` must bring: every library hlvm or its CLI imports, anywhere (module level or
lazily inside a command), is a runtime dependency in pyproject.toml, unless the import is guarded (``try: import
X`` / ``except ImportError``) and X is an optional extra. A command such as ``hlvm recon`` then never fails with
ModuleNotFoundError after a plain install.
"""

from __future__ import annotations

import ast
import importlib
import importlib.metadata
import re
import sys

from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python 3.11's; the project runs on 3.11

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted([*ROOT.joinpath("hlvm").rglob("*.py"), *ROOT.joinpath("cli").glob("*.py")])
IMPORT_ERRORS = {"ImportError", "ModuleNotFoundError"}


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _req_name(req: str) -> str:
    return _norm(re.split(r"[\s<>=!~;\[]", req.strip(), maxsplit=1)[0])


def pyproject() -> tuple[set[str], dict[str, set[str]]]:
    project = tomllib.loads(ROOT.joinpath("pyproject.toml").read_text())["project"]
    deps = {_req_name(r) for r in project["dependencies"]}
    extras = {k: {_req_name(r) for r in v} for k, v in project.get("optional-dependencies", {}).items()}
    return deps, extras


def imports(path: Path) -> list[tuple[str, bool]]:
    """(top-level module, guarded by an except ImportError) of every absolute import in ``path``."""
    tree = ast.parse(path.read_text(), str(path))
    out: list[tuple[str, bool]] = []

    def visit(node: ast.AST, guarded: bool) -> None:
        if isinstance(node, ast.Try):
            catches = set()
            for h in node.handlers:
                types = h.type.elts if isinstance(h.type, ast.Tuple) else [h.type]
                catches |= {t.id for t in types if isinstance(t, ast.Name)}
            for child in node.body:
                visit(child, guarded or bool(catches & IMPORT_ERRORS))
            for child in [*node.handlers, *node.orelse, *node.finalbody]:
                visit(child, guarded)
            return
        if isinstance(node, ast.Import):
            out.extend((a.name.split(".")[0], guarded) for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.append((node.module.split(".")[0], guarded))
        for child in ast.iter_child_nodes(node):
            visit(child, guarded)

    visit(tree, False)
    return out


def third_party() -> dict[str, dict[str, list[bool]]]:
    """module -> {file: [guarded, per import]} for every module neither of the standard library nor hlvm."""
    found: dict[str, dict[str, list[bool]]] = {}
    for path in SOURCES:
        for mod, guarded in imports(path):
            if mod in sys.stdlib_module_names or mod in ("hlvm", "__future__"):
                continue
            found.setdefault(mod, {}).setdefault(str(path.relative_to(ROOT)), []).append(guarded)
    return found


def guarded_somewhere(files: dict[str, list[bool]]) -> bool:
    return any(any(flags) for flags in files.values())


def test_the_import_scan_sees_lazy_and_guarded_imports(tmp_path):
    src = tmp_path / "m.py"
    src.write_text("import numpy\ndef f():\n    from piq import ssim\n    try:\n        import ray\n"
                   "    except ImportError:\n        pass\n    from .x import y\n")
    assert imports(src) == [("numpy", False), ("piq", False), ("ray", True)]


def test_every_library_the_code_imports_is_a_dependency_or_a_guarded_extra():
    deps, extras = pyproject()
    optional = set().union(*extras.values())
    dists = importlib.metadata.packages_distributions()
    problems = []
    for mod, files in sorted(third_party().items()):
        names = {_norm(d) for d in dists.get(mod, [])}
        if not names:
            if guarded_somewhere(files) and _norm(mod) in optional:
                continue  # an optional extra this install left out (a plain install without [ray])
            problems.append(f"{mod} (imported by {', '.join(files)}) is not installed, so no package provides it")
            continue
        if names & deps:
            continue
        if names & optional and guarded_somewhere(files):
            continue  # an optional extra, first imported behind a check that says how to install it
        where = ", ".join(files)
        problems.append(f"{mod} ({'/'.join(sorted(names))}, imported by {where}) is not in [project] dependencies")
    assert not problems, "\n".join(problems)


def test_optional_extras_are_imported_only_behind_an_import_check():
    _, extras = pyproject()
    dists = importlib.metadata.packages_distributions()
    for mod, files in third_party().items():
        names = {_norm(d) for d in dists.get(mod, [])}
        if names & (extras.get("ray", set()) | extras.get("tb", set())):
            assert guarded_somewhere(files), f"{mod} is optional but never imported behind `except ImportError`: {files}"


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_module_imports(path):
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[0] == "cli":
        parts[0] = "hlvm.cli"
    if parts[-1] == "__init__":
        parts = parts[:-1]
    importlib.import_module(".".join(parts))
