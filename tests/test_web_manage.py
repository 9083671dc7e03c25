"""Managing through the browser panel: changing a VE's resources, plan and hostname from
its page (the services ``ve_set`` and ``ve_change_plan``), and an owner managing the
tenant's members (services.members), and staff creating tenants and editing their limits.

Jobs go to a node row no agent consumes (``idle_node``): nothing runs, the tests check the
jobs queued and what the pages show; the node side of a resize is tests/test_limits.py.
"""
import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse

from panel.models import VE, AuditEvent, Job, Membership, Tenant, TenantQuota
from panel.services import members
from panel.services import ves as svc
from panel.services.plans import plan_create
from tests.tenancy import idle_node, make_user, people, settle  # noqa: F401

pytestmark = pytest.mark.django_db

HOSTILE = ["; rm -rf /", "a\nb", "../../etc/passwd", "9" * 40, "ホスト", "-1", "$(id)", "<script>x</script>"]


def signed_in(client, user):
    client.force_login(user)
    return client


@pytest.fixture
def ve(idle_node, tenant):
    return settle(svc.ve_create(tenant=tenant, template="busybox", hostname="web1"))


def url(name, ve):
    return reverse(name, kwargs={"ve_id": ve.pk})


# --- VE changes ------------------------------------------------------------------------------

def test_an_operator_sees_the_change_forms(client, people, ve):
    signed_in(client, people.operator)
    html = client.get(url("panel:ve-detail", ve)).content.decode()
    assert url("panel:ve-set", ve) in html and url("panel:ve-hostname", ve) in html
    assert 'for="id_res_memory"' in html and 'for="id_host_hostname"' in html
    assert url("panel:ve-change-plan", ve) not in html, "no plans: no plan form"
    plan_create(name="small", memory="256M", disk="2G")
    html = client.get(url("panel:ve-detail", ve)).content.decode()
    assert url("panel:ve-change-plan", ve) in html and '<option value="small"' in html


def test_changing_resources_queues_a_set_job_and_links_it(client, people, ve):
    signed_in(client, people.operator)
    r = client.post(url("panel:ve-set", ve), {"memory": "512M", "cpulimit": "50", "swap": ""})
    job = Job.objects.get(ve=ve, kind="set")
    assert r.status_code == 302 and r.url == url("panel:ve-detail", ve) + f"#job-{job.pk}"
    assert job.args["changes"] == {"memory": 512 << 20, "cpulimit": 50} and job.actor == people.operator
    html = client.get(r.url).content.decode()
    assert reverse("panel:job-detail", kwargs={"job_id": job.pk}) in html and "queued" in html


def test_changing_nothing_is_an_error(client, people, ve):
    signed_in(client, people.operator)
    r = client.post(url("panel:ve-set", ve), {"memory": " "})
    assert r.status_code == 400 and "at least one value" in r.content.decode()
    assert not Job.objects.filter(kind="set").exists()


@pytest.mark.parametrize("field", ["memory", "swap", "disk", "cpuunits", "cpulimit", "numproc"])
def test_resources_refuse_hostile_values_next_to_the_field(client, people, ve, field):
    signed_in(client, people.operator)
    for value in HOSTILE + ["9999999T"]:
        r = client.post(url("panel:ve-set", ve), {field: value})
        html = r.content.decode()
        assert r.status_code == 400, (field, value)
        assert f'id="id_res_{field}_error"' in html, (field, value)
        assert "<script>x</script>" not in html
    assert not Job.objects.filter(kind="set").exists()


def test_a_disk_shrink_on_a_running_ve_is_shown_on_the_disk_field(client, people, ve):
    VE.objects.filter(pk=ve.pk).update(state=VE.State.RUNNING)
    signed_in(client, people.operator)
    r = client.post(url("panel:ve-set", ve), {"disk": "1M"})
    assert r.status_code == 400 and 'id="id_res_disk_error"' in r.content.decode()
    assert not Job.objects.filter(kind="set").exists()


def test_setting_the_hostname(client, people, ve):
    signed_in(client, people.owner)
    for value in [v for v in HOSTILE if not v.isdigit()] + ["x" * 300]:
        r = client.post(url("panel:ve-hostname", ve), {"hostname": value})
        assert r.status_code == 400, value
        assert 'id="id_host_hostname_error"' in r.content.decode(), value
    assert not Job.objects.filter(kind="set").exists()
    r = client.post(url("panel:ve-hostname", ve), {"hostname": "www.example.test"})
    job = Job.objects.get(ve=ve, kind="set")
    assert r.status_code == 302 and job.args["changes"] == {"hostname": "www.example.test"}


