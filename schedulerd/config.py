"""Configuration: TOML file, environment and flags, with an embedded default.

Precedence for the three paths: flag > environment (``SCHEDULERD_CONFIG``,
``SCHEDULERD_STATE_DIR``, ``SCHEDULERD_SOCKET``) > config file > default. With no
config file the daemon runs one cluster ``local`` with one slot per core.

The file is decoded by msgspec into typed Structs, one table at a time (the top level,
``[limits]``, each ``[clusters.<name>]``), so that every error names the key it is about
(``clusters.lab.poll_interval: ...``). Values with a unit (durations, rates) are read by
:mod:`schedulerd.units` first, for the fields whose type says so (``Seconds``, ``Rate``).
The rules that tie keys together (local-cluster defaults, ``host`` and ``workdir``
required for a head, ``max_buffered_bytes >= max_message_bytes``) come after decoding.
"""

from __future__ import annotations

import functools
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

import msgspec

from schedulerd.errors import ConfigError
from schedulerd.units import parse_duration, parse_rate

Scheduler = Literal["pbspro", "torque", "lsf", "htcondor", "slurm", "local"]
SCHEDULERS: tuple[str, ...] = get_args(Scheduler)


@dataclass(frozen=True, slots=True)
class _ReadUnit:
    """Marks a field whose value is written with a unit: ``read`` turns it into the
    field's type before decoding (and names the field in its error)."""

    read: Callable[..., object]


Seconds = Annotated[float, _ReadUnit(parse_duration)]
Rate = Annotated[tuple[int, float], _ReadUnit(parse_rate)]  # (count, period in seconds)
Positive = Annotated[int, msgspec.Meta(gt=0)]


class ClusterConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One ``[clusters.<name>]`` table, decoded and completed."""

    name: str  # the table's name, not a key of it
    scheduler: Scheduler
    host: str | None = None
    port: Positive = 22
    user: str | None = None
    identity_file: str | None = None
    known_hosts: str | None = None
    accept_unknown_host_keys: bool = False
    jump_host: str | None = None
    workdir: str = ""
    default_queue: str | None = None
    account: str | None = None
    max_jobs: Positive = 1000
    poll_interval: Seconds = 30.0
    submit_rate: Rate | None = None
    submit_batch: Positive = 100
    # a job the head refused for a passing reason (a queued-jobs limit, a busy server)
    # waits this long before it is offered again; a round the head refused whole pauses
    # the cluster's submits this long, doubling per further such round (at most 10 min)
    refusal_pause: Seconds = 30.0
    exit_read_timeout: Seconds = 300.0
    command_timeout: Seconds = 120.0
    max_channels: Positive = 8
    connect_timeout: Seconds = 15.0
    keepalive_interval: Seconds = 30.0
    transport: Literal["ssh", "local"] = "ssh"

    @property
    def is_local_transport(self) -> bool:
        return self.transport == "local" or self.host in (None, "", "localhost")


#: what a local cluster has unless its table says otherwise (``transport`` is always local)
_LOCAL_DEFAULTS: dict[str, object] = {
    "poll_interval": 1.0,
    "exit_read_timeout": 30.0,
}


class LimitsTable(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``[limits]``."""

    max_active: Positive | None = None  # submitting + queued + running, all clusters together


