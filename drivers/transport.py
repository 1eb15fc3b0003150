"""How drivers run commands on a head: the Transport seam and the local transport.

A transport runs one shell command line (already quoted with ``shlex``) and returns its
output and exit status. It raises :class:`schedulerd.errors.TransportError` when the
head cannot be reached or the command exceeded its timeout -- never for a non-zero exit
status, which is the command's own answer and the caller's to judge.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Protocol

import anyio

from schedulerd.errors import TransportError


@dataclass(frozen=True, slots=True)
class CommandResult:
    stdout: str
    stderr: str
    exit_status: int


def make_private_dirs(path: str) -> None:
    """``mkdir -p`` whose new folders are 0700 (existing ones are left as they are)."""
    missing: list[str] = []
    while path and not os.path.isdir(path):
        missing.append(path)
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    for folder in reversed(missing):
        try:
            os.mkdir(folder, 0o700)
        except FileExistsError:
            if not os.path.isdir(folder):
                raise


def copy_private(src: str, dst: str) -> None:
    """Copy ``src`` to ``dst`` with ``src``'s permission bits (never wider). A file or
    symlink at ``dst`` is replaced, never written through; the new file is readable by
    its owner only until the copy is complete."""
    make_private_dirs(os.path.dirname(dst))
    with open(src, "rb") as source:
        mode = os.fstat(source.fileno()).st_mode & 0o777
        try:
            os.unlink(dst)
        except FileNotFoundError:
            pass
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
        fd = os.open(dst, flags, mode & 0o700)
        with os.fdopen(fd, "wb") as target:
            while chunk := source.read(1 << 20):
                target.write(chunk)
            os.fchmod(target.fileno(), mode)


class Transport(Protocol):
    """A place where commands run: this machine, or a head node over SSH."""

    async def run(
        # the deadline is the command's, enforced by the transport (and on the head by
        # timeout(1) over SSH), not a scope the caller could wrap in fail_after
        self,
        command: str,
        *,
        input: str | None = None,
        timeout: float = 60.0,  # noqa: ASYNC109
    ) -> CommandResult:
        """Run ``command`` through the login shell of the head; feed it ``input``."""
        ...

    async def upload(self, local_path: str, remote_path: str) -> None:
        """Copy a file to the head (SFTP for SSH). Missing parent folders are created
        0700; the copy gets the source's mode (never wider) and replaces whatever was
        at ``remote_path`` without following a symlink there."""
        ...

    async def download(self, remote_path: str, local_path: str) -> None:
        """Copy a file from the head (SFTP for SSH), with the same rules as ``upload``."""
        ...

    async def aclose(self) -> None:
        """Close connections; idempotent."""
        ...


class LocalTransport:
    """Runs commands on this machine with ``/bin/sh -c``."""

    def __init__(self, *, env: dict[str, str] | None = None) -> None:
        self._env = env

    async def run(
        # the deadline is the command's, enforced by the transport (and on the head by
        # timeout(1) over SSH), not a scope the caller could wrap in fail_after
        self,
        command: str,
        *,
        input: str | None = None,
        timeout: float = 60.0,  # noqa: ASYNC109
    ) -> CommandResult:
        env = None if self._env is None else {**os.environ, **self._env}
        try:
            with anyio.fail_after(timeout):
                proc = await anyio.run_process(
                    ["/bin/sh", "-c", command],
                    input=None if input is None else input.encode(),
                    check=False,
                    env=env,
                )
        except TimeoutError as exc:
            raise TransportError(f"command timed out after {timeout:g}s: {command[:200]}") from exc
        except OSError as exc:
            raise TransportError(f"cannot run command locally: {exc}") from exc
        return CommandResult(
            proc.stdout.decode(errors="replace"),
            proc.stderr.decode(errors="replace"),
            proc.returncode,
        )

    async def upload(self, local_path: str, remote_path: str) -> None:
        await self._copy(local_path, remote_path)

    async def download(self, remote_path: str, local_path: str) -> None:
        await self._copy(remote_path, local_path)

    async def _copy(self, src: str, dst: str) -> None:
        await anyio.to_thread.run_sync(copy_private, src, dst)

    async def aclose(self) -> None:
        return None
