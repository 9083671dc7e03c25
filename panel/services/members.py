"""Members of a tenant: who may act on it and with which role (owner, operator, viewer).

Only owners manage members. A tenant always keeps at least one owner: demoting or removing
the last one is refused (a tenant nobody can manage would need a staff admin to recover).
Every change is audited in the same transaction; the tenant row is locked so that two
owners demoting each other at once cannot both succeed.
"""
from __future__ import annotations

import re

from django.contrib.auth import get_user_model
from django.contrib.auth.tokens import default_token_generator
from django.core.exceptions import ValidationError
from django.core.mail import send_mail
from django.core.validators import validate_email
from django.db import transaction
from django.urls import reverse
from django.utils.encoding import force_bytes
from django.utils.http import urlsafe_base64_encode
from django.utils.translation import gettext as _

from panel.access import require_role
from panel.models import Membership, Tenant

from .audit import audit
from .errors import Conflict, InvalidInput, NotFound

ROLES = tuple(Membership.Role.values)
_USERNAME_JUNK = re.compile(r"[^a-zA-Z0-9.@+_-]")


def members_of(tenant: Tenant):
    """The tenant's memberships with their users, owners first."""
    order = {Membership.Role.OWNER: 0, Membership.Role.OPERATOR: 1, Membership.Role.VIEWER: 2}
    rows = Membership.objects.filter(tenant=tenant).select_related("user")
    return sorted(rows, key=lambda m: (order.get(m.role, 9), m.user.username))


def _check_role(role) -> str:
    if role not in ROLES:
        raise InvalidInput(_("role must be one of %(roles)s") % {"roles": ", ".join(ROLES)}, field="role")
    return role


def _locked_member(tenant: Tenant, member_id) -> Membership:
    """The membership ``member_id`` of ``tenant`` (locked); another tenant's is NotFound."""
    try:
        return Membership.objects.select_for_update().select_related("user").get(pk=int(member_id), tenant=tenant)
    except (Membership.DoesNotExist, ValueError, TypeError):
        raise NotFound(_("member not found")) from None


def _refuse_last_owner(tenant: Tenant, member: Membership, what: str) -> None:
    if member.role == Membership.Role.OWNER and \
            not Membership.objects.filter(tenant=tenant, role=Membership.Role.OWNER).exclude(pk=member.pk).exists():
        raise Conflict(_("%(user)s is the last owner of %(tenant)s: make another member owner first")
                       % {"user": member.user.username, "tenant": tenant.slug}, field="role", code="last-owner")


def member_role_set(*, tenant: Tenant, member_id, role: str, actor=None, source: str = "") -> Membership:
    """Give a member another role (owners only). Demoting the last owner is a Conflict."""
    require_role(actor, tenant, Membership.Role.OWNER, what="tenant", source=source)
    role = _check_role(role)
    with transaction.atomic():
        Tenant.objects.select_for_update().get(pk=tenant.pk)
        member = _locked_member(tenant, member_id)
        if member.role == role:
            return member
        if role != Membership.Role.OWNER:
            _refuse_last_owner(tenant, member, "demote them")
        old, member.role = member.role, role
        member.save(update_fields=["role"])
        audit(action="member.role", actor=actor, tenant=tenant, obj=member.user, source=source,
              detail={"user": member.user.username, "from": old, "to": role})
    return member


def member_remove(*, tenant: Tenant, member_id, actor=None, source: str = "") -> None:
    """Remove a member from the tenant (owners only); the user account stays. Removing
    the last owner is a Conflict."""
    require_role(actor, tenant, Membership.Role.OWNER, what="tenant", source=source)
    with transaction.atomic():
        Tenant.objects.select_for_update().get(pk=tenant.pk)
        member = _locked_member(tenant, member_id)
        _refuse_last_owner(tenant, member, "remove them")
        member.delete()
        audit(action="member.remove", actor=actor, tenant=tenant, obj=member.user, source=source,
              detail={"user": member.user.username, "role": member.role})


def _free_username(email: str) -> str:
    User = get_user_model()
    base = _USERNAME_JUNK.sub("", email.split("@", 1)[0])[:140] or "user"
    name, n = base, 1
    while User.objects.filter(username__iexact=name).exists():
        n += 1
        name = f"{base}{n}"
    return name


