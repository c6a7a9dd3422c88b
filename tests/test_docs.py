"""Every document the code and the README cite is inside the repository: ``docs/challenge.md`` (with the sections
cited) and ``docs/design.md``; nothing points outside it (``shared/``, a bare ``challenge.md``)."""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("competition", "embedders", "validate", "submit", "tests", "benchmarks")


def _files():
    yield ROOT / "README.md"
    yield from (ROOT / "docs").glob("*.md")
    for pkg in SOURCES:
        yield from (p for p in (ROOT / pkg).rglob("*.py") if "__pycache__" not in p.parts)


def test_doc_references_point_into_docs():
    cited = re.compile(r"(?<![\w.])([\w./-]*?)(challenge|design)\.md(?:\W{1,3}section (\d+))?")
    sections = {int(n) for n in re.findall(r"^## (\d+)\.", (ROOT / "docs" / "challenge.md").read_text(), re.M)}
    assert sections == {1, 2, 3, 4, 5, 6}
    assert (ROOT / "docs" / "design.md").is_file()
    bad = []
    for path in _files():
        if path == Path(__file__).resolve():
            continue
        for prefix, name, section in cited.findall(path.read_text()):
            in_docs = path.parent == ROOT / "docs"
            if prefix != "docs/" and not (in_docs and prefix == ""):
                bad.append(f"{path.relative_to(ROOT)}: {prefix}{name}.md")
            elif section and name == "challenge" and int(section) not in sections:
                bad.append(f"{path.relative_to(ROOT)}: challenge.md section {section} does not exist")
    assert not bad, bad
    for shared in ("../shared", "/work/shared", "shared/challenge", "shared/design"):
        assert not [p for p in _files() if p != Path(__file__).resolve() and shared in p.read_text()], shared
