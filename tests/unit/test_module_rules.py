"""The SFU's module map holds (docs/architecture.md): what each part may not import,
no import circle among sfu modules (TYPE_CHECKING imports included), and no file of
more than MAX_LINES lines of Python. Imports are read with ``ast``, nothing is run."""

from __future__ import annotations

import ast
import io
import tokenize
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SFU = ROOT / "sfu"
#: non-blank lines that are not only a comment (docstrings count)
MAX_LINES = 400

#: module -> what it may not import (a module, or any module under a package)
FORBIDDEN: dict[str, set[str]] = {
    "sfu.ports": {"sfu"},
    "sfu.tracks": {"sfu.participant", "sfu.room"},
    "sfu.congestion": {"asyncio", "aiortc", "aioice", "socket", "sfu.aiortc_adapter"},
    "sfu.egress": {"sfu.congestion", "sfu.bwe", "sfu.delivery_rate", "sfu.participant"},
    "sfu.publish_side": {"sfu.forwarder", "sfu.congestion", "sfu.room", "sfu.subscribe_side"},
    "sfu.publish_rtcp": {"sfu.forwarder", "sfu.congestion", "sfu.room", "sfu.subscribe_side"},
    "sfu.subscribe_side": {"sfu.publish_side", "sfu.room", "sfu.participant"},
    "sfu.subscribe_rtcp": {"sfu.publish_side", "sfu.room", "sfu.participant"},
    "sfu.participant": {"sfu.room"},
    "sfu.source": {"sfu.forwarder"},
    "sfu.datachannel": {"sfu", "asyncio", "aiortc", "aioice", "socket"},
    "sfu.data_side": {"sfu.room", "sfu.participant", "sfu.publish_side", "sfu.subscribe_side"},
}
#: imports a rule above would forbid that a module may make all the same (pure helpers)
EXCEPT = {"sfu.datachannel": {"sfu.token_bucket"}}
#: modules that must stay pure all the way down (no I/O, no aiortc, in any sfu module
#: they import)
PURE = {
    "sfu.congestion": {"asyncio", "aiortc", "aioice", "socket"},
    "sfu.datachannel": {"asyncio", "aiortc", "aioice", "socket"},
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def module_path(name: str) -> Path | None:
    """The file of module ``name`` (a package's ``__init__.py``), or None."""
    base = ROOT / Path(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.exists():
            return path
    return None


def sfu_files() -> list[Path]:
    return sorted(p for p in SFU.rglob("*.py"))


def imports(path: Path) -> set[str]:
    """Every module ``path`` imports, absolute (``from .x import y`` included, and the
    ``y`` of ``from . import y``), at any depth of the file (TYPE_CHECKING too)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")
                base_parts = base_parts[: len(base_parts) - (node.level - 1)]
                base = ".".join(base_parts)
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            found.add(target)
            for alias in node.names:  # `from . import aiortc_adapter` names a module
                candidate = f"{target}.{alias.name}"
                if module_path(candidate) is not None:
                    found.add(candidate)
    return found


def graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in sfu_files()}
    return {
        name: {i for i in imports(path) if i in modules and i != name}
        for name, path in modules.items()
    }


def matches(imported: str, rule: str) -> bool:
    return imported == rule or imported.startswith(rule + ".")


@pytest.mark.parametrize("module", sorted(FORBIDDEN))
def test_no_forbidden_import(module):
    path = module_path(module)
    assert path is not None, module
    allowed = EXCEPT.get(module, set())
    bad = sorted(
        i for i in imports(path) - allowed for rule in FORBIDDEN[module] if matches(i, rule)
    )
    assert bad == [], f"{module} imports {bad}"


@pytest.mark.parametrize("module", sorted(PURE))
def test_pure_modules_stay_pure_all_the_way_down(module):
    g = graph()
    seen, todo = set(), [module]
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        todo.extend(g.get(current, ()))
    bad = []
    for name in sorted(seen):
        path = module_path(name)
        assert path is not None, name
        bad += [(name, i) for i in imports(path) for rule in PURE[module] if matches(i, rule)]
    assert bad == [], bad


def test_no_import_circle_among_sfu_modules():
    g = graph()
    circles = []
    state: dict[str, int] = {}  # 1: on the path, 2: done
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(g[node]):
            if state.get(nxt) == 1:
                circles.append(path[path.index(nxt) :] + [nxt])
            elif nxt not in state:
                visit(nxt)
        path.pop()
        state[node] = 2

    for node in sorted(g):
        if node not in state:
            visit(node)
    assert circles == [], circles


def python_lines(path: Path) -> int:
    """Lines holding Python tokens other than comments (blank and comment-only lines are
    not counted; docstrings are)."""
    lines: set[int] = set()
    skip = {tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT}
    for tok in tokenize.generate_tokens(io.StringIO(path.read_text()).readline):
        if tok.type in skip or tok.type == tokenize.ENDMARKER:
            continue
        lines.update(range(tok.start[0], tok.end[0] + 1))
    return len(lines)


def test_no_sfu_file_is_over_the_line_budget():
    over = {str(p.relative_to(ROOT)): n for p in sfu_files() if (n := python_lines(p)) > MAX_LINES}
    assert over == {}, over


def test_the_rules_see_relative_imports():
    """The reader resolves ``from .x import y`` and ``from . import y`` (else every rule
    above would pass vacuously)."""
    found = imports(SFU / "participant.py")
    assert "sfu.publish_side" in found and "sfu.aiortc_adapter" in found
    assert "sfu.rtp.packet" in imports(SFU / "rtp" / "rewrite.py") or "sfu.native" in imports(
        SFU / "rtp" / "rewrite.py"
    )


def test_private_attributes_of_other_libraries_only_in_the_adapter():
    """Outside ``sfu/aiortc_adapter/`` no ``x._name`` is read or written unless ``x`` is
    ``self`` or ``_name`` is defined in the same file (its own classes): aiortc's,
    aioice's, pylibsrtp's and asyncio's private attributes stay in the adapter, listed
    in its ``HOOKED_ATTRIBUTES``."""
    bad = []
    for path in sfu_files():
        if "aiortc_adapter" in path.parts:
            continue
        tree = ast.parse(path.read_text())
        own = {
            node.name
            for node in ast.walk(tree)
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
        }
        own |= {
            node.attr
            for node in ast.walk(tree)
            if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store)
        }
        for node in ast.walk(tree):
            if not isinstance(node, ast.Attribute) or not node.attr.startswith("_"):
                continue
            if node.attr.startswith("__") or node.attr in own:
                continue
            if isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"):
                continue
            bad.append(f"{path.relative_to(ROOT)}:{node.lineno} .{node.attr}")
    assert bad == [], bad
