"""Outbound webhooks of the billing API (issue 8 item 7), per Standard Webhooks 1.0.

Events are DomainEvent rows written in the same transaction as the change
(``event_emit``). The panel worker fans each event out to the enabled endpoints of every
billing account linked to its VE or tenant (``event_fanout``: one WebhookDelivery per
endpoint, payload built with that account's external ids), then delivers each one
(``delivery_attempt``): signed ``{id}.{timestamp}.{body}`` with HMAC-SHA256, 2xx is
success, 410 disables the endpoint, anything else is retried with exponential backoff
(``BACKOFF``) up to ``MAX_ATTEMPTS``. A beat sweep (``webhooks_sweep``) picks up events
and retries whose task message was lost.

Endpoint URLs are a server-side request the billing account chooses, so they are held to
public destinations (SSRF guard, ``check_destination``): at registration, and again at
every delivery on the addresses the connection then really uses, so that a name that
resolved to a public address once and to 127.0.0.1 later (DNS rebinding) is refused.
``HAKO_WEBHOOK_ALLOW_PRIVATE`` lifts the address rule (receivers on a private LAN, tests).
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import ipaddress
import json
import logging
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from datetime import datetime, timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import URLValidator
from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from panel.models import VE, BillingAccount, BillingLink, DomainEvent, WebhookDelivery, WebhookEndpoint

from .audit import audit
from .errors import InvalidInput, NotFound

log = logging.getLogger("hako.webhooks")

EVENT_TYPES = ("service.created", "service.suspended", "service.unsuspended", "service.terminated",
               "service.plan_changed", "job.failed", "quota_request.decided")
# Seconds to wait after attempt n (1-based) failed; the first attempt is immediate.
BACKOFF = (5, 30, 120, 600, 1800, 7200, 18000, 36000, 50400, 72000, 86400)
MAX_ATTEMPTS = len(BACKOFF) + 1
TIMEOUT = 15.0
MAX_ENDPOINTS = 20
TASK_DELIVER = "hako.panel.webhook_deliver"
TASK_FANOUT = "hako.panel.webhook_fanout"


# --- signing ------------------------------------------------------------------------------------

def sign(secret: str, msg_id: str, timestamp: int, body: str) -> str:
    """The ``webhook-signature`` header value: ``v1,<base64 HMAC-SHA256>`` of
    ``{msg_id}.{timestamp}.{body}`` keyed with the secret's base64-decoded bytes."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    mac = hmac.new(key, f"{msg_id}.{timestamp}.{body}".encode(), hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def body_of(delivery: WebhookDelivery) -> str:
    return json.dumps(delivery.payload, separators=(",", ":"), sort_keys=True)


# --- emitting -----------------------------------------------------------------------------------

def _linked(tenant_id, ve_id) -> bool:
    links = BillingLink.objects.filter(kind=BillingLink.Kind.TENANT, object_id=tenant_id)
    if ve_id is not None:
        links = links | BillingLink.objects.filter(kind=BillingLink.Kind.VE, object_id=ve_id)
    return links.exists()


def event_emit(kind: str, *, tenant_id, ve: VE | None = None, **data) -> DomainEvent | None:
    """Record event ``kind`` about ``ve`` (or the tenant) in the caller's transaction, if
    a billing account is linked to either (else nobody could receive it: None). Its
    fan-out is queued when the transaction commits."""
    ve_id = ve.pk if ve is not None else None
    if not _linked(tenant_id, ve_id):
        return None
    payload = dict(data)
    if ve is not None:
        payload.update(ve=str(ve.pk), veid=ve.veid)
    event = DomainEvent.objects.create(kind=kind, tenant_id=tenant_id, payload=payload)
    transaction.on_commit(lambda: _send(TASK_FANOUT, event.pk))
    return event


def _send(task: str, arg, countdown: float | None = None) -> None:
    from celery import current_app

    try:
        current_app.send_task(task, args=[str(arg)], queue="panel", countdown=countdown)
    except Exception:  # the broker is down: the beat sweep finds the row later
        log.exception("could not queue %s(%s)", task, arg)


# --- fan-out --------------------------------------------------------------------------------------

def _data(event: DomainEvent, account: BillingAccount) -> dict:
    """The event's thin payload in ``account``'s terms (its external ids)."""
    def ext(kind, object_id):
        if object_id is None:
            return None
        return (BillingLink.objects.filter(account=account, kind=kind, object_id=object_id)
                .values_list("external_id", flat=True).first())

    p = dict(event.payload)
    ve_id = p.pop("ve", None)
    data = {}
    if ve_id:
        data.update(id=ve_id, external_id=ext(BillingLink.Kind.VE, ve_id))
    data["account"] = {"id": str(event.tenant_id) if event.tenant_id else None,
                       "external_id": ext(BillingLink.Kind.TENANT, event.tenant_id)}
    data.update(p)
    return data


