"""Hako's data model: tenants, nodes, templates, VEs, jobs and the audit log.

Public ids in URLs are UUIDs; the VEID is a display number an admin knows the VE by, never
an access key (DESIGN.md, "Tenancy").
"""
from __future__ import annotations

import secrets
import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q


class Tenant(models.Model):
    """A customer account: owns VEs; users reach it through memberships."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    slug = models.SlugField(max_length=63, unique=True)
    name = models.CharField(max_length=200)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self):
        return self.slug


class Membership(models.Model):
    """A user's role in a tenant: owner manages members, operator acts on VEs, viewer reads."""

    class Role(models.TextChoices):
        OWNER = "owner"
        OPERATOR = "operator"
        VIEWER = "viewer"

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=16, choices=Role.choices)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "tenant"], name="one_membership_per_user_tenant")]


def new_node_key() -> str:
    return secrets.token_hex(32)


class Node(models.Model):
    """A host running a node agent that consumes ``queue``.

    ``key`` signs messages both ways (see containers.messages); ``agent_instance`` changes at
    every agent start, which is how the reaper sees an agent that restarted mid-job.
    """

    class State(models.TextChoices):
        NEW = "new"            # registered, never heard from
        ONLINE = "online"
        LOST = "lost"          # heartbeats stopped

    name = models.CharField(max_length=63, unique=True)
    queue = models.CharField(max_length=80, unique=True)
    key = models.CharField(max_length=64, default=new_node_key)
    state = models.CharField(max_length=16, choices=State.choices, default=State.NEW)
    last_heartbeat = models.DateTimeField(null=True, blank=True)
    heartbeat_seq = models.BigIntegerField(default=0)
    agent_instance = models.CharField(max_length=36, blank=True)
    capacity = models.JSONField(default=dict, blank=True)
    info = models.JSONField(default=dict, blank=True)
    # Maintenance mode: no new VE is placed here and no migration targets it; its VEs keep
    # running (drain moves them away, services/migrations.py).
    maintenance = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self):
        return self.name


class OSTemplate(models.Model):
    """An OS template a VE is created from (``busybox``, ``debian-12``)."""

    name = models.CharField(max_length=64, unique=True)
    description = models.CharField(max_length=200, blank=True)
    enabled = models.BooleanField(default=True)

    def __str__(self):
        return self.name


