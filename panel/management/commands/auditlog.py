"""``auditlog``: read the audit trail, one line per record, oldest first.

    manage.py auditlog                              the last 100 records
    manage.py auditlog --tenant acme --action ve.  --since 2h
    manage.py auditlog --action auth.login_failed --since 2025-01-31 --limit 1000
    manage.py auditlog --json                       JSON lines, for shipping off-box

``source`` is the channel (web, api, billing:<name>, cli:<user>...); ``address`` the client
address of the web or API request that made the record ('-' outside a request).

Every value is printed with control characters escaped (and quoted when it holds a space,
a quote or '='), so a hostname or reason with a newline in it cannot forge a line.
"""
import json
import re
from datetime import datetime, timedelta, timezone as dt_timezone

from django.core.management.base import BaseCommand, CommandError

from panel.selectors import audit_for
from panel.services.audit import escape
from panel.services.errors import ServiceError

_RELATIVE = re.compile(r"^(\d{1,6})([smhd])$")
_UNIT = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_when(text: str) -> datetime:
    """``30m``, ``2h``, ``7d`` (ago) or an ISO date/time (UTC unless it says otherwise)."""
    m = _RELATIVE.match(text.strip())
    if m:
        return datetime.now(dt_timezone.utc) - timedelta(**{_UNIT[m.group(2)]: int(m.group(1))})
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise CommandError(f"{escape(text)[:40]!r} is not a time: use 2h, 7d or 2025-01-31T12:00") from None
    return when if when.tzinfo else when.replace(tzinfo=dt_timezone.utc)


def fmt(value) -> str:
    text = escape("" if value is None else value)
    if text == "":
        return "-"
    if any(c in text for c in ' "=\\'):
        return json.dumps(text)
    return text


def line(event) -> str:
    obj = f"{event.object_type}:{event.object_id}" if event.object_type else ""
    fields = [
        ("actor", event.actor_label), ("tenant", tenant_of(event)),
        ("action", event.action), ("object", obj), ("result", event.result), ("source", event.source),
        ("address", event.client_address),
    ]
    detail = json.dumps(event.detail, ensure_ascii=True, sort_keys=True, default=str)
    ts = event.ts.astimezone(dt_timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return " ".join([ts] + [f"{k}={fmt(v)}" for k, v in fields] + [f"detail={detail}"])


def tenant_of(event) -> str:
    """The tenant's slug as recorded (it outlives the tenant), else today's."""
    return event.tenant_label or (event.tenant.slug if event.tenant else "")


def as_json(event) -> str:
    return json.dumps({
        "id": event.pk, "ts": event.ts.isoformat(), "actor": event.actor_label, "actor_id": event.actor_id,
        "tenant": tenant_of(event) or None, "tenant_id": event.tenant_id, "action": event.action,
        "object_type": event.object_type, "object_id": event.object_id, "result": event.result,
        "source": event.source, "address": event.client_address, "detail": event.detail,
    }, ensure_ascii=True, sort_keys=True, default=str)


class Command(BaseCommand):
    help = "Print audit records (newest N, in time order), filtered by tenant, action, actor and time."

    def add_arguments(self, parser):
        parser.add_argument("--tenant", help="tenant slug or id")
        parser.add_argument("--action", help="exact action (ve.start) or a prefix ending in '.' (ve.)")
        parser.add_argument("--actor", help="user name")
        parser.add_argument("--object", dest="object_id", help="object id (a VEID for VEs)")
        parser.add_argument("--result", help="ok, noop, denied, failed")
        parser.add_argument("--since", help="2h, 7d or an ISO date/time")
        parser.add_argument("--until", help="2h, 7d or an ISO date/time")
        parser.add_argument("--limit", type=int, default=100)
        parser.add_argument("--json", dest="json_lines", action="store_true", help="one JSON object per line")

    def handle(self, *args, tenant, action, actor, object_id, result, since, until, limit, json_lines, **o):
        try:
            records = list(audit_for(None, tenant=tenant, action=action, actor=actor, object_id=object_id,
                                     result=result, since=parse_when(since) if since else None,
                                     until=parse_when(until) if until else None, limit=limit))
        except ServiceError as e:
            raise CommandError(e.message) from None
        render = as_json if json_lines else line
        for event in reversed(records):
            self.stdout.write(render(event))
