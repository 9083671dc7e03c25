"""The audit log is complete, append-only, scoped and injection-proof (R17).

A scripted session of privileged actions by several people must leave exactly one record
per action, with who, tenant, what, object, result and source; sign-ins and failed ones
are recorded with the source address; values with newlines or escape sequences cannot
forge a record, neither in the database nor in ``manage.py auditlog``.
"""
import json
from datetime import timedelta

import pytest
from django.contrib.auth import authenticate, login
from django.contrib.sessions.backends.db import SessionStore
from django.core.management import call_command
from django.test import RequestFactory
from django.utils import timezone

from panel.models import AuditEvent, Job
from panel.selectors import audit_for
from panel.services import quotas, suspensions
from panel.services import ves as svc
from panel.services.audit import audit, audit_token_use
from panel.services.errors import Forbidden, NotFound
from panel.services.network import pool_create, ve_ipadd
from panel.services.plans import plan_create
from tests.tenancy import idle_node, make_user, people, settle  # noqa: F401

pytestmark = pytest.mark.django_db(transaction=True)

G = 1 << 30
IP = "198.51.100.7"


def test_a_scripted_session_leaves_exactly_one_record_per_privileged_action(idle_node, tenant, people):
    pool_create(name="a4", network="198.18.6.0/24", nodes=[idle_node], source="cli:root")
    plan_create(name="basic", memory="512M", disk="2G", actor=people.staff, source=IP)
    quotas.quota_set(tenant=tenant, actor=people.staff, memory=G, source=IP)
    ve = settle(svc.ve_create(tenant=tenant, template="busybox", plan="basic", actor=people.operator, source=IP))
    settle(svc.ve_start(ve=ve, actor=people.operator, source=IP), state="running")
    settle(svc.ve_set(ve=ve, cpulimit=50, actor=people.operator, source=IP), state="running")
    settle(ve_ipadd(ve=ve, actor=people.operator, source=IP), state="running")
    req = quotas.quota_request_create(tenant=tenant, actor=people.owner, amounts={"memory": "4G"},
                                      reason="growth", source=IP)
    quotas.quota_request_approve(request=req, actor=people.staff, reason="fine", source=IP)
    s = suspensions.ve_suspend(ve=ve, by="abuse", reason="open resolver", actor=people.staff2, source=IP)
    settle(s.stop_jobs[0])
    suspensions.ve_unsuspend(ve=ve, by="abuse", actor=people.staff2, source=IP)
    with pytest.raises(Forbidden):
        svc.ve_set(ve=ve, memory=G, actor=people.viewer, source=IP)

    expected = [  # (action, actor, result) in order
        ("pool.create", "", "ok"),
        ("node_config", None, None),  # not an audit record: the pool's job to the node
        ("plan.create", "sam", "ok"),
        ("quota.set", "sam", "ok"),
        ("ve.create", "oscar", "ok"),
        ("ve.start", "oscar", "ok"),
        ("ve.set", "oscar", "ok"),
        ("ve.ipadd", "oscar", "ok"),
        ("quota_request.create", "olivia", "ok"),
        ("quota_request.approve", "sam", "ok"),
        ("ve.suspend", "sue", "ok"),
        ("ve.stop", "sue", "ok"),
        ("ve.unsuspend", "sue", "ok"),
        ("access.denied", "vera", "denied"),
    ]
    expected = [e for e in expected if e[1] is not None]
    got = list(AuditEvent.objects.order_by("id").values_list("action", "actor_label", "result"))
    assert got == expected
    # Who, tenant, what, object, result, source address and time on every tenant record.
    for event in AuditEvent.objects.exclude(action__in=["pool.create", "plan.create"]):
        assert event.tenant == tenant and event.source == IP and event.ts is not None, event.action
    ve_records = AuditEvent.objects.filter(object_type="ve")
    assert set(ve_records.values_list("object_id", flat=True)) == {str(ve.veid)}
    # Every job a person caused has its one record naming it.
    for job in Job.objects.filter(ve=ve):
        assert AuditEvent.objects.filter(detail__job=str(job.id)).count() == 1, job.kind


