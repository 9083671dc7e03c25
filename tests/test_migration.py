"""Moving VEs between nodes (issue 9): two node agents on this machine, each with its own
root (LXC path, storage pool, templates, state) and its own address, one on each end of a
veth pair made for these tests (198.19.40.1 and .2; this kernel has no dummy interfaces), which its rsync endpoint binds to and which the panel learns from the
heartbeat. Traffic goes only to those addresses and to VEs these tests made (pools
198.18.40.0/24 and fd00:40::/64, each with an unreachable route)."""
import hashlib
import os
import secrets
import subprocess
import time
from pathlib import Path

import pytest

from panel.models import VE, Job, JobLog, Migration, Node, OSTemplate
from panel.services import migrations as mig_svc
from panel.services import network as net
from panel.services import ves as svc
from panel.services.errors import Conflict, Forbidden, InvalidInput, Unavailable
from panel.services.jobs import job_wait
from tests import harness
from tests.conftest import BROKER, NODE, run
from tests.harness import wait_for

pytestmark = pytest.mark.integration

NODE_B = "hakot9b"
KEY_B = secrets.token_hex(32)
ROOT_B = harness.TEST_ROOT / f"node-{NODE_B}"
IFACE, PEER = "hkm9a", "hkm9b"
ADDR_A, ADDR_B = "198.19.40.1", "198.19.40.2"
POOL4, POOL4_A_ONLY, POOL6 = "198.18.40.0/25", "198.18.40.128/25", "fd00:40::/64"
MiB = 1024 * 1024


def host(*argv, check=True):
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=120, check=check)


class Agents:
    """The stack's agent (node A) with an address, and a second agent (node B)."""

    def __init__(self, stack):
        self.stack = stack
        self.b = harness.node_agent(NODE_B, KEY_B, BROKER, ROOT_B,
                                    env={"HAKO_NODE_ADDRESS": ADDR_B, "HAKO_POOL_SIZE": "3G"})

    @staticmethod
    def _ready(proc, before):
        wait_for(lambda: proc.log_text().count(" ready.") > before, 90, what=f"{proc.name} ready")

    def restart_a(self, extra=None):
        before = self.stack.agent.log_text().count(" ready.")
        self.stack.restart_agent({"HAKO_NODE_ADDRESS": ADDR_A, **(extra or {})})
        self._ready(self.stack.agent, before)

    def start_b(self, extra=None):
        before = self.b.log_text().count(" ready.")
        self.b.start(extra)
        self._ready(self.b, before)


@pytest.fixture(scope="module")
def agents(stack):
    host("ip", "link", "del", IFACE, check=False)  # a killed run's leftover
    host("ip", "link", "add", IFACE, "type", "veth", "peer", "name", PEER)
    for addr, dev in ((ADDR_A, IFACE), (ADDR_B, PEER)):
        host("ip", "addr", "add", f"{addr}/32", "dev", dev)
        host("ip", "link", "set", dev, "up")
    harness.clean_node_root(ROOT_B)
    ag = Agents(stack)
    ag.restart_a()
    ag.start_b()
    yield ag
    ag.b.stop()
    harness.clean_node_root(ROOT_B)
    before = stack.agent.log_text().count(" ready.")
    stack.restart_agent()
    Agents._ready(stack.agent, before)
    host("ip", "link", "del", IFACE, check=False)


@pytest.fixture
def nodes(agents, node):
    """Rows of both nodes, once each has reported its address; both serve the pools."""
    from django.utils import timezone

    b, _ = Node.objects.update_or_create(name=NODE_B, defaults={
        "queue": f"node.{NODE_B}", "key": KEY_B, "state": Node.State.ONLINE, "last_heartbeat": timezone.now(),
        "info": {"templates": ["busybox"]}, "agent_instance": "", "heartbeat_seq": 0, "maintenance": False})
    for n in (node, b):
        wait_for(lambda n=n: Node.objects.get(pk=n.pk).info.get("address"), 30, what=f"{n.name}'s address")
    p4 = net.pool_create(name="m4", network=POOL4, nodes=[node, b], range_start="198.18.40.10")
    net.pool_create(name="m6", network=POOL6, nodes=[node, b])
    net.pool_create(name="m4a", network=POOL4_A_ONLY, nodes=[node])
    for job in Job.objects.filter(kind="node_config"):
        job_wait(job, timeout=30)
    yield Node.objects.get(pk=node.pk), Node.objects.get(pk=b.pk)
    gone = f"gone-{secrets.token_hex(4)}"
    Node.objects.filter(pk=b.pk).update(name=gone, queue=f"node.{gone}")
    harness.remove_all_ves(ROOT_B)
    (ROOT_B / "state" / "migrations").mkdir(parents=True, exist_ok=True)
    for p in (ROOT_B / "state" / "migrations").iterdir():
        subprocess.run(["rm", "-rf", str(p)], check=False)
    for cidr in (POOL4, POOL4_A_ONLY, POOL6):
        host("ip", "route", "del", "unreachable", cidr, check=False)
    assert p4  # pools go with the tables of this transactional test


