"""SSHTransport against the in-process asyncssh server and the real OpenSSH sshd."""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import stat
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import anyio
import asyncssh
import pytest
from structlog.testing import capture_logs

from schedulerd.drivers.ssh import (
    TIMEOUT_PROBE,
    SSHOptions,
    SSHTransport,
    parse_jump_host,
    unwrap_timeout,
)
from schedulerd.drivers.transport import CommandResult
from schedulerd.errors import ConfigError, TransportError
from tests.sshd import running_sshd
from tests.sshserver import SSHTestServer, running_ssh_server

TRICKY_ARGS = [
    "it's",
    'say "hi"',
    "$(touch pwned-subst)",
    "a; touch pwned-semicolon",
    "`touch pwned-backtick`",
    "back\\slash",
    "*",
    "tab\tand\nnewline",
    "&& || | > <",
    "ünïcødé",
    "",
]


async def eventually(predicate: Callable[[], bool], *, within: float = 30.0) -> None:
    with anyio.fail_after(within):
        while not predicate():
            await anyio.sleep(0.01)


def events(logs: Sequence[Mapping[str, Any]], name: str) -> list[Mapping[str, Any]]:
    return [entry for entry in logs if entry["event"] == name]


def ran(server: SSHTestServer) -> list[str]:
    """The commands the server was asked to run, as given to the transport (without the
    timeout(1) probe of each connection and the timeout wrapper)."""
    return [unwrap_timeout(c) for c in server.commands if c != TIMEOUT_PROBE]


# --- options -------------------------------------------------------------------------------


def test_parse_jump_host() -> None:
    assert parse_jump_host("alice@bastion.example.org:2222") == (
        "alice",
        "bastion.example.org",
        2222,
    )
    assert parse_jump_host("bastion") == (None, "bastion", 22)
    assert parse_jump_host("bob@[::1]:2200") == ("bob", "::1", 2200)
    with pytest.raises(ConfigError):
        parse_jump_host("alice@host:notaport")
    with pytest.raises(ConfigError):
        SSHOptions(host="h", max_channels=0)


# --- commands --------------------------------------------------------------------------------


async def test_stdout_stderr_exit_status_and_input(tmp_path: Path) -> None:
    bin_dir = tmp_path / "fake-bin"
    bin_dir.mkdir()
    fake = bin_dir / "qsub"
    fake.write_text('#!/bin/sh\necho "queued $1 as $FAKE_USER"\n')
    fake.chmod(0o755)
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "FAKE_USER": "alice"}
    async with running_ssh_server(tmp_path, env=env) as server:
        async with SSHTransport(server.options()) as transport:
            result = await transport.run("echo out; echo err >&2; exit 3")
            assert result == CommandResult("out\n", "err\n", 3)
            result = await transport.run("tr a-z A-Z", input="hello\nworld\n")
            assert result == CommandResult("HELLO\nWORLD\n", "", 0)
            # without input, stdin is at EOF at once: a command reading it does not hang
            assert (await transport.run("cat; echo done", timeout=5)).stdout == "done\n"
            assert (await transport.run("qsub job.sh")).stdout == "queued job.sh as alice\n"
            result = await transport.run(r"printf 'bad \377 byte'")
            assert result.stdout == "bad \ufffd byte"
            assert (await transport.run("kill -9 $$")).exit_status == 137
        assert server.exec_count == 7 and server.commands[0] == TIMEOUT_PROBE
        assert len(ran(server)) == 6
        assert server.connection_count == 1


async def test_quoted_arguments_come_back_unchanged(tmp_path: Path) -> None:
    async with running_ssh_server(tmp_path) as server:
        async with SSHTransport(server.options()) as transport:
            result = await transport.run(shlex.join(["printf", "%s\\0", *TRICKY_ARGS]))
        assert result.exit_status == 0
        assert result.stdout.split("\0")[:-1] == TRICKY_ARGS
        assert not list(server.home.glob("pwned*"))


