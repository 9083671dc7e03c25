"""venet-style routed networking: pools, venet0 inside, routes and anti-spoofing outside,
live --ipadd/--ipdel, traffic counters, shaping. Traffic goes only to addresses inside the
VEs these tests create (198.18.10.0/24, fd00:10::/64), routed only inside this machine."""
import concurrent.futures
import ipaddress
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
    wait_for(lambda: _connects("fd00:10::1", 80), 15, what="httpd in the VE accepting over IPv6")
    assert urllib.request.urlopen("http://[fd00:10::1]/", timeout=10).read() == b"hello-from-ve\n"
    # Host routes and the pools' safety net, both families
    assert "198.18.10.10 dev vz%d" % a.veid in host("ip", "route", "show", "198.18.10.10").stdout
    assert "fd00:10::1 dev vz%d" % a.veid in host("ip", "-6", "route", "show", "fd00:10::1").stdout
    assert host("ip", "route", "get", "198.18.10.200", check=False).returncode != 0  # unreachable
    assert "unreachable 198.18.10.0/24" in host("ip", "route", "show", "table", "all", "198.18.10.0/24").stdout
    assert "unreachable fd00:10::/64" in host("ip", "-6", "route", "show", "table", "all", "fd00:10::/64").stdout
    assert host("ip", "-6", "route", "get", "fd00:10::ff", check=False).returncode != 0


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


def icmp6_in_echos(ve) -> int:
    for line in sh(ve, "cat /proc/net/snmp6")["output"].splitlines():
        if line.startswith("Icmp6InEchos "):
            return int(line.split()[1])
    raise AssertionError("no Icmp6InEchos in the VE's /proc/net/snmp6")


def plumbing(ve) -> dict:
    """What plumb sets up for a VE, on the host and inside (its veth's ifindex apart)."""
    v = ve.veid
    sysctl = {k: host("cat", f"/proc/sys/net/{k.format(f'vz{v}')}").stdout.strip()
              for k in ("ipv4/neigh/{}/proxy_delay", "ipv6/neigh/{}/proxy_delay",
                        "ipv4/conf/{}/arp_evict_nocarrier", "ipv6/conf/{}/ndisc_evict_nocarrier")}
    proxies = sorted(line.split()[0] for fam in ("-4", "-6")
                     for line in host("ip", fam, "neigh", "show", "proxy", "dev", f"vz{v}").stdout.splitlines())
    routes = [host("ip", "-6" if ":" in a else "-4", "route", "show", a).stdout.split()[:3] for a in ve.addresses]
    # address, ifindex, prefix length, scope, flags (IFA_F_NODAD = 0x02), device
    inside = sh(ve, "cat /proc/net/if_inet6")["output"]
    nodad = sorted(str(ipaddress.ip_interface((bytes.fromhex(f[0]), int(f[2], 16))))
                   for f in map(str.split, inside.splitlines())
                   if len(f) == 6 and f[5] == "venet0" and int(f[4], 16) & 0x02)
    nodad = ["link-local" if a.startswith("fe80:") else a for a in nodad]  # a new MAC at every start
    return {"sysctl": sysctl, "proxies": proxies, "routes": routes, "shaping": shaping(v), "nodad": nodad,
            "host_ll_nodad": "nodad" in host("ip", "-6", "addr", "show", "dev", f"vz{v}").stdout}


def ifindex(veid):
    out = host("cat", f"/sys/class/net/vz{veid}/ifindex", check=False)
    return int(out.stdout) if out.returncode == 0 else None


def answers(address: str) -> bool:
    return host("busybox", "ping", "-6" if ":" in address else "-4", "-c", "1", "-W", "1", address,
                check=False).returncode == 0