def sh(ve, script, timeout=60):
    out = run(svc.ve_exec(ve=ve, argv=["sh", "-c", script], timeout=timeout), timeout=timeout + 30).result
    assert out["exit_code"] == 0, out
    return out["output"]


def new_ve(tenant, node, *, start=True, template="busybox", **kw):
    ve = VE.objects.get(pk=run(svc.ve_create(tenant=tenant, template=template, node=node, **kw), 120).ve_id)
    if start:
        run(svc.ve_start(ve=ve))
    ve.refresh_from_db()
    return ve


def data_sums(ve) -> str:
    return sh(ve, "cd /data && md5sum $(find . -type f | sort)")


def pings(addr: str) -> bool:
    return host("busybox", "ping", "-c", "1", "-W", "2", addr, check=False).returncode == 0


def lxc_state(root: Path, veid: int) -> str:
    return host("lxc-info", "-P", str(root / "lxc"), "-n", str(veid), "-s", "-H", check=False).stdout.strip()


def copies(veid: int, stack) -> dict:
    """Which node roots hold a disk of the VE, and where it runs."""
    out = {}
    for name, root in ((NODE, stack.node_root), (NODE_B, ROOT_B)):
        out[name] = {"image": (root / "images" / f"{veid}.img").exists(),
                     "running": lxc_state(root, veid) == "RUNNING",
                     "marker": (root / "state" / "migrations" / f"{veid}.json").exists()}
    return out


def daemons_of(root: Path) -> list[int]:
    found = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                cmd = (p / "cmdline").read_bytes()
            except OSError:
                continue
            if b"--daemon" in cmd and str(root).encode() in cmd:
                found.append(int(p.name))
    return found


def migrate(ve, target, **kw):
    job = mig_svc.ve_migrate(ve=ve, target=target, **kw)
    return job_wait(job, timeout=kw.pop("timeout", 600))


def log_text(job) -> str:
    return "\n".join(job.logs.order_by("seq").values_list("message", flat=True))


def test_a_stopped_ve_moves_and_stays_stopped(stack, nodes, tenant):
    a, b = nodes
    ve = new_ve(tenant, a)
    sh(ve, "mkdir -p /data && echo kept-across-nodes > /data/note && chown 1000:1000 /data/note && "
           "ln -s note /data/link && ln /data/note /data/hard")
    sums = data_sums(ve)
    addresses = list(ve.addresses)
    run(svc.ve_stop(ve=ve))
    job = migrate(ve, b)
    assert job.state == "succeeded", log_text(job)
    ve.refresh_from_db()
    assert ve.node_id == b.pk and ve.state == "stopped" and ve.addresses == addresses
    assert copies(ve.veid, stack) == {NODE: {"image": False, "running": False, "marker": False},
                                      NODE_B: {"image": True, "running": False, "marker": False}}
    mig = Migration.objects.get(job=job)
    assert mig.state == "done" and mig.sealed_source == "" and mig.sealed_target == ""
    assert job.result["downtime_ms"] is None and job.result["target"] == NODE_B
    assert daemons_of(ROOT_B) == []

    run(svc.ve_start(ve=ve))
    assert data_sums(ve) == sums
    # ids, links and hard links survived the trip unshifted
    assert sh(ve, "stat -c '%u:%g %h' /data/note; readlink /data/link").split() == ["1000:1000", "2", "note"]
    wait_for(lambda: pings(addresses[0]), 20, what="the VE's address answering on node B")