def test_changing_the_plan(client, people, ve):
    small = plan_create(name="small", memory="256M", disk="2G")
    plan_create(name="hidden", memory="256M", disk="2G", enabled=False)
    signed_in(client, people.operator)
    for value in ("nope", "hidden", "../x", "<script>x</script>"):
        r = client.post(url("panel:ve-change-plan", ve), {"plan": value})
        assert r.status_code == 400 and 'id="id_plan_plan_error"' in r.content.decode(), value
    assert not Job.objects.filter(kind="set").exists()
    r = client.post(url("panel:ve-change-plan", ve), {"plan": "small"})
    job = Job.objects.get(ve=ve, kind="set")
    assert r.status_code == 302 and job.args["plan"] == small.pk


def test_a_viewer_sees_no_change_forms_and_a_forged_post_is_refused(client, people, ve):
    plan_create(name="small", memory="256M", disk="2G")
    signed_in(client, people.viewer)
    html = client.get(url("panel:ve-detail", ve)).content.decode()
    for name in ("panel:ve-set", "panel:ve-change-plan", "panel:ve-hostname"):
        assert url(name, ve) not in html
    for name, data in (("panel:ve-set", {"memory": "1G"}), ("panel:ve-change-plan", {"plan": "small"}),
                       ("panel:ve-hostname", {"hostname": "sneaky"})):
        r = client.post(url(name, ve), data)
        assert r.status_code == 403, name
    assert not Job.objects.filter(kind="set").exists()


def test_another_tenant_gets_404_on_the_change_urls(client, people, ve):
    signed_in(client, people.outsider)
    for name in ("panel:ve-set", "panel:ve-change-plan", "panel:ve-hostname"):
        assert client.post(url(name, ve), {"memory": "1G", "hostname": "x", "plan": "x"}).status_code == 404
        assert client.get(url(name, ve)).status_code == 405
    assert not Job.objects.filter(kind="set").exists()


# --- members ---------------------------------------------------------------------------------

def member(user, tenant):
    return Membership.objects.get(user=user, tenant=tenant)


def test_everyone_sees_the_members_but_only_owners_get_the_forms(client, people, tenant):
    for user in (people.operator, people.viewer):
        signed_in(client, user)
        html = client.get(reverse("panel:members")).content.decode()
        assert "olivia" in html and "oscar" in html and "vera" in html and "mallory" not in html
        for name in ("panel:member-invite", "panel:member-role", "panel:member-remove"):
            assert reverse(name) not in html, (user, name)
    signed_in(client, people.owner)
    html = client.get(reverse("panel:members")).content.decode()
    for name in ("panel:member-invite", "panel:member-role", "panel:member-remove"):
        assert reverse(name) in html


def test_lower_roles_forged_posts_are_refused(client, people, tenant):
    oscar = member(people.operator, tenant)
    for user in (people.operator, people.viewer):
        signed_in(client, user)
        assert client.post(reverse("panel:member-role"), {"member": oscar.pk, "role": "owner"}).status_code == 403
        assert client.post(reverse("panel:member-remove"), {"member": oscar.pk}).status_code == 403
        assert client.post(reverse("panel:member-invite"), {"email": "x@example.test", "role": "owner"}).status_code == 403
    oscar.refresh_from_db()
    assert oscar.role == "operator" and not get_user_model().objects.filter(email="x@example.test").exists()
    assert not AuditEvent.objects.filter(action__startswith="member.").exists()


def test_another_tenants_member_is_not_found(client, people, tenant, other_tenant):
    theirs = member(people.outsider, other_tenant)
    signed_in(client, people.owner)
    for value in (theirs.pk, 999999, "../1", "x"):
        assert client.post(reverse("panel:member-role"), {"member": value, "role": "viewer"}).status_code == 404
        assert client.post(reverse("panel:member-remove"), {"member": value}).status_code == 404
    theirs.refresh_from_db()
    assert theirs.role == "owner"


def test_an_owner_changes_a_role_and_removes_a_member(client, people, tenant):
    signed_in(client, people.owner)
    oscar, vera = member(people.operator, tenant), member(people.viewer, tenant)
    r = client.post(reverse("panel:member-role"), {"member": oscar.pk, "role": "viewer"}, follow=True)
    assert r.status_code == 200 and "oscar is now viewer" in r.content.decode()
    oscar.refresh_from_db()
    assert oscar.role == "viewer"
    event = AuditEvent.objects.get(action="member.role")
    assert event.tenant == tenant and event.detail["to"] == "viewer" and event.actor == people.owner
    r = client.post(reverse("panel:member-role"), {"member": oscar.pk, "role": "god"}, follow=True)
    assert "Choose one of the roles" in r.content.decode()
    r = client.post(reverse("panel:member-remove"), {"member": vera.pk})
    assert r.status_code == 302 and not Membership.objects.filter(pk=vera.pk).exists()
    assert AuditEvent.objects.filter(action="member.remove", tenant=tenant).count() == 1


