"""Usage metering (issue 8 item 6): immutable hourly records per VE and meter, in base
units, made from the VE rows and the totals the node agents' heartbeats feed into them:

- ``ve_hours`` (hour): the part of the hour the VE existed (created .. destroyed);
- ``memory_allocated_byte_hours`` (byte-hour): its memory limit times that part;
- ``disk_bytes`` (byte): its disk size at the hour's close (a gauge);
- ``net_in_bytes`` / ``net_out_bytes`` (byte): growth of VE.traffic (the heartbeat-fed,
  reset-safe totals) since the last closed hour;
- ``cpu_seconds`` (second): growth of the VE's CPU time (UsageSample, from its cgroup's
  ``cpuacct.usage``, reset-safe across restarts) since the last closed hour;
- ``memory_byte_hours`` (byte-hour): the memory it actually used, integrated over the
  heartbeats' samples since the last closed hour;
- ``memory_peak_bytes`` (byte, a gauge): the highest memory charge since the last closed
  hour (the kernel's high-water mark, reset by the agent at every sample).

The counters' growth is booked to the hour being closed; when several hours are closed at
once it goes to the last of them (the panel has no finer record of when it happened).

``usage_rollup(now=...)`` closes every hour that ended before ``now`` (beat, hourly). Each
record's ``uid`` is uuid5(VE, meter, hour), so a second run writes nothing.
"""
from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from decimal import Decimal

from django.db import transaction
from django.db.models import F, Max, Sum
from django.utils import timezone

from panel.models import VE, BillingAccount, BillingLink, UsageMark, UsageRecord, UsageSample

from .errors import InvalidInput

NAMESPACE = uuid.UUID("5d1e7a52-3c55-4c0e-9a55-6861b06f0001")
METERS = {"ve_hours": "hour", "memory_allocated_byte_hours": "byte-hour", "disk_bytes": "byte",
          "net_in_bytes": "byte", "net_out_bytes": "byte", "cpu_seconds": "second",
          "memory_byte_hours": "byte-hour", "memory_peak_bytes": "byte"}
GAUGES = ("disk_bytes", "memory_peak_bytes")        # summarised by max, the others by sum
SAMPLED = ("cpu_ns", "mem_byte_seconds")             # the UsageSample totals a mark remembers
MICRO = Decimal("0.000001")
HOUR = timedelta(hours=1)
MAX_CATCH_UP = 24 * 40           # hours one VE closes per run at most


def hour_floor(t: datetime) -> datetime:
    return t.replace(minute=0, second=0, microsecond=0)


def record_uid(ve_id, meter: str, start: datetime) -> uuid.UUID:
    return uuid.uuid5(NAMESPACE, f"{ve_id}/{meter}/{start.isoformat()}")


def _existed(ve: VE, start: datetime, end: datetime) -> Decimal:
    """The part of [start, end) the VE existed, in hours."""
    lo = max(start, ve.created_at)
    hi = min(end, ve.destroyed_at) if ve.destroyed_at else end
    seconds = max((hi - lo).total_seconds(), 0)
    return (Decimal(int(seconds)) / Decimal(3600)).quantize(MICRO)


