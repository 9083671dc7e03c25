"""Customer pages for VEs: list, page, create and the power actions."""
from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.shortcuts import redirect, render
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils.safestring import mark_safe
from django.utils.translation import gettext as _
from django.views.decorators.http import require_http_methods, require_POST

from panel import access
from panel.forms import VECreateForm, VEDestroyForm
from panel.models import VE, Job, Membership
from panel.services import ves as ve_services
from panel.services.errors import Forbidden, NotFound, ServiceError
from panel.templatetags.hako import LABELS, size

from .common import can_operate, current_tenant, http_errors, require_tenant, role_of
from .lists import PAGE_SIZES, VE_STATES, job_list, page_of, ve_list

TRANSIENT = (VE.State.CREATING, VE.State.STARTING, VE.State.STOPPING)


@login_required
def ve_list_view(request):
    tenant = current_tenant(request)
    if tenant is None:
        return render(request, "no_tenant.html")
    state, q, sort = request.GET.get("state", ""), request.GET.get("q", "").strip(), request.GET.get("sort", "")
    qs, sort = ve_list(request.user, tenant, state=state, q=q, sort=sort)
    role = role_of(request, tenant)
    # Only the columns the rows show: at 1,000 rows, building full model instances with
    # three joined models cost as much as rendering them.
    qs = qs.select_related(None).select_related("template").only(
        "id", "veid", "state", "nproc", "addresses", "hostname", "memory", "disk", "template__name")
    page = page_of(qs, request.GET.get("page"), request.GET.get("per_page"))
    # The rows come from a Jinja2 partial: Django's engine took ~150 ms for 1,000 rows.
    rows_html = render_to_string("ves/_rows.html", {
        "rows": page.object_list, "ve_base": reverse("panel:ve-list"), "size": size,
        "labels": {k: str(v) for k, v in LABELS.items()}}, using="jinja2")
    return render(request, "ves/list.html", {
        "page": page, "rows_html": mark_safe(rows_html), "states": VE_STATES,
        "state": state, "q": q, "sort": sort, "can_operate": can_operate(role), "filtered": bool(state or q),
        "per_page": request.GET.get("per_page", ""), "page_sizes": PAGE_SIZES})


def _ve_context(request, ve: VE, **extra) -> dict:
    role = role_of(request, ve.tenant)
    active = ve.jobs.filter(state__in=Job.ACTIVE).exists()
    return {"ve": ve, "role": role, "can_operate": can_operate(role), "jobs": job_list(request.user, None, ve=ve)[:20],
            "polling": active or ve.state in TRANSIENT, **extra}


@login_required
def ve_detail_view(request, ve_id):
    with http_errors():
        ve = access.ve_get(request.user, ve_id)
    ctx = _ve_context(request, ve, destroy_form=VEDestroyForm(hostname=ve.hostname))
    return render(request, "ves/detail.html", ctx)


@login_required
def ve_status_view(request, ve_id):
    """The VE page's state and power panel alone, polled by htmx while a job runs."""
    with http_errors():
        ve = access.ve_get(request.user, ve_id)
    return render(request, "ves/_status.html", _ve_context(request, ve))


def _power(service, done_message):
    @login_required
    @require_POST
    def view(request, ve_id):
        with http_errors():
            ve = access.ve_get(request.user, ve_id, min_role=Membership.Role.OPERATOR)
            try:
                job = service(ve=ve, actor=request.user, source="web")
            except (NotFound, Forbidden):
                raise
            except ServiceError as e:
                messages.error(request, e.message)
                return redirect("panel:ve-detail", ve_id=ve.pk)
        messages.success(request, done_message(ve))
        return redirect(reverse("panel:ve-detail", kwargs={"ve_id": ve.pk}) + f"#job-{job.pk}")
    return view


ve_start_view = _power(ve_services.ve_start, lambda ve: _("Start of VE %(veid)s queued.") % {"veid": ve.veid})
ve_stop_view = _power(ve_services.ve_stop, lambda ve: _("Stop of VE %(veid)s queued.") % {"veid": ve.veid})
ve_restart_view = _power(ve_services.ve_restart,
                         lambda ve: _("Restart of VE %(veid)s queued.") % {"veid": ve.veid})


@login_required
@require_POST
def ve_destroy_view(request, ve_id):
    with http_errors():
        ve = access.ve_get(request.user, ve_id, min_role=Membership.Role.OPERATOR)
        form = VEDestroyForm(request.POST, hostname=ve.hostname)
        if not form.is_valid():
            return render(request, "ves/detail.html", _ve_context(request, ve, destroy_form=form),
                          status=400)
        try:
            job = ve_services.ve_destroy(ve=ve, actor=request.user, source="web")
        except (NotFound, Forbidden):
            raise
        except ServiceError as e:
            messages.error(request, e.message)
            return redirect("panel:ve-detail", ve_id=ve.pk)
    messages.success(request, _("Destruction of VE %(veid)s queued.") % {"veid": ve.veid})
    return redirect("panel:job-detail", job_id=job.pk)


@login_required
@require_http_methods(["GET", "POST"])
def ve_create_view(request):
    tenant = require_tenant(request)
    with http_errors():
        access.tenant_get(request.user, tenant.pk, min_role=Membership.Role.OPERATOR)
        plans = list(access.plans_for(request.user).order_by("name"))
        form = VECreateForm(request.POST or None, plans=plans)
        if request.method == "POST" and form.is_valid():
            try:
                job = ve_services.ve_create(tenant=tenant, actor=request.user, source="web", **form.service_kwargs())
            except (NotFound, Forbidden) as e:
                if e.field:  # an unknown plan: a form error, not a missing page
                    form.add_service_error(e)
                else:
                    raise
            except ServiceError as e:
                form.add_service_error(e)
            else:
                messages.success(request, _("VE creation queued: VE %(veid)s.") % {"veid": job.ve.veid})
                return redirect("panel:job-detail", job_id=job.pk)
    return render(request, "ves/create.html", {"form": form, "tenant": tenant},
                  status=400 if form.errors else 200)
