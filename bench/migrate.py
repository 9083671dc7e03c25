"""Migration benchmark: the downtime of a running VE moved between two nodes.

    .venv/bin/python bench/migrate.py [--runs N] [--debian-runs N] [--data-mb MB]   (root)

Two node agents on this machine, each with its own root (LXC path, XFS reflink pool,
templates) and its own address on a veth pair made for the run (198.19.40.21 and .22);
data goes node to node through rsync over TCP between those addresses, exactly as across
hosts. Each run migrates a running VE (pre-copy while it runs, stop, final pass, checksum
verification, start on the target) and reports:

* ``downtime``: from the source stopping the VE to the target having started it (the
  migration job's own figure, node clocks);
* ``observed``: the longest gap between successful TCP connects to a service in the VE
  (busybox httpd on port 80, debian-12 sshd on port 22), probed from the host every 20 ms:
  what a client sees, including the service's own start;
* ``total``: the whole migration job, and the bytes the final pass moved.

busybox VEs run ``--runs`` times back and forth; the debian-12 VE holds ``--data-mb`` MB of
random data (default 500) and moves ``--debian-runs`` times. It owns everything it touches:
database ``hako_bench_migrate``, Redis db 11, nodes ``hakobench9a``/``hakobench9b`` under
TEST_ROOT/bench-*, pid files in TEST_ROOT/bench-migrate-pids, pool 198.18.40.240/28, id
ranges from k=14200.
"""
from __future__ import annotations

import argparse
import os
import secrets
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

DB_NAME = "hako_bench_migrate"
DB_URL = f"postgres://postgres@127.0.0.1:5432/{DB_NAME}"
BROKER = "redis://127.0.0.1:6379/11"
NODES = (("hakobench9a", "198.19.40.21", "hkb9a"), ("hakobench9b", "198.19.40.22", "hkb9b"))
POOL = "198.18.40.240/28"
IDMAP = 65536
ID_BASE = 1_000_000 + 14_200 * IDMAP

os.environ.update({
    "DJANGO_SETTINGS_MODULE": "panel.settings",
    "HAKO_DATABASE_URL": DB_URL,
    "HAKO_BROKER_URL": BROKER,
    "HAKO_SECRET_KEY": "bench",
    "HAKO_DATA": "/var/lib/hako-test/bench-migrate-data",
    "HAKO_ID_BASE": str(ID_BASE),
    "HAKO_ID_RANGES": "16",
})

from bench import common  # noqa: E402
from bench.common import BenchAbort, pct, reset_database, settled  # noqa: E402
from tests import harness  # noqa: E402

PIDS = harness.TEST_ROOT / "bench-migrate-pids"
DATA = Path(os.environ["HAKO_DATA"])
TEMPLATE_CACHE = Path(os.environ.get("HAKO_TEST_TEMPLATE_CACHE", "/var/lib/hako-test/template-cache"))


def root_of(name: str) -> Path:
    return harness.TEST_ROOT / f"bench-{name}"


def ip(*argv, check=True):
    return subprocess.run(["ip", *argv], capture_output=True, text=True, check=check)


def network_up() -> None:
    ip("link", "del", NODES[0][2], check=False)
    ip("link", "add", NODES[0][2], "type", "veth", "peer", "name", NODES[1][2])
    for _, addr, dev in NODES:
        ip("addr", "add", f"{addr}/32", "dev", dev)
        ip("link", "set", dev, "up")


def network_down() -> None:
    ip("link", "del", NODES[0][2], check=False)
    ip("route", "del", "unreachable", POOL, check=False)


class Prober(threading.Thread):
    """TCP connects to addr:port every 20 ms; the longest gap between two successes."""

    def __init__(self, addr: str, port: int):
        super().__init__(daemon=True)
        self.addr, self.port = addr, port
        self.stop = threading.Event()
        self.last_ok = None
        self.longest = 0.0

    def run(self):
        while not self.stop.is_set():
            try:
                with socket.create_connection((self.addr, self.port), timeout=0.2):
                    pass
                now = time.monotonic()
                if self.last_ok is not None:
                    self.longest = max(self.longest, now - self.last_ok)
                self.last_ok = now
            except OSError:
                pass
            self.stop.wait(0.02)


def sh(ve, script: str, timeout: int = 600) -> str:
    from panel.services import ves as svc

    job = settled(svc.ve_exec(ve=ve, argv=["sh", "-c", script], timeout=timeout), timeout=timeout + 60)
    if job.result.get("exit_code") != 0:
        raise BenchAbort(f"in VE {ve.veid}: {script[:60]!r} failed: {job.result.get('output', '')[-300:]}")
    return job.result["output"]


