"""Batch-system drivers and the transports they run commands through.

Imports as ``schedulerd.drivers``; never imports ``control``, ``cli`` or ``daemon``.
"""
