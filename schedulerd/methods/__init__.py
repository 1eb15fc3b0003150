"""The control protocol's methods, one module per domain, and :data:`HANDLERS`, the
registry the socket server (``control.py``) dispatches on.

A new method is an ``async def name(session, params)`` in its domain's module and one
line here; PROTOCOL.md documents it and ``tests/test_protocol_doc.py`` checks that every
method has a successful example there.
"""

from __future__ import annotations

from schedulerd.methods import clusters, daemon, events, jobs
from schedulerd.methods.base import Handler

HANDLERS: dict[str, Handler] = {
    "daemon.ping": daemon.daemon_ping,
    "daemon.info": daemon.daemon_info,
    "daemon.shutdown": daemon.daemon_shutdown,
    "job.submit": jobs.job_submit,
    "job.get": jobs.job_get,
    "job.states": jobs.job_states,
    "job.list": jobs.job_list,
    "job.cancel": jobs.user_action("cancel"),
    "job.hold": jobs.user_action("hold"),
    "job.release": jobs.user_action("release"),
    "job.retry": jobs.user_action("retry"),
    "clusters.list": clusters.clusters_list,
    "clusters.check": clusters.clusters_check,
    "clusters.drain": clusters.clusters_drain,
    "clusters.resume": clusters.clusters_resume,
    "events.list": events.events_list,
    "events.subscribe": events.events_subscribe,
    "events.unsubscribe": events.events_unsubscribe,
}
