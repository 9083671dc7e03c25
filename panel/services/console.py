"""VE consoles: tickets, opening and closing sessions, and the boot console log.

The browser never talks to a node. A console's bytes go browser ⇄ panel (ASGI consumer,
panel/consumers.py) ⇄ Redis ⇄ the node agent's console relay (containers/console.py);
``vzctl enter`` is the same stream in the panel host's terminal. This module holds the
rules every entry point shares:

* who: operators and owners of the VE's tenant, and staff (``require_role``);
* a WebSocket handshake needs a ticket minted by a POST from the VE page: 32 random bytes
  in Redis for ``HAKO_CONSOLE_TICKET_TTL`` seconds, bound to the user, the VE and the kind,
  consumed with GETDEL so that a replay finds nothing;
* how many: at most ``HAKO_CONSOLE_MAX_PER_VE`` open sessions on a VE and
  ``HAKO_CONSOLE_MAX_PER_USER`` per user, counted under the VE's row lock;
* every session is a :class:`~panel.models.ConsoleSession` row with an audit record at
  open and at close (with its duration).
"""
from __future__ import annotations

import json
import secrets
import time
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from containers import console as wire
from containers.messages import sign
from panel.access import require_role
from panel.models import VE, ConsoleSession, Membership

from .audit import audit
from .errors import Conflict, InvalidInput, NotFound, Unavailable

TICKET_PREFIX = "hako:console:ticket:"
KINDS = (ConsoleSession.Kind.SHELL, ConsoleSession.Kind.TTY)
# A session whose end did not report for this long is not counted as open: its panel
# process died without closing it (the consumer touches ``last_seen_at`` every minute).
STALE_AFTER = timedelta(seconds=180)

_redis = None


def redis_client():
    """A synchronous Redis client on the broker (the console's transport)."""
    global _redis
    if _redis is None:
        import redis

        _redis = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    return _redis


def check_kind(kind) -> str:
    if kind not in KINDS:
        raise InvalidInput(_("The console kind must be shell or tty."), field="kind")
    return kind


def _check_open_possible(ve: VE) -> None:
    if ve.state == VE.State.DESTROYED:
        raise NotFound(_("VE not found"))
    if ve.state != VE.State.RUNNING:
        raise Conflict(_("VE %(veid)s is not running; start it to open a console.") % {"veid": ve.veid},
                       code="not-running")


def console_ticket(*, ve: VE, actor, kind: str = "shell", source: str = "web") -> str:
    """Mint a one-time ticket that lets ``actor`` open one ``kind`` console on ``ve``
    through the WebSocket within ``HAKO_CONSOLE_TICKET_TTL`` seconds."""
    require_role(actor, ve.tenant, Membership.Role.OPERATOR, what="VE", source=source)
    check_kind(kind)
    _check_open_possible(ve)
    token = secrets.token_urlsafe(32)
    value = json.dumps({"user": actor.pk, "ve": str(ve.pk), "kind": kind})
    redis_client().set(TICKET_PREFIX + token, value, ex=settings.HAKO_CONSOLE_TICKET_TTL)
    return token


def ticket_consume(token) -> dict | None:
    """The ticket's content, deleted in the same step (GETDEL): a second use finds None."""
    if not isinstance(token, str) or not 20 <= len(token) <= 100:
        return None
    raw = redis_client().getdel(TICKET_PREFIX + token)
    return json.loads(raw) if raw else None


def open_sessions():
    return ConsoleSession.objects.filter(ended_at__isnull=True, last_seen_at__gte=timezone.now() - STALE_AFTER)


