"""The code is kept lint-clean, formatted and mypy --strict clean (issue 8), checked by
the README's test command itself so that CI and a developer see the same verdict.

mypy cannot follow setuptools' package-dir mapping (``drivers/`` and ``state/`` import as
``schedulerd.drivers`` and ``schedulerd.state``), so it is run on a tree of symlinks laid
out the way the package is installed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

SOURCES = ["schedulerd", "drivers", "state", "tests"]


def _tool(name: str) -> list[str]:
    if shutil.which(name) is None and not (Path(sys.executable).parent / name).exists():
        pytest.fail(f"{name} is not installed: pip install -e '.[test]' installs it")
    return [sys.executable, "-m", name]


def _run(argv: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=600, check=False)


def test_ruff_check() -> None:
    done = _run([*_tool("ruff"), "check", *SOURCES], ROOT)
    assert done.returncode == 0, done.stdout + done.stderr


def test_ruff_format() -> None:
    done = _run([*_tool("ruff"), "format", "--check", *SOURCES], ROOT)
    assert done.returncode == 0, "run `ruff format`:\n" + done.stdout + done.stderr


@pytest.mark.slow
def test_mypy_strict(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    package = tree / "schedulerd"
    package.mkdir(parents=True)
    for entry in (ROOT / "schedulerd").iterdir():
        if entry.name != "__pycache__":
            os.symlink(entry, package / entry.name)
    os.symlink(ROOT / "drivers", package / "drivers")
    os.symlink(ROOT / "state", package / "state")
    done = _run([*_tool("mypy"), "--strict", "--config-file", str(ROOT / "pyproject.toml"),
                 "--cache-dir", str(tmp_path / "cache"), "-p", "schedulerd"], tree)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