@pytest.mark.integration
def test_a_reboot_inside_the_ve_plumbs_it_as_a_start_does(stack, node, tenant, pools):
    """`reboot` in a rate-limited dual-stack VE: LXC makes a new veth, the agent's watcher
    plumbs it fully (per-interface settings, proxy entries, routes, no DAD, shaping); the VE
    answers on both families, cannot spoof, and survives a carrier flap."""
    a = started(tenant, rate_in="8M", rate_out="4M")
    b = started(tenant)
    want = plumbing(a)
    assert want["sysctl"] == {k: "0" for k in want["sysctl"]}, want
    assert want["proxies"] == ["169.254.0.1", "fe80::1"] and want["shaping"] == ("8Mbit", "4Mbit")
    assert want["nodad"] == ["fd00:10::1/128", "link-local"], want
    assert want["host_ll_nodad"]
    old = ifindex(a.veid)
    run(svc.ve_exec(ve=a, argv=["reboot"], timeout=15))
    wait_for(lambda: ifindex(a.veid) not in (None, old), 60, interval=0.2, what="the VE's new veth")
    for address in a.addresses:
        wait_for(lambda: answers(address), 30, interval=0.5, what=f"the VE answering on {address} after its reboot")
    got = []
    try:
        wait_for(lambda: got.append(plumbing(a)) or got[-1] == want, 30, what="the rebooted VE plumbed as after a start")
    except AssertionError:
        assert got[-1] == want  # shows what differs
    assert host("cat", f"/proc/sys/net/ipv4/conf/vz{a.veid}/arp_evict_nocarrier").stdout.strip() == "0"

    # Anti-spoofing still holds for the new veth.
    before = icmp_in_echos(b)
    sh(a, "ip addr add 198.18.10.200/32 dev venet0; ping -c 3 -W 1 -I 198.18.10.200 198.18.10.11 || true")
    assert icmp_in_echos(b) == before, "a forged source got through after the reboot"
    # A carrier flap afterwards costs the VE nothing.
    flap = sh(a, "ip link set venet0 down && sleep 1 && ip link set venet0 up && "
                 "ip route replace 169.254.0.1 dev venet0 scope link && "
                 "ip route replace default via 169.254.0.1 dev venet0 && "
                 # a link going down drops its IPv6 addresses: the VE's network setup re-adds them
                 "ip -6 addr add fd00:10::1/128 dev venet0 && "
                 "ip -6 route replace default via fe80::1 dev venet0")
    assert flap["exit_code"] == 0, flap
    for address in a.addresses:
        wait_for(lambda: answers(address), 15, what=f"the VE answering on {address} after a carrier flap")
    assert plumbing(a)["proxies"] == ["169.254.0.1", "fe80::1"]
    assert shaping(a.veid) == ("8Mbit", "4Mbit")


def leftovers(veid, addresses) -> list[str]:
    """Whatever of a VE's network is still on the host."""
    found = []
    for name in (f"vz{veid}", f"vzi{veid}"):
        if host("ip", "link", "show", name, check=False).returncode == 0:
            found.append(f"link {name}")
    for fam in ("-4", "-6"):
        routes = host("ip", fam, "route", "show", "table", "all").stdout
        found += [f"route {line}" for line in routes.splitlines()
                  if any(line.split()[:1] == [a] for a in addresses) or f"vz{veid} " in line + " "]
        found += [f"proxy {line}" for line in host("ip", fam, "neigh", "show", "proxy").stdout.splitlines()
                  if f"vz{veid} " in line + " "]
    rules = host("nft", "list", "ruleset").stdout
    found += [f"nft {w}" for w in [f"vz{veid}", *addresses] if w in rules]
    return found


@pytest.mark.integration
def test_stop_destroy_and_a_halt_inside_leave_nothing_of_a_shaped_ve(stack, node, tenant, pools):
    a = started(tenant, rate_in="8M", rate_out="4M")
    addresses = list(a.addresses)
    assert set(leftovers(a.veid, addresses)) >= {f"link vz{a.veid}", f"link vzi{a.veid}"}  # control
    run(svc.ve_stop(ve=a))
    assert leftovers(a.veid, addresses) == []

    # The VE halts itself: no stop job; the agent notices its veth gone and cleans up.
    for halt in ("poweroff", "halt"):
        run(svc.ve_start(ve=a))
        assert shaping(a.veid) == ("8Mbit", "4Mbit")
        svc.ve_exec(ve=a, argv=[halt], timeout=15)
        wait_for(lambda: leftovers(a.veid, addresses) == [], 30, interval=0.5,
                 what=f"the host side of a VE that ran {halt} inside to be gone")
        wait_for(lambda: VE.objects.get(pk=a.pk).state == "stopped", 30, what="the panel to see it stopped")

    run(svc.ve_start(ve=a))
    assert leftovers(a.veid, addresses)
    run(svc.ve_destroy(ve=a))
    assert leftovers(a.veid, addresses) == []


