"""The billing integration: tokens of billing accounts, external ids, and the verbs every
billing system speaks (create account, create service, suspend, unsuspend, terminate,
change plan), each a thin layer over the VE, plan and suspension services.

A billing account acts on the fleet as the local administrator would (``actor=None``), with
``source="billing:<account>"`` on every audit record; what it may reach is limited here, not
by a role: only tenants and VEs linked to it (BillingLink) exist for it, it picks enabled
plans only, suspends and lifts only the ``billing`` source, and a change beyond the tenant's
quota is refused as ``approval-required`` (quota decisions stay with staff).
"""
from __future__ import annotations

import re
import uuid

from django.contrib.auth import get_user_model
from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.text import slugify

from panel.models import (VE, BillingAccount, BillingLink, BillingToken, Job, Membership, OSTemplate, Plan,
                          Suspension, Tenant)

from .audit import audit
from .errors import Conflict, Forbidden, InvalidInput, NotFound, QuotaExceeded
from .quotas import check_text
from .secrets_tokens import expiry_after, hash_matches, new_token, token_hash, token_pattern
from .webhooks import event_emit

TOKEN_RE = token_pattern("hko")
SCOPES = ("catalog:read", "accounts:write", "services:read", "services:write", "webhooks:manage")
EXTERNAL_ID_RE = re.compile(r"^[A-Za-z0-9._:@-]{1,128}$")
ACCOUNT_NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


def _source(account: BillingAccount) -> str:
    return f"billing:{account.name}"


# --- accounts and tokens ------------------------------------------------------------------

def billing_account_get_or_create(*, name: str) -> BillingAccount:
    """The billing account called ``name`` (a slug), made if missing (local admin)."""
    if not isinstance(name, str) or not ACCOUNT_NAME_RE.match(name):
        raise InvalidInput("a billing account name is lower-case letters, digits and '-'", field="account")
    with transaction.atomic():
        account, created = BillingAccount.objects.get_or_create(name=name)
        if created:
            audit(action="billing_account.create", obj=account, detail={"name": name})
    return account


def billing_token_create(*, account: BillingAccount, scopes=None, expires_days: int | None = None,
                         source: str = "") -> tuple[BillingToken, str]:
    """A new token for ``account``: returns the row and the token text, which is shown
    once and stored only as its SHA-256. ``scopes`` default to all of SCOPES."""
    scopes = list(SCOPES) if scopes is None else list(dict.fromkeys(scopes))
    unknown = [s for s in scopes if s not in SCOPES]
    if unknown or not scopes:
        raise InvalidInput(f"scopes must be among: {', '.join(SCOPES)}", field="scopes")
    expires_at = expiry_after(expires_days)
    prefix, text = new_token("hko")
    with transaction.atomic():
        token = BillingToken.objects.create(account=account, prefix=prefix, token_hash=token_hash(text),
                                            scopes=scopes, expires_at=expires_at)
        audit(action="billing_token.create", obj=token, source=source,
              detail={"account": account.name, "prefix": prefix, "scopes": scopes,
                      "expires_at": expires_at.isoformat() if expires_at else None})
    return token, text


def billing_token_check(text: str) -> BillingToken | None:
    """The live token ``text`` stands for, or None (malformed, unknown, wrong secret,
    revoked, expired, or its account disabled). Marks it used."""
    m = TOKEN_RE.match(text or "")
    if not m:
        return None
    token = BillingToken.objects.select_related("account").filter(prefix=m.group(1)).first()
    if token is None or not hash_matches(token.token_hash, text):
        return None
    now = timezone.now()
    if token.revoked_at or (token.expires_at and token.expires_at <= now) or not token.account.enabled:
        return None
    BillingToken.objects.filter(pk=token.pk).update(last_used_at=now)
    return token


# --- external ids ---------------------------------------------------------------------------

def check_external_id(value, *, field: str = "external_id", required: bool = False) -> str | None:
    if value is None or value == "":
        if required:
            raise InvalidInput(f"give {field}", field=field)
        return None
    if not isinstance(value, str) or not EXTERNAL_ID_RE.match(value):
        raise InvalidInput(f"{field} must be 1-128 letters, digits or . _ : @ -", field=field)
    return value


