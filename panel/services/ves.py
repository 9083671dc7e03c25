"""VE lifecycle services: ``ve_create``, ``ve_start``, ``ve_stop``, ``ve_restart``,
``ve_destroy``, ``ve_set``, ``ve_change_plan``, ``ve_set_password``, ``ve_exec``, ``ve_status``.

Each one checks the actor's role in the VE's tenant (``actor=None`` is the local admin of
the command line), checks its input, writes the job and its audit record in one
transaction and returns the :class:`~panel.models.Job`; the node does the work and reports
back. Whatever makes a tenant grow (create, resize, change plan) goes through the tenant's
quota lock in that same transaction (services.quotas).
"""
from __future__ import annotations

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import Exists, F, OuterRef
from django.db.models.functions import Mod
from django.utils.translation import gettext as _

from containers.messages import HOSTNAME_RE, MessageError, check_ve_address
from panel.access import audit_denial, is_local_admin, require_role
from panel.models import VE, Job, Membership, Node, OSTemplate, Plan, Tenant

from .audit import audit
from .errors import Conflict, Forbidden, InvalidInput, NotFound, Unavailable
from .identity import check_password, identity_args, identity_audit, sha512_crypt
from .jobs import job_create
from .network import allocate
from .plans import plan_resolve, plan_ve_values
from .quotas import quota_guard
from .validation import DEFAULTS, check_hostname, check_range, parse_int, parse_limit, parse_rate

IDMAP_SIZE = 65536
EXEC_MAX_ARGS = 256
EXEC_MAX_ARG_LEN = 4096


def _alloc_lock() -> None:
    """Serialise VEID and id-range allocation fleet-wide (PostgreSQL advisory lock; the
    embedded SQLite default already serialises writers with IMMEDIATE transactions)."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(%s)", [0x4841_4B4F])  # "HAKO"


def _next_veid() -> int:
    last = VE.objects.exclude(state=VE.State.DESTROYED).order_by("-veid").values_list("veid", flat=True).first()
    return max(settings.HAKO_FIRST_VEID, (last or 0) + 1)


def _free_uid_base() -> int:
    """The lowest free id range of the fleet (ranges are IDMAP_SIZE apart from
    HAKO_ID_BASE). A gap query on the live VEs' unique uid_base index: the cost does not
    grow with the fleet, where reading every live VE's range did."""
    first, size, count = settings.HAKO_ID_BASE, IDMAP_SIZE, settings.HAKO_ID_RANGES
    live = VE.objects.exclude(state=VE.State.DESTROYED)
    if count > 0 and not live.filter(uid_base=first).exists():
        return first
    # The range after the lowest live one whose successor is free.
    base = (live.filter(uid_base__gte=first, uid_base__lt=first + count * size)
            .annotate(offset=Mod(F("uid_base") - first, size), successor=F("uid_base") + size)
            .filter(offset=0).exclude(Exists(live.filter(uid_base=OuterRef("successor"))))
            .order_by("uid_base").values_list("successor", flat=True).first())
    if base is not None and base < first + count * size:
        return base
    raise Unavailable(_("No free id range is left in the fleet; raise HAKO_ID_RANGES and root's subuid range."))


def _pick_node(node: Node | None, template: OSTemplate) -> Node:
    if node is not None:
        if node.state != Node.State.ONLINE:
            raise Unavailable(_("Node %(node)s is %(state)s; it cannot take new VEs now.")
                              % {"node": node.name, "state": node.state}, code="node-unavailable")
        if node.maintenance:
            raise Unavailable(_("Node %(node)s is in maintenance mode; it takes no new VEs.") % {"node": node.name},
                              code="node-maintenance")
        return node
    # A node in maintenance mode takes no new VEs (services/migrations.py drains it).
    candidates = [n for n in Node.objects.filter(state=Node.State.ONLINE, maintenance=False)
                  if template.name in n.info.get("templates", [template.name])]
    if not candidates:
        raise Unavailable(_("No online node can take this VE right now."), code="no-node")
    return max(candidates, key=lambda n: n.capacity.get("mem_available", 0))