class VE(models.Model):
    """A virtual environment: an unprivileged system container on one node.

    ``generation`` grows with every change sent to the node; the node refuses a message
    older than the generation it last applied. ``uid_base`` is the first host id of the VE's
    own 65536-id range, unique in the fleet and kept for the VE's life.
    """

    class State(models.TextChoices):
        CREATING = "creating"
        STOPPED = "stopped"
        STARTING = "starting"
        RUNNING = "running"
        STOPPING = "stopping"
        ERROR = "error"
        UNKNOWN = "unknown"      # its node is lost
        MIGRATING = "migrating"  # moving to another node (services/migrations.py)
        DESTROYED = "destroyed"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    veid = models.PositiveIntegerField()
    tenant = models.ForeignKey(Tenant, on_delete=models.PROTECT, related_name="ves")
    node = models.ForeignKey(Node, on_delete=models.PROTECT, related_name="ves")
    hostname = models.CharField(max_length=253)
    template = models.ForeignKey(OSTemplate, on_delete=models.PROTECT, related_name="ves")
    state = models.CharField(max_length=16, choices=State.choices, default=State.CREATING)
    cpuunits = models.PositiveIntegerField(default=1000)
    cpulimit = models.PositiveIntegerField(default=0)
    memory = models.BigIntegerField()
    swap = models.BigIntegerField(default=0)
    disk = models.BigIntegerField()
    numproc = models.PositiveIntegerField()
    # Disk I/O throttles on the VE's own disk (vzctl --iolimit / --iopslimit); 0 = none.
    iolimit = models.BigIntegerField(default=0)      # bytes per second
    iopslimit = models.PositiveIntegerField(default=0)  # operations per second
    # The addresses the node has applied; IPAddress rows are the allocations (reservations).
    addresses = models.JSONField(default=list, blank=True)
    nameservers = models.JSONField(default=list, blank=True)
    searchdomain = models.CharField(max_length=253, blank=True)
    rate_in = models.BigIntegerField(default=0, help_text="bits/s to the VE, 0 = unlimited")
    rate_out = models.BigIntegerField(default=0, help_text="bits/s from the VE, 0 = unlimited")
    # Cumulative traffic in the VE's terms, summed across the veth counter resets of restarts:
    # {"in_bytes", "out_bytes", "in_packets", "out_packets", "raw": {last counters seen}}.
    traffic = models.JSONField(default=dict, blank=True)
    uid_base = models.BigIntegerField()
    generation = models.PositiveIntegerField(default=0)
    onboot = models.BooleanField(default=False)
    # The plan the VE was created from or last changed to (null: custom values).
    plan = models.ForeignKey("Plan", on_delete=models.PROTECT, related_name="ves", null=True, blank=True)
    nproc = models.PositiveIntegerField(null=True, blank=True)
    state_changed_at = models.DateTimeField(auto_now_add=True)
    created_at = models.DateTimeField(auto_now_add=True)
    destroyed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            # A destroyed VE keeps its row (its jobs and audit trail point at it), so VEIDs
            # and id ranges are unique among live VEs only.
            models.UniqueConstraint(fields=["veid"], condition=~Q(state="destroyed"), name="veid_unique_live"),
            models.UniqueConstraint(fields=["uid_base"], condition=~Q(state="destroyed"), name="uid_base_unique_live"),
        ]
        indexes = [models.Index(fields=["tenant", "veid"]), models.Index(fields=["node", "state"])]

    def __str__(self):
        return f"VE {self.veid}"

    def with_changes(self, **changes) -> "VE":
        """An unsaved copy with ``changes`` applied: the desired VE that a ``set`` job sends,
        while this row keeps what the node has applied until the job succeeds."""
        copy = VE(**{f.attname: getattr(self, f.attname) for f in VE._meta.concrete_fields})
        copy.template = self.template
        for k, v in changes.items():
            setattr(copy, k, v)
        return copy

    def spec(self) -> dict:
        """The VE as a node sees it (containers.messages.VESpec)."""
        return {
            "veid": self.veid, "hostname": self.hostname, "template": self.template.name,
            "memory": self.memory, "swap": self.swap, "disk": self.disk, "cpuunits": self.cpuunits,
            "cpulimit": self.cpulimit, "numproc": self.numproc, "uid_base": self.uid_base,
            "addresses": list(self.addresses), "nameservers": list(self.nameservers),
            "searchdomain": self.searchdomain, "rate_in": self.rate_in, "rate_out": self.rate_out,
            "onboot": self.onboot,
            "iolimit": self.iolimit, "iopslimit": self.iopslimit,
        }


class Job(models.Model):
    """One privileged action on a node, shown like a Proxmox task log.

    Life: pending -> running -> succeeded | failed, and pending|running -> canceled. Every
    transition is a conditional UPDATE (see services.jobs), so a late or repeated event can
    never rewind a job. At most one mutating job per VE is pending or running at a time,
    enforced by a partial unique index.
    """

    class State(models.TextChoices):
        PENDING = "pending"
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"
        CANCELED = "canceled"

    ACTIVE = (State.PENDING, State.RUNNING)
    TERMINAL = (State.SUCCEEDED, State.FAILED, State.CANCELED)

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    kind = models.CharField(max_length=16)
    ve = models.ForeignKey(VE, on_delete=models.PROTECT, related_name="jobs", null=True, blank=True)
    tenant = models.ForeignKey(Tenant, on_delete=models.PROTECT, related_name="jobs", null=True, blank=True)
    node = models.ForeignKey(Node, on_delete=models.PROTECT, related_name="jobs")
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True)
    mutating = models.BooleanField(default=True)
    state = models.CharField(max_length=16, choices=State.choices, default=State.PENDING)
    args = models.JSONField(default=dict, blank=True)
    result = models.JSONField(default=dict, blank=True)
    error = models.CharField(max_length=64, blank=True)
    explanation = models.TextField(blank=True)
    generation = models.PositiveIntegerField(default=0)
    agent_instance = models.CharField(max_length=36, blank=True)
    last_seq = models.PositiveIntegerField(default=0)
    expires_at = models.DateTimeField()
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["ve"], condition=Q(mutating=True, state__in=["pending", "running"]),
                name="one_active_mutating_job_per_ve"),
        ]
        indexes = [models.Index(fields=["tenant", "-created_at"]), models.Index(fields=["node", "state"])]
        ordering = ["-created_at"]

    def __str__(self):
        return f"{self.kind} {self.id}"

    @property
    def is_terminal(self) -> bool:
        return self.state in self.TERMINAL


