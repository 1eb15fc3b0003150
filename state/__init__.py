"""The SQLite store and the pure job state machine.

Imports as ``schedulerd.state``; never imports ``control``, ``cli`` or ``daemon``.
"""
