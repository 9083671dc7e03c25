"""The OpenVZ command line: vzctl drives the real pipeline and exits non-zero on failure;
vzlist prints vzlist's layout."""
import os
import subprocess
import sys
from io import StringIO

import pytest
from django.conf import settings
from django.core.management import call_command
from django.utils import timezone

from panel.models import VE, Node, OSTemplate
from tests.harness import REPO

pytestmark = pytest.mark.django_db(transaction=True)


def manage(stack, *argv):
    env = {**os.environ, "HAKO_DATABASE_URL": stack.db_url}
    return subprocess.run([sys.executable, "manage.py", *argv], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=120)


@pytest.mark.integration
def test_vzctl_drives_a_ve_through_its_life(stack, node, tenant):
    V = str(settings.HAKO_FIRST_VEID)
    out = manage(stack, "vzctl", "create", V, "--ostemplate", "busybox", "--hostname", "cli1",
                 "--ram", "128M", "--diskspace", "524288", "--tenant", tenant.slug)
    assert out.returncode == 0, out.stderr
    assert f"VE {V} is created" in out.stdout
    ve = VE.objects.get(veid=int(V))
    assert ve.memory == 128 << 20 and ve.disk == 512 << 20  # bare --diskspace is KiB, as in vzctl

    out = manage(stack, "vzctl", "start", V)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    for expected in ("Starting VE ...", "Setting CPU units: 1000", "VE start in progress..."):
        assert expected in lines, out.stdout
    assert lines.index("Starting VE ...") < lines.index("Setting CPU units: 1000") < lines.index("VE start in progress...")

    out = manage(stack, "vzlist")
    assert out.stdout.splitlines()[0] == "      VEID      NPROC STATUS    IP_ADDR         HOSTNAME"
    row = out.stdout.splitlines()[1].split()
    assert row[0] == V and int(row[1]) >= 1 and row[2:] == ["running", "-", "cli1"]

    out = manage(stack, "vzctl", "exec", V, "sh", "-c", "echo hi; exit 3")
    assert out.stdout == "hi\n" and out.returncode == 3

    out = manage(stack, "vzctl", "status", V)
    assert out.stdout.strip() == f"VEID {V} exist mounted running"

    out = manage(stack, "vzctl", "set", V, "--ram", "256M", "--numproc", "300", "--save")
    assert out.returncode == 0, out.stderr
    assert (stack.node_root.parent / f"node-{node.name}").exists()
    assert open(f"/sys/fs/cgroup/pids/hako.{node.name}/{V}/pids.max").read().strip() == "300"

    out = manage(stack, "vzctl", "stop", V)
    assert out.returncode == 0 and "VE was stopped" in out.stdout
    # A job that fails prints its reason and exits non-zero: the disk vanished on the node.
    os.unlink(stack.node_root / "images" / f"{V}.img")
    out = manage(stack, "vzctl", "start", V)
    assert out.returncode != 0
    assert "does not exist on this node" in out.stderr
    out = manage(stack, "vzctl", "destroy", V)
    assert out.returncode == 0, out.stderr
    assert manage(stack, "vzlist", "-a", "-H").stdout == ""


def test_vzlist_matches_vzlist_layout(db, tenant):
    OSTemplate.objects.create(name="busybox")
    node = Node.objects.create(name="n1", queue="node.n1", state="online", last_heartbeat=timezone.now())
    common = dict(tenant=tenant, node=node, template=OSTemplate.objects.get(), memory=1 << 28, disk=1 << 30,
                  numproc=100)
    VE.objects.create(veid=101, state="running", nproc=14, hostname="web1.example.com",
                      addresses=["198.18.0.151"], uid_base=1000000, **common)
    VE.objects.create(veid=102, state="stopped", hostname="db1", addresses=["198.18.0.152"], uid_base=1065536,
                      **common)
    VE.objects.create(veid=1000, state="running", nproc=3, hostname="x", uid_base=1131072, **common)
    VE.objects.create(veid=103, state="destroyed", hostname="gone", uid_base=1196608, **common)

    out = StringIO()
    call_command("vzlist", "-a", stdout=out)
    assert out.getvalue().splitlines() == [
        "      VEID      NPROC STATUS    IP_ADDR         HOSTNAME",
        "       101         14 running   198.18.0.151    web1.example.com",
        "       102          - stopped   198.18.0.152    db1",
        "      1000          3 running   -               x",
    ]
    out = StringIO()
    call_command("vzlist", stdout=out)
    assert [line.split()[0] for line in out.getvalue().splitlines()] == ["VEID", "101", "1000"]
    out = StringIO()
    call_command("vzlist", "-a", "-H", "-o", "veid,ostemplate,ram,diskspace,numproc", "102", stdout=out)
    assert out.getvalue().splitlines() == ["       102 busybox          256M         1G      100"]


