"""The fake batch system is one package, ``tests.fakebatch``, in the tests and in its shims."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fakebatch.core import INSTANT_SUBMIT, FakeHead

TOP_LEVEL = ("core", "pbs", "lsf", "condor", "slurm", "fakebatch")


def _run(argv: list[str], cwd: Path, env: dict[str, str], stdin: str = "") -> str:
    proc = subprocess.run(
        argv, input=stdin, env=env, cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.mark.parametrize("flavor", sorted(INSTANT_SUBMIT))
def test_instant_submits_are_read_without_a_second_copy_of_the_fake(
    tmp_path: Path, flavor: str
) -> None:
    """Reading what an instant-mode shim accepted runs the system's own submit command in
    this process: it comes from ``tests.fakebatch``, never from a top-level ``core``."""
    bin_dir = tmp_path / "bin"
    head = FakeHead.create(tmp_path / "home", bin_dir, flavor=flavor, mode="instant")
    work = tmp_path / "work"
    work.mkdir()
    script = work / "job.sh"
    script.write_text("#!/bin/sh\ntrue\n")
    command, _ = INSTANT_SUBMIT[flavor]
    argv = {
        "pbspro": [str(script)],
        "torque": [str(script)],
        "lsf": [],
        "htcondor": ["-terse", str(script)],
        "slurm": ["--parsable", str(script)],
    }[flavor]
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    _run([command, *argv], work, env, stdin="true\n")
    assert len(head.jobs()) == 1  # ingested here, by the flavor's Python submit command
    assert not [name for name in TOP_LEVEL if name in sys.modules]


def test_a_shim_runs_the_fake_as_a_script(tmp_path: Path) -> None:
    """The shims run fakebatch.py by its path, from any directory, with no PYTHONPATH."""
    bin_dir = tmp_path / "bin"
    FakeHead.create(tmp_path / "home", bin_dir, flavor="slurm")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    assert _run([str(bin_dir / "sbatch"), "--version"], tmp_path, env).startswith("slurm ")
