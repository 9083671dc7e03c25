"""IP pools, address allocation and live address changes.

Allocation is race-free twice over: the pool rows are locked (``SELECT ... FOR UPDATE``)
while a free address is chosen, and the address column is unique, so even a path that
skipped the lock could not hand out an address twice.
"""
from __future__ import annotations

import ipaddress

from django.db import IntegrityError, transaction

from containers import messages as m
from panel.access import require_role
from panel.models import VE, IPAddress, IPPool, Job, Membership, Node

from .audit import audit
from .errors import Conflict, InvalidInput, NotFound, Unavailable
from .jobs import job_create

# Never scan more than this many candidates in one allocation (IPv6 pools are huge).
SCAN_LIMIT = 1 << 16
TEST_NETS = ("198.18.0.0/15", "fd00::/8")


def _network(text) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    try:
        return ipaddress.ip_network(str(text).strip(), strict=True)
    except ValueError as e:
        raise InvalidInput(f"{str(text)[:60]!r} is not a network in CIDR form: {e}", field="network") from None


def pool_create(*, name: str, network: str, nodes: list[Node] = (), range_start: str | None = None,
                range_end: str | None = None, actor=None, source: str = "") -> IPPool:
    """Create a pool bound to ``nodes``; the nodes get its unreachable route at once."""
    if not isinstance(name, str) or not m.NODE_NAME_RE.match(name):
        raise InvalidInput("pool name must be lower-case letters, digits and '-'", field="name")
    net = _network(network)
    if net.num_addresses < 2 and net.version == 4:
        raise InvalidInput("the pool is too small", field="network")
    for bound, field in ((range_start, "range_start"), (range_end, "range_end")):
        if bound is not None and _addr(bound) not in net:
            raise InvalidInput(f"{field} {bound} is outside {net}", field=field)
    with transaction.atomic():
        for other in IPPool.objects.select_for_update():
            if _network(other.network).overlaps(net):
                raise Conflict(f"{net} overlaps pool {other.name} ({other.network})", field="network")
        if IPPool.objects.filter(name=name).exists():
            raise Conflict(f"pool {name} already exists", field="name")
        pool = IPPool.objects.create(name=name, network=str(net), range_start=range_start, range_end=range_end)
        pool.nodes.set(nodes)
        audit(action="pool.create", actor=actor, obj=pool, source=source,
              detail={"network": str(net), "nodes": [n.name for n in nodes]})
        for node in nodes:
            node_push_config(node=node, actor=actor)
    return pool


def node_push_config(*, node: Node, actor=None) -> Job:
    """Send a node its configuration (the pools it serves) as a node_config job."""
    pools = sorted(p.network for p in node.pools.all())
    return job_create(kind="node_config", node=node, ve=None, actor=actor, args={"pools": pools}, mutating=False)


def _addr(text):
    try:
        return ipaddress.ip_address(str(text).strip())
    except ValueError:
        raise InvalidInput(f"{str(text)[:60]!r} is not an IP address", field="addresses") from None


def _candidates(pool: IPPool):
    net = ipaddress.ip_network(pool.network)
    start = ipaddress.ip_address(pool.range_start) if pool.range_start else None
    end = ipaddress.ip_address(pool.range_end) if pool.range_end else None
    first = int(start) if start else int(net.network_address) + 1
    last = int(end) if end else int(net.broadcast_address) - (1 if net.version == 4 else 0)
    cls = ipaddress.IPv4Address if net.version == 4 else ipaddress.IPv6Address
    for i in range(first, min(last, first + SCAN_LIMIT) + 1):
        yield str(cls(i))


