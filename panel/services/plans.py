"""Plans: named bundles of VE resources that staff admins manage (``plan_create``,
``plan_update``, ``plan_delete``) and that VEs are created from or changed to (services.ves)."""
from __future__ import annotations

import re

from django.db import transaction
from django.utils.translation import gettext as _

from panel.access import plans_for, require_staff
from panel.models import VE, Plan

from .audit import audit
from .errors import Conflict, InvalidInput, NotFound, field_label
from .quotas import check_text
from .validation import check_range, parse_limit, parse_rate, parse_size

NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
RESOURCE_FIELDS = ("memory", "swap", "disk", "cpuunits", "cpulimit", "numproc")
SIZE_FIELDS = ("memory", "swap", "disk")  # bytes, or sizes like 512M
ADDRESSES_MAX = 64  # what one allocation hands out at most (services.network)
DEFAULTS = {"swap": 0, "cpuunits": 1000, "cpulimit": 0, "numproc": 512, "addresses": 1, "bandwidth": 0}


def _clean(values: dict) -> dict:
    out = {}
    for field, raw in values.items():
        if field in RESOURCE_FIELDS:
            if raw is None:
                raise InvalidInput(_("%(field)s: give a value") % {"field": field_label(field)}, field=field)
            parse = parse_size if field in SIZE_FIELDS else parse_limit
            out[field] = check_range(parse(raw, field=field), field=field)
        elif field == "addresses":
            whole = isinstance(raw, int) or (isinstance(raw, str) and raw.isascii() and raw.isdigit())
            if isinstance(raw, bool) or not whole:
                raise InvalidInput(_("addresses: expected a whole number"), field=field)
            n = int(raw)
            if not 0 <= n <= ADDRESSES_MAX:
                raise InvalidInput(_("addresses must be between 0 and %(max)d") % {"max": ADDRESSES_MAX}, field=field)
            out[field] = n
        elif field == "bandwidth":
            out[field] = parse_rate(raw, field=field)
        elif field == "description":
            out[field] = check_text(raw, field="description", limit=200, required=False)
        elif field == "enabled":
            if not isinstance(raw, bool):
                raise InvalidInput(_("enabled must be yes or no"), field=field)
            out[field] = raw
        else:
            raise InvalidInput(_("unknown plan parameter %(name)r") % {"name": str(field)[:32]}, field=str(field)[:32])
    return out


def plan_create(*, name: str, actor=None, source: str = "", **values) -> Plan:
    """Create a plan (staff). ``memory`` and ``disk`` are required; sizes in bytes or as
    ``512M``; ``bandwidth`` in bits/s (``100M``); the rest default like vzctl's."""
    require_staff(actor, what="managing plans", source=source)
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise InvalidInput(_("plan name must be lower-case letters, digits and '-'"), field="name")
    missing = [f for f in ("memory", "disk") if values.get(f) is None]
    if missing:
        raise InvalidInput(_("a plan needs %(fields)s") % {"fields": ", ".join(field_label(f) for f in missing)},
                           field=missing[0])
    clean = _clean({**DEFAULTS, **values})
    with transaction.atomic():
        if Plan.objects.select_for_update().filter(name=name).exists():
            raise Conflict(_("plan %(name)s already exists") % {"name": name}, field="name")
        plan = Plan.objects.create(name=name, **clean)
        audit(action="plan.create", actor=actor, obj=plan, source=source, detail={"name": name, **clean})
    return plan


def plan_update(*, plan: Plan, actor=None, source: str = "", **changes) -> Plan:
    """Change a plan (staff). VEs already on it keep their sizes until they change plan:
    a plan is what is sold from now on, not a live template of every VE."""
    require_staff(actor, what="managing plans", source=source)
    clean = _clean(changes)
    if not clean:
        raise InvalidInput(_("nothing to change: give at least one parameter"))
    with transaction.atomic():
        locked = Plan.objects.select_for_update().get(pk=plan.pk)
        previous = {f: getattr(locked, f) for f in clean}
        for field, value in clean.items():
            setattr(locked, field, value)
        locked.save()
        audit(action="plan.update", actor=actor, obj=locked, source=source,
              detail={"name": locked.name, "changes": clean, "previous": previous})
    return locked


def plan_delete(*, plan: Plan, actor=None, source: str = "") -> None:
    """Delete a plan that no VE was ever created from or changed to (staff). A plan in use,
    even only by destroyed VEs whose records keep its name, is retired instead: disable it
    (``plan_update(enabled=False)``) and it is no longer offered."""
    require_staff(actor, what="managing plans", source=source)
    with transaction.atomic():
        locked = Plan.objects.select_for_update().filter(pk=plan.pk).first()
        if locked is None:
            raise NotFound(_("plan %(name)r does not exist") % {"name": plan.name}, field="plan")
        used = VE.objects.filter(plan=locked).exclude(state=VE.State.DESTROYED).count()
        if used:
            raise Conflict(_("plan %(name)s is in use (VEs: %(count)d): disable it instead, so that it is no "
                             "longer offered") % {"name": locked.name, "count": used}, code="plan-in-use")
        if VE.objects.filter(plan=locked).exists():
            raise Conflict(_("plan %(name)s is recorded on destroyed VEs: disable it instead")
                           % {"name": locked.name}, code="plan-in-use")
        detail = {"name": locked.name, **{f: getattr(locked, f) for f in (*RESOURCE_FIELDS, "addresses", "bandwidth")}}
        audit(action="plan.delete", actor=actor, obj=locked, source=source, detail=detail)
        locked.delete()


def plan_resolve(plan, actor) -> Plan:
    """A Plan given as an object or a name, that ``actor`` may pick (enabled, or staff)."""
    if isinstance(plan, Plan):
        name = plan.name
    elif isinstance(plan, str):
        name = plan
    else:
        raise InvalidInput(_("plan must be a plan name"), field="plan")
    found = plans_for(actor).filter(name=name).first()
    if found is None:
        raise NotFound(_("plan %(name)r does not exist") % {"name": name[:63]}, field="plan")
    return found


def plan_ve_values(plan: Plan) -> dict:
    """The VE fields a plan sets (services.ves: create defaults, change plan)."""
    values = {f: getattr(plan, f) for f in RESOURCE_FIELDS}
    values["rate_in"] = values["rate_out"] = plan.bandwidth
    return values
