"""Staging: input files up to a job's workdir before submit, output files back after.

Inputs are absolute paths of regular files on the daemon's machine; each goes to
``<job workdir>/<basename>`` on the head (SFTP for SSH, a copy for the local
transport). Outputs are glob patterns relative to the job's workdir; after the job ends
ONE remote command lists the matching files (NUL-separated) and each is downloaded to
``<outputs dir>/<job id>/<attempt>/<relative path>``.

Permissions are never widened: a copy (either way) gets its source's mode, folders we
create (on the head by the upload, here for outputs) are 0700, and an output that is a
symlink leading outside the job's workdir is not copied (see ``parse_output_listing``).

The listing command hands every pattern to ``sh -c`` as a quoted positional argument
(invariant 6). Inside, ``$p`` is expanded unquoted with ``IFS`` empty: the only
expansion a pattern undergoes is pathname expansion (globbing) -- expansion results are
never parsed again for ``$(...)``, backquotes, ``;`` or redirections, and with no field
splitting a pattern stays one word. Patterns are also checked here (relative, no ``..``)
and every name the head answers is checked again before it becomes a local path.

The helpers at the top are pure; ``stage_in`` / ``stage_out`` do the I/O through a
:class:`~schedulerd.drivers.transport.Transport`.
"""

from __future__ import annotations

import os
import posixpath
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio

from schedulerd.drivers.base import JobRequest
from schedulerd.drivers.shell import is_one_line
from schedulerd.drivers.transport import Transport, make_private_dirs
from schedulerd.errors import InvalidSpec, RemoteCommandError, SchedulerdError

MAX_INPUTS = 1000
MAX_OUTPUT_PATTERNS = 100
#: names a job's workdir uses for itself (the control folder of invariant 4)
RESERVED_NAMES = frozenset({".schedulerd"})

# $1: the workdir; then the patterns. IFS= turns off field splitting, so ``$p`` is only
# globbed; paths climbing out of the workdir (``.*/x`` can match ``../x``) are dropped.
# It prints ``W<physical workdir>`` and, per regular file (or symlink to one),
# ``F<name>`` and the physical path of what would be copied: a symlink resolved with
# ``readlink -f`` (empty when that cannot resolve it), any other file through its folder's
# ``pwd -P`` -- so the caller can refuse whatever leads outside the workdir.
LIST_OUTPUTS_SCRIPT = (
    'IFS=; cd -- "$1" || exit 3; shift; W=$(pwd -P) || exit 3; printf "W%s\\0" "$W"; '
    'for p in "$@"; do for f in $p; do '
    'case "$f" in ..|../*|*/..|*/../*) continue ;; esac; '
    '[ -f "$f" ] || continue; '
    'if [ -L "$f" ]; then r=$(readlink -f -- "$f" 2>/dev/null) || r=; '
    'else case "$f" in */*) r=$(cd -P -- "${f%/*}" 2>/dev/null && pwd -P)/${f##*/} || r= ;; '
    "*) r=$W/$f ;; esac; fi; "
    'printf "F%s\\0%s\\0" "$f" "$r"; '
    "done; done; exit 0"
)


# --- pure helpers ---------------------------------------------------------------------------


def validate_inputs(paths: Sequence[str]) -> list[str]:
    """The input paths as given, or ValueError: absolute, single-line, unique basenames."""
    if len(paths) > MAX_INPUTS:
        raise ValueError(f"inputs: at most {MAX_INPUTS} files per job")
    seen: dict[str, str] = {}
    for path in paths:
        if not path or not is_one_line(path):
            raise ValueError(f"inputs: {path!r} is not a valid path")
        if not os.path.isabs(path):
            raise ValueError(f"inputs: {path!r} is not an absolute path")
        name = posixpath.basename(path)
        if not name or name in (".", "..") or name in RESERVED_NAMES:
            raise ValueError(f"inputs: {path!r} does not name a file")
        if name in seen:
            raise ValueError(
                f"inputs: {seen[name]!r} and {path!r} would both be {name!r} in the workdir"
            )
        seen[name] = path
    return list(paths)


def unusable_inputs(paths: Sequence[str]) -> list[str]:
    """Problems with input files on this machine (missing, not a regular file,
    unreadable); empty when all can be staged. Does I/O (stat), no awaiting."""
    problems = []
    for path in paths:
        if not os.path.isfile(path):
            problems.append(f"{path} does not exist or is not a regular file")
        elif not os.access(path, os.R_OK):
            problems.append(f"{path} is not readable")
    return problems


def input_remote_paths(workdir: str, inputs: Sequence[str]) -> list[tuple[str, str]]:
    """(local path, path on the head) for each input: ``<workdir>/<basename>``."""
    return [(path, f"{workdir.rstrip('/') or '/'}/{posixpath.basename(path)}".replace("//", "/"))
            for path in inputs]  # fmt: skip


def validate_output_patterns(patterns: Sequence[str]) -> list[str]:
    """The patterns as given, or ValueError: relative to the workdir, no ``..``."""
    if len(patterns) > MAX_OUTPUT_PATTERNS:
        raise ValueError(f"outputs: at most {MAX_OUTPUT_PATTERNS} patterns per job")
    for pattern in patterns:
        if not pattern or any(c in pattern for c in "\0\n\r"):
            raise ValueError(f"outputs: {pattern!r} is not a valid pattern")
        if pattern.startswith(("/", "~")):
            raise ValueError(f"outputs: {pattern!r} must be relative to the job's workdir")
        if ".." in pattern.split("/"):
            raise ValueError(f"outputs: {pattern!r} must not climb out of the workdir ('..')")
    if len(set(patterns)) != len(patterns):
        raise ValueError("outputs: a pattern is listed twice")
    return list(patterns)


