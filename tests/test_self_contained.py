"""A fresh clone passes the README's test command with nothing beside it (issue 6)."""

from __future__ import annotations

import re

from tests.conftest import FIXTURES, ROOT

SYSTEMS = ["htcondor", "lsf", "pbspro", "slurm", "torque"]


def test_fixtures_live_in_the_repository() -> None:
    assert FIXTURES.is_relative_to(ROOT) or FIXTURES.exists()
    default = ROOT / "tests" / "fixtures" / "batch-outputs"
    assert (default / "SOURCES.md").is_file()
    for system in SYSTEMS:
        assert any((default / system).iterdir()), system


def test_nothing_reads_outside_the_clone() -> None:
    sibling = "shared"  # the folder beside the clone that sessions once read fixtures from
    outside = re.compile(rf"\.\./{sibling}|\"{sibling}\" */|{sibling}/fixtures")
    offenders = [
        str(p.relative_to(ROOT))
        for folder in ("tests", "schedulerd", "drivers", "state")
        for p in (ROOT / folder).rglob("*.py")
        if p.name != "test_self_contained.py" and outside.search(p.read_text())
    ]
    assert not offenders, f"these read files outside the repository: {offenders}"


def _readme_command(marker: str) -> str:
    text = (ROOT / "README.md").read_text()
    match = re.search(rf"<!-- setup:{marker} -->\n```sh\n(.+)\n```", text)
    assert match, f"README.md lost its {marker} command"
    return match.group(1)


def test_ci_runs_the_readme_test_command() -> None:
    command = _readme_command("tests")
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert ci[-1] == command, ".ci/run must end with the README's test command, unchanged"
    # PEP 668: a stock Debian refuses pip into the system Python, so both lines make a venv
    for marker in ("daemon", "tests"):
        assert _readme_command(marker).startswith(
            "python3 -m venv .venv && . .venv/bin/activate && pip "
        )
