"""Usage metering (issue 8 item 6): hourly records from the VE rows on a movable clock,
stable ids, the cursor export and a per-service summary through the billing API."""
from datetime import datetime, timedelta, timezone as dt_timezone
from decimal import Decimal

import pytest
from django.utils import timezone

from panel.models import VE, Job, UsageRecord, UsageSample
from panel.services import usage
from panel.services.jobs import accumulate_traffic, accumulate_usage
from tests.tenancy import idle_node, settle  # noqa: F401
from tests.test_billing_api import Billing, catalog, make_service, problem_of, token_for  # noqa: F401

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 3, 31, 22, 30, tzinfo=dt_timezone.utc)   # half past: the first hour is half used
G = 1 << 30


@pytest.fixture
def whmcs(db):
    return Billing(token_for("whmcs")[1])


@pytest.fixture
def service(whmcs, catalog):
    made = make_service(whmcs)
    settle(Job.objects.get(pk=made["job"]["id"]), "running")
    VE.objects.filter(pk=made["id"]).update(created_at=T0)
    return VE.objects.get(pk=made["id"])


def traffic(ve, raw):
    ve.refresh_from_db()
    VE.objects.filter(pk=ve.pk).update(traffic=accumulate_traffic(ve.traffic, raw))


def records(ve, meter):
    return list(UsageRecord.objects.filter(ve=ve, meter=meter).order_by("period_start"))


def test_rollup_closes_hours_from_the_ve_rows_and_a_repeat_writes_nothing(service):
    traffic(service, {"in_bytes": 1000, "out_bytes": 5000, "in_packets": 1, "out_packets": 1})
    assert usage.usage_rollup(now=T0 + timedelta(minutes=20)) == 0   # the first hour is still open
    written = usage.usage_rollup(now=T0 + timedelta(hours=2, minutes=1))   # closes 22:00 and 23:00
    assert written == 2 * len(usage.METERS)
    assert usage.usage_rollup(now=T0 + timedelta(hours=2, minutes=5)) == 0
    hours = records(service, "ve_hours")
    assert [r.period_start.hour for r in hours] == [22, 23] and [float(r.quantity) for r in hours] == [0.5, 1.0]
    assert [float(r.quantity) for r in records(service, "memory_allocated_byte_hours")] == [
        0.5 * 512 * (1 << 20), 512 * (1 << 20)]
    assert {int(r.quantity) for r in records(service, "disk_bytes")} == {10 * G}
    assert [int(r.quantity) for r in records(service, "net_out_bytes")] == [0, 5000]
    assert hours[0].plan == "small" and hours[0].uid == usage.record_uid(service.pk, "ve_hours", hours[0].period_start)


def test_traffic_is_the_growth_since_the_last_hour_across_counter_resets(service):
    traffic(service, {"in_bytes": 1000, "out_bytes": 100, "in_packets": 1, "out_packets": 1})
    usage.usage_rollup(now=T0 + timedelta(hours=1))
    traffic(service, {"in_bytes": 300, "out_bytes": 40, "in_packets": 1, "out_packets": 1})   # VE restarted
    usage.usage_rollup(now=T0 + timedelta(hours=2))
    assert [int(r.quantity) for r in records(service, "net_in_bytes")] == [1000, 300]
    assert [int(r.quantity) for r in records(service, "net_out_bytes")] == [100, 40]


def sample(ve, at, *, cpu, mem, peak, boot=1):
    """One heartbeat sample of the VE's cgroups folded in, as the panel worker does."""
    row, _ = UsageSample.objects.get_or_create(ve=ve)
    row.totals = accumulate_usage(row.totals, {"cpu_ns": cpu, "mem_bytes": mem, "mem_peak_bytes": peak,
                                               "boot": boot}, at)
    row.save()


def test_cpu_and_memory_samples_become_hourly_records_across_restarts(service):
    M = 1 << 20
    sample(service, 1000.0, cpu=2 * 10 ** 9, mem=100 * M, peak=150 * M)
    sample(service, 1010.0, cpu=5 * 10 ** 9, mem=300 * M, peak=400 * M)    # 10 s at 100..300 MiB
    usage.usage_rollup(now=T0 + timedelta(hours=1))
    # Restarted (a new cgroup: boot 2) with a counter above the old one: it counts in full,
    # and no memory is integrated across the gap between the two runs.
    sample(service, 1100.0, cpu=7 * 10 ** 9, mem=50 * M, peak=60 * M, boot=2)
    sample(service, 1100.5, cpu=7 * 10 ** 9, mem=50 * M, peak=50 * M, boot=2)
    usage.usage_rollup(now=T0 + timedelta(hours=2))
    usage.usage_rollup(now=T0 + timedelta(hours=3))   # idle, no samples: no peak
    assert [float(r.quantity) for r in records(service, "cpu_seconds")] == [5.0, 7.0, 0.0]
    assert [float(r.quantity) for r in records(service, "memory_byte_hours")] == pytest.approx(
        [200 * M * 10 / 3600, 50 * M * 0.5 / 3600, 0], abs=1e-5)
    assert [int(r.quantity) for r in records(service, "memory_peak_bytes")] == [400 * M, 60 * M, 0]
    # A malformed or stale-gap sample changes nothing it should not.
    before = UsageSample.objects.get(ve=service).totals
    sample(service, 2000.0, cpu=-1, mem=1, peak=1, boot=2)
    assert UsageSample.objects.get(ve=service).totals == before
    sample(service, 5000.0, cpu=8 * 10 ** 9, mem=50 * M, peak=50 * M, boot=2)   # after an hour of silence
    assert UsageSample.objects.get(ve=service).totals["mem_byte_seconds"] == before["mem_byte_seconds"]