def ve_create(*, tenant: Tenant, actor=None, template: str, hostname: str | None = None,
              veid=None, node: Node | None = None, memory=None, swap=None, disk=None, cpuunits=None,
              cpulimit=None, numproc=None, iolimit=None, iopslimit=None, onboot: bool = False,
              addresses: list[str] | None = None, nameservers=None, searchdomain=None, rate_in=None,
              rate_out=None, root_password=None, root_password_hash=None, ssh_keys=None,
              plan: Plan | str | None = None, source: str = "", start: bool = False) -> Job:
    """Create a VE record and a ``create`` job for its node (with ``start``, the same job
    starts it once created: billing sells services running).

    Sizes are bytes (parse user text with services.validation first); ``iolimit`` (bytes/s)
    also takes sizes like ``10M``, ``iopslimit`` is operations/s, 0 = unlimited. With a
    ``plan`` (object or name), the plan's values are the defaults, its bandwidth the rate
    limits and its address count how many addresses are picked; values given here override
    them. Every create, from a plan or custom, must fit the tenant's quota. Unknown
    templates, taken VEIDs, bad hostnames and out-of-range sizes are refused before anything
    is written. Choosing the node or the VEID is for staff (operators of the tenant may create).
    """
    require_role(actor, tenant, Membership.Role.OPERATOR, what="tenant", source=source)
    if not is_local_admin(actor) and (node is not None or veid is not None):
        audit_denial(actor, tenant, "staff-field", {"field": "node" if node is not None else "veid"}, source)
        raise Forbidden(_("choosing the node or the VEID is for staff administrators"),
                        field="node" if node is not None else "veid")
    _refuse_if_tenant_suspended(tenant)
    the_plan = plan_resolve(plan, actor) if plan is not None else None
    defaults = dict(DEFAULTS, **(plan_ve_values(the_plan) if the_plan else {}))
    values = {}
    for field, raw in (("memory", memory), ("swap", swap), ("disk", disk), ("cpuunits", cpuunits),
                       ("cpulimit", cpulimit), ("numproc", numproc), ("iolimit", iolimit),
                       ("iopslimit", iopslimit)):
        values[field] = check_range(parse_limit(raw, field=field) if raw is not None else defaults[field],
                                    field=field)
    if the_plan is not None:
        rate_in = defaults["rate_in"] if rate_in is None else rate_in
        rate_out = defaults["rate_out"] if rate_out is None else rate_out
    if veid is not None:
        veid = parse_int(veid, field="veid")
        if veid < 101:
            raise InvalidInput(_("veid must be 101 or more"), field="veid")
    if not isinstance(template, str):
        raise InvalidInput(_("template must be a name"), field="template")
    tmpl = OSTemplate.objects.filter(name=template, enabled=True).first()
    if tmpl is None:
        raise InvalidInput(_("OS template %(name)r does not exist") % {"name": template[:64]}, field="template")
    if hostname is not None:
        hostname = check_hostname(hostname)
    net_values = network_settings(nameservers=nameservers, searchdomain=searchdomain, rate_in=rate_in,
                                  rate_out=rate_out)
    # Login identity: the clear password is hashed here and travels only as a hash in the
    # job's args, never in the VE row or its spec (services.identity).
    ident = identity_args(root_password=root_password, root_password_hash=root_password_hash,
                          ssh_keys=ssh_keys)
    for attempt in range(3):
        try:
            # The tenant's quota lock first, then the fleet-wide allocation lock: every
            # service takes them in this order.
            with transaction.atomic(), quota_guard(tenant):
                _alloc_lock()
                target = _pick_node(node, tmpl)
                if veid is not None and VE.objects.filter(veid=veid).exclude(state=VE.State.DESTROYED).exists():
                    raise Conflict(_("VE %(veid)s already exists") % {"veid": veid}, code="veid-taken", field="veid")
                the_veid = veid if veid is not None else _next_veid()
                ve = VE.objects.create(
                    veid=the_veid, tenant=tenant, node=target, template=tmpl,
                    hostname=hostname or f"ve{the_veid}", uid_base=_free_uid_base(), onboot=onboot,
                    state=VE.State.CREATING, plan=the_plan, **values, **net_values)
                ve.addresses = allocate(ve=ve, node=target, addresses=addresses,
                                        count=the_plan.addresses if the_plan and addresses is None else None)
                if ve.addresses:
                    VE.objects.filter(pk=ve.pk).update(addresses=ve.addresses)
                job = job_create(kind="create", node=target, ve=ve, actor=actor,
                                 args={**ident, **({"start": True} if start else {})})
                audit(action="ve.create", actor=actor, tenant=tenant, obj=ve, source=source,
                      detail={"job": str(job.id), "node": target.name, "template": tmpl.name,
                              "hostname": ve.hostname, **values, **identity_audit(ident),
                              **({"plan": the_plan.name} if the_plan else {}),
                              **({"start": True} if start else {})})
                return job
        except IntegrityError:
            if veid is not None:
                raise Conflict(_("VE %(veid)s already exists") % {"veid": veid}, code="veid-taken",
                               field="veid") from None
            continue  # lost an allocation race on SQLite or a stale read; take the next one
    raise Conflict(_("Could not allocate a VEID; try again."))


