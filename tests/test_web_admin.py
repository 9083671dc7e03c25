"""The panel's quota, audit and account pages for customers, and the staff pages for quota
requests, tenants (suspension), plans, IP pools, OS templates and the whole audit log,
through Django's test client.

Like tests/test_web.py: jobs go to a node row no agent consumes and every test runs in a
transaction; ``django_capture_on_commit_callbacks`` runs the after-commit mail where a
test checks it. Mail goes to Django's locmem backend (``mailoutbox``).
"""
import re
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from panel.models import VE, AuditEvent, IPPool, Membership, QuotaRequest, Suspension, TenantQuota
from panel.services import plans, quotas
from panel.services import ves as svc
from tests.tenancy import idle_node, make_user, people  # noqa: F401

pytestmark = pytest.mark.django_db

G = 1 << 30
PASSWORD = "correct horse battery"


def signed_in(client, user):
    client.force_login(user)
    return client


def limits(tenant, **values):
    return quotas.quota_set(tenant=tenant, actor=None, **values)


def ask(tenant, actor, reason="more customers", **amounts):
    return quotas.quota_request_create(tenant=tenant, actor=actor, amounts=amounts or {"max_ves": 10},
                                       reason=reason)


def make_ve(tenant, hostname="web1"):
    return VE.objects.get(pk=svc.ve_create(tenant=tenant, template="busybox", hostname=hostname).ve_id)


def row(html: str, element_id: str) -> str:
    """The HTML of the element with ``element_id`` (a table row or article)."""
    m = re.search(rf'<(tr|article) id="{re.escape(element_id)}".*?</\1>', html, re.S)
    assert m, f"no element {element_id}"
    return m.group(0)


# --- customer: quota -----------------------------------------------------------------------------

def test_the_quota_page_shows_use_against_each_limit(client, idle_node, people, tenant):
    limits(tenant, max_ves=3, memory="4G")
    make_ve(tenant)
    signed_in(client, people.viewer)
    r = client.get(reverse("panel:quota"))
    assert r.status_code == 200
    html = r.content.decode()
    ves = row(html, "quota-max_ves")
    assert "<td>1</td>" in ves and "<td>3</td>" in ves and "<td>2</td>" in ves
    assert "4G" in row(html, "quota-memory") and 'aria-current="page"' in html
    assert "unlimited" in row(html, "quota-disk")
    assert reverse("panel:quota") in html, "linked in the nav"


def test_an_operator_asks_for_more_and_sees_the_request(client, idle_node, people, tenant):
    limits(tenant, max_ves=3, memory="4G")
    signed_in(client, people.operator)
    r = client.post(reverse("panel:quota"), {"max_ves": "10", "memory": "8G", "reason": "launch week"})
    assert r.status_code == 302 and r.url == reverse("panel:quota")
    req = QuotaRequest.objects.get()
    assert req.tenant == tenant and req.requester == people.operator and req.state == "pending"
    assert req.amounts == {"max_ves": 10, "memory": 8 * G}
    html = client.get(reverse("panel:quota")).content.decode()
    line = row(html, f"quota-request-{req.pk}")
    assert "launch week" in line and 'data-state="pending"' in line and "8G" in line
    assert AuditEvent.objects.filter(action="quota_request.create", actor=people.operator, source="web").exists()


def test_the_quota_form_shows_service_errors_next_to_the_field(client, idle_node, people, tenant):
    limits(tenant, max_ves=3, memory="4G")
    signed_in(client, people.owner)
    r = client.post(reverse("panel:quota"), {"max_ves": "2", "reason": "x"})
    assert r.status_code == 400 and 'id="id_max_ves_error"' in r.content.decode()
    assert "ask for more than the current 3" in r.content.decode()
    r = client.post(reverse("panel:quota"), {"reason": "nothing asked"})
    assert r.status_code == 400 and "give at least one quota" in r.content.decode()
    r = client.post(reverse("panel:quota"), {"max_ves": "5", "reason": "bad\x1bescape"})
    assert r.status_code == 400 and 'id="id_reason_error"' in r.content.decode()
    r = client.post(reverse("panel:quota"), {"disk": "5G", "reason": "disk is unlimited"})
    assert r.status_code == 400 and "already unlimited" in r.content.decode()
    assert not QuotaRequest.objects.exists()