@pytest.mark.integration
def test_a_spoofed_source_does_not_arrive(stack, node, tenant, pools):
    """A VE's root forges the source address (an unassigned one, and its neighbour's, in
    both families): nothing arrives at a third VE; its own addresses do (control)."""
    a, b, c = started(tenant), started(tenant), started(tenant)
    assert b.addresses == ["198.18.10.11", "fd00:10::2"] and c.addresses == ["198.18.10.12", "fd00:10::3"]
    # root in the VE can add any address inside...
    added = sh(a, "ip addr add 198.18.10.200/32 dev venet0 && ip addr add 198.18.10.11/32 dev venet0 && "
                  "ip -6 addr add fd00:10::200/128 dev venet0 && ip -6 addr add fd00:10::2/128 dev venet0")
    assert added["exit_code"] == 0, added
    wait_for(lambda: "tentative" not in sh(a, "ip -6 addr show dev venet0")["output"], 10,
             what="the forged IPv6 addresses usable inside (DAD done)")
    before4, before6 = icmp_in_echos(c), icmp6_in_echos(c)
    for forged, target in (("198.18.10.200", "198.18.10.12"), ("198.18.10.11", "198.18.10.12"),
                           ("fd00:10::200", "fd00:10::3"), ("fd00:10::2", "fd00:10::3")):
        out = sh(a, f"ping {'-6' if ':' in target else ''} -c 3 -W 1 -I {forged} {target}")["output"]
        assert "3 packets transmitted" in out, out  # they left the VE: the host dropped them
    assert icmp_in_echos(c) == before4, "an IPv4 packet with a forged source reached the neighbour"
    assert icmp6_in_echos(c) == before6, "an IPv6 packet with a forged source reached the neighbour"
    # ... and the forged addresses still route to their owners, not to the forger.
    assert f"dev vz{b.veid}" in host("ip", "route", "get", "198.18.10.11").stdout
    sh(a, "ping -c 2 -W 2 -I 198.18.10.10 198.18.10.12")
    sh(a, "ping -6 -c 2 -W 2 -I fd00:10::1 fd00:10::3")
    assert icmp_in_echos(c) >= before4 + 2, "legitimate pings must arrive (control)"
    assert icmp6_in_echos(c) >= before6 + 2, "legitimate IPv6 pings must arrive (control)"


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

    # /etc/hosts names the VE's first address: ipdel of it rewrites the file live, and so
    # do new nameservers and a search domain.
    first = a.addresses[0]
    run(net.ve_ipadd(ve=a, addresses=["198.18.10.51"]))
    run(net.ve_ipdel(ve=a, addresses=[first]))
    a.refresh_from_db()
    hosts = sh(a, "cat /etc/hosts")["output"]
    assert f"{a.addresses[0]} {a.hostname}" in hosts and first not in hosts, hosts
    run(svc.ve_set(ve=a, nameservers=["198.18.10.1", "fd00:10::53"], searchdomain="corp.example"))
    resolv = sh(a, "cat /etc/resolv.conf")["output"]
    assert "nameserver 198.18.10.1" in resolv and "nameserver fd00:10::53" in resolv
    assert "search corp.example" in resolv
    assert not sh(a, "test -L /etc/resolv.conf")["exit_code"] == 0

    # A VE's first IPv6 address, added live to a VE started with IPv4 only.
    v4only = started(tenant, addresses=["198.18.10.40"])
    assert v4only.addresses == ["198.18.10.40"]
    run(net.ve_ipadd(ve=v4only, addresses=["fd00:10::40"]))
    assert "inet6 fd00:10::40/128" in sh(v4only, "ip -6 addr show venet0")["output"]
    wait_for(lambda: host("busybox", "ping", "-6", "-c", "1", "-W", "1", "fd00:10::40", check=False).returncode == 0,
             15, what="the VE answering on its first IPv6 address")
    sh(v4only, "mkdir -p /www && echo v6-live > /www/index.html && httpd -p 80 -h /www")
    wait_for(lambda: _connects("fd00:10::40", 80), 15, what="httpd in the VE over its new IPv6 address")

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
def test_traffic_counters(stack, node, tenant, pools):
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


