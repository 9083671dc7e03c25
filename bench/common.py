"""Pieces every benchmark uses: its own throw-away database, percentiles, and waiting for
a job that must succeed."""
from __future__ import annotations

import os
import signal
import sys
import time

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


class BenchAbort(RuntimeError):
    """A measured job did not succeed: the figures would mean nothing."""


def reset_database(name: str, drop_only: bool = False) -> None:
    """Drop (and recreate) the benchmark's own database; its connections are forced out."""
    import psycopg

    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        if not drop_only:
            conn.execute(f"CREATE DATABASE {name}")


def pct(values: list[float], p: float) -> float:
    """Percentile with linear interpolation between closest ranks (numpy's default)."""
    xs = sorted(values)
    if not xs:
        return float("nan")
    k = (len(xs) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def committed(call):
    """Call a service and return its job with ``committed_at``: the wall clock at which its
    transaction committed. The service runs inside an outer transaction whose first
    on-commit callback notes the time; the service's own callback (the publish to the
    node's queue) runs right after it, so dispatch counts the publish."""
    from django.db import transaction

    mark = {}
    with transaction.atomic():
        transaction.on_commit(lambda: mark.setdefault("t", time.time()))
        job = call()
    job.committed_at = mark["t"]
    return job


def settled(job, *, poll: float = 0.002, timeout: float = 120):
    """Wait for ``job``; abort the benchmark unless it succeeded. ``seen_at`` is the wall
    clock when the waiter saw it finished (for the node -> database lag)."""
    from panel.services.jobs import job_wait

    job = job_wait(job, timeout=timeout, poll=poll)
    job.seen_at = time.time()
    # The panel worker's two processes may apply the result before the "running" event:
    # its start time arrives a moment later (jobs.apply_event records it then).
    deadline = time.monotonic() + 5
    while job.started_at is None and time.monotonic() < deadline:
        time.sleep(0.01)
        job.refresh_from_db(fields=["started_at"])
    if job.state != "succeeded":
        lines = "\n".join(f"  {line.seq}: {line.message}" for line in job.logs.order_by("seq"))
        raise BenchAbort(f"{job.kind} job {job.id} ended {job.state}: "
                         f"{job.explanation or '(no explanation: timed out waiting)'}\n{lines}")
    return job


def not_root(script: str, why: str) -> bool:
    """True (after saying so) when a benchmark that needs root runs without it."""
    if os.geteuid() != 0:
        print(f"{script} must run as root ({why})", file=sys.stderr)
        return True
    return False


def interrupt_on_signals() -> None:
    """SIGTERM and SIGHUP raise KeyboardInterrupt, so they tear down as Ctrl-C does."""
    def _term(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")
    signal.signal(signal.SIGTERM, _term)
    signal.signal(signal.SIGHUP, _term)


def ignore_signals() -> None:
    """For the cleanup: a second signal must not cut it short."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
