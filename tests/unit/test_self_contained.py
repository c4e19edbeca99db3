"""The repository carries everything its tests read (a fresh clone passes on any machine)."""

from __future__ import annotations

import re
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
FIXTURES = TESTS / "fixtures"

# A path that climbs out of the repository: "../x" or ".parent / 'x'" chains that leave tests/.
OUTSIDE = re.compile(r"""\.\./shared|["']shared["']|parents\[(?:[2-9]|\d\d)\]\.parent""")


def test_no_test_reads_outside_the_repository() -> None:
    offenders = [
        f"{path.relative_to(TESTS)}:{n}"
        for path in TESTS.rglob("*.py")
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if OUTSIDE.search(line) and path.name != Path(__file__).name
    ]
    assert offenders == []


def test_fixtures_named_in_tests_are_in_the_repository() -> None:
    named = {
        name
        for path in TESTS.rglob("*.py")
        for name in re.findall(r"""["']([\w.-]+\.(?:sdp|jsonl))["']""", path.read_text())
    }
    assert named, "the tests name no fixture files: the pattern above is stale"
    missing = sorted(name for name in named if not (FIXTURES / name).is_file())
    assert missing == []
    assert (FIXTURES / "README.md").is_file()
