"""Fast provisioning with the disk still a hard per-VE quota: layered roots (the default: a
shared read-only tree per template under each VE's own upper layer on its image) and flat
roots (HAKO_VE_ROOTS=flat: reflink clones of a golden image per template on the node's XFS
pool); node tuning; start-on-boot."""
import os
import subprocess
from pathlib import Path

import pytest

from containers import tuning
from panel.models import VE, Node, OSTemplate
from panel.services import ves as svc
from tests import harness
from tests.conftest import run
from tests.harness import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]


def sh(ve, *argv) -> dict:
    return run(svc.ve_exec(ve=ve, argv=list(argv))).result


def log_of(job) -> list[str]:
    return [line.message for line in job.logs.order_by("seq")]


def pool_used(stack) -> int:
    st = os.statvfs(stack.node_root / "pool")
    return (st.f_blocks - st.f_bfree) * st.f_frsize


def shared_extents(path: Path) -> int:
    out = subprocess.run(["filefrag", "-v", str(path)], capture_output=True, text=True, check=True).stdout
    return sum(1 for line in out.splitlines() if "shared" in line)


def lxc_state(stack, veid: int) -> str:
    return subprocess.run(["lxc-info", "-P", str(stack.node_root / "lxc"), "-n", str(veid), "-s", "-H"],
                          capture_output=True, text=True).stdout.strip()


def init_pid(stack, veid: int) -> str:
    return subprocess.run(["lxc-info", "-P", str(stack.node_root / "lxc"), "-n", str(veid), "-p", "-H"],
                          capture_output=True, text=True).stdout.strip()


def test_the_pool_is_xfs_with_reflink_and_holds_the_images(stack, node):
    mounts = {line.split()[1]: line.split()[2] for line in Path("/proc/mounts").read_text().splitlines()}
    assert mounts.get(str(stack.node_root / "pool")) == "xfs"
    assert (stack.node_root / "images").resolve() == stack.node_root / "pool" / "images"
    wait_for(lambda: Node.objects.get(pk=node.pk).info.get("pool", {}).get("reflink"), 10,
             what="the heartbeat to report the pool")
    info = Node.objects.get(pk=node.pk).info["pool"]
    assert info["mode"] == "loop" and info["size"] > info["free"] > 0


def restart_agent(stack, env=None) -> None:
    before = stack.agent.log_text().count(" ready.")
    stack.restart_agent(env)
    wait_for(lambda: stack.agent.log_text().count(" ready.") > before, 90, what="the agent ready")


@pytest.fixture
def flat_roots(stack, node):
    """The node agent making flat roots (HAKO_VE_ROOTS=flat) for one test."""
    restart_agent(stack, {"HAKO_VE_ROOTS": "flat"})
    yield
    harness.remove_all_ves(stack.node_root)
    restart_agent(stack)


def memory_charged(node, ve) -> int:
    return int(Path(f"/sys/fs/cgroup/memory/hako.{node.name}/{ve.veid}/memory.usage_in_bytes").read_text())


def test_a_layered_ve_keeps_its_changes_on_its_own_disk_under_a_hard_quota(stack, node, tenant):
    job = run(svc.ve_create(tenant=tenant, template="busybox", node=node, disk=512 << 20))
    ve = VE.objects.get(pk=job.ve_id)
    assert "Creating VE private area (512M ext4 image over the shared busybox layer)" in log_of(job)
    layer = (stack.node_root / "state" / "ves" / f"{ve.veid}.layer").read_text().strip()
    assert layer.startswith("busybox.") and (stack.node_root / "lower" / layer / "bin" / "busybox").exists()
    img = stack.node_root / "images" / f"{ve.veid}.img"
    assert img.stat().st_size == 512 << 20 and (img.stat().st_mode & 0o777) == 0o600

    run(svc.ve_start(ve=ve))
    size = int(sh(ve, "df", "-B1", "/")["output"].splitlines()[1].split()[1])
    assert 0.9 * (512 << 20) < size <= 512 << 20, "df inside shows the VE's own size"
    # Root in the VE owns the template's files and what it writes; on disk both stay
    # unshifted (uid 0, 1000), on the host the running root shows the VE's id range.
    out = sh(ve, "sh", "-c", "echo mine > /etc/motd && mkdir -p /home/u && echo x > /home/u/f && "
                             "chown 1000:1000 /home/u/f && stat -c '%u' /bin/busybox /etc/motd")
    assert out["output"].split() == ["0", "0"], out
    upper = stack.node_root / "disk" / str(ve.veid) / "upper"
    assert (upper / "etc" / "motd").stat().st_uid == 0 and (upper / "home/u/f").stat().st_uid == 1000
    assert not (upper / "bin").exists(), "the template's files stay in the shared layer"
    assert (stack.node_root / "mnt" / str(ve.veid) / "bin" / "busybox").stat().st_uid == ve.uid_base
    # The VE cannot change the shared layer: its copy of a file is its own.
    sh(ve, "sh", "-c", "echo changed >> /etc/inittab")
    assert b"changed" not in (stack.node_root / "lower" / layer / "etc" / "inittab").read_bytes()

    fill = sh(ve, "dd", "if=/dev/zero", "of=/fill", "bs=1M", "count=600")
    assert fill["exit_code"] != 0 and "No space left on device" in fill["output"]
    assert img.stat().st_size == 512 << 20 and img.stat().st_blocks * 512 <= 512 << 20
    # Stopped and started again, everything is still there.
    run(svc.ve_stop(ve=ve))
    run(svc.ve_start(ve=ve))
    assert sh(ve, "cat", "/etc/motd", "/home/u/f")["output"].split() == ["mine", "x"]
    assert "changed" in sh(ve, "tail", "-n1", "/etc/inittab")["output"]