def _accounts(event: DomainEvent) -> list[BillingAccount]:
    ids = set(BillingLink.objects.filter(kind=BillingLink.Kind.TENANT, object_id=event.tenant_id)
              .values_list("account_id", flat=True)) if event.tenant_id else set()
    if event.payload.get("ve"):
        ids |= set(BillingLink.objects.filter(kind=BillingLink.Kind.VE, object_id=event.payload["ve"])
                   .values_list("account_id", flat=True))
    return list(BillingAccount.objects.filter(pk__in=ids, enabled=True))


def event_fanout(event_id, *, now=None) -> list[WebhookDelivery]:
    """One delivery per enabled endpoint that wants the event (a repeat adds none); marks
    the event delivered (handed to its endpoints) and queues the new deliveries."""
    now = now or timezone.now()
    created = []
    with transaction.atomic():
        event = DomainEvent.objects.select_for_update().filter(pk=event_id).first()
        if event is None:
            return []
        for account in _accounts(event):
            endpoints = [e for e in WebhookEndpoint.objects.filter(account=account, enabled=True) if e.wants(event.kind)]
            if not endpoints:
                continue
            payload = {"type": event.kind, "timestamp": event.created_at.isoformat().replace("+00:00", "Z"),
                       "data": _data(event, account)}
            for endpoint in endpoints:
                delivery, new = WebhookDelivery.objects.get_or_create(
                    endpoint=endpoint, event=event,
                    defaults={"event_type": event.kind, "payload": payload, "next_attempt_at": now})
                if new:
                    created.append(delivery)
        if event.delivered_at is None:
            DomainEvent.objects.filter(pk=event.pk).update(delivered_at=now)
        for d in created:
            transaction.on_commit(lambda d=d: _send(TASK_DELIVER, d.pk))
    return created


# --- delivery ------------------------------------------------------------------------------------

class URLRefused(OSError):
    """A webhook destination that is not a public address (or does not resolve). An
    OSError, so that urllib reports it like any connection failure."""


def address_problem(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """What kind of non-public address ``ip`` is (``loopback``, ``private``...), or None
    for a public one. IPv4 inside IPv6 (mapped, 6to4, Teredo) is judged as IPv4."""
    if ip.version == 6:
        inner = ip.ipv4_mapped or ip.sixtofour or (ip.teredo[1] if ip.teredo else None)
        if inner is not None:
            return address_problem(inner)
    for kind, hit in (("unspecified", ip.is_unspecified), ("loopback", ip.is_loopback),
                      ("link-local", ip.is_link_local), ("multicast", ip.is_multicast),
                      ("private", ip.is_private), ("reserved", ip.is_reserved)):
        if hit:
            return kind
    return None if ip.is_global else "non-public"


def check_destination(host: str, port: int) -> list[tuple]:
    """Resolve ``host`` and return its getaddrinfo entries, refusing (URLRefused) a name
    that does not resolve or any of whose addresses is not public: a name with one public
    and one internal address would let the connection pick the internal one. With
    HAKO_WEBHOOK_ALLOW_PRIVATE every address is allowed."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError, ValueError):
        raise URLRefused(_("the host %(host)s does not resolve") % {"host": host[:253]}) from None
    if not settings.HAKO_WEBHOOK_ALLOW_PRIVATE:
        for info in infos:
            ip = ipaddress.ip_address(info[4][0].split("%", 1)[0])
            kind = address_problem(ip)
            if kind:
                raise URLRefused(
                    _("the host %(host)s resolves to %(ip)s (%(kind)s), not a public address; webhooks are "
                      "only sent to public addresses") % {"host": host[:253], "ip": ip, "kind": kind})
    return infos


def _guarded_create_connection(address, timeout=socket._GLOBAL_DEFAULT_TIMEOUT, source_address=None):
    """socket.create_connection that connects only to the addresses check_destination
    approved in this very call: no second lookup an attacker's DNS could answer differently."""
    host, port = address
    error = None
    for family, type_, proto, _canon, sockaddr in check_destination(host, port):
        sock = socket.socket(family, type_, proto)
        try:
            if timeout is not socket._GLOBAL_DEFAULT_TIMEOUT:
                sock.settimeout(timeout)
            if source_address:
                sock.bind(source_address)
            sock.connect(sockaddr)
            return sock
        except OSError as e:
            sock.close()
            error = e
    raise error or URLRefused(f"cannot connect to {host}")


class _GuardedHTTPConnection(http.client.HTTPConnection):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._create_connection = _guarded_create_connection


class _GuardedHTTPSConnection(http.client.HTTPSConnection):
    """TLS still checks the certificate against the URL's host name (SNI too)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._create_connection = _guarded_create_connection


class _GuardedHTTPHandler(urllib.request.HTTPHandler):
    def http_open(self, req):
        return self.do_open(_GuardedHTTPConnection, req)


class _GuardedHTTPSHandler(urllib.request.HTTPSHandler):
    def https_open(self, req):
        return self.do_open(_GuardedHTTPSConnection, req, context=self._context)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A 3xx is a failed attempt (Standard Webhooks): never follow it elsewhere."""

    def redirect_request(self, *args, **kwargs):
        return None


# No proxies from the environment: the guard must judge the real destination, not a proxy.
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirect, _GuardedHTTPHandler,
                                      _GuardedHTTPSHandler)


