"""Hostile input is refused with a clear message and changes nothing; a busy VE refuses a
second mutating job. These run against PostgreSQL with a node row whose queue no agent
consumes: no container is needed to prove that nothing was written."""
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.db import transaction
from django.core.management.base import CommandError
from django.utils import timezone

from panel.models import VE, AuditEvent, Job, Node, OSTemplate
from panel.services import ves as svc
from panel.services.errors import Conflict, InvalidInput, ServiceError

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def idle_node(db):
    OSTemplate.objects.get_or_create(name="busybox")
    return Node.objects.create(name="hakotest-idle", queue="node.hakotest-idle", state="online",
                               last_heartbeat=timezone.now(), info={"templates": ["busybox"]})


def nothing_written():
    assert VE.objects.count() == 0, "a VE row was created"
    assert Job.objects.count() == 0, "a job was created"
    assert AuditEvent.objects.count() == 0, "an audit record was written for a refused request"


BAD_HOSTNAMES = ["web;reboot", "web 1", "web\n1", "../etc", "a/b", "-lead", "trail-", "", "x" * 254,
                 "a." * 130, "ünï", "$(id)", "`id`", "a..b", "web\x00", "web\r\nX-Injected: 1"]


@pytest.mark.parametrize("hostname", BAD_HOSTNAMES)
def test_it_refuses_hostile_hostnames(idle_node, tenant, hostname):
    with pytest.raises(InvalidInput) as e:
        svc.ve_create(tenant=tenant, template="busybox", hostname=hostname)
    assert e.value.field == "hostname" and "RFC 1123" in e.value.message
    nothing_written()


@pytest.mark.parametrize("field,value,fragment", [
    ("memory", 10**15, "memory must be between"),
    ("memory", -1, "memory must be between"),
    ("memory", 0, "memory must be between"),
    ("memory", "12Q", "not a whole number"),
    ("disk", 10**20, "disk must be between"),
    ("disk", 1, "disk must be between"),
    ("swap", "lots", "not a whole number"),
    ("cpuunits", 0, "cpuunits must be between"),
    ("cpuunits", 10**9, "cpuunits must be between"),
    ("cpulimit", -5, "cpulimit must be between"),
    ("numproc", 1, "numproc must be between"),
    ("numproc", "1e9", "not a whole number"),
    ("numproc", True, "whole number"),
    ("veid", 5, "veid must be"),
    ("veid", "101; rm -rf /", "not a whole number"),
    ("veid", 10**12, "veid must be between"),
])
def test_it_refuses_absurd_sizes_and_ids(idle_node, tenant, field, value, fragment):
    with pytest.raises(InvalidInput) as e:
        svc.ve_create(tenant=tenant, template="busybox", **{field: value})
    assert fragment in e.value.message
    nothing_written()


@pytest.mark.parametrize("template", ["nope", "../busybox", "busybox;id", "", "BUSYBOX"])
def test_it_refuses_unknown_templates(idle_node, tenant, template):
    with pytest.raises(InvalidInput, match="does not exist"):
        svc.ve_create(tenant=tenant, template=template)
    nothing_written()


def test_it_refuses_a_veid_that_is_taken(idle_node, tenant):
    svc.ve_create(tenant=tenant, template="busybox", veid=150)
    with pytest.raises(Conflict, match="VE 150 already exists"):
        svc.ve_create(tenant=tenant, template="busybox", veid=150)
    assert VE.objects.count() == 1 and Job.objects.count() == 1


def test_it_refuses_a_second_mutating_job_on_a_busy_ve(idle_node, tenant):
    job = svc.ve_create(tenant=tenant, template="busybox")
    ve = job.ve
    with pytest.raises(Conflict) as e:
        svc.ve_start(ve=ve)
    assert e.value.code == "ve-busy"
    Job.objects.filter(pk=job.pk).update(state="succeeded")
    VE.objects.filter(pk=ve.pk).update(state="stopped")
    start = svc.ve_start(ve=ve)
    for other in (lambda: svc.ve_stop(ve=ve), lambda: svc.ve_destroy(ve=ve), lambda: svc.ve_set(ve=ve, memory=1 << 30)):
        with pytest.raises(Conflict, match=f"VE {ve.veid} is busy: start job {start.id} is pending"):
            other()
    # reads are not mutations: status still goes through
    svc.ve_status(ve=ve)
    assert Job.objects.filter(ve=ve, mutating=True, state__in=["pending", "running"]).count() == 1