def test_layered_debian_ves_share_the_templates_page_cache(stack, node, tenant, debian12):
    """What layered roots are for: the template's files are cached once per node. A VE
    reading the whole /usr after another one did is charged a fraction of what the first
    was (each flat VE would cache, and be charged for, its own copy)."""
    OSTemplate.objects.get_or_create(name=debian12)
    a, b = (VE.objects.get(pk=run(svc.ve_create(tenant=tenant, template=debian12, node=node,
                                                 memory=2048 << 20), timeout=300).ve_id) for _ in range(2))
    assert (stack.node_root / "state" / "ves" / f"{a.veid}.layer").read_text() == \
        (stack.node_root / "state" / "ves" / f"{b.veid}.layer").read_text()
    run(svc.ve_start(ve=a))
    run(svc.ve_start(ve=b))
    # Out of the page cache first: unpacking the layer cached its files (charged to no VE).
    layer = (stack.node_root / "state" / "ves" / f"{a.veid}.layer").read_text().strip()
    for f in (stack.node_root / "lower" / layer / "usr").rglob("*"):
        if f.is_file() and not f.is_symlink():
            fd = os.open(f, os.O_RDONLY)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            os.close(fd)
    read_usr = ["sh", "-c", "find /usr -type f -size +16k -exec cat {} + | wc -c"]
    grown = []
    for ve in (a, b):
        before = memory_charged(node, ve)
        out = run(svc.ve_exec(ve=ve, argv=read_usr, timeout=120), timeout=180).result
        assert out["exit_code"] == 0 and int(out["output"].split()[-1]) > 50 << 20, out
        grown.append(memory_charged(node, ve) - before)
    assert grown[0] > 40 << 20, f"the first VE was charged only {grown[0] >> 20} MiB for reading /usr"
    assert grown[1] < grown[0] / 4, f"charged {grown[0] >> 20} MiB then {grown[1] >> 20} MiB: no sharing"


def test_a_busybox_disk_is_a_reflink_clone_and_a_hard_quota(stack, node, tenant, flat_roots):
    job = run(svc.ve_create(tenant=tenant, template="busybox", node=node, disk=512 << 20))
    ve = VE.objects.get(pk=job.ve_id)
    assert "Creating VE private area (512M ext4 image, reflink clone of busybox)" in log_of(job)
    assert not any(line.startswith("Unpacking") for line in log_of(job))
    img = stack.node_root / "images" / f"{ve.veid}.img"
    assert img.resolve().is_relative_to(stack.node_root / "pool")
    assert img.stat().st_size == 512 << 20 and (img.stat().st_mode & 0o777) == 0o600
    assert shared_extents(img) > 0, "the clone shares its extents with the golden image"

    run(svc.ve_start(ve=ve))
    size = int(sh(ve, "df", "-B1", "/")["output"].splitlines()[1].split()[1])
    assert 0.9 * (512 << 20) < size <= 512 << 20, "df inside shows the VE's own size"
    fill = sh(ve, "dd", "if=/dev/zero", "of=/fill", "bs=1M", "count=600")
    assert fill["exit_code"] != 0 and "No space left on device" in fill["output"]
    # The image never grows past the quota, whatever the VE writes.
    assert img.stat().st_size == 512 << 20 and img.stat().st_blocks * 512 <= 512 << 20