class Migration(models.Model):
    """A VE moving from ``source`` to ``target`` (restart mode with pre-copy).

    The state is persisted before each step, so that an orchestrator that died can be
    resumed (services/migrations.py): pending -> preparing -> precopy -> final -> starting
    -> committed -> done, or, on a failure before commit, rolling_back -> failed. The VE's
    node changes in the one transaction that sets ``committed``, only after the target runs
    the verified copy; the source copy is deleted after that. ``job`` is the panel-side job
    whose log shows the whole migration; ``sealed_*`` hold the one-time rsync secret sealed
    for each node (the panel never keeps it in clear) and are wiped when the migration ends.
    """

    class State(models.TextChoices):
        PENDING = "pending"
        PREPARING = "preparing"
        PRECOPY = "precopy"
        FINAL = "final"
        STARTING = "starting"
        COMMITTED = "committed"
        DONE = "done"
        ROLLING_BACK = "rolling_back"
        FAILED = "failed"

    ACTIVE = ("pending", "preparing", "precopy", "final", "starting", "committed", "rolling_back")

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    ve = models.ForeignKey(VE, on_delete=models.PROTECT, related_name="migrations")
    source = models.ForeignKey(Node, on_delete=models.PROTECT, related_name="migrations_out")
    target = models.ForeignKey(Node, on_delete=models.PROTECT, related_name="migrations_in")
    job = models.OneToOneField(Job, on_delete=models.PROTECT, related_name="migration", null=True, blank=True)
    drain = models.ForeignKey(Job, on_delete=models.SET_NULL, related_name="drained", null=True, blank=True)
    state = models.CharField(max_length=16, choices=State.choices, default=State.PENDING)
    was_running = models.BooleanField(default=False)
    bwlimit = models.PositiveIntegerField(default=0, help_text="KiB/s for the copy, 0 = unlimited")
    sealed_source = models.CharField(max_length=600, blank=True)
    sealed_target = models.CharField(max_length=600, blank=True)
    endpoint = models.JSONField(default=dict, blank=True)
    bytes_copied = models.BigIntegerField(default=0)
    downtime_ms = models.BigIntegerField(null=True, blank=True)
    error = models.CharField(max_length=64, blank=True)
    explanation = models.TextField(blank=True)
    lease_until = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["ve"], condition=Q(state__in=[
                "pending", "preparing", "precopy", "final", "starting", "committed", "rolling_back"]),
                name="one_active_migration_per_ve"),
        ]
        ordering = ["-created_at"]

    def __str__(self):
        return f"migration of VE {self.ve.veid} {self.source_id}->{self.target_id} ({self.state})"


class JobLog(models.Model):
    """An ordered line of a job's log; ``seq`` is the node's event sequence number."""

    class Kind(models.TextChoices):
        STEP = "step"
        LOG = "log"
        ERROR = "error"

    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="logs")
    seq = models.PositiveIntegerField()
    kind = models.CharField(max_length=8, choices=Kind.choices, default=Kind.LOG)
    message = models.TextField()
    ts = models.DateTimeField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["job", "seq"], name="job_log_seq_unique")]
        ordering = ["seq"]


