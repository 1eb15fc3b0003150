"""Which optional capabilities (drivers/dialect.py protocols) each dialect has: the driver
asks them with ``isinstance``, so a renamed method would silently turn a feature off."""

from __future__ import annotations

import pytest

from schedulerd.daemon import create_dialect
from schedulerd.drivers.dialect import (
    AdaptsToVersion,
    ListsUserJobs,
    ProbesCapabilities,
    problems_or_render_error,
)

EXPECTED = {
    # system: (adapts to version, probes capabilities, lists user jobs apart)
    "pbspro": (False, False, True),
    "torque": (False, True, True),
    "lsf": (True, False, False),
    "htcondor": (False, False, False),
    "slurm": (False, False, False),
}


@pytest.mark.parametrize("system", sorted(EXPECTED))
def test_each_dialect_has_exactly_its_capabilities(system: str) -> None:
    dialect = create_dialect(system)
    found = tuple(
        isinstance(dialect, p) for p in (AdaptsToVersion, ProbesCapabilities, ListsUserJobs)
    )
    assert found == EXPECTED[system]


def test_adapted_dialects_keep_their_capabilities() -> None:
    lsf = create_dialect("lsf")
    assert isinstance(lsf, AdaptsToVersion)
    assert isinstance(lsf.for_version("openlava project 2.2"), AdaptsToVersion)
    torque = create_dialect("torque")
    assert isinstance(torque, ProbesCapabilities)
    adapted, _ = torque.for_probe("", "qstat: invalid option -- 'x'\n", 2)
    assert isinstance(adapted, ListsUserJobs) and isinstance(adapted, ProbesCapabilities)


def test_validate_job_answers_problems_first_then_the_render_error() -> None:
    def fails() -> None:
        raise ValueError("queue 'a b' has a blank")

    assert problems_or_render_error(["-J is not allowed"], fails) == ["-J is not allowed"]
    assert problems_or_render_error([], fails) == ["queue 'a b' has a blank"]
    assert problems_or_render_error([], lambda: None) == []
