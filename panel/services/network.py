"""IP pools, address allocation and live address changes.

Allocation is race-free twice over: the pool rows are locked (``SELECT ... FOR UPDATE``)
while a free address is chosen, and the address column is unique, so even a path that
skipped the lock could not hand out an address twice.
"""
from __future__ import annotations

import ipaddress

from django.db import IntegrityError, connection, transaction
from django.utils.translation import gettext as _

from containers import messages as m
from panel.access import require_role, require_staff
from panel.models import VE, IPAddress, IPPool, Job, Membership, Node

from .audit import audit
from .errors import Conflict, InvalidInput, NotFound, Unavailable, field_label
from .jobs import job_create

TEST_NETS = ("198.18.0.0/15", "fd00::/8")


def _network(text) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    try:
        return ipaddress.ip_network(str(text).strip(), strict=True)
    except ValueError as e:
        raise InvalidInput(_("%(text)r is not a network in CIDR form: %(error)s")
                           % {"text": str(text)[:60], "error": e}, field="network") from None


def _range(net, range_start, range_end) -> tuple[str | None, str | None]:
    """A pool's optional range, checked: both ends inside the network (not its network or
    broadcast address), the start not after the end. Blank means the network's edge."""
    bounds = []
    for bound, field in ((range_start, "range_start"), (range_end, "range_end")):
        if bound is None or (isinstance(bound, str) and not bound.strip()):
            bounds.append(None)
            continue
        addr = _addr(bound, field=field)
        if addr not in net:  # also an address of the other family
            raise InvalidInput(_("%(field)s %(address)s is outside %(network)s")
                               % {"field": field_label(field), "address": addr, "network": net}, field=field)
        if net.version == 4 and net.num_addresses > 2 and addr in (net.network_address, net.broadcast_address):
            raise InvalidInput(_("%(field)s %(address)s is the network or broadcast address of %(network)s")
                               % {"field": field_label(field), "address": addr, "network": net}, field=field)
        bounds.append(addr)
    start, end = bounds
    if start is not None and end is not None and start > end:
        raise InvalidInput(_("the range must not end (%(end)s) before it starts (%(start)s)")
                           % {"start": start, "end": end}, field="range_end")
    return (str(start) if start is not None else None, str(end) if end is not None else None)


def _nodes(nodes) -> list[Node]:
    if not isinstance(nodes, (list, tuple, set)) or not all(isinstance(n, Node) for n in nodes):
        raise InvalidInput(_("nodes must be a list of nodes"), field="nodes")
    return sorted(set(nodes), key=lambda n: n.name)


def pool_create(*, name: str, network: str, nodes: list[Node] = (), range_start: str | None = None,
                range_end: str | None = None, actor=None, source: str = "") -> IPPool:
    """Create a pool bound to ``nodes`` (staff); the nodes get its unreachable route at once.
    Pools never overlap: an address belongs to one pool."""
    require_staff(actor, what="managing IP pools", source=source)
    if not isinstance(name, str) or not m.NODE_NAME_RE.match(name):
        raise InvalidInput(_("pool name must be lower-case letters, digits and '-'"), field="name")
    net = _network(network)
    if net.num_addresses < 2 and net.version == 4:
        raise InvalidInput(_("the pool is too small"), field="network")
    range_start, range_end = _range(net, range_start, range_end)
    nodes = _nodes(nodes)
    with transaction.atomic():
        for other in IPPool.objects.select_for_update():
            if _network(other.network).overlaps(net):
                raise Conflict(_("%(network)s overlaps pool %(name)s (%(other)s)")
                               % {"network": net, "name": other.name, "other": other.network}, field="network")
        if IPPool.objects.filter(name=name).exists():
            raise Conflict(_("pool %(name)s already exists") % {"name": name}, field="name")
        pool = IPPool.objects.create(name=name, network=str(net), range_start=range_start, range_end=range_end)
        pool.nodes.set(nodes)
        audit(action="pool.create", actor=actor, obj=pool, source=source,
              detail={"network": str(net), "nodes": [n.name for n in nodes], "range_start": range_start,
                      "range_end": range_end})
        for node in nodes:
            node_push_config(node=node, actor=actor)
    return pool