def http_post(url: str, body: bytes, headers: dict, timeout: float = TIMEOUT) -> tuple[int, dict]:
    """POST and return (status, headers); HTTP errors are answers, not exceptions."""
    req = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with _opener.open(req, timeout=timeout) as resp:
            resp.read(4096)
            return resp.status, dict(resp.headers)
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers or {})


def _retry_after(headers: dict) -> int:
    value = {k.lower(): v for k, v in headers.items()}.get("retry-after", "")
    return min(int(value), 86400) if str(value).isdigit() else 0


def delivery_attempt(delivery_id, *, now: datetime | None = None, post=http_post) -> WebhookDelivery | None:
    """Make one attempt of a pending delivery that is due at ``now``; record it, and on
    failure schedule the next (``apply_async(countdown=...)``) or give up. Returns the
    delivery as left, or None if there was nothing to do (not pending, not yet due)."""
    now = now or timezone.now()
    d = WebhookDelivery.objects.select_related("endpoint", "event").filter(pk=delivery_id).first()
    if d is None or d.status != WebhookDelivery.Status.PENDING:
        return None
    if d.next_attempt_at and d.next_attempt_at > now + timedelta(seconds=1):
        return None
    endpoint = d.endpoint
    if not endpoint.enabled:
        WebhookDelivery.objects.filter(pk=d.pk, status=WebhookDelivery.Status.PENDING).update(
            status=WebhookDelivery.Status.FAILED, last_error="endpoint disabled")
        return WebhookDelivery.objects.get(pk=d.pk)
    body = body_of(d)
    ts = int(now.timestamp())
    headers = {"content-type": "application/json", "user-agent": "Hako-Webhooks/1",
               "webhook-id": d.message_id, "webhook-timestamp": str(ts),
               "webhook-signature": sign(endpoint.secret, d.message_id, ts, body)}
    code, error, resp_headers = None, "", {}
    started = time.monotonic()
    try:
        code, resp_headers = post(endpoint.url, body.encode(), headers)
    except Exception as e:  # refused, timeout, DNS, TLS: a failed attempt like a 5xx
        error = f"{type(e).__name__}: {e}"[:500]
    ms = int((time.monotonic() - started) * 1000)
    attempt = d.attempts + 1
    ok = code is not None and 200 <= code < 300
    if not ok and not error:
        error = f"HTTP {code}"
    entry = {"attempt": attempt, "at": now.isoformat(), "status_code": code, "error": error, "duration_ms": ms}
    fields = {"attempts": attempt, "last_status_code": code, "last_error": error, "log": [*d.log, entry][-50:]}
    retry_in = None
    if ok:
        fields.update(status=WebhookDelivery.Status.SUCCEEDED, delivered_at=now, next_attempt_at=None)
    elif code == 410:
        fields.update(status=WebhookDelivery.Status.FAILED, next_attempt_at=None)
        WebhookEndpoint.objects.filter(pk=endpoint.pk).update(enabled=False, disabled_reason="410 Gone from endpoint")
    elif attempt >= MAX_ATTEMPTS:
        fields.update(status=WebhookDelivery.Status.FAILED, next_attempt_at=None)
    else:
        retry_in = max(BACKOFF[attempt - 1], _retry_after(resp_headers))
        fields["next_attempt_at"] = now + timedelta(seconds=retry_in)
    # Conditional on the attempt count, so a duplicate task message cannot record twice.
    n = WebhookDelivery.objects.filter(pk=d.pk, attempts=d.attempts,
                                       status=WebhookDelivery.Status.PENDING).update(**fields)
    log.info("webhook %s attempt %s to %s: %s%s", d.pk, attempt, endpoint.url, code or error,
             f", retry in {retry_in}s" if retry_in else "")
    if n and retry_in is not None:
        from panel.tasks import webhook_deliver

        webhook_deliver.apply_async(args=[str(d.pk)], countdown=retry_in, queue="panel")
    return WebhookDelivery.objects.get(pk=d.pk)


