"""Suspension of VEs and tenants: it stops them, start is refused with the reason, and each
source (admin, billing, abuse) is lifted on its own.

Database-level tests use a node no agent consumes (``settle`` plays the node); the last
test drives a real busybox VE through the real pipeline.
"""
import pytest

from panel.models import VE, AuditEvent, Job, Suspension
from panel.services import suspensions as susp
from panel.services import ves as svc
from panel.services.errors import Conflict, Forbidden, InvalidInput
from panel.services.jobs import job_wait
from tests.conftest import run
from tests.tenancy import idle_node, people, settle  # noqa: F401

M = 1 << 20


@pytest.fixture
def running_ve(idle_node, tenant):
    return settle(svc.ve_create(tenant=tenant, template="busybox"), state="running")


def stops_of(ve):
    return Job.objects.filter(ve=ve, kind="stop")


@pytest.mark.django_db(transaction=True)
def test_suspending_a_running_ve_stops_it_and_start_says_why(running_ve, people):
    ve = running_ve
    s = susp.ve_suspend(ve=ve, by="billing", reason="invoice 42 unpaid", actor=people.staff)
    assert s.source == "billing" and s.created_by == people.staff and s.active
    assert [j.kind for j in s.stop_jobs] == ["stop"] and stops_of(ve).count() == 1
    ve = settle(s.stop_jobs[0], state="stopped")
    with pytest.raises(Conflict, match=rf"VE {ve.veid} is suspended \(billing: invoice 42 unpaid\)") as e:
        svc.ve_start(ve=ve, actor=people.owner)
    assert e.value.code == "suspended"
    with pytest.raises(Conflict, match="suspended"):
        svc.ve_restart(ve=ve)  # the local admin too: lift it first
    assert susp.is_suspended(ve)
    assert susp.suspension_status(ve) == [{"source": "billing", "scope": "ve", "reason": "invoice 42 unpaid",
                                           "since": s.created_at}]
    assert Job.objects.filter(ve=ve, kind__in=["start", "restart"]).count() == 0


@pytest.mark.django_db(transaction=True)
def test_lifting_one_source_does_not_lift_another(running_ve, people):
    ve = running_ve
    susp.ve_suspend(ve=ve, by="admin", reason="maintenance", actor=people.staff)
    susp.ve_suspend(ve=ve, by="abuse", reason="spam reports", actor=people.staff2)
    settle(stops_of(ve).get())
    lifted = susp.ve_unsuspend(ve=ve, by="admin", actor=people.staff)
    assert lifted.source == "admin" and lifted.lifted_by == people.staff
    with pytest.raises(Conflict, match=r"suspended \(abuse: spam reports\)"):
        svc.ve_start(ve=ve)
    assert susp.ve_unsuspend(ve=ve, by="billing", actor=people.staff) is None  # nothing by billing: a no-op
    assert susp.is_suspended(ve)
    susp.ve_unsuspend(ve=ve, by="abuse", actor=people.staff2, reason="cleaned up")
    assert not susp.is_suspended(ve)
    svc.ve_start(ve=ve, actor=people.operator)
    records = list(AuditEvent.objects.filter(action="ve.unsuspend").order_by("id").values_list("result", "detail"))
    assert [r for r, _ in records] == ["ok", "noop", "ok"]
    assert records[0][1]["still_suspended_by"] == ["abuse"] and records[2][1]["still_suspended_by"] == []