def test_the_last_owner_cannot_be_demoted_or_removed(client, people, tenant):
    signed_in(client, people.owner)
    olivia = member(people.owner, tenant)
    for name, data in (("panel:member-role", {"member": olivia.pk, "role": "operator"}),
                       ("panel:member-remove", {"member": olivia.pk})):
        r = client.post(reverse(name), data, follow=True)
        assert "at least one owner" in r.content.decode(), name
    olivia.refresh_from_db()
    assert olivia.role == "owner"
    # With a second owner, the first may step down.
    oscar = member(people.operator, tenant)
    members.member_role_set(tenant=tenant, member_id=oscar.pk, role="owner", actor=people.owner)
    client.post(reverse("panel:member-role"), {"member": olivia.pk, "role": "viewer"})
    olivia.refresh_from_db()
    assert olivia.role == "viewer"


def test_inviting_a_new_address_creates_an_account_and_mails_a_link(client, people, tenant, mailoutbox,
                                                                    django_capture_on_commit_callbacks):
    signed_in(client, people.owner)
    with django_capture_on_commit_callbacks(execute=True):
        r = client.post(reverse("panel:member-invite"), {"email": "New.Person@example.test", "role": "operator"})
    assert r.status_code == 302
    user = get_user_model().objects.get(email="New.Person@example.test")
    assert not user.has_usable_password() and member(user, tenant).role == "operator"
    assert len(mailoutbox) == 1 and mailoutbox[0].to == ["New.Person@example.test"]
    link = next(line for line in mailoutbox[0].body.splitlines() if "/accounts/reset/" in line)
    r = client.get(link.replace("http://testserver", ""), follow=True)
    assert r.status_code == 200 and 'name="new_password1"' in r.content.decode()
    assert AuditEvent.objects.get(action="member.invite").detail["new_account"] is True


def test_inviting_an_existing_user_adds_them(client, people, tenant, mailoutbox):
    signed_in(client, people.owner)
    r = client.post(reverse("panel:member-invite"), {"email": "MALLORY@example.test", "role": "viewer"})
    assert r.status_code == 302 and member(people.outsider, tenant).role == "viewer"
    assert not mailoutbox
    r = client.post(reverse("panel:member-invite"), {"email": "mallory@example.test", "role": "viewer"})
    assert r.status_code == 400 and "already a member" in r.content.decode()


@pytest.mark.parametrize("value", HOSTILE + ["a@b", "x" * 300 + "@example.test", "a@example.test\nBcc: c@d.e"])
def test_inviting_refuses_bad_addresses(client, people, tenant, value, mailoutbox):
    signed_in(client, people.owner)
    users = get_user_model().objects.count()
    r = client.post(reverse("panel:member-invite"), {"email": value, "role": "viewer"})
    assert r.status_code == 400 and 'id="id_email_error"' in r.content.decode()
    assert "<script>x</script>" not in r.content.decode()
    assert get_user_model().objects.count() == users and not mailoutbox


# --- staff: tenants and their limits ---------------------------------------------------------

def test_staff_create_a_tenant_with_its_first_owner(client, people, mailoutbox, django_capture_on_commit_callbacks):
    signed_in(client, people.staff)
    assert client.get(reverse("panel:staff-tenants")).content.decode().count(reverse("panel:staff-tenant-create"))
    r = client.get(reverse("panel:staff-tenant-create"))
    assert r.status_code == 200 and 'for="id_owner_email"' in r.content.decode()
    with django_capture_on_commit_callbacks(execute=True):
        r = client.post(reverse("panel:staff-tenant-create"),
                        {"slug": "initech", "name": "Initech", "owner_email": "bill@initech.test"})
    assert r.status_code == 302
    t = Tenant.objects.get(slug="initech")
    boss = Membership.objects.get(tenant=t)
    assert boss.role == "owner" and boss.user.email == "bill@initech.test" and not boss.user.has_usable_password()
    assert len(mailoutbox) == 1 and "/accounts/reset/" in mailoutbox[0].body
    assert AuditEvent.objects.filter(action="tenant.create", tenant=t, actor=people.staff).count() == 1
    # An existing user as first owner; a taken slug is shown on its field.
    r = client.post(reverse("panel:staff-tenant-create"), {"slug": "initech", "name": "X", "owner_email": "a@b.test"})
    assert r.status_code == 400 and 'id="id_slug_error"' in r.content.decode()
    r = client.post(reverse("panel:staff-tenant-create"),
                    {"slug": "hooli", "name": "Hooli", "owner_email": "olivia@example.test"})
    assert r.status_code == 302
    assert Membership.objects.get(tenant__slug="hooli").user == people.owner and len(mailoutbox) == 1


