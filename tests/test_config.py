"""Configuration: defaults, rules and errors of schedulerd.config."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from schedulerd.config import SCHEDULERS, Settings, load_settings
from schedulerd.errors import ConfigError

REPO = Path(__file__).resolve().parent.parent
LOCAL = '[clusters.x]\nscheduler = "local"\n'
SLURM = '[clusters.lab]\nscheduler = "slurm"\nhost = "login"\nworkdir = "/w"\n'


def _settings(tmp_path: Path, text: str) -> Settings:
    path = tmp_path / "schedulerd.toml"
    path.write_text(text)
    return load_settings(
        config=path, state_dir=tmp_path / "state", socket=tmp_path / "s", environ={}
    )


def _refused(tmp_path: Path, text: str) -> str:
    with pytest.raises(ConfigError) as caught:
        _settings(tmp_path, text)
    return caught.value.message


def test_the_example_config_loads(tmp_path: Path) -> None:
    example = REPO / "systemd" / "schedulerd.toml.example"
    settings = load_settings(config=example, state_dir=tmp_path / "state", environ={})
    assert settings.config_path == example
    assert settings.retry_base == 30.0 and settings.max_active == 2000
    local, lab = settings.clusters["local"], settings.clusters["lab"]
    assert (local.scheduler, local.max_jobs, local.transport) == ("local", 8, "local")
    assert (lab.scheduler, lab.host, lab.user, lab.transport) == (
        "slurm",
        "login.example.org",
        "alice",
        "ssh",
    )
    assert lab.identity_file == os.path.expanduser("~/.ssh/id_ed25519")
    assert lab.known_hosts == os.path.expanduser("~/.ssh/known_hosts")
    assert lab.workdir == "/scratch/alice/schedulerd"  # a head's path: not expanded here
    assert (lab.poll_interval, lab.exit_read_timeout, lab.refusal_pause) == (30.0, 300.0, 30.0)
    assert lab.submit_rate == (50, 60.0) and lab.default_queue == "short"
    assert not lab.is_local_transport and local.is_local_transport


def test_without_a_file_one_local_cluster_runs_with_one_slot_per_core(tmp_path: Path) -> None:
    settings = load_settings(state_dir=tmp_path / "state", socket=tmp_path / "s", environ={})
    assert list(settings.clusters) == ["local"]
    local = settings.clusters["local"]
    assert local.max_jobs == (os.cpu_count() or 1) and local.workdir == str(
        tmp_path / "state" / "jobs"
    )
    assert settings.config_path is None and settings.max_active is None
    assert settings.database_path == tmp_path / "state" / "schedulerd.sqlite3"
    assert settings.outputs_path == tmp_path / "state" / "outputs"


def test_a_local_cluster_without_max_jobs_has_one_slot_per_core(tmp_path: Path) -> None:
    settings = _settings(tmp_path, '[clusters.mine]\nscheduler = "local"\n')
    assert settings.clusters["mine"].max_jobs == (os.cpu_count() or 1)
    assert (
        _settings(tmp_path, '[clusters.mine]\nscheduler = "local"\nmax_jobs = 7\n')
        .clusters["mine"]
        .max_jobs
        == 7
    )


def test_a_local_cluster_has_its_own_defaults_unless_set(tmp_path: Path) -> None:
    local = _settings(tmp_path, LOCAL + 'transport = "ssh"\nhost = "far"\n').clusters["x"]
    assert (local.poll_interval, local.exit_read_timeout) == (1.0, 30.0)
    assert local.transport == "local" and local.is_local_transport  # always runs here
    assert local.workdir == str(tmp_path / "state" / "jobs")
    given = _settings(
        tmp_path, LOCAL + 'poll_interval = "2m"\nexit_read_timeout = 5\nworkdir = "~/j"\n'
    )
    local = given.clusters["x"]
    assert (local.poll_interval, local.exit_read_timeout) == (120.0, 5.0)
    assert local.workdir == os.path.join(os.path.expanduser("~"), "j")


def test_a_head_has_the_general_defaults(tmp_path: Path) -> None:
    lab = _settings(tmp_path, SLURM).clusters["lab"]
    assert (lab.port, lab.max_jobs, lab.submit_batch, lab.max_channels) == (22, 1000, 100, 8)
    assert (lab.poll_interval, lab.exit_read_timeout, lab.command_timeout) == (30.0, 300.0, 120.0)
    assert (lab.refusal_pause, lab.connect_timeout, lab.keepalive_interval) == (30.0, 15.0, 30.0)
    assert lab.submit_rate is None and lab.transport == "ssh" and not lab.accept_unknown_host_keys
    assert lab.workdir == "/w"


def test_durations_and_rates_take_their_units(tmp_path: Path) -> None:
    text = (
        SLURM
        + 'poll_interval = "1h30m"\nrefusal_pause = 45\ncommand_timeout = 2.5\nsubmit_rate = "10/30s"\n'
    )
    lab = _settings(tmp_path, text).clusters["lab"]
    assert (lab.poll_interval, lab.refusal_pause, lab.command_timeout) == (5400.0, 45.0, 2.5)
    assert type(lab.refusal_pause) is float and lab.submit_rate == (10, 30.0)
    assert _settings(tmp_path, 'retry_base = "2m"\n').retry_base == 120.0


def test_a_head_reached_locally_needs_no_host_and_its_workdir_is_expanded(tmp_path: Path) -> None:
    text = '[clusters.pbs]\nscheduler = "pbspro"\ntransport = "local"\nworkdir = "~/pbs"\n'
    pbs = _settings(tmp_path, text).clusters["pbs"]
    assert pbs.is_local_transport and pbs.host is None
    assert pbs.workdir == os.path.join(os.path.expanduser("~"), "pbs")
    text = '[clusters.lsf]\nscheduler = "lsf"\nhost = "localhost"\nworkdir = "~/lsf"\n'
    lsf = _settings(tmp_path, text).clusters["lsf"]
    # reached by ssh (to this machine): the head's shell decides what ~ is
    assert lsf.is_local_transport and lsf.workdir == "~/lsf"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[clusters.x]\nscheduler = "pbs"\n', f"clusters.x.scheduler: 'pbs' is not one of {', '.join(SCHEDULERS)}"),
        ('[clusters.x]\nhost = "h"\n', "clusters.x.scheduler: required (one of pbspro, torque"),
        ('[clusters.x]\nscheduler = 3\n', "clusters.x.scheduler: expected string, got integer 3"),
        ('[clusters.x]\nscheduler = "slurm"\nworkdir = "/w"\n',
         'clusters.x.host: required for ssh (or set transport = "local")'),
        ('[clusters.x]\nscheduler = "slurm"\nhost = "h"\n',
         "clusters.x.workdir: required (job directories live there, on the head)"),
        ('[clusters.x]\nscheduler = "slurm"\nhost = "h"\nworkdir = ""\n', "clusters.x.workdir: required"),
        (LOCAL + "max_jobs = 0\n", "clusters.x.max_jobs: must be positive, got 0"),
        (LOCAL + 'max_jobs = "many"\n', "clusters.x.max_jobs: expected integer, got string 'many'"),
        (LOCAL + "max_jobs = true\n", "clusters.x.max_jobs: expected integer, got boolean True"),
        (LOCAL + "port = -1\n", "clusters.x.port: must be positive, got -1"),
        (LOCAL + "port = 1.5\n", "clusters.x.port: expected integer, got float 1.5"),
        (LOCAL + "submit_batch = 0\n", "clusters.x.submit_batch: must be positive"),
        (LOCAL + "max_channels = 0\n", "clusters.x.max_channels: must be positive"),
        (LOCAL + 'poll_interval = "soon"\n', "clusters.x.poll_interval: cannot read 'soon' as a duration"),
        (LOCAL + "poll_interval = -1\n", "clusters.x.poll_interval: must not be negative"),
        (LOCAL + "poll_interval = true\n", "clusters.x.poll_interval: expected a duration, got True"),
        (LOCAL + "poll_interval = inf\n", "clusters.x.poll_interval: inf is not a finite duration"),
        (LOCAL + 'refusal_pause = "later"\n', "clusters.x.refusal_pause: cannot read 'later' as a duration"),
        (LOCAL + 'exit_read_timeout = "x"\n', "clusters.x.exit_read_timeout: cannot read 'x'"),
        (LOCAL + 'command_timeout = "x"\n', "clusters.x.command_timeout: cannot read 'x'"),
        (LOCAL + 'connect_timeout = "x"\n', "clusters.x.connect_timeout: cannot read 'x'"),
        (LOCAL + 'keepalive_interval = "x"\n', "clusters.x.keepalive_interval: cannot read 'x'"),
        (LOCAL + 'submit_rate = "50"\n', "clusters.x.submit_rate: expected COUNT/PERIOD such as 50/1m, got '50'"),
        (LOCAL + 'submit_rate = "5/0s"\n', "clusters.x.submit_rate: the period must be positive"),
        (LOCAL + 'transport = "telnet"\n', "clusters.x.transport: 'telnet' is not one of ssh, local"),
        (LOCAL + "host = 5\n", "clusters.x.host: expected string, got integer 5"),
        (LOCAL + "user = []\n", "clusters.x.user: expected string, got array []"),
        (LOCAL + "accept_unknown_host_keys = 1\n",
         "clusters.x.accept_unknown_host_keys: expected boolean, got integer 1"),
        (LOCAL + "max_job = 3\nfoo = 1\n", "clusters.x: unknown key(s) foo, max_job"),
        (LOCAL + 'name = "y"\n', "clusters.x: unknown key(s) name"),
        ('[clusters."a b"]\nscheduler = "local"\n', "clusters.a b: cluster names use letters, digits"),
        ("[clusters]\nx = 3\n", "clusters.x: expected table, got integer 3"),
        ("clusters = 3\n", "clusters: expected table, got integer 3"),
        ("clusters = {}\n", "clusters: at least one cluster must be configured"),
        ("bogus = 1\nzap = 2\n", "unknown top-level key(s) bogus, zap"),
        ("limits = 3\n", "limits: expected table, got integer 3"),
        ("[limits]\nmax_active = 0\n", "limits.max_active: must be positive, got 0"),
        ('[limits]\nmax_active = "x"\n', "limits.max_active: expected integer, got string 'x'"),
        ("[limits]\nmax_actve = 1\nmore = 2\n", "limits: unknown key(s) max_actve, more"),
        ("max_message_bytes = 100\n", "max_message_bytes: must be at least 1024, got 100"),
        ('max_message_bytes = "big"\n', "max_message_bytes: expected integer, got string 'big'"),
        ("max_message_bytes = 4096\nmax_buffered_bytes = 4000\n",
         "max_buffered_bytes: must be at least max_message_bytes (4096), got 4000"),
        ('max_buffered_bytes = "x"\n', "max_buffered_bytes: expected integer, got string 'x'"),
        ("socket_group = 5\n", "socket_group: expected string, got integer 5"),
        ('retry_base = "x"\n', "retry_base: cannot read 'x' as a duration"),
        ('outputs_dir = ""\n', "outputs_dir: not a valid path"),
        ('outputs_dir = "a\\u0000b"\n', "outputs_dir: not a valid path"),
        ("outputs_dir = 3\n", "outputs_dir: expected string, got integer 3"),
        ("log_level = 3\n", "log_level: expected string, got integer 3"),
        ("state_dir = 3\n", "state_dir: expected string, got integer 3"),
        ("socket = false\n", "socket: expected string, got boolean False"),
    ],
)  # fmt: skip
def test_a_bad_value_is_refused_with_its_key_and_why(
    tmp_path: Path, text: str, message: str
) -> None:
    assert _refused(tmp_path, text).startswith(message)


def test_the_first_bad_cluster_is_named(tmp_path: Path) -> None:
    text = SLURM + '[clusters.second]\nscheduler = "local"\nmax_jobs = -2\n'
    assert _refused(tmp_path, text) == "clusters.second.max_jobs: must be positive, got -2"


def test_max_buffered_bytes_below_the_message_limit_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="max_buffered_bytes: must be at least max_message_bytes"):
        _settings(tmp_path, "max_message_bytes = 4096\nmax_buffered_bytes = 4000\n")
    settings = _settings(tmp_path, "max_message_bytes = 4096\nmax_buffered_bytes = 8192\n")
    assert settings.max_buffered_bytes == 8192


def test_max_buffered_bytes_is_at_least_the_message_limit_by_default(tmp_path: Path) -> None:
    assert _settings(tmp_path, "").max_buffered_bytes == 256 * 1024 * 1024
    big = 300 * 1024 * 1024
    settings = _settings(tmp_path, f"max_message_bytes = {big}\n")
    assert (settings.max_message_bytes, settings.max_buffered_bytes) == (big, big)


def test_top_level_values(tmp_path: Path) -> None:
    text = 'socket_group = "hpc"\nlog_level = "debug"\noutputs_dir = "~/out"\n[limits]\nmax_active = 5\n'
    settings = _settings(tmp_path, text)
    assert (settings.socket_group, settings.log_level, settings.max_active) == ("hpc", "debug", 5)
    assert settings.outputs_dir == Path(os.path.expanduser("~/out"))
    assert settings.outputs_path == settings.outputs_dir


def test_paths_come_from_flag_then_environment_then_file(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text(f'state_dir = "{tmp_path}/file"\nsocket = "{tmp_path}/file.sock"\n')
    env = {"SCHEDULERD_CONFIG": str(config)}
    s = load_settings(environ=env)
    assert (s.config_path, s.state_dir, s.socket_path) == (
        config,
        tmp_path / "file",
        tmp_path / "file.sock",
    )
    env |= {
        "SCHEDULERD_STATE_DIR": str(tmp_path / "env"),
        "SCHEDULERD_SOCKET": str(tmp_path / "env.sock"),
    }
    s = load_settings(environ=env)
    assert (s.state_dir, s.socket_path) == (tmp_path / "env", tmp_path / "env.sock")
    s = load_settings(state_dir=tmp_path / "flag", socket=tmp_path / "flag.sock", environ=env)
    assert (s.state_dir, s.socket_path) == (tmp_path / "flag", tmp_path / "flag.sock")
    other = tmp_path / "other.toml"
    other.write_text(LOCAL)
    assert list(load_settings(config=other, environ=env).clusters) == ["x"]  # the flag's file


def test_paths_in_the_file_expand_the_home_directory(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text('state_dir = "~/sd"\nsocket = "~/sd.sock"\n')
    s = load_settings(config=config, environ={})
    assert s.state_dir == Path(os.path.expanduser("~/sd"))
    assert s.socket_path == Path(os.path.expanduser("~/sd.sock"))


def test_an_unreadable_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"config file .*missing\.toml does not exist"):
        load_settings(config=tmp_path / "missing.toml", environ={})
    broken = tmp_path / "broken.toml"
    broken.write_text("[clusters.x\n")
    with pytest.raises(ConfigError, match=rf"config file {broken}: "):
        load_settings(config=broken, environ={})
