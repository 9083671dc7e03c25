"""Staff pages for moving VEs (issue 9): migrate one VE, a node's maintenance mode, drain.

Thin views over panel/services/migrations.py; staff only. The VE page looks the VE up
through the one scoped door first, so another tenant's VE is a 404 like on every other
object URL; a customer's own VE gets the staff area's 403."""
from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404
from django.shortcuts import redirect, render
from django.utils.translation import gettext as _
from django.views.decorators.http import require_http_methods, require_POST

from panel import access
from panel.models import Node
from panel.services import migrations as svc
from panel.services.errors import InvalidInput, ServiceError

from .common import http_errors


def _staff(request) -> None:
    with http_errors():
        access.require_staff(request.user, what=_("the staff area"))


def _node(node_id) -> Node:
    node = Node.objects.filter(pk=node_id).first()
    if node is None:
        raise Http404(_("node not found"))
    return node


@login_required
@require_http_methods(["GET", "POST"])
def staff_ve_migrate_view(request, ve_id):
    """GET: the target nodes with why each can or cannot take the VE; POST: migrate it."""
    with http_errors():  # the scoped lookup first: another tenant's VE is a 404, as everywhere
        ve = access.ve_get(request.user, ve_id)
    _staff(request)
    error = None
    if request.method == "POST":
        try:
            raw = str(request.POST.get("bwlimit") or "0").strip()
            if not raw.isdigit() or len(raw) > 9:
                raise InvalidInput(_("bwlimit must be KiB/s between 0 and 100000000"), field="bwlimit")
            bwlimit = int(raw)
            job = svc.ve_migrate(ve=ve, target=str(request.POST.get("node", ""))[:63], bwlimit=bwlimit,
                                 actor=request.user, source="web")
            messages.success(request, _("Migration of VE %(veid)s started.") % {"veid": ve.veid})
            return redirect("panel:job-detail", job_id=job.pk)
        except ServiceError as e:
            error = e.message
    targets = [{"node": n, "problem": svc.target_problem(ve, n)}
               for n in Node.objects.exclude(pk=ve.node_id).order_by("name")]
    return render(request, "staff/ve_migrate.html", {"ve": ve, "targets": targets, "error": error},
                  status=400 if error else 200)


@login_required
@require_POST
def staff_node_maintenance_view(request, node_id):
    _staff(request)
    node = _node(node_id)
    on = request.POST.get("maintenance") == "on"
    with http_errors():
        svc.node_set_maintenance(node=node, on=on, actor=request.user, source="web")
    messages.success(request, (_("Node %(node)s is in maintenance mode: it takes no new VEs.") if on else
                               _("Node %(node)s takes new VEs again.")) % {"node": node.name})
    return redirect("panel:staff-nodes")


@login_required
@require_POST
def staff_node_drain_view(request, node_id):
    _staff(request)
    node = _node(node_id)
    try:
        job = svc.node_drain(node=node, actor=request.user, source="web")
    except ServiceError as e:
        messages.error(request, e.message)
        return redirect("panel:staff-nodes")
    messages.success(request, _("Draining node %(node)s: its VEs move away one by one.") % {"node": node.name})
    return redirect("panel:job-detail", job_id=job.pk)
