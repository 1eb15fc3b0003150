"""A submit renders each job's script once (issue 8: it was rendered twice, once to check
that it renders and once into the submit program)."""

from __future__ import annotations

from collections import Counter

from schedulerd.drivers.base import JobRequest
from schedulerd.drivers.batch import BatchDriver
from schedulerd.drivers.slurm import SlurmDialect
from schedulerd.drivers.submit_program import SUBMIT_MARK
from schedulerd.drivers.transport import CommandResult


class CountingSlurm(SlurmDialect):
    def __init__(self) -> None:
        super().__init__()
        self.rendered: Counter[int] = Counter()

    def render_script(self, job: JobRequest) -> str:
        self.rendered[job.job_id] += 1
        return super().render_script(job)


class AcceptingHead:
    """Answers a submit program as sh would on a head where every sbatch succeeds."""

    def __init__(self) -> None:
        self.programs: list[str] = []

    async def run(
        self,
        command: str,
        *,
        input: str | None = None,
        timeout: float | None = None,
    ) -> CommandResult:
        assert command == "sh -s" and input is not None
        self.programs.append(input)
        count = input.count(f"printf '{SUBMIT_MARK}-out ")
        out = "".join(f"{SUBMIT_MARK}-out {n}\n{1000 + n}\n{SUBMIT_MARK} {n} 0\n{SUBMIT_MARK}-end\n"
                      for n in range(count))  # fmt: skip
        return CommandResult(stdout=out, stderr="", exit_status=0)

    async def upload(self, local_path: str, remote_path: str) -> None: ...

    async def download(self, remote_path: str, local_path: str) -> None: ...

    async def aclose(self) -> None: ...


async def test_each_job_script_is_rendered_once_per_submit() -> None:
    dialect, head = CountingSlurm(), AcceptingHead()
    driver = BatchDriver(dialect, head, user="me", workdir="/scratch")
    driver.version, driver._probed = "slurm 23.02", True  # no version/capability probes
    jobs = [JobRequest(job_id=n, attempt=1, name=f"sd-{n}-1", argv=("echo", str(n)),
                       workdir=f"/scratch/j{n}") for n in range(1, 4)]  # fmt: skip
    results = await driver.submit(jobs)
    assert [r.native_id for r in results] == ["1000", "1001", "1002"]
    assert dialect.rendered == {1: 1, 2: 1, 3: 1}
    (program,) = head.programs
    for job in jobs:  # and what was rendered is what the program writes
        assert job.script_path in program
