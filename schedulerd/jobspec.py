"""What a submitted job may be: the spec a client sends, checked before anything is stored.

``plan_new_jobs`` checks a call's in-call references (names, self-waits, cycles) and
orders it so that every in-call parent comes first; ``build_rows`` checks each job
(argv, names, env, resources, workdir, the cluster's batch system through its dialect's
``validate_job``, and the inputs on this machine's filesystem) and turns it into a store
row. All or nothing: one bad job refuses the whole call.
"""

from __future__ import annotations

import functools
import os
import re
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import msgspec

from schedulerd.drivers import htcondor, lsf, pbspro, slurm, staging, torque
from schedulerd.drivers.base import JobRequest
from schedulerd.drivers.batch import login_relative
from schedulerd.drivers.wrapper import (
    ENV_NAME,
    RESERVED_ENV_NAMES,
    RESERVED_ENV_PREFIX,
    env_name_problem,
)
from schedulerd.errors import ConfigError, DependencyCycle, InvalidSpec, UnknownCluster
from schedulerd.rpc import Int64
from schedulerd.state.models import JobSpec, NewJob
from schedulerd.units import parse_duration, parse_memory_mb

_NAME = re.compile(r"[A-Za-z0-9_.+-]{1,200}\Z")


class JobSpecIn(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """One job as a client submits it."""

    argv: list[str]
    name: str | None = None
    cluster: str | None = None
    queue: str | None = None
    cpus: Int64 | None = None
    memory: str | Int64 | None = None
    walltime: str | Int64 | None = None
    account: str | None = None
    workdir: str | None = None
    env: dict[str, str] = {}
    after: list[Int64 | str] = []
    retries: Int64 = 0
    directives: list[str] = []
    requeue: bool = False
    inputs: list[str] = []  # absolute paths here, staged to <workdir>/<basename>
    outputs: list[str] = []  # glob patterns relative to the workdir, fetched at the end


@dataclass(frozen=True, slots=True)
class ClusterView:
    """What validation needs to know about a configured cluster."""

    name: str
    workdir: str
    default_queue: str | None
    is_local: bool
    outputs_dir: str | None = None  # where staged-out outputs go (Settings.outputs_path)
    scheduler: str = "local"  # pbspro | torque | lsf | htcondor | slurm | local
    slots: int | None = None  # a local cluster's slots (its max_jobs): a job's cpus take them


@dataclass(frozen=True, slots=True)
class SubmitPlan:
    """The order in which a call's jobs are stored (every in-call parent first) and, for
    each spec in the caller's order, its position in that order."""

    specs: list[JobSpecIn]
    order: list[int]
    positions: list[int]
    local_edges: list[list[int]]

    @property
    def existing_parents(self) -> list[int]:
        return sorted({a for s in self.specs for a in s.after if isinstance(a, int)})


def plan_new_jobs(specs: list[JobSpecIn]) -> SubmitPlan:
    """Check the in-call references (names, self-waits, cycles) of a whole call."""
    if not any(spec.after for spec in specs):
        # the common big call (a flat sweep): no edges, so no cycle and no reordering;
        # only the names need a look, and a set does that in C unless one repeats
        given = [spec.name for spec in specs if spec.name is not None]
        if len(set(given)) == len(given):
            identity = list(range(len(specs)))
            no_edges: list[int] = []  # shared by every job: read, never appended to
            return SubmitPlan(specs=specs, order=identity, positions=identity,
                              local_edges=[no_edges] * len(specs))  # fmt: skip
    problems: list[str] = []
    names: dict[str, int] = {}
    for n, spec in enumerate(specs):
        if spec.name is not None:
            if spec.name in names:
                problems.append(f"jobs[{n}]: name {spec.name!r} is used twice in this call")
            names[spec.name] = n
    local_edges: list[list[int]] = []
    for n, spec in enumerate(specs):
        edges: list[int] = []
        for ref in spec.after:
            if isinstance(ref, str):
                if ref not in names:
                    problems.append(f"jobs[{n}].after: no job named {ref!r} in this call")
                elif names[ref] == n:
                    problems.append(f"jobs[{n}].after: a job cannot wait for itself")
                else:
                    edges.append(names[ref])
            elif ref <= 0:
                problems.append(f"jobs[{n}].after: {ref} is not a job id")
        local_edges.append(edges)
    if problems:
        raise InvalidSpec("; ".join(problems[:20]), data={"errors": problems[:100]})
    order = _topological(local_edges)
    position = [0] * len(specs)
    for new, old in enumerate(order):
        position[old] = new
    return SubmitPlan(specs=specs, order=order, positions=position, local_edges=local_edges)


def build_rows(
    plan: SubmitPlan, start: int, stop: int, clusters: dict[str, ClusterView], default_cluster: str
) -> list[NewJob]:
    """Validate and build the rows at positions ``start:stop`` of the plan's order."""
    rows: list[NewJob] = []
    position = plan.positions
    for old in plan.order[start:stop]:
        spec = plan.specs[old]
        cluster_name = spec.cluster or default_cluster
        cluster = clusters.get(cluster_name)
        if cluster is None:
            raise UnknownCluster(f"jobs[{old}]: no cluster named {cluster_name!r}",
                                 data={"clusters": sorted(clusters)})  # fmt: skip
        edges = plan.local_edges[old]
        try:
            rows.append(_row(spec, cluster, [position[e] for e in edges] if edges else edges))
        except (ConfigError, ValueError) as exc:
            raise InvalidSpec(f"jobs[{old}]: {exc}") from exc
    return rows


def build_new_jobs(
    specs: list[JobSpecIn], clusters: dict[str, ClusterView], default_cluster: str
) -> tuple[list[NewJob], list[int]]:
    """Validate every spec (all or nothing) and turn them into store rows, in an order
    where every in-call parent comes before its children; also returns, for each spec in
    the caller's order, its position among the rows."""
    plan = plan_new_jobs(specs)
    return build_rows(plan, 0, len(specs), clusters, default_cluster), plan.positions


def _topological(edges: list[list[int]]) -> list[int]:
    """Kahn's algorithm; DependencyCycle names one cycle."""
    n = len(edges)
    children: list[list[int]] = [[] for _ in range(n)]
    indegree = [0] * n
    for child, parents in enumerate(edges):
        for p in parents:
            children[p].append(child)
            indegree[child] += 1
    ready = deque(i for i in range(n) if indegree[i] == 0)
    order: list[int] = []
    while ready:
        node = ready.popleft()
        order.append(node)
        for c in children[node]:
            indegree[c] -= 1
            if indegree[c] == 0:
                ready.append(c)
    if len(order) == n:
        return order
    # find a cycle among the rest to name it
    rest = {i for i in range(n) if indegree[i] > 0}
    start = min(rest)
    path = [start]
    seen = {start: 0}
    node = start
    while True:
        node = next(p for p in edges[node] if p in rest)
        if node in seen:
            cycle = [*path[seen[node] :], node]
            break
        seen[node] = len(path)
        path.append(node)
    raise DependencyCycle(
        "the dependencies form a cycle: " + " -> ".join(f"jobs[{i}]" for i in reversed(cycle)),
        data={"cycle": list(reversed(cycle))},
    )


_UNSAFE_NAME = re.compile(r"[\s'\"\\$`;]")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
#: a name a job's env may set: valid, and none of the wrapper's own (one regex per job)
_USER_ENV_NAME = re.compile(
    "(?!"
    + "|".join(re.escape(n) + r"\Z" for n in sorted(RESERVED_ENV_NAMES))
    + "|"
    + re.escape(RESERVED_ENV_PREFIX)
    + ")"
    + ENV_NAME.pattern
)


@functools.lru_cache(maxsize=4096)
def _memory_mb(value: str | int) -> int:
    return parse_memory_mb(value, what="memory")


@functools.lru_cache(maxsize=4096)
def _walltime_s(value: str | int) -> int:
    seconds = int(parse_duration(value, what="walltime"))
    if seconds <= 0:
        raise ValueError("walltime must be positive")
    return seconds


#: each batch system's own check of what a job asks for (drivers/<system>.py validate_job)
_VALIDATORS: dict[str, Callable[[JobRequest], list[str]]] = {
    "pbspro": pbspro.validate_job,
    "torque": torque.validate_job,
    "lsf": lsf.validate_job,
    "htcondor": htcondor.validate_job,
    "slurm": slurm.validate_job,
}


@functools.lru_cache(maxsize=4096)
def _dialect_problems(
    validate: Callable[[JobRequest], list[str]],
    workdir: str,
    queue: str | None,
    account: str | None,
    cpus: int | None,
    memory_mb: int | None,
    walltime_s: int | None,
    directives: tuple[str, ...],
) -> tuple[str, ...]:
    """What the cluster's batch system says about a job of these fields, as the driver
    would render it (the job's id and attempt do not matter). Cached: a sweep of 100,000
    jobs usually asks the same question every time."""
    probe = JobRequest(job_id=1, attempt=1, name="sd-1-1", argv=("true",),
                       workdir=workdir.replace("{id}", "1"), queue=queue, account=account,
                       cpus=cpus, memory_mb=memory_mb, walltime_s=walltime_s,
                       extra_directives=directives)  # fmt: skip
    return tuple(validate(probe))


def _row(spec: JobSpecIn, cluster: ClusterView, local_parents: list[int]) -> NewJob:
    # Runs once per job of a 100,000-job call: the common case is checked with as few
    # Python-level steps as possible (whole-list checks first, the culprit found after).
    argv = spec.argv
    if not argv or not all(argv):
        raise ValueError("argv must be a non-empty list of non-empty strings")
    if "\0" in "".join(argv):
        raise ValueError("argv must not contain NUL characters")
    name = spec.name
    if name is None:
        name = os.path.basename(argv[0]) or "job"
        if not _NAME.match(name):
            name = re.sub(r"[^A-Za-z0-9_.+-]", "_", name)[:200] or "job"
    elif not _NAME.match(name):
        raise ValueError(f"name {name!r}: use letters, digits and _.+- (at most 200)")
    env = spec.env
    if env:
        if not all(map(_USER_ENV_NAME.match, env)):
            bad = next(k for k in env if env_name_problem(k))
            raise ValueError(f"env: {env_name_problem(bad)}")
        if "\0" in "".join(env.values()):
            bad = next(k for k, v in env.items() if "\0" in v)
            raise ValueError(f"env: {bad} contains a NUL character")
    cpus = spec.cpus
    if cpus is not None and cpus <= 0:
        raise ValueError("cpus must be positive")
    if spec.retries < 0 or spec.retries > 100:
        raise ValueError("retries must be between 0 and 100")
    queue, account = spec.queue, spec.account
    if queue is not None and (not queue or _UNSAFE_NAME.search(queue)):
        raise ValueError(f"queue {queue!r} is not a valid name")
    if account is not None and (not account or _UNSAFE_NAME.search(account)):
        raise ValueError(f"account {account!r} is not a valid name")
    directives = spec.directives
    if directives and any("\n" in d or "\r" in d or "\0" in d for d in directives):
        raise ValueError("directives must be single lines")
    workdir = spec.workdir
    if workdir is not None:
        if not workdir or _CONTROL.search(workdir):
            raise ValueError(
                f"workdir {workdir!r} is not a valid path (empty, or control characters)"
            )
        if workdir.startswith("-") or "/-" in workdir:
            raise ValueError(
                f"workdir {workdir!r}: a path component starting with '-' would be read as an"
                " option by the head's commands"
            )
        if workdir.startswith("~") and not (workdir == "~" or workdir.startswith("~/")):
            raise ValueError(
                f"workdir {workdir!r}: only ~ and ~/ (your login directory) are understood"
            )
        if cluster.is_local:
            workdir = os.path.expanduser(workdir)  # this machine's login directory
            if not os.path.isabs(workdir):
                raise ValueError(f"workdir {workdir!r} must be an absolute path on a local cluster")
        else:
            # relative to the login directory on the head (the driver resolves it there)
            workdir = login_relative(workdir)
    if cpus is not None and cluster.slots is not None and cpus > cluster.slots:
        raise ValueError(f"cpus {cpus}: cluster {cluster.name} has {cluster.slots} slots")
    memory_mb = None if spec.memory is None else _memory_mb(spec.memory)
    walltime_s = None if spec.walltime is None else _walltime_s(spec.walltime)
    workdir = workdir or f"{cluster.workdir}/{{id}}"
    extra_directives = tuple(directives)
    validate = _VALIDATORS.get(cluster.scheduler)
    if validate is not None:
        refused = _dialect_problems(validate, workdir, queue or cluster.default_queue, account,
                                    cpus, memory_mb, walltime_s, extra_directives)  # fmt: skip
        if refused:
            raise ValueError(f"cluster {cluster.name} ({cluster.scheduler}): {'; '.join(refused)}")
    inputs: tuple[str, ...] = ()
    if spec.inputs:
        inputs = tuple(staging.validate_inputs(spec.inputs))
        problems = staging.unusable_inputs(spec.inputs)  # a stat each, on this machine
        if problems:
            raise ValueError("inputs: " + "; ".join(problems[:10]))
    outputs: tuple[str, ...] = ()
    if spec.outputs:
        outputs = tuple(staging.validate_output_patterns(spec.outputs))
    stored = JobSpec(
        argv=tuple(argv),
        env=env,  # the decoded spec is ours: no copies needed
        cpus=cpus,
        memory_mb=memory_mb,
        walltime_s=walltime_s,
        account=account,
        directives=extra_directives,
        requeue=spec.requeue,
        inputs=inputs,
        outputs=outputs,
        outputs_root=cluster.outputs_dir if outputs else None,
    )
    after = spec.after
    return NewJob(
        name=name,
        cluster=cluster.name,
        # "{id}" is replaced by the job id when the store assigns it
        workdir=workdir,
        spec=stored,
        queue=queue or cluster.default_queue,
        max_attempts=spec.retries + 1,
        after=tuple(a for a in after if isinstance(a, int)) if after else (),
        after_local=tuple(local_parents),
    )