_KEEP = object()


def pool_update(*, pool: IPPool, range_start=_KEEP, range_end=_KEEP, nodes=None, actor=None,
                source: str = "") -> IPPool:
    """Change a pool's range or the nodes that serve it (staff). The network stays (a pool
    with another network is another pool). Every address already allocated must stay in
    the new range, and a node keeps a pool while its VEs hold addresses from it. Nodes that
    gain or lose the pool get their configuration (the unreachable routes) again."""
    require_staff(actor, what="managing IP pools", source=source)
    with transaction.atomic():
        locked = IPPool.objects.select_for_update().filter(pk=pool.pk).first()
        if locked is None:
            raise NotFound(_("pool %(name)r does not exist") % {"name": pool.name})
        net = _network(locked.network)
        start, end = _range(net, locked.range_start if range_start is _KEEP else range_start,
                            locked.range_end if range_end is _KEEP else range_end)
        lo = ipaddress.ip_address(start) if start else None
        hi = ipaddress.ip_address(end) if end else None
        for text in IPAddress.objects.filter(pool=locked).values_list("address", flat=True):
            addr = ipaddress.ip_address(text)
            if (lo is not None and addr < lo) or (hi is not None and addr > hi):
                raise Conflict(_("%(address)s is allocated to a VE and would be outside the new range")
                               % {"address": addr}, field="range_start" if lo is not None and addr < lo
                               else "range_end", code="address-in-use")
        before = set(locked.nodes.all())
        after = before if nodes is None else set(_nodes(nodes))
        for node in sorted(before - after, key=lambda n: n.name):
            if IPAddress.objects.filter(pool=locked, ve__node=node).exists():
                raise Conflict(_("VEs on node %(node)s hold addresses from pool %(name)s: it must keep serving it")
                               % {"node": node.name, "name": locked.name}, field="nodes", code="address-in-use")
        previous = {"range_start": locked.range_start, "range_end": locked.range_end,
                    "nodes": sorted(n.name for n in before)}
        locked.range_start, locked.range_end = start, end
        locked.save(update_fields=["range_start", "range_end"])
        locked.nodes.set(after)
        audit(action="pool.update", actor=actor, obj=locked, source=source, detail={
            "name": locked.name, "previous": previous,
            "changes": {"range_start": start, "range_end": end, "nodes": sorted(n.name for n in after)}})
        for node in sorted(before ^ after, key=lambda n: n.name):
            node_push_config(node=node, actor=actor)
    return locked


def pool_delete(*, pool: IPPool, actor=None, source: str = "") -> None:
    """Delete a pool from which no address is allocated (staff); its nodes get their
    configuration again without it."""
    require_staff(actor, what="managing IP pools", source=source)
    with transaction.atomic():
        locked = IPPool.objects.select_for_update().filter(pk=pool.pk).first()
        if locked is None:
            raise NotFound(_("pool %(name)r does not exist") % {"name": pool.name})
        used = IPAddress.objects.filter(pool=locked).count()
        if used:
            raise Conflict(_("pool %(name)s still has allocated addresses (%(count)d): remove them from their "
                             "VEs first") % {"name": locked.name, "count": used}, code="address-in-use")
        nodes = sorted(locked.nodes.all(), key=lambda n: n.name)
        audit(action="pool.delete", actor=actor, obj=locked, source=source, detail={
            "name": locked.name, "network": locked.network, "nodes": [n.name for n in nodes]})
        locked.delete()
        for node in nodes:
            node_push_config(node=node, actor=actor)


def node_push_config(*, node: Node, actor=None) -> Job:
    """Send a node its configuration (the pools it serves) as a node_config job."""
    pools = sorted(p.network for p in node.pools.all())
    return job_create(kind="node_config", node=node, ve=None, actor=actor, args={"pools": pools}, mutating=False)


