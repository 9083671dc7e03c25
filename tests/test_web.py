"""The browser panel through Django's test client: signing in, tenant scoping of every
URL that takes an object id, roles on the power actions, fixed query counts on the VE
list, the create form's errors and the Japanese translation.

Jobs go to a node row no agent consumes (``idle_node``) and these tests run inside a
transaction, so nothing is sent to a broker: the end-to-end journey is tests/test_browser.py.
"""
import re
import uuid

import pytest
from django.conf import settings
from django.utils import timezone
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import URLPattern, URLResolver, get_resolver, reverse

from panel.models import VE, Job, Membership, OSTemplate, QuotaRequest, Suspension
from panel.services import ves as svc
from tests.tenancy import idle_node, make_user, people, settle  # noqa: F401

pytestmark = pytest.mark.django_db

PASSWORD = "correct horse battery"


def signed_in(client, user):
    client.force_login(user)
    return client


def make_ve(tenant, hostname="web1"):
    return VE.objects.get(pk=svc.ve_create(tenant=tenant, template="busybox", hostname=hostname).ve_id)


def panel_object_urls():
    """Every panel URL pattern that takes an object id: (name, kwarg)."""
    resolver = get_resolver()
    found = []

    def walk(patterns, ns):
        for p in patterns:
            if isinstance(p, URLResolver):
                walk(p.url_patterns, p.namespace or ns)
            elif isinstance(p, URLPattern) and ns == "panel":
                for kw in ("ve_id", "job_id", "request_id", "tenant_id"):
                    if f"<uuid:{kw}>" in str(p.pattern):
                        found.append((f"panel:{p.name}", kw))
    walk(resolver.url_patterns, None)
    return found


# --- signing in ------------------------------------------------------------------------------

def with_password(user):
    user.set_password(PASSWORD)
    user.save(update_fields=["password"])
    return user


def test_it_signs_in_and_out(client, people):
    with_password(people.owner)
    r = client.post(reverse("login"), {"username": "olivia", "password": PASSWORD})
    assert r.status_code == 302 and r.url == reverse("panel:ve-list")
    r = client.get(reverse("panel:ve-list"))
    assert r.status_code == 200 and b"olivia" in r.content and b"Acme" in r.content
    r = client.post(reverse("logout"))
    assert r.status_code == 302
    assert client.get(reverse("panel:ve-list")).status_code == 302


def test_it_refuses_a_wrong_password(client, people):
    with_password(people.owner)
    r = client.post(reverse("login"), {"username": "olivia", "password": "wrong"})
    assert r.status_code == 200 and b"did not match" in r.content
    assert client.get(reverse("panel:ve-list")).status_code == 302


def test_it_sends_anonymous_users_to_sign_in(client, idle_node, tenant):
    ve = make_ve(tenant)
    for url in (reverse("panel:ve-list"), reverse("panel:ve-detail", kwargs={"ve_id": ve.pk}),
                reverse("panel:staff-nodes")):
        r = client.get(url)
        assert r.status_code == 302 and r.url.startswith(reverse("login"))
    r = client.post(reverse("panel:ve-start", kwargs={"ve_id": ve.pk}))
    assert r.status_code == 302 and not Job.objects.filter(kind="start").exists()


def test_the_sign_in_page_has_labelled_inputs(client):
    html = client.get(reverse("login")).content.decode()
    assert '<label for="id_username">' in html and '<label for="id_password">' in html


# --- tenancy ---------------------------------------------------------------------------------