def _link_lookup(account: BillingAccount, kind: str, ref) -> BillingLink:
    """The link of ``account`` that ``ref`` names: a Hako UUID or ``ext:<external_id>``."""
    what = "account" if kind == BillingLink.Kind.TENANT else "service"
    links = BillingLink.objects.filter(account=account, kind=kind)
    if isinstance(ref, str) and ref.startswith("ext:"):
        link = links.filter(external_id=ref[4:]).first() if EXTERNAL_ID_RE.match(ref[4:]) else None
    else:
        try:
            link = links.filter(object_id=uuid.UUID(str(ref))).first()
        except ValueError:
            link = None
    if link is None:
        raise NotFound(f"{what} {str(ref)[:140]!r} not found")
    return link


def tenant_resolve(account: BillingAccount, ref) -> tuple[Tenant, BillingLink]:
    link = _link_lookup(account, BillingLink.Kind.TENANT, ref)
    tenant = Tenant.objects.filter(pk=link.object_id).first()
    if tenant is None:
        raise NotFound(f"account {str(ref)[:140]!r} not found")
    return tenant, link


def ve_resolve(account: BillingAccount, ref) -> tuple[VE, BillingLink]:
    """The VE (destroyed ones too: a terminated service stays readable) and its link."""
    link = _link_lookup(account, BillingLink.Kind.VE, ref)
    ve = VE.objects.select_related("tenant", "node", "template", "plan").filter(pk=link.object_id).first()
    if ve is None:
        raise NotFound(f"service {str(ref)[:140]!r} not found")
    return ve, link


def _link(account, kind, external_id, object_id, what: str) -> BillingLink:
    try:
        with transaction.atomic():
            return BillingLink.objects.create(account=account, kind=kind, external_id=external_id,
                                              object_id=object_id)
    except IntegrityError:
        raise Conflict(f"{what} with external_id {external_id!r} exists already", code=f"{what}-exists",
                       field="external_id") from None


# --- catalog ----------------------------------------------------------------------------------

def billing_plans():
    """Plans a billing system may sell: the enabled ones."""
    return Plan.objects.filter(enabled=True).order_by("name")


def billing_templates():
    return OSTemplate.objects.filter(enabled=True).order_by("name")


# --- verbs --------------------------------------------------------------------------------------

def billing_account_create(*, account: BillingAccount, name: str, email: str, external_id=None,
                           slug: str | None = None) -> tuple[Tenant, bool]:
    """A tenant with an owner user (login by password reset or SSO later), linked to
    ``account``. The same ``external_id`` again returns the existing tenant (created False)."""
    external_id = check_external_id(external_id)
    name = check_text(name, field="name", limit=200)
    email = check_text(email, field="email", limit=254)
    if "@" not in email or " " in email:
        raise InvalidInput("email must be an e-mail address", field="email")
    if external_id is not None:
        link = BillingLink.objects.filter(account=account, kind=BillingLink.Kind.TENANT,
                                          external_id=external_id).first()
        if link is not None and Tenant.objects.filter(pk=link.object_id).exists():
            return Tenant.objects.get(pk=link.object_id), False
    base = slugify(slug or name)[:50].strip("-") or "tenant"
    if slug is not None and slugify(slug) != slug:
        raise InvalidInput("slug must be lower-case letters, digits and '-'", field="slug")
    try:
        return _account_create(account, name, email, external_id, base, slug), True
    except IntegrityError:  # a concurrent create took the slug or the username first
        raise Conflict("another request is creating a similar account; try again", code="busy") from None


def _account_create(account, name, email, external_id, base, slug) -> Tenant:
    User = get_user_model()
    with transaction.atomic():
        candidate, n = base, 1
        while Tenant.objects.filter(slug=candidate).exists():
            if slug is not None:
                raise Conflict(f"tenant {slug} exists already", field="slug")
            n += 1
            candidate = f"{base}-{n}"
        tenant = Tenant.objects.create(slug=candidate, name=name)
        username, n = email[:150], 1
        while User.objects.filter(username=username).exists():
            n += 1
            username = f"{email[:140]}-{n}"
        user = User.objects.create_user(username, email, None)  # unusable password
        Membership.objects.create(user=user, tenant=tenant, role=Membership.Role.OWNER)
        _link(account, BillingLink.Kind.TENANT, external_id, tenant.pk, "account")
        audit(action="tenant.create", tenant=tenant, obj=tenant, source=_source(account),
              detail={"slug": tenant.slug, "name": name, "owner": username, "external_id": external_id})
    return tenant


def _approval_required(e: QuotaExceeded) -> Forbidden:
    return Forbidden(f"{e.message} Billing cannot approve quota: a staff administrator must raise the "
                     "tenant's limits first.", code="approval-required", field="quota")