def test_a_running_ve_moves_with_precopy_and_its_address_answers(stack, nodes, tenant):
    a, b = nodes
    ve = new_ve(tenant, a)
    sh(ve, "mkdir -p /data && head -c 30000000 /dev/urandom > /data/blob && echo v1 > /data/small "
           "&& mkdir -p /www && echo hi > /www/index.html && httpd -p 80 -h /www")
    sums = data_sums(ve)
    wait_for(lambda: pings(ve.addresses[0]), 20, what="the VE's address answering on node A")
    job = migrate(ve, b)
    assert job.state == "succeeded", log_text(job)
    ve.refresh_from_db()
    assert ve.node_id == b.pk and ve.state == "running"
    text = log_text(job)
    assert "Pre-copying" in text and "Final pass" in text and "Verified" in text
    assert "Copied" in text and "bytes" in text
    assert job.result["downtime_ms"] > 0 and "Downtime:" in text
    assert job.result["bytes"] >= 30_000_000
    assert copies(ve.veid, stack)[NODE] == {"image": False, "running": False, "marker": False}
    assert copies(ve.veid, stack)[NODE_B]["running"]
    assert data_sums(ve) == sums
    answering(ve, "on node B")
    wait_for(lambda: pings(ve.addresses[1]), 20, what="the VE's IPv6 address answering on node B")
    # The route to the VE points at its new veth (the same name on this shared host).
    assert f"dev vz{ve.veid}" in host("ip", "route", "show", ve.addresses[0]).stdout
    # The VE works as before: jobs go to its new node.
    assert sh(ve, "cat /data/small").strip() == "v1"
    # and back again: the address answers on node A
    assert migrate(ve, a).state == "succeeded"
    ve.refresh_from_db()
    assert ve.node_id == a.pk and data_sums(ve) == sums
    answering(ve, "back on node A")
    assert not copies(ve.veid, stack)[NODE_B]["running"] and not copies(ve.veid, stack)[NODE_B]["image"]
    run(svc.ve_stop(ve=ve))


def answering(ve, where: str) -> None:
    """Wait for the VE's first address to answer; on a timeout, say what the host and the
    VE see (routes, its veth), so that a failure explains itself."""
    try:
        wait_for(lambda: pings(ve.addresses[0]), 20, interval=0.5, what=f"the VE's address answering {where}")
    except AssertionError as e:
        raise AssertionError(f"{e}: host route: {host('ip', 'route', 'show', ve.addresses[0]).stdout!r}; "
                             f"veth: {host('ip', '-br', 'link', 'show', f'vz{ve.veid}', check=False).stdout!r}; "
                             f"in the VE: {sh(ve, 'ip addr; ip route')!r}") from None


def test_bad_requests_change_nothing(stack, nodes, tenant, django_user_model):
    a, b = nodes
    ve = new_ve(tenant, a, start=False)
    only_a = new_ve(tenant, a, start=False, addresses=["198.18.40.130"])
    user = django_user_model.objects.create_user("cust", password="x")
    from panel.models import Membership

    Membership.objects.create(user=user, tenant=tenant, role="owner")
    before = (Migration.objects.count(), Job.objects.filter(kind="migrate").count())
    with pytest.raises(Forbidden):
        mig_svc.ve_migrate(ve=ve, target=b, actor=user)
    for target, err in [("no-such-node", InvalidInput), ("x; reboot", InvalidInput), (a, Unavailable)]:
        with pytest.raises(err):
            mig_svc.ve_migrate(ve=ve, target=target)
    with pytest.raises(InvalidInput):
        mig_svc.ve_migrate(ve=ve, target=b, bwlimit=-1)
    with pytest.raises(Unavailable, match="address pools"):
        mig_svc.ve_migrate(ve=only_a, target=b)
    mig_svc.node_set_maintenance(node=b, on=True)
    with pytest.raises(Unavailable, match="maintenance"):
        mig_svc.ve_migrate(ve=ve, target=b)
    with pytest.raises(Unavailable, match="maintenance"):
        svc.ve_create(tenant=tenant, template="busybox", node=b)
    mig_svc.node_set_maintenance(node=b, on=False)
    assert (Migration.objects.count(), Job.objects.filter(kind="migrate").count()) == before
    assert VE.objects.get(pk=ve.pk).state == "stopped"
    # A VE with a job in flight cannot migrate, nor can a migrating VE take another job.
    job = mig_svc.ve_migrate(ve=ve, target=b)
    with pytest.raises(Conflict):
        svc.ve_start(ve=ve)
    with pytest.raises(Conflict):
        mig_svc.ve_migrate(ve=ve, target=b)
    assert job_wait(job, timeout=300).state == "succeeded"


