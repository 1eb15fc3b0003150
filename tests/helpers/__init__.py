"""Helpers shared by the test modules (no test module imports another test module).

- ``fake_cluster``: the daemon driving a fake batch head through an in-process SSH server.
- ``dialect_head``: one dialect's commands run against a fake head, without the daemon.
"""