async def test_timeout_closes_the_channel_and_the_connection_stays_usable(tmp_path: Path) -> None:
    async with running_ssh_server(tmp_path) as server:
        async with SSHTransport(server.options(max_channels=1)) as transport:
            await transport.run("true")  # connect first: the clock covers the command only
            started = time.monotonic()
            with pytest.raises(TransportError, match=r"timed out after 0\.5s: sleep 30"):
                await transport.run("sleep 30", timeout=0.5)
            # generous for a loaded machine, far below the 30 s of waiting for the command
            assert time.monotonic() - started < 15
            await eventually(lambda: server.active_sessions == 0)  # the remote child was killed
            # the only channel slot was given back and the same connection still works
            assert (await transport.run("echo still here")).stdout == "still here\n"
            assert transport.connected
        assert server.connection_count == 1


async def test_commands_run_under_the_heads_timeout(tmp_path: Path) -> None:
    async with running_ssh_server(tmp_path) as server, SSHTransport(server.options()) as transport:
        assert (await transport.run("echo 'it''s'; exit 4", timeout=30.7)).exit_status == 4
        assert (await transport.run("cat", input="x\n", timeout=0.8)).stdout == "x\n"
    # once per connection: does timeout -k work? then never longer than our own timeout
    assert server.commands == [
        TIMEOUT_PROBE,
        "exec timeout -k 5 30 sh -c " + shlex.quote("echo 'it''s'; exit 4"),
        "exec timeout -k 5 0.800 sh -c cat",
    ]
    assert ran(server) == ["echo 'it''s'; exit 4", "cat"]


async def test_a_head_without_a_usable_timeout_runs_commands_as_they_are(tmp_path: Path) -> None:
    bin_dir = tmp_path / "old-busybox"
    bin_dir.mkdir()
    fake = bin_dir / "timeout"  # busybox before 1.30: timeout [-t SECS] [-s SIG] PROG
    fake.write_text("#!/bin/sh\necho 'timeout: invalid option -- k' >&2\nexit 1\n")
    fake.chmod(0o755)
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}"}
    async with running_ssh_server(tmp_path, env=env) as server:
        async with SSHTransport(server.options()) as transport:
            assert (await transport.run("echo plain")).stdout == "plain\n"
    assert server.commands == [TIMEOUT_PROBE, "echo plain"]


async def test_cancelled_command_gives_its_channel_back(tmp_path: Path) -> None:
    async with (
        running_ssh_server(tmp_path) as server,
        SSHTransport(server.options(max_channels=1)) as transport,
    ):
        with anyio.move_on_after(0.3) as scope:
            await transport.run("sleep 30")
        assert scope.cancelled_caught
        await eventually(lambda: server.active_sessions == 0)
        assert (await transport.run("echo next", timeout=5)).stdout == "next\n"


async def test_concurrent_commands_share_one_connection_within_the_channel_cap(
    tmp_path: Path,
) -> None:
    results: dict[int, CommandResult] = {}
    async with running_ssh_server(tmp_path) as server:
        async with SSHTransport(server.options(max_channels=4)) as transport:

            async def one(index: int) -> None:
                results[index] = await transport.run(f"sleep 0.05; echo {index}", timeout=30)

            async with anyio.create_task_group() as tg:
                for index in range(30):
                    tg.start_soon(one, index)
        assert {i: r.stdout for i, r in results.items()} == {i: f"{i}\n" for i in range(30)}
        assert server.exec_count == 31 and len(ran(server)) == 30  # and the probe
        assert server.max_concurrent_sessions == 4
        assert server.connection_count == 1


# --- connection loss, backoff ----------------------------------------------------------------


async def test_dropped_connection_is_replaced_on_the_next_call(tmp_path: Path) -> None:
    async with (
        running_ssh_server(tmp_path) as server,
        SSHTransport(server.options()) as transport,
    ):
        with capture_logs() as logs:
            assert (await transport.run("echo one")).stdout == "one\n"
            await server.drop_connections()
            assert (await transport.run("echo two")).stdout == "two\n"
        assert server.connection_count == 2
        assert len(events(logs, "ssh_connected")) == 2
        assert events(logs, "ssh_disconnected")[0]["host"] == "127.0.0.1"