def allocate(*, ve: VE, node: Node, addresses: list[str] | None, count: int | None = None) -> list[str]:
    """Reserve addresses for ``ve`` on ``node``: the chosen ones, or free ones from the
    node's pools: one per address family, or ``count`` of them (a plan's addresses) taken
    in turn from each family, IPv4 first. Call inside the caller's transaction."""
    pools = list(IPPool.objects.select_for_update().filter(nodes=node).order_by("id"))
    chosen: list[str] = []
    if addresses is None:
        families = [(v, [p for p in pools if ipaddress.ip_network(p.network).version == v]) for v in (4, 6)]
        families = [(v, f) for v, f in families if f]
        want = {v: 1 for v, _ in families}
        if count is not None and families:
            want = {v: 0 for v, _ in families}
            for i in range(count):
                want[families[i % len(families)][0]] += 1
        for version, family in families:
            need = want[version]
            for pool in family:
                if not need:
                    break
                used = set(IPAddress.objects.filter(pool=pool).values_list("address", flat=True))
                for free in _candidates(pool):
                    if free not in used:
                        chosen.append(free)
                        _reserve(free, pool, ve)
                        need -= 1
                        if not need:
                            break
            if need:
                raise Unavailable(f"IPv{version} pool {family[0].name} on node {node.name} is exhausted: "
                                  "no address is free. Ask an administrator to extend it.", code="pool-exhausted")
        return chosen
    if not isinstance(addresses, (list, tuple)) or len(addresses) > 64:
        raise InvalidInput("addresses must be a list of at most 64 addresses", field="addresses")
    for text in addresses:
        addr = _addr(text)
        pool = next((p for p in pools if addr in ipaddress.ip_network(p.network)), None)
        if pool is None or str(addr) not in set(_candidates(pool)):
            raise InvalidInput(f"{addr} is not in a pool of node {node.name}", field="addresses")
        if str(addr) in chosen:
            raise InvalidInput(f"{addr} is given twice", field="addresses")
        _reserve(str(addr), pool, ve)
        chosen.append(str(addr))
    return chosen


def _reserve(address: str, pool: IPPool, ve: VE) -> None:
    try:
        with transaction.atomic():
            IPAddress.objects.create(address=address, pool=pool, ve=ve)
    except IntegrityError:
        raise Conflict(f"{address} is already in use", code="address-in-use", field="addresses") from None


def release(ve: VE, addresses: list[str] | None = None) -> int:
    """Free a VE's allocations (all, or the given ones)."""
    qs = IPAddress.objects.filter(ve=ve)
    if addresses is not None:
        qs = qs.filter(address__in=addresses)
    return qs.delete()[0]


def ve_ipadd(*, ve: VE, addresses: list[str] | None = None, actor=None, source: str = "") -> Job:
    """Add addresses to a VE, live if it runs (``vzctl set --ipadd``). ``None`` picks one
    free address per family from the node's pools. The allocations count against the
    tenant's address quota, checked under its lock (services.quotas)."""
    from .quotas import quota_guard

    require_role(actor, ve.tenant, Membership.Role.OPERATOR, what="VE", source=source)
    with transaction.atomic(), quota_guard(ve.tenant):
        locked = VE.objects.select_for_update().select_related("node", "tenant", "template").get(pk=ve.pk)
        if locked.state == VE.State.DESTROYED:
            raise NotFound(f"VE {ve.veid} does not exist")
        if addresses is not None:
            canon = [str(_addr(a)) for a in addresses]
            dup = [a for a in canon if a in locked.addresses]
            if dup:
                raise InvalidInput(f"{dup[0]} is already assigned to VE {locked.veid}", field="addresses")
        added = allocate(ve=locked, node=locked.node, addresses=addresses)
        if not added:
            raise InvalidInput("the node has no pool to take an address from", field="addresses")
        return _address_job(locked, list(locked.addresses) + added, actor, source, "ve.ipadd",
                            {"reserved": added})


def ve_ipdel(*, ve: VE, addresses: list[str], actor=None, source: str = "") -> Job:
    """Remove addresses from a VE, live if it runs (``vzctl set --ipdel``); ``all`` removes all."""
    require_role(actor, ve.tenant, Membership.Role.OPERATOR, what="VE", source=source)
    with transaction.atomic():
        locked = VE.objects.select_for_update().select_related("node", "tenant", "template").get(pk=ve.pk)
        if addresses == ["all"]:
            gone = list(locked.addresses)
        else:
            gone = [str(_addr(a)) for a in addresses]
            missing = [a for a in gone if a not in locked.addresses]
            if missing:
                raise InvalidInput(f"{missing[0]} is not an address of VE {locked.veid}", field="addresses")
        if not gone:
            raise InvalidInput("no address to remove", field="addresses")
        return _address_job(locked, [a for a in locked.addresses if a not in gone], actor, source,
                            "ve.ipdel", {"released": gone})


def _address_job(ve: VE, new: list[str], actor, source: str, action: str, extra: dict) -> Job:
    job = job_create(kind="set", node=ve.node, ve=ve.with_changes(addresses=new), actor=actor,
                     args={"changes": {"addresses": new}, **extra})
    audit(action=action, actor=actor, tenant=ve.tenant, obj=ve, source=source,
          detail={"job": str(job.id), "addresses": extra.get("reserved") or extra.get("released")})
    return job