def test_a_terminated_service_is_metered_up_to_its_destruction_only(service):
    VE.objects.filter(pk=service.pk).update(state="destroyed", destroyed_at=T0 + timedelta(hours=1, minutes=15))
    usage.usage_rollup(now=T0 + timedelta(hours=5))
    assert [float(r.quantity) for r in records(service, "ve_hours")] == [0.5, 0.75]   # 22:30-23:00, 23:00-23:45
    assert usage.usage_rollup(now=T0 + timedelta(hours=9)) == 0


def test_export_by_cursor_and_summary_through_the_api(whmcs, service):
    usage.usage_rollup(now=T0 + timedelta(hours=3))
    first = whmcs.get("/usage?limit=4").json()
    assert len(first["data"]) == 4 and first["has_more"] is True
    rest = whmcs.get(f"/usage?cursor={first['next_cursor']}").json()
    assert rest["has_more"] is False and len(first["data"]) + len(rest["data"]) == 3 * len(usage.METERS)
    ids = [r["id"] for r in first["data"] + rest["data"]]
    assert len(set(ids)) == len(ids)
    again = whmcs.get("/usage").json()   # re-reading from the start gives the same ids
    assert [r["id"] for r in again["data"]] == ids
    assert whmcs.get(f"/usage?cursor={rest['next_cursor']}").json()["data"] == []
    # A summary across the month boundary (22:30 on the 31st to 01:00 on the 1st).
    r = whmcs.get("/services/ext:4711/usage?from=2026-03-31T22:00:00Z&to=2026-04-01T01:00:00Z")
    assert r.status_code == 200, r.content
    body = r.json()
    assert body["meters"]["ve_hours"] == 2.5 and body["meters"]["disk_bytes"] == 10 * G
    assert body["service"]["external_id"] == "4711" and body["closed_until"].startswith("2026-04-01T01:00")
    only_april = whmcs.get("/services/ext:4711/usage?from=2026-04-01T00:00:00Z&to=2026-05-01T00:00:00Z").json()
    assert only_april["meters"]["ve_hours"] == 1


@pytest.mark.parametrize("query", ["cursor=-1", "cursor=abc", "limit=0", "limit=99999", "cursor=1%0A2"])
def test_bad_export_parameters_are_400(whmcs, service, query):
    problem_of(whmcs.get(f"/usage?{query}"), 400, "invalid")


@pytest.mark.parametrize("query", ["from=yesterday&to=2026-04-01T00:00:00Z", "from=2026-04-01T00:00:00&to=2026-04-02T00:00:00Z",
                                   "from=2026-04-02T00:00:00Z&to=2026-04-01T00:00:00Z", ""])
def test_bad_summary_periods_are_400(whmcs, service, query):
    problem_of(whmcs.get(f"/services/ext:4711/usage?{query}"), 400, "invalid")


def test_another_accounts_usage_is_invisible(whmcs, service):
    usage.usage_rollup(now=T0 + timedelta(hours=3))
    blesta = Billing(token_for("blesta")[1])
    assert blesta.get("/usage").json()["data"] == []
    problem_of(blesta.get("/services/ext:4711/usage?from=2026-03-31T22:00:00Z&to=2026-04-01T01:00:00Z"),
               404, "not-found")


# --- with real workers: what a test burns inside a VE ----------------------------------------------

POOL4, POOL6 = "198.18.50.0/24", "fd00:50::/64"
MiB = 1 << 20


@pytest.fixture
def pools(node):
    """This file's address pools on the test node, with their unreachable routes."""
    import subprocess

    from panel.services.network import pool_create
    from tests.conftest import run

    pool_create(name="u4", network=POOL4, nodes=[node], range_start="198.18.50.10", range_end="198.18.50.99")
    pool_create(name="u6", network=POOL6, nodes=[node])
    run(Job.objects.filter(kind="node_config").order_by("-created_at").first())
    yield
    for cidr in (POOL4, POOL6):
        subprocess.run(["ip", "route", "del", "unreachable", cidr], capture_output=True, timeout=30)


def hour_of(ve, start) -> dict:
    """The closed hour at ``start``: {meter: quantity}."""
    return {r.meter: r.quantity for r in UsageRecord.objects.filter(ve=ve, period_start=start)}