class ConfigFile(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The top level of the file, as written (paths not yet expanded)."""

    state_dir: str | None = None
    socket: str | None = None
    socket_group: str | None = None
    max_message_bytes: Annotated[int, msgspec.Meta(ge=1024)] = 64 * 1024 * 1024
    max_buffered_bytes: int | None = None  # default: max(256 MiB, max_message_bytes)
    limits: LimitsTable = LimitsTable()
    clusters: dict[str, Any] | None = None  # each table decoded on its own, as ClusterConfig
    retry_base: Seconds = 30.0
    log_level: str = "info"
    outputs_dir: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    state_dir: Path
    socket_path: Path
    config_path: Path | None
    clusters: dict[str, ClusterConfig]
    max_active: int | None = None  # all clusters together
    socket_group: str | None = None
    max_message_bytes: int = 64 * 1024 * 1024
    # unfinished request lines buffered across ALL connections: many clients each
    # sending half of a big line cannot take the daemon's memory with them
    max_buffered_bytes: int = 256 * 1024 * 1024
    retry_base: float = 30.0
    log_level: str = "info"
    outputs_dir: Path | None = None  # staged-out job outputs; default <state_dir>/outputs

    @property
    def database_path(self) -> Path:
        return self.state_dir / "schedulerd.sqlite3"

    @property
    def outputs_path(self) -> Path:
        """Where job outputs are downloaded to: ``<this>/<job id>/<attempt>/``."""
        return self.outputs_dir if self.outputs_dir is not None else self.state_dir / "outputs"


def default_state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(
        os.path.expanduser("~"), ".local", "state"
    )
    return Path(base) / "schedulerd"


def default_socket_path(state_dir: Path) -> Path:
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isdir(runtime):
        return Path(runtime) / "schedulerd" / "schedulerd.sock"
    return state_dir / "schedulerd.sock"


# --- decoding one table --------------------------------------------------------------------


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return get_type_hints(cls, include_extras=True)


def _unit_reader(tp: Any) -> Callable[..., object] | None:
    """The unit reader a field's type carries (also inside ``X | None``), if any."""
    if get_origin(tp) is Annotated:
        return next((m.read for m in tp.__metadata__ if isinstance(m, _ReadUnit)), None)
    if get_origin(tp) is Union:
        return next(filter(None, map(_unit_reader, get_args(tp))), None)
    return None


def _choices(tp: Any) -> tuple[object, ...]:
    """The values a ``Literal`` field may take (also inside ``Annotated`` or ``X | None``)."""
    if get_origin(tp) is Literal:
        return get_args(tp)
    if get_origin(tp) in (Annotated, Union):
        return tuple(c for arg in get_args(tp) for c in _choices(arg))
    return ()


def _at(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _prepare(
    cls: type[msgspec.Struct],
    raw: Mapping[str, Any],
    where: str,
    reserved: frozenset[str] = frozenset(),
) -> dict[str, Any]:
    """Refuse unknown keys (all of them, by name; ``reserved`` fields are not keys) and
    read the values with a unit; the tables nested in this one are prepared too."""
    hints = _hints(cls)
    unknown = set(raw) - (set(cls.__struct_fields__) - reserved)
    if unknown:
        keys = ", ".join(sorted(unknown))
        raise ConfigError(
            f"{where}: unknown key(s) {keys}" if where else f"unknown top-level key(s) {keys}"
        )
    values = dict(raw)
    for key, value in raw.items():
        tp = hints[key]
        reader = _unit_reader(tp)
        if reader is not None and value is not None:
            values[key] = reader(value, what=_at(where, key))
        elif isinstance(tp, type) and issubclass(tp, msgspec.Struct) and isinstance(value, dict):
            values[key] = _prepare(tp, value, _at(where, key))
    return values


_Table = TypeVar("_Table", bound=msgspec.Struct)


def _decode(cls: type[_Table], raw: Any, where: str, **fixed: object) -> _Table:
    """One table of the file as ``cls``; ``fixed`` are fields that are not keys of the
    table (a cluster's name). Errors say which key, what was expected and what was found."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected table, got {_kind(raw)} {raw!r}")
    values = _prepare(cls, raw, where, frozenset(fixed))
    try:
        return msgspec.convert({**values, **fixed}, cls)
    except msgspec.ValidationError as exc:
        raise ConfigError(_explain(str(exc), cls, values, where)) from exc


_AT_PATH = re.compile(r"(?P<text>.*?)(?: - at `\$(?P<path>[^`]*)`)?", re.DOTALL)
_PATH_STEP = re.compile(r"\.([^.\[]+)|\[(\d+)\]")
_TYPE_NAMES = {"object": "table", "array": "array", "str": "string", "int": "integer",
               "float": "float", "bool": "boolean"}  # fmt: skip


def _kind(value: object) -> str:
    """What TOML calls the type of a decoded value."""
    if isinstance(value, dict):
        return "table"
    if isinstance(value, list | tuple):
        return "array"
    return _TYPE_NAMES.get(type(value).__name__, type(value).__name__)


def _expected(names: str) -> str:
    """msgspec's ``str | null`` as TOML says it: ``string`` (TOML has no null)."""
    parts = [p.strip() for p in names.split("|") if p.strip() != "null"]
    return " or ".join(_TYPE_NAMES.get(p, p) for p in parts)


def _explain(message: str, cls: type[msgspec.Struct], values: Mapping[str, Any], where: str) -> str:
    """A msgspec validation error in the config's words: ``<key path>: <what is wrong>``."""
    match = _AT_PATH.fullmatch(message)
    assert match is not None  # the pattern matches any text
    text, path = match["text"], match["path"] or ""
    steps = [key or int(index) for key, index in _PATH_STEP.findall(path)]
    if missing := re.fullmatch(r"Object missing required field `(.+)`", text):
        steps.append(missing[1])
    found: Any = values
    for step in steps:
        if isinstance(found, dict):
            found = found.get(step)
        elif isinstance(found, list | tuple) and isinstance(step, int) and step < len(found):
            found = found[step]
        else:
            found = None
    choices = _choices(_hints(cls).get(str(steps[0]))) if steps else ()
    full = where
    for step in steps:
        full = f"{full}[{step}]" if isinstance(step, int) else _at(full, step)
    if missing:
        detail = "required"
        if choices:
            detail += f" (one of {', '.join(map(str, choices))})"
    elif text.startswith("Invalid enum value"):
        detail = f"{found!r} is not one of {', '.join(map(str, choices))}"
    elif bound := re.fullmatch(r"Expected `\w+` >= (\d+)", text):
        least = int(bound[1])
        detail = "must be positive" if least == 1 else f"must be at least {least}"
        detail += f", got {found!r}"
    elif types := re.fullmatch(r"Expected `([^`]+)`, got `[^`]+`", text):
        detail = f"expected {_expected(types[1])}, got {_kind(found)} {found!r}"
    else:
        detail = text[:1].lower() + text[1:]
    return f"{full}: {detail}" if full else detail


# --- the whole file ------------------------------------------------------------------------


def _cluster(name: str, raw: Any, state_dir: Path) -> ClusterConfig:
    where = f"clusters.{name}"
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
        raise ConfigError(f"{where}: cluster names use letters, digits, '_', '.', '-'")
    cluster = _decode(ClusterConfig, raw, where, name=name)
    given = set(raw)
    if cluster.scheduler == "local":
        defaults = {
            **_LOCAL_DEFAULTS,
            "workdir": str(state_dir / "jobs"),
            "max_jobs": os.cpu_count() or 1,  # slots: one per core, as by default
        }
        unset = {key: value for key, value in defaults.items() if key not in given}
        cluster = msgspec.structs.replace(cluster, transport="local", **unset)
    elif not cluster.workdir:
        raise ConfigError(f"{where}.workdir: required (job directories live there, on the head)")
    if cluster.scheduler != "local" and not cluster.host and cluster.transport != "local":
        raise ConfigError(f'{where}.host: required for ssh (or set transport = "local")')
    paths: dict[str, str] = {
        key: os.path.expanduser(value)
        for key in ("identity_file", "known_hosts")
        if (value := getattr(cluster, key))
    }
    if cluster.transport == "local" and cluster.workdir:
        # on this machine: ~ means our home; on a remote head the head's shell decides
        paths["workdir"] = os.path.abspath(os.path.expanduser(cluster.workdir))
    return msgspec.structs.replace(cluster, **paths) if paths else cluster


def embedded_default(state_dir: Path) -> dict[str, Any]:
    return {
        "clusters": {
            "local": {"scheduler": "local", "max_jobs": os.cpu_count() or 1},
        }
    }


def _read_file(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text())
    except FileNotFoundError as exc:
        raise ConfigError(f"config file {path} does not exist") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path}: {exc}") from exc
    except OSError as exc:
        raise ConfigError(f"config file {path}: {exc.strerror}") from exc


def load_settings(
    *,
    config: str | os.PathLike[str] | None = None,
    state_dir: str | os.PathLike[str] | None = None,
    socket: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Build settings from flags (arguments), environment, config file and defaults."""
    env = os.environ if environ is None else environ
    config_path = config or env.get("SCHEDULERD_CONFIG") or None
    path = Path(config_path).expanduser() if config_path else None
    file = _decode(ConfigFile, _read_file(path) if path else {}, "")

    chosen_state = state_dir or env.get("SCHEDULERD_STATE_DIR") or file.state_dir
    sdir = Path(os.path.expanduser(str(chosen_state))) if chosen_state else default_state_dir()
    chosen_socket = socket or env.get("SCHEDULERD_SOCKET") or file.socket
    spath = (
        Path(os.path.expanduser(str(chosen_socket))) if chosen_socket else default_socket_path(sdir)
    )

    tables = file.clusters if file.clusters is not None else embedded_default(sdir)["clusters"]
    if not tables:
        raise ConfigError("clusters: at least one cluster must be configured")
    clusters = {name: _cluster(name, table, sdir) for name, table in tables.items()}

    max_bytes = file.max_message_bytes
    max_buffered = file.max_buffered_bytes
    if max_buffered is None:
        max_buffered = max(256 * 1024 * 1024, max_bytes)
    elif max_buffered < max_bytes:
        raise ConfigError(
            f"max_buffered_bytes: must be at least max_message_bytes ({max_bytes}), got {max_buffered}"
        )
    outputs_dir = None
    if file.outputs_dir is not None:
        if not file.outputs_dir or "\0" in file.outputs_dir:
            raise ConfigError("outputs_dir: not a valid path")
        outputs_dir = Path(os.path.abspath(os.path.expanduser(file.outputs_dir)))
    return Settings(
        state_dir=sdir,
        socket_path=spath,
        config_path=path,
        clusters=clusters,
        max_active=file.limits.max_active,
        socket_group=file.socket_group,
        max_message_bytes=max_bytes,
        max_buffered_bytes=max_buffered,
        retry_base=file.retry_base,
        log_level=file.log_level,
        outputs_dir=outputs_dir,
    )
