"""Imports flow one way: drivers/ and state/ never import the daemon's upper layers."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
UPPER = ("schedulerd.control", "schedulerd.cli", "schedulerd.daemon", "schedulerd.worker",
         "schedulerd.rpc", "schedulerd.jobspec", "schedulerd.methods", "schedulerd.client")  # fmt: skip


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names |= {f"{node.module}.{a.name}" for a in node.names}
    return names


@pytest.mark.parametrize(
    "path", sorted([*ROOT.glob("drivers/*.py"), *ROOT.glob("state/*.py")]), ids=str
)
def test_lower_layers_do_not_import_upper_ones(path: Path) -> None:
    bad = {
        n for n in _imports(path) if n.startswith(UPPER) or n.split(".")[0] in ("drivers", "state")
    }
    assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"