def console_open(*, ve: VE, actor, kind: str = "shell", cols: int = 80, rows: int = 24,
                 source: str = "web") -> tuple[ConsoleSession, str]:
    """Open a console on ``ve``: check the role and the bounds, record the session and its
    audit event, and send the node a signed open request. Returns the session and its
    relay id (the capability for its Redis keys: never stored, never shown)."""
    require_role(actor, ve.tenant, Membership.Role.OPERATOR, what="VE", source=source)
    check_kind(kind)
    try:
        cols, rows = wire.check_size(cols, rows)
    except ValueError as e:
        raise InvalidInput(str(e), field="size") from None
    user = actor if getattr(actor, "pk", None) else None
    with transaction.atomic():
        ve = VE.objects.select_for_update(of=("self",)).select_related("node", "tenant").get(pk=ve.pk)
        _check_open_possible(ve)
        if open_sessions().filter(ve=ve).count() >= settings.HAKO_CONSOLE_MAX_PER_VE:
            raise Conflict(_("VE %(veid)s has %(n)s consoles open already; close one first.")
                           % {"veid": ve.veid, "n": settings.HAKO_CONSOLE_MAX_PER_VE}, code="too-many-consoles")
        if user is not None and (open_sessions().filter(user=user).count()
                                 >= settings.HAKO_CONSOLE_MAX_PER_USER):
            raise Conflict(_("You have %(n)s consoles open already; close one first.")
                           % {"n": settings.HAKO_CONSOLE_MAX_PER_USER}, code="too-many-consoles")
        label = getattr(actor, "username", "") if actor is not None else "root@panel-host"
        session = ConsoleSession.objects.create(ve=ve, user=user, actor_label=label[:150], kind=kind,
                                                 source=source[:16])
        audit(action="console.open", actor=actor, tenant=ve.tenant, obj=ve, source=source,
              detail={"session": str(session.pk), "kind": kind})
        node = ve.node
    relay_id = secrets.token_hex(32)
    body = wire.open_body(node=node.name, session=relay_id, veid=ve.veid, kind=kind, cols=cols, rows=rows)
    try:
        redis_client().rpush(wire.open_queue(node.name), json.dumps(sign(body, bytes.fromhex(node.key))))
    except Exception:
        console_close(session, reason="broker-unreachable")
        raise Unavailable(_("The console could not be opened: the broker is unreachable.")) from None
    return session, relay_id


def console_touch(session: ConsoleSession) -> None:
    """The session is still alive (called periodically by its panel end)."""
    ConsoleSession.objects.filter(pk=session.pk).update(last_seen_at=timezone.now())


def console_close(session: ConsoleSession, *, bytes_in: int = 0, bytes_out: int = 0, exit_code=None,
                  reason: str = "closed") -> None:
    """Record the end of a session (once: a second call changes nothing) with its audit
    event, which carries the duration in seconds."""
    now = timezone.now()
    with transaction.atomic():
        done = ConsoleSession.objects.filter(pk=session.pk, ended_at__isnull=True).update(
            ended_at=now, last_seen_at=now, bytes_in=bytes_in, bytes_out=bytes_out, exit_code=exit_code,
            close_reason=reason[:32])
        if not done:
            return
        session = ConsoleSession.objects.select_related("ve__tenant", "user").get(pk=session.pk)
        audit(action="console.close", actor=session.user, tenant=session.ve.tenant, obj=session.ve,
              source=session.source,
              detail={"session": str(session.pk), "kind": session.kind, "reason": reason,
                      "seconds": round((now - session.started_at).total_seconds(), 1),
                      "bytes_in": bytes_in, "bytes_out": bytes_out, "exit_code": exit_code})


def console_log_read(*, ve: VE, actor, source: str = "web", timeout: float = 10) -> str:
    """The VE's console output since its last start (LXC's console log, its last 64 KiB),
    fetched from the node through its console relay. Operators and owners only: a boot log
    may hold what the VE printed on its console."""
    require_role(actor, ve.tenant, Membership.Role.OPERATOR, what="VE", source=source)
    if ve.state == VE.State.DESTROYED:
        raise NotFound(_("VE not found"))
    node = ve.node
    relay_id = secrets.token_hex(32)
    body = wire.open_body(node=node.name, session=relay_id, veid=ve.veid, kind="log")
    r = redis_client()
    r.rpush(wire.open_queue(node.name), json.dumps(sign(body, bytes.fromhex(node.key))))
    out = bytearray()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        item = r.blpop([wire.out_key(relay_id)], timeout=max(1, int(deadline - time.monotonic())))
        if item is None:
            continue
        frame = item[1]
        if frame[:1] == wire.F_DATA:
            out += frame[1:]
        elif frame[:1] == wire.F_ERROR:
            raise Unavailable(frame[1:].decode(errors="replace"))
        else:
            r.delete(wire.out_key(relay_id))
            return out.decode(errors="replace")
    raise Unavailable(_("Node %(node)s did not answer in time.") % {"node": node.name}, code="node-timeout")
