"""An operator's `clusters.drain` holds across config reloads and restarts."""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

import anyio

from schedulerd.client import AsyncClient
from tests.harness import daemon_process, wait_terminal

TWO_CLUSTERS = """
[clusters.local]
scheduler = "local"
max_jobs = 2
poll_interval = "0.2s"
[clusters.spare]
scheduler = "local"
max_jobs = 2
poll_interval = "0.2s"
"""
ONE_CLUSTER = TWO_CLUSTERS.split("[clusters.spare]")[0]


async def _status(client: AsyncClient) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in (await client.call("clusters.list"))["clusters"]}


async def _reload(proc: Any, log: Path, config: Path, text: str) -> None:
    """Rewrite the config, SIGHUP, and wait until the daemon logged the reload."""
    before = (await anyio.Path(log).read_text()).count('"config_reloaded"')
    await anyio.Path(config).write_text(text)
    proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 30
    while (await anyio.Path(log).read_text()).count('"config_reloaded"') == before:
        assert time.monotonic() < deadline, "the daemon never logged config_reloaded"
        await anyio.sleep(0.1)


async def test_drain_survives_reload_and_restart(tmp_path: Path) -> None:
    config, log, sock = tmp_path / "schedulerd.toml", tmp_path / "daemon.log", tmp_path / "sd.sock"
    config.write_text(TWO_CLUSTERS)
    with daemon_process(tmp_path / "state", sock, config, log) as proc:
        client = await AsyncClient.connect(sock)
        drained = await client.call("clusters.drain", {"name": "local"})
        assert drained["draining"] is True
        await _reload(proc, log, config, TWO_CLUSTERS)
        status = await _status(client)
        assert status["local"]["draining"] is True, "a reload resumed a drained cluster"
        assert status["spare"]["draining"] is False
        # a cluster removed from the config is drained; put back, it takes jobs again
        await _reload(proc, log, config, ONE_CLUSTER)
        assert (await _status(client))["spare"]["draining"] is True
        await _reload(proc, log, config, TWO_CLUSTERS)
        assert (await _status(client))["spare"]["draining"] is False
        jid = (await client.call("job.submit", {"job": {"argv": ["true"], "cluster": "local"}}))[
            "id"
        ]
        await client.aclose()
    with daemon_process(tmp_path / "state", sock, config, log):
        client = await AsyncClient.connect(sock)
        status = await _status(client)
        assert status["local"]["draining"] is True, "a restart resumed a drained cluster"
        # polls go on, nothing is submitted to a drained cluster (tests/test_worker_units.py
        # shows it on a fake clock; here, after three polls of the restarted daemon)
        polls: set[float] = set()
        deadline = time.monotonic() + 30
        while len(polls) < 3:
            assert time.monotonic() < deadline, "the drained cluster was not polled"
            if (last := (await _status(client))["local"]["last_poll"]) is not None:
                polls.add(last)
            await anyio.sleep(0.05)
        assert (await client.call("job.get", {"id": jid}))["state"] == "ready"
        resumed = await client.call("clusters.resume", {"name": "local"})
        assert resumed["draining"] is False
        job = (await wait_terminal(client, [jid], timeout=60))[jid]
        assert job["state"] == "completed"
        await client.aclose()
    with daemon_process(tmp_path / "state", sock, config, log):
        client = await AsyncClient.connect(sock)
        assert (await _status(client))["local"]["draining"] is False, "the resume was not kept"
        await client.aclose()
