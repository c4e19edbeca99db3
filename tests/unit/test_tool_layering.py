"""The command line sits above the libraries: ``signaling`` and ``sfu`` never import the
bots and load tool (``loadgen``), the benchmarks or the ``parley`` command, and ``loadgen``
never imports the command (it runs it as ``python -m parley``). Read with ``ast``."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

#: package -> top-level packages it may not import
FORBIDDEN = {
    "sfu": {"signaling", "loadgen", "bench", "parley", "parley_client"},
    "signaling": {"loadgen", "bench", "parley", "parley_client"},
    "loadgen": {"parley", "bench"},
    "parley_client": {"loadgen", "bench", "parley"},
}


def _imported_packages(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def _violations(package: str) -> list[str]:
    found = []
    for path in sorted((ROOT / package).rglob("*.py")):
        bad = _imported_packages(path) & FORBIDDEN[package]
        found.extend(f"{path.relative_to(ROOT)} imports {name}" for name in sorted(bad))
    return found


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_does_not_import_what_sits_above_it(package: str) -> None:
    assert (ROOT / package).is_dir()
    assert _violations(package) == []


def test_the_check_sees_an_import(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("import os\nfrom loadgen.bot import Bot\n")
    assert {"os", "loadgen"} <= _imported_packages(module)
