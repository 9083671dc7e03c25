"""Server time of the panel's list pages as the fleet grows (issue 6's figures).

    .venv/bin/python bench/lists.py [--sizes 1000,10000] [--reps 30]

For each fleet size it fills a dedicated PostgreSQL database (``hako_bench_lists``) with
that many VEs (and as many jobs) in one tenant, then times GET requests through Django's
whole request stack in-process (middleware, sessions, auth, access door, queries,
templates; no network and no browser): the first page of the customer VE list, the same
sorted by hostname, the staff VE list, the jobs list, and the whole tenant on one page
(``per_page=1000``). Prints p50/p95 in milliseconds and the number of queries per page.
Targets (issue 6): a page of the VE list over 10,000 VEs <= 20 ms p50; all 1,000 VEs of a
tenant on one page <= 100 ms.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import uuid
from datetime import timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.common import reset_database  # noqa: E402
DB_NAME = "hako_bench_lists"
os.environ.update({
    "DJANGO_SETTINGS_MODULE": "panel.settings",
    "HAKO_DATABASE_URL": f"postgres://postgres@127.0.0.1:5432/{DB_NAME}",
    "HAKO_SECRET_KEY": "bench",
    "HAKO_DATA": "/var/lib/hako-test/bench-lists-data",
    "HAKO_ALLOWED_HOSTS": "testserver",
})


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="1000,10000")
    ap.add_argument("--reps", type=int, default=30)
    args = ap.parse_args()
    reset_database(DB_NAME)
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext
    from django.utils import timezone

    from panel.models import VE, Job, Membership, Node, OSTemplate, Tenant
    from django.contrib.auth import get_user_model

    call_command("migrate", verbosity=0)
    User = get_user_model()
    tenant = Tenant.objects.create(slug="big", name="Big hosting customer")
    owner = User.objects.create_user("owner", password="x")
    staff = User.objects.create_user("staff", password="x", is_staff=True)
    Membership.objects.create(user=owner, tenant=tenant, role="owner")
    node = Node.objects.create(name="n1", queue="node.n1", state="online", last_heartbeat=timezone.now())
    tmpl = OSTemplate.objects.create(name="busybox")
    print(f"machine: nproc {os.cpu_count()}, kernel {os.uname().release}; PostgreSQL, in-process requests")
    print(f"{'VEs':>6}  {'page':<34} {'p50 ms':>7} {'p95 ms':>7} {'queries':>7}")
    have = 0
    for size in [int(s) for s in args.sizes.split(",")]:
        now = timezone.now()
        VE.objects.bulk_create([
            VE(veid=1000 + i, tenant=tenant, node=node, template=tmpl, hostname=f"ve{i:05d}.example.com",
               state="running" if i % 3 else "stopped", nproc=12 if i % 3 else None, memory=512 << 20,
               disk=10 << 30, numproc=512, uid_base=1_000_000 + i * 65536,
               addresses=[f"198.18.{i // 250}.{i % 250 + 1}"])
            for i in range(have, size)], batch_size=2000)
        ves = list(VE.objects.filter(veid__gte=1000 + have).values_list("pk", flat=True))
        Job.objects.bulk_create([
            Job(kind="start", ve_id=pk, tenant=tenant, node=node, state="succeeded",
                expires_at=now + timedelta(minutes=2), id=uuid.uuid4()) for pk in ves], batch_size=2000)
        have = size
        with connection.cursor() as cur:
            cur.execute("ANALYZE")
        pages = [("customer VE list, page 1", owner, "/ves/"),
                 ("customer VE list by hostname", owner, "/ves/?sort=hostname&page=3"),
                 ("staff VE list, page 1", staff, "/staff/ves/"),
                 ("jobs list, page 1", owner, "/jobs/")]
        if size <= 1000:
            pages.append(("all VEs on one page (per_page=1000)", owner, "/ves/?per_page=1000"))
        for label, user, url in pages:
            client = Client()
            client.force_login(user)
            assert client.get(url).status_code == 200, url  # warm: session, templates
            times = []
            for _ in range(args.reps):
                t = time.perf_counter()
                response = client.get(url)
                times.append(time.perf_counter() - t)
                assert response.status_code == 200
            with CaptureQueriesContext(connection) as queries:
                client.get(url)
            times.sort()
            print(f"{size:>6}  {label:<34} {statistics.median(times) * 1000:>7.1f} "
                  f"{times[int(len(times) * 0.95) - 1] * 1000:>7.1f} {len(queries):>7}")
    print("targets: a page of the VE list over 10,000 VEs <= 20 ms p50; 1,000 VEs on one page <= 100 ms p50")
    connection.close()
    reset_database(DB_NAME, drop_only=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
