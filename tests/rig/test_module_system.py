"""The mini nixpkgs's module system against cases recorded from the real nixpkgs lib."""

from __future__ import annotations

import re

from tests.conftest import MINI_NIXPKGS, REPO, SHARED, run


def check(cases: str | None = None) -> tuple[int, int, str]:
    argv = [SHARED / "module-vectors" / "check", MINI_NIXPKGS / "lib"]
    if cases:
        argv.append(cases)
    result = run(argv)
    m = re.search(r"^(\d+) passed, (\d+) failed$", result.stdout, re.M)
    assert m, result.stdout + result.stderr
    return int(m.group(1)), int(m.group(2)), result.stdout


def test_shared_vectors_all_pass() -> None:
    passed, failed, out = check()
    assert failed == 0, out
    assert passed >= 23


def test_project_cases_all_pass() -> None:
    passed, failed, out = check(str(REPO / "tests" / "module-extra"))
    assert failed == 0, out
    assert passed >= 10