def test_it_denies_other_tenant_on_every_object_url(client, idle_node, people, other_tenant):
    theirs = make_ve(other_tenant, "zz-hidden-host")
    their_job = Job.objects.get(ve=theirs)
    their_request = QuotaRequest.objects.create(tenant=other_tenant, amounts={"max_ves": 9}, reason="zz-hidden-host")
    their_ids = {"ve_id": theirs.pk, "job_id": their_job.pk, "request_id": their_request.pk,
                 "tenant_id": other_tenant.pk}
    urls = panel_object_urls()
    post_only = {"panel:ve-start", "panel:ve-stop", "panel:ve-restart", "panel:ve-destroy",
                 "panel:ve-set", "panel:ve-change-plan", "panel:ve-hostname", "panel:ve-password",
                 "panel:staff-quota-approve", "panel:staff-quota-deny", "panel:staff-tenant-suspend",
                 "panel:staff-tenant-unsuspend", "panel:ve-console-ticket", "panel:ve-exec",
                 "panel:staff-ve-suspend", "panel:staff-ve-unsuspend", "panel:ve-ipadd", "panel:ve-ipdel"}
    names = {name for name, _ in urls}
    assert {"panel:ve-detail", "panel:ve-start", "panel:ve-stop", "panel:ve-restart", "panel:ve-destroy",
            "panel:ve-status", "panel:job-detail", "panel:job-log", "panel:ve-ipadd", "panel:ve-ipdel"} \
        | post_only <= names
    signed_in(client, people.owner)
    for name, kw in urls:
        for obj_id in (their_ids[kw], uuid.uuid4()):
            url = reverse(name, kwargs={kw: obj_id})
            data = {"confirm": "zz-hidden-host", "reason": "zz", "version": "1", "address": "198.18.0.9"}
            for r, method in ((client.get(url), "GET"), (client.post(url, data), "POST")):
                # A POST-only URL answers GET with 405 whether the object exists or not.
                expected = 405 if method == "GET" and name in post_only else 404
                assert r.status_code == expected, f"{method} {name}: {r.status_code}"
                assert b"zz-hidden-host" not in r.content
    theirs.refresh_from_db()
    assert list(Job.objects.filter(ve=theirs).values_list("kind", flat=True)) == ["create"]
    their_request.refresh_from_db()
    assert their_request.state == "pending" and not Suspension.objects.exists()


def test_lists_show_only_the_current_tenant(client, idle_node, people, tenant, other_tenant):
    make_ve(tenant, "mine")
    make_ve(other_tenant, "theirs")
    signed_in(client, people.owner)
    html = client.get(reverse("panel:ve-list")).content.decode()
    assert "mine" in html and "theirs" not in html
    html = client.get(reverse("panel:job-list")).content.decode()
    assert html.count('<tr id="job-') == 1


def test_the_switcher_changes_tenant_and_refuses_foreign_ones(client, idle_node, people, tenant, other_tenant):
    from panel.models import Tenant

    third = Tenant.objects.create(slug="initech", name="Initech")
    Membership.objects.create(user=people.owner, tenant=third, role=Membership.Role.VIEWER)
    make_ve(tenant, "in-acme")
    make_ve(third, "in-initech")
    signed_in(client, people.owner)
    html = client.get(reverse("panel:ve-list")).content.decode()
    assert 'id="tenant-switch"' in html and "Initech" in html and "Globex" not in html
    r = client.post(reverse("panel:tenant-switch"), {"tenant": str(third.pk)})
    assert r.status_code == 302
    html = client.get(reverse("panel:ve-list")).content.decode()
    assert "in-initech" in html and "in-acme" not in html
    assert "Create a VE" not in html, "viewer in Initech: no create button"
    r = client.post(reverse("panel:tenant-switch"), {"tenant": str(other_tenant.pk)})
    assert r.status_code == 404
    assert client.post(reverse("panel:tenant-switch"), {"tenant": "../x"}).status_code == 404
    assert "in-initech" in client.get(reverse("panel:ve-list")).content.decode()


# --- roles -----------------------------------------------------------------------------------

def test_a_viewer_sees_no_power_buttons_and_a_forged_post_changes_nothing(client, idle_node, people, tenant):
    ve = settle(svc.ve_create(tenant=tenant, template="busybox", hostname="web1"))
    signed_in(client, people.viewer)
    html = client.get(reverse("panel:ve-detail", kwargs={"ve_id": ve.pk})).content.decode()
    assert "web1" in html
    assert reverse("panel:ve-start", kwargs={"ve_id": ve.pk}) not in html
    assert reverse("panel:ve-destroy", kwargs={"ve_id": ve.pk}) not in html
    before = Job.objects.count()
    for name in ("panel:ve-start", "panel:ve-stop", "panel:ve-restart", "panel:ve-destroy"):
        r = client.post(reverse(name, kwargs={"ve_id": ve.pk}), {"confirm": "web1"})
        assert r.status_code == 403, name
        assert "Not allowed" in r.content.decode()
    r = client.post(reverse("panel:ve-create"), {"template": "busybox", "hostname": "sneaky"})
    assert r.status_code == 403
    assert client.get(reverse("panel:ve-create")).status_code == 403
    assert Job.objects.count() == before
    ve.refresh_from_db()
    assert ve.state == "stopped" and not VE.objects.filter(hostname="sneaky").exists()


