"""URLs of the browser panel (namespace ``panel``). Object ids in URLs are UUIDs."""
from django.urls import path

from . import accounts, jobs, staff, tenant, ves

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
    path("ves/<uuid:ve_id>/set/", ves.ve_set_view, name="ve-set"),
    path("ves/<uuid:ve_id>/plan/", ves.ve_change_plan_view, name="ve-change-plan"),
    path("ves/<uuid:ve_id>/hostname/", ves.ve_hostname_view, name="ve-hostname"),
    path("jobs/", jobs.job_list_view, name="job-list"),
    path("jobs/<uuid:job_id>/", jobs.job_detail_view, name="job-detail"),
    path("jobs/<uuid:job_id>/log/", jobs.job_log_view, name="job-log"),
    path("quota/", tenant.quota_view, name="quota"),
    path("audit/", tenant.audit_view, name="audit"),
    path("members/", tenant.members_view, name="members"),
    path("members/invite/", tenant.member_invite_view, name="member-invite"),
    path("members/role/", tenant.member_role_view, name="member-role"),
    path("members/remove/", tenant.member_remove_view, name="member-remove"),
    path("account/", tenant.account_view, name="account"),
    path("staff/", staff.staff_nodes_view, name="staff-nodes"),
    path("staff/ves/", staff.staff_ves_view, name="staff-ves"),
    path("staff/jobs/", staff.staff_jobs_view, name="staff-jobs"),
    path("staff/quota-requests/", staff.staff_quota_requests_view, name="staff-quota-requests"),
    path("staff/quota-requests/<uuid:request_id>/approve/", staff.staff_quota_approve_view,
         name="staff-quota-approve"),
    path("staff/quota-requests/<uuid:request_id>/deny/", staff.staff_quota_deny_view, name="staff-quota-deny"),
    path("staff/tenants/", staff.staff_tenants_view, name="staff-tenants"),
    path("staff/tenants/new/", staff.staff_tenant_create_view, name="staff-tenant-create"),
    path("staff/tenants/<uuid:tenant_id>/quota/", staff.staff_tenant_quota_view, name="staff-tenant-quota"),
    path("staff/tenants/<uuid:tenant_id>/suspend/", staff.staff_tenant_suspend_view, name="staff-tenant-suspend"),
    path("staff/tenants/<uuid:tenant_id>/unsuspend/", staff.staff_tenant_unsuspend_view,
         name="staff-tenant-unsuspend"),
    path("staff/plans/", staff.staff_plans_view, name="staff-plans"),
    path("staff/pools/", staff.staff_pools_view, name="staff-pools"),
    path("staff/templates/", staff.staff_templates_view, name="staff-templates"),
    path("staff/audit/", staff.staff_audit_view, name="staff-audit"),
]