def test_sign_ins_and_failed_sign_ins_are_recorded_with_the_source_address(tenant):
    user = make_user("olga", password="correct horse battery")
    rf = RequestFactory()
    request = rf.post("/login", REMOTE_ADDR=IP)
    request.session = SessionStore()
    assert authenticate(request, username="olga", password="wrong") is None
    assert authenticate(request, username="nobody\nFAKE auth.login ok", password="x") is None
    who = authenticate(request, username="olga", password="correct horse battery")
    login(request, who)
    records = list(AuditEvent.objects.order_by("id"))
    # ``source`` is the channel, the client's address has its own field.
    assert [(r.action, r.result, r.source, r.client_address) for r in records] == [
        ("auth.login_failed", "failed", "web", IP), ("auth.login_failed", "failed", "web", IP),
        ("auth.login", "ok", "web", IP)]
    assert records[0].detail["username"] == "olga" and records[0].actor is None
    assert records[1].detail["username"] == "nobody\\x0aFAKE auth.login ok"
    assert records[2].actor == user
    assert "wrong" not in json.dumps([r.detail for r in records]), "a password reached the audit log"
    # A user reads their own sign-ins; another member does not.
    assert list(audit_for(user)) == [records[2]]


def test_token_use_is_recorded_without_the_secret(tenant, people):
    audit_token_use(token_label="hk_live_3f9a", actor=people.operator, tenant=tenant, source=IP,
                    detail={"path": "/api/v1/ves"})
    event = AuditEvent.objects.get()
    assert (event.action, event.detail["token"], event.source) == ("token.use", "hk_live_3f9a", IP)


def test_records_are_append_only(tenant):
    event = audit(action="ve.start", tenant=tenant)
    for attempt in (lambda: event.save(), lambda: event.delete(),
                    lambda: AuditEvent.objects.filter(pk=event.pk).update(result="denied"),
                    lambda: AuditEvent.objects.all().delete()):
        with pytest.raises(ValueError, match="append-only"):
            attempt()
    assert AuditEvent.objects.get().result == "ok"


def test_tenants_read_their_own_and_staff_read_all_with_filters(idle_node, tenant, other_tenant, people):
    mine = settle(svc.ve_create(tenant=tenant, template="busybox", actor=people.operator))
    theirs = settle(svc.ve_create(tenant=other_tenant, template="busybox", actor=people.outsider))
    svc.ve_start(ve=mine, actor=people.operator)
    svc.ve_start(ve=theirs, actor=people.outsider)
    assert set(audit_for(people.viewer).values_list("object_id", flat=True)) == {str(mine.veid)}
    assert set(audit_for(people.outsider).values_list("object_id", flat=True)) == {str(theirs.veid)}
    assert audit_for(people.staff).count() == 4
    with pytest.raises(NotFound):
        list(audit_for(people.viewer, tenant="globex"))
    assert list(audit_for(people.staff, tenant="globex").values_list("action", flat=True)) == [
        "ve.start", "ve.create"]
    assert audit_for(people.staff, action="ve.").count() == 4
    assert audit_for(people.staff, action="ve.start").count() == 2
    assert audit_for(people.staff, actor="oscar").count() == 2
    assert audit_for(people.staff, object_id=str(mine.veid), action="ve.create").count() == 1
    assert audit_for(people.staff, since=timezone.now() + timedelta(minutes=1)).count() == 0
    assert len(audit_for(people.staff, limit=3)) == 3
    from django.contrib.auth.models import AnonymousUser

    assert audit_for(AnonymousUser()).count() == 0


HOSTILE = "db\n2030-01-01T00:00:00.000000Z actor=root tenant=acme action=quota.set result=ok\r\x1b[2K\u2028x"


