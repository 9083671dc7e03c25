"""The staff area: the fleet's nodes, every VE and every job, with filters. Staff only;
Django's own admin stays at /admin/."""
from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.shortcuts import render
from django.utils import timezone

from panel import access
from panel.models import Node, Tenant

from .common import http_errors
from .lists import JOB_STATES, VE_STATES, job_kinds, job_list, node_list, page_of, ve_list


def _staff(request) -> None:
    with http_errors():
        access.require_staff(request.user, what="the staff area")


@login_required
def staff_nodes_view(request):
    with http_errors():
        nodes = list(node_list(request.user))
    return render(request, "staff/nodes.html", {"nodes": nodes, "now": timezone.now()})


def _filter_choices() -> dict:
    return {"node_names": list(Node.objects.order_by("name").values_list("name", flat=True)),
            "tenant_slugs": list(Tenant.objects.order_by("slug").values_list("slug", flat=True)[:500])}


@login_required
def staff_ves_view(request):
    _staff(request)
    state, q, node = request.GET.get("state", ""), request.GET.get("q", "").strip(), request.GET.get("node", "")
    qs, sort = ve_list(request.user, None, state=state, q=q, node=node, sort=request.GET.get("sort", ""))
    tenant_slug = request.GET.get("tenant", "")
    if tenant_slug:
        qs = qs.filter(tenant__slug=tenant_slug[:63])
    return render(request, "staff/ves.html", {
        "page": page_of(qs, request.GET.get("page")), "states": VE_STATES, "state": state, "q": q,
        "node": node, "tenant": tenant_slug, "sort": sort, **_filter_choices()})


@login_required
def staff_jobs_view(request):
    _staff(request)
    f = {k: request.GET.get(k, "") for k in ("state", "kind", "node", "tenant")}
    qs = job_list(request.user, None, state=f["state"], kind=f["kind"], node=f["node"], tenant_slug=f["tenant"])
    return render(request, "staff/jobs.html", {
        "page": page_of(qs, request.GET.get("page")), "states": JOB_STATES, "kinds": job_kinds(request.user, None),
        "f": f, **_filter_choices()})
