"""Reads behind the list pages: filtering, sorting and paging over querysets that come
from the access door (panel.access), so a list can never show another tenant's rows.

Each list costs a fixed number of queries whatever its length: the related rows a page
shows are joined in (select_related) and nothing is fetched per row.
"""
from __future__ import annotations

from django.core.paginator import Page, Paginator

from panel import access
from panel.models import VE, Job, Node, Tenant

PAGE_SIZE = 50

VE_SORTS = {"veid": "veid", "hostname": "hostname", "state": "state", "memory": "memory", "disk": "disk",
            "nproc": "nproc", "node": "node__name", "tenant": "tenant__slug"}
JOB_STATES = [s for s, _ in Job.State.choices]
VE_STATES = [s for s, _ in VE.State.choices if s != VE.State.DESTROYED]


def _sort(qs, sort: str, allowed: dict, default: str):
    key = sort.lstrip("-") if sort else ""
    if key not in allowed:
        return qs.order_by(default), default
    field = allowed[key]
    return qs.order_by(("-" if sort.startswith("-") else "") + field, "veid"), sort


PAGE_SIZES = (50, 100, 500, 1000)


def page_of(qs, page_number, per_page=None) -> Page:
    """One page of ``qs``; ``per_page`` is one of PAGE_SIZES (anything else: the default),
    so a provider can see a whole 1,000-VE tenant at once without an unbounded page."""
    size = int(per_page) if str(per_page) in {str(n) for n in PAGE_SIZES} else PAGE_SIZE
    return Paginator(qs, size).get_page(page_number)


def ve_list(user, tenant: Tenant | None, *, state: str = "", q: str = "", sort: str = "",
            node: str = "") -> tuple:
    """VEs ``user`` may see (one tenant's, or every tenant's for staff with ``tenant=None``),
    filtered by state, hostname substring and node name; returns (queryset, sort used)."""
    qs = access.ves_for(user, tenant).select_related("node", "template", "tenant")
    if state in VE_STATES:
        qs = qs.filter(state=state)
    q = q.replace("\x00", "")[:253]  # PostgreSQL text cannot hold NUL; no hostname has one
    if q:
        qs = qs.filter(hostname__icontains=q)
    if node:
        qs = qs.filter(node__name=node[:63])
    return _sort(qs, sort, VE_SORTS, "veid")


def job_list(user, tenant: Tenant | None, *, state: str = "", kind: str = "", node: str = "",
             tenant_slug: str = "", ve=None):
    """Jobs ``user`` may see, newest first, with the filters of the jobs pages."""
    qs = access.jobs_for(user, tenant).select_related("ve", "node", "tenant", "actor")
    if state in JOB_STATES:
        qs = qs.filter(state=state)
    if kind:
        qs = qs.filter(kind=kind[:16])
    if node:
        qs = qs.filter(node__name=node[:63])
    if tenant_slug:
        qs = qs.filter(tenant__slug=tenant_slug[:63])
    if ve is not None:
        qs = qs.filter(ve=ve)
    return qs.order_by("-created_at")


def job_kinds(user, tenant: Tenant | None) -> list[str]:
    # order_by() first: the model's default ordering would otherwise join the DISTINCT and
    # turn it into one row per job (10,000 rows fetched for a filter menu).
    return sorted(access.jobs_for(user, tenant).order_by().values_list("kind", flat=True).distinct())


def node_list(user):
    """Every node with its VE count (staff only)."""
    from django.db.models import Count, Q

    access.require_staff(user, what="the node list")
    return Node.objects.annotate(
        ve_count=Count("ves", filter=~Q(ves__state=VE.State.DESTROYED))).order_by("name")
