"""What a driver is handed of a stored job."""

from __future__ import annotations

from schedulerd.drivers.base import JobRequest
from schedulerd.state.models import Job


def job_request(job: Job) -> JobRequest:
    """What a driver needs from a stored job (the current attempt)."""
    spec = job.spec
    return JobRequest(
        job_id=job.id,
        attempt=job.attempt,
        name=job.submit_name,
        argv=tuple(spec["argv"]),
        workdir=job.workdir,
        env=dict(spec.get("env") or {}),
        queue=job.queue,
        cpus=spec.get("cpus"),
        memory_mb=spec.get("memory_mb"),
        walltime_s=spec.get("walltime_s"),
        account=spec.get("account"),
        extra_directives=tuple(spec.get("directives") or ()),
        requeue=bool(spec.get("requeue", False)),
    )