class AppendOnlyQuerySet(models.QuerySet):
    """A queryset that refuses bulk updates and deletes: the rows it manages are history."""

    def update(self, **kwargs):
        raise ValueError(f"{self.model.__name__} rows are append-only")

    def delete(self):
        raise ValueError(f"{self.model.__name__} rows are append-only")


class AuditEvent(models.Model):
    """Append-only record of a privileged action, written in the same transaction as it.

    Values are stored as structured fields, never concatenated into text, so a newline in a
    hostname cannot forge a second entry. Rows refuse updates and deletes: here (the ORM)
    and, on PostgreSQL and SQLite, in the database itself (a trigger made by migration 0011;
    on SQLite a later migration that remakes this table must create it again).

    ``actor`` and ``tenant`` are plain references, not constraints: deleting a user or a
    tenant must not rewrite history (SET_NULL would be an UPDATE of every record), so the
    records keep their ids and ``actor_label``/``tenant_label`` name who and whose.
    ``source`` is the channel (web, api, billing:<name>, cli...); ``client_address`` the
    peer address of the web or API request that made the record (None outside requests).
    """

    ts = models.DateTimeField(auto_now_add=True, db_index=True)
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.DO_NOTHING, db_constraint=False,
                              null=True, blank=True, related_name="+")
    actor_label = models.CharField(max_length=150, blank=True)
    tenant = models.ForeignKey(Tenant, on_delete=models.DO_NOTHING, db_constraint=False, null=True, blank=True,
                               related_name="+")
    tenant_label = models.CharField(max_length=63, blank=True)
    action = models.CharField(max_length=64, db_index=True)
    object_type = models.CharField(max_length=32, blank=True)
    object_id = models.CharField(max_length=64, blank=True)
    result = models.CharField(max_length=16, default="ok")
    source = models.CharField(max_length=64, blank=True)
    client_address = models.GenericIPAddressField(null=True, blank=True)
    detail = models.JSONField(default=dict, blank=True)

    objects = AppendOnlyQuerySet.as_manager()

    class Meta:
        ordering = ["-ts", "-id"]
        indexes = [models.Index(fields=["tenant", "-ts"], name="audit_tenant_ts")]

    def save(self, *args, **kwargs):
        if self.pk is not None:
            raise ValueError("audit events are append-only")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise ValueError("audit events are append-only")


class IPPool(models.Model):
    """A range of addresses (IPv4 or IPv6) that VEs on its nodes get addresses from.

    Every node serving a pool installs an ``unreachable`` route for it, so an address that is
    not assigned to a running VE never routes off the machine.
    """

    name = models.CharField(max_length=63, unique=True)
    network = models.CharField(max_length=64, help_text="CIDR, e.g. 198.18.0.0/24 or fd00:1::/64")
    range_start = models.GenericIPAddressField(null=True, blank=True)
    range_end = models.GenericIPAddressField(null=True, blank=True)
    nodes = models.ManyToManyField(Node, related_name="pools", blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self):
        return f"{self.name} ({self.network})"


class IPAddress(models.Model):
    """An address allocated from a pool to a VE. Unique fleet-wide: the database refuses a
    second allocation of the same address whatever races happen above it."""

    address = models.GenericIPAddressField(unique=True)
    pool = models.ForeignKey(IPPool, on_delete=models.PROTECT, related_name="allocations")
    ve = models.ForeignKey(VE, on_delete=models.CASCADE, related_name="ip_allocations")
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self):
        return self.address


class Plan(models.Model):
    """A named bundle of VE resources that admins sell (OpenVZ's "sample configs").

    A VE created from a plan takes its values; ``addresses`` is how many addresses such a
    VE gets at create, ``bandwidth`` its rate limit each way in bits/s (0 = unlimited).
    A disabled plan stays on the VEs that use it but is not offered for new ones.
    """

    name = models.SlugField(max_length=63, unique=True)
    description = models.CharField(max_length=200, blank=True)
    memory = models.BigIntegerField()
    swap = models.BigIntegerField(default=0)
    disk = models.BigIntegerField()
    cpuunits = models.PositiveIntegerField(default=1000)
    cpulimit = models.PositiveIntegerField(default=0)
    numproc = models.PositiveIntegerField(default=512)
    addresses = models.PositiveIntegerField(default=1)
    bandwidth = models.BigIntegerField(default=0, help_text="bits/s each way, 0 = unlimited")
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self):
        return self.name