def test_it_refuses_hostile_set_and_exec_values(idle_node, tenant):
    job = svc.ve_create(tenant=tenant, template="busybox", disk=2 << 30)
    Job.objects.filter(pk=job.pk).update(state="succeeded")
    ve = VE.objects.get(pk=job.ve_id)
    jobs_before, audit_before = Job.objects.count(), AuditEvent.objects.count()
    for kwargs, fragment in [
        ({"disk": 1 << 30}, "shrinking the disk"),
        ({"memory": -1}, "memory must be between"),
        ({"hostname": "a;b"}, "RFC 1123"),
        ({"uid_base": 0}, "unknown parameters"),
        ({"onboot": "yes"}, "onboot"),
        ({}, "nothing to change"),
    ]:
        with pytest.raises(InvalidInput, match=fragment):
            svc.ve_set(ve=ve, **kwargs)
    for argv in ([], "ps", ["ps", "\x00"], [""], ["x"] * 300, [1, 2]):
        with pytest.raises(InvalidInput):
            svc.ve_exec(ve=ve, argv=argv)
    with pytest.raises(InvalidInput):
        svc.ve_exec(ve=ve, argv=["ps"], timeout=0)
    assert Job.objects.count() == jobs_before and AuditEvent.objects.count() == audit_before


def test_vzctl_prints_a_clear_error_and_creates_nothing(idle_node, tenant):
    with pytest.raises(CommandError, match="RFC 1123"):
        call_command("vzctl", "create", "101", "--ostemplate", "busybox", "--hostname", "a;reboot",
                     "--tenant", tenant.slug)
    with pytest.raises(CommandError, match="memory must be between"):
        call_command("vzctl", "create", "101", "--ostemplate", "busybox", "--ram", "99999T", "--tenant", tenant.slug)
    with pytest.raises(CommandError, match="does not exist"):
        call_command("vzctl", "create", "101", "--ostemplate", "../../etc/passwd", "--tenant", tenant.slug)
    with pytest.raises(CommandError, match="VE 999 does not exist"):
        call_command("vzctl", "start", "999")
    with pytest.raises(CommandError, match="VEID must be a number"):
        call_command("vzctl", "start", "101;id")
    nothing_written()


def test_errors_are_service_errors_with_codes():
    assert issubclass(InvalidInput, ServiceError) and InvalidInput.status == 400
    assert Conflict.status == 409


def test_a_pending_job_can_be_canceled_once_and_frees_the_ve(idle_node, tenant):
    from panel.services.jobs import job_cancel

    job = svc.ve_create(tenant=tenant, template="busybox")
    Job.objects.filter(pk=job.pk).update(state="succeeded")
    start = svc.ve_start(ve=job.ve)
    assert job_cancel(job=start) is True
    assert job_cancel(job=start) is False  # one effect
    start.refresh_from_db()
    assert start.state == "canceled" and "nothing was changed" in start.explanation
    svc.ve_stop(ve=job.ve)  # the VE is no longer busy
    assert AuditEvent.objects.filter(action="job.cancel").count() == 1