def network_settings(*, nameservers=None, searchdomain=None, rate_in=None, rate_out=None) -> dict:
    """Validated DNS and bandwidth settings; only the ones given are returned."""
    out = {}
    if nameservers is not None:
        if isinstance(nameservers, str):
            nameservers = [n for n in nameservers.replace(",", " ").split() if n]
        if not isinstance(nameservers, (list, tuple)) or len(nameservers) > 3:
            raise InvalidInput(_("give at most 3 nameservers"), field="nameservers")
        try:
            out["nameservers"] = [check_ve_address(str(n), any_ip=True) for n in nameservers]
        except MessageError as e:
            raise InvalidInput(_("nameserver: %(error)s") % {"error": e}, field="nameservers") from None
    if searchdomain is not None:
        domains = str(searchdomain).split()
        if len(" ".join(domains)) > 253 or not all(HOSTNAME_RE.match(d) for d in domains):
            raise InvalidInput(_("searchdomain must be domain names separated by spaces"), field="searchdomain")
        out["searchdomain"] = " ".join(d.lower() for d in domains)
    for field, raw in (("rate_in", rate_in), ("rate_out", rate_out)):
        if raw is not None:
            out[field] = parse_rate(raw, field=field)
    return out


def _live(ve: VE) -> VE:
    if ve.state == VE.State.DESTROYED:
        raise NotFound(_("VE %(veid)s does not exist") % {"veid": ve.veid})
    return ve


def _simple(kind: str, ve: VE, actor, source: str, args: dict | None = None, audit_detail=None,
            min_role: str = Membership.Role.OPERATOR) -> Job:
    require_role(actor, ve.tenant, min_role, what="VE", source=source)
    with transaction.atomic():
        ve = VE.objects.select_related("node", "tenant", "template").get(pk=_live(ve).pk)
        if kind in ("start", "restart"):
            _refuse_if_suspended(ve)
        job = job_create(kind=kind, node=ve.node, ve=ve, actor=actor, args=args)
        audit(action=f"ve.{kind}", actor=actor, tenant=ve.tenant, obj=ve, source=source,
              detail={"job": str(job.id), **(audit_detail or {})})
    return job


def _refuse_if_suspended(ve: VE) -> None:
    from .suspensions import active_suspensions, describe

    found = active_suspensions(ve)
    if found:
        raise Conflict(_("VE %(veid)s is suspended (%(why)s); it cannot be started until the suspension is lifted.")
                       % {"veid": ve.veid, "why": describe(found)}, code="suspended")


def _refuse_if_tenant_suspended(tenant: Tenant) -> None:
    from .suspensions import describe, tenant_suspensions

    found = tenant_suspensions(tenant)
    if found:
        raise Conflict(_("tenant %(tenant)s is suspended (%(why)s); no VE can be created until the suspension is "
                         "lifted.") % {"tenant": tenant.slug, "why": describe(found)}, code="suspended")


def ve_start(*, ve: VE, actor=None, source: str = "") -> Job:
    """Start a VE (a no-op success if it runs already); a suspended VE is refused."""
    return _simple("start", ve, actor, source)


def ve_stop(*, ve: VE, actor=None, timeout: int | None = None, kill: bool = False, source: str = "") -> Job:
    """Stop a VE gracefully, killing it after ``timeout`` seconds (or at once with ``kill``)."""
    args = {"kill": bool(kill)}
    if timeout is not None:
        if type(timeout) is not int or not 0 <= timeout <= 3600:
            raise InvalidInput(_("timeout must be between 0 and 3600 seconds"), field="timeout")
        args["timeout"] = timeout
    return _simple("stop", ve, actor, source, args)


def ve_restart(*, ve: VE, actor=None, source: str = "") -> Job:
    """Stop (gracefully) and start a VE, applying its current limits."""
    return _simple("restart", ve, actor, source)


def ve_destroy(*, ve: VE, actor=None, source: str = "") -> Job:
    """Kill a VE if it runs and delete its disk and config on the node. Irreversible."""
    return _simple("destroy", ve, actor, source)


SETTABLE = ("memory", "swap", "disk", "cpuunits", "cpulimit", "numproc", "iolimit", "iopslimit",
            "hostname", "onboot", "nameservers", "searchdomain", "rate_in", "rate_out")
NETWORK_SETTINGS = ("nameservers", "searchdomain", "rate_in", "rate_out")


