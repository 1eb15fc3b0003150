"""The composition root: wires store, drivers, cluster workers and the control server.

Nothing else constructs them. ``run(settings, shutdown_trigger=...)`` is the whole
daemon; ``main()`` is the console script.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import fcntl
import functools
import getpass
import logging
import os
import signal
import socket
import sys
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import structlog

from schedulerd import __version__
from schedulerd.config import ClusterConfig, Settings, load_settings
from schedulerd.control import serve_control, stale_socket_at
from schedulerd.drivers.api import Driver
from schedulerd.drivers.batch import BatchDriver
from schedulerd.drivers.dialect import Dialect
from schedulerd.drivers.local import LocalDriver
from schedulerd.drivers.ssh import SSHOptions, SSHTransport
from schedulerd.drivers.transport import LocalTransport, Transport
from schedulerd.errors import ConfigError, SchedulerdError
from schedulerd.methods.base import ControlContext
from schedulerd.state.store import open_store
from schedulerd.worker.cluster import ClusterWorker, drained_key

log = structlog.get_logger("schedulerd")


def sd_notify(message: str) -> None:
    """Tell systemd (Type=notify) about READY/STOPPING/STATUS; no-op outside systemd."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(message.encode())
    except OSError as exc:
        log.warning("sd_notify_failed", error=str(exc))


def create_dialect(scheduler: str) -> Dialect:
    if scheduler == "pbspro":
        from schedulerd.drivers.pbspro import PbsProDialect

        return PbsProDialect()
    if scheduler == "torque":
        from schedulerd.drivers.torque import TorqueDialect

        return TorqueDialect()
    if scheduler == "lsf":
        from schedulerd.drivers.lsf import LsfDialect

        return LsfDialect()
    if scheduler == "htcondor":
        from schedulerd.drivers.htcondor import HTCondorDialect

        return HTCondorDialect()
    if scheduler == "slurm":
        from schedulerd.drivers.slurm import SlurmDialect

        return SlurmDialect()
    raise ConfigError(f"no batch dialect for scheduler {scheduler!r}")


def create_transport(cluster: ClusterConfig) -> Transport:
    if cluster.is_local_transport:
        return LocalTransport()
    return SSHTransport(
        SSHOptions(
            host=cluster.host or "localhost",
            port=cluster.port,
            user=cluster.user,
            identity_files=(cluster.identity_file,) if cluster.identity_file else (),
            known_hosts=cluster.known_hosts,
            accept_unknown_host_keys=cluster.accept_unknown_host_keys,
            jump_host=cluster.jump_host,
            max_channels=cluster.max_channels,
            connect_timeout=cluster.connect_timeout,
            keepalive_interval=cluster.keepalive_interval,
        )
    )


def create_driver(cluster: ClusterConfig) -> Driver:
    if cluster.scheduler == "local":
        return LocalDriver(exit_read_timeout=cluster.exit_read_timeout)
    return BatchDriver(
        create_dialect(cluster.scheduler),
        create_transport(cluster),
        user=cluster.user or getpass.getuser(),
        exit_read_timeout=cluster.exit_read_timeout,
        command_timeout=cluster.command_timeout,
        workdir=cluster.workdir,
        default_queue=cluster.default_queue,
    )


