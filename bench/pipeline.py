"""Job pipeline benchmark: a busybox VE through the whole pipeline versus the node's own work.

    .venv/bin/python bench/pipeline.py [--runs N]      (root, after scripts/setup-host.sh)

Per run it creates, starts, stops and destroys one busybox VE twice:

(a) pipeline: service -> job row -> Redis -> node agent -> LXC -> signed events -> panel
    worker -> DB, timed from the service call until the job is terminal in the database;
(b) direct:   the same operations through ``containers.runtime.Runtime`` called in-process
    (the lxc-* commands, mkfs and mounts the agent runs), with no pipeline around them.

Each run then also asks for a running VE in one request (``ve_create(start=True)``: one
create job that starts it, what the panel's create form and billing's provisioning send).
It prints p50/p95 of each operation for both, their ratio, "create+start" both as two jobs
and as that one request, and the dispatch latency: from the commit of the service's
transaction (noted by an on-commit callback that runs just before the service's publish)
to Job.started_at, the node's timestamp of its "running" event; same host clock.

Everything the bench uses is its own, so that it can run beside a test session: the
PostgreSQL database ``hako_bench`` (dropped and recreated), Redis db 14 (flushed), nodes
``hakobench1`` (agent) and ``hakobench2`` (direct) with roots and pid files under
TEST_ROOT that the tests' ``clean_leftovers`` does not touch, and VE id ranges far from
the tests'. Leftovers of a killed earlier run are cleaned at start; everything is stopped
and removed at the end.
"""
from __future__ import annotations

import argparse
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

DB_NAME = "hako_bench"
DB_URL = f"postgres://postgres@127.0.0.1:5432/{DB_NAME}"
BROKER = "redis://127.0.0.1:6379/14"
NODE = "hakobench1"          # behind the pipeline
DIRECT_NODE = "hakobench2"   # Runtime called directly
IDMAP = 65536
# VE id ranges inside root's /etc/subuid (1000000:1000000000), far from the tests' (which
# allocate from 1000000 up): the pipeline's VEs from k=14000, the direct VEs at k=14008.
PIPELINE_ID_BASE = 1_000_000 + 14_000 * IDMAP
DIRECT_UID_BASE = 1_000_000 + 14_008 * IDMAP

os.environ.update({
    "DJANGO_SETTINGS_MODULE": "panel.settings",
    "HAKO_DATABASE_URL": DB_URL,
    "HAKO_BROKER_URL": BROKER,
    "HAKO_SECRET_KEY": "bench",
    "HAKO_DATA": "/var/lib/hako-test/bench-data",
    "HAKO_ID_BASE": str(PIPELINE_ID_BASE),
    "HAKO_ID_RANGES": "8",
})

from bench import common  # noqa: E402
from bench.common import BenchAbort, committed, pct, reset_database, settled  # noqa: E402
from tests import harness  # noqa: E402

# Not TEST_ROOT/pids nor TEST_ROOT/node-*: a test session's clean_leftovers() must not kill
# the bench, and the bench must not touch the tests'.
BENCH_PIDS = harness.TEST_ROOT / "bench-pids"
PIPE_ROOT = harness.TEST_ROOT / f"bench-{NODE}"
DIRECT_ROOT = harness.TEST_ROOT / f"bench-{DIRECT_NODE}"
BENCH_DATA = Path(os.environ["HAKO_DATA"])

TARGET_CREATE_START = 0.150  # s, p50
TARGET_DISPATCH = 0.005      # s, p50
OPS = ("create", "start", "stop", "destroy")
# Rows of the table: the four operations, then "create+start" as two jobs (create, then
# start) and as one request (a create job that starts the VE).
ROWS = (*OPS, "create+start", "one request")


def bench_proc(proc: harness.Proc, name: str) -> harness.Proc:
    """The same process with its pid file under BENCH_PIDS and a fresh log at every start."""
    return harness.Proc(name, proc.argv, proc.env, pid_dir=BENCH_PIDS, fresh_log=True)


def kill_own_leftovers() -> None:
    """Kill processes of a killed earlier bench run (only ours: checked by command line)."""
    harness.kill_pidfiles(BENCH_PIDS)


def flush_redis() -> None:
    import redis

    redis.Redis.from_url(BROKER).flushdb()


# --- statistics and output -----------------------------------------------------------


def machine() -> str:
    try:
        lxc = subprocess.run(["lxc-start", "--version"], capture_output=True, text=True).stdout.strip()
    except FileNotFoundError:
        lxc = "not installed"
    return f"nproc {os.cpu_count()}, kernel {os.uname().release}, LXC {lxc}"