def test_an_operator_starts_a_ve_through_the_service(client, idle_node, people, tenant):
    ve = settle(svc.ve_create(tenant=tenant, template="busybox", hostname="web1"))
    signed_in(client, people.operator)
    html = client.get(reverse("panel:ve-detail", kwargs={"ve_id": ve.pk})).content.decode()
    assert reverse("panel:ve-start", kwargs={"ve_id": ve.pk}) in html
    r = client.post(reverse("panel:ve-start", kwargs={"ve_id": ve.pk}))
    assert r.status_code == 302
    job = Job.objects.get(ve=ve, kind="start")
    assert job.actor == people.operator and job.state == "pending"
    # A second mutating job while this one is pending: the service's Conflict, shown as a message.
    r = client.post(reverse("panel:ve-stop", kwargs={"ve_id": ve.pk}), follow=True)
    assert r.status_code == 200 and "is busy" in r.content.decode()
    assert not Job.objects.filter(ve=ve, kind="stop").exists()
    # While the job is active the state panel polls.
    html = client.get(reverse("panel:ve-status", kwargs={"ve_id": ve.pk})).content.decode()
    assert 'hx-trigger="every 2s"' in html


def test_destroy_needs_the_hostname_typed(client, idle_node, people, tenant):
    ve = settle(svc.ve_create(tenant=tenant, template="busybox", hostname="web1"))
    signed_in(client, people.operator)
    url = reverse("panel:ve-destroy", kwargs={"ve_id": ve.pk})
    r = client.post(url, {"confirm": "web2"})
    assert r.status_code == 400 and "nothing was destroyed" in r.content.decode()
    assert not Job.objects.filter(ve=ve, kind="destroy").exists()
    r = client.post(url, {"confirm": "web1"})
    job = Job.objects.get(ve=ve, kind="destroy")
    assert r.status_code == 302 and r.url == reverse("panel:job-detail", kwargs={"job_id": job.pk})


# --- create form -----------------------------------------------------------------------------

def test_create_shows_service_errors_next_to_the_field(client, idle_node, people):
    signed_in(client, people.operator)
    r = client.get(reverse("panel:ve-create"))
    assert r.status_code == 200 and 'for="id_hostname"' in r.content.decode()
    hostile = ["bad host;rm -rf /", "a\nb", "../etc", "x" * 300, "ホスト"]
    for value in hostile:
        r = client.post(reverse("panel:ve-create"), {"template": "busybox", "hostname": value})
        html = r.content.decode()
        assert r.status_code == 400, value
        assert 'id="id_hostname_error"' in html or "at most 253" in html, value
    r = client.post(reverse("panel:ve-create"), {"template": "busybox", "hostname": "ok", "memory": "9999999T"})
    assert r.status_code == 400 and 'id="id_memory_error"' in r.content.decode()
    r = client.post(reverse("panel:ve-create"), {"template": "busybox", "hostname": "ok", "plan": "nope"})
    assert r.status_code == 400
    assert not VE.objects.exists() and not Job.objects.exists()


HOSTILE = ["; rm -rf /", "a\nb", "../../etc/passwd", "9" * 40, "ホスト", "-1", "$(id)", "<script>x</script>"]


@pytest.mark.parametrize("field", ["template", "hostname", "plan", "memory", "swap", "disk", "numproc",
                                   "cpuunits", "cpulimit"])
def test_create_refuses_hostile_values_in_every_field(client, idle_node, people, field):
    signed_in(client, people.operator)
    # 40 digits is a valid RFC 1123 hostname; 300 letters is not.
    for value in (HOSTILE if field != "hostname" else [v for v in HOSTILE if not v.isdigit()] + ["x" * 300]):
        data = {"template": "busybox", "hostname": "ok1", field: value}
        r = client.post(reverse("panel:ve-create"), data)
        html = r.content.decode()
        assert r.status_code == 400, (field, value)
        assert f'id="id_{field}_error"' in html or 'class="error" role="alert"' in html, (field, value)
        assert "<script>x</script>" not in html, "echoed input is escaped"
    assert not VE.objects.exists() and not Job.objects.exists()


def test_create_queues_a_job_and_shows_it(client, idle_node, people, tenant):
    signed_in(client, people.operator)
    r = client.post(reverse("panel:ve-create"), {"template": "busybox", "hostname": "new1", "memory": "128M"})
    assert r.status_code == 302
    ve = VE.objects.get(hostname="new1")
    assert ve.tenant == tenant and ve.memory == 128 << 20
    job = Job.objects.get(ve=ve)
    assert r.url == reverse("panel:job-detail", kwargs={"job_id": job.pk})
    html = client.get(r.url).content.decode()
    assert 'hx-trigger="every 1s"' in html and reverse("panel:job-log", kwargs={"job_id": job.pk}) in html
    settle(job)
    html = client.get(reverse("panel:job-log", kwargs={"job_id": job.pk})).content.decode()
    assert "hx-trigger" not in html, "a terminal job stops polling"
    assert 'data-state="succeeded"' in html