@pytest.mark.parametrize("field", ["slug", "name", "owner_email"])
def test_tenant_create_refuses_hostile_values(client, people, field):
    signed_in(client, people.staff)
    good = {"slug": "initech", "name": "Initech", "owner_email": "bill@initech.test"}
    for value in HOSTILE + ["UPPER", "-x", "x" * 300]:
        if field == "name" and value in ("9" * 40, "ホスト", "-1", "$(id)", "<script>x</script>", "../../etc/passwd",
                                         "; rm -rf /", "UPPER", "-x"):
            continue  # fine as a display name (escaped on output)
        if field == "slug" and value.isdigit():
            continue  # a valid slug
        r = client.post(reverse("panel:staff-tenant-create"), {**good, field: value})
        html = r.content.decode()
        assert r.status_code == 400, (field, value)
        assert f'id="id_{field}_error"' in html, (field, value)
        assert "<script>x</script>" not in html
    assert not Tenant.objects.filter(slug="initech").exists()


def test_staff_edit_a_tenants_limits(client, people, tenant):
    signed_in(client, people.staff)
    url_ = reverse("panel:staff-tenant-quota", kwargs={"tenant_id": tenant.pk})
    assert url_ in client.get(reverse("panel:staff-tenants")).content.decode()
    assert client.get(url_).status_code == 200
    r = client.post(url_, {"max_ves": "7", "memory": "8G", "disk": "unlimited"})
    assert r.status_code == 302
    q = TenantQuota.objects.get(tenant=tenant)
    assert (q.max_ves, q.memory, q.disk) == (7, 8 << 30, None)
    event = AuditEvent.objects.get(action="quota.set", tenant=tenant)
    assert event.actor == people.staff
    for value in HOSTILE + ["99999999T"]:
        r = client.post(url_, {"memory": value})
        assert r.status_code == 400 and 'id="id_memory_error"' in r.content.decode(), value
    assert client.post(url_, {}).status_code == 400
    q.refresh_from_db()
    assert q.memory == 8 << 30 and AuditEvent.objects.filter(action="quota.set").count() == 1


def test_the_tenant_pages_are_for_staff_only(client, people, tenant):
    quota_url = reverse("panel:staff-tenant-quota", kwargs={"tenant_id": tenant.pk})
    for user in (people.owner, people.operator, people.viewer):
        signed_in(client, user)
        assert client.get(reverse("panel:staff-tenant-create")).status_code == 403
        r = client.post(reverse("panel:staff-tenant-create"), {"slug": "evil", "name": "E", "owner_email": "e@e.test"})
        assert r.status_code == 403
        assert client.get(quota_url).status_code == 403
        assert client.post(quota_url, {"max_ves": "999"}).status_code == 403
    signed_in(client, people.outsider)
    assert client.post(quota_url, {"max_ves": "999"}).status_code == 404
    assert not Tenant.objects.filter(slug="evil").exists()
    assert not AuditEvent.objects.filter(action__in=["quota.set", "tenant.create"]).exists()


# --- language --------------------------------------------------------------------------------

def test_the_new_pages_render_in_japanese(client, people, tenant, ve):
    signed_in(client, people.owner)
    client.post(reverse("set_language"), {"language": "ja", "next": "/"})
    pages = {
        url("panel:ve-detail", ve): ["リソースを変更", "ホスト名を設定"],
        reverse("panel:members"): ["メンバーを追加", "ロールを変更", "メールアドレス"],
    }
    for page, words in pages.items():
        html = client.get(page).content.decode()
        for word in words:
            assert word in html, (page, word)
    r = client.post(url("panel:ve-set", ve), {"memory": "512M"}, follow=True)
    assert f"VE {ve.veid} のリソース変更を受け付けました。" in r.content.decode()
    signed_in(client, people.staff)
    html = client.get(reverse("panel:staff-tenant-create")).content.decode()
    assert "新しいテナント" in html and "最初のオーナーのメールアドレス" in html
