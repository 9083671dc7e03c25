"""The staff area: the fleet's nodes, every VE and job, the quota request queue, tenants
(with suspension), plans, IP pools, OS templates and the whole audit log. Staff only;
Django's own admin stays at /admin/."""
from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db.models import Prefetch, Q
from django.shortcuts import redirect, render
from django.utils import timezone
from django.utils.translation import gettext as _
from django.urls import reverse
from django.views.decorators.http import require_http_methods, require_POST

from panel import access, selectors
from panel.forms import (AuditFilterForm, QuotaApproveForm, QuotaDenyForm, SuspendForm, TenantCreateForm,
                         TenantQuotaForm, VESuspendForm)
from panel.models import AuditEvent, Membership, Node, Suspension, Tenant
from panel.services import members as member_services
from panel.services import quotas as quota_services
from panel.services import suspensions as suspension_services
from panel.services.errors import Forbidden, NotFound, ServiceError
from panel.services.quotas import quota_overview, quota_overviews
from panel.templatetags.hako import label

from .common import http_errors
from .lists import JOB_STATES, VE_STATES, job_kinds, job_list, node_list, page_of, ve_list
from .tenant import audit_page


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
    qs = qs.annotate(suspended=suspension_services.suspended_expression())
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


# --- quota requests, tenants, plans, pools, templates, audit ---------------------------------

def _decision_forms(req, approve=None, deny=None) -> dict:
    return {"req": req, "approve_form": approve or QuotaApproveForm(request=req),
            "deny_form": deny or QuotaDenyForm(request=req)}


def _queue_page(request, failed=None, status: int = 200):
    """The pending queue; ``failed`` is (request id, approve form, deny form) to show again."""
    with http_errors():
        queue = list(selectors.quota_request_queue(request.user)[:200])
    rows = []
    for req in queue:
        if failed and failed[0] == req.pk:
            rows.append(_decision_forms(req, failed[1], failed[2]))
        else:
            rows.append(_decision_forms(req))
    return render(request, "staff/quota_requests.html", {"rows": rows}, status=status)


@login_required
def staff_quota_requests_view(request):
    return _queue_page(request)


def _decide(kind: str):
    @login_required
    @require_POST
    def view(request, request_id):
        with http_errors():
            # Another tenant's request is a 404 for a customer, like every object URL; the
            # service then refuses anyone who is not staff, or is the requester.
            req = access.quota_request_get(request.user, request_id)
            access.require_staff(request.user, what="deciding quota requests", source="web")
            form_cls = QuotaApproveForm if kind == "approve" else QuotaDenyForm
            form = form_cls(request.POST, request=req)
            if form.is_valid():
                try:
                    if kind == "approve":
                        quota_services.quota_request_approve(
                            request=req, actor=request.user, amounts=form.amounts(), source="web",
                            reason=form.cleaned_data["reason"], version=form.cleaned_data["version"])
                    else:
                        quota_services.quota_request_deny(
                            request=req, actor=request.user, source="web",
                            reason=form.cleaned_data["reason"], version=form.cleaned_data["version"])
                except NotFound:
                    raise
                except ServiceError as e:
                    form.add_service_error(e)
                else:
                    done = _("Quota request of %(tenant)s approved.") if kind == "approve" else \
                        _("Quota request of %(tenant)s denied.")
                    messages.success(request, done % {"tenant": req.tenant.name})
                    return redirect("panel:staff-quota-requests")
        req.refresh_from_db(fields=["state", "version"])
        if req.state != req.State.PENDING:
            messages.error(request, " ".join(form.non_field_errors()) or _("This request is no longer pending."))
            return redirect("panel:staff-quota-requests")
        forms = (req.pk, form, None) if kind == "approve" else (req.pk, None, form)
        return _queue_page(request, failed=forms, status=400)
    return view


staff_quota_approve_view = _decide("approve")
staff_quota_deny_view = _decide("deny")


@login_required
def staff_tenants_view(request):
    """Every tenant with its members, quota use and active suspensions."""
    _staff(request)
    q = request.GET.get("q", "").replace("\x00", "").strip()[:63]
    qs = Tenant.objects.order_by("name").prefetch_related(
        Prefetch("memberships", queryset=Membership.objects.select_related("user").order_by("user__username")),
        Prefetch("suspensions", queryset=Suspension.objects.filter(lifted_at__isnull=True, ve__isnull=True),
                 to_attr="active_suspensions"))
    if q:
        qs = qs.filter(Q(slug__icontains=q) | Q(name__icontains=q))
    page = page_of(qs, request.GET.get("page"))
    tenants = list(page.object_list)
    overviews = quota_overviews(tenants)  # the whole page at once: a fixed number of queries
    rows = [{"tenant": t, "quota": overviews[t.pk],
             "by_admin": any(s.source == Suspension.Source.ADMIN for s in t.active_suspensions)}
            for t in tenants]
    return render(request, "staff/tenants.html", {"page": page, "rows": rows, "q": q})


def _suspension(kind: str):
    @login_required
    @require_POST
    def view(request, tenant_id):
        with http_errors():
            tenant = access.tenant_get(request.user, tenant_id)
            form = SuspendForm(request.POST)
            if form.is_valid():
                try:
                    if kind == "suspend":
                        suspension_services.tenant_suspend(tenant=tenant, by=Suspension.Source.ADMIN, source="web",
                                                           actor=request.user, reason=form.cleaned_data["reason"])
                    else:
                        suspension_services.tenant_unsuspend(tenant=tenant, by=Suspension.Source.ADMIN,
                                                             source="web", actor=request.user,
                                                             reason=form.cleaned_data["reason"])
                except (NotFound, Forbidden):
                    raise
                except ServiceError as e:
                    messages.error(request, f"{tenant.name}: {e.message}")
                    return redirect("panel:staff-tenants")
        if not form.is_valid():
            messages.error(request, " ".join(e for errs in form.errors.values() for e in errs))
        elif kind == "suspend":
            messages.success(request, _("%(tenant)s is suspended: its VEs are stopped.") % {"tenant": tenant.name})
        else:
            messages.success(request, _("The suspension of %(tenant)s by an administrator is lifted.")
                             % {"tenant": tenant.name})
        return redirect("panel:staff-tenants")
    return view