def traffic(ve) -> dict:
    return {k: VE.objects.get(pk=ve.pk).traffic.get(k, 0) for k in ("in_bytes", "out_bytes", "in_packets", "out_packets")}


@pytest.mark.integration
def test_traffic_just_before_a_stop_is_counted_and_a_restart_continues_the_total(stack, node, tenant, pools):
    """The stop reads the veth's counters before the veth goes (the job's result); after a
    start the new veth's counters add to the total: never a drop, never counted twice."""
    a = started(tenant)
    serve = "mkdir -p /www && head -c 2000000 /dev/zero > /www/blob && httpd -p 80 -h /www"
    sh(a, serve)
    wait_for(lambda: _connects(a.addresses[0], 80), 15, what="httpd in the VE accepting from the host")
    wait_for(lambda: VE.objects.get(pk=a.pk).traffic.get("links"), 15, what="a heartbeat with the VE's counters")
    t0 = traffic(a)
    assert len(urllib.request.urlopen(f"http://{a.addresses[0]}/blob", timeout=30).read()) == 2_000_000
    run(svc.ve_stop(ve=a))  # at once: no heartbeat in between needs to have seen the download
    t1 = traffic(a)
    assert t1["out_bytes"] - t0["out_bytes"] >= 2_000_000, (t0, t1)
    assert t1["out_packets"] > t0["out_packets"] and t1["in_packets"] > t0["in_packets"]
    assert t1["in_bytes"] > t0["in_bytes"]

    run(svc.ve_start(ve=a))
    sh(a, "httpd -p 80 -h /www")
    wait_for(lambda: _connects(a.addresses[0], 80), 15, what="httpd in the VE accepting after the restart")
    samples = [traffic(a)]
    assert len(urllib.request.urlopen(f"http://{a.addresses[0]}/blob", timeout=30).read()) == 2_000_000

    def grown():
        samples.append(traffic(a))
        return samples[-1]["out_bytes"] - t1["out_bytes"] >= 2_000_000
    wait_for(grown, 15, interval=0.2, what="out_bytes to grow by the 2 MB sent after the restart")
    time.sleep(1.5)  # a few more heartbeats: the finals of the first veth must not count again
    samples.append(traffic(a))
    for prev, cur in zip([t0, t1] + samples, [t1] + samples):
        assert all(cur[k] >= prev[k] for k in cur), (prev, cur)  # never drops
    t2 = samples[-1]
    assert t2["out_packets"] > t1["out_packets"] and t2["in_packets"] > t1["in_packets"]
    # Two downloads of 2 MB plus TCP/IP overhead; counting the first veth twice adds 2 MB more.
    assert 4_000_000 <= t2["out_bytes"] - t0["out_bytes"] < 4_600_000, (t0, t1, t2)

    # The VE halts itself right after receiving 100 kB: its veth's last counters (the
    # agent's watcher) still reach the total, once.
    host("busybox", "ping", "-c", "5", "-s", "20000", "-W", "2", a.addresses[0])
    svc.ve_exec(ve=a, argv=["poweroff"], timeout=15)
    wait_for(lambda: VE.objects.get(pk=a.pk).state == "stopped", 30, what="the panel to see the VE stopped")
    wait_for(lambda: traffic(a)["in_bytes"] - t2["in_bytes"] >= 5 * 20000, 15,
             what="in_bytes to count the pings received before the halt")
    time.sleep(1.5)
    t3 = traffic(a)
    assert all(t3[k] >= t2[k] for k in t3) and t3["in_bytes"] - t2["in_bytes"] < 5 * 20000 + 60_000, (t2, t3)
    assert t3["out_bytes"] - t0["out_bytes"] < 4_800_000, (t0, t3)