def test_id_ranges_fill_the_lowest_gap_and_an_exhausted_fleet_refuses_cleanly(idle_node, tenant, settings):
    """A new VE takes the lowest free id range (a destroyed VE's range is free again);
    when none is left, create says so and writes nothing."""
    settings.HAKO_ID_RANGES = 4
    first, size = settings.HAKO_ID_BASE, 65536
    tmpl = OSTemplate.objects.get(name="busybox")

    def ve(veid, k, state="stopped"):
        return VE.objects.create(veid=veid, tenant=tenant, node=idle_node, template=tmpl, hostname=f"v{veid}",
                                 uid_base=first + k * size, state=state, memory=256 << 20, swap=0,
                                 disk=1 << 30, cpuunits=1000, cpulimit=0, numproc=512)

    ve(9001, 0), ve(9002, 1), ve(9003, 3), ve(9004, 2, state="destroyed")
    job = svc.ve_create(tenant=tenant, template="busybox")
    assert job.ve.uid_base == first + 2 * size  # the gap, where a destroyed VE was
    with pytest.raises(ServiceError) as e:
        svc.ve_create(tenant=tenant, template="busybox")
    assert "No free id range" in e.value.message
    assert VE.objects.exclude(state="destroyed").count() == 4 and Job.objects.count() == 1


def test_a_heartbeat_never_writes_back_a_state_that_changed_while_it_was_applied(idle_node, tenant, monkeypatch):
    """The heartbeat reads a node's VE rows unlocked, then writes traffic totals (and state)
    back under the rows' locks. A job result committed in between (here: the start of a
    booting VE, whose veth counters move) must survive: the row's newer state wins. The
    lost update showed as a debian-12 VE flipping back to "starting" right after its start
    job succeeded."""
    from panel.services import jobs

    tmpl = OSTemplate.objects.get(name="busybox")
    ve = VE.objects.create(veid=9101, tenant=tenant, node=idle_node, template=tmpl, hostname="boot1",
                           uid_base=settings_id_base(), state="starting", memory=256 << 20, swap=0,
                           disk=1 << 30, cpuunits=1000, cpulimit=0, numproc=512,
                           state_changed_at=timezone.now() - timedelta(seconds=30))
    real = jobs._item_traffic

    def start_job_lands_meanwhile(total, item):
        VE.objects.filter(pk=ve.pk).update(state="running", nproc=7, state_changed_at=timezone.now())
        return real(total, item)

    monkeypatch.setattr(jobs, "_item_traffic", start_job_lands_meanwhile)
    item = {"veid": 9101, "state": "stopped", "nproc": 0,
            "traffic": {"link": "b:5", "in_bytes": 500, "out_bytes": 90, "in_packets": 5, "out_packets": 1}}
    with transaction.atomic():  # as apply_heartbeat calls it
        jobs._apply_inventory(idle_node, [item], timezone.now(), sampled_at=timezone.now().timestamp() - 10)
    ve.refresh_from_db()
    assert (ve.state, ve.nproc) == ("running", 7), "the heartbeat undid the start job's result"
    assert ve.traffic, "the traffic was still counted"


def settings_id_base() -> int:
    from django.conf import settings

    return settings.HAKO_ID_BASE


def test_a_running_event_applied_after_the_result_still_records_the_start(idle_node, tenant):
    """The panel worker's processes may apply a job's "succeeded" before its "running":
    the job keeps its outcome and still gets its start time and step line."""
    from containers import messages as m
    from panel.services import jobs

    job = svc.ve_create(tenant=tenant, template="busybox")
    key = jobs.node_key(idle_node)

    def event(seq, kind, ts, data=None):
        return m.sign(m.event_body(node=idle_node.name, instance="agent-1", job_id=str(job.id), seq=seq,
                                   type=kind, message=f"{kind} step", data=data or {}, lines=[], now=ts), key)

    now = timezone.now().timestamp()
    assert jobs.apply_event(event(2, "succeeded", now, {"state": "stopped"})) == "applied succeeded"
    assert jobs.apply_event(event(1, "running", now - 0.05)).startswith("applied running")
    job.refresh_from_db()
    assert job.state == "succeeded" and job.started_at is not None and job.started_at < job.finished_at
    assert list(job.logs.order_by("seq").values_list("seq", "message")) == [(1, "running step"), (2, "Task OK")]
    assert jobs.apply_event(event(1, "running", now)) == "ignored: job already finished"
