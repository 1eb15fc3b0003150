"""The job store: the domain types and state machine (pure) and the SQLite store that
applies them; :mod:`schedulerd.state.store`'s docstring says which module owns what.

Imports as ``schedulerd.state``; never imports ``control``, ``cli`` or ``daemon``.
"""