def _addr(text, *, field: str = "addresses"):
    try:
        addr = ipaddress.ip_address(str(text).strip())
    except ValueError:
        raise InvalidInput(_("%(text)r is not an IP address") % {"text": str(text)[:60]}, field=field) from None
    # Python takes "fd00::5%eth0" (a zone) as an address inside fd00::/64: a VE's routed
    # address has no zone, and the database's inet column would refuse the text anyway.
    if getattr(addr, "scope_id", None):
        raise InvalidInput(_("%(text)r is not an IP address") % {"text": str(text)[:60]}, field=field)
    return addr


def _bounds(pool: IPPool) -> tuple[int, int]:
    """The first and last address a pool hands out, as integers: its range, or its
    network without the network address (and, for IPv4, the broadcast address)."""
    net = ipaddress.ip_network(pool.network)
    first = int(ipaddress.ip_address(pool.range_start)) if pool.range_start else int(net.network_address) + 1
    last = (int(ipaddress.ip_address(pool.range_end)) if pool.range_end
            else int(net.broadcast_address) - (1 if net.version == 4 else 0))
    return first, last


def _next_free(pool: IPPool) -> str | None:
    """The pool's lowest free address, or None when it is full.

    The cost grows with the addresses allocated from the pool, never with its size: an
    IPv6 /64 is 2**64 candidates, and an allocation must not walk or build them. Call with
    the pool row locked (``allocate``): the allocations read here then stay current, and
    the ones this transaction made are seen by the next call."""
    first, last = _bounds(pool)
    cls = ipaddress.IPv4Address if ipaddress.ip_network(pool.network).version == 4 else ipaddress.IPv6Address
    if connection.vendor == "postgresql":
        # inet orders and adds numerically: the free address is the first "allocated + 1"
        # (or the start itself, seen as "start - 1" + 1) that is not allocated, each probe
        # one lookup in the unique index on address.
        table = IPAddress._meta.db_table
        with connection.cursor() as cur:
            cur.execute(
                f"SELECT host(c.a + 1) FROM (SELECT address AS a FROM {table} WHERE pool_id = %s "
                f"AND address >= %s::inet AND address < %s::inet UNION ALL SELECT %s::inet) c "
                f"WHERE NOT EXISTS (SELECT 1 FROM {table} u WHERE u.address = c.a + 1) ORDER BY c.a LIMIT 1",
                [pool.pk, str(cls(first)), str(cls(last)), str(cls(first - 1))])
            row = cur.fetchone()
        return str(ipaddress.ip_address(row[0])) if row else None
    # Elsewhere (the embedded SQLite default) the column is text, whose order is not the
    # numeric one ("...10" < "...9"): walk the allocations sorted as integers.
    candidate = first
    for taken in sorted(int(ipaddress.ip_address(a)) for a in
                        IPAddress.objects.filter(pool=pool).values_list("address", flat=True)):
        if taken > candidate:
            break
        candidate = max(candidate, taken + 1)
    return str(cls(candidate)) if candidate <= last else None


def _pool_of(addr, pools: list[IPPool]) -> IPPool | None:
    """The pool among ``pools`` that hands out ``addr``: in its network and its range.
    Containment only; whether the address is free is the unique constraint's answer."""
    for pool in pools:
        if addr in ipaddress.ip_network(pool.network):
            first, last = _bounds(pool)
            return pool if first <= int(addr) <= last else None
    return None