def member_invite(*, tenant: Tenant, email: str, role: str, actor=None, source: str = "",
                  base_url: str = "") -> tuple[Membership, bool]:
    """Add the user with ``email`` to the tenant with ``role`` (owners only) and return
    ``(membership, created)``; ``created``: a new account was made for the address.

    A new account has no usable password: it gets a mail with a one-time link (Django's
    password-reset token, ``base_url`` + the reset-confirm path) to choose one. An existing
    user is added as is. Already a member: Conflict.
    """
    require_role(actor, tenant, Membership.Role.OWNER, what="tenant", source=source)
    return _invite(tenant=tenant, email=email, role=role, actor=actor, source=source, base_url=base_url)


def _invite(*, tenant, email, role, actor, source, base_url, action="member.invite"):
    role = _check_role(role)
    email = (email if isinstance(email, str) else "").strip()
    try:
        if len(email) > 254:
            raise ValidationError("too long")
        validate_email(email)
    except ValidationError:
        raise InvalidInput(_("enter a valid e-mail address"), field="email") from None
    User = get_user_model()
    with transaction.atomic():
        Tenant.objects.select_for_update().get(pk=tenant.pk)
        users = list(User.objects.filter(email__iexact=email)[:2])
        if len(users) > 1:
            raise Conflict(_("several accounts use this e-mail address: ask a staff administrator"), field="email")
        created = not users
        if created:
            user = User.objects.create_user(_free_username(email), email)  # no password: unusable
        else:
            user = users[0]
            if Membership.objects.filter(tenant=tenant, user=user).exists():
                raise Conflict(_("%(email)s is already a member of %(tenant)s")
                               % {"email": email, "tenant": tenant.slug}, field="email")
        member = Membership.objects.create(tenant=tenant, user=user, role=role)
        audit(action=action, actor=actor, tenant=tenant, obj=user, source=source,
              detail={"user": user.username, "email": email, "role": role, "new_account": created})
        if created:
            # After the commit: a mail for an account that was rolled back would be a dead link.
            transaction.on_commit(lambda: send_password_set_mail(user, tenant, base_url))
    return member, created


def send_password_set_mail(user, tenant: Tenant, base_url: str = "") -> None:
    """Mail ``user`` a one-time link to choose a password (the token of Django's password
    reset: it stops working once a password is set)."""
    path = reverse("password_reset_confirm", kwargs={
        "uidb64": urlsafe_base64_encode(force_bytes(user.pk)), "token": default_token_generator.make_token(user)})
    link = base_url.rstrip("/") + path
    send_mail(
        subject=f"Hako: you were added to {tenant.name}",
        message=(f"You were added to {tenant.name} ({tenant.slug}) on Hako as {user.username}.\n\n"
                 f"Choose your password here (the link works once):\n{link}\n"),
        from_email=None, recipient_list=[user.email])


SLUG_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


def tenant_create(*, slug: str, name: str, owner_email: str, actor=None, source: str = "",
                  base_url: str = "") -> Tenant:
    """Create a tenant with its first owner (staff). The owner is found or created by
    e-mail like ``member_invite`` (a new account gets a mail to choose its password).
    A taken slug is a Conflict; the tenant, the membership and both audit records are one
    transaction."""
    from panel.access import require_staff

    from .quotas import check_text

    require_staff(actor, what="creating tenants", source=source)
    if not isinstance(slug, str) or not SLUG_RE.match(slug):
        raise InvalidInput(_("slug: lower-case letters, digits and '-', at most 63"), field="slug")
    name = check_text(name, field="name", limit=200)
    with transaction.atomic():
        if Tenant.objects.filter(slug=slug).exists():
            raise Conflict(_("tenant %(slug)s already exists") % {"slug": slug}, field="slug")
        tenant = Tenant.objects.create(slug=slug, name=name)
        audit(action="tenant.create", actor=actor, tenant=tenant, obj=tenant, source=source,
              detail={"slug": slug, "name": name, "owner": owner_email if isinstance(owner_email, str) else ""})
        _invite(tenant=tenant, email=owner_email, role=Membership.Role.OWNER, actor=actor, source=source,
                base_url=base_url, action="member.invite")
    return tenant