HOSTILE = ["; rm -rf /", "a\nb", "../../etc/passwd", "9" * 40, "ホスト", "-1", "$(id)", "<script>x</script>", "1.5"]


@pytest.mark.parametrize("field", quotas.FIELDS)
def test_the_quota_form_refuses_hostile_amounts(client, idle_node, people, tenant, field):
    limits(tenant, **{f: 1 for f in quotas.FIELDS})
    signed_in(client, people.owner)
    for value in HOSTILE:
        r = client.post(reverse("panel:quota"), {field: value, "reason": "why not"})
        html = r.content.decode()
        assert r.status_code == 400, (field, value)
        assert f'id="id_{field}_error"' in html, (field, value)
        assert "<script>x</script>" not in html
    assert not QuotaRequest.objects.exists()


def test_a_viewer_sees_no_request_form_and_a_forged_post_is_refused(client, idle_node, people, tenant):
    limits(tenant, max_ves=3)
    signed_in(client, people.viewer)
    html = client.get(reverse("panel:quota")).content.decode()
    assert 'name="reason"' not in html and "owner or operator can ask" in html
    r = client.post(reverse("panel:quota"), {"max_ves": "10", "reason": "sneaky"})
    assert r.status_code == 403
    assert not QuotaRequest.objects.exists()
    assert AuditEvent.objects.filter(action="access.denied", actor=people.viewer).exists()


def test_the_quota_page_shows_only_the_current_tenants_requests(client, idle_node, people, tenant, other_tenant):
    limits(tenant, max_ves=3)
    limits(other_tenant, max_ves=3)
    ask(other_tenant, people.outsider, reason="globex secret plan")
    mine = ask(tenant, people.owner, reason="acme growth")
    quotas.quota_request_deny(request=mine, actor=people.staff, reason="pay the invoice first")
    signed_in(client, people.viewer)
    html = client.get(reverse("panel:quota")).content.decode()
    assert "globex secret plan" not in html
    line = row(html, f"quota-request-{mine.pk}")
    assert 'data-state="denied"' in line and "pay the invoice first" in line and "sam" in line


def test_anonymous_users_are_sent_to_sign_in(client, tenant):
    for name in ("panel:quota", "panel:audit", "panel:account", "password_change"):
        r = client.get(reverse(name))
        assert r.status_code == 302 and r.url.startswith(reverse("login")), name
    r = client.post(reverse("panel:quota"), {"max_ves": "3", "reason": "x"})
    assert r.status_code == 302 and not QuotaRequest.objects.exists()


def test_a_user_without_tenant_gets_the_no_tenant_page(client, db):
    signed_in(client, make_user("lonely"))
    for name in ("panel:quota", "panel:audit"):
        r = client.get(reverse(name))
        assert r.status_code == 200 and "not a member of any tenant" in r.content.decode(), name
    r = client.post(reverse("panel:quota"), {"max_ves": "3", "reason": "x"})
    assert r.status_code == 200 and not QuotaRequest.objects.exists()


# --- customer: audit log -------------------------------------------------------------------------