def _ve_rollup(ve: VE, until: datetime) -> int:
    with transaction.atomic():
        mark = UsageMark.objects.select_for_update().filter(ve=ve).first()
        if mark is None:
            mark = UsageMark.objects.create(ve=ve, closed_until=hour_floor(ve.created_at), traffic={})
        start = mark.closed_until
        end = min(until, start + MAX_CATCH_UP * HOUR)
        if ve.destroyed_at:
            end = min(end, hour_floor(ve.destroyed_at) + HOUR)
        if end <= start:
            return 0
        # Read now (the rollup may run long after ``ve`` was loaded). The sample row is locked:
        # its memory peak is reset below with no heartbeat in between. The rollup locks only
        # the mark and the sample row; the heartbeat never locks a mark: no lock cycle.
        totals = VE.objects.values_list("traffic", flat=True).get(pk=ve.pk) or {}
        grew = {k: max(int(totals.get(k, 0)) - int(mark.traffic.get(k, 0)), 0) for k in ("in_bytes", "out_bytes")}
        sampled = UsageSample.objects.select_for_update().filter(ve=ve).first()
        meters = sampled.totals if sampled else {}
        used = {k: max(int(meters.get(k, 0)) - int(mark.meters.get(k, 0)), 0) for k in SAMPLED}
        peak = int(meters.get("mem_peak_bytes", 0))
        plan = ve.plan.name if ve.plan_id else ""
        rows = []
        h = start
        while h < end:
            part = _existed(ve, h, h + HOUR)
            last = h + HOUR >= end
            values = {"ve_hours": part, "memory_allocated_byte_hours": part * ve.memory,
                      "disk_bytes": Decimal(ve.disk),
                      "net_in_bytes": Decimal(grew["in_bytes"] if last else 0),
                      "net_out_bytes": Decimal(grew["out_bytes"] if last else 0),
                      "cpu_seconds": (Decimal(used["cpu_ns"]) / 10 ** 9).quantize(MICRO) if last else Decimal(0),
                      "memory_byte_hours": ((Decimal(used["mem_byte_seconds"]) / 3600).quantize(MICRO)
                                            if last else Decimal(0)),
                      "memory_peak_bytes": Decimal(peak if last else 0)}
            if part:
                rows += [UsageRecord(uid=record_uid(ve.pk, meter, h), ve=ve, tenant_id=ve.tenant_id, meter=meter,
                                     unit=METERS[meter], quantity=q, plan=plan, period_start=h,
                                     period_end=h + HOUR) for meter, q in values.items()]
            h += HOUR
        UsageRecord.objects.bulk_create(rows, ignore_conflicts=True)
        UsageMark.objects.filter(pk=mark.pk).update(
            closed_until=end, traffic={k: int(totals.get(k, 0)) for k in ("in_bytes", "out_bytes")},
            meters={k: int(meters.get(k, 0)) for k in SAMPLED})
        if peak:  # the next hour gets its own peak, from the samples after this moment
            UsageSample.objects.filter(pk=sampled.pk).update(totals={**meters, "mem_peak_bytes": 0})
    return len(rows)


def usage_rollup(*, now: datetime | None = None) -> int:
    """Close every complete hour before ``now`` for every VE; returns the records written
    (0 on a repeat)."""
    until = hour_floor(now or timezone.now())
    written = 0
    # A destroyed VE whose last hour is closed has nothing more to meter.
    ves = (VE.objects.select_related("plan")
           .exclude(state=VE.State.DESTROYED, usage_mark__closed_until__gt=F("destroyed_at"))
           .exclude(state=VE.State.DESTROYED, destroyed_at__isnull=True))
    for ve in ves.iterator():
        written += _ve_rollup(ve, until)
    return written


# --- export -----------------------------------------------------------------------------------------

def _account_ves(account: BillingAccount):
    return BillingLink.objects.filter(account=account, kind=BillingLink.Kind.VE).values("object_id")


def usage_page(account: BillingAccount, *, cursor=None, limit=None) -> tuple[list[UsageRecord], int, bool]:
    """Records of the account's services after ``cursor`` (a ``seq``), oldest first:
    (records, next cursor, has_more). Re-reading from an old cursor is harmless: ids are
    stable."""
    cursor = _int(cursor, "cursor", 0, 0, 10 ** 18)
    limit = _int(limit, "limit", 1000, 1, 5000)
    rows = list(UsageRecord.objects.filter(ve_id__in=_account_ves(account), seq__gt=cursor)
                .order_by("seq")[:limit + 1])
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, (rows[-1].seq if rows else cursor), more


def usage_summary(account: BillingAccount, ve: VE, *, start: datetime, end: datetime) -> dict:
    """Per meter over the hours in [start, end): sums, and the max for gauges."""
    if start >= end:
        raise InvalidInput("from must be before to", field="from")
    qs = UsageRecord.objects.filter(ve=ve, period_start__gte=start, period_end__lte=end)
    meters = {}
    for meter in METERS:
        agg = qs.filter(meter=meter).aggregate(total=Sum("quantity"), top=Max("quantity"))
        value = agg["top"] if meter in GAUGES else agg["total"]
        meters[meter] = _num(value or Decimal(0))
    closed = UsageMark.objects.filter(ve=ve).values_list("closed_until", flat=True).first()
    return {"meters": meters, "units": dict(METERS), "closed_until": closed.isoformat() if closed else None}


def _num(d: Decimal):
    return int(d) if d == d.to_integral_value() else float(d)


def _int(raw, field, default, lo, hi) -> int:
    if raw is None or raw == "":
        return default
    if not str(raw).isdigit() or not lo <= int(raw) <= hi:
        raise InvalidInput(f"{field} must be a whole number from {lo} to {hi}", field=field)
    return int(raw)


def parse_time(raw, field: str) -> datetime:
    try:
        t = datetime.fromisoformat(str(raw).replace("Z", "+00:00"))
    except ValueError:
        raise InvalidInput(f"{field} must be an ISO 8601 time", field=field) from None
    if t.tzinfo is None:
        raise InvalidInput(f"{field} needs a time zone (e.g. Z)", field=field)
    return t