staff_tenant_suspend_view = _suspension("suspend")
staff_tenant_unsuspend_view = _suspension("unsuspend")


def _ve_suspension(kind: str):
    """Suspend one VE, or lift its suspension, for the source chosen (staff, from the VE
    page). Another tenant's VE is a 404 for a customer like every object URL; a member of
    the VE's tenant who is not staff gets a 403 (audited as a denial) and changes nothing."""
    @login_required
    @require_POST
    def view(request, ve_id):
        with http_errors():
            ve = access.ve_get(request.user, ve_id)
            access.require_staff(request.user, what="suspending VEs" if kind == "suspend" else "lifting suspensions",
                                 source="web")
            form = VESuspendForm(request.POST)
            if not form.is_valid():
                messages.error(request, " ".join(e for errs in form.errors.values() for e in errs))
                return redirect("panel:ve-detail", ve_id=ve.pk)
            by, reason = form.cleaned_data["by"], form.cleaned_data["reason"]
            try:
                if kind == "suspend":
                    suspension_services.ve_suspend(ve=ve, by=by, reason=reason, actor=request.user, source="web")
                else:
                    lifted = suspension_services.ve_unsuspend(ve=ve, by=by, reason=reason, actor=request.user,
                                                              source="web")
            except (NotFound, Forbidden):
                raise
            except ServiceError as e:
                messages.error(request, f"VE {ve.veid}: {e.message}")
                return redirect("panel:ve-detail", ve_id=ve.pk)
        shown = {"veid": ve.veid, "by": label(by)}
        if kind == "suspend":
            messages.success(request, _("VE %(veid)s is suspended by %(by)s: it stops if it runs.") % shown)
        elif lifted is None:
            messages.info(request, _("VE %(veid)s had no suspension by %(by)s: nothing was lifted.") % shown)
        else:
            messages.success(request, _("The suspension of VE %(veid)s by %(by)s is lifted.") % shown)
        return redirect("panel:ve-detail", ve_id=ve.pk)
    return view


staff_ve_suspend_view = _ve_suspension("suspend")
staff_ve_unsuspend_view = _ve_suspension("unsuspend")


# Plans, IP pools and OS templates: panel/views/staff_manage.py.


@login_required
def staff_audit_view(request):
    """The whole audit log, filterable by tenant, user, action, result and date."""
    _staff(request)
    form = AuditFilterForm(request.GET, staff=True)
    filters = form.filters()
    # A deleted tenant's slug still finds its records (they keep it as their label).
    slug = filters.get("tenant", "")[:63]
    if slug and not Tenant.objects.filter(slug=slug).exists() and not AuditEvent.objects.filter(
            tenant_label=slug).exists():
        form.add_error("tenant", _("No tenant has this slug."))
        return audit_page(request, {}, form, "staff/audit.html", {}, empty=True)
    return audit_page(request, filters, form, "staff/audit.html", {})


@login_required
@require_http_methods(["GET", "POST"])
def staff_tenant_create_view(request):
    """Create a tenant with its first owner (staff)."""
    _staff(request)
    form = TenantCreateForm(request.POST if request.method == "POST" else None)
    if request.method == "POST" and form.is_valid():
        with http_errors():
            try:
                tenant = member_services.tenant_create(
                    slug=form.cleaned_data["slug"].strip(), name=form.cleaned_data["name"],
                    owner_email=form.cleaned_data["owner_email"], actor=request.user, source="web",
                    base_url=request.build_absolute_uri("/"))
            except (NotFound, Forbidden):
                raise
            except ServiceError as e:
                form.add_service_error(e)
            else:
                messages.success(request, _("Tenant %(name)s was created.") % {"name": tenant.name})
                return redirect(reverse("panel:staff-tenants") + f"#tenant-{tenant.slug}")
    return render(request, "staff/tenant_form.html", {"form": form}, status=400 if form.errors else 200)


@login_required
@require_http_methods(["GET", "POST"])
def staff_tenant_quota_view(request, tenant_id):
    """Edit a tenant's quota limits directly (staff; ``quota_set`` audits it)."""
    with http_errors():
        tenant = access.tenant_get(request.user, tenant_id)
    _staff(request)
    form = TenantQuotaForm(request.POST if request.method == "POST" else None)
    if request.method == "POST" and form.is_valid():
        with http_errors():
            try:
                amounts = form.amounts()
                if not amounts:
                    raise ServiceError(_("Fill in at least one limit to change."))
                quota_services.quota_set(tenant=tenant, actor=request.user, source="web", **amounts)
            except (NotFound, Forbidden):
                raise
            except ServiceError as e:
                form.add_service_error(e)
            else:
                messages.success(request, _("The limits of %(name)s were changed.") % {"name": tenant.name})
                return redirect(reverse("panel:staff-tenants") + f"#tenant-{tenant.slug}")
    return render(request, "staff/tenant_quota.html", {
        "form": form, "tenant": tenant, "quota": quota_overview(tenant)}, status=400 if form.errors else 200)
