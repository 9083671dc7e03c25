"""venet-style routed networking for VEs, on the host side, through pyroute2.

Each VE gets a veth pair: ``venet0`` inside carries the VE's addresses as /32 and /128 with
a default route to a link-local gateway (169.254.0.1, fe80::1); ``vz<veid>`` stays on the
host. LXC's veth *router* mode creates the pair and, at every start (also a reboot from
inside the VE), the host routes to the VE's addresses and the proxy ARP/NDP entries for
the gateways, in C, before the VE's init runs. Everything the panel changes live goes
through pyroute2 here: address add/remove, host routes, traffic counters and shaping.

Host-side rules that the VE's root cannot undo:

* anti-spoofing: one nftables rule drops any packet arriving from a ``vz*`` interface
  whose source address does not route back through that same interface (strict reverse
  path), so a VE can only send from the addresses routed to it;
* shaping: traffic to the VE is shaped by a TBF on ``vz<veid>``; traffic from the VE is
  redirected (mirred) from the ingress of ``vz<veid>`` to an IFB device ``vzi<veid>`` and
  shaped there. These kernels load no modules: TBF, ingress, u32, mirred and IFB are
  built in (police and gact are not, hence IFB);
* pools never leak: every pool a node serves gets an ``unreachable`` route, so an address
  of a stopped or unassigned VE never routes off the machine.
"""
from __future__ import annotations

import ipaddress
import logging
import subprocess
import threading

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

log = logging.getLogger("hako.network")

GATEWAY4 = "169.254.0.1"
GATEWAY6 = "fe80::1"
ETH_P_ALL = 0x0003
IFA_F_NODAD = 0x02
NTF_PROXY = 0x08
NFT_TABLE = "hako_antispoof"


class NetworkError(RuntimeError):
    pass


def _boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()[:8]
    except OSError:
        return "0"


# A VE's counters live on its veth, which is new at every start (also a reboot from
# inside): "<host boot>-<ifindex>" names one veth for the panel, which counts each link's
# counters from zero (ifindexes only grow until the host reboots, hence the boot id).
BOOT_ID = _boot_id()


def link_id(ifindex: int) -> str:
    return f"{BOOT_ID}-{ifindex}"


def traffic_of(ifindex: int, stats: dict) -> dict:
    """A veth's counters in the VE's terms (host rx = VE out), with the link's identity."""
    return {"in_bytes": stats.get("tx_bytes", 0), "out_bytes": stats.get("rx_bytes", 0),
            "in_packets": stats.get("tx_packets", 0), "out_packets": stats.get("rx_packets", 0),
            "link": link_id(ifindex)}


def _mirred_targets(nla, out: list) -> list:
    """The ifindexes that the mirred actions of a tc filter message redirect to."""
    for name, val in nla.get("attrs", []) or []:
        if name == "TCA_MIRRED_PARMS":
            out.append(val["ifindex"])
        elif hasattr(val, "get"):
            _mirred_targets(val, out)
    return out


def _tbf_rate(qdiscs) -> int | None:
    """Rate in bytes/s of our TBF at the root among an interface's ``qdiscs``; None when
    the root is not ours."""
    for q in qdiscs:
        if q["parent"] == 0xFFFFFFFF and q.get_attr("TCA_KIND") == "tbf" and q["handle"] == 0x10000:
            return (q.get_nested("TCA_OPTIONS", "TCA_TBF_PARMS") or {}).get("rate")
    return None


def host_ifname(veid: int) -> str:
    return f"vz{veid}"


def ifb_ifname(veid: int) -> str:
    return f"vzi{veid}"


def lxc_config_lines(veid: int, addresses: list[str]) -> list[str]:
    """LXC keys for the VE's venet0 (every value derived from validated addresses)."""
    lines = [
        "lxc.net.0.type = veth",
        "lxc.net.0.veth.mode = router",
        f"lxc.net.0.veth.pair = {host_ifname(veid)}",
        "lxc.net.0.name = venet0",
        "lxc.net.0.flags = up",
    ]
    v4 = [a for a in addresses if ipaddress.ip_address(a).version == 4]
    v6 = [a for a in addresses if ipaddress.ip_address(a).version == 6]
    lines += [f"lxc.net.0.ipv4.address = {a}/32" for a in v4]
    lines += [f"lxc.net.0.ipv6.address = {a}/128" for a in v6]
    # A gateway only for a family the VE has addresses of (LXC aborts the start otherwise);
    # set_addresses adds the other one live when a first address of that family arrives.
    if v4:
        lines.append(f"lxc.net.0.ipv4.gateway = {GATEWAY4}")
    if v6:
        lines.append(f"lxc.net.0.ipv6.gateway = {GATEWAY6}")
    return lines