def allocate(*, ve: VE, node: Node, addresses: list[str] | None, count: int | None = None) -> list[str]:
    """Reserve addresses for ``ve`` on ``node``: the chosen ones, or free ones from the
    node's pools: one per address family, or ``count`` of them (a plan's addresses) taken
    in turn from each family, IPv4 first. Call inside the caller's transaction.

    Automatic picks are the lowest free addresses of the first pool that has one. A chosen
    address must lie in one of the node's pools (and its range) and be free; the pool rows
    stay locked until the caller's transaction ends, and the unique address column refuses
    a duplicate even from a path that skipped the lock."""
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
                while need:
                    free = _next_free(pool)
                    if free is None:
                        break
                    chosen.append(free)
                    _reserve(free, pool, ve)
                    need -= 1
            if need:
                raise Unavailable(_("IPv%(version)d pool %(pool)s on node %(node)s is exhausted: no address is "
                                    "free. Ask an administrator to extend it.")
                                  % {"version": version, "pool": family[0].name, "node": node.name},
                                  code="pool-exhausted")
        return chosen
    if not isinstance(addresses, (list, tuple)) or len(addresses) > 64:
        raise InvalidInput(_("addresses must be a list of at most 64 addresses"), field="addresses")
    for text in addresses:
        addr = _addr(text)
        pool = _pool_of(addr, pools)
        if pool is None:
            raise InvalidInput(_("%(address)s is not in a pool of node %(node)s")
                               % {"address": addr, "node": node.name}, field="addresses")
        if str(addr) in chosen:
            raise InvalidInput(_("%(address)s is given twice") % {"address": addr}, field="addresses")
        _reserve(str(addr), pool, ve)
        chosen.append(str(addr))
    return chosen


def _reserve(address: str, pool: IPPool, ve: VE) -> None:
    try:
        with transaction.atomic():
            IPAddress.objects.create(address=address, pool=pool, ve=ve)
    except IntegrityError:
        raise Conflict(_("%(address)s is already in use") % {"address": address}, code="address-in-use",
                       field="addresses") from None


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
        locked = VE.objects.select_for_update(of=("self",)).select_related("node", "tenant", "template").get(pk=ve.pk)
        if locked.state == VE.State.DESTROYED:
            raise NotFound(_("VE %(veid)s does not exist") % {"veid": ve.veid})
        if addresses is not None:
            if not isinstance(addresses, (list, tuple)) or len(addresses) > 64:
                raise InvalidInput(_("addresses must be a list of at most 64 addresses"), field="addresses")
            canon = [str(_addr(a)) for a in addresses]
            dup = [a for a in canon if a in locked.addresses]
            if dup:
                raise InvalidInput(_("%(address)s is already assigned to VE %(veid)s")
                                   % {"address": dup[0], "veid": locked.veid}, field="addresses")
        added = allocate(ve=locked, node=locked.node, addresses=addresses)
        if not added:
            raise InvalidInput(_("the node has no pool to take an address from"), field="addresses")
        return _address_job(locked, list(locked.addresses) + added, actor, source, "ve.ipadd",
                            {"reserved": added})


def ve_ipdel(*, ve: VE, addresses: list[str], actor=None, source: str = "") -> Job:
    """Remove addresses from a VE, live if it runs (``vzctl set --ipdel``); ``all`` removes all."""
    require_role(actor, ve.tenant, Membership.Role.OPERATOR, what="VE", source=source)
    with transaction.atomic():
        locked = VE.objects.select_for_update(of=("self",)).select_related("node", "tenant", "template").get(pk=ve.pk)
        if addresses == ["all"]:
            gone = list(locked.addresses)
        else:
            gone = [str(_addr(a)) for a in addresses]
            missing = [a for a in gone if a not in locked.addresses]
            if missing:
                raise InvalidInput(_("%(address)s is not an address of VE %(veid)s")
                                   % {"address": missing[0], "veid": locked.veid}, field="addresses")
        if not gone:
            raise InvalidInput(_("no address to remove"), field="addresses")
        return _address_job(locked, [a for a in locked.addresses if a not in gone], actor, source,
                            "ve.ipdel", {"released": gone})


def _address_job(ve: VE, new: list[str], actor, source: str, action: str, extra: dict) -> Job:
    job = job_create(kind="set", node=ve.node, ve=ve.with_changes(addresses=new), actor=actor,
                     args={"changes": {"addresses": new}, **extra})
    audit(action=action, actor=actor, tenant=ve.tenant, obj=ve, source=source,
          detail={"job": str(job.id), "addresses": extra.get("reserved") or extra.get("released")})
    return job
