"""Helpers shared by the test modules (no test module imports another test module).

- ``fake_cluster``: the daemon driving a fake batch head through an in-process SSH server.
- ``dialect_head``: one dialect's commands run against a fake head, without the daemon.
- ``fuzzing``: a dialect's parsers on any text raise only our errors.
- ``scripts``: a rendered job script run locally with arguments no shell may touch.
- ``store_checks``: a stopped daemon's rows are what their events replay to.

The daemon harness itself (in-process and subprocess) is ``tests/harness.py``.
"""
