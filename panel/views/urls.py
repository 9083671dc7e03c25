"""URLs of the browser panel (namespace ``panel``). Object ids in URLs are UUIDs."""
from django.urls import path

from . import accounts, jobs, staff, ves

app_name = "panel"

urlpatterns = [
    path("", accounts.home_view, name="home"),
    path("tenant/switch/", accounts.tenant_switch_view, name="tenant-switch"),
    path("ves/", ves.ve_list_view, name="ve-list"),
    path("ves/new/", ves.ve_create_view, name="ve-create"),
    path("ves/<uuid:ve_id>/", ves.ve_detail_view, name="ve-detail"),
    path("ves/<uuid:ve_id>/status/", ves.ve_status_view, name="ve-status"),
    path("ves/<uuid:ve_id>/start/", ves.ve_start_view, name="ve-start"),
    path("ves/<uuid:ve_id>/stop/", ves.ve_stop_view, name="ve-stop"),
    path("ves/<uuid:ve_id>/restart/", ves.ve_restart_view, name="ve-restart"),
    path("ves/<uuid:ve_id>/destroy/", ves.ve_destroy_view, name="ve-destroy"),
    path("jobs/", jobs.job_list_view, name="job-list"),
    path("jobs/<uuid:job_id>/", jobs.job_detail_view, name="job-detail"),
    path("jobs/<uuid:job_id>/log/", jobs.job_log_view, name="job-log"),
    path("staff/", staff.staff_nodes_view, name="staff-nodes"),
    path("staff/ves/", staff.staff_ves_view, name="staff-ves"),
    path("staff/jobs/", staff.staff_jobs_view, name="staff-jobs"),
]