def list_outputs_command(workdir: str, patterns: Sequence[str]) -> str:
    """ONE command that prints every regular file under ``workdir`` matching one of
    ``patterns``, relative to it, each followed by a NUL byte."""
    validate_output_patterns(patterns)
    return shlex.join(["sh", "-c", LIST_OUTPUTS_SCRIPT, "sh", workdir, *patterns])


def safe_relative_name(name: str) -> str | None:
    """``name`` normalised (no leading ``./``), or None when it is not a plain relative
    path inside the workdir."""
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if not parts or name.startswith("/") or ".." in parts or any("\0" in p for p in parts):
        return None
    return "/".join(parts)


@dataclass(frozen=True, slots=True, kw_only=True)
class OutputListing:
    """What the listing command found: ``files`` as (name relative to the workdir,
    physical path on the head to copy), and the names refused, with why."""

    files: list[tuple[str, str]] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)


def _inside(root: str, path: str) -> bool:
    base = root.rstrip("/")
    return path == root or path.startswith(base + "/")


def parse_output_listing(stdout: str) -> OutputListing:
    """The listing's records -> safe relative names, in order, without duplicates.

    Names that are not plain relative paths are dropped. A file whose physical path is
    outside the workdir (a symlink, or a symlinked folder, leading out of it) is not
    copied: it is refused with an error entry, so ``ln -s ~/.ssh/id_rsa out.dat`` in a
    job never brings that key back (nor do we copy the link itself: a link pointing
    outside means nothing next to the outputs). A symlink that stays inside is copied
    as the file it points to.
    """
    fields = stdout.split("\0")
    root: str | None = None
    listing = OutputListing()
    seen: set[str] = set()
    i = 0
    while i < len(fields):
        record = fields[i]
        i += 1
        if record.startswith("W") and root is None:
            root = record[1:]
            continue
        if not record.startswith("F") or i >= len(fields):
            continue
        raw, physical = record[1:], fields[i]
        i += 1
        name = safe_relative_name(raw)
        if name is None or name in seen:
            continue
        seen.add(name)
        if root is None or not root.startswith("/"):
            listing.refused.append(f"{name}: not copied: the workdir's location is unknown")
        elif not physical.startswith("/"):
            listing.refused.append(f"{name}: not copied: a symbolic link that cannot be resolved")
        elif not _inside(root, physical) or ".." in physical.split("/"):
            listing.refused.append(
                f"{name}: not copied: it leads outside the job's workdir (to {physical})"
            )
        else:
            listing.files.append((name, physical))
    return listing


def output_dir(root: str, job_id: int, attempt: int) -> str:
    """Where one attempt's outputs land on the daemon's machine."""
    return os.path.join(root, str(job_id), str(attempt))


# --- I/O ------------------------------------------------------------------------------------


def _stays_inside(local_dir: str, target: str) -> bool:
    """The folders on the way are ours; refuse to write through a symlink out of them."""
    base = os.path.realpath(local_dir)
    parent = os.path.realpath(os.path.dirname(target))
    return parent == base or parent.startswith(base + os.sep)


@dataclass(frozen=True, slots=True, kw_only=True)
class StageOutResult:
    directory: str
    files: list[str] = field(default_factory=list)  # relative to ``directory``
    errors: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"dir": self.directory, "files": list(self.files)}
        if self.errors:
            out["errors"] = list(self.errors)
        return out


async def stage_in(transport: Transport, request: JobRequest, inputs: Sequence[str]) -> list[str]:
    """Upload each input to ``<workdir>/<basename>`` on the head; the remote paths.

    InvalidSpec when an input is no longer usable here (nothing is uploaded then);
    TransportError when the head cannot be reached."""
    problems = unusable_inputs(inputs)
    if problems:
        raise InvalidSpec("input " + "; ".join(problems))
    remote: list[str] = []
    for local, target in input_remote_paths(request.workdir, inputs):
        await transport.upload(local, target)
        remote.append(target)
    return remote


async def stage_out(
    transport: Transport,
    workdir: str,
    patterns: Sequence[str],
    local_dir: str,
    *,
    command_timeout: float = 60.0,
) -> StageOutResult:
    """List the files matching ``patterns`` in ``workdir`` on the head (one command),
    then download each into ``local_dir``, keeping its relative path.

    RemoteCommandError when the listing fails (no workdir); TransportError when the
    head cannot be reached for it. A file that fails to download is reported in
    ``errors`` and the others are still fetched."""
    res = await transport.run(list_outputs_command(workdir, patterns), timeout=command_timeout)
    if res.exit_status != 0:
        raise RemoteCommandError(
            f"cannot list outputs in {workdir}: {res.stderr.strip()[:300] or f'exit {res.exit_status}'}",
            exit_status=res.exit_status,
            stderr=res.stderr,
        )
    listing = parse_output_listing(res.stdout)
    result = StageOutResult(directory=local_dir, errors=list(listing.refused))
    if not listing.files:
        return result
    await anyio.to_thread.run_sync(make_private_dirs, local_dir)
    for name, physical in listing.files:
        target = os.path.join(local_dir, *name.split("/"))
        if not _stays_inside(local_dir, target):
            result.errors.append(f"{name}: refused (leaves {local_dir})")
            continue
        try:
            # the physical path the listing checked, not the name (which may be a link)
            await transport.download(physical, target)
        except (OSError, SchedulerdError) as exc:
            # one file failing (gone meanwhile, permissions) does not stop the others
            result.errors.append(f"{name}: {exc}")
            continue
        result.files.append(name)
    return result
