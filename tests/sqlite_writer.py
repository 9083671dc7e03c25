"""One writer of the SQLite smoke test (run as a separate process, like web/worker/beat)."""
import os
import sys
import time

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "panel.settings")
django.setup()

from containers import messages as m  # noqa: E402
from panel.models import Node, Tenant  # noqa: E402
from panel.services import jobs, ves  # noqa: E402

role, count = sys.argv[1], int(sys.argv[2])
node = Node.objects.get(name="sqlite-smoke")
if role == "web":
    tenant = Tenant.objects.get(slug="smoke")
    for i in range(count):
        ves.ve_create(tenant=tenant, template="busybox")
elif role == "worker":
    for i in range(count):
        inv = [{"veid": v, "state": "running", "nproc": 3} for v in range(101, 140)]
        body = m.heartbeat_body(node=node.name, instance="smoke", seq=i + 1, capacity={"cpus": 2}, inventory=inv)
        result = jobs.apply_heartbeat(m.sign(body, bytes.fromhex(node.key)))
        assert result == "applied heartbeat", result
elif role == "beat":
    for i in range(count):
        jobs.reap()
        time.sleep(0.005)
print(f"{role} done")