def ve_set(*, ve: VE, actor=None, source: str = "", **changes) -> Job:
    """Change a VE's resources within the tenant's quota; the node applies memory, swap,
    CPU and pids live on a running VE and grows the disk online.

    The VE row keeps what the node has applied: the changes are written back when the
    job succeeds, and until then the larger sizes count as reserved in the quota.
    Shrinking the disk is refused unless the VE is stopped (an offline filesystem shrink;
    the node refuses it too if the data does not fit).
    """
    require_role(actor, ve.tenant, Membership.Role.OPERATOR, what="VE", source=source)
    return _resize(ve, _clean_changes(changes), actor, source, action="ve.set")


def ve_change_plan(*, ve: VE, plan: Plan | str, actor=None, source: str = "") -> Job:
    """Resize a VE to a plan's values (memory, swap, disk, CPU, pids, bandwidth) within the
    tenant's quota, like ``ve_set``; the VE is on the new plan once the node applied it.
    Its addresses stay as they are."""
    require_role(actor, ve.tenant, Membership.Role.OPERATOR, what="VE", source=source)
    the_plan = plan_resolve(plan, actor)
    return _resize(ve, plan_ve_values(the_plan), actor, source, action="ve.change_plan", plan=the_plan)


def _clean_changes(changes: dict) -> dict:
    unknown = set(changes) - set(SETTABLE)
    if unknown:
        raise InvalidInput(_("unknown parameters: %(names)s") % {"names": ", ".join(sorted(unknown))})
    clean = {}
    for field, raw in changes.items():
        if raw is None:
            continue
        if field == "hostname":
            clean[field] = check_hostname(raw)
        elif field in NETWORK_SETTINGS:
            clean.update(network_settings(**{field: raw}))
        elif field == "onboot":
            if not isinstance(raw, bool):
                raise InvalidInput(_("onboot must be yes or no"), field="onboot")
            clean[field] = raw
        else:
            clean[field] = check_range(parse_limit(raw, field=field), field=field)
    if not clean:
        raise InvalidInput(_("nothing to change: give at least one parameter"))
    return clean


def _resize(ve: VE, clean: dict, actor, source: str, *, action: str, plan: Plan | None = None) -> Job:
    with transaction.atomic(), quota_guard(ve.tenant):
        locked = VE.objects.select_related("node", "tenant", "template").get(pk=_live(ve).pk)
        if "disk" in clean and clean["disk"] < locked.disk and locked.state != VE.State.STOPPED:
            raise InvalidInput(
                _("shrinking the disk needs the VE stopped (VE %(veid)s is %(state)s): stop it, then set the smaller "
                  "size; the data on it must fit in the new size") % {"veid": locked.veid, "state": locked.state},
                field="disk")
        args = {"changes": clean}
        detail = {"changes": clean}
        if plan is not None:
            args["plan"] = plan.pk
            detail["plan"] = plan.name
        job = job_create(kind="set", node=locked.node, ve=locked.with_changes(**clean), actor=actor, args=args)
        audit(action=action, actor=actor, tenant=locked.tenant, obj=locked, source=source,
              detail={"job": str(job.id), **detail})
    return job


def ve_set_password(*, ve: VE, actor=None, root_password, source: str = "") -> Job:
    """Set the root password of an existing VE, running or stopped (operators and owners).

    The clear password is checked and hashed here; only the ``$6$`` hash travels, in the
    job's args, which are scrubbed once the job ends (jobs.SECRET_ARGS). The audit record
    says only that it was set.
    """
    require_role(actor, ve.tenant, Membership.Role.OPERATOR, what="VE", source=source)
    password_hash = sha512_crypt(check_password(root_password))
    return _simple("passwd", ve, actor, source, {"root_password_hash": password_hash},
                   audit_detail={"root_password": "set"})


def ve_exec(*, ve: VE, argv: list, actor=None, timeout: int = 60, source: str = "") -> Job:
    """Run ``argv`` inside a running VE (no shell); output is captured up to 64 KiB."""
    if (not isinstance(argv, (list, tuple)) or not argv or len(argv) > EXEC_MAX_ARGS
            or not all(isinstance(a, str) and a and len(a) <= EXEC_MAX_ARG_LEN and "\x00" not in a for a in argv)):
        raise InvalidInput(_("command must be a non-empty list of arguments without NUL bytes"), field="argv")
    if type(timeout) is not int or not 1 <= timeout <= 3600:
        raise InvalidInput(_("timeout must be between 1 and 3600 seconds"), field="timeout")
    return _simple("exec", ve, actor, source, {"argv": list(argv), "timeout": timeout},
                   audit_detail={"argv": list(argv)[:20]})


def ve_status(*, ve: VE, actor=None, source: str = "") -> Job:
    """Ask the node for a VE's current state and process count (any member may)."""
    return _simple("status", ve, actor, source, min_role=Membership.Role.VIEWER)