def test_a_disk_smaller_than_the_golden_image_is_made_by_mkfs(stack, node, tenant, flat_roots):
    job = run(svc.ve_create(tenant=tenant, template="busybox", node=node, disk=128 << 20))
    lines = log_of(job)
    assert "Creating VE private area (128M ext4 image)" in lines and "Unpacking OS template busybox" in lines
    ve = VE.objects.get(pk=job.ve_id)
    run(svc.ve_start(ve=ve))
    assert sh(ve, "cat", "/etc/hostname")["output"].strip() == ve.hostname


def test_debian_clones_share_their_extents_in_the_pool(stack, node, tenant, debian12, flat_roots):
    OSTemplate.objects.get_or_create(name=debian12)
    first = run(svc.ve_create(tenant=tenant, template=debian12, node=node), timeout=300)  # makes the golden image
    used = pool_used(stack)
    ves = [VE.objects.get(pk=run(svc.ve_create(tenant=tenant, template=debian12, node=node)).ve_id)
           for _ in range(3)]
    grown = pool_used(stack) - used
    template = (stack.node_root / "templates" / "debian-12.tar").stat().st_size
    # Three full copies would take 3 x ~250 MB; clones take the blocks identity rewrote.
    assert grown < template / 4, f"pool grew by {grown >> 20} MiB for 3 clones of a {template >> 20} MiB template"
    for ve in ves:
        assert shared_extents(stack.node_root / "images" / f"{ve.veid}.img") > 10
    assert VE.objects.get(pk=first.ve_id).state == "stopped"


def test_tuning_raises_the_density_limits_and_reports_them(stack, node):
    wait_for(lambda: Node.objects.get(pk=node.pk).info.get("tuning"), 10, what="tuning in the heartbeat")
    reported = Node.objects.get(pk=node.pk).info["tuning"]
    for key, target in tuning.TARGETS.items():
        if key not in reported:  # e.g. IPv6 disabled on the host: reported as a problem instead
            assert key in Node.objects.get(pk=node.pk).info.get("tuning_problems", {}), key
            continue
        assert reported[key] >= target, key
        assert tuning.read(key) == reported[key], key

    # An admin's higher value is never lowered: raise one above the target, restart.
    key = "kernel.keys.maxbytes"
    before = tuning.read(key)
    higher = max(before, tuning.TARGETS[key]) + 4321
    Path("/proc/sys/kernel/keys/maxbytes").write_text(str(higher))
    try:
        instance = Node.objects.get(pk=node.pk).agent_instance
        stack.restart_agent()
        wait_for(lambda: Node.objects.get(pk=node.pk).agent_instance not in ("", instance), 60,
                 what="a heartbeat from the restarted agent")
        assert tuning.read(key) == higher
        assert Node.objects.get(pk=node.pk).info["tuning"][key] == higher
    finally:
        Path("/proc/sys/kernel/keys/maxbytes").write_text(str(before))


def test_an_onboot_ve_comes_back_when_the_agent_restarts_and_none_is_stopped(stack, node, tenant):
    onboot = VE.objects.get(pk=run(svc.ve_create(tenant=tenant, template="busybox", node=node, onboot=True)).ve_id)
    other = VE.objects.get(pk=run(svc.ve_create(tenant=tenant, template="busybox", node=node)).ve_id)
    idle = VE.objects.get(pk=run(svc.ve_create(tenant=tenant, template="busybox", node=node)).ve_id)
    run(svc.ve_start(ve=onboot))
    run(svc.ve_start(ve=other))
    other_pid = init_pid(stack, other.veid)

    # Stopped behind the agent's back (as after a host reboot).
    subprocess.run(["lxc-stop", "-P", str(stack.node_root / "lxc"), "-n", str(onboot.veid), "-k"], check=True)
    wait_for(lambda: VE.objects.get(pk=onboot.pk).state == "stopped", 10, what="the heartbeat to see it stopped")

    instance = Node.objects.get(pk=node.pk).agent_instance
    stack.restart_agent()
    wait_for(lambda: lxc_state(stack, onboot.veid) == "RUNNING", 60, what="the onboot VE to be started")
    wait_for(lambda: Node.objects.get(pk=node.pk).agent_instance not in ("", instance), 60,
             what="a heartbeat from the restarted agent")
    wait_for(lambda: VE.objects.get(pk=onboot.pk).state == "running", 10, what="the panel to see it running")
    assert f"onboot: VE {onboot.veid} started" in stack.agent.log_text()
    # The restart stopped nothing and started only what is marked onboot.
    assert init_pid(stack, other.veid) == other_pid and lxc_state(stack, other.veid) == "RUNNING"
    assert lxc_state(stack, idle.veid) == "STOPPED"
    assert "init" in sh(onboot, "ps")["output"]