def test_the_audit_page_shows_the_tenants_records_with_filters(client, idle_node, people, tenant, other_tenant):
    limits(tenant, max_ves=3)
    limits(other_tenant, max_ves=3)
    make_ve(tenant, "acme-host")
    make_ve(other_tenant, "globex-host")
    ask(tenant, people.operator)
    signed_in(client, people.viewer)
    url = reverse("panel:audit")
    html = client.get(url).content.decode()
    assert "quota_request.create" in html and "ve.create" in html and "quota.set" in html
    assert "globex-host" not in html and html.count('<tr id="audit-') == AuditEvent.objects.filter(
        tenant=tenant).count()
    html = client.get(url + "?action=quota_request.create").content.decode()
    assert html.count('<tr id="audit-') == 1
    html = client.get(url + "?action=ve.").content.decode()
    assert html.count('<tr id="audit-') == 1 and "acme-host" in html
    today = timezone.now().date()
    html = client.get(url + f"?since={today}&until={today}").content.decode()
    assert html.count('<tr id="audit-') == 3
    html = client.get(url + f"?since={today + timedelta(days=1)}").content.decode()
    assert '<tr id="audit-' not in html and "No record matches" in html
    html = client.get(url + f"?until={today - timedelta(days=1)}").content.decode()
    assert '<tr id="audit-' not in html
    r = client.get(url + "?since=not-a-date&action=%3Cscript%3E")
    assert r.status_code == 200 and 'id="id_since_error"' in r.content.decode()
    assert "<script>" not in r.content.decode().split("<main", 1)[1]


# --- customer: account ---------------------------------------------------------------------------

def with_password(user):
    user.set_password(PASSWORD)
    user.save(update_fields=["password"])
    return user


def test_the_account_page_lists_tenants_and_links_password_pages(client, people):
    signed_in(client, people.operator)
    html = client.get(reverse("panel:account")).content.decode()
    assert "Acme" in html and "operator" in html
    assert reverse("password_change") in html and reverse("password_reset") in html


def test_a_user_changes_their_password(client, people):
    with_password(people.owner)
    signed_in(client, people.owner)
    url = reverse("password_change")
    assert 'for="id_old_password"' in client.get(url).content.decode()
    r = client.post(url, {"old_password": "wrong", "new_password1": "a new long secret 42",
                          "new_password2": "a new long secret 42"})
    assert r.status_code == 200 and 'id="id_old_password_error"' in r.content.decode()
    r = client.post(url, {"old_password": PASSWORD, "new_password1": "a new long secret 42",
                          "new_password2": "a new long secret 42"})
    assert r.status_code == 302 and r.url == reverse("password_change_done")
    assert "Password changed" in client.get(r.url).content.decode()
    people.owner.refresh_from_db()
    assert people.owner.check_password("a new long secret 42")
    client.logout()
    assert client.get(url).status_code == 302, "signed-out users cannot change a password"


def test_a_user_resets_their_password_by_email(client, people, mailoutbox):
    with_password(people.owner)
    url = reverse("password_reset")
    r = client.post(url, {"email": "nobody@example.test"})
    assert r.status_code == 302 and len(mailoutbox) == 0, "an unknown address says nothing"
    r = client.post(url, {"email": people.owner.email})
    assert r.status_code == 302 and r.url == reverse("password_reset_done")
    assert len(mailoutbox) == 1 and mailoutbox[0].to == [people.owner.email]
    body = mailoutbox[0].body
    assert "olivia" in body
    link = re.search(r"http://testserver(/accounts/reset/\S+/)", body).group(1)
    r = client.get(link)  # Django swaps the token for a session and redirects
    assert r.status_code == 302
    r = client.post(r.url, {"new_password1": "reset to this 9876", "new_password2": "reset to this 9876"})
    assert r.status_code == 302 and r.url == reverse("password_reset_complete")
    people.owner.refresh_from_db()
    assert people.owner.check_password("reset to this 9876")
    html = client.get(link, follow=True).content.decode()
    assert "not valid" in html, "a reset link works once"


def test_the_sign_in_page_links_the_password_reset(client):
    assert reverse("password_reset") in client.get(reverse("login")).content.decode()


# --- staff: quota requests -----------------------------------------------------------------------