@pytest.mark.django_db(transaction=True)
def test_restore_power_starts_only_what_the_lifted_suspension_stopped(running_ve, people, tenant):
    ve = running_ve
    s = susp.ve_suspend(ve=ve, by="billing", reason="unpaid", actor=people.staff)
    assert s.stopped_running and len(s.stop_jobs) == 1
    settle(s.stop_jobs[0], state="stopped")
    susp.ve_suspend(ve=ve, by="abuse", reason="spam", actor=people.staff)  # stops nothing: already stopped
    assert not Suspension.objects.get(source="abuse").stopped_running
    lifted = susp.ve_unsuspend(ve=ve, by="billing", actor=people.staff, restore_power=True)
    assert lifted.start_job is None  # abuse still holds it
    susp.ve_suspend(ve=ve, by="billing", reason="unpaid again", actor=people.staff)
    susp.ve_unsuspend(ve=ve, by="abuse", actor=people.staff)
    again = susp.ve_unsuspend(ve=ve, by="billing", actor=people.staff, restore_power=True)
    assert again.start_job is None  # this billing suspension met a stopped VE: it stays stopped
    s = susp.ve_suspend(ve=ve, by="billing", reason="third", actor=people.staff)
    assert s.stop_jobs == [] and not s.stopped_running

    other = settle(svc.ve_create(tenant=tenant, template="busybox"), state="running")
    s = susp.ve_suspend(ve=other, by="billing", reason="unpaid", actor=people.staff)
    settle(s.stop_jobs[0], state="stopped")
    plain = susp.ve_unsuspend(ve=other, by="billing", actor=people.staff)  # staff: the owner starts it
    assert plain.start_job is None and not Job.objects.filter(ve=other, kind="start").exists()
    other = settle(svc.ve_start(ve=other, actor=people.owner), state="running")
    s = susp.ve_suspend(ve=other, by="billing", reason="unpaid", actor=people.staff)
    settle(s.stop_jobs[0], state="stopped")
    lifted = susp.ve_unsuspend(ve=other, by="billing", actor=people.staff, restore_power=True)
    assert lifted.start_job.kind == "start" and Job.objects.filter(ve=other, kind="start").count() == 2


@pytest.mark.django_db(transaction=True)
def test_a_tenant_suspension_stops_every_ve_and_is_lifted_on_its_own(idle_node, tenant, people):
    a = settle(svc.ve_create(tenant=tenant, template="busybox"), state="running")
    b = settle(svc.ve_create(tenant=tenant, template="busybox"), state="stopped")
    s = susp.tenant_suspend(tenant=tenant, by="billing", reason="account overdue", actor=people.staff)
    assert [j.ve_id for j in s.stop_jobs] == [a.pk]  # the stopped one needs no job
    settle(s.stop_jobs[0])
    for ve in (a, b):
        with pytest.raises(Conflict, match=r"billing \(whole account\): account overdue"):
            svc.ve_start(ve=ve)
    with pytest.raises(Conflict, match="tenant acme is suspended"):
        svc.ve_create(tenant=tenant, template="busybox", actor=people.owner)
    susp.ve_suspend(ve=a, by="billing", reason="this VE too", actor=people.staff)
    susp.tenant_unsuspend(tenant=tenant, by="billing", actor=people.staff)
    svc.ve_start(ve=b)  # free now
    with pytest.raises(Conflict, match="this VE too"):
        svc.ve_start(ve=a)  # its own suspension stays
    svc.ve_create(tenant=tenant, template="busybox", actor=people.owner)


@pytest.mark.django_db(transaction=True)
def test_suspending_twice_is_one_suspension(running_ve, people):
    first = susp.ve_suspend(ve=running_ve, by="admin", reason="x", actor=people.staff)
    again = susp.ve_suspend(ve=running_ve, by="admin", reason="y", actor=people.staff)
    assert again.pk == first.pk and again.reason == "x"
    assert Suspension.objects.count() == 1 and stops_of(running_ve).count() == 1
    assert list(AuditEvent.objects.filter(action="ve.suspend").order_by("id").values_list("result", flat=True)) == [
        "ok", "noop"]