@pytest.mark.integration
def test_records_grow_by_at_least_the_cpu_memory_and_bytes_burnt_inside_a_ve(stack, node, tenant, pools):
    """Heartbeats carry each running VE's cgroup samples; hours closed on a moved clock book
    at least the CPU time, memory peak and traffic the test caused inside the VE to the hour
    in which it happened, and the next hour gets its own (lower) peak."""
    import re
    import subprocess
    import time

    from panel.services import ves
    from tests.conftest import run
    from tests.harness import wait_for

    def sh(script: str) -> dict:
        return run(ves.ve_exec(ve=ve, argv=["sh", "-c", script], timeout=90), timeout=120).result

    def sampled_after(t: float) -> dict:
        row = UsageSample.objects.filter(ve=ve).first()
        return row.totals if row and row.totals.get("raw", {}).get("at", 0) > t else None

    ve = VE.objects.get(pk=run(ves.ve_create(tenant=tenant, template="busybox", memory=512 * MiB)).ve_id)
    run(ves.ve_start(ve=ve))
    ve.refresh_from_db()
    assert ve.addresses and ve.addresses[0].startswith("198.18.50.")
    first = wait_for(lambda: sampled_after(0), 30, what="a first CPU/memory sample in a heartbeat")
    wait_for(lambda: sampled_after(first["raw"]["at"]), 30, what="a second sample (memory is integrated between two)")
    t = usage.hour_floor(timezone.now())
    usage.usage_rollup(now=t + timedelta(hours=1))   # the hour the VE booted in
    booted = hour_of(ve, t)
    assert booted["cpu_seconds"] > 0 and booted["memory_peak_bytes"] > 0 and booted["memory_byte_hours"] > 0

    # Burn: a fixed amount of work, md5 of 400 MB (busybox time reports the CPU it took,
    # however long a busy host makes it wait), then hold 48 MiB in a
    # shell variable for an instant (only the kernel's high-water mark can see it), and
    # 5 x 20 kB of pings from the host, answered by the VE.
    out = sh("time sh -c 'head -c 400000000 /dev/zero | md5sum'; "
             "x=$(head -c 50331648 /dev/zero | tr '\\0' x); echo len=${#x}")
    assert "len=50331648" in out["output"], out
    # The VE's root cannot lower its own meter: the high-water mark is the host's to reset.
    reset = sh("echo 0 > /sys/fs/cgroup/memory/memory.max_usage_in_bytes; echo rc=$?")["output"]
    assert "rc=0" not in reset, reset
    times = {k: int(m) * 60 + float(sec)
             for k, m, sec in re.findall(r"^(user|sys)\s+(\d+)m\s*([\d.]+)s", out["output"], re.M)}
    assert set(times) == {"user", "sys"}, out
    burnt = times["user"] + times["sys"]
    assert burnt >= 2.0, f"md5 of 400 MB took only {burnt:.2f} s of CPU"
    ping = subprocess.run(["busybox", "ping", "-c", "5", "-s", "20000", "-W", "2", ve.addresses[0]],
                          capture_output=True, text=True, timeout=60).stdout
    answered = int(re.search(r"(\d+) packets received", ping).group(1))   # the first may wait on ARP
    assert answered >= 3, ping
    done = time.time()
    # The second heartbeat stamped after this moment: the first may have read its counters
    # before it (a heartbeat is stamped when it is sent).
    after = wait_for(lambda: sampled_after(done), 30, what="a heartbeat after the burn")
    wait_for(lambda: sampled_after(after["raw"]["at"]), 30, what="a second heartbeat after the burn")
    usage.usage_rollup(now=t + timedelta(hours=2))
    burn_hour = hour_of(ve, t + timedelta(hours=1))
    print(f"[usage] burnt {burnt:.2f} s CPU, booked {burn_hour['cpu_seconds']} s; "
          f"peak {int(burn_hour['memory_peak_bytes']) // MiB} MiB")
    assert burn_hour["cpu_seconds"] >= Decimal(str(burnt))
    assert burn_hour["memory_peak_bytes"] >= 48 * MiB
    assert burn_hour["net_in_bytes"] >= answered * 20000 and burn_hour["net_out_bytes"] >= answered * 20000
    assert burn_hour["memory_byte_hours"] > 0

    # The next hour: only what the idle VE used since, with its own peak.
    rolled = time.time()
    after = wait_for(lambda: sampled_after(rolled), 30, what="a heartbeat after the rollup")
    wait_for(lambda: sampled_after(after["raw"]["at"]), 30, what="a second heartbeat after the rollup")
    usage.usage_rollup(now=t + timedelta(hours=3))
    idle_hour = hour_of(ve, t + timedelta(hours=2))
    assert 0 < idle_hour["memory_peak_bytes"] < 48 * MiB
    assert idle_hour["cpu_seconds"] < Decimal(str(burnt))
    # The ids are stable: another run over the same hours writes nothing.
    assert usage.usage_rollup(now=t + timedelta(hours=3)) == 0
