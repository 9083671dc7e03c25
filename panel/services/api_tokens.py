"""Personal API tokens of customers (``/api/v1``): ``hkp_<prefix>_<secret>``.

A token belongs to one user in one tenant and carries a role cap no higher than the user's
membership role; a request acts with the lower of the cap and the user's role *now*, so a
demoted or removed member's tokens shrink or stop with the membership. Stored as SHA-256
only (like billing tokens), shown once.
"""
from __future__ import annotations


from django.db import transaction
from django.utils import timezone

from panel.access import ROLE_RANK
from panel.models import Membership, PersonalToken, Tenant

from .audit import audit
from .errors import Forbidden, InvalidInput, NotFound
from .secrets_tokens import expiry_after, hash_matches, new_token, token_hash, token_pattern

TOKEN_RE = token_pattern("hkp")
ROLES = tuple(ROLE_RANK)


def api_token_create(*, user, tenant: Tenant, role: str | None = None, name: str = "",
                     expires_days: int | None = None, actor=None, source: str = "") -> tuple[PersonalToken, str]:
    """A token for ``user`` in ``tenant`` capped at ``role`` (default: the user's role).
    Returns the row and the token text (shown once). ``actor`` made it (None: the local
    admin); the web UI for users' own tokens is still to come."""
    member_role = Membership.objects.filter(user=user, tenant=tenant).values_list("role", flat=True).first()
    if member_role is None:
        raise NotFound(f"{user} is not a member of {tenant.slug}")
    role = role or member_role
    if role not in ROLE_RANK:
        raise InvalidInput(f"role must be one of {', '.join(ROLES)}", field="role")
    if ROLE_RANK[role] > ROLE_RANK[member_role]:
        raise Forbidden(f"{user} is {member_role} in {tenant.slug}; a token cannot be {role}", field="role")
    expires_at = expiry_after(expires_days)
    prefix, text = new_token("hkp")
    with transaction.atomic():
        token = PersonalToken.objects.create(user=user, tenant=tenant, role=role, name=name[:100], prefix=prefix,
                                             token_hash=token_hash(text), expires_at=expires_at)
        audit(action="api_token.create", actor=actor, tenant=tenant, obj=token,
              source=source, detail={"user": user.get_username(), "prefix": prefix, "role": role,
                                     "expires_at": expires_at.isoformat() if expires_at else None})
    return token, text


def api_token_revoke(*, token: PersonalToken, source: str = "") -> None:
    with transaction.atomic():
        if PersonalToken.objects.filter(pk=token.pk, revoked_at__isnull=True).update(revoked_at=timezone.now()):
            audit(action="api_token.revoke", tenant=token.tenant, obj=token, source=source,
                  detail={"prefix": token.prefix})


def api_token_check(text: str) -> tuple[PersonalToken, str] | None:
    """(token, effective role) for a live token ``text``, or None (malformed, unknown,
    wrong secret, revoked, expired, inactive user, no longer a member). Marks it used."""
    m = TOKEN_RE.match(text or "")
    if not m:
        return None
    token = PersonalToken.objects.select_related("user", "tenant").filter(prefix=m.group(1)).first()
    if token is None or not hash_matches(token.token_hash, text):
        return None
    now = timezone.now()
    if token.revoked_at or (token.expires_at and token.expires_at <= now) or not token.user.is_active:
        return None
    member_role = (Membership.objects.filter(user=token.user, tenant=token.tenant)
                   .values_list("role", flat=True).first())
    if member_role is None:
        return None
    role = min(token.role, member_role, key=ROLE_RANK.__getitem__)
    PersonalToken.objects.filter(pk=token.pk).update(last_used_at=now)
    return token, role