async def test_connection_lost_mid_command_raises_and_the_next_call_reconnects(
    tmp_path: Path,
) -> None:
    async with (
        running_ssh_server(tmp_path) as server,
        SSHTransport(server.options()) as transport,
    ):
        failure: list[TransportError] = []

        async def long_command() -> None:
            try:
                await transport.run("sleep 30")
            except TransportError as exc:
                failure.append(exc)

        async with anyio.create_task_group() as tg:
            tg.start_soon(long_command)
            # the command itself, not the connection's timeout(1) probe
            await eventually(lambda: server.active_sessions == 1 and "sleep 30" in ran(server))
            await server.drop_connections()
        assert len(failure) == 1
        assert "127.0.0.1" in str(failure[0])
        # the command might have run: it is reported, never silently repeated
        assert ran(server).count("sleep 30") == 1
        assert (await transport.run("echo back")).stdout == "back\n"
        assert server.connection_count == 2


async def test_unreachable_head_fails_fast_and_backs_off(tmp_path: Path) -> None:
    async with running_ssh_server(tmp_path) as server:
        # a backoff window of at least 3 s, so the second call surely lands inside it; a
        # long connect timeout, so failing fast is told apart from waiting it out
        options = server.options(backoff_initial=6.0, backoff_max=6.0, connect_timeout=60.0)
        async with SSHTransport(options) as transport:
            server.pause()
            with capture_logs() as logs:
                started = time.monotonic()
                with pytest.raises(TransportError, match=r"127\.0\.0\.1") as first:
                    await transport.run("echo hi")
                assert time.monotonic() - started < 10
                assert first.value.transient
                assert transport.last_error is not None
                assert transport.available_at > time.monotonic()
                # within the backoff window: refused without another connection attempt
                with pytest.raises(TransportError, match="next connection attempt in"):
                    await transport.run("echo hi")
            assert len(events(logs, "ssh_connect_failed")) == 1
            assert transport.connect_attempts == 1
            assert server.rejected_connections == 1

            server.resume()
            await anyio.sleep(max(0.0, transport.available_at - time.monotonic()) + 0.05)
            assert (await transport.run("echo hi")).stdout == "hi\n"
            assert transport.last_error is None
            assert transport.available_at == 0.0


async def test_backoff_grows_between_failed_attempts(tmp_path: Path) -> None:
    async with running_ssh_server(tmp_path) as server:
        options = server.options(backoff_initial=0.2, backoff_max=0.8)
        async with SSHTransport(options) as transport:
            server.pause()
            # the delay is drawn between `before` and `after`, so available_at - before is
            # at least the delay and available_at - after at most: a stall cannot break them
            bounds: list[tuple[float, float]] = []
            for _ in range(4):
                before = time.monotonic()
                with pytest.raises(TransportError):
                    await transport.run("true")
                after = time.monotonic()
                bounds.append((transport.available_at - after, transport.available_at - before))
                # a little past the window, so the next call really attempts a connection
                await anyio.sleep(max(0.0, transport.available_at - time.monotonic()) + 0.01)
            # jittered into [base/2, base] (drivers/ssh.py: uniform(base / 2, base)) with
            # base 0.2, 0.4, 0.8, 0.8 (capped): the ranges exclude a delay that did not grow
            eps = 1e-6
            for (low, high), base in zip(bounds, (0.2, 0.4, 0.8, 0.8), strict=True):
                assert high >= base / 2 - eps, (bounds, base)
                assert low <= base + eps, (bounds, base)
            assert server.rejected_connections == 4


async def test_connection_attempts_are_rate_limited(tmp_path: Path) -> None:
    async with (
        running_ssh_server(tmp_path) as server,
        SSHTransport(server.options(min_connect_interval=2.0)) as transport,
    ):
        # the limit counts from the first attempt, which starts after `started`
        started = time.monotonic()
        await transport.run("true")
        await server.drop_connections()
        await transport.run("true")
        assert time.monotonic() - started >= 2.0 - 0.01  # slack: timer rounding only
        assert server.connection_count == 2


