"""Template filters of the panel: translated state and kind names, OpenVZ-style sizes."""
from __future__ import annotations

from django import template
from django.utils.translation import gettext_lazy as _

from panel.services.validation import human_size

register = template.Library()

# Names shown for states and job kinds; the stored values stay English identifiers.
LABELS = {
    "creating": _("creating"), "stopped": _("stopped"), "starting": _("starting"), "running": _("running"),
    "stopping": _("stopping"), "error": _("error"), "unknown": _("unknown"), "destroyed": _("destroyed"),
    "pending": _("pending"), "succeeded": _("succeeded"), "failed": _("failed"), "canceled": _("canceled"),
    "new": _("new"), "online": _("online"), "lost": _("lost"),
    "create": _("create"), "start": _("start"), "stop": _("stop"), "restart": _("restart"),
    "destroy": _("destroy"), "set": _("change"), "exec": _("run command"), "status": _("status"),
    "owner": _("owner"), "operator": _("operator"), "viewer": _("viewer"),
    "approved": _("approved"), "denied": _("denied"), "superseded": _("superseded"),
    "admin": _("administrator"), "billing": _("billing"), "abuse": _("abuse"),
    "max_ves": _("VEs"), "memory": _("memory"), "disk": _("disk"), "cpuunits": _("CPU units"),
    "addresses": _("addresses"), "backups": _("backups"),
    "migrating": _("migrating"), "migrate": _("migrate"), "drain": _("drain node"),
    "migrate_receive": _("receive migration"), "migrate_send": _("send migration"),
    "migrate_finish": _("finish migration"), "migrate_cleanup": _("migration cleanup"),
}


@register.filter
def label(value) -> str:
    """The translated name of a state or job kind (the raw value if it has none)."""
    return LABELS.get(str(value), value)


@register.filter
def size(value) -> str:
    """Bytes as vzctl shows them: 512M, 2G."""
    return human_size(value) if isinstance(value, int) else "-"


@register.filter
def get(mapping, key):
    return mapping.get(key) if isinstance(mapping, dict) else None


@register.filter
def quota_amounts(amounts) -> list:
    """A quota request's amounts ({field: value}) as (translated name, readable amount)."""
    from panel.services.quotas import FIELDS, show

    if not isinstance(amounts, dict):
        return []
    return [(LABELS.get(f, f), _("unlimited") if amounts[f] is None else show(f, amounts[f]))
            for f in FIELDS if f in amounts]
