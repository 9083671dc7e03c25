"""The audit trail: one append-only record per privileged action, written by the service
in the same transaction as the change it records."""
from __future__ import annotations

import re

from panel.models import AuditEvent

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def clean(value, limit: int = 200):
    """Make a value safe to store and display: control characters escaped, length bounded.

    Structured storage already keeps a newline from starting a new record; escaping keeps
    it from looking like one in a plain-text export either.
    """
    if isinstance(value, str):
        value = _CONTROL.sub(lambda m: "\\x%02x" % ord(m.group()), value)
        return value[:limit]
    if isinstance(value, dict):
        return {clean(k, 64): clean(v, limit) for k, v in list(value.items())[:50]}
    if isinstance(value, (list, tuple)):
        return [clean(v, limit) for v in list(value)[:50]]
    return value


def audit(*, action: str, actor=None, tenant=None, obj=None, result: str = "ok", source: str = "",
          detail: dict | None = None) -> AuditEvent:
    """Record ``action`` (e.g. ``ve.start``). Call inside the service's transaction."""
    object_type = object_id = ""
    if obj is not None:
        object_type = type(obj).__name__.lower()
        object_id = str(getattr(obj, "veid", None) or obj.pk)
    label = ""
    if actor is not None:
        label = getattr(actor, "username", "") or str(actor)
    return AuditEvent.objects.create(
        action=action, actor=actor if getattr(actor, "pk", None) else None, actor_label=clean(label, 150),
        tenant=tenant, object_type=object_type, object_id=clean(object_id, 64), result=result,
        source=clean(source, 64), detail=clean(detail or {}),
    )
