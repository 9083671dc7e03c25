"""A busybox VE from request to running LXC container and back, through the whole
pipeline: service -> job -> Redis -> node agent -> LXC -> signed events -> panel worker."""
import subprocess
from pathlib import Path

import pytest
from django.conf import settings

from panel.models import VE, AuditEvent, Job
from panel.services import ves as svc
from tests.conftest import run
from tests.harness import wait_for

pytestmark = pytest.mark.integration


def host_uid_of_init(stack, veid: int) -> int:
    pid = subprocess.run(["lxc-info", "-P", str(stack.node_root / "lxc"), "-n", str(veid), "-p", "-H"],
                         capture_output=True, text=True, check=True).stdout.strip()
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1])


def test_busybox_lifecycle_is_a_sequence_of_logged_jobs(stack, node, tenant):
    create = run(svc.ve_create(tenant=tenant, template="busybox", hostname="web1", memory=256 << 20))
    ve = VE.objects.get(pk=create.ve_id)
    assert ve.state == "stopped" and ve.veid == settings.HAKO_FIRST_VEID

    start = run(svc.ve_start(ve=ve))
    ve.refresh_from_db()
    assert ve.state == "running" and ve.nproc >= 1

    ps = run(svc.ve_exec(ve=ve, argv=["ps"]))
    assert ps.result["exit_code"] == 0
    assert "init" in ps.result["output"] and "syslogd" in ps.result["output"]

    run(svc.ve_set(ve=ve, memory=512 << 20, cpulimit=50, swap=128 << 20, cpuunits=2000, numproc=300))
    cgroup = Path("/sys/fs/cgroup")
    cg = cgroup / f"memory/hako.{node.name}/{ve.veid}/memory.limit_in_bytes"
    assert int(cg.read_text()) == 512 << 20, "the running VE's cgroup shows the new memory limit"
    memsw = cg.with_name("memory.memsw.limit_in_bytes")
    if memsw.exists():  # only where the kernel accounts swap (swapaccount)
        assert int(memsw.read_text()) == (512 + 128) << 20
    cpu = cgroup / f"cpu/hako.{node.name}/{ve.veid}"
    assert int((cpu / "cpu.cfs_quota_us").read_text()) == 50_000
    assert int((cpu / "cpu.shares").read_text()) == 2048, "cpuunits 2000 is twice the default weight"
    assert int((cgroup / f"pids/hako.{node.name}/{ve.veid}/pids.max").read_text()) == 300
    ve.refresh_from_db()
    assert (ve.memory, ve.cpulimit, ve.swap, ve.cpuunits, ve.numproc) == (512 << 20, 50, 128 << 20, 2000, 300)

    stop = run(svc.ve_stop(ve=ve))
    ve.refresh_from_db()
    assert ve.state == "stopped"
    destroy = run(svc.ve_destroy(ve=ve))
    ve.refresh_from_db()
    assert ve.state == "destroyed"
    assert not (stack.node_root / "images" / f"{ve.veid}.img").exists()

    jobs = list(Job.objects.filter(ve=ve).order_by("created_at"))
    assert [j.kind for j in jobs] == ["create", "start", "exec", "set", "stop", "destroy"]
    assert all(j.state == "succeeded" and j.started_at and j.finished_at for j in jobs)
    start_log = [line.message for line in start.logs.order_by("seq")]
    assert start_log[0].startswith(f"start VE {ve.veid}")
    assert "Starting VE ..." in start_log and "Setting CPU units: 1000" in start_log
    assert start_log.index("Starting VE ...") < start_log.index("VE start in progress...")
    assert [line.seq for line in start.logs.order_by("seq")] == sorted(line.seq for line in start.logs.all())
    assert "VE was stopped" in [line.message for line in stop.logs.all()]
    assert f"VE {ve.veid} destroyed" in [line.message for line in destroy.logs.all()]
    actions = list(AuditEvent.objects.filter(object_id=str(ve.veid)).order_by("id").values_list("action", flat=True))
    assert actions == ["ve.create", "ve.start", "ve.exec", "ve.set", "ve.stop", "ve.destroy"]


