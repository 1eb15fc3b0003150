"""Durations, sizes and rates (schedulerd.units): examples and property tests."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from schedulerd.errors import ConfigError
from schedulerd.units import parse_duration, parse_memory_mb, parse_rate

small = st.integers(min_value=0, max_value=10_000)


# --- durations -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        (90, 90.0),
        (1.5, 1.5),
        ("90", 90.0),
        ("2.5", 2.5),
        ("90s", 90.0),
        ("5m", 300.0),
        ("1h30m", 5400.0),
        ("2d", 172800.0),
        ("1.5h", 5400.0),
        (" 5M ", 300.0),
        ("01:30:00", 5400.0),
        ("1:30", 90.0),
        ("2-01:00:00", 2 * 86400 + 3600.0),
        ("0", 0.0),
    ],
)
def test_durations_people_write(text: str | float, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("soon", "walltime: cannot read 'soon' as a duration (e.g. 90s"),
        ("", "walltime: cannot read '' as a duration"),
        ("5m 3s", "walltime: cannot read '5m 3s' as a duration"),
        ("5x", "walltime: cannot read '5x' as a duration"),
        (-1, "walltime: must not be negative"),
        (True, "walltime: expected a duration, got True"),
        (math.inf, "walltime: inf is not a finite duration"),
        (math.nan, "walltime: nan is not a finite duration"),
        ("9" * 400, "is not a finite duration"),
        ("9" * 400 + ":00", "is not a finite duration"),
        (10**400, "is not a finite duration"),
    ],
)
def test_unreadable_durations_say_what_and_why(value: object, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_duration(value, what="walltime")  # type: ignore[arg-type]
    assert message in caught.value.message


@given(st.tuples(small, small, small, small), st.booleans())
def test_a_duration_written_in_parts_is_their_sum(
    parts: tuple[int, int, int, int], upper: bool
) -> None:
    days, hours, minutes, seconds = parts
    text = f"{days}d{hours}h{minutes}m{seconds}s"
    expected = days * 86400 + hours * 3600 + minutes * 60 + seconds
    assert parse_duration(text.upper() if upper else text) == expected


@given(small, st.integers(0, 59), st.integers(0, 59), st.integers(0, 99))
def test_a_clock_duration_is_read_as_the_batch_systems_print_it(
    hours: int, minutes: int, seconds: int, days: int
) -> None:
    clock = f"{hours:02d}:{minutes:02d}:{seconds:02d}"
    assert parse_duration(clock) == hours * 3600 + minutes * 60 + seconds
    assert parse_duration(f"{days}-{clock}") == days * 86400 + hours * 3600 + minutes * 60 + seconds


@given(st.one_of(st.integers(min_value=0), st.floats(min_value=0, allow_infinity=False)))
def test_a_number_is_seconds(value: float) -> None:
    assert parse_duration(value) == float(value)


@given(st.one_of(st.text(), st.integers(), st.floats(), st.booleans()))
def test_any_value_is_a_finite_duration_or_a_config_error(value: str | float) -> None:
    try:
        seconds = parse_duration(value, what="x")
    except ConfigError as exc:
        assert exc.message.startswith("x: ")
    else:
        assert math.isfinite(seconds) and seconds >= 0


# --- sizes ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "mb"),
    [
        (4096, 4096),
        ("4096", 4096),
        ("512M", 512),
        ("512 MB", 512),
        ("4G", 4096),
        ("2GiB", 2048),
        ("1t", 1024 * 1024),
        ("1.5G", 1536),
        ("1K", 1),  # rounded up: a job never gets less than it asked for
        ("1536K", 2),
    ],
)
def test_sizes_people_write(text: str | int, mb: int) -> None:
    assert parse_memory_mb(text) == mb


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("lots", "memory: cannot read 'lots' as a size (e.g. 512M, 4G)"),
        ("4X", "memory: cannot read '4X' as a size"),
        (0, "memory: must be positive"),
        (-5, "memory: must be positive"),
        ("0G", "memory: must be positive"),
        (True, "memory: expected a size, got True"),
        ("9" * 400 + "G", "is too large"),
    ],
)
def test_unreadable_sizes_say_what_and_why(value: object, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_memory_mb(value)  # type: ignore[arg-type]
    assert message in caught.value.message


@given(st.integers(min_value=1, max_value=10**9), st.sampled_from(["", "M", "MB", "MiB", "m"]))
def test_a_size_in_megabytes_is_itself(n: int, unit: str) -> None:
    assert parse_memory_mb(f"{n}{unit}") == n


@given(st.integers(min_value=1, max_value=10**6), st.sampled_from(["G", "GB", "GiB", "g"]))
def test_a_size_in_gigabytes_is_1024_megabytes_each(n: int, unit: str) -> None:
    assert parse_memory_mb(f"{n}{unit}") == n * 1024


@given(st.integers(min_value=1, max_value=10**9))
def test_a_size_in_kilobytes_is_rounded_up_to_whole_megabytes(n: int) -> None:
    assert parse_memory_mb(f"{n}K") == math.ceil(n / 1024)


@given(st.one_of(st.text(), st.integers(), st.booleans()))
def test_any_value_is_a_positive_size_or_a_config_error(value: str | int) -> None:
    try:
        mb = parse_memory_mb(value, what="x")
    except ConfigError as exc:
        assert exc.message.startswith("x: ")
    else:
        assert isinstance(mb, int) and mb > 0


# --- rates ---------------------------------------------------------------------------------


def test_rates_people_write() -> None:
    assert parse_rate("50/1m") == (50, 60.0)
    assert parse_rate("1/2h30m") == (1, 9000.0)
    assert parse_rate("10/30") == (10, 30.0)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("50", "submit_rate: expected COUNT/PERIOD such as 50/1m, got '50'"),
        ("0/1m", "submit_rate: expected COUNT/PERIOD"),
        ("-3/1m", "submit_rate: expected COUNT/PERIOD"),
        ("many/1m", "submit_rate: expected COUNT/PERIOD"),
        ("5/0s", "submit_rate: the period must be positive"),
        ("5/soon", "submit_rate: cannot read 'soon' as a duration"),
    ],
)
def test_unreadable_rates_say_what_and_why(value: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_rate(value)
    assert message in caught.value.message


@given(st.integers(min_value=1, max_value=10**6), st.integers(min_value=1, max_value=10**6))
def test_a_rate_is_a_count_per_period(count: int, seconds: int) -> None:
    assert parse_rate(f"{count}/{seconds}s") == (count, float(seconds))


@given(st.text())
def test_any_text_is_a_rate_or_a_config_error(value: str) -> None:
    try:
        count, period = parse_rate(value, what="x")
    except ConfigError as exc:
        assert exc.message.startswith("x: ")
    else:
        assert count > 0 and period > 0 and math.isfinite(period)