CLI_POOL = "198.18.65.0/24"  # this test's own: routed only inside the machine (unreachable route)


@pytest.mark.integration
def test_vzctl_set_ipadd_and_ipdel_print_what_the_node_did(stack, node, tenant):
    from panel.models import IPAddress, Job
    from panel.services import network as net
    from tests.conftest import run

    V = str(settings.HAKO_FIRST_VEID)
    net.pool_create(name="cli4", network=CLI_POOL, nodes=[node], range_start="198.18.65.10",
                    range_end="198.18.65.20")
    run(Job.objects.filter(kind="node_config").latest("created_at"))
    try:
        out = manage(stack, "vzctl", "create", V, "--ostemplate", "busybox", "--tenant", tenant.slug)
        assert out.returncode == 0, out.stderr
        out = manage(stack, "vzctl", "start", V)
        assert out.returncode == 0 and "Adding IP address(es): 198.18.65.10" in out.stdout.splitlines(), out

        out = manage(stack, "vzctl", "set", V, "--ipadd", "198.18.65.15")
        assert out.returncode == 0, out.stderr
        lines = out.stdout.splitlines()
        assert "Adding IP address(es): 198.18.65.15" in lines and f"Saved parameters for VE {V}" in lines, lines
        assert VE.objects.get(veid=int(V)).addresses == ["198.18.65.10", "198.18.65.15"]
        assert manage(stack, "vzlist", "-H", "-o", "veid,ip", V).stdout.split() == [V, "198.18.65.10", "198.18.65.15"]

        out = manage(stack, "vzctl", "set", V, "--ipdel", "198.18.65.15")
        assert out.returncode == 0, out.stderr
        assert "Deleting IP address(es): 198.18.65.15" in out.stdout.splitlines(), out.stdout
        assert VE.objects.get(veid=int(V)).addresses == ["198.18.65.10"]
        assert not IPAddress.objects.filter(address="198.18.65.15").exists()

        # Bad addresses: a clear message, a non-zero exit, nothing reserved or queued.
        jobs = Job.objects.count()
        for bad, message in (("1.2.3", "'1.2.3' is not an IP address"),
                             ("192.0.2.7", f"192.0.2.7 is not in a pool of node {node.name}"),
                             ("198.18.65.10", f"198.18.65.10 is already assigned to VE {V}"),
                             ("198.18.65.3", f"198.18.65.3 is not in a pool of node {node.name}")):
            out = manage(stack, "vzctl", "set", V, "--ipadd", bad)
            assert out.returncode != 0 and message in out.stderr, (bad, out.stderr)
            assert "Traceback" not in out.stderr
        out = manage(stack, "vzctl", "set", V, "--ipdel", "198.18.65.11")
        assert out.returncode != 0 and f"198.18.65.11 is not an address of VE {V}" in out.stderr, out.stderr
        assert Job.objects.count() == jobs
        assert list(IPAddress.objects.values_list("address", flat=True)) == ["198.18.65.10"]
        assert manage(stack, "vzctl", "destroy", V).returncode == 0
    finally:
        subprocess.run(["ip", "route", "del", "unreachable", CLI_POOL], capture_output=True)