async def test_closed_transport_refuses_work(tmp_path: Path) -> None:
    async with running_ssh_server(tmp_path) as server:
        transport = SSHTransport(server.options())
        await transport.run("true")
        await transport.aclose()
        await transport.aclose()  # idempotent
        with pytest.raises(TransportError, match="closed"):
            await transport.run("true")
        await eventually(lambda: server.live_connections == 0)


# --- host keys, authentication ---------------------------------------------------------------


async def test_unknown_host_key_is_refused_unless_allowed(tmp_path: Path) -> None:
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    async with running_ssh_server(tmp_path) as server:
        async with SSHTransport(server.options(known_hosts=str(empty))) as transport:
            with pytest.raises(TransportError, match="host key refused") as refused:
                await transport.run("true")
            assert "unknown" in str(refused.value)
            assert str(empty) in str(refused.value)
        assert server.exec_count == 0

        allowed = server.options(known_hosts=str(empty), accept_unknown_host_keys=True)
        async with SSHTransport(allowed) as transport:
            with capture_logs() as logs:
                assert (await transport.run("echo ok")).stdout == "ok\n"
            assert len(events(logs, "ssh_unknown_host_key_accepted")) == 1


async def test_missing_known_hosts_file_knows_no_host(tmp_path: Path) -> None:
    async with running_ssh_server(tmp_path) as server:
        options = server.options(known_hosts=str(tmp_path / "no-such-file"))
        async with SSHTransport(options) as transport:
            with pytest.raises(TransportError, match="unknown"):
                await transport.run("true")


async def test_wrong_host_key_is_refused_even_when_unknown_keys_are_allowed(
    tmp_path: Path,
) -> None:
    async with running_ssh_server(tmp_path) as server:
        impostor = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode()
        wrong = tmp_path / "wrong_known_hosts"
        wrong.write_text(f"[127.0.0.1]:{server.port} {' '.join(impostor.split()[:2])}\n")
        for accept_unknown in (False, True):
            options = server.options(
                known_hosts=str(wrong), accept_unknown_host_keys=accept_unknown
            )
            async with SSHTransport(options) as transport:
                with pytest.raises(TransportError, match="does NOT match"):
                    await transport.run("true")
        assert server.exec_count == 0


async def test_wrong_client_key_fails_authentication(tmp_path: Path) -> None:
    stranger = tmp_path / "stranger_key"
    asyncssh.generate_private_key("ssh-ed25519").write_private_key(str(stranger))
    async with running_ssh_server(tmp_path) as server:
        options = server.options(identity_files=(str(stranger),))
        async with SSHTransport(options) as transport:
            with pytest.raises(TransportError, match="authentication failed"):
                await transport.run("true")


# --- jump host -------------------------------------------------------------------------------


async def test_jump_host_tunnels_to_the_head_and_is_reused(tmp_path: Path) -> None:
    async with (
        running_ssh_server(tmp_path, allow_forwarding=True) as bastion,
        running_ssh_server(tmp_path) as head,
    ):
        options = head.options(
            jump_host=f"jumper@127.0.0.1:{bastion.port}",
            jump_identity_files=(str(bastion.client_key_path),),
            jump_known_hosts=str(bastion.known_hosts_path),
        )
        async with SSHTransport(options) as transport:
            assert (await transport.run("echo via bastion")).stdout == "via bastion\n"
            await head.drop_connections()
            assert (await transport.run("echo again")).stdout == "again\n"
        assert bastion.forward_requests == [("127.0.0.1", head.port)] * 2
        assert bastion.exec_count == 0
        assert bastion.connection_count == 1  # the connection to the bastion was reused
        assert head.exec_count == 4 and ran(head) == ["echo via bastion", "echo again"]
        assert head.connection_count == 2


async def test_jump_host_that_refuses_forwarding(tmp_path: Path) -> None:
    async with (
        running_ssh_server(tmp_path) as bastion,
        running_ssh_server(tmp_path) as head,
    ):
        options = head.options(
            jump_host=f"127.0.0.1:{bastion.port}",
            jump_identity_files=(str(bastion.client_key_path),),
            jump_known_hosts=str(bastion.known_hosts_path),
        )
        async with SSHTransport(options) as transport:
            with pytest.raises(TransportError, match="cannot connect"):
                await transport.run("true")
        assert bastion.forward_requests == [("127.0.0.1", head.port)]
        assert head.connection_count == 0


