"""The repository carries its own theory: every reference to it resolves inside a clone."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TEXT = (".py", ".md", ".sh", ".toml", ".json", ".txt")


def repo_files():
    for top in ("hlvm", "cli", "tests", "bench", "studies", "docs"):
        yield from (p for p in (ROOT / top).rglob("*") if p.is_file() and p.suffix in TEXT and p != Path(__file__))
    yield ROOT / "README.md"
    yield ROOT / "pyproject.toml"


def test_no_reference_points_outside_the_repository():
    outside = re.compile(r"\.\./shared|THEORY\.md|shared/papers")
    hits = [f"{p.relative_to(ROOT)}:{i}" for p in repo_files()
            for i, line in enumerate(p.read_text(errors="replace").splitlines(), 1) if outside.search(line)]
    assert not hits, hits


def test_the_theory_document_holds_what_the_code_cites_it_for():
    text = (ROOT / "docs" / "theory.md").read_text()
    for heading in ("Algorithm 1", "Algorithm 2", "Worked examples", "Theorem 2", "the claims",
                    "why every verdict needs controls", "linear codes of the same width", "The linear MAE for a mask", "References"):
        assert heading in text, heading
    for word in ("pixels", "untrained", "oracle", "dim_c", "1 - r^n - (1 - r)^n", "eq. (10)-(11)"):
        assert word in text, word


def test_the_readme_links_the_theory_document():
    assert "(docs/theory.md)" in (ROOT / "README.md").read_text()