def test_staff_approve_a_request_as_asked(client, idle_node, people, tenant, mailoutbox,
                                           django_capture_on_commit_callbacks):
    limits(tenant, max_ves=3)
    req = ask(tenant, people.operator, reason="black friday")
    signed_in(client, people.staff)
    html = client.get(reverse("panel:staff-quota-requests")).content.decode()
    box = row(html, f"quota-request-{req.pk}")
    assert "Acme" in box and "black friday" in box and "oscar" in box
    with django_capture_on_commit_callbacks(execute=True):
        r = client.post(reverse("panel:staff-quota-approve", kwargs={"request_id": req.pk}),
                        {"version": req.version, "reason": "welcome"})
    assert r.status_code == 302 and r.url == reverse("panel:staff-quota-requests")
    req.refresh_from_db()
    assert req.state == "approved" and req.granted == {"max_ves": 10} and req.decided_by == people.staff
    assert TenantQuota.objects.get(tenant=tenant).max_ves == 10
    assert len(mailoutbox) == 1 and "approved" in mailoutbox[0].subject
    assert f"quota-request-{req.pk}" not in client.get(reverse("panel:staff-quota-requests")).content.decode()


def test_staff_approve_with_other_amounts(client, idle_node, people, tenant):
    limits(tenant, max_ves=3, memory="4G")
    req = ask(tenant, people.owner, max_ves=10, memory="16G")
    signed_in(client, people.staff)
    r = client.post(reverse("panel:staff-quota-approve", kwargs={"request_id": req.pk}),
                    {"version": req.version, "memory": "8G", "reason": "half now"})
    assert r.status_code == 302
    req.refresh_from_db()
    assert req.granted == {"max_ves": 10, "memory": 8 * G}
    quota = TenantQuota.objects.get(tenant=tenant)
    assert quota.max_ves == 10 and quota.memory == 8 * G
    signed_in(client, people.owner)
    line = row(client.get(reverse("panel:quota")).content.decode(), f"quota-request-{req.pk}")
    assert "Granted" in line and "8G" in line and "half now" in line


HOSTILE_GRANTS = ["-1", "0", "-8G", "8.5G", "lots", "9" * 24, "99999999999999999999T", "3; drop table", "٣",
                  "<script>x</script>"]


@pytest.mark.parametrize("field", ["max_ves", "memory"])
def test_the_approve_form_refuses_hostile_amounts_and_changes_nothing(client, idle_node, people, tenant, mailoutbox,
                                                                      field):
    limits(tenant, max_ves=3, memory="4G")
    req = ask(tenant, people.owner, max_ves=10, memory="16G")
    signed_in(client, people.staff)
    url = reverse("panel:staff-quota-approve", kwargs={"request_id": req.pk})
    for value in HOSTILE_GRANTS:
        r = client.post(url, {"version": req.version, field: value, "reason": "x"})
        html = r.content.decode()
        assert r.status_code == 400, (field, value)
        m = re.search(rf'<small id="id_{req.pk}_approve_{field}_error" class="error" role="alert">(.*?)</small>',
                      html, re.S)
        assert m and m.group(1).strip(), (field, value)  # the message sits next to the field
        assert "<script>x</script>" not in html
    req.refresh_from_db()
    quota = TenantQuota.objects.get(tenant=tenant)
    assert req.state == "pending" and not req.granted and (quota.max_ves, quota.memory) == (3, 4 * G)
    assert not AuditEvent.objects.filter(action="quota_request.approve").exists() and not mailoutbox


def test_staff_deny_needs_a_reason(client, idle_node, people, tenant):
    limits(tenant, max_ves=3)
    req = ask(tenant, people.owner)
    signed_in(client, people.staff)
    url = reverse("panel:staff-quota-deny", kwargs={"request_id": req.pk})
    r = client.post(url, {"version": req.version, "reason": ""})
    assert r.status_code == 400 and f'id="id_{req.pk}_deny_reason_error"' in r.content.decode()
    req.refresh_from_db()
    assert req.state == "pending"
    r = client.post(url, {"version": req.version, "reason": "not this month"})
    assert r.status_code == 302
    req.refresh_from_db()
    assert req.state == "denied" and req.decision_reason == "not this month"
    assert TenantQuota.objects.get(tenant=tenant).max_ves == 3
    # A second decision (another tab, a double click) changes nothing and says why.
    r = client.post(reverse("panel:staff-quota-approve", kwargs={"request_id": req.pk}),
                    {"version": req.version}, follow=True)
    assert "already denied by sam" in r.content.decode()
    req.refresh_from_db()
    assert req.state == "denied" and TenantQuota.objects.get(tenant=tenant).max_ves == 3