# --- SFTP --------------------------------------------------------------------------------------


async def test_sftp_round_trip_creates_parent_folders(tmp_path: Path) -> None:
    payload = bytes(range(256)) * 1000
    source = tmp_path / "source.bin"
    source.write_bytes(payload)
    remote = tmp_path / "remote" / "a" / "b" / "c" / "input.bin"
    back = tmp_path / "local" / "x" / "y" / "output.bin"
    async with running_ssh_server(tmp_path) as server:
        async with SSHTransport(server.options()) as transport:
            await transport.upload(str(source), str(remote))
            assert remote.read_bytes() == payload
            await transport.download(str(remote), str(back))
            assert back.read_bytes() == payload
            with pytest.raises(TransportError, match="download"):
                await transport.download(str(tmp_path / "missing"), str(tmp_path / "x"))
        assert server.connection_count == 1


async def _check_private_copies(transport: SSHTransport, tmp_path: Path) -> None:
    """Copies keep their source's mode, new folders are 0700, a symlink at the
    destination is replaced rather than written through (both ways)."""
    old_umask = os.umask(0o022)  # what a default copy would turn into 0644
    try:
        source = tmp_path / "private.txt"
        source.write_text("mine\n")
        source.chmod(0o600)
        victim = tmp_path / "victim.txt"
        victim.write_text("untouched\n")
        remote = tmp_path / "head" / "job" / "private.txt"
        remote.parent.mkdir(parents=True)
        remote.symlink_to(victim)  # planted by an earlier job
        await transport.upload(str(source), str(remote))
        assert not remote.is_symlink() and remote.read_text() == "mine\n"
        assert victim.read_text() == "untouched\n"
        assert stat.S_IMODE(remote.stat().st_mode) == 0o600
        fresh = tmp_path / "head" / "new" / "deeper" / "x.txt"
        await transport.upload(str(source), str(fresh))
        for folder in (fresh.parent, fresh.parent.parent):
            assert stat.S_IMODE(folder.stat().st_mode) == 0o700
        remote.chmod(0o640)
        back = tmp_path / "outputs" / "1" / "private.txt"
        back.parent.mkdir(parents=True)
        back.symlink_to(victim)
        await transport.download(str(remote), str(back))
        assert not back.is_symlink() and back.read_text() == "mine\n"
        assert stat.S_IMODE(back.stat().st_mode) == 0o640
        assert victim.read_text() == "untouched\n"
        readonly = tmp_path / "readonly.txt"
        readonly.write_text("old\n")
        readonly.chmod(0o400)
        await transport.download(str(remote), str(readonly))  # a copy replaces what was there
        assert readonly.read_text() == "mine\n"
        deep = tmp_path / "outputs" / "2" / "sub" / "y.txt"
        await transport.download(str(fresh), str(deep))
        assert stat.S_IMODE(deep.stat().st_mode) == 0o600
        for folder in (deep.parent, deep.parent.parent):
            assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    finally:
        os.umask(old_umask)


async def test_sftp_copies_are_never_wider_than_their_source(tmp_path: Path) -> None:
    async with running_ssh_server(tmp_path) as server, SSHTransport(server.options()) as transport:
        await _check_private_copies(transport, tmp_path)


# --- the real OpenSSH server -----------------------------------------------------------------


@pytest.mark.sshd
async def test_sshd_commands(tmp_path: Path) -> None:
    with running_sshd(tmp_path) as sshd:
        async with SSHTransport(sshd.options()) as transport:
            assert await transport.run("echo out; echo err >&2; exit 3") == CommandResult(
                "out\n", "err\n", 3
            )
            result = await transport.run("tr a-z A-Z", input="hello\n")
            assert result == CommandResult("HELLO\n", "", 0)
            assert (await transport.run("cat; echo done", timeout=10)).stdout == "done\n"
            result = await transport.run(shlex.join(["printf", "%s\\0", *TRICKY_ARGS]))
            assert result.stdout.split("\0")[:-1] == TRICKY_ARGS
            # OpenSSH keeps a timed-out command running (no pty: it ignores the KILL
            # signal request); the channel is given up on and the connection stays usable.
            pid_file = tmp_path / "sleeper.pid"
            try:
                started = time.monotonic()
                with pytest.raises(TransportError, match="timed out"):
                    await transport.run(f"echo $$ > {pid_file}; exec sleep 30", timeout=0.5)
                # the channel close grace (2 s) and load, far below the command's 30 s
                assert time.monotonic() - started < 15
                assert (await transport.run("echo after")).stdout == "after\n"
                assert transport.connected
            finally:
                with contextlib.suppress(ValueError, OSError):
                    os.kill(int(pid_file.read_text()), signal.SIGKILL)