@pytest.mark.django_db(transaction=True)
def test_a_busy_ve_is_stopped_by_the_enforcer_once_its_job_ends(running_ve, people):
    busy = svc.ve_set(ve=running_ve, memory=512 * M)  # a job in flight: stop must wait
    s = susp.ve_suspend(ve=running_ve, by="abuse", reason="ddos source", actor=people.staff)
    assert s.stop_jobs == [] and susp.enforce_suspensions() == 0
    settle(busy, state="running")
    assert susp.enforce_suspensions() == 1
    assert stops_of(running_ve).count() == 1
    assert susp.enforce_suspensions() == 0  # the stop is in flight
    stop = AuditEvent.objects.get(action="ve.stop")
    assert stop.actor is None and stop.source == "system:suspension"


@pytest.mark.django_db(transaction=True)
def test_only_staff_suspend_and_hostile_values_are_refused(running_ve, people):
    for user in (people.owner, people.operator, people.outsider):
        with pytest.raises(Forbidden, match="staff"):
            susp.ve_suspend(ve=running_ve, by="admin", reason="x", actor=user)
        with pytest.raises(Forbidden):
            susp.tenant_unsuspend(tenant=running_ve.tenant, by="admin", actor=user)
    for by, reason in [("root", "x"), ("", "x"), (None, "x"), ("admin", ""), ("admin", "a\nb"),
                       ("admin", "x" * 501), ("admin", 5)]:
        with pytest.raises(InvalidInput):
            susp.ve_suspend(ve=running_ve, by=by, reason=reason, actor=people.staff)
    assert not Suspension.objects.exists() and not stops_of(running_ve).exists()
    assert not AuditEvent.objects.filter(action__endswith="suspend").exists()


@pytest.mark.integration
def test_suspension_stops_a_running_busybox_ve_and_start_is_refused(stack, node, tenant):
    ve = VE.objects.get(pk=run(svc.ve_create(tenant=tenant, template="busybox")).ve_id)
    run(svc.ve_start(ve=ve))
    ve.refresh_from_db()
    assert ve.state == "running"
    s = susp.ve_suspend(ve=ve, by="billing", reason="invoice 7 unpaid")
    stop = run(s.stop_jobs[0])
    ve.refresh_from_db()
    assert stop.kind == "stop" and ve.state == "stopped"
    with pytest.raises(Conflict, match="suspended"):
        svc.ve_start(ve=ve)
    susp.ve_unsuspend(ve=ve, by="billing")
    assert job_wait(svc.ve_start(ve=ve), timeout=60).state == "succeeded"
    ve.refresh_from_db()
    assert ve.state == "running"
    # billing's unsuspend (restore_power) brings back what its suspension stopped
    s = susp.ve_suspend(ve=ve, by="billing", reason="invoice 8 unpaid")
    run(s.stop_jobs[0])
    lifted = susp.ve_unsuspend(ve=ve, by="billing", restore_power=True)
    run(lifted.start_job)
    ve.refresh_from_db()
    assert ve.state == "running"


@pytest.mark.django_db(transaction=True)
def test_the_suspension_and_plan_commands(running_ve, capsys):
    from django.core.management import call_command

    call_command("plan", "add", "tiny", "--ram", "256M", "--diskspace", "1G", "--bandwidth", "10M")
    call_command("plan", "set", "tiny", "--disable")
    call_command("plan", "list")
    assert "tiny" in capsys.readouterr().out
    call_command("suspension", "add", str(running_ve.veid), "--by", "abuse", "--reason", "spam")
    call_command("suspension", "add", "--tenant", "acme", "--by", "billing", "--reason", "overdue")
    call_command("suspension", "list")
    out = capsys.readouterr().out
    assert f"VE {running_ve.veid} suspended by abuse; stopping 1 VE(s)" in out and "tenant acme" in out
    call_command("suspension", "lift", str(running_ve.veid), "--by", "abuse")
    assert susp.tenant_suspensions(running_ve.tenant) and not Suspension.objects.filter(
        ve=running_ve, lifted_at__isnull=True).exists()
    assert AuditEvent.objects.get(action="ve.suspend").source.startswith("cli")