def test_staff_cannot_decide_their_own_request(client, idle_node, people, tenant):
    limits(tenant, max_ves=3)
    req = ask(tenant, people.staff, reason="asked for the customer")
    signed_in(client, people.staff)
    for name, data in (("panel:staff-quota-approve", {}), ("panel:staff-quota-deny", {"reason": "no"})):
        r = client.post(reverse(name, kwargs={"request_id": req.pk}), {"version": req.version, **data})
        assert r.status_code == 400, name
        assert "you cannot decide your own quota request" in r.content.decode()
    req.refresh_from_db()
    assert req.state == "pending" and TenantQuota.objects.get(tenant=tenant).max_ves == 3
    signed_in(client, people.staff2)
    r = client.post(reverse("panel:staff-quota-approve", kwargs={"request_id": req.pk}), {"version": req.version})
    assert r.status_code == 302
    req.refresh_from_db()
    assert req.state == "approved"


def test_a_stale_page_cannot_decide(client, idle_node, people, tenant):
    limits(tenant, max_ves=3)
    req = ask(tenant, people.owner)
    signed_in(client, people.staff)
    r = client.post(reverse("panel:staff-quota-approve", kwargs={"request_id": req.pk}),
                    {"version": req.version + 5})
    assert r.status_code == 400 and "changed since you loaded it" in r.content.decode()
    req.refresh_from_db()
    assert req.state == "pending"


def test_members_cannot_decide_requests(client, idle_node, people, tenant):
    limits(tenant, max_ves=3)
    req = ask(tenant, people.operator)
    for user in (people.owner, people.operator, people.viewer):
        signed_in(client, user)
        assert client.get(reverse("panel:staff-quota-requests")).status_code == 403
        for name in ("panel:staff-quota-approve", "panel:staff-quota-deny"):
            r = client.post(reverse(name, kwargs={"request_id": req.pk}), {"version": req.version, "reason": "x"})
            assert r.status_code == 403, (user, name)
    req.refresh_from_db()
    assert req.state == "pending" and TenantQuota.objects.get(tenant=tenant).max_ves == 3


# --- staff: tenants and suspension ---------------------------------------------------------------

def test_the_tenant_list_shows_members_and_quota_use(client, idle_node, people, tenant, other_tenant):
    limits(tenant, max_ves=5)
    make_ve(tenant)
    signed_in(client, people.staff)
    html = client.get(reverse("panel:staff-tenants")).content.decode()
    acme = row(html, "tenant-acme")
    assert "olivia" in acme and "oscar" in acme and "vera" in acme and "mallory" not in acme
    assert "1 / 5" in acme
    assert "mallory" in row(html, "tenant-globex")
    html = client.get(reverse("panel:staff-tenants") + "?q=glob").content.decode()
    assert 'id="tenant-globex"' in html and 'id="tenant-acme"' not in html


def test_staff_suspend_and_unsuspend_a_tenant(client, idle_node, people, tenant):
    signed_in(client, people.staff)
    url = reverse("panel:staff-tenant-suspend", kwargs={"tenant_id": tenant.pk})
    r = client.post(url, {"reason": ""}, follow=True)
    assert "give a reason" in r.content.decode()
    assert not Suspension.objects.exists()
    r = client.post(url, {"reason": "invoice 42 unpaid"}, follow=True)
    assert r.status_code == 200
    susp = Suspension.objects.get()
    assert susp.source == "admin" and susp.ve is None and susp.reason == "invoice 42 unpaid" and susp.active
    acme = row(r.content.decode(), "tenant-acme")
    assert 'data-state="suspended"' in acme and "invoice 42 unpaid" in acme
    assert reverse("panel:staff-tenant-unsuspend", kwargs={"tenant_id": tenant.pk}) in acme and url not in acme
    client.post(url, {"reason": "again"})  # a second suspension by the same source adds nothing
    assert Suspension.objects.count() == 1
    assert AuditEvent.objects.filter(action="tenant.suspend", actor=people.staff, source="web").exists()
    r = client.post(reverse("panel:staff-tenant-unsuspend", kwargs={"tenant_id": tenant.pk}),
                    {"reason": "paid"}, follow=True)
    susp.refresh_from_db()
    assert not susp.active and susp.lift_reason == "paid"
    assert 'data-state="suspended"' not in row(r.content.decode(), "tenant-acme")
    assert AuditEvent.objects.filter(action="tenant.unsuspend", actor=people.staff, result="ok").exists()


