"""Configuration: TOML file, environment and flags, with an embedded default.

Precedence for the three paths: flag > environment (``SCHEDULERD_CONFIG``,
``SCHEDULERD_STATE_DIR``, ``SCHEDULERD_SOCKET``) > config file > default. With no
config file the daemon runs one cluster ``local`` with one slot per core.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from schedulerd.errors import ConfigError

SCHEDULERS = ("pbspro", "torque", "lsf", "htcondor", "slurm", "local")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)([smhd])")
_MEMORY = re.compile(r"(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?", re.IGNORECASE)


def parse_duration(value: str | float, *, what: str = "duration") -> float:
    """``90``, ``"90s"``, ``"5m"``, ``"1h30m"``, ``"2d"`` or ``"HH:MM:SS"`` -> seconds."""
    if isinstance(value, bool):
        raise ConfigError(f"{what}: expected a duration, got {value!r}")
    if isinstance(value, int | float):
        if value < 0:
            raise ConfigError(f"{what}: must not be negative")
        return float(value)
    text = str(value).strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    if re.fullmatch(r"(\d+-)?\d+(:\d{1,2}){1,2}", text):
        days = 0
        if "-" in text:
            d, text = text.split("-", 1)
            days = int(d)
        parts = [int(p) for p in text.split(":")]
        while len(parts) < 3:
            parts.insert(0, 0)
        h, m, s = parts
        return float(days * 86400 + h * 3600 + m * 60 + s)
    pos = 0
    total = 0.0
    for match in _DURATION_PART.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    if pos != len(text) or not text:
        raise ConfigError(f"{what}: cannot read {value!r} as a duration (e.g. 90s, 5m, 1h30m, 2d, 01:30:00)")
    return total


def parse_memory_mb(value: str | int, *, what: str = "memory") -> int:
    """``4096`` (MB), ``"4G"``, ``"512M"``, ``"2GiB"`` -> megabytes."""
    if isinstance(value, bool):
        raise ConfigError(f"{what}: expected a size, got {value!r}")
    if isinstance(value, int):
        if value <= 0:
            raise ConfigError(f"{what}: must be positive")
        return value
    match = _MEMORY.fullmatch(str(value).strip())
    if not match:
        raise ConfigError(f"{what}: cannot read {value!r} as a size (e.g. 512M, 4G)")
    number = float(match.group(1))
    unit = match.group(2).upper() or "M"
    factor = {"K": 1 / 1024, "M": 1, "G": 1024, "T": 1024 * 1024}[unit]
    mb = int(number * factor + 0.999999)
    if mb <= 0:
        raise ConfigError(f"{what}: must be positive")
    return mb


def parse_rate(value: str, *, what: str = "submit_rate") -> tuple[int, float]:
    """``"50/1m"`` -> (50, 60.0): at most 50 submissions per 60 seconds."""
    count, sep, period = str(value).partition("/")
    try:
        n = int(count)
    except ValueError:
        n = -1
    if not sep or n <= 0:
        raise ConfigError(f"{what}: expected COUNT/PERIOD such as 50/1m, got {value!r}")
    seconds = parse_duration(period, what=what)
    if seconds <= 0:
        raise ConfigError(f"{what}: the period must be positive")
    return n, seconds


@dataclass(frozen=True, slots=True, kw_only=True)
class ClusterConfig:
    name: str
    scheduler: str
    host: str | None = None
    port: int = 22
    user: str | None = None
    identity_file: str | None = None
    known_hosts: str | None = None
    accept_unknown_host_keys: bool = False
    jump_host: str | None = None
    workdir: str = ""
    default_queue: str | None = None
    account: str | None = None
    max_jobs: int = 1000
    poll_interval: float = 30.0
    submit_rate: tuple[int, float] | None = None
    submit_batch: int = 100
    # a job the head refused for a passing reason (a queued-jobs limit, a busy server)
    # waits this long before it is offered again; a round the head refused whole pauses
    # the cluster's submits this long, doubling per further such round (at most 10 min)
    refusal_pause: float = 30.0
    exit_read_timeout: float = 300.0
    command_timeout: float = 120.0
    max_channels: int = 8
    connect_timeout: float = 15.0
    keepalive_interval: float = 30.0
    transport: str = "ssh"  # ssh | local

    @property
    def is_local_transport(self) -> bool:
        return self.transport == "local" or self.host in (None, "", "localhost")


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
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def database_path(self) -> Path:
        return self.state_dir / "schedulerd.sqlite3"

    @property
    def outputs_path(self) -> Path:
        """Where job outputs are downloaded to: ``<this>/<job id>/<attempt>/``."""
        return self.outputs_dir if self.outputs_dir is not None else self.state_dir / "outputs"


_CLUSTER_KEYS = {
    "scheduler", "host", "port", "user", "identity_file", "known_hosts",
    "accept_unknown_host_keys", "jump_host", "workdir", "default_queue", "account",
    "max_jobs", "poll_interval", "submit_rate", "submit_batch", "exit_read_timeout",
    "command_timeout", "max_channels", "connect_timeout", "keepalive_interval", "transport",
    "refusal_pause",
}  # fmt: skip
_TOP_KEYS = {"state_dir", "socket", "socket_group", "max_message_bytes", "max_buffered_bytes",
             "limits", "clusters",
             "retry_base", "log_level", "outputs_dir"}  # fmt: skip
_LIMIT_KEYS = {"max_active"}


def default_state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(base) / "schedulerd"


def default_socket_path(state_dir: Path) -> Path:
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isdir(runtime):
        return Path(runtime) / "schedulerd" / "schedulerd.sock"
    return state_dir / "schedulerd.sock"


def _expect(kind: type | tuple[type, ...], value: Any, where: str) -> Any:
    if isinstance(value, bool) and kind is not bool:
        raise ConfigError(f"{where}: expected {getattr(kind, '__name__', kind)}, got a boolean")
    if not isinstance(value, kind):
        name = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        raise ConfigError(f"{where}: expected {name}, got {type(value).__name__} {value!r}")
    return value


def _cluster(name: str, raw: Any, state_dir: Path) -> ClusterConfig:
    where = f"clusters.{name}"
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
        raise ConfigError(f"{where}: cluster names use letters, digits, '_', '.', '-'")
    _expect(dict, raw, where)
    unknown = set(raw) - _CLUSTER_KEYS
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
    scheduler = _expect(str, raw.get("scheduler", ""), f"{where}.scheduler")
    if scheduler not in SCHEDULERS:
        raise ConfigError(f"{where}.scheduler: {scheduler!r} is not one of {', '.join(SCHEDULERS)}")
    values: dict[str, Any] = {"name": name, "scheduler": scheduler}
    for key in ("host", "user", "identity_file", "known_hosts", "jump_host", "workdir",
                "default_queue", "account", "transport"):  # fmt: skip
        if key in raw:
            values[key] = _expect(str, raw[key], f"{where}.{key}")
    for key in ("port", "max_jobs", "submit_batch", "max_channels"):
        if key in raw:
            number = _expect(int, raw[key], f"{where}.{key}")
            if number <= 0:
                raise ConfigError(f"{where}.{key}: must be positive")
            values[key] = number
    for key in ("poll_interval", "exit_read_timeout", "command_timeout", "connect_timeout",
                "keepalive_interval", "refusal_pause"):  # fmt: skip
        if key in raw:
            values[key] = parse_duration(
                _expect((str, int, float), raw[key], f"{where}.{key}"), what=f"{where}.{key}"
            )
    if "accept_unknown_host_keys" in raw:
        values["accept_unknown_host_keys"] = _expect(bool, raw["accept_unknown_host_keys"], where)
    if "submit_rate" in raw:
        values["submit_rate"] = parse_rate(raw["submit_rate"], what=f"{where}.submit_rate")
    if values.get("transport", "ssh") not in ("ssh", "local"):
        raise ConfigError(f"{where}.transport: must be ssh or local")
    if scheduler == "local":
        values.setdefault("workdir", str(state_dir / "jobs"))
        values.setdefault("poll_interval", 1.0)
        values.setdefault("exit_read_timeout", 30.0)
        values.setdefault("max_jobs", os.cpu_count() or 1)  # slots: one per core, as by default
        values["transport"] = "local"
    elif not values.get("workdir"):
        raise ConfigError(f"{where}.workdir: required (job directories live there, on the head)")
    if scheduler != "local" and not values.get("host") and values.get("transport") != "local":
        raise ConfigError(f"{where}.host: required for ssh (or set transport = \"local\")")
    for key in ("identity_file", "known_hosts"):
        if values.get(key):
            values[key] = os.path.expanduser(values[key])
    if values.get("transport") == "local" and values.get("workdir"):
        # on this machine: ~ means our home; on a remote head the head's shell decides
        values["workdir"] = os.path.abspath(os.path.expanduser(values["workdir"]))
    return ClusterConfig(**values)


def embedded_default(state_dir: Path) -> dict[str, Any]:
    return {
        "clusters": {
            "local": {"scheduler": "local", "max_jobs": os.cpu_count() or 1},
        }
    }


def load_settings(
    *,
    config: str | os.PathLike[str] | None = None,
    state_dir: str | os.PathLike[str] | None = None,
    socket: str | os.PathLike[str] | None = None,
    environ: dict[str, str] | None = None,
) -> Settings:
    """Build settings from flags (arguments), environment, config file and defaults."""
    env = os.environ if environ is None else environ
    config_path = config or env.get("SCHEDULERD_CONFIG") or None
    raw: dict[str, Any]
    if config_path:
        path = Path(config_path).expanduser()
        try:
            raw = tomllib.loads(path.read_text())
        except FileNotFoundError as exc:
            raise ConfigError(f"config file {path} does not exist") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path}: {exc}") from exc
        except OSError as exc:
            raise ConfigError(f"config file {path}: {exc.strerror}") from exc
    else:
        path = None
        raw = {}
    unknown = set(raw) - _TOP_KEYS
    if unknown:
        raise ConfigError(f"unknown top-level key(s) {', '.join(sorted(unknown))}")

    chosen_state = state_dir or env.get("SCHEDULERD_STATE_DIR") or raw.get("state_dir")
    sdir = Path(os.path.expanduser(str(chosen_state))) if chosen_state else default_state_dir()
    chosen_socket = socket or env.get("SCHEDULERD_SOCKET") or raw.get("socket")
    spath = Path(os.path.expanduser(str(chosen_socket))) if chosen_socket else default_socket_path(sdir)

    clusters_raw = raw.get("clusters")
    if clusters_raw is None:
        clusters_raw = embedded_default(sdir)["clusters"]
    _expect(dict, clusters_raw, "clusters")
    if not clusters_raw:
        raise ConfigError("clusters: at least one cluster must be configured")
    clusters = {name: _cluster(name, value, sdir) for name, value in clusters_raw.items()}

    limits = _expect(dict, raw.get("limits", {}), "limits")
    unknown = set(limits) - _LIMIT_KEYS
    if unknown:
        raise ConfigError(f"limits: unknown key(s) {', '.join(sorted(unknown))}")
    max_active = limits.get("max_active")
    if max_active is not None and (_expect(int, max_active, "limits.max_active") <= 0):
        raise ConfigError("limits.max_active: must be positive")

    max_bytes = _expect(int, raw.get("max_message_bytes", 64 * 1024 * 1024), "max_message_bytes")
    if max_bytes < 1024:
        raise ConfigError("max_message_bytes: must be at least 1024")
    max_buffered = _expect(int, raw.get("max_buffered_bytes", max(256 * 1024 * 1024, max_bytes)),
                           "max_buffered_bytes")  # fmt: skip
    if max_buffered < max_bytes:
        raise ConfigError(
            f"max_buffered_bytes: must be at least max_message_bytes ({max_bytes}), got {max_buffered}"
        )
    group = raw.get("socket_group")
    if group is not None:
        _expect(str, group, "socket_group")
    retry_base = parse_duration(raw.get("retry_base", 30), what="retry_base")
    outputs_dir = None
    if raw.get("outputs_dir") is not None:
        text = _expect(str, raw["outputs_dir"], "outputs_dir")
        if not text or "\0" in text:
            raise ConfigError("outputs_dir: not a valid path")
        outputs_dir = Path(os.path.abspath(os.path.expanduser(text)))
    return Settings(
        state_dir=sdir,
        socket_path=spath,
        config_path=path,
        clusters=clusters,
        max_active=max_active,
        socket_group=group,
        max_message_bytes=max_bytes,
        max_buffered_bytes=max_buffered,
        retry_base=retry_base,
        log_level=str(raw.get("log_level", "info")),
        outputs_dir=outputs_dir,
    )