def test_control_characters_cannot_forge_records(tenant, people, capsys):
    quotas.quota_set(tenant=tenant, actor=None, memory=G)
    quotas.quota_request_create(tenant=tenant, actor=people.owner, amounts={"memory": "2G"},
                                reason="line one\nline two")  # multi-line reasons are allowed
    audit(action="x.test\nfake", actor=people.owner, tenant=tenant, source="1.2.3.4\nforged",
          detail={"reason\n": HOSTILE})
    stored = AuditEvent.objects.order_by("-id")[0]
    assert stored.action == "x.test\\x0afake" and stored.source == "1.2.3.4\\x0aforged"
    assert "\n" not in json.dumps(stored.detail) and "\\x0a2030" in stored.detail["reason\\x0a"]
    call_command("auditlog")
    out = capsys.readouterr().out
    assert len(out.splitlines()) == 3, out
    assert all(line.startswith("20") and " action=" in line for line in out.splitlines())
    assert "\x1b" not in out and "\r" not in out and "\u2028" not in out
    call_command("auditlog", "--json")
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["action"] for r in rows] == ["quota.set", "quota_request.create", "x.test\\x0afake"]


def test_the_auditlog_command_filters(idle_node, tenant, other_tenant, people, capsys):
    ve = settle(svc.ve_create(tenant=tenant, template="busybox", actor=people.operator))
    settle(svc.ve_create(tenant=other_tenant, template="busybox"))
    svc.ve_start(ve=ve, actor=people.operator, source=IP)
    call_command("auditlog", "--tenant", "acme", "--action", "ve.start")
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1
    assert f"actor=oscar tenant=acme action=ve.start object=ve:{ve.veid} result=ok source={IP}" in lines[0]
    call_command("auditlog", "--action", "ve.", "--since", "1h", "--limit", "2")
    assert len(capsys.readouterr().out.splitlines()) == 2
    call_command("auditlog", "--since", "2099-01-01")
    assert capsys.readouterr().out == ""
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="not a time"):
        call_command("auditlog", "--since", "yesterday\n")
    with pytest.raises(CommandError, match="tenant not found"):
        call_command("auditlog", "--tenant", "nope")
    with pytest.raises(CommandError, match="limit must be"):
        call_command("auditlog", "--limit", "0")


# --- the client address (R17: "source address" on every record) ---------------------------------

WEB_IP, API_IP, PROXY_IP = "203.0.113.9", "2001:db8::77", "192.0.2.1"


def test_a_web_action_and_an_api_call_record_the_client_address(idle_node, tenant, people):
    from django.test import Client
    from django.urls import reverse
    from rest_framework.test import APIClient

    from panel.services import api_tokens

    ve = settle(svc.ve_create(tenant=tenant, template="busybox", actor=people.operator, source=IP))
    web = Client(REMOTE_ADDR=WEB_IP)
    web.force_login(people.operator)
    assert web.post(reverse("panel:ve-start", kwargs={"ve_id": ve.pk})).status_code == 302
    start = AuditEvent.objects.get(action="ve.start")
    # ``source`` stays the channel; the address has its own field.
    assert (start.source, start.client_address, start.actor_label) == ("web", WEB_IP, "oscar")

    _, text = api_tokens.api_token_create(user=people.operator, tenant=tenant)
    api = APIClient(REMOTE_ADDR=API_IP)
    r = api.get(f"/api/v1/ves/{ve.pk}", HTTP_AUTHORIZATION=f"Bearer {text}")
    assert r.status_code == 200, r.content
    use = AuditEvent.objects.get(action="token.use")
    assert (use.source, use.client_address, use.tenant) == ("api", API_IP, tenant)
    # Records made outside a request (the service called from a shell) carry none.
    assert AuditEvent.objects.get(action="ve.create").client_address is None
    call_command("auditlog", "--action", "ve.start")


