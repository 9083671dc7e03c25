"""OS template services: ``template_build``, ``template_remove``, ``template_set_enabled``,
``template_list``.

Templates live in each node's template cache (OpenVZ's ``/vz/template/cache``); a node
builds the built-in ones itself (busybox at every agent start, debian-12 with debootstrap
on request: about a minute, logged into the job). The panel knows which node holds which
template from the nodes' heartbeats (``Node.info["templates"]``).
"""
from __future__ import annotations

from django.db import transaction
from django.utils.translation import gettext as _

from containers.messages import TEMPLATE_RE
from panel.access import require_staff
from panel.models import Job, Node, OSTemplate

from .audit import audit
from .errors import InvalidInput, NotFound, Unavailable
from .jobs import job_create

# The templates a node can build by itself (containers.templates.BUILTIN checks again).
BUILDABLE = {
    "busybox": "BusyBox userland with init, syslogd and crond",
    "debian-12": "Debian 12 (bookworm) with systemd and OpenSSH",
}


def _check_name(name, *, buildable: bool) -> str:
    if not isinstance(name, str) or not TEMPLATE_RE.match(name):
        shown = name[:64] if isinstance(name, str) else type(name).__name__
        raise InvalidInput(_("template name %(name)r is not valid: use lower-case letters, digits, '.' and '-'")
                           % {"name": shown}, field="name")
    if buildable and name not in BUILDABLE:
        raise InvalidInput(_("nodes cannot build an OS template named %(name)r; they build: %(buildable)s")
                           % {"name": name, "buildable": ", ".join(sorted(BUILDABLE))}, field="name")
    return name


def _online(node: Node) -> Node:
    if not isinstance(node, Node):
        raise InvalidInput(_("give the node to build on"), field="node")
    if node.state != Node.State.ONLINE:
        raise Unavailable(_("Node %(node)s is %(state)s; it cannot take this job now.")
                          % {"node": node.name, "state": node.state}, code="node-unavailable",
                          field="node")
    return node


def template_build(*, node: Node, name: str, actor=None, source: str = "") -> Job:
    """Have ``node`` build the built-in OS template ``name`` into its template cache (and
    its golden image). A template already in the cache is kept: remove it to rebuild."""
    require_staff(actor, what="managing OS templates", source=source)
    name = _check_name(name, buildable=True)
    node = _online(node)
    with transaction.atomic():
        tmpl, _created = OSTemplate.objects.get_or_create(name=name, defaults={"description": BUILDABLE[name]})
        job = job_create(kind="template_build", node=node, ve=None, actor=actor, args={"template": name})
        audit(action="template.build", actor=actor, obj=tmpl, source=source,
              detail={"job": str(job.id), "node": node.name, "template": name})
    return job


def template_remove(*, node: Node, name: str, actor=None, source: str = "") -> Job:
    """Delete OS template ``name`` and its golden images from ``node``'s cache. VEs made from
    it keep their own disks and still start; new VEs need the template again."""
    require_staff(actor, what="managing OS templates", source=source)
    name = _check_name(name, buildable=False)
    node = _online(node)
    with transaction.atomic():
        tmpl = OSTemplate.objects.filter(name=name).first()
        job = job_create(kind="template_remove", node=node, ve=None, actor=actor, args={"template": name})
        audit(action="template.remove", actor=actor, obj=tmpl, source=source,
              detail={"job": str(job.id), "node": node.name, "template": name})
    return job


def template_set_enabled(*, name: str, enabled: bool, actor=None, source: str = "") -> OSTemplate:
    """Offer OS template ``name`` to customers for new VEs, or stop offering it (staff).
    VEs made from a disabled template keep running; the node caches are not touched. A
    template known only from a node's cache or as buildable gets its row here."""
    require_staff(actor, what="managing OS templates", source=source)
    name = _check_name(name, buildable=False)
    if not isinstance(enabled, bool):
        raise InvalidInput(_("enabled must be yes or no"), field="enabled")
    # The nodes' caches by scanning, not a JSON "contains" lookup: SQLite (the embedded
    # default) has none.
    known = name in BUILDABLE or any(
        isinstance(info, dict) and isinstance(info.get("templates"), list) and name in info["templates"]
        for info in Node.objects.values_list("info", flat=True))
    with transaction.atomic():
        tmpl = OSTemplate.objects.select_for_update().filter(name=name).first()
        if tmpl is None:
            if not known:
                raise NotFound(_("OS template %(name)r does not exist") % {"name": name}, field="name")
            tmpl = OSTemplate.objects.create(name=name, description=BUILDABLE.get(name, ""), enabled=enabled)
            previous = None
        else:
            previous = tmpl.enabled
            tmpl.enabled = enabled
            tmpl.save(update_fields=["enabled"])
        audit(action="template.enable" if enabled else "template.disable", actor=actor, obj=tmpl, source=source,
              detail={"template": name, "previous": previous})
    return tmpl


def template_list() -> list[dict]:
    """Every known template (registered or buildable) with the nodes whose cache holds it."""
    rows = {t.name: {"name": t.name, "description": t.description or BUILDABLE.get(t.name, ""),
                     "enabled": t.enabled, "nodes": []}
            for t in OSTemplate.objects.all()}
    for name, desc in BUILDABLE.items():
        rows.setdefault(name, {"name": name, "description": desc, "enabled": True, "nodes": []})
    for node in Node.objects.order_by("name"):
        cached = node.info.get("templates") if isinstance(node.info, dict) else None
        for name in cached if isinstance(cached, list) else []:
            if isinstance(name, str) and TEMPLATE_RE.match(name):
                rows.setdefault(name, {"name": name, "description": "", "enabled": False, "nodes": []})
                rows[name]["nodes"].append(node.name)
    return [rows[k] for k in sorted(rows)]