def migrate_once(ve, target, port: int) -> dict:
    from panel.models import VE
    from panel.services.migrations import STEP_TIMEOUT, ve_migrate

    probe = Prober(ve.addresses[0], port)
    probe.start()
    harness.wait_for(lambda: probe.last_ok is not None, 30, what="the service answering before the migration")
    t0 = time.perf_counter()
    job = settled(ve_migrate(ve=ve, target=target), timeout=STEP_TIMEOUT)
    total = time.perf_counter() - t0
    harness.wait_for(lambda: probe.last_ok is not None and time.monotonic() - probe.last_ok < 0.1, 60,
                     what="the service answering after the migration")
    probe.stop.set()
    probe.join()
    final = [line.message for line in job.logs.order_by("seq") if "changed data" in line.message]
    ve.refresh_from_db()
    if ve.node_id != target.pk or ve.state != VE.State.RUNNING:
        raise BenchAbort(f"VE {ve.veid} is {ve.state} on {ve.node.name} after the migration")
    parts = job.result.get("downtime_parts") or {}
    return {"downtime": job.result["downtime_ms"] / 1000, "observed": probe.longest, "total": total,
            **{k: parts.get(k, float("nan")) for k in ("stop", "final_pass", "verify", "start")},
            "final_log": final[-1].split("] ", 1)[-1] if final else ""}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=6, help="busybox migrations (default 6, alternating nodes)")
    ap.add_argument("--debian-runs", type=int, default=2, help="debian-12 migrations (default 2; 0 skips)")
    ap.add_argument("--data-mb", type=int, default=500, help="MB of data in the debian-12 VE (default 500)")
    args = ap.parse_args()
    if common.not_root("bench/migrate.py", "LXC, loop mounts, veth"):
        return 2
    common.interrupt_on_signals()
    procs: list[harness.Proc] = []
    harness.kill_pidfiles(PIDS)
    for name, _, _ in NODES:
        harness.clean_node_root(root_of(name))
    try:
        network_up()
        reset_database(DB_NAME)
        import redis

        redis.Redis.from_url(BROKER).flushdb()
        import django

        django.setup()
        from django.conf import settings
        from django.core.management import call_command
        from django.utils import timezone

        from panel.models import VE, Node, OSTemplate, Tenant
        from panel.services import network as net
        from panel.services import templates as tsvc
        from panel.services import ves as svc

        class _NoMigrations(dict):  # tables straight from the models, as bench/provision.py
            def __contains__(self, item):
                return True

            def __getitem__(self, item):
                return None

        settings.MIGRATION_MODULES = _NoMigrations()
        call_command("migrate", run_syncdb=True, verbosity=0, interactive=False)
        OSTemplate.objects.create(name="busybox")
        tenant = Tenant.objects.create(slug="bench", name="Bench")
        w = harness.panel_worker({"HAKO_DATABASE_URL": DB_URL, "HAKO_BROKER_URL": BROKER,
                                  "DJANGO_SETTINGS_MODULE": "panel.settings"})
        argv = list(w.argv)
        argv[argv.index("-n") + 1] = "hakobench-migrate@%h"
        worker = harness.Proc("bench-migrate-worker", argv, w.env, pid_dir=PIDS, fresh_log=True)
        procs.append(worker)
        nodes = []
        for name, addr, _ in NODES:
            key = secrets.token_hex(32)
            nodes.append(Node.objects.create(name=name, queue=f"node.{name}", key=key, state=Node.State.ONLINE,
                                             last_heartbeat=timezone.now(), info={"templates": ["busybox"]}))
            a = harness.node_agent(name, key, BROKER, root_of(name), env={"HAKO_NODE_ADDRESS": addr})
            procs.append(harness.Proc(f"bench-agent-{name}", a.argv, a.env, pid_dir=PIDS, fresh_log=True))
        for p in procs:
            p.start()
        for p in procs:
            harness.wait_for(lambda p=p: "ready" in p.log_text() or not p.alive(), 120, what=f"{p.name} ready")
            if not p.alive():
                raise BenchAbort(f"{p.name} exited at start; see {p.log}")
        for n in nodes:
            harness.wait_for(lambda n=n: Node.objects.get(pk=n.pk).info.get("address"), 30, what=f"{n.name} address")
        net.pool_create(name="bench", network=POOL, nodes=nodes)
        print(f"bench: machine: nproc {os.cpu_count()}, kernel {os.uname().release}", flush=True)

        results: dict[str, list[dict]] = {"busybox": [], "debian-12": []}
        a, b = Node.objects.get(pk=nodes[0].pk), Node.objects.get(pk=nodes[1].pk)
        ve = VE.objects.get(pk=settled(svc.ve_create(tenant=tenant, template="busybox", node=a)).ve_id)
        settled(svc.ve_start(ve=ve))
        ve.refresh_from_db()
        # httpd started at every boot (rcS), so it comes back with the VE on the other node
        sh(ve, "mkdir -p /www && echo hi > /www/index.html && "
               "echo '/bin/busybox httpd -p 80 -h /www' >> /etc/init.d/rcS && /bin/busybox httpd -p 80 -h /www")
        for i in range(args.runs):
            target = b if i % 2 == 0 else a
            r = migrate_once(ve, Node.objects.get(pk=target.pk), 80)
            results["busybox"].append(r)
            print(f"bench: busybox run {i + 1} -> {target.name}: downtime {r['downtime']:.3f} s, observed "
                  f"{r['observed']:.3f} s, total {r['total']:.2f} s; final pass: {r['final_log']}", flush=True)
        settled(svc.ve_destroy(ve=VE.objects.get(pk=ve.pk)))

        if args.debian_runs:
            for n in (a, b):
                cache = root_of(n.name) / "templates"
                for f in ("debian-12.tar", "debian-12.json"):
                    if (TEMPLATE_CACHE / f).exists() and not (cache / f).exists():
                        os.link(TEMPLATE_CACHE / f, cache / f)
            settled(tsvc.template_build(node=a, name="debian-12"), timeout=3600)
            harness.wait_for(lambda: "debian-12" in Node.objects.get(pk=b.pk).info.get("templates", []), 30,
                             what="node B offering debian-12")
            ve = VE.objects.get(pk=settled(svc.ve_create(tenant=tenant, template="debian-12", node=a,
                                                         disk=(args.data_mb + 1536) << 20), timeout=600).ve_id)
            settled(svc.ve_start(ve=ve))
            ve.refresh_from_db()
            t = time.perf_counter()
            sh(ve, f"mkdir -p /data && head -c {args.data_mb * 1000 * 1000} /dev/urandom > /data/blob && sync")
            print(f"bench: debian-12 VE {ve.veid}: wrote {args.data_mb} MB in {time.perf_counter() - t:.1f} s",
                  flush=True)
            for i in range(args.debian_runs):
                target = b if i % 2 == 0 else a
                r = migrate_once(ve, Node.objects.get(pk=target.pk), 22)
                results["debian-12"].append(r)
                print(f"bench: debian-12 run {i + 1} -> {target.name}: downtime {r['downtime']:.3f} s, observed "
                      f"{r['observed']:.3f} s, total {r['total']:.2f} s; final pass: {r['final_log']}", flush=True)
            settled(svc.ve_destroy(ve=VE.objects.get(pk=ve.pk)))

        print()
        print(f"Hako migration benchmark (seconds; debian-12 VE holding {args.data_mb} MB)")
        print(f"{'VE':<11}{'measure':<10}{'p50':>8}{'max':>8}{'runs':>6}")
        for tmpl, runs in results.items():
            for k in ("downtime", "stop", "final_pass", "verify", "start", "observed", "total"):
                xs = [r[k] for r in runs]
                if xs:
                    print(f"{tmpl:<11}{k:<10}{pct(xs, 50):>8.3f}{max(xs):>8.3f}{len(xs):>6}")
        return 0
    except BenchAbort as e:
        print(f"bench: ABORTED: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as e:
        print(f"bench: interrupted ({e}), cleaning up", file=sys.stderr)
        return 130
    except Exception:
        import traceback

        traceback.print_exc()
        return 1
    finally:
        common.ignore_signals()
        for p in reversed(procs):
            p.stop()
        for name, _, _ in NODES:
            try:
                harness.clean_node_root(root_of(name))
            except Exception as e:  # a container that will not die must not hide the result
                print(f"bench: cleaning {name}: {e}", file=sys.stderr)
        network_down()
        try:
            from django.db import connections

            connections.close_all()
            reset_database(DB_NAME, drop_only=True)
        except Exception as e:
            print(f"bench: could not drop {DB_NAME}: {e}", file=sys.stderr)
        subprocess.run(["rm", "-rf", "--one-file-system", str(DATA)], capture_output=True)


if __name__ == "__main__":
    sys.exit(main())