def test_create_offers_to_start_the_ve_in_the_same_job(client, idle_node, people):
    """The form's "start" box is ticked by default (one job creates and starts the VE);
    unticked (a browser then sends nothing for it), the VE is created stopped."""
    signed_in(client, people.operator)
    html = client.get(reverse("panel:ve-create")).content.decode()
    assert re.search(r'<input type="checkbox" name="start"[^>]* checked', html)
    client.post(reverse("panel:ve-create"), {"template": "busybox", "hostname": "up1", "start": "on"})
    client.post(reverse("panel:ve-create"), {"template": "busybox", "hostname": "down1"})
    assert Job.objects.get(ve__hostname="up1").args.get("start") is True
    assert "start" not in Job.objects.get(ve__hostname="down1").args


# --- lists -----------------------------------------------------------------------------------

def _bulk_ves(tenant, node, n):
    tmpl = OSTemplate.objects.get(name="busybox")
    VE.objects.bulk_create([
        VE(veid=10_000 + i, tenant=tenant, node=node, template=tmpl, hostname=f"bulk{i:04d}.example",
           state=VE.State.RUNNING if i % 2 else VE.State.STOPPED, memory=256 << 20, disk=1 << 30, numproc=512,
           nproc=i % 40, addresses=[f"198.18.{i // 250}.{i % 250 + 1}"], uid_base=settings.HAKO_ID_BASE + i * 65536)
        for i in range(n)])


def test_the_ve_list_costs_a_fixed_number_of_queries(client, idle_node, people, tenant,
                                                     django_assert_num_queries):
    _bulk_ves(tenant, idle_node, 3)
    signed_in(client, people.owner)
    url = reverse("panel:ve-list")
    client.get(url)  # the session's first write is not part of a page's cost
    with CaptureQueriesContext(connection) as small:
        assert client.get(url).status_code == 200
    VE.objects.all().delete()
    _bulk_ves(tenant, idle_node, 1000)
    with django_assert_num_queries(len(small.captured_queries)):
        r = client.get(url + "?sort=-hostname&page=3")
    html = r.content.decode()
    assert "1000 VEs in Acme" in html and "Page 3 of 20" in html
    assert html.count('href="/ves/') >= 100
    with django_assert_num_queries(len(small.captured_queries)):
        r = client.get(url + "?state=running&q=bulk0")
    assert "bulk0001.example" in r.content.decode() and "bulk0002.example" not in r.content.decode()


def test_the_staff_ve_and_job_lists_cost_a_fixed_number_of_queries(client, idle_node, people, tenant,
                                                                   django_assert_num_queries):
    signed_in(client, people.staff)
    _bulk_ves(tenant, idle_node, 2)
    for ve in VE.objects.all():
        svc.ve_status(ve=ve)  # a non-mutating job per VE
    counts = {}
    for name in ("panel:staff-ves", "panel:staff-jobs", "panel:job-list"):
        client.get(reverse(name))
        with CaptureQueriesContext(connection) as small:
            client.get(reverse(name))
        counts[name] = len(small.captured_queries)
    VE.objects.filter(veid__gte=10_002).delete()
    first = 10_002
    tmpl = OSTemplate.objects.get(name="busybox")
    VE.objects.bulk_create([
        VE(veid=first + i, tenant=tenant, node=idle_node, template=tmpl, hostname=f"more{i}", memory=1 << 28,
           disk=1 << 30, numproc=512, uid_base=settings.HAKO_ID_BASE + (10 + i) * 65536) for i in range(300)])
    ve_ids = list(VE.objects.filter(veid__gte=first).values_list("pk", flat=True))
    Job.objects.bulk_create([
        Job(kind="status", ve_id=pk, tenant=tenant, node=idle_node, actor=people.staff, mutating=False,
            expires_at=timezone.now()) for pk in ve_ids])
    for name, n in counts.items():
        with django_assert_num_queries(n):
            r = client.get(reverse(name))
        assert r.status_code == 200 and "Page 1 of" in r.content.decode(), name


def test_sorting_and_filtering_ignore_junk(client, idle_node, people, tenant):
    _bulk_ves(tenant, idle_node, 5)
    signed_in(client, people.owner)
    for qs in ("?sort=;drop", "?state=<script>", "?page=-1", "?page=x", "?q=" + "%00" * 3, "?sort=-memory"):
        r = client.get(reverse("panel:ve-list") + qs)
        assert r.status_code == 200, qs
        assert "<script>" not in r.content.decode().split("<main", 1)[1]


