"""Customer pages for jobs: the list and a job's page with its step log, which htmx
refreshes every second until the job is over."""
from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.shortcuts import render

from panel import access

from .common import current_tenant, http_errors
from .lists import JOB_STATES, job_kinds, job_list, page_of


@login_required
def job_list_view(request):
    tenant = current_tenant(request)
    if tenant is None:
        return render(request, "no_tenant.html")
    state, kind = request.GET.get("state", ""), request.GET.get("kind", "")
    qs = job_list(request.user, tenant, state=state, kind=kind)
    return render(request, "jobs/list.html", {
        "page": page_of(qs, request.GET.get("page")), "states": JOB_STATES, "state": state,
        "kinds": job_kinds(request.user, tenant), "kind": kind, "filtered": bool(state or kind)})


def _job_context(request, job_id) -> dict:
    with http_errors():
        job = access.job_get(request.user, job_id)
    return {"job": job, "logs": list(job.logs.order_by("seq"))}


@login_required
def job_detail_view(request, job_id):
    return render(request, "jobs/detail.html", _job_context(request, job_id))


@login_required
def job_log_view(request, job_id):
    """The job's state and log alone: the fragment the job page polls."""
    return render(request, "jobs/_log.html", _job_context(request, job_id))
