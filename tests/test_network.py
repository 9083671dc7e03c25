"""venet-style routed networking: pools, venet0 inside, routes and anti-spoofing outside,
live --ipadd/--ipdel, traffic counters, shaping. Traffic goes only to addresses inside the
VEs these tests create (198.18.10.0/24, fd00:10::/64), routed only inside this machine."""
import concurrent.futures
import socket
import subprocess
import time
import urllib.request

import pytest
from django.db import connection

from panel.models import VE, AuditEvent, IPAddress, Job, Tenant
from panel.services import network as net
from panel.services import ves as svc
from panel.services.errors import Conflict, InvalidInput, ServiceError, Unavailable
from tests.conftest import run
from tests.harness import wait_for

POOL4, POOL6 = "198.18.10.0/24", "fd00:10::/64"


def sh(ve, script, timeout=30):
    return run(svc.ve_exec(ve=ve, argv=["sh", "-c", script], timeout=timeout)).result


def host(*argv, check=True):
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=60, check=check)


@pytest.fixture
def pools(node):
    p4 = net.pool_create(name="t4", network=POOL4, nodes=[node], range_start="198.18.10.10",
                         range_end="198.18.10.99")
    p6 = net.pool_create(name="t6", network=POOL6, nodes=[node])
    config = Job.objects.filter(kind="node_config").order_by("-created_at").first()
    run(config)
    yield p4, p6
    for cidr in (POOL4, POOL6):
        host("ip", "route", "del", "unreachable", cidr, check=False)


def started(tenant, **kw):
    ve = VE.objects.get(pk=run(svc.ve_create(tenant=tenant, template="busybox", **kw)).ve_id)
    run(svc.ve_start(ve=ve))
    ve.refresh_from_db()
    return ve


def icmp_in_echos(ve) -> int:
    lines = sh(ve, "cat /proc/net/snmp")["output"].splitlines()
    head, vals = [line.split() for line in lines if line.startswith("Icmp:")][:2]
    return int(vals[head.index("InEchos")])


@pytest.mark.integration
def test_ves_get_routed_addresses_and_reach_each_other(stack, node, tenant, pools):
    a = started(tenant, hostname="a.example.com", nameservers=["198.18.10.1"], searchdomain="example.com")
    b = started(tenant)
    assert a.addresses == ["198.18.10.10", "fd00:10::1"] and b.addresses == ["198.18.10.11", "fd00:10::2"]
    ip = sh(a, "ip addr show venet0")["output"]
    assert "inet 198.18.10.10/32" in ip and "inet6 fd00:10::1/128" in ip
    assert "default via 169.254.0.1 dev venet0" in sh(a, "ip route")["output"]
    hosts = sh(a, "cat /etc/hosts /etc/resolv.conf /etc/hostname")["output"]
    assert "198.18.10.10 a.example.com a" in hosts and "nameserver 198.18.10.1" in hosts
    assert "search example.com" in hosts

    # VE to VE, both families
    assert sh(a, "ping -c 1 -W 3 198.18.10.11")["exit_code"] == 0
    assert sh(a, "ping -6 -c 1 -W 3 fd00:10::2")["exit_code"] == 0
    # The host reaches a TCP service in a VE.
    sh(a, "mkdir -p /www && echo hello-from-ve > /www/index.html && httpd -p 80 -h /www")
    body = urllib.request.urlopen("http://198.18.10.10/", timeout=10).read()
    assert body == b"hello-from-ve\n"
    # Host routes and the pool's safety net
    assert "198.18.10.10 dev vz%d" % a.veid in host("ip", "route", "show", "198.18.10.10").stdout
    assert host("ip", "route", "get", "198.18.10.200", check=False).returncode != 0  # unreachable


