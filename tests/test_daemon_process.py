"""The daemon as systemd runs it: sd_notify, SIGHUP reload, SIGTERM, flags > env > file."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import anyio
import pytest

from schedulerd.client import AsyncClient
from schedulerd.config import load_settings
from schedulerd.errors import ConfigError
from tests.harness import wait_for_socket


def _config(path: Path, max_jobs: int) -> None:
    path.write_text(
        f'[clusters.local]\nscheduler = "local"\nmax_jobs = {max_jobs}\npoll_interval = "0.2s"\n'
    )


async def _wait_logged(log: Path, event: str, *, within: float = 30.0) -> None:
    """Wait until the daemon's log has `event`: proof that a signal was handled."""
    deadline = time.monotonic() + within
    while f'"event": "{event}"' not in await anyio.Path(log).read_text():
        assert time.monotonic() < deadline, f"{event} was never logged"
        await anyio.sleep(0.05)


async def test_sd_notify_ready_reload_and_stopping(tmp_path: Path) -> None:
    notify = tmp_path / "notify.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(str(notify))
    listener.settimeout(60)
    config = tmp_path / "sd.toml"
    _config(config, 3)
    sock = tmp_path / "sd.sock"
    env = {**os.environ, "NOTIFY_SOCKET": str(notify)}
    log = open(tmp_path / "daemon.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "schedulerd.daemon", "--config", str(config),
         "--state-dir", str(tmp_path / "state"), "--socket", str(sock)],
        env=env, stdout=log, stderr=log,
    )  # fmt: skip
    try:
        ready = listener.recv(4096).decode()
        assert "READY=1" in ready
        wait_for_socket(sock, proc, timeout=60)  # READY=1 only once the socket is bound
        client = await AsyncClient.connect(sock)
        info = await client.call("daemon.info")
        assert info["clusters"][0]["max_jobs"] == 3
        # SIGHUP re-reads limits and clusters; a broken file changes nothing
        config.write_text("[clusters.local\n")
        proc.send_signal(signal.SIGHUP)
        # the broken file must have been read before it is rewritten below
        await _wait_logged(tmp_path / "daemon.log", "reload_failed")
        assert (await client.call("daemon.info"))["clusters"][0]["max_jobs"] == 3
        _config(config, 7)
        proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 30
        while (await client.call("daemon.info"))["clusters"][0]["max_jobs"] != 7:
            assert time.monotonic() < deadline, "SIGHUP did not reload the config"
            await anyio.sleep(0.1)
        await client.aclose()
        proc.send_signal(signal.SIGTERM)
        assert "STOPPING=1" in listener.recv(4096).decode()
        assert proc.wait(timeout=60) == 0
        assert not sock.exists(), "the socket file outlived the daemon"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        listener.close()
        log.close()
    text = (tmp_path / "daemon.log").read_text()
    assert '"event": "reload_failed"' in text and '"event": "config_reloaded"' in text


def test_paths_flag_over_env_over_file(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text(f'state_dir = "{tmp_path / "file"}"\nsocket = "{tmp_path / "file.sock"}"\n')
    env = {"SCHEDULERD_CONFIG": str(config), "SCHEDULERD_STATE_DIR": str(tmp_path / "env")}
    s = load_settings(environ=env)
    assert s.state_dir == tmp_path / "env" and s.socket_path == tmp_path / "file.sock"
    s = load_settings(state_dir=tmp_path / "flag", environ=env)
    assert s.state_dir == tmp_path / "flag"
    assert list(s.clusters) == ["local"] and s.clusters["local"].max_jobs == (os.cpu_count() or 1)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[clusters.x]\nscheduler = "pbs"\n', "not one of"),
        ('[clusters.x]\nscheduler = "slurm"\nworkdir = "/w"\n', "host: required"),
        ('[clusters.x]\nscheduler = "local"\nmax_jobs = 0\n', "must be positive"),
        ('[clusters.x]\nscheduler = "local"\npoll_interval = "soon"\n', "duration"),
        ('[clusters.x]\nscheduler = "local"\nmax_job = 3\n', "unknown key"),
        ("bogus = 1\n", "unknown top-level"),
        ("[clusters.x\n", "config file"),
    ],
)
def test_bad_config_is_refused_clearly(tmp_path: Path, text: str, message: str) -> None:
    config = tmp_path / "c.toml"
    config.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_settings(config=config, environ={})
    proc = subprocess.run(
        [sys.executable, "-m", "schedulerd.daemon", "--config", str(config), "--state-dir", str(tmp_path / "s")],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert proc.returncode == 2 and message.split()[0] in proc.stderr
    assert not (tmp_path / "s").exists(), "a refused config must change nothing"


def test_second_daemon_on_the_same_state_dir_is_refused(tmp_path: Path) -> None:
    """Two daemons on one database would submit the same ready jobs twice."""
    from tests.harness import daemon_process

    state = tmp_path / "state"
    with daemon_process(state, tmp_path / "a.sock") as first:
        proc = subprocess.run(
            [sys.executable, "-m", "schedulerd.daemon", "--state-dir", str(state),
             "--socket", str(tmp_path / "b.sock")],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert proc.returncode == 1
        assert f"pid {first.pid}" in proc.stdout + proc.stderr
        assert first.poll() is None
        assert not (tmp_path / "b.sock").exists()