class TenantQuota(models.Model):
    """A tenant's limits: one row per tenant, the row that quota checks lock.

    ``None`` means unlimited, 0 means none allowed. Usage is never stored: it is computed
    from the tenant's live VEs, their pending resizes and their address allocations
    (services.quotas), in the same transaction that holds this row's lock, so a check and
    the reservation it guards cannot be separated by a concurrent request. ``version``
    grows with every change; a quota request remembers the version it was made against.
    """

    tenant = models.OneToOneField(Tenant, on_delete=models.CASCADE, related_name="quota")
    max_ves = models.PositiveIntegerField(null=True, blank=True)
    memory = models.BigIntegerField(null=True, blank=True)
    disk = models.BigIntegerField(null=True, blank=True)
    cpuunits = models.BigIntegerField(null=True, blank=True)
    addresses = models.PositiveIntegerField(null=True, blank=True)
    backups = models.PositiveIntegerField(null=True, blank=True)
    version = models.PositiveIntegerField(default=1)
    updated_at = models.DateTimeField(auto_now=True)

    LIMIT_FIELDS = ("max_ves", "memory", "disk", "cpuunits", "addresses", "backups")

    def limits(self) -> dict:
        return {f: getattr(self, f) for f in self.LIMIT_FIELDS}

    def __str__(self):
        return f"quota of {self.tenant_id}"


class QuotaRequest(models.Model):
    """A tenant's request for higher limits, decided by a staff admin who is not the requester.

    ``amounts`` holds the requested new limits (absolute values, by TenantQuota field);
    ``baseline`` the limits when it was asked. ``version`` grows with every transition: a
    decision made against an older version (a stale page, a second click) changes nothing.
    """

    class State(models.TextChoices):
        PENDING = "pending"
        APPROVED = "approved"
        DENIED = "denied"
        SUPERSEDED = "superseded"   # replaced by a newer request of the same tenant

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="quota_requests")
    requester = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True,
                                  related_name="quota_requests")
    amounts = models.JSONField(default=dict)
    baseline = models.JSONField(default=dict, blank=True)
    reason = models.TextField(max_length=2000)
    state = models.CharField(max_length=16, choices=State.choices, default=State.PENDING)
    quota_version = models.PositiveIntegerField(default=1)
    version = models.PositiveIntegerField(default=1)
    granted = models.JSONField(default=dict, blank=True)
    decided_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True,
                                   related_name="quota_decisions")
    decided_by_label = models.CharField(max_length=150, blank=True)
    decided_at = models.DateTimeField(null=True, blank=True)
    decision_reason = models.TextField(max_length=2000, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["tenant"], condition=Q(state="pending"),
                                    name="one_pending_quota_request_per_tenant"),
        ]
        indexes = [models.Index(fields=["state", "created_at"]), models.Index(fields=["tenant", "-created_at"])]
        ordering = ["-created_at"]

    def __str__(self):
        return f"quota request {self.id} ({self.state})"


