"""A history query refused for our credentials fails the poll (the cluster is degraded at
once) instead of being logged and skipped: the jobs that left the queue would otherwise be
decided by exit files alone, poll after poll, while every command meets the same refusal."""

from __future__ import annotations

import getpass
import os
from pathlib import Path

import pytest

from schedulerd.drivers.api import ActiveJob
from schedulerd.drivers.base import JobRequest
from schedulerd.drivers.batch import BatchDriver
from schedulerd.drivers.htcondor import HTCondorDialect
from schedulerd.drivers.transport import LocalTransport
from schedulerd.errors import RemoteCommandError
from tests.fakebatch.core import FakeHead

REFUSAL = (
    "ERROR: Failed to connect to local queue manager\n"
    "AUTHENTICATE:1003:Failed to authenticate with any method\n"
    "AUTHENTICATE:1004:Failed to authenticate using IDTOKENS\n"
)


async def test_history_refusing_our_credentials_fails_the_poll(tmp_path: Path) -> None:
    fake_bin, shims = tmp_path / "bin", tmp_path / "shims"
    FakeHead.create(tmp_path / "home", fake_bin, flavor="htcondor", user=getpass.getuser())
    shims.mkdir()
    history = shims / "condor_history"
    history.write_text(f"#!/bin/sh\nprintf '%s' '{REFUSAL}' >&2\nexit 1\n")
    history.chmod(0o755)
    transport = LocalTransport(env={"PATH": f"{shims}:{fake_bin}:{os.environ['PATH']}"})
    driver = BatchDriver(HTCondorDialect(), transport, user=getpass.getuser(),
                         workdir=str(tmp_path / "work"))  # fmt: skip
    gone = ActiveJob(job_id=1, native_id="41.0", submitted_at=0.0,
                     request=JobRequest(job_id=1, attempt=1, name="sd-1-1", argv=("true",),
                                        workdir=str(tmp_path / "work" / "1")))  # fmt: skip
    with pytest.raises(RemoteCommandError) as refused:
        await driver.poll([gone])  # 41.0 is not in the queue: history is asked
    assert refused.value.auth is True
    assert "AUTHENTICATE:1003" in refused.value.message