@pytest.mark.integration
def test_the_gateway_survives_a_carrier_flap(stack, node, tenant, pools):
    """A carrier change on the VE's veth (its venet0 taken down and up inside, or links
    coming and going around a stop and a start) must not cost the VE its gateway: the
    kernel flushes proxy-ARP entries on carrier loss unless eviction is off."""
    ve = started(tenant)
    assert "169.254.0.1 " in host("ip", "neigh", "show", "proxy", "dev", f"vz{ve.veid}").stdout
    assert host("cat", f"/proc/sys/net/ipv4/conf/vz{ve.veid}/arp_evict_nocarrier").stdout.strip() == "0"
    flap = sh(ve, "ip link set venet0 down && sleep 1 && ip link set venet0 up && "
                  "ip route replace 169.254.0.1 dev venet0 scope link && "
                  "ip route replace default via 169.254.0.1 dev venet0")
    assert flap["exit_code"] == 0, flap
    wait_for(lambda: host("busybox", "ping", "-c", "1", "-W", "2", ve.addresses[0], check=False).returncode == 0,
             15, what="the VE answering after the flap")
    assert "169.254.0.1 " in host("ip", "neigh", "show", "proxy", "dev", f"vz{ve.veid}").stdout


@pytest.mark.integration
def test_a_spoofed_source_does_not_arrive(stack, node, tenant, pools):
    a, b = started(tenant), started(tenant)
    sh(a, "ip addr add 198.18.10.200/32 dev venet0")  # root in the VE can add it inside...
    before = icmp_in_echos(b)
    sh(a, "ping -c 3 -W 1 -I 198.18.10.200 198.18.10.11 || true")
    assert icmp_in_echos(b) == before, "a packet with a forged source reached the neighbour"
    sh(a, "ping -c 2 -W 2 198.18.10.11")
    assert icmp_in_echos(b) >= before + 2, "legitimate pings must arrive (control)"


@pytest.mark.integration
def test_ipadd_and_ipdel_take_effect_live_and_destroy_leaves_nothing(stack, node, tenant, pools):
    a = started(tenant)
    run(net.ve_ipadd(ve=a, addresses=["198.18.10.50"]))
    a.refresh_from_db()
    assert "198.18.10.50" in a.addresses
    assert "inet 198.18.10.50/32" in sh(a, "ip addr show venet0")["output"]
    assert host("busybox", "ping", "-c", "1", "-W", "3", "198.18.10.50").returncode == 0
    run(net.ve_ipdel(ve=a, addresses=["198.18.10.50"]))
    a.refresh_from_db()
    assert "198.18.10.50" not in a.addresses
    assert "198.18.10.50" not in sh(a, "ip addr show venet0")["output"]
    assert not IPAddress.objects.filter(address="198.18.10.50").exists()
    assert "vz" not in host("ip", "route", "show", "198.18.10.50").stdout

    # A reboot from inside the VE brings its addresses back (LXC router mode re-plumbs).
    sh(a, "reboot")
    time.sleep(2)
    wait_for(lambda: host("busybox", "ping", "-c", "1", "-W", "1", a.addresses[0], check=False).returncode == 0,
             30, interval=0.5, what="the VE answering after its own reboot")

    addresses = list(a.addresses)
    run(svc.ve_destroy(ve=a))
    assert host("ip", "link", "show", f"vz{a.veid}", check=False).returncode != 0
    assert host("ip", "link", "show", f"vzi{a.veid}", check=False).returncode != 0
    for addr in addresses:
        assert "vz" not in host("ip", "-6" if ":" in addr else "-4", "route", "show", addr).stdout
    assert not IPAddress.objects.filter(ve=a).exists(), "addresses are released at destroy"


def _connects(address: str, port: int) -> bool:
    try:
        socket.create_connection((address, port), timeout=2).close()
        return True
    except OSError:
        return False