class Suspension(models.Model):
    """A reason a VE, or every VE of a tenant, must stay stopped.

    ``ve`` is null for a tenant-wide suspension. Each source (admin, billing, abuse) has at
    most one active suspension per object, and lifting it leaves the other sources' in
    force: a VE runs again only when no active suspension applies to it or its tenant.
    """

    class Source(models.TextChoices):
        ADMIN = "admin"
        BILLING = "billing"
        ABUSE = "abuse"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="suspensions")
    ve = models.ForeignKey(VE, on_delete=models.CASCADE, related_name="suspensions", null=True, blank=True)
    source = models.CharField(max_length=16, choices=Source.choices)
    reason = models.CharField(max_length=500)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True,
                                   related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    lifted_at = models.DateTimeField(null=True, blank=True)
    lifted_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True,
                                  related_name="+")
    lift_reason = models.CharField(max_length=500, blank=True)
    # The VE ran and this suspension stopped it: billing's unsuspend starts it again, since
    # a paid-up customer expects the service back as it was (staff lifts leave it to them).
    stopped_running = models.BooleanField(default=False)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["ve", "source"], condition=Q(lifted_at__isnull=True, ve__isnull=False),
                                    name="one_active_suspension_per_ve_source"),
            models.UniqueConstraint(fields=["tenant", "source"], condition=Q(lifted_at__isnull=True, ve__isnull=True),
                                    name="one_active_suspension_per_tenant_source"),
        ]
        indexes = [models.Index(fields=["tenant", "lifted_at"])]
        ordering = ["-created_at"]

    @property
    def active(self) -> bool:
        return self.lifted_at is None

    def __str__(self):
        what = f"VE {self.ve.veid}" if self.ve_id else f"tenant {self.tenant.slug}"
        return f"{what} suspended ({self.source})"


class DomainEvent(models.Model):
    """An append-only outbox of business events (``quota_request.decided``, ...), written in
    the same transaction as the change; the billing issue delivers them as webhooks and sets
    ``delivered_at``, the one field that may change."""

    id = models.BigAutoField(primary_key=True)
    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    kind = models.CharField(max_length=64, db_index=True)
    tenant = models.ForeignKey(Tenant, on_delete=models.SET_NULL, null=True, blank=True, related_name="events")
    payload = models.JSONField(default=dict)
    created_at = models.DateTimeField(auto_now_add=True)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["id"]

    def __str__(self):
        return f"{self.kind} {self.uuid}"


class BillingAccount(models.Model):
    """A billing system (WHMCS, Blesta, ...) that drives Hako through ``/api/billing/v1``.

    It is its own principal: it sees only the tenants and VEs it created or linked
    (BillingLink), so two billing systems on one panel never see each other's objects.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.SlugField(max_length=63, unique=True)
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self):
        return self.name


class HashedToken(models.Model):
    """What every bearer token row holds (panel/services/secrets_tokens.py makes them): a
    random prefix that finds the row, the SHA-256 of the whole token, and its life."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    prefix = models.CharField(max_length=16, unique=True)
    token_hash = models.CharField(max_length=64)
    expires_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        abstract = True


class IdempotencyRecordBase(models.Model):
    """An ``Idempotency-Key`` as stored for a replay: inserted (committed) before the call
    runs, so a concurrent duplicate finds it without a response (409) and a later replay gets
    the stored status and body; ``request_hash`` refuses the same key on another body."""

    key = models.CharField(max_length=255)
    method = models.CharField(max_length=8)
    path = models.CharField(max_length=512)
    request_hash = models.CharField(max_length=64)
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    response_body = models.JSONField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    completed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        abstract = True


class BillingToken(HashedToken):
    """A bearer token of a billing account: ``hko_<prefix>_<secret>``, shown once.

    Only the SHA-256 of the whole token is stored; ``prefix`` (random, not secret) finds the
    row, so a lookup is one indexed query and a constant-time hash comparison.
    """

    account = models.ForeignKey(BillingAccount, on_delete=models.CASCADE, related_name="tokens")
    scopes = models.JSONField(default=list, blank=True)

    def __str__(self):
        return f"hko_{self.prefix}_… ({self.account_id})"


class BillingLink(models.Model):
    """Maps a billing system's own id (``external_id``) to a Hako tenant or VE, so billing
    URLs accept ``ext:<external_id>``; the link is also what scopes a billing account's view
    (an object without a link of that account is a 404 to it). ``external_id`` is optional
    (NULL: linked without one) and unique per account and kind."""

    class Kind(models.TextChoices):
        TENANT = "tenant"
        VE = "ve"

    account = models.ForeignKey(BillingAccount, on_delete=models.CASCADE, related_name="links")
    kind = models.CharField(max_length=8, choices=Kind.choices)
    external_id = models.CharField(max_length=128, null=True, blank=True)
    object_id = models.UUIDField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["account", "kind", "external_id"], name="billing_link_external_unique"),
            models.UniqueConstraint(fields=["account", "kind", "object_id"], name="billing_link_object_unique"),
        ]