def test_empty_states_say_what_to_do(client, idle_node, people):
    signed_in(client, people.owner)
    assert "Create the first one" in client.get(reverse("panel:ve-list")).content.decode()
    assert "No jobs yet" in client.get(reverse("panel:job-list")).content.decode()
    signed_in(client, people.viewer)
    assert "An owner or operator" in client.get(reverse("panel:ve-list")).content.decode()


def test_a_user_without_tenant_is_told_what_to_do(client, db):
    signed_in(client, make_user("lonely"))
    r = client.get(reverse("panel:ve-list"))
    assert r.status_code == 200 and "not a member of any tenant" in r.content.decode()


# --- staff area ------------------------------------------------------------------------------

def test_the_staff_area_is_for_staff_only(client, idle_node, people, tenant, other_tenant):
    a = make_ve(tenant, "alpha")
    make_ve(other_tenant, "beta")
    signed_in(client, people.owner)
    for name in ("panel:staff-nodes", "panel:staff-ves", "panel:staff-jobs", "panel:staff-quota-requests",
                 "panel:staff-tenants", "panel:staff-plans", "panel:staff-pools", "panel:staff-templates",
                 "panel:staff-audit"):
        assert client.get(reverse(name)).status_code == 403, name
    signed_in(client, people.staff)
    html = client.get(reverse("panel:staff-nodes")).content.decode()
    assert idle_node.name in html and "online" in html
    html = client.get(reverse("panel:staff-ves")).content.decode()
    assert "alpha" in html and "beta" in html
    html = client.get(reverse("panel:staff-ves") + "?tenant=globex").content.decode()
    assert "alpha" not in html and "beta" in html
    html = client.get(reverse("panel:staff-jobs") + f"?tenant=acme&node={idle_node.name}&kind=create"
                                                   "&state=pending").content.decode()
    assert html.count('<tr id="job-') == 1
    assert client.get(reverse("panel:ve-detail", kwargs={"ve_id": a.pk})).status_code == 200
    assert client.get(reverse("admin:index")).status_code == 200


# --- language --------------------------------------------------------------------------------

def test_main_pages_render_in_japanese(client, idle_node, people, tenant):
    ve = make_ve(tenant, "web1")
    job = Job.objects.get(ve=ve)
    signed_in(client, people.owner)
    r = client.post(reverse("set_language"), {"language": "ja", "next": "/"})
    assert r.status_code == 302
    pages = {
        reverse("panel:ve-list"): ["仮想環境", "状態", "ホスト名", "サインアウト"],
        reverse("panel:ve-detail", kwargs={"ve_id": ve.pk}): ["リソース", "メモリ", "起動", "ジョブ履歴"],
        reverse("panel:ve-create"): ["仮想環境を作成", "OS テンプレート"],
        reverse("panel:job-list"): ["ジョブ"],
        reverse("panel:job-detail", kwargs={"job_id": job.pk}): ["ログ", "作成"],
    }
    for url, words in pages.items():
        html = client.get(url).content.decode()
        assert '<html lang="ja">' in html, url
        for word in words:
            assert word in html, (url, word)
    client.logout()
    assert "サインイン" in client.get(reverse("login"), HTTP_ACCEPT_LANGUAGE="ja").content.decode()


def test_every_template_string_is_translated():
    """The Japanese catalogue is complete: no empty or fuzzy entry."""
    from pathlib import Path

    po = (Path(settings.BASE_DIR) / "locale/ja/LC_MESSAGES/django.po").read_text()
    entries = po.split("\n\n")[1:]
    assert len(entries) > 100
    for entry in entries:
        assert "#, fuzzy" not in entry, entry
        assert not entry.rstrip().endswith('msgstr ""') or "msgstr[" in entry, entry
    assert (Path(settings.BASE_DIR) / "locale/ja/LC_MESSAGES/django.mo").exists()


# --- pages and assets ------------------------------------------------------------------------

def test_vendored_assets_are_served_by_the_panel(client):
    for path, marker in (("/static/vendor/htmx.min.js", b"htmx"), ("/static/vendor/pico.min.css", b"Pico"),
                         ("/static/hako.css", b"state")):
        r = client.get(path)
        assert r.status_code == 200, path
        assert marker in b"".join(r.streaming_content if r.streaming else [r.content]), path
    html = client.get(reverse("login")).content.decode()
    assert "/static/vendor/htmx.min.js" in html and "http" not in html.split("<body", 1)[0].replace(
        "http-equiv", ""), "no CDN: every asset comes from the panel"


def test_error_pages_are_readable():
    from django.template import loader

    html = loader.get_template("500.html").render({})
    assert "Server error" in html and "nothing was changed" in html