def test_target_agent_killed_mid_copy_leaves_the_ve_running_on_the_source(stack, nodes, tenant, agents):
    a, b = nodes
    ve = new_ve(tenant, a)
    sh(ve, "mkdir -p /data && head -c 40000000 /dev/urandom > /data/blob")
    sums = data_sums(ve)
    job = mig_svc.ve_migrate(ve=ve, target=b, bwlimit=4000)  # ~10 s of copying
    wait_for(lambda: JobLog.objects.filter(job=job, message__contains="Copied").exists(), 60,
             what="the copy under way")
    agents.b.kill()
    time.sleep(2)
    assert lxc_state(stack.node_root, ve.veid) == "RUNNING"
    agents.start_b()  # the node comes back and cleans its incomplete copy
    job = job_wait(job, timeout=300)
    assert job.state == "failed", log_text(job)
    ve.refresh_from_db()
    assert ve.node_id == a.pk and ve.state == "running"
    assert copies(ve.veid, stack) == {NODE: {"image": True, "running": True, "marker": False},
                                      NODE_B: {"image": False, "running": False, "marker": False}}
    assert Migration.objects.get(job=job).state == "failed"
    assert daemons_of(ROOT_B) == []
    assert data_sums(ve) == sums
    wait_for(lambda: pings(ve.addresses[0]), 20, what="the VE's address answering on the source")
    # and it can migrate afterwards
    assert migrate(ve, b).state == "succeeded"
    assert data_sums(VE.objects.get(pk=ve.pk)) == sums


def test_source_agent_killed_after_the_stop_ends_with_one_running_copy(stack, nodes, tenant, agents):
    a, b = nodes
    ve = new_ve(tenant, a)
    sh(ve, "mkdir -p /data && head -c 5000000 /dev/urandom > /data/blob")
    sums = data_sums(ve)
    agents.restart_a({"HAKO_FAULT_DELAY": "migrate_stopped:30"})
    try:
        job = mig_svc.ve_migrate(ve=ve, target=b)
        wait_for(lambda: Migration.objects.get(job=job).state == "final"
                 and lxc_state(stack.node_root, ve.veid) == "STOPPED", 120, what="the VE stopped on the source")
        stack.agent.kill()
        time.sleep(1)
    finally:
        agents.restart_a()
    job = job_wait(job, timeout=300)
    ve.refresh_from_db()
    where = copies(ve.veid, stack)
    running = [name for name, c in where.items() if c["running"]]
    assert len(running) == 1, (where, log_text(job))
    assert ve.node.name == running[0] and ve.state == "running"
    if job.state == "succeeded":  # rolled forward: the final pass was run again
        assert where[NODE]["image"] is False
    else:
        assert where[NODE_B]["image"] is False
    assert data_sums(ve) == sums
    # The agent restarted meanwhile: allow for its re-plumbing on a loaded machine.
    wait_for(lambda: pings(ve.addresses[0]), 60, what="the VE's address answering")


def test_target_disk_full_rolls_back(stack, nodes, tenant):
    a, b = nodes
    ve = new_ve(tenant, a)
    sh(ve, "mkdir -p /data && head -c 80000000 /dev/urandom > /data/blob")
    sums = data_sums(ve)
    filler = ROOT_B / "pool" / "filler"
    st = os.statvfs(ROOT_B / "pool")
    host("fallocate", "-l", str(st.f_bavail * st.f_frsize - 40 * MiB), str(filler))
    try:
        job = job_wait(mig_svc.ve_migrate(ve=ve, target=b), timeout=300)
    finally:
        filler.unlink()
    assert job.state == "failed", log_text(job)
    assert "disk is full or failing" in job.explanation or "could not be written to disk" in job.explanation
    ve.refresh_from_db()
    assert ve.node_id == a.pk and ve.state == "running"
    assert copies(ve.veid, stack) == {NODE: {"image": True, "running": True, "marker": False},
                                      NODE_B: {"image": False, "running": False, "marker": False}}
    assert data_sums(ve) == sums