class IdempotencyRecord(IdempotencyRecordBase):
    """One ``Idempotency-Key`` of a billing account."""

    account = models.ForeignKey(BillingAccount, on_delete=models.CASCADE, related_name="idempotency_records")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["account", "key"], name="idempotency_key_unique")]


def new_webhook_secret() -> str:
    """A Standard Webhooks secret: ``whsec_`` and 32 random bytes in base64."""
    import base64

    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


class WebhookEndpoint(models.Model):
    """A URL of a billing account that receives its events (Standard Webhooks), signed with
    its own ``secret`` (shown once, at create). ``event_types`` empty means every type. An
    endpoint answering 410 Gone is disabled (``disabled_reason`` says why)."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    account = models.ForeignKey(BillingAccount, on_delete=models.CASCADE, related_name="webhook_endpoints")
    url = models.URLField(max_length=2000)
    secret = models.CharField(max_length=100, default=new_webhook_secret)
    event_types = models.JSONField(default=list, blank=True)
    enabled = models.BooleanField(default=True)
    disabled_reason = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    def wants(self, kind: str) -> bool:
        return not self.event_types or kind in self.event_types

    def __str__(self):
        return f"webhook {self.url} ({self.account_id})"


class WebhookDelivery(models.Model):
    """One event to one endpoint: the exact ``payload`` sent at every attempt (same
    ``webhook-id`` each time), the attempts made and when the next one is due. ``log`` holds
    one entry per attempt ({at, status_code, error, duration_ms})."""

    class Status(models.TextChoices):
        PENDING = "pending"
        SUCCEEDED = "succeeded"
        FAILED = "failed"          # gave up (max attempts, 410, endpoint disabled)

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    endpoint = models.ForeignKey(WebhookEndpoint, on_delete=models.CASCADE, related_name="deliveries")
    event = models.ForeignKey(DomainEvent, on_delete=models.CASCADE, related_name="deliveries")
    event_type = models.CharField(max_length=64)
    payload = models.JSONField(default=dict)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    last_status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    last_error = models.CharField(max_length=500, blank=True)
    log = models.JSONField(default=list, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["endpoint", "event"], name="one_delivery_per_endpoint_event")]
        indexes = [models.Index(fields=["status", "next_attempt_at"])]
        ordering = ["-created_at"]

    @property
    def message_id(self) -> str:
        """The ``webhook-id``: the event's, the same across retries and endpoints."""
        return f"msg_{self.event.uuid.hex}"


class UsageRecord(models.Model):
    """One closed hour of one meter of one VE, in base units; immutable once written.

    ``uid`` is stable (uuid5 of VE, meter and hour start), so a rollup run twice writes
    nothing new and a billing system may use it as its own idempotency key; ``seq`` is the
    export cursor. Tenant, plan and the VE's hostname are copied at write time so records
    outlive a termination unchanged.
    """

    seq = models.BigAutoField(primary_key=True)
    uid = models.UUIDField(unique=True, editable=False)
    ve = models.ForeignKey(VE, on_delete=models.PROTECT, related_name="usage_records")
    tenant = models.ForeignKey(Tenant, on_delete=models.PROTECT, related_name="usage_records")
    meter = models.CharField(max_length=32)
    unit = models.CharField(max_length=16)
    quantity = models.DecimalField(max_digits=30, decimal_places=6)
    plan = models.CharField(max_length=63, blank=True)
    period_start = models.DateTimeField()
    period_end = models.DateTimeField()
    created_at = models.DateTimeField(auto_now_add=True)

    objects = AppendOnlyQuerySet.as_manager()

    class Meta:
        ordering = ["seq"]
        indexes = [models.Index(fields=["ve", "period_start"])]