def test_members_cannot_suspend(client, idle_node, people, tenant):
    limits(tenant, max_ves=3)
    for user in (people.owner, people.viewer):
        signed_in(client, user)
        for name in ("panel:staff-tenant-suspend", "panel:staff-tenant-unsuspend"):
            r = client.post(reverse(name, kwargs={"tenant_id": tenant.pk}), {"reason": "x"})
            assert r.status_code == 403, (user, name)
    assert not Suspension.objects.exists()


# --- staff: plans, pools, templates, audit -------------------------------------------------------

def test_the_staff_lists_of_plans_pools_and_templates(client, idle_node, people):
    plans.plan_create(name="small", memory="512M", disk="2G", description="Starter")
    pool = IPPool.objects.create(name="test-pool", network="198.18.7.0/24")
    pool.nodes.set([idle_node])
    signed_in(client, people.staff)
    html = client.get(reverse("panel:staff-plans")).content.decode()
    assert "Starter" in row(html, "plan-small") and "512M" in row(html, "plan-small")
    html = client.get(reverse("panel:staff-pools")).content.decode()
    assert "198.18.7.0/24" in row(html, "pool-test-pool") and idle_node.name in row(html, "pool-test-pool")
    html = client.get(reverse("panel:staff-templates")).content.decode()
    assert idle_node.name in row(html, "template-busybox") and 'id="template-debian-12"' in html


def test_the_staff_audit_log_shows_everything_with_filters(client, idle_node, people, tenant, other_tenant):
    limits(tenant, max_ves=3)
    limits(other_tenant, max_ves=3)
    ask(other_tenant, people.outsider)
    signed_in(client, people.staff)
    url = reverse("panel:staff-audit")
    html = client.get(url).content.decode()
    assert html.count('<tr id="audit-') == AuditEvent.objects.count()
    html = client.get(url + "?tenant=globex").content.decode()
    assert html.count('<tr id="audit-') == 2
    html = client.get(url + "?actor=mallory&action=quota_request.").content.decode()
    assert html.count('<tr id="audit-') == 1
    r = client.get(url + "?tenant=no-such")
    assert r.status_code == 200 and 'id="id_tenant_error"' in r.content.decode()
    assert '<tr id="audit-' not in r.content.decode()
    signed_in(client, people.viewer)
    client.post(reverse("panel:quota"), {"max_ves": "9", "reason": "x"})  # a denial, recorded
    signed_in(client, people.staff)
    html = client.get(url + "?result=denied").content.decode()
    assert html.count('<tr id="audit-') == AuditEvent.objects.filter(result="denied").count() >= 1


STAFF_PAGES = ("panel:staff-quota-requests", "panel:staff-tenants", "panel:staff-plans", "panel:staff-pools",
               "panel:staff-templates", "panel:staff-audit")


def test_the_new_staff_pages_are_for_staff_only(client, idle_node, people):
    for user in (people.owner, people.operator, people.viewer):
        signed_in(client, user)
        for name in STAFF_PAGES:
            assert client.get(reverse(name)).status_code == 403, (user, name)
    client.logout()
    for name in STAFF_PAGES:
        r = client.get(reverse(name))
        assert r.status_code == 302 and r.url.startswith(reverse("login")), name
    signed_in(client, people.staff)
    for name in STAFF_PAGES:
        assert client.get(reverse(name)).status_code == 200, name