def test_forwarded_for_is_believed_only_from_a_trusted_proxy(tenant, people, settings):
    from django.test import Client

    forged = {"HTTP_X_FORWARDED_FOR": "198.51.100.66"}
    client = Client(REMOTE_ADDR=PROXY_IP)
    client.post("/accounts/login/", {"username": "nobody", "password": "x"}, **forged)
    settings.HAKO_TRUSTED_PROXIES = (PROXY_IP,)
    client.post("/accounts/login/", {"username": "nobody", "password": "x"},
                HTTP_X_FORWARDED_FOR=f"10.9.9.9, {WEB_IP}")  # the left-most hop is the client's to forge
    addresses = list(AuditEvent.objects.order_by("id").values_list("action", "source", "client_address"))
    assert addresses == [("auth.login_failed", "web", PROXY_IP), ("auth.login_failed", "web", WEB_IP)]


def test_the_auditlog_command_and_pages_show_the_client_address(tenant, people, capsys):
    from django.test import Client
    from django.urls import reverse

    from panel.services.audit import client_address

    with client_address(WEB_IP):
        quotas.quota_set(tenant=tenant, actor=people.staff, memory=G, source="web")
    call_command("auditlog")
    assert f"source=web address={WEB_IP}" in capsys.readouterr().out
    call_command("auditlog", "--json")
    assert json.loads(capsys.readouterr().out)["address"] == WEB_IP
    staff = Client()
    staff.force_login(people.staff)
    assert WEB_IP in staff.get(reverse("panel:staff-audit")).content.decode()
    owner = Client()
    owner.force_login(people.owner)
    assert WEB_IP in owner.get(reverse("panel:audit")).content.decode()


# --- customer API token use (hkp_ tokens) ------------------------------------------------------

def test_a_customer_api_call_records_its_token_use_and_a_refused_token_a_denied_one(idle_node, tenant, people):
    from rest_framework.test import APIClient

    from panel.models import PersonalToken
    from panel.services import api_tokens

    row, text = api_tokens.api_token_create(user=people.operator, tenant=tenant)
    api = APIClient(REMOTE_ADDR=API_IP)
    assert api.get("/api/v1/ves", HTTP_AUTHORIZATION=f"Bearer {text}").status_code == 200
    use = AuditEvent.objects.get(action="token.use")
    assert (use.result, use.actor, use.tenant, use.source) == ("ok", people.operator, tenant, "api")
    assert use.detail["token"] == f"hkp_{row.prefix}" and use.detail["path"] == "/api/v1/ves"
    secret = text[len(f"hkp_{row.prefix}_"):]
    assert len(secret) >= 20 and secret not in json.dumps(use.detail), "the secret reached the audit log"

    wrong = text[:-4] + ("aaaa" if not text.endswith("aaaa") else "bbbb")
    assert api.get("/api/v1/ves", HTTP_AUTHORIZATION=f"Bearer {wrong}").status_code == 401
    api_tokens.api_token_revoke(token=row)
    assert api.get("/api/v1/ves", HTTP_AUTHORIZATION=f"Bearer {text}").status_code == 401
    refused = list(AuditEvent.objects.filter(action="token.use").exclude(pk=use.pk).order_by("id"))
    assert [(e.result, e.actor, e.detail["token"], e.client_address) for e in refused] == [
        ("denied", None, f"hkp_{row.prefix}", API_IP)] * 2
    assert PersonalToken.objects.get().revoked_at is not None


# --- append-only in the database itself -----------------------------------------------------------

def test_raw_sql_cannot_update_or_delete_audit_records(tenant):
    from django.db import DatabaseError, connection, transaction

    assert connection.vendor == "postgresql", "the trigger under test is PostgreSQL's"
    event = audit(action="ve.start", tenant=tenant, source="web")
    for sql in ("UPDATE panel_auditevent SET result = 'denied' WHERE id = %s",
                "UPDATE panel_auditevent SET actor_id = NULL, tenant_id = NULL WHERE id = %s",
                "DELETE FROM panel_auditevent WHERE id = %s"):
        with pytest.raises(DatabaseError, match="append-only"):
            with transaction.atomic(), connection.cursor() as cur:
                cur.execute(sql, [event.pk])
    row = AuditEvent.objects.values("result", "tenant_id", "action").get()
    assert row == {"result": "ok", "tenant_id": tenant.pk, "action": "ve.start"}