def report(pipe: dict, direct: dict, dispatch: list[float], lag: list[float], runs: int, poll: float) -> None:
    print()
    print(f"Hako job pipeline benchmark: busybox VE, {runs} runs (+2 warm-up), job_wait poll {poll * 1000:g} ms")
    print(f"machine: {machine()}")
    print()
    print(f"{'op':<14}{'pipeline p50':>13}{'p95':>8}{'direct p50':>13}{'p95':>8}{'ratio(p50)':>12}")
    for op in ROWS:
        p50, p95 = pct(pipe[op], 50), pct(pipe[op], 95)
        d50, d95 = pct(direct[op], 50), pct(direct[op], 95)
        print(f"{op:<14}{p50:>13.3f}{p95:>8.3f}{d50:>13.3f}{d95:>8.3f}{p50 / d50:>11.2f}x")
    print("(seconds)")
    d50, d95 = pct(dispatch, 50), pct(dispatch, 95)
    print(f"dispatch (commit->agent running): p50 {d50 * 1000:.1f} ms  p95 {d95 * 1000:.1f} ms"
          f"  ({len(dispatch)} jobs)")
    print(f"event lag (node 'succeeded' -> job terminal in DB, seen by job_wait): "
          f"p50 {pct(lag, 50) * 1000:.1f} ms  p95 {pct(lag, 95) * 1000:.1f} ms")
    print()
    print("create+start: two jobs (create, then start); one request: a create job that starts the VE")
    print("targets:")
    for row in ("create+start", "one request"):
        cs = pct(pipe[row], 50)
        print(f"  {row + ' p50':<17}<= {TARGET_CREATE_START:.3f} s : {cs:.3f} s  "
              f"{'MET' if cs <= TARGET_CREATE_START else 'MISSED'}")
    print(f"  dispatch p50     <= {TARGET_DISPATCH * 1000:.0f} ms    : {d50 * 1000:.1f} ms  "
          f"{'MET' if d50 <= TARGET_DISPATCH else 'MISSED'}")


# --- the two sides -------------------------------------------------------------------


def pipeline_run(tenant, node, poll: float) -> tuple[dict, list, dict]:
    from panel.models import VE
    from panel.services import ves as svc

    t0 = time.perf_counter()
    create = settled(committed(lambda: svc.ve_create(tenant=tenant, template="busybox", node=node)), poll=poll)
    t1 = time.perf_counter()
    ve = VE.objects.select_related("template").get(pk=create.ve_id)
    start = settled(committed(lambda: svc.ve_start(ve=ve)), poll=poll)
    t2 = time.perf_counter()
    stop = settled(committed(lambda: svc.ve_stop(ve=ve)), poll=poll)
    t3 = time.perf_counter()
    destroy = settled(committed(lambda: svc.ve_destroy(ve=ve)), poll=poll)
    t4 = time.perf_counter()
    t4_wall = time.time()
    # What a customer's "create" click or billing's provisioning asks for: one request for
    # a running VE, i.e. one create job that also starts it (ve_create(start=True)).
    one = settled(committed(lambda: svc.ve_create(tenant=tenant, template="busybox", node=node, start=True)),
                  poll=poll)
    t5 = time.perf_counter()
    one_ve = VE.objects.get(pk=one.ve_id)
    settled(svc.ve_stop(ve=one_ve, kill=True), poll=poll)
    settled(svc.ve_destroy(ve=one_ve), poll=poll)
    times = {"create": t1 - t0, "start": t2 - t1, "stop": t3 - t2, "destroy": t4 - t3,
             "create+start": t2 - t0, "one request": t5 - t4}
    jobs = (create, start, stop, destroy, one)
    dispatch = [j.started_at.timestamp() - j.committed_at for j in jobs]
    lag = [j.seen_at - j.finished_at.timestamp() for j in jobs]
    # Where the one request's time went (wall clock of this host throughout).
    times["phases"] = {
        "service (call -> commit)": one.committed_at - t4_wall,
        "dispatch (commit -> node running)": one.started_at.timestamp() - one.committed_at,
        "node (running -> succeeded)": (one.finished_at - one.started_at).total_seconds(),
        "result (node succeeded -> seen in DB)": one.seen_at - one.finished_at.timestamp(),
    }
    return times, (dispatch, lag), ve.spec()


def direct_run(rt, spec) -> dict:
    quiet = lambda msg: None  # noqa: E731
    t0 = time.perf_counter()
    rt.create(spec, 1, quiet)
    t1 = time.perf_counter()
    rt.start(spec, 2, quiet)
    t2 = time.perf_counter()
    rt.stop(spec.veid, quiet)
    t3 = time.perf_counter()
    rt.destroy(spec.veid, quiet)
    t4 = time.perf_counter()
    return {"create": t1 - t0, "start": t2 - t1, "stop": t3 - t2, "destroy": t4 - t3,
            "create+start": t2 - t0, "one request": t2 - t0}


def direct_runtime():
    from containers.config import AgentConfig
    from containers.runtime import Runtime
    from containers.templates import ensure_builtin

    # Same settings as the agent harness.node_agent starts (stop timeout 10 s).
    cfg = AgentConfig(node=DIRECT_NODE, key=secrets.token_bytes(32), broker_url=BROKER, root=DIRECT_ROOT,
                      heartbeat_interval=0.5, concurrency=1, stop_timeout=10, fault_delay="")
    cfg.ensure_dirs()
    ensure_builtin(cfg.templates)
    rt = Runtime(cfg)
    rt.pool.prepare()  # VE disks on the same kind of storage pool as the agent's
    return rt


