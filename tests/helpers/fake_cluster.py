"""The daemon driving a fake batch head (tests/fakebatch) through an in-process asyncssh
server, as it would drive a login node, and the client calls the tests make of it."""

from __future__ import annotations

import contextlib
import getpass
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio

from schedulerd.config import Settings, load_settings
from tests.fakebatch.core import FakeHead
from tests.harness import DaemonHandle, running_daemon
from tests.sshserver import SSHTestServer, running_ssh_server

if TYPE_CHECKING:  # annotations only: the client is the daemon handle's
    from schedulerd.client import AsyncClient

SYSTEMS = ["pbspro", "torque", "lsf", "htcondor", "slurm"]
USER = getpass.getuser()


@dataclass
class Cluster:
    head: FakeHead
    server: SSHTestServer
    daemon: DaemonHandle
    client: AsyncClient
    workdir: Path


def cluster_toml(system: str, server: SSHTestServer, workdir: Path, **extra: Any) -> str:
    values = {
        "scheduler": f'"{system}"',
        "host": '"127.0.0.1"',
        "port": str(server.port),
        "user": f'"{USER}"',
        "identity_file": f'"{server.client_key_path}"',
        "known_hosts": f'"{server.known_hosts_path}"',
        "workdir": f'"{workdir}"',
        "poll_interval": '"0.3s"',
        "exit_read_timeout": '"2s"',
        "command_timeout": '"20s"',
        "connect_timeout": '"5s"',
    }
    values.update({k: (f'"{v}"' if isinstance(v, str) else str(v)) for k, v in extra.items()})
    body = "\n".join(f"{k} = {v}" for k, v in values.items())
    return f'retry_base = "0.5s"\n[clusters.head]\n{body}\n'


def cluster_settings(tmp_path: Path, system: str, server: SSHTestServer, **extra: Any) -> Settings:
    """The daemon's settings for one cluster ``head`` behind ``server`` (workdir
    ``tmp_path/remote``, state and socket in ``tmp_path``)."""
    config = tmp_path / "schedulerd.toml"
    config.write_text(cluster_toml(system, server, tmp_path / "remote", **extra))
    return load_settings(
        config=config, state_dir=tmp_path / "state", socket=tmp_path / "sd.sock", environ={}
    )


@contextlib.asynccontextmanager
async def fake_cluster(
    tmp_path: Path, system: str, *, slots: int = 100, **extra: Any
) -> AsyncIterator[Cluster]:
    bin_dir = tmp_path / "bin"
    head = FakeHead.create(tmp_path / "head", bin_dir, flavor=system, user=USER, slots=slots)
    workdir = tmp_path / "remote"
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}"}
    async with (
        running_ssh_server(tmp_path, env=env) as server,
        running_daemon(cluster_settings(tmp_path, system, server, **extra)) as daemon,
    ):
        client = await daemon.client()
        try:
            yield Cluster(head, server, daemon, client, workdir)
        finally:
            await client.aclose()


async def submit(client: AsyncClient, argv: list[str], **fields: Any) -> int:
    res = await client.call("job.submit", {"job": {"argv": argv, **fields}})
    return int(res["id"])


async def wait_state(
    client: AsyncClient,
    jid: int,
    states: set[str],
    timeout: float = 30.0,
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        job = await client.call("job.get", {"id": jid})
        if job["state"] in states:
            return dict(job)
        if time.monotonic() > deadline:
            raise TimeoutError(f"job {jid} is {job['state']}, not {states}")
        await anyio.sleep(0.1)