# --- language ------------------------------------------------------------------------------------

def test_the_new_pages_render_in_japanese(client, idle_node, people, tenant):
    limits(tenant, max_ves=3)
    ask(tenant, people.operator)
    Membership.objects.create(user=people.staff, tenant=tenant, role=Membership.Role.OWNER)
    signed_in(client, people.staff)
    assert client.post(reverse("set_language"), {"language": "ja", "next": "/"}).status_code == 302
    pages = {
        reverse("panel:quota"): ["クォータ", "使用量", "上限", "申請"],
        reverse("panel:audit"): ["監査ログ", "操作"],
        reverse("panel:account"): ["アカウント", "パスワード"],
        reverse("password_change"): ["パスワードを変更"],
        reverse("panel:staff-quota-requests"): ["クォータ申請", "承認", "却下"],
        reverse("panel:staff-tenants"): ["テナント", "メンバー", "停止"],
        reverse("panel:staff-plans"): ["プラン"],
        reverse("panel:staff-pools"): ["IP プール"],
        reverse("panel:staff-templates"): ["OS テンプレート"],
        reverse("panel:staff-audit"): ["監査ログ", "結果"],
    }
    for url, words in pages.items():
        html = client.get(url).content.decode()
        assert '<html lang="ja">' in html, url
        for word in words:
            assert word in html, (url, word)
    client.logout()
    html = client.get(reverse("password_reset"), HTTP_ACCEPT_LANGUAGE="ja").content.decode()
    assert "パスワードの再設定" in html


# --- suspension of one VE: the VE page says why, staff suspend and lift it -------------------------

def test_the_ve_page_says_why_it_is_suspended_and_offers_no_start(client, idle_node, people, tenant, other_tenant):
    from panel.services import suspensions

    ve = make_ve(tenant, "web1")
    other = make_ve(tenant, "web2")
    VE.objects.filter(pk__in=[ve.pk, other.pk]).update(state="stopped")
    page = reverse("panel:ve-detail", kwargs={"ve_id": ve.pk})
    signed_in(client, people.staff)
    r = client.post(reverse("panel:staff-ve-suspend", kwargs={"ve_id": ve.pk}),
                    {"by": "abuse", "reason": "open resolver"}, follow=True)
    assert r.status_code == 200 and "is suspended by" in r.content.decode()
    s = Suspension.objects.get()
    assert (s.ve, s.source, s.reason, s.created_by) == (ve, "abuse", "open resolver", people.staff)
    assert AuditEvent.objects.filter(action="ve.suspend", actor=people.staff, source="web", result="ok").count() == 1

    signed_in(client, people.operator)
    html = client.get(page).content.decode()
    box = re.search(r'<div id="ve-suspension".*?</div>', html, re.S).group(0)
    assert "This VE is suspended" in box and "open resolver" in box and 'data-source="abuse"' in box
    assert reverse("panel:ve-start", kwargs={"ve_id": ve.pk}) not in html, "no start button while suspended"
    assert reverse("panel:ve-restart", kwargs={"ve_id": ve.pk}) not in html
    assert reverse("panel:ve-stop", kwargs={"ve_id": ve.pk}) in html
    assert reverse("panel:staff-ve-suspend", kwargs={"ve_id": ve.pk}) not in html, "the staff form is for staff"
    # The VE list marks the suspended VE, and only it.
    listing = client.get(reverse("panel:ve-list")).content.decode()
    rows = re.findall(r"<tr>.*?</tr>", listing, re.S)
    marked = [r for r in rows if 'data-state="suspended"' in r]
    assert len(marked) == 1 and "web1" in marked[0]
    # A tenant-wide suspension by billing shows too, with its own reason and scope.
    suspensions.tenant_suspend(tenant=tenant, by="billing", reason="invoice 42 unpaid", actor=people.staff)
    html = client.get(reverse("panel:ve-detail", kwargs={"ve_id": other.pk})).content.decode()
    assert "invoice 42 unpaid" in html and "the whole account" in html and "open resolver" not in html
    assert len([r for r in re.findall(r"<tr>.*?</tr>", client.get(reverse("panel:ve-list")).content.decode(), re.S)
                if 'data-state="suspended"' in r]) == 2

    # Another tenant's member: the VE page and the staff actions are 404s.
    signed_in(client, people.outsider)
    assert client.get(page).status_code == 404
    for name in ("panel:staff-ve-suspend", "panel:staff-ve-unsuspend"):
        r = client.post(reverse(name, kwargs={"ve_id": ve.pk}), {"by": "abuse", "reason": "x"})
        assert r.status_code == 404 and b"web1" not in r.content, name
    # A member who is not staff: 403, audited, nothing changes.
    for user in (people.owner, people.viewer):
        signed_in(client, user)
        for name in ("panel:staff-ve-suspend", "panel:staff-ve-unsuspend"):
            r = client.post(reverse(name, kwargs={"ve_id": ve.pk}), {"by": "abuse", "reason": "x"})
            assert r.status_code == 403, (user, name)
    assert AuditEvent.objects.filter(action="access.denied", actor=people.owner, detail__why="not-staff").count() == 2
    assert Suspension.objects.filter(lifted_at__isnull=True).count() == 2

    # Staff lift the abuse suspension: the billing one (the tenant's) still holds the VE.
    signed_in(client, people.staff)
    html = client.get(page).content.decode()
    assert reverse("panel:staff-ve-unsuspend", kwargs={"ve_id": ve.pk}) in html
    r = client.post(reverse("panel:staff-ve-unsuspend", kwargs={"ve_id": ve.pk}), {"by": "abuse", "reason": "fixed"},
                    follow=True)
    s.refresh_from_db()
    assert not s.active and s.lift_reason == "fixed" and s.lifted_by == people.staff
    html = r.content.decode()
    assert "open resolver" not in html and "invoice 42 unpaid" in html
    assert reverse("panel:ve-start", kwargs={"ve_id": ve.pk}) not in html