def test_traffic_accumulation_names_links_and_counts_finals_once():
    """Counters of several veths (links), finals repeated and out of order: each byte once."""
    from panel.services.jobs import accumulate_traffic

    def raw(link, i, o):
        return {"in_bytes": i, "out_bytes": o, "in_packets": i // 10, "out_packets": o // 10, "link": link}

    t = accumulate_traffic({}, raw("b-5", 100, 1000))
    t = accumulate_traffic(t, raw("b-5", 150, 1500))
    t = accumulate_traffic(t, raw("b-5", 170, 0))  # final from the kernel: rx already gone
    t = accumulate_traffic(t, raw("b-9", 10, 20))  # the next start: a new base
    for again in (raw("b-5", 170, 1600), raw("b-5", 150, 1500), raw("b-9", 10, 20)):
        t = accumulate_traffic(t, again)  # a stop result after the heartbeat, redeliveries
    assert (t["in_bytes"], t["out_bytes"]) == (180, 1620)
    assert accumulate_traffic(t, {**raw("b-9", 1, 1), "link": 5}) == t  # malformed: nothing
    assert accumulate_traffic(t, {**raw("b-9", 1, 1), "in_bytes": -1}) == t


def shaping(veid) -> tuple:
    """(rate to the VE, rate from it) as the host's qdiscs say, "" where there is none."""
    def rate(dev):
        out = host("tc", "qdisc", "show", "dev", dev, check=False).stdout
        words = out.split()
        return words[words.index("rate") + 1] if "tbf" in out and "rate" in words else ""
    return rate(f"vz{veid}"), rate(f"vzi{veid}")


SINK = "#!/bin/sh\ncat > /dev/null\necho done\n"


def _push(address: str, size: int) -> float:
    """Send ``size`` bytes to the sink in the VE (port 5001); seconds until it had all."""
    t = time.monotonic()
    with socket.create_connection((address, 5001), timeout=30) as s:
        s.sendall(b"\0" * size)
        s.shutdown(socket.SHUT_WR)
        reply = b""
        while chunk := s.recv(100):
            reply += chunk
    assert reply == b"done\n", reply
    return time.monotonic() - t


def _pull(address: str, size: int) -> float:
    t = time.monotonic()
    assert len(urllib.request.urlopen(f"http://{address}/blob", timeout=60).read()) == size
    return time.monotonic() - t


@pytest.mark.integration
def test_shaping_is_measured_both_ways_and_the_ve_cannot_undo_it(stack, node, tenant, pools):
    """3 MB at 8 Mbit/s take about 3 s in either direction (unshaped: milliseconds); the
    VE's root trying to remove or change the limit changes nothing; a restart keeps it."""
    size, rate = 3_000_000, 8_000_000
    floor = 0.6 * size * 8 / rate
    a = started(tenant, rate_in="8M", rate_out="8M")
    assert shaping(a.veid) == ("8Mbit", "8Mbit")
    setup = (f"mkdir -p /www && head -c {size} /dev/zero > /www/blob && httpd -p 80 -h /www && "
             f"printf '{SINK}' > /sink && chmod 755 /sink && "
             "(nc -ll -p 5001 -e /sink </dev/null >/dev/null 2>&1 &)")
    assert sh(a, setup)["exit_code"] == 0
    addr = a.addresses[0]
    wait_for(lambda: _connects(addr, 80) and _connects(addr, 5001), 15, what="httpd and the sink in the VE")

    def measure():
        pushed, pulled = _push(addr, size), _pull(addr, size)
        assert pushed >= floor, f"{size} bytes to the VE at 8 Mbit/s took only {pushed:.2f}s"
        assert pulled >= floor, f"{size} bytes from the VE at 8 Mbit/s took only {pulled:.2f}s"
        assert pushed < 20 and pulled < 20
    measure()

    # The VE's root tries to undo it: there is nothing of it to see or touch inside.
    tries = sh(a, "ls /sys/class/net; tc qdisc del dev venet0 root; tc qdisc del dev venet0 ingress; "
                  "ip link set venet0 txqueuelen 100000; ip link del vz%d; ip link del vzi%d; true" % (a.veid, a.veid))
    assert f"vz{a.veid}" not in tries["output"].split() and "venet0" in tries["output"]
    assert shaping(a.veid) == ("8Mbit", "8Mbit")
    measure()

    # A limit set live changes the rate without a window of none.
    run(svc.ve_set(ve=a, rate_in="16M", rate_out="4M"))
    assert shaping(a.veid) == ("16Mbit", "4Mbit")
    run(svc.ve_restart(ve=a))
    assert shaping(a.veid) == ("16Mbit", "4Mbit")


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
