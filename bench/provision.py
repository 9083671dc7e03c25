"""Provisioning benchmark: busybox and debian-12 VEs from request to running, through the pipeline.

    .venv/bin/python bench/provision.py [--runs N] [--debian-runs N]   (root, after make setup)

Each run goes service -> job -> Redis -> node agent -> LXC -> signed events -> panel worker
-> DB, on a node whose storage pool is an XFS loop file with reflink (the default):

* busybox: ``ve_create`` then ``ve_start``, timed from the create call until the start job
  is terminal in the database, and one request (``ve_create(start=True)``: one create job
  that starts the VE) until that job is terminal (target p50 <= 0.15 s);
* debian-12: the same two ways, timed from the create call until sshd listens in the VE
  (port 22 in LISTEN in the VE's network namespace, read from the host through
  /proc/<init>/net/tcp; target p50 <= 1.0 s).

VEs are destroyed after each run (not timed). It also reports the one-off costs: the
debian-12 template (debootstrap, only if the machine's template cache lacks it) and its
golden image. Like bench/pipeline.py it owns everything it touches, so it can run beside
a test session or that bench: database ``hako_bench_prov``, Redis db 13, node
``hakobench3`` under TEST_ROOT/bench-hakobench3, pid files in TEST_ROOT/bench-prov-pids,
VE id ranges from k=14100.
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

DB_NAME = "hako_bench_prov"
DB_URL = f"postgres://postgres@127.0.0.1:5432/{DB_NAME}"
BROKER = "redis://127.0.0.1:6379/13"
NODE = "hakobench3"
IDMAP = 65536
ID_BASE = 1_000_000 + 14_100 * IDMAP

os.environ.update({
    "DJANGO_SETTINGS_MODULE": "panel.settings",
    "HAKO_DATABASE_URL": DB_URL,
    "HAKO_BROKER_URL": BROKER,
    "HAKO_SECRET_KEY": "bench",
    "HAKO_DATA": "/var/lib/hako-test/bench-prov-data",
    "HAKO_ID_BASE": str(ID_BASE),
    "HAKO_ID_RANGES": "16",
})

from bench import common  # noqa: E402
from bench.common import BenchAbort, committed, pct, reset_database, settled  # noqa: E402
from tests import harness  # noqa: E402

PIDS = harness.TEST_ROOT / "bench-prov-pids"
ROOT = harness.TEST_ROOT / f"bench-{NODE}"
DATA = Path(os.environ["HAKO_DATA"])
TEMPLATE_CACHE = Path(os.environ.get("HAKO_TEST_TEMPLATE_CACHE", "/var/lib/hako-test/template-cache"))
TARGET_BUSYBOX = 0.150  # s, p50 create+start
TARGET_DEBIAN = 1.0     # s, p50 create+start to sshd listening


def kill_own_leftovers() -> None:
    harness.kill_pidfiles(PIDS)


def sshd_listening(veid: int) -> bool:
    pid = subprocess.run(["lxc-info", "-P", str(ROOT / "lxc"), "-n", str(veid), "-p", "-H"],
                         capture_output=True, text=True).stdout.strip()
    for table in ("tcp", "tcp6"):
        try:
            rows = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        except (FileNotFoundError, ProcessLookupError):
            return False
        if any(r.split()[1].endswith(":0016") and r.split()[3] == "0A" for r in rows):
            return True
    return False


def _wait_sshd(veid: int, since: float) -> None:
    deadline = since + 30
    while not sshd_listening(veid):
        if time.perf_counter() > deadline:
            raise BenchAbort(f"sshd did not listen in VE {veid} within 30 s")
        time.sleep(0.002)


def one_run(tenant, node, template: str, wait_sshd: bool) -> dict:
    """One VE made with two jobs (create, then start) and one made with one request (a
    create job that starts it: what the panel's create form and billing send)."""
    from panel.models import VE
    from panel.services import ves as svc

    t0 = time.perf_counter()
    create = settled(committed(lambda: svc.ve_create(tenant=tenant, template=template, node=node)))
    t1 = time.perf_counter()
    ve = VE.objects.get(pk=create.ve_id)
    start = settled(committed(lambda: svc.ve_start(ve=ve)))
    t2 = time.perf_counter()
    out = {"create": t1 - t0, "start": t2 - t1, "create+start": t2 - t0}
    if wait_sshd:
        _wait_sshd(ve.veid, t2)
        t3 = time.perf_counter()
        out.update({"start->sshd": t3 - t1, "create->sshd": t3 - t0})
    settled(svc.ve_destroy(ve=ve))

    t4 = time.perf_counter()
    one = settled(committed(lambda: svc.ve_create(tenant=tenant, template=template, node=node, start=True)))
    t5 = time.perf_counter()
    out["one request"] = t5 - t4
    one_ve = VE.objects.get(pk=one.ve_id)
    if wait_sshd:
        _wait_sshd(one_ve.veid, t5)
        out["one request->sshd"] = time.perf_counter() - t4
    # Where a job's time goes: commit -> node's "running" (dispatch), node's "running" ->
    # node's "succeeded" (the node's work and its events), node's "succeeded" -> terminal
    # in the database as job_wait saw it (event lag). One host clock.
    for name, job in (("create", create), ("start", start), ("one", one)):
        out[f"{name}:dispatch"] = job.started_at.timestamp() - job.committed_at
        out[f"{name}:node"] = (job.finished_at - job.started_at).total_seconds()
        out[f"{name}:lag"] = job.seen_at - job.finished_at.timestamp()
    settled(svc.ve_stop(ve=one_ve, kill=True))
    settled(svc.ve_destroy(ve=one_ve))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=20, help="busybox runs (default 20)")
    ap.add_argument("--debian-runs", type=int, default=10, help="debian-12 runs (default 10; 0 skips)")
    args = ap.parse_args()
    if common.not_root("bench/provision.py", "LXC, loop mounts"):
        return 2
    common.interrupt_on_signals()
    procs: list[harness.Proc] = []
    kill_own_leftovers()
    harness.clean_node_root(ROOT)
    try:
        reset_database(DB_NAME)
        import redis

        redis.Redis.from_url(BROKER).flushdb()
        import django

        django.setup()
        from django.core.management import call_command
        from django.utils import timezone

        from panel.models import Node, OSTemplate, Tenant
        from panel.services import templates as tsvc

        # Tables straight from the models (as the tests' --nomigrations): the tree may hold
        # model changes whose migrations are not written yet.
        class _NoMigrations(dict):
            def __contains__(self, item):
                return True

            def __getitem__(self, item):
                return None

        from django.conf import settings
        settings.MIGRATION_MODULES = _NoMigrations()
        call_command("migrate", run_syncdb=True, verbosity=0, interactive=False)
        key = secrets.token_hex(32)
        node = Node.objects.create(name=NODE, queue=f"node.{NODE}", key=key, state=Node.State.ONLINE,
                                   last_heartbeat=timezone.now(), info={"templates": ["busybox"]})
        OSTemplate.objects.create(name="busybox")
        tenant = Tenant.objects.create(slug="bench", name="Bench")
        w = harness.panel_worker({"HAKO_DATABASE_URL": DB_URL, "HAKO_BROKER_URL": BROKER,
                                  "DJANGO_SETTINGS_MODULE": "panel.settings"})
        argv = list(w.argv)
        argv[argv.index("-n") + 1] = "hakobench-prov@%h"
        a = harness.node_agent(NODE, key, BROKER, ROOT)
        worker = harness.Proc("bench-prov-worker", argv, w.env, pid_dir=PIDS, fresh_log=True)
        agent = harness.Proc(f"bench-agent-{NODE}", a.argv, a.env, pid_dir=PIDS, fresh_log=True)
        procs += [worker, agent]
        worker.start()
        agent.start()
        for p in (agent, worker):
            harness.wait_for(lambda p=p: "ready" in p.log_text() or not p.alive(), 120, what=f"{p.name} ready")
            if not p.alive():
                raise BenchAbort(f"{p.name} exited at start; see {p.log}")
        print(f"bench: machine: nproc {os.cpu_count()}, kernel {os.uname().release}", flush=True)

        results = {"busybox": [], "debian-12": []}
        for i in range(2 + args.runs):
            r = one_run(tenant, node, "busybox", wait_sshd=False)
            if i >= 2:
                results["busybox"].append(r)
            print(f"bench: busybox {'warm-up' if i < 2 else f'run {i - 1}'}: "
                  + " ".join(f"{k} {v:.3f}" for k, v in r.items() if ":" not in k), flush=True)

        if args.debian_runs:
            cache = ROOT / "templates"
            for f in ("debian-12.tar", "debian-12.json"):  # the machine's cache, if it has it
                if (TEMPLATE_CACHE / f).exists() and not (cache / f).exists():
                    os.link(TEMPLATE_CACHE / f, cache / f)
            t = time.perf_counter()
            job = settled(tsvc.template_build(node=node, name="debian-12"), timeout=3600)
            print(f"bench: template_build debian-12: {time.perf_counter() - t:.1f} s "
                  f"(debootstrap: {'yes' if job.result.get('built') else 'no, cached'}; golden {job.result.get('golden')})",
                  flush=True)
            for line in job.logs.order_by("seq"):
                if "Golden image" in line.message or "built:" in line.message:
                    print(f"bench:   {line.message}")
            for i in range(1 + args.debian_runs):
                r = one_run(tenant, node, "debian-12", wait_sshd=True)
                if i >= 1:
                    results["debian-12"].append(r)
                print(f"bench: debian-12 {'warm-up' if i < 1 else f'run {i}'}: "
                      + " ".join(f"{k} {v:.3f}" for k, v in r.items() if ":" not in k), flush=True)

        print()
        print("Hako provisioning benchmark (seconds, through the pipeline)")
        print(f"{'template':<11}{'measure':<20}{'p50':>8}{'p95':>8}")
        for tmpl, runs in results.items():
            for k in (runs[0] if runs else {}):
                xs = [r[k] for r in runs]
                print(f"{tmpl:<11}{k:<20}{pct(xs, 50):>8.3f}{pct(xs, 95):>8.3f}")
        print()
        print("create+start: two jobs (create, then start); one request: a create job that starts the VE")
        for measure in ("create+start", "one request"):
            bb = pct([r[measure] for r in results["busybox"]], 50)
            print(f"target busybox {measure} p50 <= {TARGET_BUSYBOX:.3f} s: {bb:.3f} s "
                  f"{'MET' if bb <= TARGET_BUSYBOX else 'MISSED'}")
        for measure in ("create->sshd", "one request->sshd"):
            if results["debian-12"]:
                db = pct([r[measure] for r in results["debian-12"]], 50)
                print(f"target debian-12 {measure} p50 <= {TARGET_DEBIAN:.1f} s: {db:.3f} s "
                      f"{'MET' if db <= TARGET_DEBIAN else 'MISSED'}")
        return 0
    except BenchAbort as e:
        print(f"bench: ABORTED: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as e:
        print(f"bench: interrupted ({e}), cleaning up", file=sys.stderr)
        return 130
    finally:
        common.ignore_signals()
        for p in reversed(procs):
            p.stop()
        harness.clean_node_root(ROOT)
        try:
            from django.db import connections

            connections.close_all()
            reset_database(DB_NAME, drop_only=True)
        except Exception as e:
            print(f"bench: could not drop {DB_NAME}: {e}", file=sys.stderr)
        subprocess.run(["rm", "-rf", "--one-file-system", str(DATA)], capture_output=True)


if __name__ == "__main__":
    sys.exit(main())
