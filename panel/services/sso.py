"""One-time sign-in links a billing system mints for a tenant's owner (WHMCS
ServiceSingleSignOn): ``/sso/<token>``, valid for LINK_TTL, usable once. Opening the link
(GET) only asks for a confirmation; the confirming POST uses it up and signs in.

Only the SHA-256 of the token is stored; consuming is one conditional UPDATE (unused and
not expired), so two concurrent clicks cannot both sign in.
"""
from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta

from django.db import transaction
from django.utils import timezone

from panel.models import BillingAccount, LoginLink, Membership, Tenant

from .audit import audit
from .errors import Conflict

LINK_TTL = timedelta(minutes=5)


def _hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def tenant_owner(tenant: Tenant):
    m = (Membership.objects.select_related("user").filter(tenant=tenant, role=Membership.Role.OWNER,
                                                          user__is_active=True).order_by("id").first())
    return m.user if m else None


def login_link_create(*, account: BillingAccount, tenant: Tenant) -> tuple[LoginLink, str]:
    """A link for ``tenant``'s (first active) owner; returns the row and the token text."""
    user = tenant_owner(tenant)
    if user is None:
        raise Conflict(f"tenant {tenant.slug} has no active owner to sign in", code="no-owner")
    text = secrets.token_urlsafe(32)
    with transaction.atomic():
        link = LoginLink.objects.create(account=account, tenant=tenant, user=user, token_hash=_hash(text),
                                        expires_at=timezone.now() + LINK_TTL)
        audit(action="login_link.create", tenant=tenant, obj=link, source=f"billing:{account.name}",
              detail={"user": user.get_username(), "expires_at": link.expires_at.isoformat()})
    return link, text


def login_link_peek(text: str) -> tuple[LoginLink | None, str]:
    """(link, "ok") if ``text`` is a live link, else (None, why) as login_link_consume
    says; reads only. The GET of ``/sso/<token>`` shows this, so that a mail scanner or a
    link preview that fetches the URL neither uses the link up nor signs anyone in."""
    if not isinstance(text, str) or not 20 <= len(text) <= 100:
        return None, "unknown"
    link = LoginLink.objects.select_related("user", "tenant").filter(token_hash=_hash(text)).first()
    if link is None:
        return None, "unknown"
    if link.used_at:
        return None, "used"
    if link.expires_at <= timezone.now():
        return None, "expired"
    if not (link.user.is_active and Membership.objects.filter(
            user=link.user, tenant=link.tenant, role=Membership.Role.OWNER).exists()):
        return None, "not-owner"
    return link, "ok"


def login_link_consume(text: str) -> tuple[LoginLink | None, str]:
    """(link, "ok") if ``text`` is a live link, now used; else (None, why): ``unknown``,
    ``used``, ``expired`` or ``not-owner`` (the user is no longer an active owner)."""
    if not isinstance(text, str) or not 20 <= len(text) <= 100:
        return None, "unknown"
    digest = _hash(text)
    now = timezone.now()
    with transaction.atomic():
        taken = LoginLink.objects.filter(token_hash=digest, used_at__isnull=True, expires_at__gt=now).update(used_at=now)
        link = LoginLink.objects.select_related("user", "tenant", "account").filter(token_hash=digest).first()
        if link is None:
            why = "unknown"
        elif not taken:
            why = "used" if link.used_at else "expired"
        elif not (link.user.is_active and Membership.objects.filter(
                user=link.user, tenant=link.tenant, role=Membership.Role.OWNER).exists()):
            why = "not-owner"
        else:
            why = "ok"
        audit(action="login_link.use", actor=link.user if link and why == "ok" else None,
              tenant=link.tenant if link else None, obj=link, result="ok" if why == "ok" else "denied",
              source=f"billing:{link.account.name}" if link else "sso", detail={"why": why})
    return (link if why == "ok" else None), why