def webhooks_sweep(*, now=None) -> dict:
    """Queue what a lost task message left behind: events not yet fanned out and pending
    deliveries overdue by a minute."""
    now = now or timezone.now()
    events = list(DomainEvent.objects.filter(delivered_at__isnull=True, created_at__lt=now - timedelta(seconds=60))
                  .values_list("pk", flat=True)[:500])
    for pk in events:
        event_fanout(pk, now=now)
    due = list(WebhookDelivery.objects.filter(status=WebhookDelivery.Status.PENDING,
                                              next_attempt_at__lt=now - timedelta(seconds=60))
               .values_list("pk", flat=True)[:500])
    for pk in due:
        _send(TASK_DELIVER, pk)
    return {"events": len(events), "deliveries": len(due)}


# --- management (billing API) --------------------------------------------------------------------

def _check_url(url) -> str:
    """An endpoint URL: http(s), no credentials, a host that resolves to public addresses
    only (unless HAKO_WEBHOOK_ALLOW_PRIVATE); refusals are ``url-not-allowed``."""
    if not isinstance(url, str) or len(url) > 2000:
        raise InvalidInput(_("url must be an http(s) URL of at most 2000 characters"), field="url")
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
    except ValueError:
        raise InvalidInput(_("url must be an http(s) URL"), field="url") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise InvalidInput(_("url must be an http or https URL"), field="url", code="url-not-allowed")
    if "@" in parts.netloc:
        raise InvalidInput(_("url must not carry credentials (user:password@)"), field="url",
                           code="url-not-allowed")
    if not parts.hostname:
        raise InvalidInput(_("url must name a host"), field="url")
    try:
        check_destination(parts.hostname, port)
    except URLRefused as e:
        raise InvalidInput(_("url refused: %(why)s") % {"why": e}, field="url", code="url-not-allowed") from None
    try:
        URLValidator(schemes=["http", "https"])(url)
    except ValidationError:
        raise InvalidInput(_("url must be an http(s) URL"), field="url") from None
    return url


def endpoint_create(*, account: BillingAccount, url, event_types=None, source: str = "") -> WebhookEndpoint:
    """A new endpoint of ``account``; its secret is in the returned row (show it once)."""
    url = _check_url(url)
    event_types = list(dict.fromkeys(event_types or []))
    if any(t not in EVENT_TYPES for t in event_types):
        raise InvalidInput(f"event_types must be among: {', '.join(EVENT_TYPES)}", field="event_types")
    with transaction.atomic():
        if WebhookEndpoint.objects.filter(account=account).count() >= MAX_ENDPOINTS:
            raise InvalidInput(f"at most {MAX_ENDPOINTS} endpoints per billing account", field="url")
        endpoint = WebhookEndpoint.objects.create(account=account, url=url, event_types=event_types)
        audit(action="webhook_endpoint.create", obj=endpoint, source=source,
              detail={"account": account.name, "url": url, "event_types": event_types})
    return endpoint


def endpoints_of(account: BillingAccount):
    return WebhookEndpoint.objects.filter(account=account).order_by("created_at")


def deliveries_of(account: BillingAccount, *, status: str | None = None):
    qs = WebhookDelivery.objects.select_related("endpoint", "event").filter(endpoint__account=account)
    if status:
        if status not in WebhookDelivery.Status.values:
            raise InvalidInput(f"status must be among: {', '.join(WebhookDelivery.Status.values)}", field="status")
        qs = qs.filter(status=status)
    return qs.order_by("-created_at", "-id")


def delivery_get(account: BillingAccount, ref) -> WebhookDelivery:
    import uuid

    try:
        pk = uuid.UUID(str(ref))
    except ValueError:
        pk = None
    d = deliveries_of(account).filter(pk=pk).first() if pk else None
    if d is None:
        raise NotFound(f"delivery {str(ref)[:64]!r} not found")
    return d


def delivery_redeliver(*, account: BillingAccount, delivery: WebhookDelivery, source: str = "",
                       now=None) -> WebhookDelivery:
    """Send a delivery again (manual replay): pending, due now, with a fresh round of
    attempts; the same webhook-id, so a receiver that has it already can drop it."""
    if not delivery.endpoint.enabled:
        from .errors import Conflict

        raise Conflict("the endpoint is disabled", code="endpoint-disabled")
    now = now or timezone.now()
    with transaction.atomic():
        WebhookDelivery.objects.filter(pk=delivery.pk).update(
            status=WebhookDelivery.Status.PENDING, attempts=0, next_attempt_at=now, delivered_at=None)
        audit(action="webhook_delivery.redeliver", obj=delivery, source=source,
              detail={"account": account.name, "event_type": delivery.event_type})
        transaction.on_commit(lambda: _send(TASK_DELIVER, delivery.pk))
    delivery.refresh_from_db()
    return delivery