@pytest.mark.parametrize("data,message", [
    ({"by": "root", "reason": "x"}, "Select a valid choice"),
    ({"by": "abuse", "reason": ""}, "give a reason"),
    ({"by": "abuse", "reason": "a\nb"}, "control characters"),
    ({"by": "abuse", "reason": "x" * 501}, "at most 500"),
])
def test_the_staff_ve_suspension_refuses_bad_input_and_changes_nothing(client, idle_node, people, tenant, data,
                                                                        message):
    ve = make_ve(tenant, "web1")
    signed_in(client, people.staff)
    r = client.post(reverse("panel:staff-ve-suspend", kwargs={"ve_id": ve.pk}), data, follow=True)
    assert r.status_code == 200 and message in r.content.decode()
    assert not Suspension.objects.exists() and not AuditEvent.objects.filter(action="ve.suspend").exists()


def test_the_staff_ve_list_marks_suspended_ves(client, idle_node, people, tenant, other_tenant):
    from panel.services import suspensions

    held = make_ve(tenant, "held1")
    make_ve(tenant, "free1")
    theirs = make_ve(other_tenant, "held2")
    suspensions.ve_suspend(ve=held, by="admin", reason="maintenance", actor=people.staff)
    suspensions.tenant_suspend(tenant=other_tenant, by="billing", reason="unpaid", actor=people.staff)
    signed_in(client, people.staff)
    html = client.get(reverse("panel:staff-ves")).content.decode()
    rows = re.findall(r"<tr>.*?</tr>", html.split("<tbody>", 1)[1], re.S)
    assert len(rows) == 3
    marked = {h for h in ("held1", "free1", "held2") for r in rows if f"<td>{h}</td>" in r
              and 'data-state="suspended"' in r}
    assert marked == {"held1", "held2"}, marked  # its own suspension, and its tenant's
    assert theirs.tenant == other_tenant
