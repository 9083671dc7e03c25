"""Authentication and scopes of the billing API: ``Authorization: Bearer hko_<prefix>_<secret>``.

Every authenticated request is audited (services.audit.audit_token_use) with the token's
prefix only, never its secret.
"""
from __future__ import annotations

from rest_framework import authentication, exceptions, permissions

from panel.services.audit import audit_token_use
from panel.services.billing import billing_token_check


class BillingPrincipal:
    """``request.user`` of a billing request: the billing account behind the token."""

    is_authenticated = True
    is_active = True
    is_staff = False
    is_anonymous = False
    pk = None

    def __init__(self, token):
        self.token = token
        self.account = token.account
        self.scopes = frozenset(token.scopes)
        self.username = f"billing:{token.account.name}"

    def __str__(self):
        return self.username


def bearer_text(request) -> str | None:
    """The token of an ``Authorization: Bearer ...`` header: None without one (another
    authentication may apply), "" when it is malformed (refused by the caller)."""
    header = authentication.get_authorization_header(request).split()
    if not header or header[0].lower() != b"bearer":
        return None
    try:
        return header[1].decode("ascii") if len(header) == 2 else ""
    except UnicodeDecodeError:
        return ""


class BillingTokenAuthentication(authentication.BaseAuthentication):
    """Bearer tokens of billing accounts (stored as SHA-256, looked up by prefix)."""

    keyword = "Bearer"

    def authenticate(self, request):
        text = bearer_text(request)
        if text is None:
            return None
        token = billing_token_check(text) if text else None
        if token is None:
            # The prefix only (never the secret) says which token was tried.
            prefix = text[4:16] if text.startswith("hko_") else ""
            audit_token_use(token_label=f"hko_{prefix}" if prefix else "malformed", result="denied",
                            source="billing", detail={"method": request.method, "path": request.path[:200]})
            raise exceptions.AuthenticationFailed("invalid, expired or revoked token (expected 'Bearer hko_...')")
        audit_token_use(token_label=f"hko_{token.prefix}", source=f"billing:{token.account.name}",
                        detail={"method": request.method, "path": request.path[:200]})
        return BillingPrincipal(token), token

    def authenticate_header(self, request):
        return 'Bearer realm="hako-billing"'


class HasScope(permissions.BasePermission):
    """The token carries the view's ``required_scope`` (reads or writes by method)."""

    message = "this token lacks the scope this call needs"

    def has_permission(self, request, view):
        user = request.user
        if not isinstance(user, BillingPrincipal):
            return False
        scope = view.required_scope(request) if callable(getattr(view, "required_scope", None)) else None
        if scope and scope not in user.scopes:
            self.message = f"this token lacks the {scope} scope"
            return False
        return True


try:  # the schema names the scheme (drf-spectacular registers extensions on import)
    from drf_spectacular.extensions import OpenApiAuthenticationExtension

    class BillingTokenScheme(OpenApiAuthenticationExtension):
        target_class = BillingTokenAuthentication
        name = "billingToken"

        def get_security_definition(self, auto_schema):
            return {"type": "http", "scheme": "bearer", "bearerFormat": "hko_<prefix>_<secret>"}
except ImportError:  # pragma: no cover - drf-spectacular is in requirements.txt
    pass