def test_root_in_a_ve_is_an_unprivileged_host_uid_and_ranges_are_disjoint(stack, node, tenant):
    a = VE.objects.get(pk=run(svc.ve_create(tenant=tenant, template="busybox")).ve_id)
    b = VE.objects.get(pk=run(svc.ve_create(tenant=tenant, template="busybox")).ve_id)
    run(svc.ve_start(ve=a))
    run(svc.ve_start(ve=b))
    uid_a, uid_b = host_uid_of_init(stack, a.veid), host_uid_of_init(stack, b.veid)
    assert uid_a == a.uid_base and uid_b == b.uid_base
    assert uid_a != 0 and uid_b != 0
    assert abs(a.uid_base - b.uid_base) >= 65536, "id ranges overlap"
    # Inside, the same process is root.
    out = run(svc.ve_exec(ve=a, argv=["id", "-u"])).result["output"].strip()
    assert out == "0"


def test_start_is_idempotent_and_the_heartbeat_reports_nproc(stack, node, tenant):
    ve = VE.objects.get(pk=run(svc.ve_create(tenant=tenant, template="busybox")).ve_id)
    run(svc.ve_start(ve=ve))
    again = run(svc.ve_start(ve=ve))
    assert any("already running" in line.message for line in again.logs.all())
    # Power off from inside: the node is the truth, the panel shows it stopped.
    VE.objects.filter(pk=ve.pk).update(nproc=None)
    wait_for(lambda: VE.objects.get(pk=ve.pk).nproc, 10, what="heartbeat nproc")
    subprocess.run(["lxc-stop", "-P", str(stack.node_root / "lxc"), "-n", str(ve.veid), "-k"], check=True)
    wait_for(lambda: VE.objects.get(pk=ve.pk).state == "stopped", 10, what="heartbeat to show the VE stopped")


def test_exec_output_is_bounded_and_exit_codes_come_back(stack, node, tenant):
    ve = VE.objects.get(pk=run(svc.ve_create(tenant=tenant, template="busybox")).ve_id)
    run(svc.ve_start(ve=ve))
    big = run(svc.ve_exec(ve=ve, argv=["sh", "-c", "yes | head -c 200000"]))
    assert big.result["truncated"] is True and len(big.result["output"]) == 64 * 1024
    failing = run(svc.ve_exec(ve=ve, argv=["sh", "-c", "exit 7"]))
    assert failing.result["exit_code"] == 7
    slow = run(svc.ve_exec(ve=ve, argv=["sleep", "30"], timeout=1))
    assert slow.result["timed_out"] is True
    # shell metacharacters are arguments, not shell syntax
    meta = run(svc.ve_exec(ve=ve, argv=["echo", "a;b", "$(id)", "`x`"]))
    assert meta.result["output"].strip() == "a;b $(id) `x`"


def test_a_stopped_ve_shrinks_only_if_its_data_fits(stack, node, tenant):
    ve = VE.objects.get(pk=run(svc.ve_create(tenant=tenant, template="busybox", disk=256 << 20)).ve_id)
    run(svc.ve_start(ve=ve))
    run(svc.ve_exec(ve=ve, argv=["sh", "-c", "head -c 90000000 /dev/urandom > /data && sync"]))
    run(svc.ve_stop(ve=ve))
    run(svc.ve_set(ve=ve, disk=160 << 20))
    from panel.services.jobs import job_wait

    too_small = job_wait(svc.ve_set(ve=VE.objects.get(pk=ve.pk), disk=64 << 20), timeout=120)
    assert too_small.state == "failed" and "does not fit" in too_small.explanation
    ve.refresh_from_db()
    assert ve.disk == 160 << 20
    run(svc.ve_start(ve=ve))
    df = run(svc.ve_exec(ve=ve, argv=["df", "-k", "/"])).result["output"].splitlines()[-1].split()
    # ext4's journal and inode tables take their share of the 160M; the 256M is gone.
    assert 110 * 1024 <= int(df[1]) <= 160 * 1024, df
    size = run(svc.ve_exec(ve=ve, argv=["sh", "-c", "wc -c < /data"])).result["output"].strip()
    assert size == "90000000", "the data survived the shrink"