def test_deleting_a_tenant_or_a_user_keeps_their_records_readable(tenant, people, capsys):
    quotas.quota_set(tenant=tenant, actor=people.staff, memory=G, source="web")
    quotas.quota_request_create(tenant=tenant, actor=people.owner, amounts={"memory": "2G"}, reason="more")
    tenant_pk = tenant.pk
    tenant.delete()  # a deleted customer: its history stays, unchanged
    people.owner.delete()
    records = list(audit_for(people.staff).order_by("id"))
    assert [(e.action, e.tenant_label, e.tenant_id, e.actor_label) for e in records] == [
        ("quota.set", "acme", tenant_pk, "sam"), ("quota_request.create", "acme", tenant_pk, "olivia")]
    assert records[0].tenant is None and records[1].actor is None  # gone, but named by the labels
    call_command("auditlog", "--action", "quota_request.create")
    assert "actor=olivia tenant=acme action=quota_request.create" in capsys.readouterr().out
    # Staff still find them by the deleted tenant's slug; a member of no tenant does not.
    assert [e.action for e in audit_for(people.staff, tenant="acme")] == ["quota_request.create", "quota.set"]
    call_command("auditlog", "--tenant", "acme")
    assert len(capsys.readouterr().out.splitlines()) == 2
    with pytest.raises(NotFound):
        audit_for(people.operator, tenant="acme")
    from django.test import Client
    from django.urls import reverse

    staff = Client()
    staff.force_login(people.staff)
    html = staff.get(reverse("panel:staff-audit") + "?tenant=acme").content.decode()
    assert "quota_request.create" in html and "No tenant has this slug" not in html


# --- who reads what --------------------------------------------------------------------------

def test_a_former_member_no_longer_reads_the_tenants_records(idle_node, tenant, people):
    from panel.models import Membership

    ve = settle(svc.ve_create(tenant=tenant, template="busybox", actor=people.operator))
    svc.ve_start(ve=ve, actor=people.operator)
    sign_in = audit(action="auth.login", actor=people.operator, source="web")
    assert audit_for(people.operator).count() == 3
    Membership.objects.filter(user=people.operator, tenant=tenant).delete()
    # Not even the records of what they did there; their own sign-ins stay theirs.
    assert list(audit_for(people.operator)) == [sign_in]
    with pytest.raises(NotFound):
        list(audit_for(people.operator, tenant=tenant))
    assert audit_for(people.staff).count() == 4  # staff read all
    assert audit_for(people.viewer).count() == 2  # a current member reads the tenant's, not others' sign-ins


# --- a signed-in web session through the real views -------------------------------------------

