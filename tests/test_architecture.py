"""Dependency direction: api -> workers -> tenants; the domain core knows no web or task framework."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FORBIDDEN = {
    "tenants": {"litestar", "celery", "kombu", "api", "workers"},
    "workers": {"litestar", "api"},
}


def imported_roots(path: Path) -> set[str]:
    roots: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


def test_import_direction() -> None:
    violations = []
    for package, forbidden in FORBIDDEN.items():
        files = list((REPO / package).rglob("*.py"))
        assert files, package
        for path in files:
            bad = imported_roots(path) & forbidden
            if bad:
                violations.append(f"{path.relative_to(REPO)} imports {sorted(bad)}")
    assert violations == []