def _host_prefix(addr: str) -> str:
    return f"{addr}/{32 if ipaddress.ip_address(addr).version == 4 else 128}"


def _in_ve(pid: int, *argv: str, check: bool = True) -> str:
    """Run an iproute2 command in a VE's network namespace (argv only, no shell).

    pyroute2's NetNS forks a helper process and signals it on close, which does not mix
    with the node agent's prefork pool (a pool worker was seen dying of SIGTERM); nsenter
    keeps the VE-side changes in a plain child process.
    """
    proc = subprocess.run(["nsenter", f"--net=/proc/{pid}/ns/net", "--", *argv], capture_output=True,
                          text=True, timeout=30, cwd="/")
    if check and proc.returncode != 0:
        raise NetworkError(f"{' '.join(argv[:3])} in the VE failed: {proc.stderr.strip()[:200]}")
    return proc.stdout


def _proxy_on(ifname: str, version: int) -> None:
    """Proxy ARP (v4) or NDP (v6) on a VE's host interface: it answers for the VE's
    gateway. LXC's router mode turns it on only for a family the VE starts with."""
    key = f"ipv4/conf/{ifname}/proxy_arp" if version == 4 else f"ipv6/conf/{ifname}/proxy_ndp"
    try:
        with open(f"/proc/sys/net/{key}", "w") as f:
            f.write("1")
    except FileNotFoundError:
        pass


def _readd_nodad(ipr, index: int, addresses: list[tuple[str, int]]) -> None:
    """Re-add ``addresses`` and the interface's link-local address with IFA_F_NODAD
    (a link-local address that has the flag already is left alone: plumb runs again)."""
    targets = list(addresses) + [
        (rec.get_attr("IFA_ADDRESS"), rec["prefixlen"]) for rec in ipr.get_addr(index=index, family=10)
        if (rec.get_attr("IFA_ADDRESS") or "").startswith("fe80:")
        and not (rec.get_attr("IFA_FLAGS") or rec["flags"]) & IFA_F_NODAD]
    for a, plen in targets:
        try:
            ipr.addr("del", index=index, address=a, prefixlen=plen)
        except NetlinkError:
            pass
        ipr.addr("add", index=index, address=a, prefixlen=plen, flags=IFA_F_NODAD)


