"""Configuration: defaults and errors of schedulerd.config."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from schedulerd.config import load_settings
from schedulerd.errors import ConfigError


def _settings(tmp_path: Path, text: str):  # type: ignore[no-untyped-def]
    path = tmp_path / "schedulerd.toml"
    path.write_text(text)
    return load_settings(config=path, state_dir=tmp_path / "state", socket=tmp_path / "s", environ={})


def test_a_local_cluster_without_max_jobs_has_one_slot_per_core(tmp_path: Path) -> None:
    settings = _settings(tmp_path, '[clusters.mine]\nscheduler = "local"\n')
    assert settings.clusters["mine"].max_jobs == (os.cpu_count() or 1)
    assert _settings(tmp_path, '[clusters.mine]\nscheduler = "local"\nmax_jobs = 7\n').clusters["mine"].max_jobs == 7


def test_max_buffered_bytes_below_the_message_limit_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="max_buffered_bytes: must be at least max_message_bytes"):
        _settings(tmp_path, "max_message_bytes = 4096\nmax_buffered_bytes = 4000\n")
    settings = _settings(tmp_path, "max_message_bytes = 4096\nmax_buffered_bytes = 8192\n")
    assert settings.max_buffered_bytes == 8192