def _plan(name) -> Plan:
    if not isinstance(name, str):
        raise InvalidInput("plan must be a plan name", field="plan")
    plan = billing_plans().filter(name=name).first()
    if plan is None:
        raise NotFound(f"plan {name[:63]!r} does not exist", field="plan")
    return plan


def billing_service_create(*, account: BillingAccount, tenant_ref, plan, template: str, hostname=None,
                           external_id=None, root_password=None, ssh_keys=None) -> tuple[VE, Job]:
    """Create a VE of a linked tenant from an enabled plan; Hako picks the node and the
    addresses. The VE and its link are one transaction with the create job, which also
    starts the VE: a billing system expects an active service (status ``provisioning``
    until it runs)."""
    from .ves import ve_create

    tenant, _ = tenant_resolve(account, tenant_ref)
    external_id = check_external_id(external_id)
    the_plan = _plan(plan)
    if external_id is not None and BillingLink.objects.filter(
            account=account, kind=BillingLink.Kind.VE, external_id=external_id).exists():
        raise Conflict(f"service with external_id {external_id!r} exists already", code="service-exists",
                       field="external_id")
    try:
        with transaction.atomic():
            job = ve_create(tenant=tenant, actor=None, template=template, hostname=hostname, plan=the_plan,
                            root_password=root_password, ssh_keys=ssh_keys, source=_source(account),
                            start=True)
            _link(account, BillingLink.Kind.VE, external_id, job.ve_id, "service")
            event_emit("service.created", tenant_id=tenant.pk, ve=job.ve, status="provisioning",
                       plan=the_plan.name, source=_source(account))
    except QuotaExceeded as e:
        raise _approval_required(e) from None
    return VE.objects.select_related("tenant", "plan", "template").get(pk=job.ve_id), job


def _live(ve: VE, verb: str) -> None:
    if ve.state == VE.State.DESTROYED:
        raise Conflict(f"service VE {ve.veid} is terminated; it cannot be {verb}", code="terminated")


def billing_service_suspend(*, account: BillingAccount, ve: VE, reason: str = "") -> list[Job]:
    """Suspend for the ``billing`` source (a repeat is a no-op); returns the stop jobs."""
    from .suspensions import ve_suspend

    _live(ve, "suspended")
    susp = ve_suspend(ve=ve, by=Suspension.Source.BILLING, reason=reason or "suspended by billing",
                      actor=None, source=_source(account))
    return susp.stop_jobs


def billing_service_unsuspend(*, account: BillingAccount, ve: VE, reason: str = "") -> Job | None:
    """Lift the ``billing`` suspension only; admin and abuse holds stay (a repeat is a no-op).
    A VE that billing's suspension stopped while it ran is started again once nothing else
    holds it; returns that start job, or None."""
    from .suspensions import ve_unsuspend

    _live(ve, "unsuspended")
    susp = ve_unsuspend(ve=ve, by=Suspension.Source.BILLING, reason=reason, actor=None, source=_source(account),
                        restore_power=True)
    return getattr(susp, "start_job", None)


def billing_service_terminate(*, account: BillingAccount, ve: VE) -> tuple[Job | None, bool]:
    """Destroy the VE; returns (job, started). Already destroyed: (None, False); a destroy
    already under way: (that job, False)."""
    from .ves import ve_destroy

    if ve.state == VE.State.DESTROYED:
        return None, False
    running = Job.objects.filter(ve=ve, kind="destroy", state__in=Job.ACTIVE).first()
    if running is not None:
        return running, False
    return ve_destroy(ve=ve, actor=None, source=_source(account)), True


def billing_service_change_plan(*, account: BillingAccount, ve: VE, plan) -> Job | None:
    """Resize the VE to an enabled plan within its tenant's quota; beyond it the change is
    refused as ``approval-required``. Already on that plan with its values: None."""
    from .plans import plan_ve_values
    from .ves import ve_change_plan

    _live(ve, "changed")
    the_plan = _plan(plan)
    if ve.plan_id == the_plan.pk and all(getattr(ve, f) == v for f, v in plan_ve_values(the_plan).items()):
        return None
    try:
        return ve_change_plan(ve=ve, plan=the_plan, actor=None, source=_source(account))
    except QuotaExceeded as e:
        raise _approval_required(e) from None


def service_status(ve: VE) -> str:
    """The billing view of a VE: provisioning, active, suspended, terminated, error."""
    from .suspensions import active_suspensions

    if ve.state == VE.State.DESTROYED:
        return "terminated"
    if active_suspensions(ve):
        return "suspended"
    if ve.state == VE.State.CREATING:
        return "provisioning"
    if ve.state == VE.State.ERROR:
        return "error"
    return "active"
