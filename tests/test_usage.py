"""Usage metering (issue 8 item 6): hourly records from the VE rows on a movable clock,
stable ids, the cursor export and a per-service summary through the billing API."""
from datetime import datetime, timedelta, timezone as dt_timezone

import pytest

from panel.models import VE, Job, UsageRecord
from panel.services import usage
from panel.services.jobs import accumulate_traffic
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
    assert [float(r.quantity) for r in records(service, "memory_byte_hours")] == [0.5 * 512 * (1 << 20),
                                                                                  512 * (1 << 20)]
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
