"""The audit trail: one append-only record per privileged action, written by the service
in the same transaction as the change it records."""
from __future__ import annotations

import contextvars
import ipaddress
import re
from contextlib import contextmanager

from panel.models import AuditEvent

# The peer address of the web or API request being served (set by
# panel.middleware.ClientAddressMiddleware), so that every record made while serving it
# carries the address without each service taking one more argument.
_client_address: contextvars.ContextVar[str | None] = contextvars.ContextVar("hako_client_address", default=None)
# The request's channel (web, api, billing-api), for records whose caller names none (an
# access door's denial): explicit sources ("web", "billing:<name>") always win.
_channel: contextvars.ContextVar[str] = contextvars.ContextVar("hako_channel", default="")

# C0 and C1 controls, DEL and the Unicode line/paragraph separators: anything a log viewer
# or terminal may take as the end of a line or an escape sequence.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def clean(value, limit: int = 200):
    """Make a value safe to store and display: control characters escaped, length bounded.

    Structured storage already keeps a newline from starting a new record; escaping keeps
    it from looking like one in a plain-text export either.
    """
    if isinstance(value, str):
        return escape(value)[:limit]
    if isinstance(value, dict):
        return {clean(k, 64): clean(v, limit) for k, v in list(value.items())[:50]}
    if isinstance(value, (list, tuple)):
        return [clean(v, limit) for v in list(value)[:50]]
    return value


def valid_address(value) -> str | None:
    """``value`` as a normalised IP address, or None when it is not one (a unix socket
    peer, a test client's junk): the address column only ever holds addresses."""
    try:
        return str(ipaddress.ip_address(str(value).strip()))
    except ValueError:
        return None


@contextmanager
def client_address(address, channel: str = ""):
    """Make records written inside the block carry ``address`` (the request's peer) and,
    where their caller names no source, ``channel``."""
    token = _client_address.set(valid_address(address) if address else None)
    token2 = _channel.set(channel)
    try:
        yield
    finally:
        _channel.reset(token2)
        _client_address.reset(token)


def current_client_address() -> str | None:
    return _client_address.get()


def audit(*, action: str, actor=None, tenant=None, obj=None, result: str = "ok", source: str = "",
          detail: dict | None = None, address: str | None = None) -> AuditEvent:
    """Record ``action`` (e.g. ``ve.start``). Call inside the service's transaction.

    ``source`` names the channel (default: the request's, if any); the client address is
    ``address`` when given, else the one of the request being served (None outside a
    request: CLI, workers, beat)."""
    object_type = object_id = ""
    if obj is not None:
        object_type = type(obj).__name__.lower()
        object_id = str(getattr(obj, "veid", None) or obj.pk)
    label = ""
    if actor is not None:
        label = getattr(actor, "username", "") or str(actor)
    return AuditEvent.objects.create(
        action=clean(action, 64), actor=actor if getattr(actor, "pk", None) else None, actor_label=clean(label, 150),
        tenant=tenant, tenant_label=clean(getattr(tenant, "slug", "") or "", 63), object_type=object_type,
        object_id=clean(object_id, 64), result=clean(result, 16), source=clean(source or _channel.get(), 64),
        client_address=valid_address(address) if address else current_client_address(), detail=clean(detail or {}),
    )


def escape(value) -> str:
    """``value`` as one line of printable text, for plain-text output of audit records."""
    return _CONTROL.sub(_escape_one, str(value))


def _escape_one(m) -> str:
    code = ord(m.group())
    return "\\x%02x" % code if code < 0x100 else "\\u%04x" % code


def audit_token_use(*, token_label: str, actor=None, tenant=None, result: str = "ok", source: str = "",
                    detail: dict | None = None) -> AuditEvent:
    """Record a use of an API token (the API and billing issues call this on every
    authenticated request). Only the token's label or prefix is stored, never the secret."""
    return audit(action="token.use", actor=actor, tenant=tenant, result=result, source=source,
                 detail={"token": token_label, **(detail or {})})