async def run(
    settings: Settings,
    *,
    shutdown_trigger: Callable[[], Awaitable[Any]] | None = None,
    reload: Callable[[], Settings] | None = None,
    handle_signals: bool = True,
    task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Run the daemon until SIGTERM/SIGINT, ``daemon.shutdown`` or ``shutdown_trigger``."""
    try:
        settings.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise SchedulerdError(_state_dir_problem(settings.state_dir, exc)) from exc
    with _state_dir_lock(settings.state_dir):
        await _run_locked(settings, shutdown_trigger=shutdown_trigger, reload=reload,
                          handle_signals=handle_signals, task_status=task_status)  # fmt: skip


@contextlib.contextmanager
def _state_dir_lock(state_dir: Path) -> Iterator[None]:
    """One daemon per state directory: two writers would submit the same jobs twice."""
    path = state_dir / "schedulerd.lock"
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise SchedulerdError(_state_dir_problem(state_dir, exc)) from exc
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            raise SchedulerdError(
                f"another schedulerd (pid {holder}) is using {state_dir}"
            ) from exc
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


def _state_dir_problem(state_dir: Path, exc: OSError) -> str:
    if isinstance(exc, FileExistsError):
        return (
            f"the state directory {state_dir} is a file, not a directory: move it away"
            " (or choose another --state-dir)"
        )
    return (
        f"cannot use the state directory {state_dir}: {exc.strerror or exc}"
        f"{f' ({exc.filename})' if exc.filename not in (None, str(state_dir)) else ''};"
        " it must be a directory this user can read and write (or choose another --state-dir)"
    )


async def _serve_control(
    ctx: ControlContext, path: Path, *, task_status: anyio.abc.TaskStatus[None], **options: Any
) -> None:
    """serve_control, with an operating-system refusal (a path too long for a socket, a
    directory that cannot be written) told as one line."""
    try:
        await serve_control(ctx, path, task_status=task_status, **options)
    except OSError as exc:
        raise SchedulerdError(
            f"cannot listen on the socket {path}: {exc.strerror or exc}; choose another"
            " socket path (--socket) in a directory this user can write"
        ) from exc


async def _run_locked(
    settings: Settings,
    *,
    shutdown_trigger: Callable[[], Awaitable[Any]] | None,
    reload: Callable[[], Settings] | None,
    handle_signals: bool,
    task_status: anyio.abc.TaskStatus[None],
) -> None:
    # refuse a socket path that holds something else, or a live daemon's socket, before
    # anything starts (serve_control binds it, replacing a dead daemon's, once the store
    # and workers are up)
    await stale_socket_at(settings.socket_path)
    store = await open_store(settings.database_path)
    store.retry_base = settings.retry_base
    current = {"settings": settings}
    stop = anyio.Event()
    workers: dict[str, ClusterWorker] = {}
    ctx = ControlContext(
        store=store,
        workers=workers,
        settings_getter=lambda: current["settings"],
        request_shutdown=stop.set,
    )
    ready = False  # a start that fails says so in one line (main), without a stop log
    try:
        async with anyio.create_task_group() as root:
            await root.start(store.run_writer)
            remembered = await store.settings()
            async with anyio.create_task_group() as work:
                for name, cluster in settings.clusters.items():
                    workers[name] = ClusterWorker(cluster, settings, store, create_driver(cluster))
                    workers[name].drained = remembered.get(drained_key(name)) is True
                    work.start_soon(workers[name].run)
                await work.start(
                    functools.partial(
                        _serve_control,
                        ctx,
                        settings.socket_path,
                        group=settings.socket_group,
                        max_bytes=settings.max_message_bytes,
                        max_buffered=settings.max_buffered_bytes,
                    )
                )
                if handle_signals:
                    work.start_soon(_signals, stop, current, workers, work, store, reload)
                if shutdown_trigger is not None:

                    async def _trigger() -> None:
                        await shutdown_trigger()
                        stop.set()

                    work.start_soon(_trigger)
                log.info("daemon_ready", socket=str(settings.socket_path), pid=os.getpid(),
                         clusters=sorted(workers), version=__version__)  # fmt: skip
                sd_notify("READY=1\nSTATUS=ready")
                ready = True
                task_status.started()
                await stop.wait()
                log.info("daemon_stopping")
                sd_notify("STOPPING=1")
                ctx.stopping = True
                work.cancel_scope.cancel()
            await store.close()
    finally:
        with anyio.CancelScope(shield=True):
            for worker in workers.values():
                with anyio.move_on_after(10):
                    await worker.driver.aclose()
            await store.aclose_connections()
        if ready:
            log.info("daemon_stopped")


async def _signals(
    stop: anyio.Event,
    current: dict[str, Settings],
    workers: dict[str, ClusterWorker],
    tg: anyio.abc.TaskGroup,
    store: Any,
    reload: Callable[[], Settings] | None,
) -> None:
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
        async for signum in signals:
            if signum != signal.SIGHUP:
                log.info("signal_received", signal=signal.Signals(signum).name)
                stop.set()
                return
            if reload is None:
                continue
            try:
                new = reload()
            except SchedulerdError as exc:
                log.error("reload_failed", error=exc.message)
                continue
            apply_reload(current, new, workers, tg, store)


def apply_reload(
    current: dict[str, Settings],
    new: Settings,
    workers: dict[str, ClusterWorker],
    tg: anyio.abc.TaskGroup,
    store: Any,
) -> None:
    """Limits and clusters change live; paths do not (they need a restart)."""
    old = current["settings"]
    if (new.state_dir, new.socket_path) != (old.state_dir, old.socket_path):
        log.warning("reload_paths_ignored", detail="state_dir and socket change on restart only")
    # everything from the new file except what only a restart may change
    kept = dataclasses.replace(
        new,
        state_dir=old.state_dir,
        socket_path=old.socket_path,
        socket_group=old.socket_group,
        outputs_dir=old.outputs_dir,
    )
    current["settings"] = kept
    store.retry_base = kept.retry_base
    for name, cluster in kept.clusters.items():
        if name in workers:
            workers[name].reconfigure(cluster, kept)
            workers[name].removed = False  # an operator's drain stays
        else:
            # new to this run (or back in the config): an operator's earlier drain holds
            workers[name] = ClusterWorker(cluster, kept, store, create_driver(cluster))
            tg.start_soon(_start_worker, workers[name], store)
    for name, worker in workers.items():
        if name not in kept.clusters:
            # jobs already there are still watched; nothing new goes to it
            worker.removed = True
    log.info("config_reloaded", clusters=sorted(kept.clusters), max_active=kept.max_active)


async def _start_worker(worker: ClusterWorker, store: Any) -> None:
    worker.drained = (await store.settings()).get(drained_key(worker.name)) is True
    await worker.run()


def configure_logging(level: str = "info", *, json_logs: bool | None = None) -> None:
    if json_logs is None:
        json_logs = not sys.stderr.isatty()
    renderer: Any = (
        structlog.processors.JSONRenderer() if json_logs else structlog.dev.ConsoleRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
        ),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="schedulerd",
        description="Carries batch-job campaigns to PBS, LSF, HTCondor and Slurm heads.",
    )
    parser.add_argument("--config", help="TOML config file (env SCHEDULERD_CONFIG)")
    parser.add_argument("--state-dir", help="database directory (env SCHEDULERD_STATE_DIR)")
    parser.add_argument("--socket", help="control socket path (env SCHEDULERD_SOCKET)")
    parser.add_argument("--version", action="version", version=f"schedulerd {__version__}")
    args = parser.parse_args(argv)

    def load() -> Settings:
        return load_settings(config=args.config, state_dir=args.state_dir, socket=args.socket)

    try:
        settings = load()
    except ConfigError as exc:
        print(f"schedulerd: {exc.message}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level)
    try:
        anyio.run(lambda: run(settings, reload=load))
    except KeyboardInterrupt:
        return 130
    except BaseException as exc:
        error = _the_error(exc)
        if error is None:
            raise  # a bug: its traceback is what a report needs
        # one line, no traceback: the operator has a path, what is wrong and what to do
        print(f"schedulerd: {error.message}", file=sys.stderr)
        return 1
    return 0


def _the_error(exc: BaseException) -> SchedulerdError | None:
    """The SchedulerdError that ended the daemon, out of the task groups' exception
    groups it arrives in; None if something else (a bug) is among them."""
    if isinstance(exc, SchedulerdError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        found = [_the_error(e) for e in exc.exceptions]
        if found and all(found):
            return found[0]
    return None


if __name__ == "__main__":
    sys.exit(main())