@pytest.mark.sshd
async def test_sshd_concurrent_commands_within_max_sessions(tmp_path: Path) -> None:
    with running_sshd(tmp_path) as sshd:
        async with SSHTransport(sshd.options()) as transport:  # max_channels 8 < MaxSessions 10
            results: dict[int, str] = {}

            async def one(index: int) -> None:
                results[index] = (await transport.run(f"sleep 0.1; echo {index}")).stdout

            async with anyio.create_task_group() as tg:
                for index in range(24):
                    tg.start_soon(one, index)
            assert results == {i: f"{i}\n" for i in range(24)}


@pytest.mark.sshd
async def test_sshd_sftp_round_trip(tmp_path: Path) -> None:
    payload = os.urandom(300_000)
    source = tmp_path / "source.bin"
    source.write_bytes(payload)
    remote = tmp_path / "remote" / "deep" / "er" / "file.bin"
    back = tmp_path / "back" / "file.bin"
    with running_sshd(tmp_path) as sshd:
        async with SSHTransport(sshd.options()) as transport:
            await transport.upload(str(source), str(remote))
            await transport.download(str(remote), str(back))
    assert remote.read_bytes() == payload
    assert back.read_bytes() == payload


@pytest.mark.sshd
async def test_sshd_sftp_copies_are_never_wider_than_their_source(tmp_path: Path) -> None:
    with running_sshd(tmp_path) as sshd:
        async with SSHTransport(sshd.options()) as transport:
            await _check_private_copies(transport, tmp_path)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"  # a zombie has ended; only its parent has not reaped it yet


@pytest.mark.sshd
async def test_sshd_timed_out_command_does_not_go_on_running_on_the_head(tmp_path: Path) -> None:
    """OpenSSH neither kills a command without a pty when its channel closes nor obeys
    the signal request: without timeout(1) on the head, the sleeps below ran 5 minutes."""

    def hanging(tag: str, prelude: str = "") -> str:
        pids = shlex.quote(str(tmp_path / f"{tag}.pids"))
        return f"{prelude}sleep 300 & echo $! > {pids}; echo $$ >> {pids}; wait"

    with running_sshd(tmp_path) as sshd:
        async with SSHTransport(sshd.options()) as transport:
            with pytest.raises(TransportError, match=r"timed out after 2s"):
                await transport.run(hanging("plain"), timeout=2)
            # TERM is ignored by the shell and its child: KILL follows 5 s later
            with pytest.raises(TransportError, match=r"timed out after 2s"):
                await transport.run(hanging("stubborn", "trap '' TERM; "), timeout=2)
            assert (await transport.run("echo alive")).stdout == "alive\n"
    started = [int(pid) for tag in ("plain", "stubborn")
               for pid in (tmp_path / f"{tag}.pids").read_text().split()]  # fmt: skip
    assert len(started) == 4
    deadline = time.monotonic() + 30  # TERM at 2 s, KILL 5 s later: generous
    while [pid for pid in started if _alive(pid)]:
        assert time.monotonic() < deadline, [pid for pid in started if _alive(pid)]
        await anyio.sleep(0.1)


@pytest.mark.sshd
async def test_sshd_unknown_host_key_refused(tmp_path: Path) -> None:
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    with running_sshd(tmp_path) as sshd:
        async with SSHTransport(sshd.options(known_hosts=str(empty))) as transport:
            with pytest.raises(TransportError, match="host key refused"):
                await transport.run("true")