class UsageMark(models.Model):
    """Where a VE's usage rollup stands: hours before ``closed_until`` are closed, and
    ``traffic`` holds the cumulative traffic totals (VE.traffic) seen at that moment, so
    the next hour's traffic is the growth since."""

    ve = models.OneToOneField(VE, on_delete=models.CASCADE, related_name="usage_mark", primary_key=True)
    closed_until = models.DateTimeField()
    traffic = models.JSONField(default=dict, blank=True)
    # UsageSample.totals' cumulative cpu_ns and mem_byte_seconds at that moment, likewise.
    meters = models.JSONField(default=dict, blank=True)


class UsageSample(models.Model):
    """A VE's CPU and memory use as the heartbeats' cgroup samples add up
    (services.jobs.accumulate_usage), for the hourly usage records.

    ``totals``: {"cpu_ns", "mem_byte_seconds" (cumulative), "mem_peak_bytes" (since the last
    closed hour; the rollup resets it), "raw": the last sample (cpu_ns, mem_bytes, boot,
    at)}. A row of its own rather than a VE field: the heartbeat and the rollup lock it,
    and no other code path does, so neither waits on VE or node row locks."""

    ve = models.OneToOneField(VE, on_delete=models.CASCADE, related_name="usage_sample", primary_key=True)
    totals = models.JSONField(default=dict, blank=True)
    updated_at = models.DateTimeField(auto_now=True)


class PersonalToken(HashedToken):
    """A customer's API token for ``/api/v1``: ``hkp_<prefix>_<secret>``, shown once.

    Bound to one tenant and capped at ``role``: the effective role of a request is the lower
    of ``role`` and the user's membership role at that moment (no membership: the token
    stops working). Only the SHA-256 of the whole token is stored, like BillingToken.
    """

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="api_tokens")
    role = models.CharField(max_length=16, choices=Membership.Role.choices)
    name = models.CharField(max_length=100, blank=True)

    def __str__(self):
        return f"hkp_{self.prefix}_… ({self.user_id}@{self.tenant_id})"


class CustomerIdempotencyRecord(IdempotencyRecordBase):
    """An ``Idempotency-Key`` of a personal token on ``/api/v1``."""

    token = models.ForeignKey(PersonalToken, on_delete=models.CASCADE, related_name="idempotency_records")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["token", "key"], name="customer_idempotency_key_unique")]


class LoginLink(models.Model):
    """A one-time, short-lived sign-in link a billing account minted for a tenant's owner
    (``/sso/<token>``). Only the SHA-256 of the token is stored; ``used_at`` is set by the
    one conditional UPDATE that consumes it."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    account = models.ForeignKey(BillingAccount, on_delete=models.CASCADE, related_name="login_links")
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="login_links")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="login_links")
    token_hash = models.CharField(max_length=64, unique=True)
    expires_at = models.DateTimeField()
    used_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)


class ConsoleSession(models.Model):
    """One console opened on a VE (browser terminal or ``vzctl enter``): who, when, for how
    long and how many bytes. A row with no ``ended_at`` whose ``last_seen_at`` is recent is
    open, and counts against the per-VE and per-user bounds (services.console)."""

    class Kind(models.TextChoices):
        SHELL = "shell"   # a root shell through lxc-attach
        TTY = "tty"       # the VE's own console (/dev/console) through lxc-console

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    ve = models.ForeignKey(VE, on_delete=models.CASCADE, related_name="console_sessions")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True)
    actor_label = models.CharField(max_length=150, blank=True)
    kind = models.CharField(max_length=8, choices=Kind.choices, default=Kind.SHELL)
    source = models.CharField(max_length=16, blank=True)
    started_at = models.DateTimeField(auto_now_add=True)
    last_seen_at = models.DateTimeField(auto_now_add=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    bytes_in = models.BigIntegerField(default=0)
    bytes_out = models.BigIntegerField(default=0)
    exit_code = models.IntegerField(null=True, blank=True)
    close_reason = models.CharField(max_length=32, blank=True)

    class Meta:
        indexes = [models.Index(fields=["ve", "ended_at"], name="console_ve_open"),
                   models.Index(fields=["user", "ended_at"], name="console_user_open")]
        ordering = ["-started_at"]

    def __str__(self):
        return f"console {self.kind} of VE {self.ve_id} by {self.actor_label or '-'}"