class HostNetwork:
    """Host-side network operations of one node agent."""

    def __init__(self):
        self._lock = threading.Lock()

    # --- node level --------------------------------------------------------------------
    def prepare_node(self, pools: list[str]) -> dict:
        """Forwarding on, the anti-spoofing rule in place, an unreachable route per pool."""
        for key in ("net/ipv4/ip_forward", "net/ipv6/conf/all/forwarding"):
            with open(f"/proc/sys/{key}", "w") as f:
                f.write("1")
        self.install_antispoof()
        with IPRoute() as ipr:
            for pool in pools:
                net = ipaddress.ip_network(pool, strict=False)
                try:
                    ipr.route("replace", dst=str(net.network_address), dst_len=net.prefixlen,
                              family=10 if net.version == 6 else 2, type="unreachable")
                except NetlinkError as e:
                    raise NetworkError(f"cannot install unreachable route for {net}: {e}") from None
        return {"pools": pools}

    @staticmethod
    def install_antispoof() -> None:
        """One static nftables rule: strict reverse-path check on every VE interface.

        Built from constants only; ``nft -f -`` reads it from stdin (no shell involved).
        """
        ruleset = (
            f"table inet {NFT_TABLE} {{}}\n"
            f"delete table inet {NFT_TABLE}\n"
            f"table inet {NFT_TABLE} {{\n"
            "  chain prerouting {\n"
            "    type filter hook prerouting priority raw; policy accept;\n"
            '    iifname "vz*" ip6 saddr :: accept\n'
            '    iifname "vz*" fib saddr . iif oif missing counter drop\n'
            "  }\n"
            "}\n"
        )
        proc = subprocess.run(["nft", "-f", "-"], input=ruleset.encode(), capture_output=True, timeout=30)
        if proc.returncode != 0:
            raise NetworkError(f"nft failed: {proc.stderr.decode(errors='replace').strip()}")

    # --- per VE ------------------------------------------------------------------------
    def plumb(self, veid: int, addresses: list[str], rate_in: int, rate_out: int) -> int:
        """Make the host side match the spec: routes to each address and shaping. Returns
        the ifindex of the veth it plumbed.

        Idempotent; runs after every start and whenever the VE's veth reappears. One
        netlink socket serves the whole of it: opening one costs pyroute2 about 3 ms.
        """
        ifname = host_ifname(veid)
        # Proxy ARP/NDP answers (for the VE's gateways) are delayed up to proxy_delay by
        # default (0.8 s); on a point-to-point veth there is nothing to wait for. And a
        # carrier-down event on vz<veid> must not flush the gateway's proxy entry: with
        # *_evict_nocarrier on (the default), the kernel drops proxy entries when it
        # processes a carrier change with the carrier down, and link events are processed
        # late (rate-limited to one a second) when links come and go close together (a
        # stop and a start, a migration's hand-over): LXC's entry was sometimes gone a
        # moment after the start, and the VE could not reach its gateway.
        for key, value in (("ipv4/neigh/{}/proxy_delay", "0"), ("ipv6/neigh/{}/proxy_delay", "0"),
                           ("ipv4/conf/{}/arp_evict_nocarrier", "0"),
                           ("ipv6/conf/{}/ndisc_evict_nocarrier", "0")):
            try:
                with open(f"/proc/sys/net/{key.format(ifname)}", "w") as f:
                    f.write(value)
            except FileNotFoundError:
                pass
        families = {ipaddress.ip_address(a).version for a in addresses}
        for version in families:
            _proxy_on(ifname, version)
        with IPRoute() as ipr:
            idx = ipr.link_lookup(ifname=ifname)
            if not idx:
                raise NetworkError(f"host interface {ifname} is missing")
            for addr in addresses:
                net = ipaddress.ip_network(_host_prefix(addr))
                ipr.route("replace", dst=str(net.network_address), dst_len=net.prefixlen, oif=idx[0],
                          family=10 if net.version == 6 else 2, scope=253 if net.version == 4 else 0)
            # LXC added these at the start; one flushed before the line above took effect
            # comes back here (replace: idempotent).
            for version, gateway in ((4, GATEWAY4), (6, GATEWAY6)):
                if version in families:
                    ipr.neigh("replace", dst=gateway, ifindex=idx[0], flags=NTF_PROXY,
                              family=2 if version == 4 else 10)
            self._shape(ipr, idx[0], veid, rate_in, rate_out)
        return idx[0]

    @staticmethod
    def skip_dad(veid: int, pid: int, addresses: list[str]) -> None:
        """Re-add the VE's IPv6 addresses, and the link-local addresses on both ends of
        its veth, without duplicate address detection.

        DAD means nothing on a point-to-point veth whose addresses the panel allocated
        uniquely, and it holds addresses "tentative" for a second or two after every start:
        neighbour discovery over the veth waits and the first packets stall. LXC cannot add
        addresses with IFA_F_NODAD, so we do.
        """
        v6 = [a for a in addresses if ipaddress.ip_address(a).version == 6]
        # Idempotent: plumb runs after every start and again when the VE's veth reappears;
        # an address that has "nodad" already is not removed and re-added (that would
        # drop it for a moment under a running service).
        listing = _in_ve(pid, "ip", "-6", "-o", "addr", "show", "dev", "venet0")
        have_nodad, inner_ll = set(), []
        for t in (line.split() for line in listing.splitlines()):
            if "inet6" not in t:
                continue
            a = t[t.index("inet6") + 1]
            if "nodad" in t:
                have_nodad.add(a)
            elif a.startswith("fe80:"):
                inner_ll.append(a)
        for a in [f"{x}/128" for x in v6 if f"{x}/128" not in have_nodad] + inner_ll:
            _in_ve(pid, "ip", "-6", "addr", "del", a, "dev", "venet0", check=False)
            _in_ve(pid, "ip", "-6", "addr", "add", a, "dev", "venet0", "nodad")
        with IPRoute() as ipr:
            for idx in ipr.link_lookup(ifname=host_ifname(veid)):
                _readd_nodad(ipr, idx, [])

    def unplumb(self, veid: int, running_here: bool = True) -> None:
        """Remove what outlives a stopped VE's veth (the IFB device); routes die with it.

        ``running_here``: the VE ran on this node until now. When it did not, a ``vz<veid>``
        link on this host belongs to another node's copy of the VE (two agents on one
        machine, a migration between them, a stop re-sent to the source after the target
        started): that link and its IFB are left alone."""
        with IPRoute() as ipr:
            if not running_here and ipr.link_lookup(ifname=host_ifname(veid)):
                return
            for name in (ifb_ifname(veid), host_ifname(veid)):
                for idx in ipr.link_lookup(ifname=name):
                    try:
                        ipr.link("del", index=idx)
                    except NetlinkError:
                        pass

    @staticmethod
    def leftover(veid: int) -> list[str]:
        """The host links of a VE that exist now (its veth, its IFB)."""
        with IPRoute() as ipr:
            return [n for n in (host_ifname(veid), ifb_ifname(veid)) if ipr.link_lookup(ifname=n)]

    def shape(self, veid: int, rate_in: int, rate_out: int) -> None:
        """Bandwidth limits in bits/s (0 = none): to the VE on vz<veid>, from it on the IFB."""
        ifname = host_ifname(veid)
        with IPRoute() as ipr:
            (idx,) = ipr.link_lookup(ifname=ifname) or (None,)
            if idx is None:
                raise NetworkError(f"host interface {ifname} is missing")
            self._shape(ipr, idx, veid, rate_in, rate_out)

    def _shape(self, ipr, idx: int, veid: int, rate_in: int, rate_out: int) -> None:
        """:meth:`shape` on an open netlink socket, for the veth with index ``idx``."""
        ifb = ifb_ifname(veid)
        if self._shaped_as(ipr, idx, ifb, rate_in, rate_out):
            return  # already right: no window without a limit, nothing torn down
        for handle, parent in ((0x10000, 0xFFFFFFFF), (0xFFFF0000, 0xFFFFFFF1)):  # root, ingress
            try:
                ipr.tc("del", index=idx, handle=handle, parent=parent)
            except NetlinkError:
                pass  # nothing to remove
        for i in ipr.link_lookup(ifname=ifb):
            ipr.link("del", index=i)
        if rate_in:
            ipr.tc("add", "tbf", idx, handle=0x10000, rate=f"{rate_in}bit",
                   burst=max(16 * 1024, rate_in // 8 // 50), latency="50ms")
        if rate_out:
            ipr.link("add", ifname=ifb, kind="ifb")
            (ifb_idx,) = ipr.link_lookup(ifname=ifb)
            ipr.link("set", index=ifb_idx, state="up")
            ipr.tc("add", "tbf", ifb_idx, handle=0x10000, rate=f"{rate_out}bit",
                   burst=max(16 * 1024, rate_out // 8 // 50), latency="50ms")
            ipr.tc("add", "ingress", idx, 0xFFFF0000)
            ipr.tc("add-filter", "u32", idx, parent=0xFFFF0000, protocol=ETH_P_ALL, prio=10,
                   keys=["0x0/0x0+0"], target=0x10001,
                   action={"kind": "mirred", "direction": "egress", "action": "redirect",
                           "ifindex": ifb_idx})

    @staticmethod
    def _shaped_as(ipr, idx: int, ifb: str, rate_in: int, rate_out: int) -> bool:
        """Whether ``vz<veid>`` (index ``idx``) is shaped exactly as asked already."""
        qdiscs = list(ipr.get_qdiscs(index=idx))
        if _tbf_rate(qdiscs) != (rate_in // 8 if rate_in else None):
            return False
        ifb_idx = (ipr.link_lookup(ifname=ifb) or [None])[0]
        if not rate_out:
            return ifb_idx is None and not any(q["parent"] == 0xFFFFFFF1 for q in qdiscs)
        if ifb_idx is None or _tbf_rate(ipr.get_qdiscs(index=ifb_idx)) != rate_out // 8:
            return False
        try:
            filters = ipr.get_filters(index=idx, parent=0xFFFF0000)
        except NetlinkError:
            return False
        return any(ifb_idx in _mirred_targets(f, []) for f in filters)

    def set_addresses(self, veid: int, pid: int, old: list[str], new: list[str]) -> list[str]:
        """Add and remove addresses live on a running VE: inside on venet0, routes outside."""
        added = [a for a in new if a not in old]
        removed = [a for a in old if a not in new]
        ifname = host_ifname(veid)
        for a in removed:
            _in_ve(pid, "ip", "addr", "del", _host_prefix(a), "dev", "venet0", check=False)
        for a in added:
            extra = ["nodad"] if ":" in a else []
            _in_ve(pid, "ip", "addr", "replace", _host_prefix(a), "dev", "venet0", *extra)
        for version, gateway in ((4, GATEWAY4), (6, GATEWAY6)):
            had = any(ipaddress.ip_address(a).version == version for a in old)
            has = any(ipaddress.ip_address(a).version == version for a in new)
            if has and not had:  # the family's first address: the gateway LXC did not set up
                _proxy_on(ifname, version)
                flag = "-4" if version == 4 else "-6"
                if version == 4:
                    _in_ve(pid, "ip", "-4", "route", "replace", gateway, "dev", "venet0", "scope", "link")
                _in_ve(pid, "ip", flag, "route", "replace", "default", "via", gateway, "dev", "venet0")
                with IPRoute() as ipr:
                    for idx in ipr.link_lookup(ifname=ifname):
                        try:
                            ipr.neigh("add", dst=gateway, ifindex=idx, flags=NTF_PROXY,
                                      family=2 if version == 4 else 10)
                        except NetlinkError as e:
                            if e.code != 17:
                                raise
        with IPRoute() as ipr:
            (idx,) = ipr.link_lookup(ifname=ifname) or (None,)
            for a in removed:
                net = ipaddress.ip_network(_host_prefix(a))
                try:  # the kernel matches scope and device as they were added
                    ipr.route("del", dst=str(net.network_address), dst_len=net.prefixlen, oif=idx,
                              family=10 if net.version == 6 else 2, scope=253 if net.version == 4 else 0)
                except NetlinkError:
                    pass
            if idx is not None:
                for a in added:
                    net = ipaddress.ip_network(_host_prefix(a))
                    ipr.route("replace", dst=str(net.network_address), dst_len=net.prefixlen, oif=idx,
                              family=10 if net.version == 6 else 2, scope=253 if net.version == 4 else 0)
        return [f"Adding IP address(es): {' '.join(added)}"] * bool(added) + \
               [f"Deleting IP address(es): {' '.join(removed)}"] * bool(removed)

    @staticmethod
    def ifindex(veid: int) -> int | None:
        with IPRoute() as ipr:
            found = ipr.link_lookup(ifname=host_ifname(veid))
        return found[0] if found else None

    @staticmethod
    def counters() -> dict[int, dict]:
        """Traffic of every VE from its host-side veth, in the VE's terms (host rx = VE out)."""
        out = {}
        with IPRoute() as ipr:
            for link in ipr.get_links():
                name = link.get_attr("IFLA_IFNAME") or ""
                if not (name.startswith("vz") and name[2:].isdigit()):
                    continue
                out[int(name[2:])] = traffic_of(link["index"], link.get_attr("IFLA_STATS64") or {})
        return out

    @staticmethod
    def link_counters(veid: int) -> dict | None:
        """One VE's counters (as :meth:`counters`), None when its veth is not there."""
        with IPRoute() as ipr:
            for idx in ipr.link_lookup(ifname=host_ifname(veid)):
                (link,) = ipr.get_links(idx)
                return traffic_of(idx, link.get_attr("IFLA_STATS64") or {})
        return None

    def watch_links(self, on_new_link, stop: threading.Event, on_link_gone=None) -> None:
        """Call ``on_new_link(veid, ifindex, traffic)`` for every RTM_NEWLINK of a ``vz<veid>``
        interface (a VE started, also by rebooting itself; or a flag or carrier change of
        its veth) and ``on_link_gone(veid, ifindex, traffic)`` when one goes away (a stop,
        a reboot, a halt from inside), with the last counters the kernel reported for it.

        Callbacks must return quickly: they run on the one thread reading the socket."""
        with IPRoute() as ipr:
            ipr.bind()
            while not stop.is_set():
                try:
                    msgs = ipr.get()
                except Exception:
                    log.exception("netlink watch failed")
                    return
                for msg in msgs:
                    event = msg.get("event")
                    if event not in ("RTM_NEWLINK", "RTM_DELLINK"):
                        continue
                    name = msg.get_attr("IFLA_IFNAME") or ""
                    if not (name.startswith("vz") and name[2:].isdigit()):
                        continue
                    handler = on_new_link if event == "RTM_NEWLINK" else on_link_gone
                    if handler is None:
                        continue
                    try:
                        handler(int(name[2:]), msg["index"], traffic_of(msg["index"], msg.get_attr("IFLA_STATS64") or {}))
                    except Exception:
                        log.exception("handling a link event of %s failed", name)