@pytest.mark.integration
def test_traffic_counters_and_shaping(stack, node, tenant, pools):
    a = started(tenant)
    sh(a, "mkdir -p /www && head -c 2000000 /dev/zero > /www/blob && httpd -p 80 -h /www")
    # A port is only proven open by a connect from where the client will be.
    wait_for(lambda: _connects(a.addresses[0], 80), 15, what="httpd in the VE accepting from the host")
    before = VE.objects.get(pk=a.pk).traffic.get("out_bytes", 0)
    data = urllib.request.urlopen(f"http://{a.addresses[0]}/blob", timeout=30).read()
    assert len(data) == 2_000_000
    host("busybox", "ping", "-c", "5", "-s", "20000", "-W", "2", a.addresses[0])
    wait_for(lambda: VE.objects.get(pk=a.pk).traffic.get("out_bytes", 0) - before >= 2_000_000, 15,
             what="out_bytes to grow by the 2 MB the VE sent")
    wait_for(lambda: VE.objects.get(pk=a.pk).traffic.get("in_bytes", 0) >= 5 * 20000, 15,
             what="in_bytes to grow by the 100 kB of pings the VE received")

    # Shaping from the VE at 8 Mbit/s: the same 2 MB now takes about 2 s.
    run(svc.ve_set(ve=a, rate_out="8M", rate_in="20M"))
    assert "tbf" in host("tc", "qdisc", "show", "dev", f"vz{a.veid}").stdout
    t = time.monotonic()
    urllib.request.urlopen(f"http://{a.addresses[0]}/blob", timeout=60).read()
    elapsed = time.monotonic() - t
    assert elapsed >= 1.5, f"2 MB at 8 Mbit/s took only {elapsed:.2f}s"
    # Limits live on the host side; the VE sees no qdisc of its own to remove.
    assert "tbf" not in sh(a, "cat /proc/net/dev; ls /sys/class/net")["output"]


def test_hostile_addresses_are_refused_and_nothing_leaks(node, tenant, other_tenant, pools):
    theirs = VE.objects.get(pk=svc.ve_create(tenant=other_tenant, template="busybox",
                                             addresses=["198.18.10.20"]).ve_id)
    for bad, error in [(["1.2.3"], InvalidInput), (["198.18.10.21/24"], InvalidInput), (["::g"], InvalidInput),
                       (["198.18.10.21; reboot"], InvalidInput), (["192.0.2.55"], InvalidInput),
                       (["198.18.10.5"], InvalidInput),  # in the network but outside the pool's range
                       (["198.18.10.20"], Conflict),  # another tenant's
                       (["198.18.10.21", "198.18.10.21"], InvalidInput), ("198.18.10.21", InvalidInput)]:
        before = (VE.objects.count(), IPAddress.objects.count(), AuditEvent.objects.count())
        with pytest.raises(error):
            svc.ve_create(tenant=tenant, template="busybox", addresses=bad)
        assert (VE.objects.count(), IPAddress.objects.count(), AuditEvent.objects.count()) == before, bad
    for bad in ("10.0.0.0/33", "nonsense", "198.18.10.0/24", "198.18.10.128/25"):
        with pytest.raises(ServiceError):
            net.pool_create(name="bad", network=bad, nodes=[node])
    with pytest.raises(InvalidInput):
        svc.ve_create(tenant=tenant, template="busybox", nameservers=["not-an-ip"])
    with pytest.raises(InvalidInput):
        svc.ve_create(tenant=tenant, template="busybox", rate_in="fast")
    assert IPAddress.objects.get().ve == theirs


def test_allocation_is_unique_under_concurrent_creates_and_exhaustion_is_clear(node, tenant, pools):
    p4, p6 = pools
    p4.range_end = "198.18.10.17"  # 8 addresses
    p4.save()

    def create(i):
        try:
            return svc.ve_create(tenant=Tenant.objects.get(pk=tenant.pk), template="busybox").ve.addresses
        except ServiceError as e:
            return e
        finally:
            connection.close()

    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        results = list(pool.map(create, range(12)))
    got = [r for r in results if isinstance(r, list)]
    errors = [r for r in results if isinstance(r, Exception)]
    v4 = [a[0] for a in got]
    assert len(v4) == len(set(v4)) == 8, results
    assert len(errors) == 4 and all(isinstance(e, Unavailable) and "exhausted" in e.message for e in errors)
    assert VE.objects.count() == 8 and IPAddress.objects.count() == 16