# --- main ----------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=20, help="measured runs (default 20)")
    ap.add_argument("--poll", type=float, default=0.002,
                    help="job_wait poll interval in seconds (default 0.002; the sampling error of the "
                         "observer, not a cost of the pipeline, so keep it small)")
    args = ap.parse_args()
    if common.not_root("bench/pipeline.py", "LXC, loop mounts"):
        return 2
    if args.runs < 1:
        ap.error("--runs must be at least 1")

    common.interrupt_on_signals()

    procs: list[harness.Proc] = []
    print("bench: cleaning leftovers of earlier bench runs", flush=True)
    kill_own_leftovers()
    for root in (PIPE_ROOT, DIRECT_ROOT):
        harness.clean_node_root(root)
    try:
        reset_database(DB_NAME)
        flush_redis()

        import django

        django.setup()
        from django.core.management import call_command
        from django.utils import timezone

        from panel.models import Node, OSTemplate, Tenant

        print("bench: migrating hako_bench", flush=True)
        call_command("migrate", verbosity=0, interactive=False)
        key = secrets.token_hex(32)
        node = Node.objects.create(name=NODE, queue=f"node.{NODE}", key=key, state=Node.State.ONLINE,
                                   last_heartbeat=timezone.now(), info={"templates": ["busybox"]})
        OSTemplate.objects.create(name="busybox")
        tenant = Tenant.objects.create(slug="bench", name="Bench")

        worker_template = harness.panel_worker({"HAKO_DATABASE_URL": DB_URL, "HAKO_BROKER_URL": BROKER,
                                                "DJANGO_SETTINGS_MODULE": "panel.settings"})
        argv = list(worker_template.argv)
        argv[argv.index("-n") + 1] = "hakobench-panel@%h"
        worker = harness.Proc("bench-panel-worker", argv, worker_template.env, pid_dir=BENCH_PIDS, fresh_log=True)
        agent = bench_proc(harness.node_agent(NODE, key, BROKER, PIPE_ROOT), f"bench-agent-{NODE}")
        procs += [worker, agent]
        worker.start()
        agent.start()
        for p, what in ((agent, "node agent"), (worker, "panel worker")):
            try:
                harness.wait_for(lambda p=p: "ready" in p.log_text() or not p.alive(), 60, what=f"{what} ready")
            except AssertionError as e:
                raise BenchAbort(f"{e}; see {p.log}") from None
            if not p.alive():
                raise BenchAbort(f"{what} exited at start; see {p.log}:\n{p.log_text()[-2000:]}")
        print("bench: panel worker and node agent ready", flush=True)

        from containers.messages import VESpec

        rt = direct_runtime()
        pipe = {op: [] for op in ROWS}
        direct = {op: [] for op in ROWS}
        dispatch: list[float] = []
        lag: list[float] = []
        phases: dict[str, list[float]] = {}
        warmup = 2
        for i in range(warmup + args.runs):
            times, (disp, lags), spec = pipeline_run(tenant, node, args.poll)
            # The direct VE is the same VE: same spec, its own id range and node.
            dspec = VESpec.from_dict({**spec, "uid_base": DIRECT_UID_BASE})
            dtimes = direct_run(rt, dspec)
            label = "warm-up" if i < warmup else f"run {i - warmup + 1}/{args.runs}"
            print(f"bench: {label}: pipeline " + " ".join(f"{op} {times[op]:.3f}" for op in OPS)
                  + " | direct " + " ".join(f"{op} {dtimes[op]:.3f}" for op in OPS)
                  + " | dispatch " + " ".join(f"{d * 1000:.1f}ms" for d in disp), flush=True)
            if i >= warmup:
                for op in pipe:
                    pipe[op].append(times[op])
                    direct[op].append(dtimes[op])
                dispatch += disp
                lag += lags
                for name, secs in times["phases"].items():
                    phases.setdefault(name, []).append(secs)
        report(pipe, direct, dispatch, lag, args.runs, args.poll)
        print("one request, where the time goes (p50):")
        for name, secs in phases.items():
            print(f"  {name:<40}{pct(secs, 50) * 1000:7.1f} ms")
        return 0
    except BenchAbort as e:
        print(f"bench: ABORTED: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as e:
        print(f"bench: interrupted ({e or 'Ctrl-C'}), cleaning up", file=sys.stderr)
        return 130
    finally:
        common.ignore_signals()
        for p in reversed(procs):
            p.stop()
        for root in (PIPE_ROOT, DIRECT_ROOT):
            harness.clean_node_root(root)
        try:
            from django.db import connections

            connections.close_all()
        except Exception:
            pass
        try:
            reset_database(DB_NAME, drop_only=True)
            flush_redis()
        except Exception as e:  # the next run recreates both anyway
            print(f"bench: could not drop {DB_NAME} / flush Redis db 14: {e}", file=sys.stderr)
        subprocess.run(["rm", "-rf", "--one-file-system", str(BENCH_DATA)], capture_output=True)


if __name__ == "__main__":
    sys.exit(main())
