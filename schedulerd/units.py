"""Values with a unit, as people write them: durations, sizes and rates.

Pure functions, no I/O. Each takes what it reads (``what``, e.g. ``"walltime"`` or
``"clusters.lab.poll_interval"``) only to name it in its error: a value that cannot be
read raises :class:`~schedulerd.errors.ConfigError` whose message starts with ``what``.
The configuration, the job specs and ``schedctl`` all read their units here.
"""

from __future__ import annotations

import math
import re

from schedulerd.errors import ConfigError

#: seconds per unit of a duration
DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
#: megabytes per unit of a size (no unit: megabytes)
SIZE_UNITS = {"K": 1 / 1024, "M": 1, "G": 1024, "T": 1024 * 1024}

_NUMBER = re.compile(r"\d+(\.\d+)?")
_CLOCK = re.compile(r"(\d+-)?\d+(:\d{1,2}){1,2}")  # [D-]HH:MM[:SS], as the batch systems print
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)([smhd])")
_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?", re.IGNORECASE)
_DURATION_EXAMPLES = "e.g. 90s, 5m, 1h30m, 2d, 01:30:00"


def parse_duration(value: str | float, *, what: str = "duration") -> float:
    """``90``, ``"90s"``, ``"5m"``, ``"1h30m"``, ``"2d"`` or ``"[D-]HH:MM:SS"`` -> seconds
    (never negative, always finite)."""
    if isinstance(value, bool):
        raise ConfigError(f"{what}: expected a duration, got {value!r}")
    if isinstance(value, int | float) and value < 0:
        raise ConfigError(f"{what}: must not be negative")
    try:
        if isinstance(value, int | float):
            seconds = float(value)
        else:
            seconds = _text_seconds(str(value).strip().lower(), value, what)
    except OverflowError:  # an integer too large for a float
        seconds = math.inf
    if not math.isfinite(seconds):
        raise ConfigError(f"{what}: {value!r} is not a finite duration")
    return seconds


def _text_seconds(text: str, value: object, what: str) -> float:
    if _NUMBER.fullmatch(text):
        return float(text)
    if _CLOCK.fullmatch(text):
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
        total += float(match.group(1)) * DURATION_UNITS[match.group(2)]
        pos = match.end()
    if pos != len(text) or not text:
        raise ConfigError(f"{what}: cannot read {value!r} as a duration ({_DURATION_EXAMPLES})")
    return total


def parse_memory_mb(value: str | int, *, what: str = "memory") -> int:
    """``4096`` (MB), ``"4G"``, ``"512M"``, ``"2GiB"`` -> megabytes, rounded up (positive)."""
    if isinstance(value, bool):
        raise ConfigError(f"{what}: expected a size, got {value!r}")
    if isinstance(value, int):
        if value <= 0:
            raise ConfigError(f"{what}: must be positive")
        return value
    match = _SIZE.fullmatch(str(value).strip())
    if not match:
        raise ConfigError(f"{what}: cannot read {value!r} as a size (e.g. 512M, 4G)")
    megabytes = float(match.group(1)) * SIZE_UNITS[match.group(2).upper() or "M"]
    if not math.isfinite(megabytes):
        raise ConfigError(f"{what}: {value!r} is too large")
    mb = int(megabytes + 0.999999)
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
