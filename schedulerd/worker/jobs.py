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
        argv=spec.argv,
        workdir=job.workdir,
        env=spec.env,
        queue=job.queue,
        cpus=spec.cpus,
        memory_mb=spec.memory_mb,
        walltime_s=spec.walltime_s,
        account=spec.account,
        extra_directives=spec.directives,
        requeue=spec.requeue,
    )
