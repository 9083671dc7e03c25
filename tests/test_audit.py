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
    assert [(r.action, r.result, r.source) for r in records] == [
        ("auth.login_failed", "failed", IP), ("auth.login_failed", "failed", IP), ("auth.login", "ok", IP)]
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