def test_debian_ve_with_data_moves_with_identical_checksums(stack, nodes, tenant, debian12):
    a, b = nodes
    link_template(debian12, ROOT_B)
    wait_for(lambda: debian12 in Node.objects.get(pk=b.pk).info.get("templates", []), 30,
             what="node B offering debian-12")
    OSTemplate.objects.get_or_create(name=debian12)
    ve = new_ve(tenant, a, template=debian12, disk=2048 * MiB)
    sh(ve, "mkdir -p /data && head -c 50000000 /dev/urandom > /data/blob && cp -a /etc /data/etc")
    before = tree_manifest(stack.node_root / "mnt" / str(ve.veid), ["data", "usr/bin", "etc/ssh"])
    sums = data_sums(ve)
    job = migrate(ve, b)
    assert job.state == "succeeded", log_text(job)
    ve.refresh_from_db()
    assert ve.node_id == b.pk and ve.state == "running"
    assert tree_manifest(ROOT_B / "mnt" / str(ve.veid), ["data", "usr/bin", "etc/ssh"]) == before
    assert data_sums(ve) == sums
    try:
        wait_for(lambda: ssh_banner(ve.addresses[0]).startswith(b"SSH-2.0"), 60, interval=0.5,
                 what="sshd answering on the VE's address on node B")
    except AssertionError as e:
        raise AssertionError(f"{e}: ping: {pings(ve.addresses[0])}; proxy: "
                             f"{host('ip', 'neigh', 'show', 'proxy', 'dev', f'vz{ve.veid}').stdout!r}; in the VE: "
                             f"{sh(ve, 'ss -ltn; systemctl is-system-running; systemctl --failed --no-legend; ip route')!r}"
                             ) from None


def ssh_banner(addr: str) -> bytes:
    import socket

    try:
        with socket.create_connection((addr, 22), timeout=2) as s:
            return s.recv(64)
    except OSError:
        return b""


def link_template(name: str, root: Path) -> None:
    from containers.templates import template_paths
    from tests.conftest import TEMPLATE_CACHE

    cache = root / "templates"
    for src in template_paths(TEMPLATE_CACHE, name):
        dst = cache / src.name
        if not dst.exists():
            tmp = cache / f".{src.name}.tmp"
            tmp.unlink(missing_ok=True)
            os.link(src, tmp)
            os.replace(tmp, dst)


def tree_manifest(root: Path, subdirs: list[str]) -> dict:
    """Checksums, owners and modes of the files under ``subdirs`` of a VE's raw mount."""
    out = {}
    for sub in subdirs:
        for dirpath, dirs, files in os.walk(root / sub):
            for f in files:
                p = Path(dirpath) / f
                st = p.lstat()
                digest = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() and not p.is_symlink() \
                    else os.readlink(p) if p.is_symlink() else ""
                out[str(p.relative_to(root))] = (digest, st.st_uid, st.st_gid, st.st_mode)
    assert out
    return out


def test_drain_empties_a_node_and_reports_what_could_not_move(stack, nodes, tenant):
    a, b = nodes
    running = new_ve(tenant, a)
    stopped = new_ve(tenant, a, start=False)
    stuck = new_ve(tenant, a, start=False, addresses=["198.18.40.130"])  # its pool is on A only
    job = mig_svc.node_drain(node=a)
    assert Node.objects.get(pk=a.pk).maintenance is True
    job = job_wait(job, timeout=600)
    assert job.state == "failed" and job.error == "not-drained"
    moved = {item["veid"] for item in job.result["moved"]}
    assert moved == {running.veid, stopped.veid}, log_text(job)
    assert [item["veid"] for item in job.result["failed"]] == [stuck.veid]
    assert "address pools" in job.result["failed"][0]["reason"]
    assert "2 moved, 1 could not be moved" in log_text(job)
    assert {v.veid: (v.node.name, v.state) for v in VE.objects.filter(pk__in=[running.pk, stopped.pk])} == {
        running.veid: (NODE_B, "running"), stopped.veid: (NODE_B, "stopped")}
    assert VE.objects.get(pk=stuck.pk).node_id == a.pk
    # A node in maintenance takes no new VEs: placement picks B.
    new = svc.ve_create(tenant=tenant, template="busybox")
    assert new.node_id == b.pk
    run(new)
    run(svc.ve_destroy(ve=stuck))
    job = job_wait(mig_svc.node_drain(node=b, actor=None), timeout=600)
    # A is in maintenance: nothing on B can go anywhere.
    assert job.state == "failed" and len(job.result["failed"]) == 3 and not job.result["moved"]
    mig_svc.node_set_maintenance(node=a, on=False)
    job = job_wait(mig_svc.node_drain(node=b), timeout=600)
    assert job.state == "succeeded", log_text(job)
    assert len(job.result["moved"]) == 3 and not VE.objects.filter(node=b).exclude(state="destroyed").exists()