def test_a_web_session_leaves_exactly_one_record_per_privileged_action(idle_node, tenant, people):
    """Sign-ins (and a failed one), VE create/start/change plan, token use on the API, a
    quota request and its denial, a tenant suspension and its lifting and a viewer's
    forged POST, all through Django's test client against the real views."""
    from django.test import Client
    from django.urls import reverse
    from rest_framework.test import APIClient

    from panel.models import VE, TenantQuota
    from panel.services import api_tokens

    plan_create(name="basic", memory="256M", disk="2G", actor=people.staff)
    plan_create(name="bigger", memory="512M", disk="4G", actor=people.staff)
    quotas.quota_set(tenant=tenant, actor=people.staff, max_ves=2)
    _, text = api_tokens.api_token_create(user=people.operator, tenant=tenant)
    for user in (people.operator, people.staff, people.viewer):
        user.set_password("correct horse battery")
        user.save(update_fields=["password"])
    setup = AuditEvent.objects.order_by("-id").values_list("id", flat=True).first()

    web = Client(REMOTE_ADDR=WEB_IP)
    login = "/accounts/login/"
    assert web.post(login, {"username": "oscar", "password": "wrong"}).status_code == 200
    assert web.post(login, {"username": "oscar", "password": "correct horse battery"}).status_code == 302
    r = web.post(reverse("panel:ve-create"), {"template": "busybox", "hostname": "web1", "plan": "basic"})
    assert r.status_code == 302, r.content.decode()[-2000:]
    ve = VE.objects.get(hostname="web1")
    settle(ve.jobs.get(kind="create"))
    assert web.post(reverse("panel:ve-start", kwargs={"ve_id": ve.pk})).status_code == 302
    settle(ve.jobs.get(kind="start"), state="running")
    assert web.post(reverse("panel:ve-change-plan", kwargs={"ve_id": ve.pk}), {"plan": "bigger"}).status_code == 302
    settle(ve.jobs.get(kind="set"), state="running")
    api = APIClient(REMOTE_ADDR=API_IP)
    assert api.get(f"/api/v1/ves/{ve.pk}", HTTP_AUTHORIZATION=f"Bearer {text}").status_code == 200
    r = web.post(reverse("panel:quota"), {"max_ves": "5", "reason": "launch week"})
    assert r.status_code == 302
    req = quotas.QuotaRequest.objects.get()

    staff = Client(REMOTE_ADDR=WEB_IP)
    assert staff.post(login, {"username": "sam", "password": "correct horse battery"}).status_code == 302
    r = staff.post(reverse("panel:staff-quota-deny", kwargs={"request_id": req.pk}),
                   {"version": req.version, "reason": "not this month"})
    assert r.status_code == 302
    r = staff.post(reverse("panel:staff-tenant-suspend", kwargs={"tenant_id": tenant.pk}), {"reason": "unpaid"})
    assert r.status_code == 302
    settle(ve.jobs.get(kind="stop"))
    r = staff.post(reverse("panel:staff-tenant-unsuspend", kwargs={"tenant_id": tenant.pk}), {"reason": "paid"})
    assert r.status_code == 302
    viewer = Client(REMOTE_ADDR=WEB_IP)
    assert viewer.post(login, {"username": "vera", "password": "correct horse battery"}).status_code == 302
    assert viewer.post(reverse("panel:ve-start", kwargs={"ve_id": ve.pk})).status_code == 403

    got = list(AuditEvent.objects.filter(id__gt=setup).order_by("id").values_list("action", "actor_label", "result"))
    assert got == [  # (action, actor, result), in order
        ("auth.login_failed", "", "failed"),
        ("auth.login", "oscar", "ok"),
        ("ve.create", "oscar", "ok"),
        ("ve.start", "oscar", "ok"),
        ("ve.change_plan", "oscar", "ok"),
        ("token.use", "oscar", "ok"),
        ("quota_request.create", "oscar", "ok"),
        ("auth.login", "sam", "ok"),
        ("quota_request.deny", "sam", "ok"),
        # By design, suspending a tenant is two privileged acts: the suspension, and the stop
        # of each VE that ran (an ordinary ve.stop job whose record names its job).
        ("tenant.suspend", "sam", "ok"),
        ("ve.stop", "sam", "ok"),
        ("tenant.unsuspend", "sam", "ok"),
        ("auth.login", "vera", "ok"),
        ("access.denied", "vera", "denied"),
    ]
    for event in AuditEvent.objects.filter(id__gt=setup):
        assert event.ts is not None and event.client_address in (WEB_IP, API_IP), event.action
        assert event.source == ("api" if event.action == "token.use" else "web"), event.action
        if not event.action.startswith("auth."):
            assert event.tenant == tenant and event.tenant_label == "acme", event.action
    assert AuditEvent.objects.get(action="token.use").client_address == API_IP
    assert TenantQuota.objects.get(tenant=tenant).max_ves == 2
    # Every job a person caused has its one record naming it.
    for job in ve.jobs.all():
        assert AuditEvent.objects.filter(detail__job=str(job.id)).count() == 1, job.kind
